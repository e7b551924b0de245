"""The result files of a run: their formats and schemas, atomic writing, and reading them back.

What a run folder holds and how it is read and written as a whole (run.json, the track id, the
metric rows, the scan for runs) belongs to :mod:`bench.runfolder`, which builds on this module;
``gen_metrics_table``, ``stamp``, ``validate_metrics``, ``read_metrics``, ``consolidate`` and
``find_runs`` are still found here under their old names.

A run folder (see docs/results.md for the full description)::

    run.json                spec, provenance, status
    metrics.parquet         tidy rows, one per generation and metric value (METRICS_SCHEMA)
    log.txt                 what the run printed, appended across resumes
    gens/000000/            one folder per finished generation k (model M_k), renamed into place
        metrics.parquet     that generation's rows (GEN_METRICS_SCHEMA)
        samples.parquet     S_{k+1} with per-sample scores (SAMPLES columns below)
        state.safetensors   M_k's state (generation 0 and the last are always kept)
        info.json           wall times of the generation's steps
    gens/000001-000064/     a chunk: fast generations 1..64 committed together (run.json
                            schema_version 2): the same files, samples.parquet with a
                            ``generation`` column, metrics.parquet with all their rows,
                            info.json ``{"generations": [...]}``, state.safetensors of the last
                            one, and states.safetensors with the kept states of the others

Every file is written to a temporary name and renamed, so a reader never sees half a file; a
killed process leaves at most a ``.<name>.<...>.tmp`` entry, which the next run of the same command
removes.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.components import Samples
from bench.errors import BenchError

SCHEMA_VERSION = 1  # of the metric rows (METRICS_SCHEMA) and samples files
# run.json's schema_version: 2 since generations may be committed in chunks (``gens/<first>-<last>``);
# readers of this version read version 1 folders (one folder per generation) as well.
RUN_SCHEMA_VERSION = 2
RUN_SCHEMA_VERSIONS = (1, 2)
_UMASK = os.umask(0)
os.umask(_UMASK)
_MODE = 0o666 & ~_UMASK  # every result file, whatever library wrote it (safetensors makes 0600)
# Flushing a file to the disk before its rename (and the rename after it) makes it survive a power
# loss. ``auto``: every write but those of generations built in under SLOW_GENERATION_S, for which
# the flushes would cost more than they protect (docs/results.md, "What survives a crash", has the
# measured costs); ``always``; ``never``. The environment variable BENCH_FSYNC sets it.
FSYNC = {"1": "always", "0": "never"}.get(os.environ.get("BENCH_FSYNC", "").strip().lower(),
                                        os.environ.get("BENCH_FSYNC", "").strip().lower())
if FSYNC not in ("always", "never"):
    FSYNC = "auto"
SLOW_GENERATION_S = 1.0


def _syncing(sync: bool) -> bool:
    return FSYNC == "always" or (FSYNC != "never" and sync)

# What one generation folder holds: identity-free, so generation 0 can be shared between runs.
GEN_METRICS_SCHEMA = pa.schema(
    [
        ("generation", pa.int64()),
        ("metric", pa.string()),
        ("value", pa.float64()),
        ("direction", pa.string()),
        ("target", pa.float64()),
        ("metric_version", pa.string()),
        ("metric_plugin", pa.string()),
        ("metric_plugin_version", pa.string()),
    ]
)

RUN_COLUMNS = [
    ("schema_version", pa.int32()),
    ("run_id", pa.string()),
    ("plugin", pa.string()),
    ("plugin_version", pa.string()),
    ("preset", pa.string()),
    ("policy", pa.string()),
    ("seed", pa.int64()),
]
METRICS_SCHEMA = pa.schema(RUN_COLUMNS + list(GEN_METRICS_SCHEMA))
DIRECTIONS = {"higher", "lower", "target"}

GENS_DIR = "gens"
RUN_JSON = "run.json"
METRICS_FILE = "metrics.parquet"
LOG_FILE = "log.txt"


# -- atomic writing -----------------------------------------------------------------------------


def _atomic(path: Path, write, atomic: bool = True, sync: bool = True) -> None:
    """Write through a temporary file renamed into place. ``atomic=False`` writes in place, for
    files inside a generation's temporary folder, whose own rename is the atomic step. Every file
    gets the same mode (0666 less the umask), and unless ``FSYNC`` (or ``sync=False`` under
    ``auto``) says not to, its data reaches the disk before the rename."""
    path = Path(path)
    if not atomic:
        write(str(path))
        os.chmod(path, _MODE)
        if _syncing(sync):
            _fsync_file(path)
        return
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _MODE)
        if _syncing(sync):
            _fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent, sync)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError) and not exc.filename:
            exc.filename = str(path)  # a library's error may not name the file
        raise


def _fsync_file(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | Path, sync: bool = True) -> None:
    """Make the entries of folder ``path`` (a rename into it) durable, as ``FSYNC`` says."""
    if not _syncing(sync):
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def copy_folder(src: Path, dst: Path, sync: bool = True) -> None:
    """Copy a generation folder's files (and any subfolders) into the new folder ``dst``.
    Unlike shutil.copytree, the first failure raises its own OSError (a full disk stays ENOSPC),
    and copies get the mode of files the harness writes."""
    dst.mkdir()
    for entry in sorted(src.iterdir()):
        if entry.is_dir():
            copy_folder(entry, dst / entry.name, sync)
            continue
        shutil.copyfile(entry, dst / entry.name)
        os.chmod(dst / entry.name, _MODE)
        if _syncing(sync):
            _fsync_file(dst / entry.name)


def remove_temporaries(folder: Path, prefix: str = ".") -> list[Path]:
    """Remove what killed writes left in ``folder`` (``.<name>.<...>.tmp`` files and folders
    whose name starts with ``prefix``); return them. Call it only while holding the lock that
    covers them, so that no write is in progress."""
    removed = []
    try:
        leftovers = sorted(folder.glob(f"{glob.escape(prefix)}*.tmp"))
    except OSError:
        return removed
    for p in leftovers:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            try:
                p.unlink()
            except FileNotFoundError:
                pass
        removed.append(p)
    return removed


def write_json(path: Path, data: Any, atomic: bool = True, sync: bool = True) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=True, default=str)
            fh.write("\n")

    _atomic(path, write, atomic, sync)


def write_text(path: Path, text: str, atomic: bool = True, sync: bool = False) -> None:
    """Write UTF-8 text atomically (the one atomic writer for reports, tables and pages; they
    are made again from the runs, so they are not flushed to the disk unless ``sync``)."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)

    _atomic(path, write, atomic, sync)


def write_bytes(path: Path, data: bytes, atomic: bool = True, sync: bool = False) -> None:
    """Write bytes atomically (pictures; not flushed to the disk unless ``sync``)."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    _atomic(path, write, atomic, sync)


def write_parquet(path: Path, table: pa.Table, atomic: bool = True, sync: bool = True, **options: Any) -> None:
    """``options``: pyarrow.parquet.write_table's (a chunk's samples: ``use_dictionary=False``,
    six times faster for floating-point columns, which dictionaries do not shrink)."""
    _atomic(path, lambda tmp: pq.write_table(table, tmp, **options), atomic, sync)


def write_state(path: Path, state: Mapping[str, np.ndarray], atomic: bool = True, sync: bool = True) -> None:
    from safetensors.numpy import save_file

    arrays = {k: np.ascontiguousarray(v) for k, v in state.items()}

    def write(tmp: str) -> None:
        try:
            save_file(arrays, tmp)
        except Exception as exc:  # SafetensorError hides the OSError (a full disk) in its text
            found = re.search(r"\(os error (\d+)\)", str(exc))
            if found is None:
                raise
            code = int(found.group(1))
            raise OSError(code, os.strerror(code), str(path)) from exc

    _atomic(path, write, atomic, sync)


def read_state(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    with open(path, "rb"):  # the file system's own error (a permission) rather than safetensors' text
        pass
    return load_file(str(path))


def read_json(path: Path) -> dict[str, Any]:
    with open(path) as fh:
        return json.load(fh)


# -- samples ------------------------------------------------------------------------------------


def samples_table(samples: Samples, scores: Mapping[str, np.ndarray]) -> pa.Table:
    """Samples as Parquet rows: ``index``, ``sample``, one float column per score, and the
    samples' extra columns as ``column.<name>`` (``column.text`` for generated text)."""
    data = samples.data
    n = len(samples)
    flat = data.reshape(n, -1) if data.ndim > 1 else data
    if data.ndim == 1:
        column = pa.array(flat)
    else:
        width = flat.shape[1]
        values = pa.array(flat.reshape(-1))
        column = pa.FixedSizeListArray.from_arrays(values, width)
    columns = {"index": pa.array(np.arange(n, dtype=np.int64)), "sample": column}
    for name, values in scores.items():
        columns[name] = pa.array(np.asarray(values, dtype=np.float64))
    for name, values in samples.columns.items():
        columns[f"column.{name}"] = pa.array(list(values))
    meta = {
        "collapse_bench.kind": samples.kind,
        "collapse_bench.shape": json.dumps(list(data.shape[1:])),
        "collapse_bench.dtype": str(data.dtype),
        "collapse_bench.schema_version": str(SCHEMA_VERSION),
    }
    # from_arrays, not pa.table(dict): that one imports pandas (0.8 s) to ask whether it got a DataFrame
    return pa.Table.from_arrays(list(columns.values()), names=list(columns)).replace_schema_metadata(meta)


def rows_of(table: pa.Table, generation: int | None) -> pa.Table:
    """The rows of generation ``generation`` of a chunk's table (one with a ``generation``
    column); any other table (or ``generation`` None) as it is."""
    if generation is None or "generation" not in table.column_names:
        return table
    import pyarrow.compute as pc

    return table.filter(pc.equal(table.column("generation"), generation))


_LAST_READ: dict[tuple, pa.Table] = {}
_LAST_READ_LOCK = threading.Lock()


def read_table(path: Path, generation: int | None = None) -> pa.Table:
    """A samples or metrics file as a table; with ``generation``, its rows of that generation
    (:func:`rows_of`). The four newest files read with ``generation`` are kept while they are
    unchanged on disk, so reading a chunk's generations one by one reads its files once."""
    if generation is None:
        return pq.read_table(path)
    st = os.stat(path)
    key = (str(path), st.st_mtime_ns, st.st_size, st.st_ino)
    table = _LAST_READ.get(key)
    if table is None:
        table = pq.read_table(path)
        with _LAST_READ_LOCK:  # chains of a group read in threads
            while len(_LAST_READ) >= 4:  # a chunk's samples and metrics, read in turn
                _LAST_READ.pop(next(iter(_LAST_READ)), None)
            _LAST_READ[key] = table
    return rows_of(table, generation)


def read_samples(path: Path, generation: int | None = None) -> tuple[Samples, dict[str, np.ndarray]]:
    """Samples and their score columns from a samples.parquet file; of a chunk's file (with a
    ``generation`` column), those drawn by M_``generation``."""
    table = read_table(path, generation)
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    kind = meta["collapse_bench.kind"]
    shape = json.loads(meta["collapse_bench.shape"])
    dtype = np.dtype(meta["collapse_bench.dtype"])
    column = table.column("sample").combine_chunks()
    n = table.num_rows
    if shape:
        values = column.flatten().to_numpy(zero_copy_only=False)
        data = values.astype(dtype, copy=False).reshape([n, *shape])
    else:
        data = column.to_numpy(zero_copy_only=False).astype(dtype, copy=False)
    extras = {name[len("column."):]: table.column(name).to_pylist()
              for name in table.column_names if name.startswith("column.")}
    scores = {
        name: table.column(name).to_numpy()
        for name in table.column_names
        if name not in ("index", "sample", "generation") and not name.startswith("column.")
    }
    return Samples(kind, data, extras), scores


def read_sample_row(path: Path, index: int, generation: int | None = None) -> dict[str, Any]:
    """One row of a samples.parquet file as a dict (reads the file's columns, then one row); of
    a chunk's file, of the samples drawn by M_``generation``."""
    table = read_table(path, generation)
    if "generation" in table.column_names:
        table = table.drop_columns(["generation"])
    if not 0 <= index < table.num_rows:
        raise BenchError(f"sample {index} does not exist: {path} holds samples 0..{table.num_rows - 1}")
    return table.slice(index, 1).to_pylist()[0]


# -- metrics ------------------------------------------------------------------------------------


def read_parquet_rows(path: Path) -> list[dict[str, Any]]:
    return pq.read_table(path).to_pylist()


def finished_generations(run_dir: Path) -> int:
    """How many generations are finished: the committed folders (one generation or a chunk)
    covering 0, 1, ... without a gap."""
    found = units(run_dir)
    return found[-1][1] + 1 if found else 0


def gen_name(k: int) -> str:
    return f"{k:06d}"


def chunk_name(first: int, last: int) -> str:
    """The folder name of the generations first..last committed together (one generation: gen_name)."""
    return gen_name(first) if first == last else f"{first:06d}-{last:06d}"


_UNIT = re.compile(r"(\d{6,})(?:-(\d{6,}))?")


def parse_unit(name: str) -> tuple[int, int] | None:
    """(first, last) generation of a committed folder's name, None for any other name."""
    m = _UNIT.fullmatch(name)
    if m is None:
        return None
    first = int(m.group(1))
    last = int(m.group(2)) if m.group(2) else first
    return (first, last) if last >= first else None


def all_units(run_dir: Path) -> list[tuple[int, int, Path]]:
    """Every committed folder of gens/ as (first, last, path), by first generation (gaps and
    overlaps included: validate reports them)."""
    gens = Path(run_dir) / GENS_DIR
    try:
        entries = list(os.scandir(gens))
    except OSError:
        return []
    found = []
    for e in entries:
        span = parse_unit(e.name)
        if span is not None and e.is_dir():
            found.append((span[0], span[1], Path(e.path)))
    return sorted(found, key=lambda u: (u[0], u[1]))


def units(run_dir: Path) -> list[tuple[int, int, Path]]:
    """The committed folders that hold generations 0, 1, ... without a gap, as (first, last, path)."""
    out: list[tuple[int, int, Path]] = []
    for first, last, path in all_units(run_dir):
        if first == (out[-1][1] + 1 if out else 0):
            out.append((first, last, path))
    return out


def unit_of(run_dir: Path, k: int) -> tuple[int, int, Path] | None:
    """The committed folder holding generation k (first, last, path), or None. A folder of its
    own is found without listing gens/ (readers ask for every generation of a run in turn)."""
    own = Path(run_dir) / GENS_DIR / gen_name(k)
    if own.is_dir():
        return k, k, own
    for first, last, path in units(run_dir):
        if first <= k <= last:
            return first, last, path
    return None


# The run folder's contract (metric rows, the schema check, the scan for runs) lives in
# bench.runfolder, which builds on this module; its names are still found here.
_MOVED = ("gen_metrics_table", "stamp", "validate_metrics", "read_metrics", "consolidate", "find_runs")


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        from bench import runfolder

        return getattr(runfolder, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
