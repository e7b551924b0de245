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
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pyarrow.parquet as pq

from bench import results as R

STATUSES = ("running", "interrupted", "failed", "complete")
RUN_KEYS: dict[str, tuple[type, ...]] = {
    "schema_version": (int,),
    "run_id": (str,),
    "gen0_id": (str,),
    "spec": (dict,),
    "identity": (dict,),
    "provenance": (dict,),
    "status": (str,),
    "generations_requested": (int,),
    "generations_done": (int,),
    "error": (str, type(None)),
    "real_data_fingerprint": (str, type(None)),
    "data_provenance": (dict,),
    "track": (dict,),
    "leaderboard_metrics": (list,),
}
OPTIONAL_KEYS: dict[str, tuple[type, ...]] = {"created": (str,), "updated": (str,)}
SPEC_KEYS: dict[str, tuple[type, ...]] = {
    "plugin": (str,), "preset": (str,), "params": (dict,), "trainer": (str,), "generator": (str,),
    "scorer": (str,), "metrics": (list,), "policy": (str,), "policy_params": (dict,), "start": (str,),
    "seed": (int,), "generations": (int,),
}
IDENTITY_KEYS: dict[str, tuple[type, ...]] = {
    "run_id": (str,), "plugin": (str,), "plugin_version": (str,), "preset": (str,), "policy": (str,), "seed": (int,),
}
TRACK_KEYS: dict[str, tuple[type, ...]] = {
    "name": (str,), "id": (str,), "plugin": (str,), "preset": (str,), "generations": (int,),
    "real_data": (str, type(None)),
}
RUN_FILES = {R.RUN_JSON, R.METRICS_FILE, R.LOG_FILE, ".lock", R.GENS_DIR, "grids"}  # grids: sample pictures (vae)
GEN_FILES = {R.METRICS_FILE, "samples.parquet", "state.safetensors", "info.json"}
SAMPLE_COLUMNS = ("index", "sample", "loglik_reference", "loglik_model", "units")
_GEN_DIR = re.compile(r"\d{6}")
_TMP = re.compile(r"\..*\.tmp")


@dataclass
class Report:
    """How many run folders were checked, and every problem found."""

    runs: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.ok:
            return f"{self.runs} run folder(s) checked: no problems"
        return f"{self.runs} run folder(s) checked: {len(self.problems)} problem(s)"


def validate(paths: Iterable[str | Path]) -> list[str]:
    """Every problem with the run folders at or below ``paths`` (empty: all valid)."""
    return check(paths).problems


def check(paths: Iterable[str | Path]) -> Report:
    """Like :func:`validate`, with the number of run folders checked."""
    from bench.leaderboard import runs_below

    report = Report()
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
        runs = runs_below(p)
        if not runs:
            report.problems.append(f"{p}: no run folder (holding run.json) at or below it")
        for run in runs:
            report.runs += 1
            problems, key = check_run(run)
            report.problems.extend(problems)
            if key is not None:
                if key in seen and seen[key] != run:
                    report.problems.append(f"{run / R.RUN_JSON}: the same run (id {key[0]}, {key[1]} generations) "
                                           f"as {seen[key]}")
                seen.setdefault(key, run)
    return report


def _type_problems(where: str, data: dict, keys: dict[str, tuple[type, ...]], required: bool = True) -> list[str]:
    out = []
    for key, types in keys.items():
        if key not in data:
            if required:
                out.append(f"{where}: missing key {key}")
            continue
        value = data[key]
        wrong = not isinstance(value, types) or (isinstance(value, bool) and bool not in types)
        if wrong:
            names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            out.append(f"{where}: {key} should be {names}, not {type(value).__name__}")
    return out


def check_run_json(path: Path) -> tuple[list[str], dict[str, Any] | None, bool]:
    """Problems with a run.json, its content when it is a JSON object, and whether its keys and
    types are right (so that the rest of the run can be checked against it)."""
    from bench.spec import Spec, _digest

    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as exc:
        return [f"{path}: unreadable ({_why(exc)})"], None, False
    if not isinstance(data, dict):
        return [f"{path}: not a JSON object"], None, False
    problems = _type_problems(str(path), data, RUN_KEYS) + _type_problems(str(path), data, OPTIONAL_KEYS, False)
    if "track" not in data or "leaderboard_metrics" not in data:
        problems.append(f"{path}: written by an older collapse-bench (no track); `bench run` with the same spec "
                        "and --out rewrites run.json")
    spec, identity, track = (data.get(k) if isinstance(data.get(k), dict) else None
                             for k in ("spec", "identity", "track"))
    if spec is not None:
        problems += _type_problems(f"{path}: spec", spec, SPEC_KEYS)
    if identity is not None:
        problems += _type_problems(f"{path}: identity", identity, IDENTITY_KEYS)
    if track is not None:
        problems += _type_problems(f"{path}: track", track, TRACK_KEYS)
    main = data.get("leaderboard_metrics")
    if isinstance(main, list) and not all(isinstance(m, str) for m in main):
        problems.append(f"{path}: leaderboard_metrics should be a list of metric names")
    if problems:
        return problems, data, False
    # The values agree with each other.
    if data["schema_version"] != R.SCHEMA_VERSION:
        problems.append(f"{path}: schema_version {data['schema_version']} (this reader knows {R.SCHEMA_VERSION})")
    if data["status"] not in STATUSES:
        problems.append(f"{path}: status {data['status']!r} is not one of {', '.join(STATUSES)}")
    n, done = data["generations_requested"], data["generations_done"]
    if n < 0 or not 0 <= done <= n + 1:
        problems.append(f"{path}: generations_done {done} is not within 0..{n + 1} (generations_requested {n})")
    if data["status"] == "complete" and done != n + 1:
        problems.append(f"{path}: status complete but {done} of the {n + 1} generations done")
    if data["status"] == "failed" and not data["error"]:
        problems.append(f"{path}: status failed without an error")
    if not all(isinstance(m, str) for m in spec["metrics"]):
        problems.append(f"{path}: spec.metrics should be a list of metric names")
    if spec["generations"] != n:
        problems.append(f"{path}: spec.generations {spec['generations']} differs from generations_requested {n}")
    try:
        s = Spec.from_dict(spec)
        if data["run_id"] != s.run_id:
            problems.append(f"{path}: run_id {data['run_id']} is not the hash of the spec ({s.run_id}): the spec "
                            "was edited")
        if data["gen0_id"] != s.gen0_id:
            problems.append(f"{path}: gen0_id {data['gen0_id']} is not the hash of the spec ({s.gen0_id})")
        expected_identity = {"run_id": s.run_id, "plugin": s.plugin, "preset": s.preset, "policy": s.policy_label,
                             "seed": s.seed}
    except Exception as exc:  # a spec the harness could not have written
        problems.append(f"{path}: spec cannot be read ({type(exc).__name__}: {exc})")
        expected_identity = {}
    for key, value in expected_identity.items():
        if identity[key] != value:
            problems.append(f"{path}: identity.{key} is {identity[key]!r}, the spec says {value!r}")
    # track.real_data names the data source (seed-independent); the id hashes it with the rest.
    key = {"plugin": spec["plugin"], "preset": spec["preset"], "generations": n, "real_data": track["real_data"]}
    for k, v in {"name": f"{spec['plugin']}/{spec['preset']}", **key, "id": _digest(key)[:12]}.items():
        if track[k] != v:
            problems.append(f"{path}: track.{k} is {track[k]!r}, the spec gives {v!r}")
    return problems, data, True


def check_run(run: Path) -> tuple[list[str], tuple[str, int] | None]:
    """Problems with one run folder, and its (run id, generations requested) when run.json is
    usable (two folders holding the same run are a problem)."""
    run = Path(run)
    problems, data, usable = check_run_json(run / R.RUN_JSON)
    problems += _unexpected(run, RUN_FILES, "run folder")
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
    return problems, key


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
            out.append(f"{folder / name}: leftover temporary file of a killed write (`bench run` again removes it)")
        elif not (folder.name == R.GENS_DIR and _GEN_DIR.fullmatch(name)):
            out.append(f"{folder / name}: unexpected in a {what}")
    return out


def _check_gens(run: Path, problems: list[str], tables: dict[int, Any]) -> int:
    """Check the generation folders; return how many finished ones there are (0..k-1, no gap).
    ``tables`` receives each readable generation metrics table."""
    gens = run / R.GENS_DIR
    if not gens.exists():
        return 0
    if not gens.is_dir():
        problems.append(f"{gens}: not a folder")
        return 0
    problems += _unexpected(gens, set(), "generations folder")
    numbered = sorted(int(p.name) for p in gens.iterdir() if _GEN_DIR.fullmatch(p.name))
    done = R.finished_generations(run)
    for k in numbered:
        if k >= done:
            problems.append(f"{gens / R.gen_name(k)}: generation {k} without generation {done} before it")
    for k in range(done):
        gdir = gens / R.gen_name(k)
        if not gdir.is_dir():
            problems.append(f"{gdir}: not a folder")
            continue
        problems += _unexpected(gdir, GEN_FILES, "generation folder")
        table = _check_gen_metrics(gdir / R.METRICS_FILE, k, problems)
        if table is not None:
            tables[k] = table
        samples = gdir / "samples.parquet"
        try:
            _, scores = R.read_samples(samples)
            missing = [c for c in SAMPLE_COLUMNS[2:] if c not in scores]
            if missing:
                problems.append(f"{samples}: missing columns {', '.join(missing)}")
        except Exception as exc:  # a missing file, not Parquet, or without the metadata
            problems.append(f"{samples}: unreadable samples ({_why(exc)})")
        info = gdir / "info.json"
        try:
            if not isinstance(json.loads(info.read_bytes()), dict):
                problems.append(f"{info}: not a JSON object")
        except (OSError, ValueError) as exc:
            problems.append(f"{info}: unreadable ({_why(exc)})")
        state = gdir / "state.safetensors"
        if state.exists():
            _check_safetensors(state, problems)
        elif k == 0 or k == done - 1:
            problems.append(f"{state}: missing (the state of generation 0 and of the newest are always kept)")
    return done


def _why(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "missing"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _check_safetensors(path: Path, problems: list[str]) -> None:
    """The header of a safetensors file parses (the tensors are not read)."""
    try:
        with open(path, "rb") as fh:
            size = path.stat().st_size
            (n,) = struct.unpack("<Q", fh.read(8))
            if n > size - 8:
                raise ValueError("header longer than the file")
            header = json.loads(fh.read(n))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
    except (OSError, ValueError, struct.error) as exc:
        problems.append(f"{path}: not a safetensors file ({_why(exc)})")


def _read_parquet(path: Path):
    return pq.ParquetFile(path).read()


def _check_gen_metrics(path: Path, k: int, problems: list[str]):
    """Problems with one generation's metrics; the table when it has the right columns."""
    try:
        table = _read_parquet(path)
    except Exception as exc:  # missing, or not Parquet
        problems.append(f"{path}: unreadable metrics ({_why(exc)})")
        return None
    before = len(problems)
    for f in R.GEN_METRICS_SCHEMA:
        if f.name not in table.column_names:
            problems.append(f"{path}: missing column {f.name}")
        elif table.schema.field(f.name).type != f.type:
            problems.append(f"{path}: column {f.name} has type {table.schema.field(f.name).type}, expected {f.type}")
    if "generation" in table.column_names and set(table.column("generation").to_pylist()) - {k}:
        problems.append(f"{path}: rows of other generations than {k}")
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
    found = R.validate_metrics(table, str(path))
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
