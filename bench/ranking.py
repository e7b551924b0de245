"""Ranking one track's runs: the formulas of docs/leaderboards.md and the table they make.

- Each metric row is aggregated over an entry's seeds at the final generation N and as the area
  under its curve over generations 0..N (:func:`curve_area`; of ``|value - target|`` for target
  metrics): mean, 95% t-interval (:func:`bench.grouping.summarize`), number of seeds.
- Each column is ranked by its direction (:func:`rank`); ties share the average rank; NaN ranks
  last; +-inf are ordinary extreme values.
- Overall: the mean of an entry's ranks over the main metrics (:func:`overall_score`), each main
  metric counting once however many rows it has (:func:`main_rows`); lowest first.

:func:`make_board` builds one track's :class:`Board` from the checked metric rows of its runs
(:mod:`bench.leaderboard` reads and checks them; :mod:`bench.render` writes the boards).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bench.grouping import entry_labels, main_rows, summarize  # noqa: F401 (main_rows: moved, re-exported)

RULE = ("the mean of the entry's ranks over the main metrics, at the final generation and by area under "
        "the curve, each main metric counting once however many rows it has; the overall rank orders "
        "this score, lowest first")

# -- the formulas (the mean and t-interval over seeds, ``summarize``, is in bench.grouping) --------


def curve_area(curves: np.ndarray) -> np.ndarray:
    """Area under curves over generations 0..N (last axis), by the trapezoid rule with unit steps,
    divided by N: the curve's mean level. N = 0: the value itself. A NaN anywhere gives NaN."""
    curves = np.asarray(curves, dtype=float)
    n = curves.shape[-1] - 1
    if n <= 0:
        return curves[..., 0].copy()
    with np.errstate(invalid="ignore", over="ignore"):
        return (curves[..., 1:] + curves[..., :-1]).sum(axis=-1) / (2.0 * n)


def rank(values: Sequence[float], direction: str, target: float | None = None) -> np.ndarray:
    """Ranks (1 = best) by direction: ``lower`` ascending, ``higher`` descending, ``target`` by
    ``|value - target|``. Ties share the average rank; NaN ranks last (NaNs tie among
    themselves); +-inf are ordinary extreme values."""
    v = np.asarray(values, dtype=float)
    with np.errstate(invalid="ignore"):
        if direction == "lower":
            key = v
        elif direction == "higher":
            key = -v
        elif direction == "target":
            key = np.abs(v - float(target if target is not None else np.nan))
        else:
            raise ValueError(f"unknown direction {direction!r}")
    missing = np.isnan(key)
    ranks = np.empty(len(v), dtype=float)
    ranks[~missing] = _average_ranks(key[~missing])
    m = int((~missing).sum())
    ranks[missing] = (m + 1 + len(v)) / 2.0
    return ranks


def _average_ranks(key: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``key`` ascending, ties sharing the mean of their positions."""
    n = len(key)
    if n == 0:
        return np.empty(0)
    order = np.argsort(key, kind="mergesort")
    ordered = key[order]
    new_group = np.r_[True, ordered[1:] != ordered[:-1]]
    bounds = np.r_[np.flatnonzero(new_group), n]
    mean_position = (bounds[:-1] + 1 + bounds[1:]) / 2.0
    ranks = np.empty(n)
    ranks[order] = mean_position[np.cumsum(new_group) - 1]
    return ranks


def overall_score(final_ranks: np.ndarray, auc_ranks: np.ndarray, cover: dict[str, list[int]]) -> np.ndarray:
    """Mean over main metrics m of the mean over m's rows r of (final rank + AUC rank) / 2.
    ``final_ranks`` and ``auc_ranks`` are entries x rows."""
    per_metric = [((final_ranks[:, idx] + auc_ranks[:, idx]) / 2.0).mean(axis=1) for idx in cover.values()]
    return np.mean(per_metric, axis=0)


# -- one track's table ----------------------------------------------------------------------------


@dataclass
class _Rows:
    """The metric rows of the usable runs, as arrays (one entry per row; bench.leaderboard checks
    and combines them)."""

    run: np.ndarray  # index into the run list
    generation: np.ndarray
    metric: np.ndarray  # code into metrics
    value: np.ndarray
    direction: np.ndarray  # code into directions
    target: np.ndarray  # NaN where null
    metrics: list[str]
    directions: list[str]


@dataclass
class MetricRow:
    name: str
    direction: str
    target: float | None
    main: bool


@dataclass
class Entry:
    label: str
    id: str
    seeds: list[int]
    runs: list[str]
    spec: dict[str, Any]
    score: float = math.nan
    rank: float = math.nan
    mitigation: str = ""  # the suite table's row label (run.json identity.mitigation)
    paths: list[Path] = field(default_factory=list)  # the run folders, as runs


@dataclass
class Board:
    """One track's leaderboard: entries (best first) x metric rows, final value and AUC."""

    track: dict[str, Any]
    slug: str
    generations: int
    main: list[str]
    rows: list[MetricRow]
    entries: list[Entry]
    stats: dict[str, np.ndarray]  # "<final|auc>_<mean|low|high|rank>": entries x rows
    runs: int
    curves: np.ndarray | None = None  # runs x rows x generations 0..N, for bench.suite
    members: list[list[int]] = field(default_factory=list)  # per entry: its runs (curves' first axis), by seed
    headline: dict[str, Any] | None = None  # the rule behind "gens to collapse" (bench.suite.attach_headline)
    collapse: list[Any] | None = None  # per entry: bench.suite.Collapse or None (n/a); None: no column
    references: list[Any] = field(default_factory=list)  # the paper's figures (bench.Reference) of the track
    reproducing: list[str] = field(default_factory=list)  # labels of the entries that reproduce that experiment


def make_board(track_id: str, recs: Sequence[Any], idx: list[int], rows: _Rows, row_mask: np.ndarray,
               warnings: list[str], headline: Any = None) -> tuple[Board | None, int]:
    """Entries, aggregates and ranks of one track (runs ``idx`` of ``recs``, the
    :class:`bench.leaderboard.RunRecord` of every checked run), and how many runs
    were skipped as a second copy of an entry's seed."""
    from bench.types import digest as _digest

    first = recs[idx[0]]
    n_gen = first.requested
    # Entries, with one run per seed (a second copy of a seed is skipped).
    entries: dict[str, list[int]] = {}
    for i in idx:
        entries.setdefault(recs[i].entry_key, []).append(i)
    used: list[int] = []
    groups: list[list[int]] = []
    dupes = 0
    for key, members in entries.items():
        seeds: dict[int, int] = {}
        for i in members:
            if recs[i].seed in seeds:
                warnings.append(f"{recs[i].path}: same spec and seed as {recs[seeds[recs[i].seed]].path}; skipped")
                dupes += 1
                continue
            seeds[recs[i].seed] = i
        group = [seeds[s] for s in sorted(seeds)]
        groups.append(group)
        used.extend(group)
    # Main metrics: the list the runs carry (the most common one, should they differ).
    lists: dict[tuple[str, ...], int] = {}
    for i in used:
        lists[recs[i].main] = lists.get(recs[i].main, 0) + 1
    main = list(max(lists, key=lambda k: (lists[k], k)))
    if len(lists) > 1:
        warnings.append(f"track {first.track['name']} ({track_id}): runs name different main metrics; "
                        f"using {', '.join(main) or 'every metric'}")

    local = np.full(len(recs), -1, dtype=np.int64)
    local[used] = np.arange(len(used))
    sel = row_mask & (local[rows.run] >= 0)
    mcodes = rows.metric[sel]
    # Metric rows in the order they first appear; one direction and target per row.
    order, pos = np.unique(mcodes, return_index=True)
    order = order[np.argsort(pos)]
    metric_rows: list[MetricRow] = []
    keep_codes: list[int] = []
    dsel, tsel = rows.direction[sel], np.nan_to_num(rows.target[sel], nan=np.inf)
    for code in order:
        msk = mcodes == code
        dirs, tgts = np.unique(dsel[msk]), np.unique(tsel[msk])
        name = rows.metrics[code]
        if len(dirs) > 1 or len(tgts) > 1:
            warnings.append(f"track {first.track['name']} ({track_id}): metric {name} has different directions "
                            "or targets across runs; not ranked")
            continue
        direction = rows.directions[dirs[0]]
        target = float(tgts[0]) if direction == "target" else None
        metric_rows.append(MetricRow(name, direction, target, False))
        keep_codes.append(int(code))
    names = [m.name for m in metric_rows]
    cover = main_rows(names, main) if main else {n: [i] for i, n in enumerate(names)}
    missing = [m for m in main if m not in cover]
    if missing:
        warnings.append(f"track {first.track['name']} ({track_id}): main metric(s) {', '.join(missing)} have no rows")
    if not cover:
        cover = {n: [i] for i, n in enumerate(names)}
    for idxs in cover.values():
        for j in idxs:
            metric_rows[j].main = True
    if not metric_rows:
        warnings.append(f"track {first.track['name']} ({track_id}): no metric rows to rank; no table written")
        return None, dupes

    # curves[run, row, generation]; target rows as distances for the AUC.
    col = np.full(len(rows.metrics) + 1, -1, dtype=np.int64)
    col[keep_codes] = np.arange(len(keep_codes))
    r, c, g, v = local[rows.run[sel]], col[mcodes], rows.generation[sel], rows.value[sel]
    ok = c >= 0
    curves = np.full((len(used), len(metric_rows), n_gen + 1), np.nan)
    curves[r[ok], c[ok], g[ok]] = v[ok]
    final = curves[:, :, n_gen]
    dist = curves.copy()
    for j, m in enumerate(metric_rows):
        if m.direction == "target":
            dist[:, j, :] = np.abs(dist[:, j, :] - m.target)
    auc = curve_area(dist)

    n_e, n_m = len(groups), len(metric_rows)
    stats = {f"{w}_{s}": np.full((n_e, n_m), np.nan) for w in ("final", "auc") for s in ("mean", "low", "high")}
    entry_list: list[Entry] = []
    reps = [recs[g[0]] for g in groups]
    labels = entry_labels([(rep.policy, rep.entry) for rep in reps])
    for e, group in enumerate(groups):
        rows_e = local[group]
        for w, data in (("final", final), ("auc", auc)):
            mean, lo, hi = summarize(data[rows_e])
            stats[f"{w}_mean"][e], stats[f"{w}_low"][e], stats[f"{w}_high"][e] = mean, lo, hi
        rep = reps[e]
        entry_list.append(Entry(label=labels[e], id=_digest(rep.entry)[:8], seeds=[recs[i].seed for i in group],
                                runs=[recs[i].path.name for i in group], spec=rep.entry, mitigation=rep.mitigation,
                                paths=[recs[i].path for i in group]))
    seen: dict[str, int] = {}
    for e in entry_list:
        seen[e.label] = seen.get(e.label, 0) + 1
    for e in entry_list:
        if seen[e.label] > 1:
            e.label = f"{e.label} #{e.id}"
    for w in ("final", "auc"):
        ranks = np.empty((n_e, n_m))
        for j, m in enumerate(metric_rows):
            direction = m.direction if w == "final" or m.direction != "target" else "lower"
            ranks[:, j] = rank(stats[f"{w}_mean"][:, j], direction, m.target)
        stats[f"{w}_rank"] = ranks
    score = overall_score(stats["final_rank"], stats["auc_rank"], cover)
    overall = rank(score, "lower")
    for e, entry in enumerate(entry_list):
        entry.score, entry.rank = float(score[e]), float(overall[e])
    perm = sorted(range(n_e), key=lambda e: (overall[e], entry_list[e].label))
    entry_list = [entry_list[e] for e in perm]
    stats = {k: v[perm] for k, v in stats.items()}
    board = Board(track=dict(first.track), slug="", generations=n_gen, main=list(cover), rows=metric_rows,
                  entries=entry_list, stats=stats, runs=len(used), curves=curves,
                  members=[[int(x) for x in local[groups[e]]] for e in perm])
    from bench.collapse import attach_headline

    attach_headline(board, [recs[i] for i in used], headline, warnings)
    return board, dupes

