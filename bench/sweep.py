"""Sweeps: a grid of plugins x presets x policies x seeds x parameters, expanded into runs and run
by an executor (``bench sweep FILE``; the file format is in docs/sweeps.md).

Every combination of the grid is resolved into a spec before anything runs, so a typo anywhere
ends the sweep with a message naming the grid entry and nothing written. Runs whose folder already
holds every generation are skipped without starting a worker; the others are handed to the
executor, and the loop resumes those that stopped part-way. One failing run does not stop the
others: the sweep ends with a summary (printed, and written as JSON under ``out/.sweeps/``).
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import results as R
from bench import runfolder as RF
from bench.errors import BenchError
from bench.executors import (
    BUSY,
    COMPLETE,
    FAILED,
    FINISHED,
    ExecutorSettings,
    Task,
    TaskResult,
    first_line,
)
from bench.options import (
    CONFIG_KEYS,
    DEFAULT_KEEP_STATES,
    DEFAULT_ON_NONFINITE,
    DEFAULT_OUT,
    SPEC_KEYS,
    check_value,
    default_threads,
    is_path,
    metric_names,
    parse_keep_states,
    parse_on_nonfinite,
    parse_threads,
    resolve_checked,
    short,
)
from bench.plugins import Bench, suggest
from bench.spec import Spec, max_runs, parse_seeds, too_many_runs

DEFAULT_EXECUTOR = "local"
SUMMARY_DIR = ".sweeps"

# Keys of a sweep file: those of a config file (bench.options), then the sweep's own; a block named
# after an executor (``slurm:``, ``dask:``) holds its options.
SWEEP_KEYS = (*CONFIG_KEYS, "executor", "workers", "threads_per_worker", "batch", "summary", "grid")
# Grid axes that are not parameters (the options that change the spec, and the seed); any other
# grid key names a parameter (bare or ``set.NAME``).
AXES = (*SPEC_KEYS, "seed", "seeds")
# What the sweep's own keys take (those of a run are checked by bench.options.check_value).
SWEEP_EXPECTS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "executor": (lambda v: v is None or isinstance(v, str), "an executor name such as local"),
    "workers": (lambda v: v is None or isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                "a whole number >= 1"),
    "threads_per_worker": (lambda v: v is None or isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                           "a whole number >= 1"),
    "batch": (lambda v: isinstance(v, bool), "true or false"),
    "summary": (lambda v: v is None or is_path(v), "a file name"),
    "grid": (lambda v: v is None or isinstance(v, (dict, list)),  # expand() checks each block
             "a mapping of axis: [values], or a list of such mappings (blocks)"),
}
# Lines of failed or busy runs printed at most; the summary JSON lists every one.
MAX_LISTED = 5

# What the summary calls each ending.
DONE, SKIPPED, INTERRUPTED = "done", "skipped", "interrupted"
STATUSES = (DONE, SKIPPED, BUSY, FAILED, INTERRUPTED)


@dataclass(frozen=True)
class SweepRun:
    """One run of a sweep: its spec, the grid values that made it, its folder and what is on disk."""

    spec: Spec
    entry: Mapping[str, Any]
    folder: Path
    done: int  # generations finished on disk when the sweep was planned
    # generations_requested of the folder's run.json, read when the folder holds all the grid's
    # generations (None otherwise, or when unreadable): a finished run asked for more is left as it is
    recorded: int | None = None

    @property
    def finished(self) -> bool:
        return self.done >= self.spec.generations + 1

    @property
    def longer(self) -> bool:
        """Finished, but made for more generations than the grid asks: the sweep skips it, so its
        rows run past the grid's last generation and it ranks on a track of its own (the track id
        digests the generations asked for: ``bench.runfolder.make_track``)."""
        return self.finished and (self.done > self.spec.generations + 1
                                  or (self.recorded is not None and self.recorded > self.spec.generations))

    def longer_note(self) -> str:
        """What a longer run means for the sweep's results, and how to keep them on one track."""
        n = self.spec.generations
        held = max(self.recorded or 0, self.done - 1)
        of = f" of the {self.recorded} its run.json asks for" if self.recorded and self.recorded + 1 > self.done else ""
        return (f"holds generations 0..{self.done - 1}{of}, more than this grid's {n}: left as it is, its rows "
                f"run to {self.done - 1} (0..{n} as a {n}-generation run's) and it ranks on the {held}-generation "
                f"track, apart from this grid's runs. For one track: generations: {held}, or another --out")


@dataclass
class Sweep:
    """A sweep file resolved into runs, with where and how to run them."""

    name: str
    runs: list[SweepRun]
    out: Path
    executor: str = DEFAULT_EXECUTOR
    workers: int | None = None
    threads_per_worker: int = 1
    keep_states: str = DEFAULT_KEEP_STATES
    on_nonfinite: str = DEFAULT_ON_NONFINITE
    batch: bool = True
    options: dict[str, Any] = field(default_factory=dict)  # the chosen executor's, merged and checked
    summary: Path | None = None
    duplicates: int = 0
    # grid entries whose mitigation does not apply to their model: (entry, reason); never run
    not_applicable: list[tuple[dict, str]] = field(default_factory=list)

    def settings(self, log: Callable[[str], None] | None = None, bench: Bench | None = None) -> ExecutorSettings:
        return ExecutorSettings(out=self.out, workers=self.workers, threads_per_worker=self.threads_per_worker,
                                options=dict(self.options), log=log, bench=bench)


# -- reading and expanding ----------------------------------------------------------------------


def read_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML or TOML file (TOML by the ``.toml`` suffix), read as ``bench run
    --config`` reads its file."""
    from bench.spec import read_mapping

    return read_mapping(path, "sweep file")


def _seed_list(value: Any, where: str) -> list[int]:
    """Seeds from ``3``, ``"0-4"``, ``[0, 1]`` or ``["0-2", 7]``."""
    try:
        return parse_seeds(value)
    except BenchError as exc:
        raise BenchError(f"{where}: {exc}") from None


def _grid_axes(grid: Any, where: str) -> list[tuple[str, list[Any]]]:
    """The grid as (axis key, values) pairs in file order; ``set: {a: [..]}`` becomes ``set.a``."""
    if not isinstance(grid, dict):
        raise BenchError(f"{where}: 'grid' must be a mapping of axis: [values], got {type(grid).__name__}")
    flat: list[tuple[str, Any]] = []
    for key, values in grid.items():
        key = str(key)
        if key == "set":
            if not isinstance(values, dict):
                raise BenchError(f"{where}: grid.set must be a mapping of parameter: [values]")
            flat.extend((f"set.{k}", v) for k, v in values.items())
        else:
            flat.append((key, values))
    axes: list[tuple[str, list[Any]]] = []
    seen: set[str] = set()
    for key, values in flat:
        name = "seed" if key in ("seed", "seeds") else (key.removeprefix("set."))
        if name in seen:
            raise BenchError(f"{where}: grid axis {key!r} is given twice")
        seen.add(name)
        if key in ("seed", "seeds"):
            seeds = _seed_list(values, f"{where}: grid.{key}")
            if not seeds:
                raise BenchError(f"{where}: grid.{key} is an empty list: a sweep over it would run nothing")
            axes.append(("seed", seeds))
            continue
        if not isinstance(values, list):
            raise BenchError(f"{where}: grid.{key} must be a list of values, got {short(values)} "
                             f"(for a single value, put it at the top level)")
        if not values:
            raise BenchError(f"{where}: grid.{key} is an empty list: a sweep over it would run nothing")
        if key in SPEC_KEYS:
            for i, value in enumerate(values):  # None stands for the default, as at the top level
                check_value(key, value, where, name=f"value {i + 1} of grid.{key}")
        axes.append((key, values))
    return axes


def count_runs(data: Mapping[str, Any], where: str = "sweep") -> int:
    """How many runs the grid of ``data`` names (combinations x seeds, duplicates counted), found
    without resolving any: a sweep over more than :func:`bench.spec.max_runs` is refused at once."""
    grid = data.get("grid") or {}
    if isinstance(grid, list):
        return sum(count_runs({**data, "grid": block}, f"{where}, grid block {i + 1}")
                   for i, block in enumerate(grid) if isinstance(block, dict))
    axes = _grid_axes(grid, where)
    n = 1
    for _, values in axes:
        n *= len(values)
    if all(key != "seed" for key, _ in axes):
        n *= len(_seed_list(data.get("seeds", data.get("seed", 0)), f"{where}: seeds"))
    return n


def _near_axis(key: str) -> str | None:
    import difflib

    close = difflib.get_close_matches(key, AXES, n=1, cutoff=0.6)
    return close[0] if close else None


def _entry_text(entry: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in entry.items()) or "(no grid)"


def expand(b: Bench, data: Mapping[str, Any], where: str = "sweep",
           not_applicable: list | None = None) -> tuple[list[tuple[dict, Spec]], int]:
    """Every combination of the grid resolved into a spec; specs with the same run id count once
    (the one asking for the most generations stays). Returns ((entry, spec) pairs, duplicates).

    A combination whose ``mitigation`` does not apply to its model (a token-only option on a
    vector model, an oracle verifier without a known density) is not an error: it is appended to
    ``not_applicable`` as (entry, reason) and left out.

    ``grid`` may also be a list of such mappings (blocks): each block is crossed with the top-level
    values on its own, and the runs of all blocks are joined (seeds 0-4 for cheap models and 0-2
    for a language model in one file)."""
    total = count_runs(data, where)
    if total > max_runs():
        raise too_many_runs(total, f"{where}: the grid", "split the grid over several sweep files")
    return _expand(b, data, where, not_applicable)


def _expand(b: Bench, data: Mapping[str, Any], where: str,
            not_applicable: list | None) -> tuple[list[tuple[dict, Spec]], int]:
    grid = data.get("grid") or {}
    if isinstance(grid, list):
        if not grid:
            raise BenchError(f"{where}: 'grid' is an empty list: a sweep over it would run nothing")
        pairs: list[tuple[dict, Spec]] = []
        for i, block in enumerate(grid):
            if not isinstance(block, dict):
                raise BenchError(f"{where}: grid block {i + 1} must be a mapping of axis: [values], "
                                 f"got {type(block).__name__}")
            block_pairs, _ = _expand(b, {**data, "grid": block}, f"{where}, grid block {i + 1}", not_applicable)
            pairs.extend(block_pairs)
        return _unique(pairs)
    axes = _grid_axes(grid, where)
    axis_names = {("seed" if k == "seed" else k.removeprefix("set.")) for k, _ in axes}
    base_set = {} if data.get("set") is None else data["set"]
    if not isinstance(base_set, dict):
        raise BenchError(f"{where}: set must be a mapping of parameter: value, got {short(base_set)}")
    for key in sorted(axis_names):
        if key == "seed":
            top = "seeds" in data or "seed" in data
        else:
            top = key in data if key in SPEC_KEYS else key in base_set
        if top:
            raise BenchError(f"{where}: {key!r} is both a grid axis and a top-level value; keep one")
    if "seeds" in data and "seed" in data:
        raise BenchError(f"{where}: give either 'seeds' or 'seed', not both")
    base_seeds = _seed_list(data.get("seeds", data.get("seed", 0)), f"{where}: seeds")

    pairs: list[tuple[dict, Spec]] = []
    keys = [k for k, _ in axes]
    for combo in itertools.product(*(values for _, values in axes)) if axes else [()]:
        entry = dict(zip(keys, combo))
        values = {k: data.get(k) for k in SPEC_KEYS}
        overrides = dict(base_set)
        seeds = base_seeds
        for key, value in entry.items():
            if key == "seed":
                seeds = [value]
            elif key in SPEC_KEYS:
                values[key] = value
            else:
                overrides[key.removeprefix("set.")] = value
        plugin = values["plugin"]
        if not plugin:
            raise BenchError(f"{where} names no plugin: add `plugin: gmm` (or a grid axis `plugin: [gmm, gaussian]`)")
        if values["mitigation"] is not None:
            from bench.mitigations import unavailable

            try:
                reason = unavailable(b, str(plugin), values["mitigation"], values["preset"])
            except BenchError as exc:
                label = f"grid entry {_entry_text(entry)}" if entry else "the spec"
                raise BenchError(f"{where}, {label}: {exc}") from None
            if reason:
                # once per combination: the seed does not change whether a mitigation applies
                key = {k: v for k, v in entry.items() if k != "seed"}
                if not_applicable is not None and (key, reason) not in not_applicable:
                    not_applicable.append((key, reason))
                continue
        for seed in seeds:
            try:  # resolved and checked by the model, as `bench run` does
                spec = resolve_checked(b, str(plugin), values["preset"], seed=seed,
                                       generations=values["generations"], policy=values["policy"],
                                       start=values["start"], overrides=overrides,
                                       metrics=metric_names(values["metrics"]),
                                       trainer=values["trainer"], generator=values["generator"],
                                       scorer=values["scorer"], mitigation=values["mitigation"])
            except BenchError as exc:
                hint = "".join(f" (or is grid key {k!r} the axis {_near_axis(k)!r}?)" for k in keys
                               if k not in AXES and _near_axis(k) and repr(k) in str(exc))
                label = f"grid entry {_entry_text(entry)}" if entry else "the spec"
                raise BenchError(f"{where}, {label}: {exc}{hint}") from None
            pairs.append(({**entry, "seed": seed}, spec))
    return _unique(pairs)


def _unique(pairs: list[tuple[dict, Spec]]) -> tuple[list[tuple[dict, Spec]], int]:
    """One (entry, spec) per run id, the one asking for the most generations; and how many were
    dropped."""
    unique: dict[str, int] = {}
    out: list[tuple[dict, Spec]] = []
    duplicates = 0
    for entry, spec in pairs:
        if spec.run_id in unique:
            duplicates += 1
            i = unique[spec.run_id]
            if spec.generations > out[i][1].generations:
                out[i] = (entry, spec)
            continue
        unique[spec.run_id] = len(out)
        out.append((entry, spec))
    return out, duplicates


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BenchError(f"{what} must be a whole number >= 1, got {value!r}")
    return value


def executor_options(b: Bench, name: str, block: Any, flags: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The executor's option defaults, updated by the file's block and then by CLI flags; unknown
    keys are refused with the known ones."""
    executor = b.executors.get(name)
    options = dict(executor.options)
    if block is None:
        block = {}
    if not isinstance(block, dict):
        raise BenchError(f"{where}: the {name!r} block must be a mapping of option: value")
    for source, values in ((f"{where}: {name}", block), ("command line", flags)):
        for key, value in values.items():
            if key not in options:
                known = ", ".join(sorted(options)) or "none"
                raise BenchError(f"{source}: executor {name!r} has no option {key!r}.{suggest(str(key), options)} "
                                 f"Its options: {known}.")
            options[key] = value
    return options


def load(
    b: Bench,
    path: str | Path,
    *,
    out: str | Path | None = None,
    executor: str | None = None,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    keep_states: str | None = None,
    on_nonfinite: str | None = None,
    batch: bool | None = None,
    summary: str | Path | None = None,
    executor_flags: Mapping[str, Any] | None = None,
) -> Sweep:
    """Read a sweep file and resolve every run; the keyword arguments (the CLI's options) win over
    the file. Nothing is written."""
    path = Path(path)
    data = read_file(path)
    where = f"sweep file {path}"
    executors = set(b.executors.names())
    for key, value in data.items():
        if key not in SWEEP_KEYS and key not in executors:
            raise BenchError(
                f"{where}: unknown key {key!r}.{suggest(str(key), list(SWEEP_KEYS) + sorted(executors))} "
                f"Known keys: {', '.join(SWEEP_KEYS)}, or a block of executor options named after "
                f"the executor ({', '.join(sorted(executors))})."
            )
        check_value(key, value, where)  # the options of a run (bench.options)
        test = SWEEP_EXPECTS.get(key)
        if key in executors:
            test = (lambda v: v is None or isinstance(v, dict), "a mapping of option: value")
        if test is not None and not test[0](value):
            raise BenchError(f"{where}: {key} must be {test[1]}, got {short(value)}")
    not_applicable: list[tuple[dict, str]] = []
    pairs, duplicates = expand(b, data, where, not_applicable)
    out_dir = Path(out or data.get("out") or DEFAULT_OUT).absolute()
    name = executor or data.get("executor") or DEFAULT_EXECUTOR
    b.executors.get(name)  # unknown names end here, with near names
    flags = {k: v for k, v in (executor_flags or {}).items() if v is not None}
    options = executor_options(b, name, data.get(name), flags, where)
    w = workers if workers is not None else data.get("workers")
    w = None if w is None else _positive_int(w, "workers")
    if "threads" in data and "threads_per_worker" in data:
        raise BenchError(f"{where}: give either 'threads' or 'threads_per_worker' (the same setting), not both")
    t = threads_per_worker if threads_per_worker is not None else data.get("threads", data.get("threads_per_worker"))
    t = parse_threads(t, "threads (--threads)")
    if t is None:  # one thread per worker, unless the sweep's own process runs everything (local, 1 worker)
        t = default_threads(1 if w == 1 and name == DEFAULT_EXECUTOR else 2)
    batch_value = batch if batch is not None else data.get("batch", True)
    if not isinstance(batch_value, bool):
        raise BenchError(f"{where}: batch must be true or false, got {batch_value!r}")
    summary_value = summary or data.get("summary")
    runs = []
    for entry, spec in pairs:
        folder = out_dir / spec.folder_name
        done = R.finished_generations(folder)
        runs.append(SweepRun(spec, entry, folder, done, _recorded(folder) if done >= spec.generations + 1 else None))
    return Sweep(
        name=path.stem,
        runs=runs,
        out=out_dir,
        executor=name,
        workers=w,
        threads_per_worker=t,
        keep_states=parse_keep_states(keep_states or data.get("keep_states") or DEFAULT_KEEP_STATES),
        on_nonfinite=parse_on_nonfinite(on_nonfinite or data.get("on_nonfinite")),
        batch=batch_value,
        options=options,
        summary=Path(summary_value) if summary_value else None,
        duplicates=duplicates,
        not_applicable=not_applicable,
    )


def _recorded(folder: Path) -> int | None:
    """generations_requested of a run folder's run.json; None where it cannot be read (the run's
    own command reports why)."""
    try:
        return RF.read_run_json(folder).generations_requested
    except BenchError:
        return None


def _track(folder: Path) -> dict[str, Any] | None:
    """The track (id, name, generations) a run folder ranks on after the sweep; None where its
    run.json cannot be read."""
    try:
        info = RF.read_run_json(folder)
        track_id, name = RF.track_of(info)
    except (BenchError, KeyError, TypeError):
        return None
    return {"id": track_id, "name": name, "generations": info.generations_requested}


# -- planning -----------------------------------------------------------------------------------


def plan_tasks(b: Bench, sweep: Sweep) -> list[Task]:
    """Tasks for the runs not yet finished: one per run, or one per group of runs that differ only
    in seed where the trainer runs them in lockstep (``bench.loop.batchable``). Groups are split
    until there are at least as many tasks as workers, so batching never idles a worker."""
    from bench.api import lockstep_groups

    pending = [r.spec for r in sweep.runs if not r.finished]
    chunks = lockstep_groups(b, pending, batch=sweep.batch)
    want = sweep.workers or os.cpu_count() or 1
    while len(chunks) < want:
        largest = max(range(len(chunks)), key=lambda i: len(chunks[i]), default=None)
        if largest is None or len(chunks[largest]) < 2:
            break
        group = chunks.pop(largest)
        half = (len(group) + 1) // 2
        chunks[largest:largest] = [group[:half], group[half:]]
    return [Task(specs=tuple(s.to_dict() for s in chunk), out=str(sweep.out), keep_states=sweep.keep_states,
                 on_nonfinite=sweep.on_nonfinite,
                 threads=sweep.threads_per_worker) for chunk in chunks]


# -- running ------------------------------------------------------------------------------------


@dataclass
class SweepSummary:
    """How every run of a sweep ended: done (by this sweep), skipped (finished earlier), busy
    (another process holds it), failed (with the reason) or interrupted (never got to run)."""

    name: str
    executor: str
    out: Path
    started: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    path: Path | None = None
    warning: str | None = None
    not_applicable: list[dict[str, Any]] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for row in self.rows if row["status"] == status)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [row for row in self.rows if row["status"] == FAILED]

    @property
    def busy(self) -> list[dict[str, Any]]:
        return [row for row in self.rows if row["status"] == BUSY]

    @property
    def ok(self) -> bool:
        """Every run ended done or skipped: none failed, none was held by another process."""
        return not self.failed and not self.busy

    def as_dict(self) -> dict[str, Any]:
        return {"sweep": self.name, "executor": self.executor, "out": str(self.out), "started": self.started,
                "seconds": round(self.seconds, 3), "counts": {s: self.count(s) for s in STATUSES},
                "runs": self.rows, "not_applicable": self.not_applicable}

    def lines(self) -> list[str]:
        counts = ", ".join(f"{self.count(s)} {s}" for s in STATUSES if self.count(s) or s in (DONE, SKIPPED, FAILED))
        lines = [f"Sweep {self.name}: {len(self.rows)} run(s): {counts} ({self.seconds:.1f} s, executor {self.executor})"]
        for status in (FAILED, BUSY):
            rows = [row for row in self.rows if row["status"] == status]
            for row in rows[:MAX_LISTED]:
                why = row["error"] if status == FAILED else "another process holds this run"
                lines.append(f"  {status}: {row['folder']}: {why}")
            if len(rows) > MAX_LISTED:
                lines.append(f"  ... and {len(rows) - MAX_LISTED} more {status} (the summary JSON lists them all)")
        if self.count(BUSY):
            lines.append(f"  {self.count(BUSY)} run(s) busy: another `bench run` or sweep is running them, or the "
                         "workers of a sweep that was killed are still stopping. Wait for those processes to end "
                         "(`bench runs` shows the runs still running), then run the same sweep again to check "
                         "that every run finished")
        if self.count(INTERRUPTED):
            lines.append(f"  {self.count(INTERRUPTED)} run(s) interrupted: run the same sweep again to finish them")
        longer = [row for row in self.rows if row.get("note")]
        for row in longer[:MAX_LISTED]:
            lines.append(f"  skipped: {Path(row['folder']).name}: {row['note']}")
        if len(longer) > MAX_LISTED:
            lines.append(f"  ... and {len(longer) - MAX_LISTED} more skipped run(s) holding more generations "
                         "than the grid (the summary JSON lists them all)")
        if self.not_applicable:
            lines.append(f"  {len(self.not_applicable)} grid entr{'y' if len(self.not_applicable) == 1 else 'ies'} "
                         "n/a: the mitigation does not apply to the model (reasons above and in the summary JSON)")
        if self.path is not None:
            lines.append(f"Summary: {self.path}")
        if self.warning:
            lines.append(f"Warning: {self.warning}")
        return lines

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        R.write_json(path, self.as_dict())
        self.path = path
        return path


def _row(run: SweepRun, status: str, result: TaskResult | None = None, error: str | None = None) -> dict[str, Any]:
    return {
        "folder": str(run.folder),
        "run_id": run.spec.run_id,
        "entry": {k: v for k, v in run.entry.items()},
        "plugin": run.spec.plugin,
        "preset": run.spec.preset,
        "policy": run.spec.policy_label,
        "seed": run.spec.seed,
        "status": status,
        "generations_done": result.generations_done if result else run.done,
        "generations_requested": run.spec.generations,
        "error": error if error is not None else (result.error if result else None),
        "seconds": round(result.seconds, 3) if result else 0.0,
        "note": run.longer_note() if run.longer and status == SKIPPED else None,
    }


def run_sweep(b: Bench, sweep: Sweep, log: Callable[[str], None] | None = None) -> SweepSummary:
    """Run every unfinished run of ``sweep`` through its executor; return (and write) the summary.

    A KeyboardInterrupt, or a BenchError from the executor (an engine refusing a setting), writes the
    summary of what ended so far, then propagates.
    """
    log = log or (lambda message: None)
    if sweep.summary is not None:  # a summary that cannot be written is a mistake found before the work
        folder = Path(sweep.summary).absolute().parent
        probe = folder
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not probe.is_dir() or not os.access(probe, os.W_OK):
            raise BenchError(f"--summary {sweep.summary}: cannot write into {folder}; choose a writable place")
    executor = b.executors.get(sweep.executor)
    settings = sweep.settings(log, b)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    summary = SweepSummary(sweep.name, sweep.executor, sweep.out, time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    by_folder = {str(r.folder): r for r in sweep.runs}
    rows: dict[str, dict[str, Any]] = {}
    for run in sweep.runs:
        if run.finished:
            rows[str(run.folder)] = _row(run, SKIPPED)
    tasks = plan_tasks(b, sweep)
    if tasks and executor.check is not None:  # a missing engine matters only when there is work
        executor.check(settings)
    todo = sum(len(t.specs) for t in tasks)
    skipped = len(rows)
    log(f"Sweep {sweep.name}: {len(sweep.runs)} run(s), {skipped} finished earlier (skipped), "
        f"{todo} to run with executor {sweep.executor!r} in {len(tasks)} task(s); results in {sweep.out}/")
    for run in sweep.runs:
        if run.longer:
            log(f"skip {run.folder.name}: {run.longer_note()}")
    for entry, reason in sweep.not_applicable:
        log(f"n/a [{_entry_text(entry)}]: {reason}")
    summary.not_applicable = [{"entry": dict(entry), "reason": reason} for entry, reason in sweep.not_applicable]
    start = time.perf_counter()
    if tasks:
        sweep.out.mkdir(parents=True, exist_ok=True)
    try:
        for result in executor.run(tasks, settings) if tasks else ():
            run = by_folder.get(result.folder)
            if run is None or result.folder in rows:
                continue  # not ours, or reported twice: the first report stands
            status = {COMPLETE: DONE, BUSY: BUSY, FINISHED: SKIPPED}.get(result.status, FAILED)
            error = first_line(result.error or result.status) if status in (FAILED, BUSY) else None
            rows[result.folder] = _row(run, status, result, error)
            n = len(rows) - skipped
            note = f": {rows[result.folder]['error']}" if status in (FAILED, BUSY) else ""
            log(f"[{n}/{todo}] {status} {run.folder.name} ({result.seconds:.1f} s){note}")
    except KeyboardInterrupt:
        _finish(summary, sweep, rows, INTERRUPTED, None, start, stamp)
        for line in summary.lines():
            log(line)
        raise
    except Exception as exc:
        reason = str(exc) if isinstance(exc, BenchError) else f"{type(exc).__name__}: {exc}"
        _finish(summary, sweep, rows, FAILED, f"executor {sweep.executor!r} stopped: {first_line(reason)}",
                start, stamp)
        if isinstance(exc, BenchError):  # a setting the engine refused (a scheduler out of reach, ...)
            raise
        return summary
    _finish(summary, sweep, rows, FAILED, f"executor {sweep.executor!r} returned no result for this run",
            start, stamp)
    return summary


def _finish(summary: SweepSummary, sweep: Sweep, rows: dict, status: str, error: str | None, start: float,
            stamp: str) -> None:
    """Fill in the runs without a result, order the rows as the sweep, and write the JSON."""
    for run in sweep.runs:
        key = str(run.folder)
        if key not in rows:
            rows[key] = _row(run, status, error=error)
    summary.rows = [rows[str(run.folder)] for run in sweep.runs]
    for row in summary.rows:  # what each run ranks on, so that readers of the JSON never mix tracks
        row["track"] = _track(Path(row["folder"]))
    summary.seconds = time.perf_counter() - start
    target = sweep.summary
    if target is None:  # the pid keeps concurrent sweeps apart; the counter, sweeps of one process
        base = sweep.out / SUMMARY_DIR / f"{stamp}-{sweep.name}-{os.getpid()}"
        target, n = base.with_name(base.name + ".json"), 1
        while target.exists():
            n += 1
            target = base.with_name(f"{base.name}-{n}.json")
    try:
        summary.write(Path(target))
    except OSError as exc:
        summary.path = None
        summary.warning = f"the summary could not be written to {target}: {exc.strerror or exc}"


def dry_run_lines(b: Bench, sweep: Sweep) -> list[str]:
    """What ``--dry-run`` prints: each run, whether it is new, partial or finished, and the plan."""
    lines = []
    for run in sweep.runs:
        total = run.spec.generations + 1
        if run.finished:
            state = "finished (skip)"
        elif (run.folder / R.RUN_JSON).is_file():
            try:
                status = RF.read_run_json(run.folder).status
            except BenchError:
                status = None
            # No lock probe here: taking the run's lock, even briefly, could turn a sweep away.
            state = f"{'failed' if status == 'failed' else 'partial'} {run.done}/{total}"
        else:
            state = "new"
        lines.append(f"{state:<16} {run.folder.name}  [{_entry_text(run.entry)}]")
        if run.longer:
            lines.append(f"{'':<16} {run.longer_note()}")
    for entry, reason in sweep.not_applicable:
        lines.append(f"{'n/a':<16} [{_entry_text(entry)}]: {reason}")
    tasks = plan_tasks(b, sweep)
    finished = sum(r.finished for r in sweep.runs)
    dup = f"; {sweep.duplicates} duplicate(s) of the same run dropped" if sweep.duplicates else ""
    longer = sum(r.longer for r in sweep.runs)
    if longer:
        dup += (f"; {longer} finished run(s) hold more generations than the grid asks for and rank on a "
                "track of their own (see above)")
    if sweep.not_applicable:
        dup += f"; {len(sweep.not_applicable)} grid entr{'y' if len(sweep.not_applicable) == 1 else 'ies'} n/a"
    lines.append(f"{len(sweep.runs)} run(s): {len(sweep.runs) - finished} to run in {len(tasks)} task(s), "
                 f"{finished} finished{dup}; executor {sweep.executor!r}, results in {sweep.out}/")
    return lines

