"""The ``bench run`` command that reproduces runs, from their spec (run.json ``spec``): printed for
each entry of a leaderboard (:mod:`bench.render`) and usable by any other page.

Every resolved choice is spelled out (plugin, preset, generations, policy and each of its
parameters, start, every parameter, the metrics), so the command resolves to the same spec, and so
the same run ids, whatever the presets' defaults are when it is run. ``bench run`` always uses the
model's own trainer, generator and scorer (the spec names them; only a config file or a sweep can
choose others), so those are not spelled.
"""

from __future__ import annotations

import math
import shlex
from typing import Any, Iterable, Mapping

import yaml

from bench.errors import BenchError


def format_seeds(seeds: Iterable[int]) -> str:
    """Seeds as ``bench run --seeds`` reads them: runs of consecutive seeds as ranges (``0-4``),
    the rest listed (``0-2,5,7``)."""
    values = sorted(int(s) for s in seeds)
    parts: list[str] = []
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        parts.append(str(values[i]) if j == i else f"{values[i]}-{values[j]}")
        i = j + 1
    return ",".join(parts)


def set_value(value: Any) -> str:
    """A parameter value as ``--set key=VALUE`` text that reads back (as YAML, like ``--set``) to
    the same value: floats keep a decimal point (``1.0e-05``), strings that would read as
    something else are quoted, lists and mappings in flow style."""
    text = yaml.safe_dump(value, default_flow_style=True, width=2**31, allow_unicode=True)
    text = text.removesuffix("\n").removesuffix("\n...").strip()
    back = yaml.safe_load(text)
    if back != value and not (isinstance(value, float) and math.isnan(value) and math.isnan(back)):
        raise BenchError(f"the value {value!r} cannot be written for --set (it does not read back the same)")
    return text


def run_command(spec: Mapping[str, Any], seeds: Iterable[int] | None = None) -> str:
    """``bench run --plugin P --preset X --generations N --policy NAME [--set policy.K=V ...] --start S
    [--set K=V ...] [--metric M ...] --seeds SEEDS``, shell-quoted, for ``spec`` (a run's spec, with
    or without its seed) and ``seeds`` (default: the spec's own seed)."""
    if seeds is None:
        if "seed" not in spec:
            raise BenchError("run_command needs the seeds: the spec holds none")
        seeds = [spec["seed"]]
    seeds = list(seeds)
    if not seeds:
        raise BenchError("run_command needs at least one seed")
    args = ["bench", "run", "--plugin", str(spec["plugin"]), "--preset", str(spec["preset"]),
            "--generations", str(spec["generations"]), "--policy", str(spec["policy"])]
    for key, value in (spec.get("policy_params") or {}).items():
        args += ["--set", f"policy.{key}={set_value(value)}"]
    args += ["--start", str(spec["start"])]
    for key, value in sorted((spec.get("params") or {}).items()):
        args += ["--set", f"{key}={set_value(value)}"]
    for metric in spec.get("metrics") or []:
        args += ["--metric", str(metric)]
    args += ["--seeds", format_seeds(seeds)]
    return " ".join(shlex.quote(a) for a in args)
