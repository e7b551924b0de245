"""Bridges to tools users already have (docs/bridges.md).

:func:`evaluate_metric` turns a Hugging Face ``evaluate`` module (a local metric script) into a
:class:`bench.Metric` that a plugin registers like any other. TensorBoard logging is the
first-party plugin ``collapse_bench_plugins.tensorboard_logger``.

``evaluate`` is an optional extra (``pip install 'collapse-bench[evaluate]'``), imported only when
such a metric first computes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from bench.components import SAMPLE_KINDS, Metric, MetricContext
from bench.errors import BenchError

EVALUATE_INSTALL = "pip install 'collapse-bench[evaluate]'"
TEXT_INPUTS = ("predictions", "references")

# Loaded evaluate modules of this process: (script, digest, load options) -> module.
_modules: dict[tuple[str, str, str], Any] = {}


def evaluate_metric(
    path: str | Path,
    *,
    name: str,
    direction: str,
    target: float | None = None,
    key: str | None = None,
    inputs: Callable[[MetricContext], Mapping[str, Any]] | None = None,
    kinds: Sequence[str] = ("tokens",),
    description: str = "",
    **load_kwargs: Any,
) -> Metric:
    """A metric computed by the ``evaluate`` module at ``path`` (a ``.py`` script, or a folder
    holding ``<folder name>.py``), loaded offline once per process on first use.

    ``inputs(ctx)`` returns the keyword arguments of the module's ``compute``; the default,
    :func:`text_inputs`, feeds generated texts as ``predictions`` and the real texts they should
    continue as ``references``. The metric's value is the result's ``key`` entry, or with no
    ``key`` every numeric entry, as rows ``name/entry``. Its version hashes the module's files,
    ``key`` and the load options, so editing the module changes the version its rows carry.
    ``load_kwargs`` go to ``evaluate.load`` (``config_name``, ...; ``keep_in_memory`` defaults
    to True, so nothing is cached on disk).
    """
    kinds = tuple(kinds)
    unknown = [k for k in kinds if k not in SAMPLE_KINDS]
    if unknown:
        raise BenchError(f"evaluate metric {name!r}: unknown sample kind(s) {unknown}; use {SAMPLE_KINDS}")
    if inputs is None and set(kinds) - {"tokens"}:
        raise BenchError(
            f"evaluate metric {name!r} accepts {', '.join(kinds)} samples, which have no generated text: "
            "pass inputs=a function of the metric context returning the module's compute() arguments, "
            "e.g. inputs=lambda ctx: {'predictions': ctx.samples.data.tolist(), 'references': ...}"
        )
    script, files = module_files(path)
    load_kwargs.setdefault("keep_in_memory", True)
    options = json.dumps({"key": key, "load": load_kwargs}, sort_keys=True, default=str)
    digest = files_digest(files, script.parent, options)

    def compute(ctx: MetricContext):
        m = load_module(script, digest, options, load_kwargs, name)
        kwargs = inputs(ctx) if inputs is not None else text_inputs(ctx, feature_names(m))
        return select(m.compute(**kwargs), key, name)

    return Metric(name=name, compute=compute, direction=direction, version=f"evaluate-{digest[:12]}",
                  target=target, kinds=kinds, description=description or f"evaluate module {script.name}")


# -- the module ---------------------------------------------------------------------------------


def module_files(path: str | Path) -> tuple[Path, list[Path]]:
    """The module's script and the files its version hashes (for a folder every file in it but
    hidden ones and ``__pycache__``; for a script the script alone)."""
    p = Path(path).expanduser()
    # hub ids look like 'bleu' or 'org/name'; paths start with . / ~ or name a .py file
    looks_like_path = isinstance(path, Path) or str(path).startswith((".", "/", "~")) or str(path).endswith(".py")
    if not p.exists() and looks_like_path:
        raise BenchError(f"evaluate module {str(path)!r}: no such file or folder ({p.absolute()})")
    if not p.exists():
        raise BenchError(
            f"evaluate module {str(path)!r} is not a local file or folder. collapse-bench loads evaluate "
            "modules from local paths only: hub names need the network, and a local copy pins the code the "
            "metric's version hashes. Copy the module's folder (for a hub metric such as 'bleu', the files "
            "of the Space evaluate-metric/bleu) next to your plugin and pass its path, e.g. "
            "evaluate_metric(Path(__file__).parent / 'bleu', ...)."
        )
    p = p.absolute()
    if p.is_dir():
        script = p / f"{p.name}.py"
        if not script.is_file():
            raise BenchError(f"evaluate module folder {p} holds no {p.name}.py: evaluate loads the script named "
                             "after its folder. Rename the script, or pass the script's own path.")
        files = sorted(f for f in p.rglob("*") if f.is_file() and "__pycache__" not in f.parts
                       and not any(part.startswith(".") for part in f.relative_to(p).parts))
        return script, files
    if p.suffix != ".py":
        raise BenchError(f"evaluate module {p} is not a .py script; pass the script or its folder")
    return p, [p]


def files_digest(files: Sequence[Path], base: Path, extra: str = "") -> str:
    """SHA-256 over the files' paths relative to ``base``, their contents, and ``extra``."""
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(base).as_posix().encode() + b"\0")
        h.update(f.read_bytes() + b"\0")
    h.update(extra.encode())
    return h.hexdigest()


def load_module(script: Path, digest: str, options: str, load_kwargs: Mapping[str, Any], name: str):
    """``evaluate.load(script)`` once per process for a given content and options."""
    cache_key = (str(script), digest, options)
    if cache_key in _modules:
        return _modules[cache_key]
    try:
        import evaluate
    except ImportError as exc:
        raise BenchError(f"metric {name!r} is an evaluate module, which needs the evaluate package: "
                         f"{EVALUATE_INSTALL} ({exc})") from None
    try:
        module = evaluate.load(str(script), **load_kwargs)
    except Exception as exc:
        raise BenchError(f"metric {name!r}: evaluate could not load {script}: {type(exc).__name__}: {exc}") from exc
    _modules[cache_key] = module
    return module


def feature_names(module: Any) -> tuple[str, ...] | None:
    """The input names the module declares (its first feature set), or None if it declares none."""
    features = getattr(module, "features", None)
    if features is None:
        return None
    if isinstance(features, (list, tuple)):
        features = features[0] if features else None
    return tuple(features.keys()) if features is not None else None


def select(result: Any, key: str | None, name: str) -> float | dict[str, float]:
    """The value of ``key`` in the module's result, or with no key every numeric entry."""
    if not isinstance(result, Mapping):
        raise BenchError(f"evaluate metric {name!r}: the module returned {type(result).__name__}, not a dict")
    if key is not None:
        if key not in result:
            raise BenchError(f"evaluate metric {name!r}: the result has no {key!r}; its entries: "
                             f"{', '.join(map(str, result)) or 'none'}. Pass one of them as key=.")
        if not _is_number(result[key]):
            raise BenchError(f"evaluate metric {name!r}: result entry {key!r} is {result[key]!r}, not a number")
        return float(result[key])
    values = {str(k): float(v) for k, v in result.items() if _is_number(v)}
    if not values:
        raise BenchError(f"evaluate metric {name!r}: the result has no numeric entry ({', '.join(map(str, result))})")
    return values


def _is_number(value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, (int, float, np.number)):
        return True
    return isinstance(value, np.ndarray) and value.ndim == 0 and np.issubdtype(value.dtype, np.number)


# -- default inputs for text --------------------------------------------------------------------


def text_inputs(ctx: MetricContext, features: Sequence[str] | None = TEXT_INPUTS) -> dict[str, list[str]]:
    """``predictions``: the generated texts of S_{k+1} (``ctx.samples.columns['text']``);
    ``references``: for sample i, the real text that follows its prompt, real training block i
    (:func:`real_continuations`). Samples without a reference (the last prompt has no next block)
    are left out when the module takes references; a module that takes only predictions gets
    every generated text."""
    texts = ctx.samples.columns.get("text")
    if texts is None:
        raise BenchError(
            "the samples have no 'text' column (the generator stores none), so the evaluate metric has no "
            "predictions: pass inputs=a function of the metric context returning the module's compute() "
            "arguments"
        )
    wanted = tuple(features) if features is not None else TEXT_INPUTS
    other = [f for f in wanted if f not in TEXT_INPUTS]
    if other:
        raise BenchError(f"the evaluate module takes {', '.join(other)} besides predictions and references: "
                         "pass inputs=a function returning all of its compute() arguments")
    if "references" not in wanted:
        return {"predictions": [str(t) for t in texts]}
    references = ctx.cached("evaluate:references", lambda: real_continuations(ctx))
    n = min(len(texts), len(references))
    return {"predictions": [str(t) for t in texts[:n]], "references": list(references[:n])}


def real_continuations(ctx: MetricContext) -> list[str]:
    """Text of real training blocks 1..n-1: block i+1 is what truly follows prompt i, since the
    language-model track cuts one token stream into consecutive blocks and the generator
    continues block i for sample i. Taken from the real training samples' ``text`` column where
    they have one, else from the generated samples' ``prompt`` column: the loop prompts sample i
    with real block i, and a language-model generator stores that prompt decoded with the run's
    tokenizer, so prompt i+1 is the text of real block i+1."""
    train = ctx.real.train
    if "text" in train.columns:
        return [str(t) for t in list(train.columns["text"])[1:]]
    prompts = ctx.samples.columns.get("prompt")
    if prompts is None:
        raise BenchError(
            "the real training samples have no 'text' column and the generated samples no 'prompt' column "
            "(the decoded real block each one continues), so the evaluate metric has no references: give "
            "the real samples a 'text' column, store the prompt's text in the generator's 'prompt' column, "
            "or pass inputs=a function returning the module's compute() arguments"
        )
    # prompts repeat the real blocks when there are more samples than blocks; stop at the last block
    return [str(t) for t in list(prompts)[1:len(train)]]
