"""The spec of a run: everything that changes its results, resolved from defaults, preset and overrides.

Precedence, lowest first: component defaults (trainer, generator, scorer), the model bundle's
params, the preset, a config file, then ``--set key=value``. The run id hashes the spec without the
generation count, so asking for more generations extends the same run; the generation-0 id also
leaves out the policy and the start, so runs that differ only in those share generation 0.
"""

from __future__ import annotations

import numbers
import os
import re
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from bench.components import STARTS
from bench.errors import BenchError
from bench.plugins import Bench, suggest
from bench.types import DEFAULT_GENERATIONS, Spec, _digest  # noqa: F401 (re-exported: their home is bench.types)
from bench.types import parse_scalar as _parse_scalar

# Keys a preset may hold besides the bundle's params.
PRESET_KEYS = ("generations", "policy", "start")
DEFAULT_POLICY = "replace"
DEFAULT_START = "pretrained"


# -- parsing user input --------------------------------------------------------------------------


# The most runs one command may name (seeds of `bench run`, runs of a sweep): a typo such as
# 0-100000000 is refused at once instead of resolving runs for hours; BENCH_MAX_RUNS raises it.
MAX_RUNS = 10_000
ENV_MAX_RUNS = "BENCH_MAX_RUNS"


def max_runs() -> int:
    """The run limit of one command: ``BENCH_MAX_RUNS`` when set, else :data:`MAX_RUNS`."""
    text = os.environ.get(ENV_MAX_RUNS, "").strip()
    if not text:
        return MAX_RUNS
    if not text.isdigit() or int(text) < 1:
        raise BenchError(f"{ENV_MAX_RUNS} must be a whole number >= 1 (the most runs one command may name), "
                         f"got {text!r}")
    return int(text)


def too_many_runs(count: int, what: str, split: str = "") -> BenchError:
    """The message for ``what`` naming ``count`` runs, over :func:`max_runs`; ``split`` says how
    to divide the work (default: seed ranges over several commands)."""
    limit = max_runs()
    split = split or f"split the seeds over several commands (0-{limit - 1}, then {limit}-...)"
    return BenchError(f"{what}: {count:,} runs, more than the limit of {limit:,} runs per command: "
                      f"{split}, or raise the limit with the environment variable {ENV_MAX_RUNS}={count}")


def parse_seeds(text: str | int | Iterable[int | str]) -> list[int]:
    """``3`` -> [3]; ``0-4`` -> [0..4]; ``0,2,7`` -> [0, 2, 7]; ranges and lists combine, and a
    list may hold numbers and such texts. More seeds than :func:`max_runs` are refused before any
    list is built."""
    if isinstance(text, bool):
        raise BenchError(f"invalid seeds {text!r}")
    if isinstance(text, numbers.Integral):
        return [int(text)]
    limit = max_runs()
    if not isinstance(text, str):
        if not isinstance(text, Iterable) or isinstance(text, (Mapping, bytes)):
            raise BenchError(f"invalid seeds {text!r}: use a number (3), a range (0-4) or a list (0,2,7)")
        seeds: list[int] = []
        for item in text:
            if isinstance(item, bool) or not isinstance(item, (numbers.Integral, str)):
                raise BenchError(f"invalid seed {item!r} in {text!r}: use numbers, or texts such as \"0-4\"")
            seeds.extend(parse_seeds(item))
            if len(seeds) > limit:
                raise too_many_runs(len(seeds), f"seeds {text!r}")
        if len(set(seeds)) != len(seeds):
            raise BenchError(f"seeds {text!r} name a seed twice")
        return seeds
    seeds = []
    for part in str(text).split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise BenchError(f"invalid seeds {text!r}: use a number (3), a range (0-4) or a list (0,2,7)")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise BenchError(f"invalid seed range {part!r}: the end is before the start")
        if len(seeds) + hi - lo + 1 > limit:
            raise too_many_runs(len(seeds) + hi - lo + 1, f"seeds {text!r}")
        seeds.extend(range(lo, hi + 1))
    if len(set(seeds)) != len(seeds):
        raise BenchError(f"seeds {text!r} name a seed twice")
    return seeds


def parse_assignments(items: Iterable[str]) -> dict[str, Any]:
    """``["a=1", "b=x"]`` -> {"a": 1, "b": "x"}; values are read as YAML scalars."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise BenchError(f"--set needs key=value, got {item!r} (for example --set n_samples=500)")
        key, value = item.split("=", 1)
        key = key.strip()
        if not key:
            raise BenchError(f"--set needs key=value, got {item!r}")
        out[key] = _parse_scalar(value) if value.strip() else ""
    return out


def read_mapping(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """The mapping in a YAML or TOML file (TOML by the ``.toml`` suffix); ``what`` names the file
    in messages."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BenchError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise BenchError(f"{what} {path} is not a text file: byte {exc.start} is not UTF-8; "
                         "give a YAML or TOML file") from None
    toml = path.suffix.lower() == ".toml"
    try:
        if toml:
            import tomllib

            data = tomllib.loads(text)
        else:
            data = yaml.safe_load(text)
    except Exception as exc:  # yaml and toml both raise their own error types
        raise BenchError(f"{what} {path} is not valid {'TOML' if toml else 'YAML'}: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise BenchError(f"{what} {path} must hold a mapping of options, got {type(data).__name__}")
    return data


def split_policy(text: str) -> tuple[str, str | None]:
    name, sep, value = text.partition(":")
    return name.strip(), (value.strip() if sep else None)


# -- resolution ---------------------------------------------------------------------------------


def _coerce(key: str, value: Any, default: Any, where: str) -> Any:
    """Check an override against the type of its default (ints may stand for floats)."""
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    elif isinstance(default, (list, tuple)):
        if isinstance(value, (list, tuple)):
            return list(value)
    else:
        return value
    raise BenchError(
        f"{where}: {key} must be {type(default).__name__} like its default {default!r}, got {value!r}"
    )


def resolve(
    bench: Bench,
    plugin: str,
    preset: str | None = None,
    *,
    seed: int = 0,
    generations: int | None = None,
    policy: str | None = None,
    start: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    metrics: Iterable[str] | None = None,
    trainer: str | None = None,
    generator: str | None = None,
    scorer: str | None = None,
    mitigation: str | Iterable[str] | None = None,
) -> Spec:
    """Build the full spec of one run, checking every name and value on the way.

    ``mitigation`` (``"best-of:4"``, ``"tce:0.9"``, ``"mix:0.1+temperature:0.7"``) selects a
    policy or sets a trainer or generator parameter through :mod:`bench.mitigations`; a mitigation
    that does not apply to this model raises BenchError with the reason.
    """
    if mitigation:
        from bench import mitigations as _mitigations

        policy, extra = _mitigations.translate(bench, plugin, mitigation, policy)
        overrides = {**extra, **dict(overrides or {})}
    bundle = bench.models.get(plugin)
    preset = preset or bundle.default_preset
    if preset not in bundle.presets:
        raise BenchError(
            f"model {plugin!r} has no preset {preset!r}.{suggest(preset, bundle.presets)} "
            f"Its presets: {', '.join(sorted(bundle.presets)) or 'none'}."
        )
    preset_values = dict(bundle.presets[preset])

    components = {
        "trainer": bench.trainers.get(trainer or bundle.trainer),
        "generator": bench.generators.get(generator or bundle.generator),
        "scorer": bench.scorers.get(scorer or bundle.scorer),
    }
    for role, comp in components.items():
        if bundle.kind not in comp.kinds:
            raise BenchError(
                f"{role} {comp.name!r} handles {', '.join(comp.kinds)} samples, but model {plugin!r} "
                f"makes {bundle.kind}; pick a {role} for {bundle.kind}."
            )

    params: dict[str, Any] = {}
    options: dict[str, Any] = {}  # optional parameters: in the spec only when set
    for comp in components.values():
        params.update(comp.params)
        options.update(getattr(comp, "options", {}) or {})
    params.update(bundle.params)
    for key, value in preset_values.items():
        if key in PRESET_KEYS:
            continue
        if key not in params:
            raise BenchError(f"preset {plugin}/{preset} sets unknown parameter {key!r} (a bug in the plugin)")
        params[key] = value

    policy_text = policy or preset_values.get("policy") or DEFAULT_POLICY
    policy_name, positional = split_policy(policy_text)
    pol = bench.policies.get(policy_name)
    policy_params = dict(pol.params)
    if positional is not None:
        if pol.positional is None:
            raise BenchError(f"policy {policy_name!r} takes no value; use --policy {policy_name}")
        names = (pol.positional,) if isinstance(pol.positional, str) else tuple(pol.positional)
        values = [positional] if len(names) == 1 else [v.strip() for v in positional.split(",")]
        if len(values) > len(names):
            raise BenchError(f"policy {policy_name!r} takes at most {len(names)} value(s) "
                             f"({','.join(names)}), got {positional!r}")
        for pname, value in zip(names, values):
            policy_params[pname] = _parse_scalar(value)

    for key, value in (overrides or {}).items():
        if key.startswith("policy."):
            pkey = key.split(".", 1)[1]
            if pkey not in policy_params:
                raise BenchError(
                    f"--set {key}: policy {policy_name!r} has no parameter {pkey!r}."
                    f"{suggest(pkey, policy_params)} Its parameters: {', '.join(policy_params) or 'none'}."
                )
            policy_params[pkey] = value
            continue
        if key in PRESET_KEYS:
            raise BenchError(f"--set {key}=...: use --{key} instead")
        if key not in params and key in options:
            value = _coerce(key, value, options[key], f"--set {key}")
            if value != options[key]:  # an option at its neutral value is left out of the spec
                params[key] = value
            continue
        if key not in params:
            raise BenchError(
                f"--set {key}: {plugin!r} has no parameter {key!r}.{suggest(key, [*params, *options])} "
                f"Its parameters: {', '.join(sorted([*params, *options]))}."
            )
        params[key] = _coerce(key, value, params[key], f"--set {key}")

    try:
        messages = list(pol.check(policy_params) or ()) if pol.check is not None else []
        if pol.validate is not None:  # the older form: ValueError for the user
            pol.validate(policy_params)
    except (BenchError, ValueError) as exc:
        raise BenchError(f"policy {policy_name!r}: {exc}") from None
    for message in messages:
        warnings.warn(f"policy {policy_name!r}: {message}", stacklevel=2)
    from bench import mitigations as _mitigations

    reason = _mitigations.policy_unavailable(bench, bundle, params, policy_name, policy_params)
    if reason:
        raise BenchError(f"policy {policy_name!r} does not apply to model {plugin!r}: {reason}")

    start = start or preset_values.get("start") or DEFAULT_START
    if start not in STARTS:
        raise BenchError(f"unknown start {start!r}.{suggest(start, STARTS)} Choose one of {', '.join(STARTS)}.")

    if isinstance(metrics, str):  # one metric, never its letters
        metrics = [metrics]
    metric_names = list(bundle.metrics) if metrics is None else list(metrics)
    for name in metric_names:
        m = bench.metrics.get(name)
        if bundle.kind not in m.kinds:
            raise BenchError(f"metric {name!r} does not accept {bundle.kind} samples (it takes {', '.join(m.kinds)})")

    gens = generations if generations is not None else preset_values.get("generations", DEFAULT_GENERATIONS)
    if isinstance(gens, bool) or not isinstance(gens, int) or gens < 0:
        raise BenchError(f"generations must be a non-negative integer, got {gens!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise BenchError(f"seed must be a non-negative integer, got {seed!r}")

    return Spec(
        plugin=plugin,
        preset=preset,
        params=params,
        trainer=components["trainer"].name,
        generator=components["generator"].name,
        scorer=components["scorer"].name,
        metrics=metric_names,
        policy=policy_name,
        policy_params=policy_params,
        start=start,
        seed=seed,
        generations=gens,
    )


# A number with an exponent that YAML 1.1 reads as a string: 1e-2, 3E5, 1.0e5 (it wants "1.0e+5").
