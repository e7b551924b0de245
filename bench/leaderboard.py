"""Leaderboards: ranked tables of complete runs, one per track, as Markdown, HTML, CSV and JSON.

The rules (docs/leaderboards.md has the full text):

- A track is a fixed protocol (run.json ``track``: plugin, preset, generations, real data). Runs
  are ranked only against runs of the same track id (older runs with one id per seed are joined,
  see ``assign_tracks``).
- An entry is the set of runs whose specs are equal except for the seed. Only complete runs count,
  and not those that went on past non-finite values (run.json ``nonfinite``).
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

``build(paths, track=None, out=None)`` does all of it (``out`` None: :func:`default_out`, the folder
``leaderboards/`` inside the first results folder); malformed or foreign files are named in a
warning and skipped, never a crash. A track never overwrites another track's tables: a file stem
already taken by another track id gets the track id appended (:func:`choose_stems`).

This module reads and checks the runs and builds the tables (scanning, run.json, metrics files,
tracks); :mod:`bench.ranking` holds the formulas and a track's :class:`Board`, :mod:`bench.render`
writes the boards (Markdown, HTML through :mod:`bench.pages`, CSV, JSON). Their public names are
importable from here too.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pyarrow as pa

from bench import results as R
from bench import runfolder as RF
from bench.errors import BenchError
from bench.grouping import derived_track, entry_key, entry_spec, join_tracks, summarize  # noqa: F401 (summarize: re-exported)
from bench.ranking import (  # noqa: F401 (re-exported: the formulas and the board)
    RULE,
    Board,
    Entry,
    MetricRow,
    _Rows,
    curve_area,
    main_rows,
    make_board,
    overall_score,
    rank,
)
from bench.render import (  # noqa: F401 (re-exported: the writers and the escaping)
    CSV_COLLAPSE_COLUMNS,
    CSV_COLUMNS,
    EXTENSIONS,
    FORMAT,
    INDEX_FILE,
    WRITERS,
    _json_num,
    _num,
    board_json,
    board_section_html,
    csv_cell,
    csv_row,
    csv_text,
    html_escape,
    md_escape,
    slugify,
    tables_in,
    write_csv,
    write_html,
    write_index,
    write_json,
    write_markdown,
)

DEFAULT_OUT = "leaderboards"  # the tables' folder inside the first results folder (default_out)
RESERVED_STEMS = ("index", "suite")  # index.md, index.html and the suite table's files
UNRANKED_PREFIX = "throughput/"
_COLUMNS = ["schema_version", "run_id", "generation", "metric", "value", "direction", "target"]
_SCHEMA = pa.schema([R.METRICS_SCHEMA.field(name) for name in _COLUMNS])


# -- reading runs: bench.runfolder owns the run folder; its readers are re-exported here ------------

from bench.runfolder import (  # noqa: E402,F401 (re-exported: the leaderboard's run reading)
    TRACK_KEYS,
    RunJsonError as _Malformed,
    RunRecord,
    assign_tracks,
    find_run_dirs,
    load_run_record as _load_run,
    parse_run_json,
    runs_below,
    schema_problem,
)


def _load_metrics(rec: RunRecord) -> pa.Table | str:
    return RF.load_metric_columns(rec.path, _COLUMNS)


def _map(fn: Callable, items: Sequence, workers: int) -> list:
    if workers <= 1 or len(items) < 64:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(workers) as ex:
        return list(ex.map(fn, items, chunksize=64))


# -- checking the rows of many runs at once ------------------------------------------------------


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
    out: Path | None = None  # the folder the tables went to

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
            lines.append(f"tables written to {self.out}{os.sep} ({len(self.tracks)} track(s), "
                         f"{len(self.files)} files; every table in the folder is listed in {self.files[-1].name})")
        return "\n".join(lines)


def default_workers() -> int:
    """Threads for reading files: they help on network file systems; on two cores they cost."""
    return min(8, os.cpu_count() or 1) if (os.cpu_count() or 1) > 2 else 1


def default_out(paths: Iterable[str | Path]) -> Path:
    """Where the tables go when no folder is given: ``leaderboards/`` inside the first results
    folder (``results/leaderboards/``), or beside a run folder given directly, never inside it.
    Run readers search for run.json, so the tables there are never taken for runs."""
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    first = paths[0] if paths else Path("results")
    if first.name == R.RUN_JSON and first.is_file():
        first = first.parent
    if (first / R.RUN_JSON).is_file():
        first = first.parent
    return first / DEFAULT_OUT


def choose_stems(boards: Sequence[Board], earlier: dict[str, str]) -> None:
    """Set each board's file stem (``slug``): the track name with ``/`` as ``-``, followed by the
    track id when several tracks of the build share the name, or when the stem is already taken:
    by another track's tables in the folder (``earlier``: stem -> track id, :func:`tables_in`), by
    another track of this build, or by the folder's own files (``index``, ``suite``)."""
    names: dict[str, int] = {}
    for b in boards:
        names[b.track["name"]] = names.get(b.track["name"], 0) + 1
    used: set[str] = set()

    def free(stem: str, tid: str) -> bool:
        return stem not in used and stem not in RESERVED_STEMS and earlier.get(stem, tid) == tid

    for b in boards:
        name, tid = b.track["name"], str(b.track["id"])
        base = slugify(name)
        stem = base if names[name] == 1 and free(base, tid) else f"{base}-{slugify(tid)}"
        k = 2
        while not free(stem, tid):  # a stem ending in this id taken by another track: rare, never overwritten
            stem = f"{base}-{slugify(tid)}-{k}"
            k += 1
        used.add(stem)
        b.slug = stem


def attach_references(boards: Sequence[Board], bench: Any, warnings: list[str]) -> None:
    """The paper's figures of each track whose entries reproduce a paper experiment
    (:func:`bench.references.for_spec` on each entry's spec), and the labels of those entries."""
    from bench import references as refs_of

    if bench is None:
        try:
            from bench.plugins import Bench

            bench = Bench()
        except Exception as exc:  # noqa: BLE001 (a broken plugin must not stop the tables)
            warnings.append(f"the plugin registry did not load ({type(exc).__name__}: {exc}); the pages show "
                            "no paper's figures")
            return
    for b in boards:
        for entry in b.entries:
            found = refs_of.for_spec(bench, entry.spec)
            if found:
                b.reproducing.append(entry.label)
                b.references.extend(r for r in found if r not in b.references)


def build(paths: Iterable[str | Path], track: str | None = None, out: str | Path | None = None,
          workers: int | None = None, headline: Any = None, bench: Any = None) -> LeaderboardResult:
    """Scan result folders, rank the complete runs of each track, write the tables under ``out``.

    ``out`` None: :func:`default_out` (``leaderboards/`` inside the first path). ``track`` selects
    tracks by name (``gmm/smoke``) or id. ``headline`` (a :class:`bench.components.Headline` or a
    dict with metric, threshold and mode) replaces every track's run.json headline for the "gens
    to collapse" column. ``bench`` is the plugin registry that gives the paper's figures (default:
    the installed plugins). Raises BenchError for a missing path, no run folder at all, or a
    ``track`` matching none; malformed files become warnings.
    """
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    if not paths:
        raise BenchError("give at least one folder of results (for example results/)")
    out = default_out(paths) if out is None else out
    if headline is not None:
        from bench.collapse import override_headline

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
        if r.complete and r.nonfinite:  # a run that went on past NaN or inf (on_nonfinite record)
            result.warnings.append(f"{r.path}: {r.nonfinite[:300]}; the run went on (on_nonfinite record), so its "
                                   "later generations are not comparable; skipped")
            result.runs_skipped += 1
        elif r.complete:
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
            b, dupes = make_board(tid, good, idx, rows, row_mask, result.warnings, headline)
            result.runs_skipped += dupes
            if b is not None:
                boards.append(b)
    if boards:
        attach_references(boards, bench, result.warnings)
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise BenchError(f"--out {out} is a file: give a folder for the tables")
        if (out / R.RUN_JSON).is_file():
            raise BenchError(f"--out {out} is a run folder: give another folder for the tables (a run folder "
                             "holds only what bench run wrote)")
        out.mkdir(parents=True, exist_ok=True)
        result.out = out
        earlier = tables_in(out)
        choose_stems(boards, earlier)
        for b in boards:
            name = b.track["name"]
            for stem, tid in earlier.items():  # this track's tables under another name: replaced
                if tid == b.track["id"] and stem != b.slug:
                    for ext in EXTENSIONS:
                        (out / f"{stem}.{ext}").unlink(missing_ok=True)
            files = [out / f"{b.slug}.{ext}" for ext in EXTENSIONS]
            for writer, f in zip(WRITERS, files):
                writer(b, f)
            result.files.extend(files)
            result.runs_used += b.runs
            result.tracks.append(TrackSummary(name, b.track["id"], b.slug, len(b.entries), b.runs,
                                              b.entries[0].label if b.entries else "", files))
        result.files.append(write_index(out))
    result.boards = boards
    return result
