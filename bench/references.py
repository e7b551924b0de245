"""The paper's figures for a run: which :class:`bench.Reference` marks a plot, report or
leaderboard page of a run draws.

A model bundle declares references per preset (``ModelBundle.references``). They belong to a run
only when it reproduces that experiment: its preset's own parameters, policy, start and
components. Changing any of them (``--set n_samples=50``, ``--policy mix:0.1``) makes another
experiment, so the marks are left off rather than compared with something the paper did not run.
Settings that do not change what is computed (the device, the dtype, the thread count) are not
compared.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from bench.components import Reference

# parameters that say where or how fast a run computes, not what it computes
NOT_COMPARED = frozenset({"device", "dtype", "threads"})
RESERVED = ("generations", "policy", "start")


def _policy_name(policy: str) -> str:
    return str(policy).split(":", 1)[0]


def for_spec(b: Any, spec: Mapping[str, Any] | Any) -> tuple[Reference, ...]:
    """The references of ``spec`` (a Spec or run.json's spec dict): the bundle's for its preset, if
    the spec keeps the preset's parameters, policy, start and components; else none. A model that
    is not installed has none."""
    data = spec if isinstance(spec, Mapping) else spec.to_dict()
    try:
        bundle = b.models.get(data["plugin"])
    except Exception:  # not installed here: nothing to draw
        return ()
    preset_name = data.get("preset")
    refs = tuple(bundle.references.get(preset_name, ()))
    if not refs:
        return ()
    preset = bundle.presets.get(preset_name, {})
    params = data.get("params") or {}
    for key, value in preset.items():
        if key in RESERVED or key in NOT_COMPARED:
            continue
        if params.get(key) != value:
            return ()
    if "policy" in preset and _policy_name(data.get("policy", "")) != _policy_name(preset["policy"]):
        return ()
    if "policy" in preset and ":" in str(preset["policy"]) and data.get("policy") != preset["policy"]:
        # mix:0.1 in the preset: the run must keep the same share (its policy_params say so)
        share = str(preset["policy"]).split(":", 1)[1]
        if str((data.get("policy_params") or {}).get("p", share)) != share:
            return ()
    if "start" in preset and data.get("start") != preset["start"]:
        return ()
    for role in ("trainer", "generator", "scorer"):
        if data.get(role) not in (None, getattr(bundle, role)):
            return ()
    return refs


def for_row(refs: Iterable[Reference], row: str) -> list[Reference]:
    """The references drawn on metric row ``row``'s plot or table."""
    return [r for r in refs if r.covers(row)]


def describe(ref: Reference) -> str:
    """One line for a table or legend: ``paper: 0.90 at generation 0 (notebook, std at start)``."""
    value = f"{ref.value:g}" if ref.high is None else f"{ref.value:g}-{ref.high:g}"
    where = f" at generation {ref.generation}" if ref.generation is not None else ""
    label = f" ({ref.label})" if ref.label else ""
    return f"paper: {value}{where}{label}"
