"""Leaderboards: ranked tables of complete runs, one per track, as Markdown, HTML, CSV and JSON.

The rules (docs/leaderboards.md has the full text):

- A track is a fixed protocol (run.json ``track``: plugin, preset, generations, real data). Runs
  are ranked only against runs of the same track id (older runs with one id per seed are joined,
  see ``assign_tracks``).
- An entry is the set of runs whose specs are equal except for the seed. Only complete runs count.
- Each metric row (``name`` or ``name/key``; ``throughput/...`` rows are never ranked) is
  aggregated over an entry's seeds at the final generation N, and as the area under its curve over
  generations 0..N (trapezoid divided by N; of ``|value - target|`` for target metrics): mean,
  95% t-interval, number of seeds.
- Each column is ranked by its direction (target metrics by ``|mean - target|``); ties share the
  average rank; NaN ranks last; +-inf are ordinary extreme values.
- Overall: the mean of an entry's ranks over the track's main metrics (final value and AUC), each
  main metric counting once however many rows it has; lowest mean first.
- Gens to collapse (tracks with a headline metric): per seed, the first generation whose headline
  value has moved past the threshold from generation 0; median and range over seeds
  (:mod:`bench.suite`, which also builds the suite table across tracks from these boards).

``build(paths, track=None, out="leaderboards")`` does all of it; malformed or foreign files are
named in a warning and skipped, never a crash.
"""

from __future__ import annotations

import csv
import html
import json
import math
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench import results as R
from bench.errors import BenchError
from bench.grouping import CONFIDENCE, derived_track, entry_key, entry_labels, entry_spec, join_tracks, summarize

DEFAULT_OUT = "leaderboards"
FORMAT = "collapse-bench-leaderboard/1"
UNRANKED_PREFIX = "throughput/"
INDEX_FILE = "index.md"
TRACK_KEYS = ("name", "id", "plugin", "preset", "generations", "real_data")
_COLUMNS = ["schema_version", "run_id", "generation", "metric", "value", "direction", "target"]
_SCHEMA = pa.schema([R.METRICS_SCHEMA.field(name) for name in _COLUMNS])
RULE = ("the mean of the entry's ranks over the main metrics, at the final generation and by area under "
        "the curve, each main metric counting once however many rows it has; the overall rank orders "
        "this score, lowest first")


# -- escaping -------------------------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|&~#!])")


def md_escape(value: Any) -> str:
    """Text safe inside Markdown (and a table cell): markup characters backslash-escaped, line
    breaks as spaces. Strings from results and plugins go through this."""
    text = re.sub(r"[\r\n\t\v\f]+", " ", str(value))
    return _MD_SPECIAL.sub(r"\\\1", text)


def html_escape(value: Any) -> str:
    return html.escape(str(value), quote=True)


_CSV_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def csv_text(value: Any) -> str:
    """Text from results or plugins for a CSV cell: one starting with ``=``, ``+``, ``-``, ``@``, a
    tab or a carriage return (a spreadsheet would run it as a formula) gets a leading apostrophe.
    Numbers the tables compute are written with ``repr`` and never pass through this."""
    text = str(value)
    return "'" + text if text.startswith(_CSV_FORMULA) else text


def slugify(name: str) -> str:
    """A file-name stem from a track name: ``gmm/smoke`` -> ``gmm-smoke``."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", name).strip("-.") or "track"


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


def main_rows(rows: Sequence[str], main: Sequence[str]) -> dict[str, list[int]]:
    """Which metric rows each main metric covers: ``name`` itself and ``name/<key>``."""
    cover = {}
    for name in main:
        idx = [i for i, r in enumerate(rows) if r == name or r.startswith(name + "/")]
        if idx:
            cover[name] = idx
    return cover


def overall_score(final_ranks: np.ndarray, auc_ranks: np.ndarray, cover: dict[str, list[int]]) -> np.ndarray:
    """Mean over main metrics m of the mean over m's rows r of (final rank + AUC rank) / 2.
    ``final_ranks`` and ``auc_ranks`` are entries x rows."""
    per_metric = [((final_ranks[:, idx] + auc_ranks[:, idx]) / 2.0).mean(axis=1) for idx in cover.values()]
    return np.mean(per_metric, axis=0)


# -- scanning -------------------------------------------------------------------------------------


def find_run_dirs(paths: Iterable[str | Path]) -> tuple[list[Path], list[Path]]:
    """Run folders (holding run.json) at or below each path, and the paths holding none.

    Hidden folders (``.gen0``, temporary ones) and generation folders are not searched; a run
    folder's own subfolders are not searched either. Raises BenchError for a path that is missing.
    """
    runs: list[Path] = []
    empty: list[Path] = []
    seen: set[str] = set()
    for p in paths:
        p = Path(p)
        if p.name == R.RUN_JSON and p.is_file():
            p = p.parent
        if not p.exists():
            raise BenchError(f"{p} does not exist: give folders of results (what `bench run --out` wrote)")
        if not p.is_dir():
            raise BenchError(f"{p} is not a folder: give folders of results (what `bench run --out` wrote)")
        found = runs_below(p)
        if not found:
            empty.append(p)
        for f in found:
            key = os.path.realpath(f)
            if key not in seen:
                seen.add(key)
                runs.append(f)
    return runs, empty


def runs_below(top: Path) -> list[Path]:
    """Run folders at or below ``top`` (sorted); hidden, generation and run folders' subfolders
    are not searched, and a folder reached twice through links is searched once."""
    if (top / R.RUN_JSON).is_file():
        return [top]
    found, stack, visited = [], [str(top)], set()
    while stack:
        d = stack.pop()
        try:
            st = os.stat(d)
            if (st.st_dev, st.st_ino) in visited:
                continue
            visited.add((st.st_dev, st.st_ino))
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            if e.name.startswith(".") or e.name == R.GENS_DIR:
                continue
            try:
                if not e.is_dir():
                    continue
            except OSError:
                continue
            if os.path.isfile(os.path.join(e.path, R.RUN_JSON)):
                found.append(Path(e.path))
            else:
                stack.append(e.path)
    return sorted(found)


class _Malformed(Exception):
    pass


@dataclass
class RunRecord:
    """What the leaderboard needs from one run.json."""

    path: Path
    run_id: str
    seed: int
    status: str
    requested: int
    done: int
    entry: dict[str, Any]  # the spec without the seed
    entry_key: str
    policy: str
    track: dict[str, Any]
    main: tuple[str, ...]
    error: str | None
    track_ids: tuple[str, ...] = ()  # the track ids the runs recorded (several when joined)
    mitigation: str = ""  # identity.mitigation (older runs: the policy label), the suite table's row
    headline: dict[str, Any] | None = None  # run.json headline, checked (bench.suite.parse_headline)
    headline_problem: str | None = None  # why run.json's headline was ignored

    @property
    def complete(self) -> bool:
        return self.status == "complete" and self.done == self.requested + 1


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def parse_run_json(path: Path, data: Any) -> RunRecord:
    """A RunRecord from a run.json's content; raises _Malformed with the reason."""
    if not isinstance(data, dict):
        raise _Malformed("not a collapse-bench run.json (not a JSON object)")
    spec = data.get("spec")
    if not isinstance(spec, dict) or not all(isinstance(spec.get(k), str) for k in ("plugin", "preset")):
        raise _Malformed("not a collapse-bench run.json (no spec with plugin and preset)")
    bad = [k for k, ok in (("spec.seed", _is_int(spec.get("seed"))), ("run_id", isinstance(data.get("run_id"), str)),
                           ("status", isinstance(data.get("status"), str)),
                           ("generations_requested", _is_int(data.get("generations_requested"))),
                           ("generations_done", _is_int(data.get("generations_done")))) if not ok]
    if bad:
        raise _Malformed(f"missing or wrong type: {', '.join(bad)}")
    identity = data.get("identity") if isinstance(data.get("identity"), dict) else {}
    policy = identity.get("policy")
    if not isinstance(policy, str):
        params = spec.get("policy_params") or {}
        values = ",".join(str(v) for v in params.values() if v is not None) if isinstance(params, dict) else ""
        policy = f"{spec.get('policy')}:{values}" if values else str(spec.get("policy"))
    track = data.get("track")
    if track is None:  # older run.json: derive it as the harness does
        track = derived_track(spec, data["generations_requested"], data.get("real_data_fingerprint"))
    if not isinstance(track, dict) or not isinstance(track.get("name"), str) or not isinstance(track.get("id"), str):
        raise _Malformed("track is not an object with a name and an id")
    track = {k: track.get(k) for k in TRACK_KEYS}
    if track["generations"] != data["generations_requested"]:
        raise _Malformed(f"track.generations {track['generations']!r} differs from generations_requested "
                         f"{data['generations_requested']}")
    main = data.get("leaderboard_metrics", [])
    if not isinstance(main, list) or not all(isinstance(m, str) for m in main):
        raise _Malformed("leaderboard_metrics is not a list of metric names")
    entry = entry_spec(spec)
    error = data.get("error")
    mitigation = identity.get("mitigation")
    from bench.suite import parse_headline

    headline, headline_problem = parse_headline(data.get("headline"))
    return RunRecord(path=path, run_id=data["run_id"], seed=spec["seed"], status=data["status"],
                     requested=data["generations_requested"], done=data["generations_done"], entry=entry,
                     entry_key=entry_key(entry), policy=policy, track=track,
                     main=tuple(main), error=error if isinstance(error, str) else None,
                     mitigation=mitigation if isinstance(mitigation, str) and mitigation else policy,
                     headline=headline, headline_problem=headline_problem)


def _load_run(path: Path) -> RunRecord | str:
    file = path / R.RUN_JSON
    try:
        with open(file, "rb") as fh:
            data = json.loads(fh.read())
    except (OSError, ValueError, RecursionError) as exc:
        return f"{file}: unreadable ({_reason(exc)}); skipped"
    try:
        return parse_run_json(path, data)
    except _Malformed as exc:
        return f"{file}: {exc}; skipped"


def assign_tracks(recs: Sequence[RunRecord]) -> list[str]:
    """Give the runs of one protocol one track, also where the data is drawn from the seed
    (:func:`bench.grouping.join_tracks`: the ids of an entry's runs are joined, and so are entries
    sharing an id; an entry with two ids for one seed joins nothing). A joined track keeps the id
    of its smallest seed's run and lists every id in ``ids``. Returns notes on seeds whose data
    differs within a joined track.
    """
    for r in recs:
        r.track_ids = (r.track["id"],)
    notes = []
    for first_i, members in join_tracks([(r.track["id"], r.entry_key, r.seed) for r in recs]):
        runs = [recs[i] for i in members]
        ids = sorted({r.track["id"] for r in runs})
        if len(ids) == 1:
            continue
        first = recs[first_i]
        data: dict[int, set] = {}
        for r in runs:
            data.setdefault(r.seed, set()).add(str(r.track.get("real_data")))
        merged = {**first.track, "real_data": "drawn from the seed", "ids": ids}
        clash = sorted(s for s, fps in data.items() if len(fps) > 1)
        if clash:
            notes.append(f"track {first.track['name']} ({first.track['id']}): seed(s) {', '.join(map(str, clash))} "
                         "have different real data in different runs")
        for r in runs:
            r.track, r.track_ids = merged, tuple(ids)
    return notes


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def schema_problem(schema: pa.Schema) -> str | None:
    """Why a Parquet schema is not METRICS_SCHEMA (None when it is)."""
    names = schema.names
    missing = [f.name for f in R.METRICS_SCHEMA if f.name not in names]
    if missing:
        return f"not a collapse-bench metrics file (missing columns {', '.join(missing)})"
    for f in R.METRICS_SCHEMA:
        if names.count(f.name) != 1:
            return f"column {f.name} appears {names.count(f.name)} times"
        actual = schema.field(f.name).type
        if actual != f.type:
            return f"column {f.name} has type {actual}, expected {f.type}"
    return None


def _load_metrics(rec: RunRecord) -> pa.Table | str:
    file = rec.path / R.METRICS_FILE
    try:
        with open(file, "rb") as fh:
            buf = fh.read()
    except FileNotFoundError:
        return f"{file}: missing (running the same spec again rebuilds it); skipped"
    except OSError as exc:
        return f"{file}: unreadable ({_reason(exc)}); skipped"
    try:
        reader = _ParquetReader()
        reader.open(pa.BufferReader(buf))
        schema = reader.schema_arrow
        if not any(schema.equals(s) for s in _GOOD_SCHEMAS):
            problem = schema_problem(schema)
            if problem:
                return f"{file}: {problem}; skipped"
            if len(_GOOD_SCHEMAS) < 8:
                _GOOD_SCHEMAS.append(schema)
        table = reader.read_all(column_indices=[schema.get_field_index(c) for c in _COLUMNS], use_threads=False)
    except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
        return f"{file}: unreadable ({_reason(exc)}); skipped"
    return table.replace_schema_metadata(None)


class _PublicReader:
    """pyarrow.parquet.ParquetFile behind the low-level reader's three calls."""

    def open(self, source):
        self._pf = pq.ParquetFile(source)
        self.schema_arrow = self._pf.schema_arrow

    def read_all(self, column_indices, use_threads):
        return self._pf.read(columns=[self.schema_arrow.names[i] for i in column_indices], use_threads=use_threads)


try:  # the reader behind ParquetFile, without its per-file Python setup (a third of the time)
    from pyarrow._parquet import ParquetReader as _ParquetReader
except ImportError:  # pragma: no cover
    _ParquetReader = _PublicReader


_GOOD_SCHEMAS: list[pa.Schema] = []  # schemas already found valid (checking each file's costs)


def _map(fn: Callable, items: Sequence, workers: int) -> list:
    if workers <= 1 or len(items) < 64:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(workers) as ex:
        return list(ex.map(fn, items, chunksize=64))


# -- checking the rows of many runs at once ------------------------------------------------------


@dataclass
class _Rows:
    """The metric rows of the usable runs, as arrays (one entry per row)."""

    run: np.ndarray  # index into the run list
    generation: np.ndarray
    metric: np.ndarray  # code into metrics
    value: np.ndarray
    direction: np.ndarray  # code into directions
    target: np.ndarray  # NaN where null
    metrics: list[str]
    directions: list[str]


def _combine(recs: list[RunRecord], tables: list[pa.Table]) -> tuple[_Rows, dict[int, str]]:
    """All rows as arrays, and per run index the reason its rows are unusable."""
    try:
        big = pa.concat_tables(tables)
    except pa.ArrowInvalid:  # schemas differing in nullability or metadata only
        big = pa.concat_tables([t.cast(_SCHEMA) for t in tables])
    cols = {name: big.column(name).combine_chunks() for name in _COLUMNS}
    counts = np.array([t.num_rows for t in tables], dtype=np.int64)
    run = np.repeat(np.arange(len(tables)), counts)
    bad: dict[int, str] = {}

    def flag(mask: np.ndarray, reason: Callable[[int], str]) -> None:
        for i in np.unique(run[mask]):
            bad.setdefault(int(i), reason(int(i)))

    for i in np.flatnonzero(counts == 0):
        bad[int(i)] = "no metric rows"
    for name in ("schema_version", "run_id", "generation", "metric", "direction"):
        nulls = cols[name].is_null().to_numpy(zero_copy_only=False)
        if nulls.any():
            flag(nulls, lambda i, name=name: f"column {name} has missing values")
    sv = cols["schema_version"].fill_null(R.SCHEMA_VERSION).to_numpy()
    flag(sv != R.SCHEMA_VERSION, lambda i: f"schema_version is not {R.SCHEMA_VERSION}")

    rid = cols["run_id"].dictionary_encode()
    rid_names = rid.dictionary.to_pylist()
    lookup = {s: k for k, s in enumerate(rid_names)}
    expected = np.array([lookup.get(r.run_id, -1) for r in recs], dtype=np.int64)
    rid_codes = rid.indices.fill_null(-2).to_numpy()
    foreign = rid_codes != expected[run]
    flag(foreign, lambda i: f"holds rows of another run (run.json says run {recs[i].run_id})")

    d = cols["direction"].dictionary_encode()
    directions = d.dictionary.to_pylist()
    dcode = d.indices.fill_null(-1).to_numpy()
    known = np.array([x in R.DIRECTIONS for x in directions] + [False], dtype=bool)
    flag(~known[dcode], lambda i: "unknown direction (not higher, lower or target)")
    target = cols["target"].to_numpy(zero_copy_only=False).astype(float)
    has_target = ~cols["target"].is_null().to_numpy(zero_copy_only=False)
    is_target = np.array([x == "target" for x in directions] + [False], dtype=bool)[dcode]
    flag(is_target != has_target, lambda i: "a target must be given exactly when direction is 'target'")

    m = cols["metric"].dictionary_encode()
    metrics = m.dictionary.to_pylist()
    mcode = m.indices.fill_null(-1).to_numpy().astype(np.int64)
    gen = cols["generation"].fill_null(-1).to_numpy()
    requested = np.array([r.requested for r in recs], dtype=np.int64)
    out_of_range = (gen < 0) | (gen > requested[run])
    flag(out_of_range, lambda i: f"generations outside 0..{recs[i].requested}")
    ok = ~out_of_range
    # Every generation 0..N present, and no (generation, metric) twice.
    width = int(requested.max(initial=0)) + 2
    keys = np.unique(run[ok] * width + gen[ok])
    have = np.bincount(keys // width, minlength=len(tables))
    for i in np.flatnonzero(have != requested + 1):
        n = int(requested[i])
        bad.setdefault(int(i), f"rows for {int(have[i])} of the {n + 1} generations 0..{n}")
    n_metrics = max(len(metrics), 1)
    triple = (run * width + gen) * (n_metrics + 1) + (mcode + 1)
    uniq, first = np.unique(triple, return_index=True)
    if len(uniq) != len(triple):
        dup = np.ones(len(triple), dtype=bool)
        dup[first] = False
        flag(dup, lambda i: "a (generation, metric) row appears twice")

    value = cols["value"].to_numpy(zero_copy_only=False).astype(float)
    rows = _Rows(run, gen, mcode, value, dcode, target, metrics, directions)
    return rows, bad


# -- one track's table ----------------------------------------------------------------------------


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


def _board(track_id: str, recs: list[RunRecord], idx: list[int], rows: _Rows, row_mask: np.ndarray,
           warnings: list[str], headline: Any = None) -> tuple[Board | None, int]:
    """Entries, aggregates and ranks of one track (runs ``idx`` of ``recs``), and how many runs
    were skipped as a second copy of an entry's seed."""
    from bench.spec import _digest

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
    from bench.suite import attach_headline

    attach_headline(board, [recs[i] for i in used], headline, warnings)
    return board, dupes


# -- writing --------------------------------------------------------------------------------------


def _num(x: float) -> str:
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.4g}"


def _json_num(x: float) -> float | str | None:
    x = float(x)
    if math.isnan(x):
        return None
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def _rank_text(r: float) -> str:
    return f"{r:g}"


def _cell(b: Board, e: int, j: int, w: str) -> str:
    mean, lo, hi = (b.stats[f"{w}_{s}"][e, j] for s in ("mean", "low", "high"))
    text = _num(mean)
    if np.isfinite(lo) and np.isfinite(hi):
        text += f" ± {_num((hi - lo) / 2)}"
    return f"{text} ({_rank_text(b.stats[f'{w}_rank'][e, j])})"


def _arrow(m: MetricRow, w: str) -> str:
    if m.direction == "higher":
        return "↑"
    if m.direction == "lower" or w == "auc":
        return "↓"
    return f"→{_num(m.target)}"


def _track_line(b: Board, esc: Callable[[Any], str]) -> str:
    t = b.track
    return (f"Track {esc(t['name'])} (id {esc(t['id'])}): model {esc(t.get('plugin', '?'))}, preset "
            f"{esc(t.get('preset', '?'))}, generations 0..{b.generations}, real data {esc(t.get('real_data'))}. "
            f"{b.runs} complete runs in {len(b.entries)} entries (an entry: runs whose specs differ only in "
            "the seed).")


_LEGEND = ("Cells: the mean over seeds ± the half-width of its 95% t-interval (no interval for one seed), "
           "then the entry's rank on that column. Final: the value at the last generation; AUC: the "
           "area under the curve over generations 0..N divided by N (of |value − target| for target "
           "metrics). ↑ higher is better, ↓ lower is better, →t nearest t is best. Score: ")


def write_markdown(b: Board, path: Path) -> None:
    esc = md_escape
    main = [j for j, m in enumerate(b.rows) if m.main]
    other = [j for j, m in enumerate(b.rows) if not m.main]
    gens = b.collapse is not None
    lines = [f"# Leaderboard: {esc(b.track['name'])}", "", _track_line(b, esc), "",
             f"Main metrics: {', '.join(esc(m) for m in b.main)}.", "",
             _LEGEND + RULE + " (docs/leaderboards.md).", ""]
    if gens:
        lines += [esc(_collapse_legend(b)), ""]
    head = ["rank", "entry", "seeds", "score"] + (["gens to collapse"] if gens else [])
    for j in main:
        m = b.rows[j]
        head += [f"{esc(m.name)} {_arrow(m, 'final')}", f"{esc(m.name)} AUC {_arrow(m, 'auc')}"]
    align = ["---:", "---", "---:", "---:"] + ["---:"] * (2 * len(main) + gens)
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    for e, entry in enumerate(b.entries):
        cells = [_rank_text(entry.rank), esc(entry.label), str(len(entry.seeds)), f"{entry.score:.3g}"]
        if gens:
            cells.append(esc(_collapse_cell(b, e)[0]))
        for j in main:
            cells += [_cell(b, e, j, "final"), _cell(b, e, j, "auc")]
        lines.append("| " + " | ".join(cells) + " |")
    if other:
        lines += ["", f"## Other metrics at generation {b.generations}", "",
                  "Not part of the overall rank; their AUC is in the HTML, CSV and JSON tables.", ""]
        head = ["rank", "entry"] + [f"{esc(b.rows[j].name)} {_arrow(b.rows[j], 'final')}" for j in other]
        lines += ["| " + " | ".join(head) + " |", "|" + "|".join(["---:", "---"] + ["---:"] * len(other)) + "|"]
        for e, entry in enumerate(b.entries):
            cells = [_rank_text(entry.rank), esc(entry.label)] + [_cell(b, e, j, "final") for j in other]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Entries", "", "| entry | id | seeds |", "|---|---|---|"]
    for entry in b.entries:
        lines.append(f"| {esc(entry.label)} | {esc(entry.id)} | {', '.join(str(s) for s in entry.seeds)} |")
    lines += ["", f"Made by `bench leaderboard RESULTS --track {_safe_id(b.track['id'])}`; the JSON file beside "
              "this one holds every spec.", ""]
    _write_text(path, "\n".join(lines))


def _safe_id(text: str) -> str:
    """A track id for a code span: hex digits only, as the harness makes them (else escaped text
    outside the span would be needed, so anything else becomes '...')."""
    return text if re.fullmatch(r"[A-Za-z0-9]+", text) else "..."


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;font-size:13px}th,td{border:1px solid #ccc;padding:3px 6px}
th{background:#f3f3f3;cursor:pointer;position:sticky;top:0}td.n{text-align:right;white-space:nowrap}
th.main{background:#e3ecfa}tr:nth-child(even) td{background:#fafafa}p{max-width:60em}.scroll{overflow-x:auto}"""

_JS = """document.querySelectorAll("th").forEach(function (th) {
  th.addEventListener("click", function () {
    var table = th.closest("table"), body = table.tBodies[0], i = th.cellIndex;
    var asc = th.getAttribute("data-dir") !== "asc";
    table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("data-dir"); });
    th.setAttribute("data-dir", asc ? "asc" : "desc");
    var key = function (row) {
      var c = row.cells[i], v = c.getAttribute("data-v");
      return v === null ? c.textContent : (v === "" ? NaN : parseFloat(v));
    };
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a), y = key(b);
      if (typeof x === "string") { return asc ? x.localeCompare(y) : y.localeCompare(x); }
      if (isNaN(x)) { return isNaN(y) ? 0 : 1; }
      if (isNaN(y)) { return -1; }
      return asc ? x - y : y - x;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});"""


def board_section_html(b: Board) -> str:
    """The track's table with its legend, as HTML to place in a page (:func:`write_html`, and
    the index page of :mod:`bench.site`)."""
    esc = html_escape
    order = [j for j, m in enumerate(b.rows) if m.main] + [j for j, m in enumerate(b.rows) if not m.main]
    head = ["<th>rank</th>", "<th>entry</th>", "<th>id</th>", "<th>seeds</th>", "<th>score</th>"]
    if b.collapse is not None:
        head.append("<th>gens to collapse</th>")
    for j in order:
        m = b.rows[j]
        cls = ' class="main"' if m.main else ""
        star = " ★" if m.main else ""
        for w in ("final", "auc"):
            suffix = "" if w == "final" else " AUC"
            head.append(f"<th{cls}>{esc(m.name)}{suffix} {esc(_arrow(m, w))}{star}</th>")
    body = []
    for e, entry in enumerate(b.entries):
        cells = [f'<td class="n" data-v="{entry.rank:g}">{_rank_text(entry.rank)}</td>',
                 f"<td>{esc(entry.label)}</td>", f"<td>{esc(entry.id)}</td>",
                 f'<td class="n" data-v="{len(entry.seeds)}">{len(entry.seeds)}</td>',
                 f'<td class="n" data-v="{entry.score:.6g}">{entry.score:.3g}</td>']
        if b.collapse is not None:
            text, key = _collapse_cell(b, e)
            cells.append(f'<td class="n" data-v="{key}">{esc(text)}</td>')
        for j in order:
            for w in ("final", "auc"):
                r = b.stats[f"{w}_rank"][e, j]
                cells.append(f'<td class="n" data-v="{r:g}">{esc(_cell(b, e, j, w))}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"""<p>{_track_line(b, esc)}</p>
<p>Main metrics (★): {esc(', '.join(b.main))}. {esc(_LEGEND + RULE)}. Click a header to sort; metric columns
sort by rank.</p>
{f"<p>{esc(_collapse_legend(b))}</p>" if b.collapse is not None else ""}
<div class="scroll"><table><thead><tr>{''.join(head)}</tr></thead>
<tbody>
{chr(10).join(body)}
</tbody></table></div>"""


def write_html(b: Board, path: Path) -> None:
    """One self-contained page: a table sortable by clicking a header (a few lines of inline JS;
    metric columns sort by rank), nothing fetched from the network."""
    title = html_escape(f"Leaderboard: {b.track['name']}")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>{_CSS}</style></head><body>
<h1>{title}</h1>
{board_section_html(b)}
<script>
{_JS}
</script>
</body></html>
"""
    _write_text(path, page)


CSV_COLUMNS = ["track", "track_id", "rank", "score", "entry", "entry_id", "seeds", "metric", "main", "measure",
               "direction", "target", "mean", "ci_low", "ci_high", "metric_rank"]
# added when the track has a headline: the entry's generations to collapse, median, min and max over
# seeds (inf: not within generations 0..N; nan: undefined)
CSV_COLLAPSE_COLUMNS = ["gens_to_collapse", "gens_to_collapse_min", "gens_to_collapse_max"]


def _collapse_legend(b: Board) -> str:
    from bench.suite import collapse_legend

    return collapse_legend(b.headline, b.generations)


def _collapse_cell(b: Board, e: int) -> tuple[str, str]:
    """The entry's "gens to collapse" text and its sort key (data-v) for the HTML table."""
    c = b.collapse[e] if b.collapse is not None else None
    if c is None:
        return "n/a", ""
    key = "" if math.isnan(c.median) else ("Infinity" if math.isinf(c.median) else f"{c.median:g}")
    return c.text(), key


def _collapse_numbers(b: Board, e: int) -> list[str]:
    c = b.collapse[e] if b.collapse is not None else None
    if c is None:
        return ["nan"] * 3
    return [repr(float(x)) for x in (c.median, c.low, c.high)]


def write_csv(b: Board, path: Path) -> None:
    """Tidy rows: one per entry, metric row and measure (final or auc)."""
    tmp = path.with_name(f".{path.name}.tmp")
    gens = b.collapse is not None
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(CSV_COLUMNS + (CSV_COLLAPSE_COLUMNS if gens else []))
        for e, entry in enumerate(b.entries):
            extra = _collapse_numbers(b, e) if gens else []
            for j, m in enumerate(b.rows):
                for measure in ("final", "auc"):
                    direction = m.direction if measure == "final" or m.direction != "target" else "lower"
                    target = "" if m.target is None or measure == "auc" else repr(m.target)
                    numbers = [repr(float(b.stats[f"{measure}_{s}"][e, j])) for s in ("mean", "low", "high", "rank")]
                    w.writerow([csv_text(b.track["name"]), csv_text(b.track["id"]), f"{entry.rank:g}",
                                repr(entry.score), csv_text(entry.label), csv_text(entry.id), len(entry.seeds),
                                csv_text(m.name), int(m.main), measure, direction, target, *numbers, *extra])
    os.replace(tmp, path)


def board_json(b: Board) -> dict[str, Any]:
    """The machine-readable table: track, rule, metric rows, entries with every statistic."""
    entries = []
    for e, entry in enumerate(b.entries):
        metrics = {}
        for j, m in enumerate(b.rows):
            metrics[m.name] = {
                measure: {"mean": _json_num(b.stats[f"{measure}_mean"][e, j]),
                          "ci95": [_json_num(b.stats[f"{measure}_{end}"][e, j]) for end in ("low", "high")],
                          "n": len(entry.seeds), "rank": _json_num(b.stats[f"{measure}_rank"][e, j])}
                for measure in ("final", "auc")}
        entries.append({"rank": entry.rank, "score": _json_num(entry.score), "label": entry.label, "id": entry.id,
                        "seeds": entry.seeds, "runs": entry.runs, "spec": entry.spec, "metrics": metrics})
        if b.collapse is not None:
            c = b.collapse[e]
            entries[-1]["gens_to_collapse"] = c.to_json() if c is not None else None
    extra = {"headline": b.headline} if b.headline is not None else {}
    return {
        "format": FORMAT,
        "track": b.track,
        "generations": b.generations,
        "main_metrics": b.main,
        "rule": RULE,
        "confidence": CONFIDENCE,
        "runs": b.runs,
        "metrics": [{"name": m.name, "direction": m.direction, "target": m.target, "main": m.main} for m in b.rows],
        "entries": entries,
        **extra,
    }


def write_json(b: Board, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as fh:
        json.dump(board_json(b), fh, indent=1, allow_nan=False, default=str)
        fh.write("\n")
    os.replace(tmp, path)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _tables_in(out: Path) -> dict[str, str]:
    """The leaderboards already in ``out``: file stem -> track id (files this module wrote)."""
    found = {}
    for f in out.glob("*.json"):
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
            if isinstance(data, dict) and data.get("format") == FORMAT:
                found[f.stem] = str(data["track"]["id"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return found


def write_index(out: Path) -> Path:
    """index.md: every leaderboard JSON in ``out`` (not only this build's), with links."""
    rows = []
    for f in sorted(out.glob("*.json")):
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or data.get("format") != FORMAT:
                continue
            t, entries = data["track"], data["entries"]
            leader = entries[0]["label"] if entries else ""
            rows.append((str(t["name"]), str(t["id"]), data.get("generations"), len(entries), data.get("runs"),
                         leader, f.stem))
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            continue
    lines = ["# Leaderboards", "", "One table per track (a fixed protocol); runs of different tracks are never "
             "ranked together. Rules: docs/leaderboards.md.", "",
             "| track | id | generations | entries | runs | first | tables |", "|---|---|---:|---:|---:|---|---|"]
    for name, tid, gens, n_entries, runs, leader, stem in sorted(rows, key=lambda r: (r[0], r[1], r[6])):
        link = quote(stem)
        files = " · ".join(f"[{kind}]({link}.{ext})" for kind, ext in
                           (("Markdown", "md"), ("HTML", "html"), ("CSV", "csv"), ("JSON", "json")))
        lines.append(f"| {md_escape(name)} | {md_escape(tid)} | {md_escape(gens)} | {md_escape(n_entries)} | "
                     f"{md_escape(runs)} | {md_escape(leader)} | {files} |")
    path = out / INDEX_FILE
    _write_text(path, "\n".join(lines) + "\n")
    return path


# -- the whole build ------------------------------------------------------------------------------


@dataclass
class TrackSummary:
    name: str
    id: str
    slug: str
    entries: int
    runs: int
    leader: str
    files: list[Path]


@dataclass
class LeaderboardResult:
    """What ``build`` did: the tracks written, every file, warnings, run counts."""

    tracks: list[TrackSummary] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    runs_found: int = 0
    runs_used: int = 0
    runs_skipped: int = 0
    runs_other_tracks: int = 0
    boards: list[Board] = field(default_factory=list)

    def summary(self) -> str:
        """Lines for the command line (warnings are printed separately)."""
        lines = []
        for t in self.tracks:
            stem = t.files[0].with_suffix("") if t.files else t.slug
            lines.append(f"{t.name} (track {t.id}): {t.entries} entries from {t.runs} runs, first: {t.leader} "
                         f"-> {stem}.{{md,html,csv,json}}")
        lines.append(f"{self.runs_used} of {self.runs_found} runs ranked, {self.runs_skipped} skipped"
                     + (f" (see the {len(self.warnings)} warnings)" if self.warnings else "")
                     + (f", {self.runs_other_tracks} in other tracks" if self.runs_other_tracks else ""))
        if not self.tracks:
            lines.append("no leaderboard written: no complete, readable runs to rank")
        elif self.files:
            lines.append(f"index: {self.files[-1]}")
        return "\n".join(lines)


def default_workers() -> int:
    """Threads for reading files: they help on network file systems; on two cores they cost."""
    return min(8, os.cpu_count() or 1) if (os.cpu_count() or 1) > 2 else 1


def build(paths: Iterable[str | Path], track: str | None = None, out: str | Path = DEFAULT_OUT,
          workers: int | None = None, headline: Any = None) -> LeaderboardResult:
    """Scan result folders, rank the complete runs of each track, write the tables under ``out``.

    ``track`` selects tracks by name (``gmm/smoke``) or id. ``headline`` (a
    :class:`bench.components.Headline` or a dict with metric, threshold and mode) replaces every
    track's run.json headline for the "gens to collapse" column. Raises BenchError for a missing
    path, no run folder at all, or a ``track`` matching none; malformed files become warnings.
    """
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    if not paths:
        raise BenchError("give at least one folder of results (for example results/)")
    if headline is not None:
        from bench.suite import override_headline

        headline = override_headline(headline)
    workers = default_workers() if workers is None else workers
    result = LeaderboardResult()
    dirs, empty = find_run_dirs(paths)
    if not dirs:
        raise BenchError(f"no run folders (holding run.json) at or below {', '.join(map(str, paths))}: give "
                         "the folder `bench run --out` wrote to")
    for p in empty:
        result.warnings.append(f"{p}: no run folders (run.json) at or below it")
    result.runs_found = len(dirs)

    recs: list[RunRecord] = []
    for loaded in _map(_load_run, dirs, workers):
        if isinstance(loaded, str):
            result.warnings.append(loaded)
            result.runs_skipped += 1
        else:
            recs.append(loaded)
    result.warnings.extend(assign_tracks(recs))
    if track is not None:
        chosen = [r for r in recs if track in (r.track["name"], r.track["id"], *r.track_ids)]
        if not chosen:
            known = sorted({f"{r.track['name']} ({r.track['id']})" for r in recs})
            raise BenchError(f"no run of track {track!r} under {', '.join(map(str, paths))}; tracks found: "
                             f"{', '.join(known) or 'none'} (give a name or an id)")
        result.runs_other_tracks = len(recs) - len(chosen)
        recs = chosen
    complete = []
    for r in recs:
        if r.complete:
            complete.append(r)
        else:
            why = f"status {r.status}, {r.done} of {r.requested + 1} generations done"
            if r.error:
                why += f", error: {r.error.strip().splitlines()[-1][:200] if r.error.strip() else ''}"
            result.warnings.append(f"{r.path}: not complete ({why}); skipped")
            result.runs_skipped += 1

    tables, good = [], []
    for r, loaded in zip(complete, _map(_load_metrics, complete, workers)):
        if isinstance(loaded, str):
            result.warnings.append(loaded)
            result.runs_skipped += 1
        else:
            tables.append(loaded)
            good.append(r)
    boards: list[Board] = []
    if good:
        rows, bad = _combine(good, tables)
        for i, reason in sorted(bad.items()):
            result.warnings.append(f"{good[i].path / R.METRICS_FILE}: {reason}; skipped")
        result.runs_skipped += len(bad)
        usable = np.ones(len(good), dtype=bool)
        usable[list(bad)] = False
        unranked = np.array([m.startswith(UNRANKED_PREFIX) for m in rows.metrics] + [True], dtype=bool)
        row_mask = usable[rows.run] & ~unranked[rows.metric]
        by_track: dict[str, list[int]] = {}
        for i, r in enumerate(good):
            if usable[i]:
                by_track.setdefault(r.track["id"], []).append(i)
        for tid, idx in sorted(by_track.items(), key=lambda kv: (good[kv[1][0]].track["name"], kv[0])):
            b, dupes = _board(tid, good, idx, rows, row_mask, result.warnings, headline)
            result.runs_skipped += dupes
            if b is not None:
                boards.append(b)
    names: dict[str, int] = {}
    for b in boards:
        names[b.track["name"]] = names.get(b.track["name"], 0) + 1
    if boards:
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise BenchError(f"--out {out} is a file: give a folder for the tables")
        out.mkdir(parents=True, exist_ok=True)
        earlier = _tables_in(out)
        for b in boards:
            name = b.track["name"]
            b.slug = slugify(name) + (f"-{slugify(b.track['id'])}" if names[name] > 1 else "")
            for stem, tid in earlier.items():  # this track's tables under another name: replaced
                if tid == b.track["id"] and stem != b.slug:
                    for ext in ("md", "html", "csv", "json"):
                        (out / f"{stem}.{ext}").unlink(missing_ok=True)
            files = [out / f"{b.slug}.{ext}" for ext in ("md", "html", "csv", "json")]
            for writer, f in zip((write_markdown, write_html, write_csv, write_json), files):
                writer(b, f)
            result.files.extend(files)
            result.runs_used += b.runs
            result.tracks.append(TrackSummary(name, b.track["id"], b.slug, len(b.entries), b.runs,
                                              b.entries[0].label if b.entries else "", files))
        result.files.append(write_index(out))
    result.boards = boards
    return result
