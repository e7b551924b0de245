"""Check run folders against the results schema (docs/results.md), for anyone accepting results.

``validate(paths)`` lists every problem, each naming its file; an empty list means the folders hold
only well-formed runs. It checks run.json (keys, types, and that the ids, identity and track agree
with the spec), the generation folders (one per finished generation, each with readable metrics,
samples and info, states where the harness always keeps them), the consolidated metrics.parquet
(schema, identity columns, and the same rows as the generation folders), and that nothing else is
there. A path holding no run at all is a problem too.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pyarrow.parquet as pq

from bench import results as R
from bench import runfolder as RF

# The run.json schema and the entries of a run folder are bench.runfolder's; these names stay here.
STATUSES = RF.STATUSES
RUN_KEYS, OPTIONAL_KEYS, SPEC_KEYS = RF.RUN_KEYS, RF.OPTIONAL_RUN_KEYS, RF.SPEC_KEYS
IDENTITY_KEYS, TRACK_KEYS = RF.IDENTITY_KEYS, RF.TRACK_TYPES
RUN_FILES = set(RF.RUN_ENTRIES)  # a model plugin adds its own entries (ModelBundle.files)
GEN_FILES = set(RF.GEN_ENTRIES)
SAMPLE_COLUMNS = RF.SAMPLE_COLUMNS
_TMP = re.compile(r"\..*\.tmp")
_NONFINITE_WHAT = {
    "failed": "the run stopped there; fix the component and run again, or go on with --on-nonfinite record",
    "": "the run went on (on_nonfinite record): that generation and the later ones hold results of NaN or inf",
}


@dataclass
class Report:
    """How many run folders were checked, every problem found, and notes on what could not be
    checked (entries of a model plugin that is not installed)."""

    runs: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.ok:
            line = f"{self.runs} run folder(s) checked: no problems"
        else:
            line = f"{self.runs} run folder(s) checked: {len(self.problems)} problem(s)"
        return "\n".join([line] + [f"not checked: {note}" for note in self.notes])


class PluginFiles:
    """The extra run-folder entries each model plugin declares (``ModelBundle.files``), from the
    installed plugins, loaded the first time a run folder holds an entry the harness does not
    write (once per check)."""

    def __init__(self, bench: Any = None) -> None:
        self._bench = bench
        self._loaded = bench is not None
        self.error: str | None = None

    def declared(self, plugin: str) -> set[str] | None:
        """The entries model ``plugin`` declares; None when no installed plugin registers it."""
        if not self._loaded:
            self._loaded = True
            from bench.errors import BenchError
            from bench.plugins import Bench

            try:
                self._bench = Bench()
            except BenchError as exc:  # plugins that clash: nothing is known
                self.error = str(exc).splitlines()[0]
        if self._bench is None or plugin not in self._bench.models:
            return None
        return set(self._bench.models.get(plugin).files)


def validate(paths: Iterable[str | Path], bench: Any = None) -> list[str]:
    """Every problem with the run folders at or below ``paths`` (empty: all valid)."""
    return check(paths, bench).problems


def check(paths: Iterable[str | Path], bench: Any = None) -> Report:
    """Like :func:`validate`, with the number of run folders checked and notes on what could not
    be checked. ``bench`` (a :class:`bench.plugins.Bench`) says which entries each model plugin
    declares; by default the installed plugins, loaded only when a folder holds such an entry.
    Entries of a model whose plugin is not installed are not failed: the notes name them."""
    report = Report()
    plugin_files = PluginFiles(bench)
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    if not paths:
        report.problems.append("no folder given: name the run folders or the folder holding them")
    seen: dict[tuple[str, int], Path] = {}
    for p in paths:
        if p.name == R.RUN_JSON and p.is_file():
            p = p.parent
        if not p.exists():
            report.problems.append(f"{p}: does not exist")
            continue
        if not p.is_dir():
            report.problems.append(f"{p}: not a folder (give run folders or the folder holding them)")
            continue
        runs = RF.runs_below(p)
        if not runs:
            report.problems.append(f"{p}: no run folder (holding run.json) at or below it")
        report.problems += _gen0_leftovers(p)
        for run in runs:
            report.runs += 1
            holder = RF.locked_by(run)
            if holder is not None:  # its files change as we read them; its temp files are in progress
                report.problems.append(f"{run}: a run in progress ({holder} holds it); check it once that "
                                       "process has finished")
                continue
            try:
                problems, key = check_run(run, plugin_files=plugin_files, notes=report.notes)
            except OSError as exc:  # a folder that cannot be read (permissions)
                problems, key = [f"{exc.filename or run}: unreadable ({exc.strerror or exc})"], None
            report.problems.extend(problems)
            if key is not None:
                if key in seen and seen[key] != run:
                    report.problems.append(f"{run / R.RUN_JSON}: the same run (id {key[0]}, {key[1]} generations) "
                                           f"as {seen[key]}")
                seen.setdefault(key, run)
    return report


def _gen0_leftovers(top: Path) -> list[str]:
    """Temporary folders a killed build of a shared generation 0 left in ``top/.gen0`` (those of
    a build in progress, whose lock is held, are not)."""
    cache = top / ".gen0"
    try:
        names = sorted(p.name for p in cache.iterdir() if _TMP.fullmatch(p.name))
    except OSError:
        return []
    out = []
    for name in names:
        key = name[1:].split(".")[0]
        if key != R.gen_name(0) and RF.locked_by_file(cache / f"{key}.lock") is not None:
            continue  # being built now
        out.append(f"{cache / name}: leftover of a killed build of generation 0 (`bench run` of a run "
                   "sharing that generation 0 removes it; deleting it is safe)")
    return out


def check_run_json(path: Path) -> tuple[list[str], dict[str, Any] | None, bool]:
    """Problems with a run.json, its content when it is a JSON object, and whether its keys and
    types are right (so that the rest of the run can be checked against it)."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as exc:
        return [f"{path}: unreadable ({_why(exc)})"], None, False
    if not isinstance(data, dict):
        return [f"{path}: not a JSON object"], None, False
    problems, usable = RF.run_json_problems(data, str(path))
    return problems, data, usable


def check_run(run: Path, plugin_files: PluginFiles | None = None,
              notes: list[str] | None = None) -> tuple[list[str], tuple[str, int] | None]:
    """Problems with one run folder, and its (run id, generations requested) when run.json is
    usable (two folders holding the same run are a problem). Entries that only the run's model
    plugin can vouch for are checked against ``plugin_files``; where that plugin is not
    installed they are named in ``notes`` instead."""
    run = Path(run)
    problems, data, usable = check_run_json(run / R.RUN_JSON)
    problems += _unexpected(run, RUN_FILES | _plugin_entries(run, data, plugin_files or PluginFiles(), notes),
                            "run folder")
    gen_tables: dict[int, Any] = {}
    done_on_disk = _check_gens(run, problems, gen_tables)
    if not usable:
        return problems, None
    key = (data["run_id"], data["generations_requested"])
    done = data["generations_done"]
    if done_on_disk != done:
        problems.append(f"{run / R.GENS_DIR}: {done_on_disk} finished generation folder(s), run.json says "
                        f"generations_done {done}")
    _check_metrics(run, data, min(done, done_on_disk), problems, gen_tables)
    found = RF.nonfinite_found(data.get("nonfinite"))
    if found:  # the loop's marker (on_nonfinite): the results from that generation on mean nothing
        problems.append(f"{run / R.RUN_JSON}: {found} ({_NONFINITE_WHAT.get(data['status'], _NONFINITE_WHAT[''])})")
    return problems, key


def _plugin_entries(run: Path, data: Any, plugin_files: PluginFiles, notes: list[str] | None) -> set[str]:
    """The entries of ``run`` that its model plugin may write: those it declares, or, where the
    plugin is unknown, every entry the harness does not write (named in ``notes``)."""
    try:
        extra = sorted(p.name for p in run.iterdir() if p.name not in RUN_FILES and not _TMP.fullmatch(p.name))
    except OSError:
        return set()
    if not extra:
        return set()
    spec = data.get("spec") if isinstance(data, dict) else None
    plugin = spec.get("plugin") if isinstance(spec, dict) else None
    declared = plugin_files.declared(plugin) if isinstance(plugin, str) else None
    if declared is not None:
        return declared
    why = (f"model plugin {plugin!r} is not installed" if isinstance(plugin, str)
           else "run.json does not name the model plugin")
    if plugin_files.error:
        why += f" (the plugins could not be loaded: {plugin_files.error})"
    if notes is not None:
        notes.append(f"{run}: {', '.join(extra)}: {why}, so the entries it writes are unknown")
    return set(extra)


def _unexpected(folder: Path, allowed: set[str], what: str) -> list[str]:
    out = []
    try:
        names = sorted(p.name for p in folder.iterdir())
    except OSError as exc:
        return [f"{folder}: unreadable ({exc.strerror or exc})"]
    for name in names:
        if name in allowed:
            continue
        if _TMP.fullmatch(name):
            out.append(f"{folder / name}: leftover temporary file of a killed write (`bench run` of the same "
                       "spec and --out removes it)")
        elif not (folder.name == R.GENS_DIR and R.parse_unit(name) is not None):
            out.append(f"{folder / name}: unexpected in a {what}")
    return out


def _check_gens(run: Path, problems: list[str], tables: dict[int, Any]) -> int:
    """Check the generation folders (one generation each, or a chunk of several); return how many
    finished generations there are (0..k-1, no gap). ``tables`` receives each readable
    generation's metrics table."""
    import pyarrow.compute as pc

    gens = run / R.GENS_DIR
    if not gens.exists():
        return 0
    if not gens.is_dir():
        problems.append(f"{gens}: not a folder")
        return 0
    problems += _unexpected(gens, set(), "generations folder")
    found = R.units(run)
    done = found[-1][1] + 1 if found else 0
    for first, last, path in R.all_units(run):
        if (first, last, path) in found:
            continue
        what = f"generation {first}" if first == last else f"generations {first}..{last}"
        if first >= done:
            problems.append(f"{path}: {what} without generation {done} before "
                            + ("it" if first == last else "them"))
        else:
            problems.append(f"{path}: {what} overlap the folders of generations 0..{done - 1}")
    for first, last, gdir in found:
        chunk = first != last
        problems += _unexpected(gdir, GEN_FILES, "generation folder")
        table = _check_gen_metrics(gdir / R.METRICS_FILE, range(first, last + 1), problems)
        if table is not None:
            for k in range(first, last + 1):
                tables[k] = table.filter(pc.equal(table.column("generation"), k)) if chunk else table
        samples = gdir / "samples.parquet"
        try:
            _, scores = R.read_samples(samples)
            missing = [c for c in SAMPLE_COLUMNS[2:] if c not in scores]
            if missing:
                problems.append(f"{samples}: missing columns {', '.join(missing)}")
            if chunk:
                held = set(pq.read_table(samples, columns=["generation"]).column("generation").to_pylist())
                if held != set(range(first, last + 1)):
                    problems.append(f"{samples}: holds samples of generations {sorted(held)[:5]}..., "
                                    f"the chunk's name says {first}..{last}")
        except Exception as exc:  # a missing file, not Parquet, or without the metadata
            problems.append(f"{samples}: unreadable samples ({_why(exc)})")
        info = gdir / "info.json"
        try:
            data = json.loads(info.read_bytes())
            if not isinstance(data, dict):
                problems.append(f"{info}: not a JSON object")
            elif chunk and not (isinstance(data.get("generations"), list)
                                and len(data["generations"]) == last - first + 1):
                problems.append(f"{info}: the chunk's info.json lists no record per generation {first}..{last}")
        except (OSError, ValueError) as exc:
            problems.append(f"{info}: unreadable ({_why(exc)})")
        state = gdir / "state.safetensors"
        if state.exists():
            _check_safetensors(state, problems)
        elif first == 0 or last == done - 1:
            problems.append(f"{state}: missing (the state of generation 0 and of the newest are always kept)")
        if (gdir / RF.STATES_FILE).exists():
            _check_safetensors(gdir / RF.STATES_FILE, problems)
    return done


def _why(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "missing"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
                "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def _check_safetensors(path: Path, problems: list[str]) -> None:
    """The header of a safetensors file parses, and its tensors' byte ranges (``data_offsets``,
    each as long as dtype and shape say) tile the data after it exactly: a file cut short or
    grown is found without reading the tensors."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            (n,) = struct.unpack("<Q", fh.read(8))
            if n > size - 8:
                raise ValueError("header longer than the file")
            header = json.loads(fh.read(n))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        _check_tensor_offsets(header, size - 8 - n)
    except (OSError, ValueError, struct.error) as exc:
        problems.append(f"{path}: not a safetensors file ({_why(exc)})")


def _check_tensor_offsets(header: dict[str, Any], data_bytes: int) -> None:
    """ValueError unless the header's tensors cover bytes 0..data_bytes of the data one after the
    other, each ``begin, end`` pair as long as its shape and dtype need."""
    ranges = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, end = entry["data_offsets"]
            shape, width = entry["shape"], _DTYPE_BYTES[entry["dtype"]]
            if not all(isinstance(x, int) and x >= 0 for x in (begin, end, *shape)):
                raise TypeError
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"tensor {name!r}: no dtype, shape and data_offsets the format knows") from None
        need = width * math.prod(shape)
        if end - begin != need:
            raise ValueError(f"tensor {name!r}: data_offsets {begin}..{end} hold {end - begin} bytes, its dtype "
                             f"and shape need {need}")
        ranges.append((begin, end))
    covered = 0
    for begin, end in sorted(ranges):
        if begin != covered:
            raise ValueError(f"tensor data has a gap or an overlap at byte {covered}")
        covered = end
    if covered != data_bytes:
        raise ValueError(f"the header's tensors need {covered} bytes of data, the file holds {data_bytes} "
                         f"({'cut short' if data_bytes < covered else 'bytes left over'})")


def _read_parquet(path: Path):
    return pq.ParquetFile(path).read()


def _check_gen_metrics(path: Path, gens: range, problems: list[str]):
    """Problems with one generation folder's (or chunk's) metrics; the table when it has the
    right columns."""
    try:
        table = _read_parquet(path)
    except Exception as exc:  # missing, or not Parquet
        problems.append(f"{path}: unreadable metrics ({_why(exc)})")
        return None
    before = len(problems)
    problems += [f"{path}: {p}" for p in RF.check_metrics_schema(table.schema, R.GEN_METRICS_SCHEMA)]
    if "generation" in table.column_names and set(table.column("generation").to_pylist()) - set(gens):
        what = f"{gens.start}" if len(gens) == 1 else f"{gens.start}..{gens[-1]}"
        problems.append(f"{path}: rows of other generations than {what}")
    return table.select(R.GEN_METRICS_SCHEMA.names) if len(problems) == before else None


def _check_metrics(run: Path, data: dict[str, Any], done: int, problems: list[str],
                   gen_tables: dict[int, Any]) -> None:
    """The consolidated metrics: schema, identity columns, and the generation folders' rows."""
    import pyarrow as pa

    path = run / R.METRICS_FILE
    if not path.exists():
        if done:
            problems.append(f"{path}: missing (`bench run` with the same spec and --out writes it)")
        return
    try:
        table = _read_parquet(path)
    except Exception as exc:  # not Parquet
        problems.append(f"{path}: unreadable metrics ({_why(exc)})")
        return
    found = RF.validate_metrics(table, str(path))
    if found:
        problems.extend(found)
        return
    identity = data["identity"]
    for name in ("run_id", "plugin", "plugin_version", "preset", "policy", "seed"):
        values = set(table.column(name).to_pylist())
        if values - {identity.get(name)}:
            problems.append(f"{path}: column {name} holds {sorted(map(str, values))}, "
                            f"run.json says {identity.get(name)!r}")
    gens = sorted(set(table.column("generation").to_pylist()))
    covered = len(gens)
    if gens != list(range(covered)):
        problems.append(f"{path}: generations {gens} are not 0..k")
        return
    if data["status"] == "complete" and covered != done:
        problems.append(f"{path}: rows for {covered} generations, {done} are finished")
        return
    if covered > done:
        problems.append(f"{path}: rows for {covered} generations, only {done} generation folders")
        return
    if any(k not in gen_tables for k in range(covered)):
        return  # already reported for the generation folder
    parts = [gen_tables[k] for k in range(covered)]
    names = R.GEN_METRICS_SCHEMA.names
    ours = _sorted_frame(table.select(names))
    theirs = _sorted_frame(pa.concat_tables(parts) if parts else R.GEN_METRICS_SCHEMA.empty_table())
    if not ours.equals(theirs):
        problems.append(f"{path}: rows differ from those of the generation folders {R.GENS_DIR}/000000.."
                        f"{R.gen_name(covered - 1)}")


def _sorted_frame(table):
    df = table.to_pandas()
    return df.sort_values(["generation", "metric"], kind="mergesort").reset_index(drop=True)
