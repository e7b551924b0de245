"""Data of the language-model track: tokenizers, datasets, and the blocks a run trains on.

``load_real(params, seed)`` is the ``load_real`` of the LM bundles. It reads a dataset (the
project's synthetic source, a Hugging Face hub dataset, local text/JSON/Parquet files or a folder
written by ``save_to_disk``), tokenizes each row with the tokenizer's default special tokens,
concatenates the rows of a split, cuts the stream into ``block_size``-token blocks and drops the
remainder, as the paper's code does (PROTOCOLS.md section 1). Missing validation/test splits are
carved from the end of train. Everything is described in docs/lm-data.md.

Hub and local data go through the same ``AutoTokenizer.from_pretrained`` / ``datasets.load_dataset``
calls; what cannot be found (offline hub, wrong id, wrong path) raises a BenchError that names it
and the way out.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from bench.components import RealData, RealRequest, Samples
from bench.errors import BenchError

TOY_MODEL = "toy-opt"          # the OPT architecture at toy size, built from the toy_* params
SYNTHETIC_DATASET = "synthetic"  # the project's seeded Markov source (plugins/lm_source.py)

DATA_PARAMS: dict[str, Any] = {
    "model": "facebook/opt-125m",  # hub id, local folder, or "toy-opt"
    "revision": None,  # model (and tokenizer) revision on the hub; None = the default branch
    "tokenizer": None,  # hub id or local folder; None = the model's
    "dataset": "wikitext",  # "synthetic", a hub id, local file(s) or a folder
    "dataset_config": "wikitext-2-raw-v1",  # the hub dataset's config name (hub ids only)
    "text_column": "text",  # the column holding the text (JSON / Parquet / hub / saved data)
    "block_size": 64,  # tokens per block
    "max_blocks": None,  # keep only the first max_blocks blocks of each split (quick runs)
    "holdout_fraction": 0.05,  # share of train blocks each missing validation/test split takes
}

SPLITS = ("train", "validation", "test")
# The words that put a file into a split, as datasets uses them (datasets.data_files.SPLIT_KEYWORDS).
SPLIT_WORDS = {
    "train": ("train", "training"),
    "validation": ("validation", "valid", "val", "dev"),
    "test": ("test", "testing", "eval", "evaluation"),
}
# File suffix -> the datasets builder that reads it.
FILE_BUILDERS = {".txt": "text", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}

# What a user can do when a model, tokenizer or dataset cannot be found: see way_out(params).


class NotFound(BenchError):
    """A model, tokenizer or dataset that cannot be found (``what``: ``model``, ``tokenizer`` or
    ``dataset``). Raised inside this module; the entry points add :func:`way_out` for the run's
    params before the user sees it."""

    def __init__(self, message: str, what: str) -> None:
        super().__init__(message)
        self.what = what


def way_out(params: Mapping[str, Any], what: str) -> str:
    """What to do when the ``what`` (``model``, ``tokenizer`` or ``dataset``) of a run cannot be
    found: a local copy, the hub, or data that downloads nothing. ``--preset smoke`` is offered
    only when the run uses none of the smoke preset's toy model and synthetic data already;
    otherwise the flag that swaps in the missing piece is named."""
    smoke_in_use = params.get("model") == TOY_MODEL or params.get("dataset") == SYNTHETIC_DATASET
    if what == "dataset":
        local = ("give local files or a folder with --dataset PATH, or run with access to the Hugging Face "
                 "hub (unset HF_DATASETS_OFFLINE and HF_HUB_OFFLINE)")
        offline = "--dataset synthetic (the smoke preset's data)"
    else:
        knob = "--set tokenizer=PATH" if what == "tokenizer" and params.get("tokenizer") else "--model PATH"
        local = (f"give a local folder saved with save_pretrained with {knob}, or run with access to the "
                 "Hugging Face hub (unset HF_HUB_OFFLINE)")
        offline = ("--dataset synthetic (the smoke preset's data, with its own tokenizer)"
                   if what == "tokenizer" and params.get("model") == TOY_MODEL
                   else f"--model {TOY_MODEL} (the smoke preset's model)")
    if not smoke_in_use:
        offline = "--preset smoke"
    return f"{local}; or use {offline}, which downloads nothing"


def with_way_out(params: Mapping[str, Any], exc: NotFound) -> BenchError:
    """``exc`` as the BenchError a user sees: its message and :func:`way_out`."""
    error = BenchError(f"{exc}; {way_out(params, exc.what)}")
    error.__cause__ = exc.__cause__
    return error

_ROWS_PER_CALL = 8192  # rows per batched tokenizer call: bounds the Python lists alive at once


# --------------------------------------------------------------------------------------------------
# Tokenizer and model identity
# --------------------------------------------------------------------------------------------------


def get_tokenizer(params: Mapping[str, Any]):
    """The tokenizer of a run (cached): the synthetic source's own for ``dataset: synthetic``,
    otherwise ``AutoTokenizer.from_pretrained(tokenizer or model, revision=revision)``.

    Raises BenchError when it cannot be found, or when the toy model (which has no tokenizer of
    its own) is used on real text without a ``tokenizer``.
    """
    if params.get("dataset") == SYNTHETIC_DATASET:
        from collapse_bench_plugins.lm_source import synthetic_corpus

        return synthetic_corpus(params).tokenizer
    name = params.get("tokenizer") or params["model"]
    if name == TOY_MODEL:
        raise BenchError(
            f"model {TOY_MODEL!r} has no tokenizer of its own: with dataset {params.get('dataset')!r} "
            "give one with --set tokenizer=NAME_OR_PATH, or use --dataset synthetic"
        )
    try:
        return _pretrained_tokenizer(str(name), _text_or_none(params.get("revision")))
    except NotFound as exc:
        raise with_way_out(params, exc) from exc.__cause__


@functools.lru_cache(maxsize=4)
def _pretrained_tokenizer(name: str, revision: str | None):
    from transformers import AutoTokenizer

    if looks_like_path(name) and not Path(name).expanduser().exists():
        raise NotFound(f"tokenizer/model path {name!r} does not exist", "tokenizer")
    try:
        return AutoTokenizer.from_pretrained(str(Path(name).expanduser()) if looks_like_path(name) else name,
                                             revision=revision)
    except (OSError, ValueError) as exc:  # offline / unknown id: OSError; bad folder: ValueError
        raise NotFound(f"cannot load the tokenizer of {name!r}{_at(revision)}: {_first_line(exc)}",
                       "tokenizer") from exc


def tokenizer_hash(tokenizer) -> str:
    """SHA-256 of the tokenizer's backend JSON (fast tokenizers), else of its sorted vocabulary."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        blob = backend.to_str()
    else:
        blob = json.dumps(sorted(tokenizer.get_vocab().items()), separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def model_revision(params: Mapping[str, Any]) -> str | None:
    """The commit a hub model's ``revision`` resolves to, as from_pretrained resolves it (from the
    local cache when offline); None for local folders, the toy model, or when it is not known."""
    model = str(params["model"])
    revision = _text_or_none(params.get("revision"))
    if model == TOY_MODEL or looks_like_path(model):
        return None
    try:
        from transformers.utils.hub import resolve_revision

        resolved = resolve_revision(model, revision)  # fails open: returns `revision` unresolved
    except Exception:  # noqa: BLE001 - provenance is best effort; loading reports real errors
        return None
    commit = getattr(resolved, "resolved", None)
    if commit is None and revision and re.fullmatch(r"[0-9a-f]{40}", revision):
        commit = revision
    return commit


def model_fingerprint(params: Mapping[str, Any]) -> str | None:
    """What identifies the model's starting weights where a revision cannot.

    ``toy-opt``: SHA-256 of the ``toy_*`` params. A local folder: SHA-256 of its config.json and the
    names and sizes of its other files (weights are not read). A hub id: None (see model_revision).
    """
    model = str(params["model"])
    if model == TOY_MODEL:
        toy = {k: params[k] for k in sorted(params) if k.startswith("toy_")}
        return hashlib.sha256(json.dumps(toy, sort_keys=True, default=str).encode()).hexdigest()
    folder = Path(model).expanduser()
    if not folder.is_dir():
        return None
    h = hashlib.sha256()
    for path in _files_under(folder):
        rel = path.relative_to(folder).as_posix()
        if rel == "config.json":
            h.update(b"config.json\0" + path.read_bytes() + b"\0")
        else:
            h.update(f"{rel}\0{path.stat().st_size}\0".encode())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------------


def tokenize_rows(tokenizer, rows, limit: int | None = None) -> np.ndarray:
    """The token ids of ``rows`` concatenated, each row tokenized with the tokenizer's default
    special tokens (batched calls of the fast tokenizer). Stops after the call that reaches
    ``limit`` tokens, when given."""
    parts, total = [], 0
    for start in range(0, len(rows), _ROWS_PER_CALL):
        ids = tokenizer(list(rows[start:start + _ROWS_PER_CALL]), return_attention_mask=False,
                        return_token_type_ids=False, verbose=False)["input_ids"]
        part = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64)
        parts.append(part)
        total += part.size
        if limit is not None and total >= limit:
            break
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def cut_blocks(stream: np.ndarray, block_size: int) -> np.ndarray:
    """A flat token stream cut into consecutive (n, block_size) blocks; the remainder is dropped."""
    stream = np.asarray(stream, dtype=np.int64).reshape(-1)
    n = stream.size // block_size
    return stream[: n * block_size].reshape(n, block_size)


def split_blocks(blocks: Mapping[str, np.ndarray], fraction: float,
                 name: str = "the dataset") -> tuple[dict[str, np.ndarray], tuple[str, ...]]:
    """All three splits from the blocks a dataset has: each missing validation/test split takes
    k = ceil(fraction * n) of train's n blocks from its end (train | validation | test).

    Returns the splits and the names of those made from train.
    """
    if "train" not in blocks:
        raise BenchError(f"{name} has no train split (it has {sorted(blocks) or 'none'}); "
                         "name a training file train.*, or pass a single file")
    train = blocks["train"]
    made = tuple(s for s in SPLITS[1:] if s not in blocks)
    out = {s: blocks[s] for s in SPLITS if s in blocks}
    if made:
        n = len(train)
        k = max(1, math.ceil(fraction * n))
        keep = n - k * len(made)
        if keep < 1:
            raise BenchError(f"{name} has {n} train block(s): too few to carve "
                             f"{' and '.join(made)} from (need more than {k * len(made)}); "
                             "give more text, a smaller block_size, or the missing split files")
        out["train"] = train[:keep]
        for i, split in enumerate(made):
            out[split] = train[keep + i * k: keep + (i + 1) * k]
    for split in SPLITS:
        if len(out[split]) == 0:
            raise BenchError(f"split {split!r} of {name} has fewer tokens than one block; "
                             "give more text or a smaller block_size")
    return out, made


@dataclass(frozen=True)
class _Blocks:
    """The cached result of reading and cutting one dataset (arrays read-only)."""

    splits: dict[str, np.ndarray]
    fingerprint: str
    made: tuple[str, ...]
    dataset_config: str | None


def load_real(request: RealRequest) -> RealData:
    """The real data of a run: token blocks of every split, with fingerprint and provenance.

    The data does not depend on ``seed``: every seed of a spec sees the same blocks. For the
    synthetic source ``true_loglik`` is the source's exact block log-likelihood and
    ``true_token_loglik`` its exact log-probability of each token given the ones before it.
    """
    params = request.params
    p = {**DATA_PARAMS, **params}
    block_size, max_blocks, fraction = _checked(p)
    try:
        check_dataset_path(p)  # before the tokenizer: a missing file is not a tokenizer error
        return _load_real(p, block_size, max_blocks, fraction)
    except NotFound as exc:
        raise with_way_out(p, exc) from exc.__cause__


def _load_real(p: Mapping[str, Any], block_size: int, max_blocks: int | None, fraction: float) -> RealData:
    tokenizer = get_tokenizer(p)
    true_loglik = true_token_loglik = None
    if p["dataset"] == SYNTHETIC_DATASET:
        from collapse_bench_plugins.lm_source import synthetic_corpus

        corpus = synthetic_corpus(p)
        streams = {s: cut_blocks(t, block_size) for s, t in corpus.splits.items()}
        splits, made = split_blocks(streams, fraction, "the synthetic source")
        data = _Blocks({s: b[:max_blocks] for s, b in splits.items()}, corpus.fingerprint, made, None)

        def true_loglik(samples: Samples) -> np.ndarray:
            return np.asarray(corpus.block_loglik(samples.data), dtype=np.float64)

        def true_token_loglik(samples: Samples) -> np.ndarray:
            return corpus.token_loglik(samples.data)
    else:
        name = str(p["tokenizer"] or p["model"])
        data = _real_blocks(name, _text_or_none(p["revision"]), str(p["dataset"]), _text_or_none(p["dataset_config"]),
                            str(p["text_column"]), block_size, max_blocks, fraction, _stamp(str(p["dataset"])))
    samples = {s: Samples("tokens", np.array(b, dtype=np.int64)) for s, b in data.splits.items()}
    provenance = {
        "dataset": p["dataset"],
        "dataset_config": data.dataset_config,
        "dataset_fingerprint": data.fingerprint,
        "text_column": p["text_column"] if p["dataset"] != SYNTHETIC_DATASET else None,
        "tokenizer": SYNTHETIC_DATASET if p["dataset"] == SYNTHETIC_DATASET else (p["tokenizer"] or p["model"]),
        "tokenizer_hash": tokenizer_hash(tokenizer),
        "model": p["model"],
        "model_revision": model_revision(p),
        "model_fingerprint": model_fingerprint(p),
        "block_size": block_size,
        "max_blocks": max_blocks,
        "splits_made_from_train": list(data.made),
        "n_blocks": {s: len(samples[s]) for s in SPLITS},
    }
    return RealData(train=samples["train"], validation=samples["validation"], test=samples["test"],
                    true_loglik=true_loglik, fingerprint=data.fingerprint, provenance=provenance,
                    source=data.fingerprint,  # the same for every seed, so the track is unchanged
                    true_token_loglik=true_token_loglik)


@functools.lru_cache(maxsize=4)
def _real_blocks(tokenizer_name, revision, dataset, dataset_config, text_column, block_size, max_blocks,
                 fraction, stamp) -> _Blocks:
    """Read, tokenize and cut a hub or local dataset (cached; ``stamp`` changes with local files)."""
    tokenizer = _pretrained_tokenizer(tokenizer_name, revision)
    rows, used_config = _read_rows(dataset, dataset_config, text_column)
    streams = {}
    for split, texts in rows.items():
        # With a cap, a split that keeps its own rows needs only its first max_blocks blocks; train
        # is read whole when the other splits are carved from its end.
        need_all = split == "train" and len(rows) < len(SPLITS)
        limit = None if max_blocks is None or need_all else max_blocks * block_size
        streams[split] = cut_blocks(tokenize_rows(tokenizer, texts, limit), block_size)
    splits, made = split_blocks(streams, fraction, f"dataset {dataset!r}")
    kept = {}
    for split, blocks in splits.items():
        blocks = np.array(blocks[:max_blocks])
        blocks.flags.writeable = False
        kept[split] = blocks
    return _Blocks(kept, rows_fingerprint(rows), made, used_config)


def _checked(p: Mapping[str, Any]) -> tuple[int, int | None, float]:
    def integer(key: str, minimum: int) -> int:
        v = p[key]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
            raise BenchError(f"parameter {key}={v!r}: must be an integer >= {minimum} "
                             f"(default {DATA_PARAMS[key]!r}; set it with --set {key}=VALUE)")
        return int(v)

    block_size = integer("block_size", 1)
    max_blocks = None if p["max_blocks"] is None else integer("max_blocks", 1)
    fraction = p["holdout_fraction"]
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 0.5:
        raise BenchError(f"parameter holdout_fraction={fraction!r}: must lie in (0, 0.5) "
                         f"(default {DATA_PARAMS['holdout_fraction']})")
    if not p.get("dataset"):
        raise BenchError("parameter dataset is empty: give a hub id, a local path, or 'synthetic'")
    return block_size, max_blocks, float(fraction)


# --------------------------------------------------------------------------------------------------
# Reading datasets
# --------------------------------------------------------------------------------------------------


def looks_like_path(name: str) -> bool:
    """Whether a model/tokenizer/dataset name is a local path rather than a hub id ("owner/name"):
    it exists, or starts with / . ~, or holds a backslash or two slashes."""
    return (Path(name).expanduser().exists() or name.startswith(("/", ".", "~")) or "\\" in name
            or name.count("/") >= 2)


def is_local_dataset(dataset: str) -> bool:
    """Whether ``dataset`` names local data: a path (see looks_like_path), several comma-separated
    paths, or a name with a data-file suffix (.txt, .json, .jsonl, .parquet)."""
    return "," in dataset or looks_like_path(dataset) or Path(dataset).suffix.lower() in FILE_BUILDERS


def rows_fingerprint(rows: Mapping[str, list[str]]) -> str:
    """SHA-256 of the text rows of every split (split names, then each row length-prefixed): the
    same data gives the same fingerprint whatever form, folder or cache it was read from."""
    h = hashlib.sha256()
    for split in sorted(rows):
        h.update(f"{split}\0{len(rows[split])}\0".encode())
        for text in rows[split]:
            b = text.encode()
            h.update(len(b).to_bytes(8, "little") + b)
    return h.hexdigest()


def _read_rows(dataset: str, config: str | None, column: str) -> tuple[dict[str, list[str]], str | None]:
    """The text rows of each split the dataset has, and the config used (hub ids only)."""
    if not is_local_dataset(dataset):
        dd = _load(f"dataset {dataset!r} (config {config!r})", "load_dataset", dataset, config)
        return _text_rows(dd, column, dataset), config
    entries = [Path(e.strip()).expanduser() for e in dataset.split(",") if e.strip()]
    for entry in entries:
        if not entry.exists():
            raise NotFound(f"dataset path {str(entry)!r} does not exist", "dataset")
    if len(entries) == 1 and _is_saved_dataset(entries[0]):
        dd = _load(f"dataset folder {str(entries[0])!r}", "load_from_disk", str(entries[0]))
        if not hasattr(dd, "keys"):  # a single Dataset: train
            dd = {"train": dd}
        return _text_rows(dd, column, dataset), None
    files = _split_files(entries)
    builder = _builder(files, dataset)
    # A .txt row keeps its line break, so that the rows concatenated are the file's text: without
    # it a tokenizer that adds no separator (GPT-2's) fuses the last word of a line with the next.
    options = {"keep_linebreaks": True} if builder == "text" else {}
    dd = _load(f"dataset files {dataset!r}", "load_dataset", builder,
               data_files={s: [str(f) for f in fs] for s, fs in files.items()}, **options)
    return _text_rows(dd, "text" if builder == "text" else column, dataset), None


def check_dataset_path(params: Mapping[str, Any]) -> None:
    """Raise NotFound when ``dataset`` names local paths and one of them does not exist."""
    dataset = str(params.get("dataset") or "")
    if dataset == SYNTHETIC_DATASET or not is_local_dataset(dataset):
        return
    for entry in (Path(e.strip()).expanduser() for e in dataset.split(",") if e.strip()):
        if not entry.exists():
            raise NotFound(f"dataset path {str(entry)!r} does not exist", "dataset")


def check_sources(params: Mapping[str, Any], hub: bool = True) -> None:
    """Refuse a dataset, model or tokenizer that cannot be had: a local path that does not exist,
    and with ``hub``, when the hub is offline, a hub id not in the local cache. Nothing is loaded;
    online, hub ids are left to the loaders, which download them."""
    try:
        check_dataset_path(params)
        dataset = str(params.get("dataset") or "")
        if (hub and dataset != SYNTHETIC_DATASET and not is_local_dataset(dataset)
                and not _dataset_cached(dataset)):
            raise NotFound(f"dataset {dataset!r} is not in the local cache and the hub is offline "
                           "(HF_DATASETS_OFFLINE or HF_HUB_OFFLINE is set)", "dataset")
        names = [("model", params.get("model"))]
        if dataset != SYNTHETIC_DATASET and params.get("tokenizer"):
            names.append(("tokenizer", params.get("tokenizer")))
        for what, name in names:
            name = str(name)
            if name == TOY_MODEL:
                continue
            if looks_like_path(name):
                if not Path(name).expanduser().exists():
                    raise NotFound(f"{what} path {name!r} does not exist", what)
            elif hub and not _model_cached(name, _text_or_none(params.get("revision"))):
                raise NotFound(f"{what} {name!r} is not in the local Hugging Face cache and the hub is "
                               "offline (HF_HUB_OFFLINE is set)", what)
    except NotFound as exc:
        raise with_way_out(params, exc) from None


def parameter_estimate(params: Mapping[str, Any]) -> int | None:
    """About how many parameters the model has, from its config.json (a local folder, or the hub
    cache) without loading it: vocab x hidden + layers x 12 hidden^2 (a transformer's embedding,
    attention and 4x feed-forward). None when the config cannot be read or lacks those sizes."""
    model = str(params.get("model"))
    if model == TOY_MODEL:
        return None
    if looks_like_path(model):
        path = Path(model).expanduser() / "config.json"
    else:
        from huggingface_hub import try_to_load_from_cache

        try:
            found = try_to_load_from_cache(model, "config.json", revision=_text_or_none(params.get("revision")))
        except Exception:  # noqa: BLE001 - a malformed id: the loaders report it
            return None
        path = Path(found) if isinstance(found, str) else None
    try:
        config = json.loads(path.read_text()) if path is not None else {}
    except (OSError, ValueError):
        return None

    def size(*keys: str) -> int | None:
        values = [config[k] for k in keys if isinstance(config.get(k), int)]
        return values[0] if values else None

    vocab, hidden = size("vocab_size"), size("hidden_size", "n_embd", "d_model")
    layers = size("num_hidden_layers", "n_layer", "num_layers")
    if None in (vocab, hidden, layers):
        return None
    return vocab * hidden + layers * 12 * hidden * hidden


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _model_cached(name: str, revision: str | None) -> bool:
    """Whether a hub model can be had: the hub is online, or its config.json is in the local cache."""
    if not _hub_offline():
        return True
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(name, "config.json", revision=revision)
    except Exception:  # noqa: BLE001 - a malformed id: the loader reports it with its own message
        return True
    return isinstance(found, str)


def _dataset_cached(dataset: str) -> bool:
    """Whether a hub dataset can be had: the hub is online, or the datasets cache or the hub cache
    holds a folder for it (what is inside is left to datasets)."""
    import datasets

    if not (datasets.config.HF_DATASETS_OFFLINE or _hub_offline()):
        return True
    from huggingface_hub import constants

    flat = dataset.replace("/", "___")
    return ((Path(datasets.config.HF_DATASETS_CACHE) / flat).is_dir()
            or (Path(constants.HF_HUB_CACHE) / f"datasets--{dataset.replace('/', '--')}").is_dir())


def _load(what: str, function: str, *args, **kwargs):
    """Call datasets' ``function`` (without progress bars); what cannot be found is a BenchError."""
    import datasets

    with _quiet_datasets(datasets):
        try:
            return getattr(datasets, function)(*args, **kwargs)
        except (OSError, ValueError) as exc:  # offline, unknown id (DatasetNotFoundError), bad config
            raise NotFound(f"cannot load {what}: {_first_line(exc)}", "dataset") from exc


@contextmanager
def _quiet_datasets(datasets):
    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def _text_rows(dd: Mapping[str, Any], column: str, dataset: str) -> dict[str, list[str]]:
    rows = {}
    for split in SPLITS:
        if split not in dd:
            continue
        ds = dd[split]
        if column not in ds.column_names:
            raise BenchError(f"dataset {dataset!r} split {split!r} has no column {column!r} (it has "
                             f"{ds.column_names}); choose one with --set text_column=NAME")
        texts = ds.with_format("arrow")[column].to_pylist()
        bad = [t for t in texts if not isinstance(t, str)]
        if bad:
            raise BenchError(f"dataset {dataset!r} split {split!r} column {column!r} holds "
                             f"{len(bad)} value(s) that are not text, such as {bad[0]!r:.40}")
        rows[split] = texts
    return rows


def _is_saved_dataset(path: Path) -> bool:
    """A folder written by Dataset.save_to_disk or DatasetDict.save_to_disk."""
    return path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file())


def _files_under(folder: Path) -> list[Path]:
    """The files under ``folder``, recursively, sorted, without hidden files or folders."""
    out = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out += [Path(root) / n for n in sorted(names) if not n.startswith(".")]
    return out


def split_of(name: str) -> str | None:
    """The split a file name (or path inside a data folder) names by a keyword, else None."""
    words = re.split(r"[-._ 0-9/\\]+", name.lower())
    for split in SPLITS:
        if any(w in words for w in SPLIT_WORDS[split]):
            return split
    return None


def _split_files(entries: list[Path]) -> dict[str, list[Path]]:
    """Data files by split: a file goes to the split its name names; others go to train."""
    files: dict[str, list[Path]] = {}
    for entry in entries:
        if entry.is_dir():
            found = [(f, f.relative_to(entry).as_posix()) for f in _files_under(entry)
                     if f.suffix.lower() in FILE_BUILDERS]
            if not found:
                raise NotFound(f"dataset folder {str(entry)!r} holds no {'/'.join(FILE_BUILDERS)} files",
                               "dataset")
        else:
            found = [(entry, entry.name)]
        for path, name in found:
            files.setdefault(split_of(name) or "train", []).append(path)
    return files


def _builder(files: Mapping[str, list[Path]], dataset: str) -> str:
    suffixes = {f.suffix.lower() for fs in files.values() for f in fs}
    unknown = suffixes - set(FILE_BUILDERS)
    if unknown:
        raise BenchError(f"dataset {dataset!r}: cannot read {sorted(unknown)} files; "
                         f"use {', '.join(FILE_BUILDERS)} files or a save_to_disk folder")
    builders = {FILE_BUILDERS[s] for s in suffixes}
    if len(builders) > 1:
        raise BenchError(f"dataset {dataset!r} mixes file formats {sorted(suffixes)}; use one format")
    return builders.pop()


def _stamp(dataset: str) -> tuple | None:
    """Names, sizes and modification times of local dataset files: a cache key that changes when
    they change (None for hub ids, whose content datasets' own cache tracks)."""
    if dataset == SYNTHETIC_DATASET or not is_local_dataset(dataset):
        return None
    stamp = []
    for entry in (Path(e.strip()).expanduser() for e in dataset.split(",") if e.strip()):
        paths = _files_under(entry) if entry.is_dir() else [entry] if entry.exists() else []
        for path in paths:
            st = path.stat()
            stamp.append((str(path), st.st_size, st.st_mtime_ns))
    return tuple(stamp)


def _text_or_none(value: Any) -> str | None:
    """A revision or config name as text (``--set revision=1234567`` arrives as an int)."""
    return None if value is None else str(value)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0].rstrip(".") if text else type(exc).__name__


def _at(revision: str | None) -> str:
    return f" at revision {revision!r}" if revision else ""
