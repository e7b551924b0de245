"""The model side of the language-model track: fine-tune, generate and score a causal LM.

Plain functions on flat float32 state dicts (``dict[str, np.ndarray]``); the lead wires them into
a Trainer, a Generator and a Scorer. The model is any Hugging Face causal LM named by
``params["model"]`` (a hub id or a local folder saved with ``save_pretrained``), or ``toy-opt``:
the OPT architecture at toy size, built from the ``toy_*`` params and the run's tokenizer.

- :func:`initial_state` the pretrained weights (or a seeded random toy model);
- :func:`fit` fine-tunes as the released code does: AdamW, cosine learning rate down to
  ``min_lr``, ``epochs`` passes over the data, the epoch with the best validation loss kept;
- :func:`generate` continues each real training block by exactly ``new_tokens`` tokens
  (5-way beam search with repetition penalty 3.0 by default: the paper's synthetic data);
- :func:`score` the log-likelihood of each block on its own, in nats;
- :func:`truncate_labels` the truncated cross-entropy (trainer option ``tce``) and
  :func:`edit_tokens` token-level editing (policy ``token-edit``): two remedies for collapse.

Every default and every choice made where the paper is silent is documented in docs/lm-model.md.
Heavy libraries (torch, transformers) are imported inside the functions.
"""

from __future__ import annotations

import functools
import gc
import math
from typing import Any, Mapping

import numpy as np

from bench.components import FitRequest, GenerateRequest, Samples, ScoreRequest, Scores, State
from bench.errors import BenchError
from collapse_bench_plugins import beam
from collapse_bench_plugins.state_cache import StateModelCache

TOY_MODEL = "toy-opt"

DTYPES = ("auto", "fp32", "bf16", "fp16")
LR_SCHEDULES = ("epoch", "step")

# ``model``, ``revision`` and ``tokenizer`` are read here too but defined once, in hf_data.DATA_PARAMS.
MODEL_PARAMS: dict[str, Any] = {
    # fine-tuning: the released code's defaults (AdamW lr 2e-5, torch's weight decay 0.01, batch 128,
    # CosineAnnealingLR(T_max=epochs, eta_min=1e-6) stepped once per epoch, 5 epochs)
    "lr": 2e-5,
    "batch_size": 128,
    "epochs": 5,
    "weight_decay": 0.01,
    "min_lr": 1e-6,
    "lr_schedule": "epoch",
    "warmup_steps": 0,
    "grad_clip": 0.0,
    "position_offset": False,
    # machine
    "device": "auto",
    "dtype": "auto",
    "score_dtype": "fp32",
    "eval_batch_size": 128,
    # decoding: the released code's model.generate(num_beams=5, min/max_new_tokens=64,
    # repetition_penalty=3.0); sampling settings apply only with do_sample
    "num_beams": 5,
    "do_sample": False,
    "temperature": 1.0,
    "top_k": 0,
    "top_p": 1.0,
    "repetition_penalty": 3.0,
    "new_tokens": 64,
    "suppress_special": False,
    "gen_batch_size": 128,
    # the toy OPT (model "toy-opt"): about 181k parameters at a 1,000-word vocabulary
    "toy_layers": 2,
    "toy_hidden": 64,
    "toy_heads": 4,
    "toy_ffn": 256,
    "toy_positions": 256,
}

# Trainer options (optional parameters, in a spec only when set away from these neutral values).
# ``tce``: the truncated cross-entropy threshold G (Shabgahi et al. 2025); 1 is plain cross-entropy.
TRAINER_OPTIONS: dict[str, Any] = {"tce": 1.0}
IGNORE_INDEX = -100  # torch's cross_entropy default ignore_index: a label that carries no loss

_SEED_HIGH = 2**62


def check_params(params: Mapping[str, Any]) -> None:
    """Raise BenchError naming the first model/decoding param with an impossible value."""
    for key in ("batch_size", "eval_batch_size", "gen_batch_size", "epochs", "num_beams", "new_tokens",
                "toy_layers", "toy_hidden", "toy_heads", "toy_ffn", "toy_positions"):
        value = params[key]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise BenchError(f"{key} must be a positive integer, got {value!r}")
    for key in ("warmup_steps", "top_k"):
        if int(params[key]) < 0:
            raise BenchError(f"{key} must be 0 or more, got {params[key]!r}")
    for key in ("lr", "temperature", "repetition_penalty"):
        if not float(params[key]) > 0:
            raise BenchError(f"{key} must be positive, got {params[key]!r}")
    if not 0 <= float(params["min_lr"]) <= float(params["lr"]):
        raise BenchError(f"min_lr must lie in [0, lr], got {params['min_lr']!r} with lr {params['lr']!r}")
    if not 0 < float(params["top_p"]) <= 1:
        raise BenchError(f"top_p must lie in (0, 1], got {params['top_p']!r}")
    for key, allowed in (("dtype", DTYPES), ("score_dtype", DTYPES), ("lr_schedule", LR_SCHEDULES)):
        if params[key] not in allowed:
            raise BenchError(f"{key} must be one of {allowed}, got {params[key]!r}")
    check_tce(params)


def check_tce(params: Mapping[str, Any]) -> float:
    """The trainer option ``tce`` (G, default 1) as a float; BenchError unless 0 < G <= 1."""
    g = params.get("tce", TRAINER_OPTIONS["tce"])
    if isinstance(g, bool) or not isinstance(g, (int, float, np.integer, np.floating)) or not 0 < float(g) <= 1:
        raise BenchError(
            f"tce (the truncated cross-entropy threshold G) must lie in (0, 1], got {g!r}: tokens the model "
            "predicts with probability above G carry no loss; 1 is plain cross-entropy (e.g. --set tce=0.9)"
        )
    return float(g)


# --------------------------------------------------------------------------------------------------
# Machine: device and dtype
# --------------------------------------------------------------------------------------------------


def resolve_device(params: Mapping[str, Any]):
    """``device`` as a torch.device; ``auto`` is cuda if available, else mps if available, else cpu."""
    import torch

    name = str(params.get("device", "auto"))
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise BenchError(f"device {name!r} is not a torch device; use auto, cpu, cuda, cuda:N or mps") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BenchError(f"device {name!r} asked for, but torch sees no CUDA GPU; use --device cpu "
                         "(or --device auto, which takes a GPU where there is one)")
    return device


def resolve_dtype(name: str, device):
    """A dtype name as a torch dtype; ``auto`` is bf16 on CUDA GPUs that support it, else fp32."""
    import torch

    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    table = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if name not in table:
        raise BenchError(f"dtype {name!r} is not one of {DTYPES}")
    return table[name]


def _free_device_memory(device) -> None:
    gc.collect()
    if device.type == "cuda":
        import torch

        torch.cuda.empty_cache()


def _fork_rng(device):
    """Seed torch's global generators (dropout, HF sampling) without disturbing the caller's."""
    import torch

    if device.type == "cuda":
        return torch.random.fork_rng(devices=[device.index or 0], device_type="cuda")
    if device.type == "mps":
        return torch.random.fork_rng(devices=[0], device_type="mps")
    return torch.random.fork_rng(devices=[])


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, _SEED_HIGH))


# --------------------------------------------------------------------------------------------------
# Tokenizer, config, and the state <-> model conversion
# --------------------------------------------------------------------------------------------------


def _where_to_get(params: Mapping[str, Any], what: str = "model") -> str:
    """What to do when the model (or tokenizer) cannot be found: hf_data.way_out."""
    from collapse_bench_plugins.hf_data import way_out

    return way_out(params, what)


def tokenizer_for(params: Mapping[str, Any]):
    """The run's tokenizer from hf_data.get_tokenizer, with a BenchError when it cannot be loaded."""
    from collapse_bench_plugins.hf_data import get_tokenizer

    try:
        return get_tokenizer(params)
    except (OSError, ValueError) as e:
        name = params.get("tokenizer") or params.get("model")
        raise BenchError(
            f"cannot load the tokenizer {name!r}: {e}; {_where_to_get(params, 'tokenizer')}"
        ) from e


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0].rstrip(".") if text else type(exc).__name__


def _special_ids(tokenizer) -> dict[str, int | None]:
    return {
        key: getattr(tokenizer, key, None)
        for key in ("pad_token_id", "bos_token_id", "eos_token_id")
    }


def toy_config(params: Mapping[str, Any], tokenizer=None):
    """The OPTConfig of ``toy-opt``: sizes from toy_*, vocabulary and special ids from the tokenizer."""
    from transformers import OPTConfig

    tokenizer = tokenizer if tokenizer is not None else tokenizer_for(params)
    hidden, heads = int(params["toy_hidden"]), int(params["toy_heads"])
    if hidden % heads:
        raise BenchError(f"toy_hidden ({hidden}) must be a multiple of toy_heads ({heads})")
    return OPTConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        word_embed_proj_dim=hidden,
        num_hidden_layers=int(params["toy_layers"]),
        num_attention_heads=heads,
        ffn_dim=int(params["toy_ffn"]),
        max_position_embeddings=int(params["toy_positions"]),
        **_special_ids(tokenizer),
    )


@functools.lru_cache(maxsize=8)
def _pretrained_config(name: str, revision: str | None):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(name, revision=revision)


def model_config(params: Mapping[str, Any]):
    """The architecture a state belongs to: toy_config for ``toy-opt``, else the model's config."""
    if params["model"] == TOY_MODEL:
        return toy_config(params)
    name = str(params["model"])
    try:
        return _pretrained_config(name, params.get("revision"))
    except (OSError, ValueError) as e:
        raise BenchError(f"cannot load the model {name!r}: {_first_line(e)}; {_where_to_get(params)}") from e


def _unique_keys(model) -> list[str]:
    """State-dict keys with tied duplicates removed (the first name of each shared tensor is kept).

    OPT ties ``lm_head.weight`` to ``model.decoder.embed_tokens.weight``: the state stores the
    embedding once and :func:`build_model` ties the head to it again.
    """
    seen: set[int] = set()
    keys = []
    for key, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) not in seen:
            seen.add(id(tensor))
            keys.append(key)
    return keys


def state_from_model(model) -> State:
    """A flat dict of float32 NumPy copies of the model's weights, tied duplicates dropped."""
    full = model.state_dict()
    return {
        key: full[key].detach().to("cpu", copy=True).float().numpy()
        for key in _unique_keys(model)
    }


def _empty_model(config):
    from transformers import AutoModelForCausalLM
    import torch

    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    _reset_generation_config(model)
    return model


def _reset_generation_config(model) -> None:
    """Decoding is set explicitly by :func:`generation_config`; keep only the special ids here."""
    from transformers import GenerationConfig

    cfg = model.config
    model.generation_config = GenerationConfig(
        bos_token_id=getattr(cfg, "bos_token_id", None),
        eos_token_id=getattr(cfg, "eos_token_id", None),
        pad_token_id=getattr(cfg, "pad_token_id", None),
    )


def build_model(state: State, params: Mapping[str, Any], device=None, dtype=None):
    """A torch model of ``params``' architecture holding ``state``, on ``device`` in ``dtype``.

    The weights are copied (the state is never aliased). The model is made on the meta device and
    the state assigned to it, so no time goes into a random initialisation that is thrown away;
    architectures with buffers that a state does not carry fall back to a normal construction.
    """
    import torch
    from transformers import AutoModelForCausalLM

    config = model_config(params)
    device = device if device is not None else torch.device("cpu")
    dtype = dtype if dtype is not None else torch.float32
    tensors = {key: torch.tensor(np.asarray(value, dtype=np.float32)) for key, value in state.items()}

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    expected = _unique_keys(model)
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(model.state_dict()))
    if missing or unexpected:
        raise BenchError(
            f"the model state does not match model {params['model']!r} as the params describe it "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}); was it made with other model or "
            f"toy_* params?"
        )
    try:
        model.load_state_dict(tensors, strict=False, assign=True)
    except RuntimeError as e:
        raise BenchError(
            f"the model state does not fit model {params['model']!r} as the params describe it: {e}"
        ) from e
    model.tie_weights()
    if any(t.is_meta for t in list(model.parameters()) + list(model.buffers())):
        model = _empty_model(config)
        model.load_state_dict(tensors, strict=False)
        model.tie_weights()
    _reset_generation_config(model)
    return model.to(device=device, dtype=dtype).eval()


# A few built models, most recent last: (state, ids of its arrays, model). Holding the state keeps
# its id unique while it is cached; the ids of its arrays catch a dict whose values were replaced.
_MODEL_CACHE = StateModelCache(4)  # M_0 and M_k, each in the generation dtype and the scoring dtype


def clear_model_cache() -> None:
    """Drop every cached model (and the states they hold)."""
    _MODEL_CACHE.clear()


def cached_model(state: State, params: Mapping[str, Any], device, dtype):
    """:func:`build_model` with a small LRU cache: converting a state on every call is slow."""
    config_key = (
        params["model"],
        params.get("revision"),
        params.get("tokenizer"),
        params.get("dataset"),
        *(params.get(k) for k in ("toy_layers", "toy_hidden", "toy_heads", "toy_ffn", "toy_positions")),
    )
    return _MODEL_CACHE.get(state, (str(device), str(dtype), config_key),
                            lambda: build_model(state, params, device, dtype))


# --------------------------------------------------------------------------------------------------
# Initial state
# --------------------------------------------------------------------------------------------------


def initial_state(params: Mapping[str, Any], rng: np.random.Generator) -> State:
    """The 'pretrained' start: ``from_pretrained(model, revision)`` weights in float32, or for
    ``toy-opt`` a random OPT initialisation (OPTConfig's init_std 0.02) seeded from ``rng``."""
    import torch

    seed = _seed(rng)
    if params["model"] == TOY_MODEL:
        config = toy_config(params)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = _empty_model(config)
        return state_from_model(model)

    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # run logs keep our own progress lines, not a bar per load
    name = str(params["model"])
    try:
        model = AutoModelForCausalLM.from_pretrained(
            name, revision=params.get("revision"), dtype=torch.float32
        )
    except (OSError, ValueError) as e:
        raise BenchError(f"cannot load the model {name!r}: {_first_line(e)}; {_where_to_get(params)}") from e
    state = state_from_model(model)
    del model
    return state


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


def learning_rate(step: int, steps_per_epoch: int, params: Mapping[str, Any]) -> float:
    """The learning rate of optimizer step ``step`` (0-based).

    ``lr_schedule`` ``epoch`` (the released code: CosineAnnealingLR(T_max=epochs, eta_min=min_lr)
    stepped once per epoch): epoch e uses min_lr + (lr - min_lr) (1 + cos(pi e / epochs)) / 2,
    constant within the epoch. ``step``: the same curve over optimizer steps, t = step / total
    steps. A linear warm-up multiplies by (step + 1) / warmup_steps over the first warmup_steps.
    """
    lr, min_lr, epochs = float(params["lr"]), float(params["min_lr"]), int(params["epochs"])
    if params["lr_schedule"] == "epoch":
        t = (step // steps_per_epoch) / epochs
    elif params["lr_schedule"] == "step":
        t = step / (steps_per_epoch * epochs)
    else:
        raise BenchError(f"lr_schedule {params['lr_schedule']!r} is not one of {LR_SCHEDULES}")
    value = min_lr + (lr - min_lr) * (1.0 + math.cos(math.pi * t)) / 2.0
    warmup = int(params.get("warmup_steps", 0))
    if warmup > 0 and step < warmup:
        value *= (step + 1) / warmup
    return value


def _block_logliks(model, blocks: np.ndarray, batch_size: int, device, autocast_dtype=None) -> np.ndarray:
    """Per block: sum over t >= 1 of log p(b_t | b_<t), nats, float64; the model in eval mode."""
    import torch

    out = np.empty(blocks.shape[0], dtype=np.float64)
    use_autocast = autocast_dtype is not None and autocast_dtype != torch.float32
    with torch.inference_mode(), torch.autocast(device.type, dtype=autocast_dtype, enabled=use_autocast):
        for start in range(0, blocks.shape[0], batch_size):
            ids = _token_tensor(blocks[start : start + batch_size]).to(device)
            logits = model(input_ids=ids).logits[:, :-1].float()
            target = ids[:, 1:, None]
            token_ll = logits.gather(-1, target)[..., 0] - torch.logsumexp(logits, dim=-1)
            out[start : start + ids.shape[0]] = token_ll.double().sum(dim=1).cpu().numpy()
    return out


def _token_tensor(x: np.ndarray):
    """Token ids as a CPU int64 tensor sharing ``x``'s memory where it may; a read-only array
    (samples read back from a run folder on resume) is copied, as torch cannot share memory it may
    not write (it warns when asked to)."""
    import torch

    x = np.ascontiguousarray(x, dtype=np.int64)
    if not x.flags.writeable:
        x = x.copy()
    return torch.from_numpy(x)


def _check_blocks(samples: Samples | None, what: str) -> np.ndarray:
    if samples is None:
        raise ValueError(f"{what}: no token blocks given")
    x = np.asarray(samples.data)
    if samples.kind != "tokens" or x.ndim != 2 or not np.issubdtype(x.dtype, np.integer):
        raise ValueError(
            f"{what}: expected token blocks, an integer array (n, L); got {samples.kind} {x.shape}"
        )
    return x.astype(np.int64, copy=False)


def _check_positions(config, length: int, params, what: str) -> None:
    limit = getattr(config, "max_position_embeddings", None)
    if limit is not None and length > limit:
        knob = "toy_positions" if params["model"] == TOY_MODEL else "new_tokens or the block size"
        raise BenchError(
            f"{what} needs {length} positions but model {params['model']!r} has {limit}; change {knob}"
        )


def truncate_labels(logits, labels, threshold: float):
    """Truncated cross-entropy's mask: ``labels`` with IGNORE_INDEX where the model's probability
    of the label, softmax(logits)[label], exceeds ``threshold``; and that boolean mask.

    ``logits`` (N, V) and ``labels`` (N,) as they go into the loss. No gradient flows through the
    mask. The comparison is log p > log G with log p = logit[label] - logsumexp(logits), which is
    never above 0 in floating point (logsumexp is at least the largest logit), so G = 1 masks
    nothing and the labels come back equal to the input's: the loss is plain cross-entropy, bit for bit.
    """
    import torch

    with torch.no_grad():
        log_p = logits.gather(-1, labels[:, None])[:, 0] - torch.logsumexp(logits, dim=-1)
        mask = log_p > math.log(threshold)
        return labels.masked_fill(mask, IGNORE_INDEX), mask


def fit_with_history(request: FitRequest) -> tuple[State, list[dict[str, float]]]:
    """:func:`fit`, also returning one record per epoch: epoch, lr, train_loss, val_loss, and
    tce_masked (the fraction of target tokens the truncated cross-entropy masked; 0 at generation 0)."""
    import torch

    p = request.params
    check_params(p)
    tce = check_tce(p)
    # TCE from generation 1 on: M_0 is the baseline's (and shares its seeds), so runs stay paired.
    # The mask is computed for every G, 1 included (where it masks nothing).
    use_tce = request.generation >= 1
    blocks = _check_blocks(request.data, "fit")
    val_blocks = None
    if request.validation is not None:
        val_blocks = _check_blocks(request.validation, "fit validation")
    seed = _seed(request.rng)
    init = request.init if request.init is not None else initial_state(p, request.rng)
    device = resolve_device(p)
    amp = resolve_dtype(str(p["dtype"]), device)
    use_amp = amp != torch.float32

    n, length = blocks.shape
    epochs, batch = int(p["epochs"]), int(p["batch_size"])
    steps_per_epoch = math.ceil(n / batch)
    config = model_config(p)
    max_offset = 0
    if p.get("position_offset"):
        limit = int(getattr(config, "max_position_embeddings", length))
        max_offset = max(0, min(int(p["new_tokens"]), limit - length))
    _check_positions(config, length + max_offset, p, "training")

    model = build_model(init, p, device, torch.float32)
    model.train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=float(p["lr"]), weight_decay=float(p["weight_decay"])
    )
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    data = _token_tensor(blocks)
    gen = torch.Generator().manual_seed(seed)
    history: list[dict[str, float]] = []
    best_state, best_val = None, math.inf
    step = 0
    with _fork_rng(device):
        torch.manual_seed(seed)  # dropout
        for epoch in range(epochs):
            order = torch.randperm(n, generator=gen)
            losses = []
            masked = torch.zeros((), dtype=torch.int64, device=device)
            targets = 0
            for start in range(0, n, batch):
                request.report("step", step, epochs * steps_per_epoch)
                lr = learning_rate(step, steps_per_epoch, p)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                ids = data[order[start : start + batch]].to(device)
                position_ids = None
                if max_offset:
                    offset = torch.randint(0, max_offset + 1, (ids.shape[0], 1), generator=gen)
                    position_ids = (torch.arange(length)[None, :] + offset).to(device)
                with torch.autocast(device.type, dtype=amp, enabled=use_amp):
                    logits = model(input_ids=ids, position_ids=position_ids).logits
                flat = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
                labels = ids[:, 1:].reshape(-1)
                targets += labels.numel()
                if use_tce:
                    labels, mask = truncate_labels(flat, labels, tce)
                    masked += mask.sum()
                    # Every token masked: nothing to learn from, and the mean over no tokens is NaN.
                    # The step is skipped (no update; the batch's loss counts as 0). Checking costs a
                    # device sync, so only where G < 1 (at G = 1 nothing is ever masked).
                    if tce < 1.0 and bool(mask.all()):
                        losses.append(torch.zeros((), device=device))
                        step += 1
                        continue
                # Masked labels (IGNORE_INDEX) drop out of the mean: the loss is the mean over the rest.
                loss = torch.nn.functional.cross_entropy(flat, labels)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if float(p.get("grad_clip") or 0) > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), float(p["grad_clip"]))
                scaler.step(optimizer)
                scaler.update()
                losses.append(loss.detach())  # no device sync per step
                step += 1
            record = {"epoch": epoch, "lr": learning_rate(step - 1, steps_per_epoch, p),
                      "train_loss": torch.stack(losses).mean().item(), "val_loss": math.nan,
                      "tce_masked": masked.item() / max(targets, 1)}
            if val_blocks is not None:
                model.eval()
                ll = _block_logliks(model, val_blocks, int(p["eval_batch_size"]), device, amp)
                model.train()
                record["val_loss"] = float(-ll.sum() / (val_blocks.shape[0] * (val_blocks.shape[1] - 1)))
                if record["val_loss"] < best_val:
                    best_val, best_state = record["val_loss"], state_from_model(model)
            history.append(record)
    state = best_state if best_state is not None else state_from_model(model)
    del optimizer, model, scaler, data
    _free_device_memory(device)
    return state, history


def fit(request: FitRequest) -> State:
    """Fine-tune from ``request.init`` (or :func:`initial_state`) on ``request.data``.

    AdamW (lr, weight_decay) over all weights, ``epochs`` shuffled passes over the blocks in
    batches of ``batch_size`` (the last batch may be smaller; steps scale with the data), the
    learning rate of :func:`learning_rate`, loss = mean next-token cross-entropy with
    labels = inputs. After each epoch the validation loss (mean NLL per token) is measured and the
    state of the best epoch is returned (the last epoch when there is no validation set). With
    ``position_offset`` each training block sits at a random position offset in
    [0, min(new_tokens, positions - L)], so the positions a continuation uses are trained too.
    Seeded from ``request.rng``: the shuffles, offsets and dropout.

    With the trainer option ``tce`` (G < 1) and from generation 1 on, the loss is the truncated
    cross-entropy (Shabgahi et al. 2025): target tokens the model already predicts with probability
    above G are ignored and the mean runs over the others (:func:`truncate_labels`); a batch with
    every token masked is skipped. Generation 0 always trains with plain cross-entropy.
    """
    return fit_with_history(request)[0]


# --------------------------------------------------------------------------------------------------
# Generation and scoring
# --------------------------------------------------------------------------------------------------


def generation_config(params: Mapping[str, Any], model):
    """The transformers GenerationConfig of ``params``: exactly ``new_tokens`` new tokens
    (min = max, so eos is never chosen), beams, repetition penalty, and with ``do_sample`` the
    temperature, top_k (0 = off) and top_p (1 = off); special ids from the model's config."""
    from transformers import GenerationConfig

    cfg = model.config
    eos = getattr(cfg, "eos_token_id", None)
    pad = getattr(cfg, "pad_token_id", None)
    kwargs: dict[str, Any] = dict(
        num_beams=int(params["num_beams"]),
        do_sample=bool(params["do_sample"]),
        min_new_tokens=int(params["new_tokens"]),
        max_new_tokens=int(params["new_tokens"]),
        repetition_penalty=float(params["repetition_penalty"]),
        length_penalty=1.0,
        early_stopping=False,
        num_return_sequences=1,
        use_cache=True,
        bos_token_id=getattr(cfg, "bos_token_id", None),
        eos_token_id=eos,
        pad_token_id=pad if pad is not None else eos,
    )
    if kwargs["do_sample"]:
        kwargs.update(temperature=float(params["temperature"]), top_k=int(params["top_k"]),
                      top_p=float(params["top_p"]))
    if params.get("suppress_special"):
        unk = getattr(tokenizer_for(params), "unk_token_id", None)
        banned = sorted({i for i in (pad, unk) if i is not None and i != eos})
        if banned:
            kwargs["suppress_tokens"] = banned
    return GenerationConfig(**kwargs)


def _decode(tokenizer, rows: np.ndarray) -> list[str]:
    rows = np.asarray(rows).tolist()
    if hasattr(tokenizer, "batch_decode"):
        return list(tokenizer.batch_decode(rows))
    return [tokenizer.decode(r) for r in rows]


def generate(request: GenerateRequest) -> Samples:
    """Continue real block i (i < n) by exactly ``new_tokens`` tokens; return only the new tokens.

    Beam search (``num_beams``) or sampling (``do_sample``; with num_beams > 1 that is
    transformers' beam sampling) with ``repetition_penalty``, in batches of ``gen_batch_size``
    prompts; every prompt has the same length, so nothing is padded. Columns: ``text`` (the decoded
    continuation) and ``prompt`` (the decoded prompt). Sampling is seeded from ``rng``; for one
    seed it also depends on gen_batch_size (transformers draws from one stream per batch).

    Beam search on the CPU in fp32 runs :func:`collapse_bench_plugins.beam.beam_search`, which
    returns model.generate's tokens with less copying of the key/value cache; anything else, or
    ``BENCH_HF_GENERATE=reference``, calls ``model.generate``.
    """
    state, n, prompts, params, rng = request.state, request.n, request.prompts, request.params, request.rng
    import torch

    check_params(params)
    x = _check_blocks(prompts, "generate")
    n = int(n)
    if n > x.shape[0]:
        raise ValueError(f"generate: {n} samples asked for but only {x.shape[0]} prompts given")
    x = x[:n]
    new = int(params["new_tokens"])
    seed = _seed(rng)
    tokens = np.empty((n, new), dtype=np.int64)
    if n:
        device = resolve_device(params)
        model = cached_model(state, params, device, resolve_dtype(str(params["dtype"]), device))
        _check_positions(
            model.config, x.shape[1] + new, params, f"a {x.shape[1]}-token prompt plus {new} new tokens"
        )
        config = generation_config(params, model)
        fast = beam.fast_path_refusal(config, model, device, model.dtype, beam.generate_mode()) is None
        batch = int(params["gen_batch_size"])
        with _fork_rng(device), torch.inference_mode():
            torch.manual_seed(seed)
            for start in range(0, n, batch):
                request.report("batch", start // batch, -(-n // batch))
                ids = _token_tensor(x[start : start + batch]).to(device)
                if fast:
                    out = beam.beam_search(model, ids, config)
                else:
                    mask = torch.ones_like(ids)
                    out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
                if out.shape[1] != x.shape[1] + new:
                    raise RuntimeError(f"generate returned {out.shape[1] - x.shape[1]} new tokens, not {new}")
                tokens[start : start + ids.shape[0]] = out[:, x.shape[1]:].cpu().numpy()
    tokenizer = tokenizer_for(params)
    columns = {"text": _decode(tokenizer, tokens), "prompt": _decode(tokenizer, x)}
    return Samples("tokens", tokens, columns=columns)


def score(request: ScoreRequest) -> Scores:
    """Per block b (n, L): sum over t = 1..L-1 of log p(b_t | b_<t) in nats, units L - 1.

    Each block is scored on its own, at positions 0..L-1, as it is trained on; in ``score_dtype``
    (fp32 by default, so scores do not depend on the GPU's speed settings), ``eval_batch_size``
    blocks at a time.
    """
    state, samples, params = request.state, request.samples, request.params
    check_params(params)
    x = _check_blocks(samples, "score")
    if x.shape[1] < 2:
        raise ValueError(f"score: blocks of {x.shape[1]} tokens have nothing to predict")
    units = np.full(x.shape[0], x.shape[1] - 1, dtype=np.int64)
    if not x.shape[0]:
        return Scores(loglik=np.zeros(0), units=units)
    device = resolve_device(params)
    model = cached_model(state, params, device, resolve_dtype(str(params.get("score_dtype", "fp32")), device))
    _check_positions(model.config, x.shape[1], params, f"scoring {x.shape[1]}-token blocks")
    return Scores(loglik=_block_logliks(model, x, int(params["eval_batch_size"]), device), units=units)


# --------------------------------------------------------------------------------------------------
# Token-level editing (the ``token-edit`` policy)
# --------------------------------------------------------------------------------------------------


def _suppressed_ids(params: Mapping[str, Any]) -> list[int]:
    """The ids :func:`generation_config` bans with ``suppress_special`` (pad and unk, never eos)."""
    if not params.get("suppress_special"):
        return []
    tokenizer = tokenizer_for(params)
    eos = getattr(tokenizer, "eos_token_id", None)
    ids = (getattr(tokenizer, "pad_token_id", None), getattr(tokenizer, "unk_token_id", None))
    return sorted({i for i in ids if i is not None and i != eos})


def edit_tokens(state: State, samples: Samples, threshold: float, params: Mapping[str, Any],
                rng: np.random.Generator) -> tuple[np.ndarray, int, int]:
    """Token-level editing (ToEdit, Zhu et al. 2024) of real blocks (n, L) under the model ``state``.

    One teacher-forced pass over each block gives p(. | b_<t) for t = 1..L-1, the prefix always the
    unedited block. Where the model's probability of the block's own token b_t exceeds
    ``threshold``, b_t is replaced by a draw from p(. | b_<t) (the draw may return b_t itself);
    every other token, and the first token of each block (which has no prediction), is kept. With
    ``suppress_special`` the draw never returns the ids generation bans (pad, unk). The model runs
    in ``score_dtype``, ``eval_batch_size`` blocks at a time; draws are seeded from ``rng``.

    Returns (edited blocks, positions resampled, tokens changed).
    """
    import torch

    check_params(params)
    x = _check_blocks(samples, "token-edit")
    edited = x.copy()
    n, length = x.shape
    seed = _seed(rng)
    if not n or length < 2:
        return edited, 0, 0
    device = resolve_device(params)
    model = cached_model(state, params, device, resolve_dtype(str(params.get("score_dtype", "fp32")), device))
    _check_positions(model.config, length, params, f"editing {length}-token blocks")
    banned = _suppressed_ids(params)
    log_threshold = math.log(threshold) if threshold > 0 else -math.inf
    batch = int(params["eval_batch_size"])
    resampled = 0
    with _fork_rng(device), torch.inference_mode():
        torch.manual_seed(seed)
        for start in range(0, n, batch):
            ids = _token_tensor(x[start : start + batch]).to(device)
            logits = model(input_ids=ids).logits[:, :-1].float()  # position t-1 predicts token t
            target = ids[:, 1:]
            log_p = logits.gather(-1, target[..., None])[..., 0] - torch.logsumexp(logits, dim=-1)
            where = log_p > log_threshold
            count = int(where.sum())
            if not count:
                continue
            probs = torch.softmax(logits[where], dim=-1)
            if banned:
                probs[:, banned] = 0.0
                empty = probs.sum(dim=-1) <= 0  # all the mass on banned ids: keep the token
                if bool(empty.any()):
                    probs[empty, target[where][empty]] = 1.0
            draws = torch.multinomial(probs, 1)[:, 0]
            new = target.clone()
            new[where] = draws
            edited[start : start + ids.shape[0], 1:] = new.cpu().numpy()
            resampled += count
    changed = int((edited != x).sum())
    return edited, resampled, changed
