"""How runs group into tracks and entries, how entries are labelled, and the t interval over
seeds: the one definition that :mod:`bench.leaderboard` and :mod:`bench.plots` (so also
:mod:`bench.report`) share. docs/leaderboards.md and docs/reports.md state the rules.

Runs are read through :mod:`bench.runfolder` (which also owns the track id) and held in each
tool's own record (``RunRecord``, ``plots.RunData``), so these functions take plain values:
specs, policy labels, track ids, seeds.
"""

from __future__ import annotations

import json
import math
from typing import Any, Sequence

import numpy as np

CONFIDENCE = 0.95


# -- the interval over seeds ----------------------------------------------------------------------


def summarize(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and t-interval over seeds (axis 0): ``mean +- t_{(1+c)/2, n-1} * sd / sqrt(n)`` with
    the sample sd (ddof 1). One seed, or any non-finite value in a column: no interval (NaN).

    Non-finite values propagate into the mean (the leaderboard's rule); callers that leave them
    out (plots, reports) pass only the finite values."""
    from scipy.special import stdtrit  # the t quantile (scipy.stats costs a second to import)

    values = np.asarray(values, dtype=float)
    n = values.shape[0]
    with np.errstate(invalid="ignore", over="ignore"):
        mean = values.mean(axis=0) if n else np.full(values.shape[1:], np.nan)
        if n < 2:
            nan = np.full_like(mean, np.nan, dtype=float)
            return mean, nan, nan.copy()
        half = stdtrit(n - 1, 0.5 + confidence / 2) * values.std(axis=0, ddof=1) / math.sqrt(n)
    finite = np.isfinite(values).all(axis=0)
    return mean, np.where(finite, mean - half, np.nan), np.where(finite, mean + half, np.nan)


# -- tracks and entries ---------------------------------------------------------------------------


def entry_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """What makes an entry: the spec without its seed."""
    return {k: v for k, v in spec.items() if k != "seed"}


def entry_key(spec: dict[str, Any]) -> str:
    """The entry of a spec (with or without its seed) as a string: its canonical JSON."""
    return json.dumps(entry_spec(spec), sort_keys=True, default=str)


def seed_order(seed: Any) -> tuple:
    """A sort key for seeds: numbers in order, then anything else by its text."""
    return (0, seed, "") if isinstance(seed, (int, float)) and not isinstance(seed, bool) else (1, 0, str(seed))


def derived_track(spec: dict[str, Any], generations: Any, real_data: Any) -> dict[str, Any]:
    """The track of a run.json written before run.json had one, derived as the harness derives
    it (:func:`bench.runfolder.make_track`, the one track-id formula): ``name`` plugin/preset,
    ``id`` a hash of plugin, preset, generations requested and the real-data fingerprint."""
    from bench.runfolder import spec_track  # runfolder builds on this module

    return spec_track(spec, generations, real_data)


def join_tracks(runs: Sequence[tuple[str, str, Any]], join_changed_data: bool = False) -> list[tuple[int, list[int]]]:
    """Join the track ids of runs of one protocol, also where the data is drawn from the seed.

    ``runs`` are (track id, entry key, seed). The harness's track id hashes the real-data
    fingerprint, and sources that draw their real data from the seed (gmm, gaussian) record one
    fingerprint, so one id, per seed. An entry's runs differ only in the seed by definition, so
    the ids of an entry's runs are joined, and so are entries sharing an id. An entry with two ids
    for one seed (the data itself changed) joins nothing, unless ``join_changed_data``.

    Returns the joined tracks in first-seen order, each as (the index of the run whose id it
    keeps: the smallest seed's, then the smallest id; the indices of its runs, in input order).
    """
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    entries: dict[str, list[int]] = {}
    for i, (track_id, entry, _) in enumerate(runs):
        find(track_id)
        entries.setdefault(entry, []).append(i)
    for members in entries.values():
        if not join_changed_data:
            per_seed: dict[Any, set[str]] = {}
            for i in members:
                per_seed.setdefault(runs[i][2], set()).add(runs[i][0])
            if any(len(ids) > 1 for ids in per_seed.values()):
                continue
        for i in members[1:]:
            a, b = find(runs[members[0]][0]), find(runs[i][0])
            if a != b:
                parent[b] = a
    groups: dict[str, list[int]] = {}
    for i, (track_id, _, _) in enumerate(runs):
        groups.setdefault(find(track_id), []).append(i)
    return [(min(g, key=lambda i: (seed_order(runs[i][2]), runs[i][0])), g) for g in groups.values()]


# -- entry labels ---------------------------------------------------------------------------------

_LABEL_FIXED = ("seed", "plugin", "preset", "generations", "policy", "policy_params")
_LABEL_ORDER = {"start": 0, "generator": 1, "trainer": 2, "scorer": 3, "metrics": 5}


def _flat_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec values that may tell entries apart, parameters flattened (``params.`` prefixed
    only where a parameter shares a name with a spec key other than the seed)."""
    flat = {}
    for key, value in spec.items():
        if key in _LABEL_FIXED:
            continue  # the seed is what an entry averages over; the policy label says the policy
        if key == "params" and isinstance(value, dict):
            flat.update({(k if k not in spec or k == "seed" else f"params.{k}"): v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def _short(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return ",".join(_short(v) for v in value)
    return json.dumps(value, sort_keys=True, default=str)


def entry_labels(entries: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
    """Labels of the entries of one track, given as (policy label, spec with or without its
    seed); an entry may be given more than once (once per run). A label is the policy label
    followed by the spec values that differ between the entries (``mix:0.1 start=gen0``)."""
    canon = lambda v: json.dumps(v, sort_keys=True, default=str)  # noqa: E731
    flats = [_flat_spec(spec) for _, spec in entries]
    keys = sorted({k for f in flats for k in f})
    differing = [k for k in keys if len({canon(f.get(k)) for f in flats}) > 1]
    differing.sort(key=lambda k: (_LABEL_ORDER.get(k, 4), k))
    # A key an entry lacks (an optional parameter it never set) adds nothing to its label.
    return [" ".join([policy] + [f"{k}={_short(f[k])}" for k in differing if k in f])
            for (policy, _), f in zip(entries, flats)]


def main_rows(rows: Sequence[str], main: Sequence[str]) -> dict[str, list[int]]:
    """Which metric rows each main metric covers: ``name`` itself and ``name/<key>``."""
    cover = {}
    for name in main:
        idx = [i for i, r in enumerate(rows) if r == name or r.startswith(name + "/")]
        if idx:
            cover[name] = idx
    return cover
