"""The run folder's on-disk contract, in one place (docs/results.md describes it).

This module owns what a run folder holds and how it is read and written:

- the entries of a run folder and of a generation folder (:data:`RUN_ENTRIES`, :data:`GEN_ENTRIES`;
  a model plugin declares its own extra entries in ``ModelBundle.files``);
- run.json as :class:`RunJson`: ``from_dict`` checks what every reader needs, ``to_dict`` gives
  back the same JSON, :func:`run_json_problems` is the full check behind ``bench validate``;
- the track id (:func:`make_track`): one formula for the loop, leaderboards, plots and validate;
- the scan for run folders (:func:`runs_below`, :func:`find_runs`, :func:`find_run_dirs`);
- the metric rows: :func:`gen_metrics_table` builds a generation's table, :func:`stamp` adds the
  run's identity columns, :func:`consolidate` joins the generations, :func:`read_metrics` reads
  them back; :func:`check_metrics_schema` is the one schema check, :func:`validate_metrics` the
  full check of a table.

The loop writes through it, and ``bench runs``, ``bench show``, ``bench validate``, plots, reports
and leaderboards read through it. File formats and atomic writing stay in :mod:`bench.results`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from bench import results as R
from bench.components import COLLAPSE_MODES
from bench.errors import BenchError
from bench.grouping import entry_key, entry_spec, join_tracks
from bench.types import Spec, digest

# -- what a run folder holds ----------------------------------------------------------------------

LOCK_FILE = ".lock"
SAMPLES_FILE = "samples.parquet"
STATE_FILE = "state.safetensors"
STATES_FILE = "states.safetensors"  # a chunk's kept states of the generations before its last
INFO_FILE = "info.json"
# What the harness writes in every run folder; a model plugin adds its own (ModelBundle.files).
RUN_ENTRIES = frozenset({R.RUN_JSON, R.METRICS_FILE, R.LOG_FILE, LOCK_FILE, R.GENS_DIR})
GEN_ENTRIES = frozenset({R.METRICS_FILE, SAMPLES_FILE, STATE_FILE, INFO_FILE, STATES_FILE})
SAMPLE_COLUMNS = ("index", "sample", "loglik_reference", "loglik_model", "units")

STATUSES = ("running", "interrupted", "failed", "complete")


# -- the track id -------------------------------------------------------------------------------

TRACK_KEYS = ("name", "id", "plugin", "preset", "generations", "real_data")


def make_track(plugin: str, preset: str, generations: Any, real_data: Any) -> dict[str, Any]:
    """A run's track, the fixed protocol it is ranked in: ``name`` plugin/preset, ``id`` the first
    12 hex digits of the digest of plugin, preset, generations requested and the real-data source
    (seed-independent where the plugin gives one), and those four values."""
    key = {"plugin": plugin, "preset": preset, "generations": generations, "real_data": real_data}
    return {"name": f"{plugin}/{preset}", "id": digest(key)[:12], **key}


def spec_track(spec: Mapping[str, Any], generations: Any, real_data: Any) -> dict[str, Any]:
    """:func:`make_track` from a spec dict (a run.json's ``spec``)."""
    return make_track(spec["plugin"], spec["preset"], generations, real_data)


def track_of(info: Mapping[str, Any] | "RunJson") -> tuple[str, str]:
    """(track id, track name) of a run.json's content: its ``track`` where that has an id and a
    name, else derived as the harness derives it (older files have no ``track``)."""
    data = info.to_dict() if isinstance(info, RunJson) else info
    track = data.get("track")
    if isinstance(track, dict) and track.get("id") and track.get("name"):
        return str(track["id"]), str(track["name"])
    spec = data["spec"]
    derived = spec_track(spec, data.get("generations_requested", spec.get("generations")),
                         data.get("real_data_fingerprint"))
    return derived["id"], derived["name"]


# -- run.json -----------------------------------------------------------------------------------


class RunJsonError(BenchError):
    """A run.json that cannot be used: ``reason`` says why, ``path`` names the file when known."""

    def __init__(self, reason: str, path: Path | None = None) -> None:
        super().__init__(f"{path}: {reason}" if path is not None else reason)
        self.reason = reason
        self.path = path


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# Keys every reader needs (RunJson.from_dict refuses a file without them); the others may be
# missing from older or hand-made files, and are written back only when the file had them.
REQUIRED_KEYS = ("run_id", "spec", "status", "generations_requested", "generations_done")
OPTIONAL_KEYS = ("schema_version", "gen0_id", "identity", "provenance", "created", "updated", "error",
                 "real_data_fingerprint", "data_provenance", "track", "leaderboard_metrics", "headline")
# Keys written only when they hold something: ``nonfinite``, the first generation whose state,
# samples or scores held NaN or inf (``{"generation", "found", "on_nonfinite"}``).
SET_ONLY_KEYS = ("nonfinite",)
_ABSENT = object()


def _read_types(data: dict, spec: dict) -> list[tuple[str, Any, tuple[type, ...]]]:
    """(where, value or _ABSENT, allowed types) of the values readers use as mappings, lists or
    numbers, where a file has them: the spec's parameters and metric list, the identity."""
    none = type(None)
    return [("spec.params", spec.get("params", _ABSENT), (dict,)),
            ("spec.policy_params", spec.get("policy_params", _ABSENT), (dict, none)),
            ("spec.metrics", spec.get("metrics", _ABSENT), (list,)),
            ("spec.generations", spec.get("generations", _ABSENT), (int,)),
            *((f"spec.{k}", spec.get(k, _ABSENT), (str,)) for k in ("trainer", "generator", "scorer", "policy",
                                                                    "start")),
            *((k, data.get(k, _ABSENT), (dict,)) for k in ("identity", "provenance", "data_provenance"))]


@dataclass
class RunJson:
    """The content of run.json (docs/results.md lists the keys).

    :meth:`from_dict` checks what readers rely on (a spec with plugin, preset and seed; run id,
    status and generation counts; a well-formed ``track`` and ``leaderboard_metrics`` where
    given; the spec's parameters, policy parameters and metrics, the identity and provenance of
    the right type where given) and keeps every other value as found, so :meth:`to_dict` gives
    back the same JSON:
    keys the file lacked (``absent``) stay out, keys this module does not know stay in ``extra``
    (``rescored``, written by ``bench rescore``). :func:`run_json_problems` checks everything.
    """

    run_id: str
    spec: dict[str, Any]
    status: str
    generations_requested: int
    generations_done: int
    schema_version: int = R.RUN_SCHEMA_VERSION
    gen0_id: str | None = None
    identity: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    created: str | None = None
    updated: str | None = None
    error: str | None = None
    real_data_fingerprint: str | None = None
    data_provenance: dict[str, Any] = field(default_factory=dict)
    track: dict[str, Any] | None = None
    leaderboard_metrics: list[str] = field(default_factory=list)
    headline: dict[str, Any] | None = None
    nonfinite: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    absent: frozenset[str] = frozenset()
    path: Path | None = field(default=None, compare=False, repr=False)  # the file it was read from

    @classmethod
    def from_dict(cls, data: Any, path: Path | None = None) -> "RunJson":
        """Read run.json's content; RunJsonError (naming the field) when a reader could not use it."""

        def fail(reason: str):
            raise RunJsonError(reason, path)

        if not isinstance(data, dict):
            fail("not a collapse-bench run.json (not a JSON object)")
        spec = data.get("spec")
        if not isinstance(spec, dict) or not all(isinstance(spec.get(k), str) for k in ("plugin", "preset")):
            fail("not a collapse-bench run.json (no spec with plugin and preset)")
        bad = [k for k, ok in (("spec.seed", _is_int(spec.get("seed"))),
                               ("run_id", isinstance(data.get("run_id"), str)),
                               ("status", isinstance(data.get("status"), str)),
                               ("generations_requested", _is_int(data.get("generations_requested"))),
                               ("generations_done", _is_int(data.get("generations_done")))) if not ok]
        if bad:
            fail(f"missing or wrong type: {', '.join(bad)}")
        track = data.get("track")
        if track is not None:
            if not isinstance(track, dict) or not isinstance(track.get("name"), str) \
                    or not isinstance(track.get("id"), str):
                fail("track is not an object with a name and an id")
        main = data.get("leaderboard_metrics", [])
        if not isinstance(main, list) or not all(isinstance(m, str) for m in main):
            fail("leaderboard_metrics is not a list of metric names")
        wrong = [where for where, value, types in _read_types(data, spec)
                 if value is not _ABSENT and (not isinstance(value, types) or isinstance(value, bool))]
        if isinstance(spec.get("metrics"), list) and not all(isinstance(m, str) for m in spec["metrics"]):
            wrong.append("spec.metrics (not a list of metric names)")
        if wrong:
            fail(f"wrong type: {', '.join(wrong)} (`bench validate` lists every problem)")
        known = set(REQUIRED_KEYS) | set(OPTIONAL_KEYS) | set(SET_ONLY_KEYS)
        values = {k: data[k] for k in known if k in data}
        return cls(**values, extra={k: v for k, v in data.items() if k not in known},
                   absent=frozenset(k for k in OPTIONAL_KEYS if k not in data), path=path)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object run.json holds (equal to what :meth:`from_dict` read)."""
        out = {k: getattr(self, k) for k in REQUIRED_KEYS}
        out.update({k: getattr(self, k) for k in OPTIONAL_KEYS if k not in self.absent})
        out.update({k: getattr(self, k) for k in SET_ONLY_KEYS if getattr(self, k) is not None})
        out.update(self.extra)
        return out

    # What readers derive from it.

    @property
    def seed(self) -> int:
        return self.spec["seed"]

    @property
    def complete(self) -> bool:
        return self.status == "complete" and self.generations_done == self.generations_requested + 1

    @property
    def policy_label(self) -> str:
        """identity.policy, or for files without it the label the spec gives (``mix:0.1``)."""
        identity = self.identity if isinstance(self.identity, dict) else {}
        policy = identity.get("policy")
        if isinstance(policy, str):
            return policy
        params = self.spec.get("policy_params") or {}
        values = ",".join(str(v) for v in params.values() if v is not None) if isinstance(params, dict) else ""
        return f"{self.spec.get('policy')}:{values}" if values else str(self.spec.get("policy"))

    @property
    def mitigation(self) -> str:
        """identity.mitigation, the suite table's row (older runs: the policy label)."""
        identity = self.identity if isinstance(self.identity, dict) else {}
        mitigation = identity.get("mitigation")
        return mitigation if isinstance(mitigation, str) and mitigation else self.policy_label

    @property
    def nonfinite_found(self) -> str | None:
        """What run.json's ``nonfinite`` says (``non-finite values at generation k: ...``); None
        when the run met none."""
        return nonfinite_found(self.nonfinite)

    def resolved_track(self) -> dict[str, Any]:
        """The run's track with every key of :data:`TRACK_KEYS`: run.json's, or for files
        written before run.json had one, derived as the harness derives it."""
        track = self.track
        if track is None:
            track = spec_track(self.spec, self.generations_requested, self.real_data_fingerprint)
        return {k: track.get(k) for k in TRACK_KEYS}

    def to_spec(self) -> Spec:
        """The spec as a :class:`bench.types.Spec`; RunJsonError when it lacks a key."""
        try:
            return Spec.from_dict(self.spec)
        except Exception as exc:  # a spec the harness could not have written
            raise RunJsonError(f"spec cannot be read ({type(exc).__name__}: {exc})", self.path) from None

    def integrity_problem(self) -> str | None:
        """Why ``run_id`` disagrees with the spec (None when it is the spec's hash): the file was
        edited after the run, so its results may not be what the spec says. A spec lacking keys
        (not the harness's) is a problem too."""
        try:
            run_id = Spec.from_dict(self.spec).run_id
        except Exception as exc:  # noqa: BLE001 - a spec the harness could not have written
            return f"spec cannot be read ({type(exc).__name__}: {exc})"
        if self.run_id != run_id:
            return f"run_id {self.run_id} is not the hash of the spec ({run_id}): the spec or the run id was edited"
        return None


def nonfinite_found(value: Any) -> str | None:
    """The text of run.json's ``nonfinite`` value (None: absent or null)."""
    if value is None:
        return None
    found = value.get("found") if isinstance(value, dict) else None
    return found if isinstance(found, str) and found else "non-finite values (run.json nonfinite)"


def read_run_json(run_dir: Path) -> RunJson:
    """A run folder's run.json; RunJsonError naming the file when it is unreadable or unusable."""
    path = Path(run_dir) / R.RUN_JSON
    try:
        with open(path, "rb") as fh:
            data = json.loads(fh.read())
    except (OSError, ValueError, RecursionError) as exc:
        raise RunJsonError(f"unreadable ({_reason(exc)})", path) from None
    return RunJson.from_dict(data, path)


def write_run_json(run_dir: Path, run: RunJson) -> None:
    """Write run.json atomically (sorted keys, two-space indent, a final newline)."""
    R.write_json(Path(run_dir) / R.RUN_JSON, run.to_dict())


# The full check of run.json's keys and types (bench validate).
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
OPTIONAL_RUN_KEYS: dict[str, tuple[type, ...]] = {"created": (str,), "updated": (str,), "nonfinite": (dict,)}
SPEC_KEYS: dict[str, tuple[type, ...]] = {
    "plugin": (str,), "preset": (str,), "params": (dict,), "trainer": (str,), "generator": (str,),
    "scorer": (str,), "metrics": (list,), "policy": (str,), "policy_params": (dict,), "start": (str,),
    "seed": (int,), "generations": (int,),
}
IDENTITY_KEYS: dict[str, tuple[type, ...]] = {
    "run_id": (str,), "plugin": (str,), "plugin_version": (str,), "preset": (str,), "policy": (str,), "seed": (int,),
}
TRACK_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,), "id": (str,), "plugin": (str,), "preset": (str,), "generations": (int,),
    "real_data": (str, type(None)),
}


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


def run_json_problems(data: dict[str, Any], where: str) -> tuple[list[str], bool]:
    """Every problem with run.json's content (each starting with ``where``), and whether its keys
    and types are right (so that the rest of the run can be checked against it): the key types,
    then that the ids, identity and track agree with the spec."""
    problems = _type_problems(where, data, RUN_KEYS) + _type_problems(where, data, OPTIONAL_RUN_KEYS, False)
    if "track" not in data or "leaderboard_metrics" not in data:
        problems.append(f"{where}: written by an older collapse-bench (no track); `bench run` with the same spec "
                        "and --out rewrites run.json")
    spec, identity, track = (data.get(k) if isinstance(data.get(k), dict) else None
                             for k in ("spec", "identity", "track"))
    if spec is not None:
        problems += _type_problems(f"{where}: spec", spec, SPEC_KEYS)
    if identity is not None:
        problems += _type_problems(f"{where}: identity", identity, IDENTITY_KEYS)
    if track is not None:
        problems += _type_problems(f"{where}: track", track, TRACK_TYPES)
    main = data.get("leaderboard_metrics")
    if isinstance(main, list) and not all(isinstance(m, str) for m in main):
        problems.append(f"{where}: leaderboard_metrics should be a list of metric names")
    if problems:
        return problems, False
    # The values agree with each other.
    if data["schema_version"] not in R.RUN_SCHEMA_VERSIONS:
        problems.append(f"{where}: schema_version {data['schema_version']} (this reader knows "
                        f"{', '.join(map(str, R.RUN_SCHEMA_VERSIONS))})")
    if data["status"] not in STATUSES:
        problems.append(f"{where}: status {data['status']!r} is not one of {', '.join(STATUSES)}")
    n, done = data["generations_requested"], data["generations_done"]
    if n < 0 or not 0 <= done <= n + 1:
        problems.append(f"{where}: generations_done {done} is not within 0..{n + 1} (generations_requested {n})")
    if data["status"] == "complete" and done != n + 1:
        problems.append(f"{where}: status complete but {done} of the {n + 1} generations done")
    if data["status"] == "failed" and not data["error"]:
        problems.append(f"{where}: status failed without an error")
    if not all(isinstance(m, str) for m in spec["metrics"]):
        problems.append(f"{where}: spec.metrics should be a list of metric names")
    if spec["generations"] != n:
        problems.append(f"{where}: spec.generations {spec['generations']} differs from generations_requested {n}")
    try:
        s = Spec.from_dict(spec)
        if data["run_id"] != s.run_id:
            problems.append(f"{where}: run_id {data['run_id']} is not the hash of the spec ({s.run_id}): the spec "
                            "was edited")
        if data["gen0_id"] != s.gen0_id:
            problems.append(f"{where}: gen0_id {data['gen0_id']} is not the hash of the spec ({s.gen0_id})")
        expected_identity = {"run_id": s.run_id, "plugin": s.plugin, "preset": s.preset, "policy": s.policy_label,
                             "seed": s.seed}
    except Exception as exc:  # a spec the harness could not have written
        problems.append(f"{where}: spec cannot be read ({type(exc).__name__}: {exc})")
        expected_identity = {}
    for key, value in expected_identity.items():
        if identity[key] != value:
            problems.append(f"{where}: identity.{key} is {identity[key]!r}, the spec says {value!r}")
    # track.real_data names the data source (seed-independent); the id hashes it with the rest.
    expected = spec_track(spec, n, track["real_data"])
    for k in ("name", "plugin", "preset", "generations", "real_data", "id"):
        if track[k] != expected[k]:
            problems.append(f"{where}: track.{k} is {track[k]!r}, the spec gives {expected[k]!r}")
    _, unusable = parse_headline(data.get("headline"))
    if unusable:  # leaderboards ignore it with a warning
        problems.append(f"{where}: headline is unusable ({unusable})")
    return problems, True


def parse_headline(obj: Any) -> tuple[dict[str, Any] | None, str | None]:
    """run.json's ``headline`` checked: (``{metric, threshold, mode, why}``, None), (None, None)
    when there is none, or (None, why it is unusable)."""
    import math

    if obj is None:
        return None, None
    if not isinstance(obj, dict):
        return None, "not an object"
    metric, threshold, mode, why = obj.get("metric"), obj.get("threshold"), obj.get("mode", "diff"), obj.get("why", "")
    if not isinstance(metric, str) or not metric:
        return None, "no metric name"
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        return None, f"threshold {threshold!r} is not a finite number"
    if mode not in COLLAPSE_MODES:
        return None, f"mode {mode!r} is not one of {', '.join(COLLAPSE_MODES)}"
    why = why if isinstance(why, str) else ""
    return {"metric": metric, "threshold": float(threshold), "mode": mode, "why": why}, None


# -- what a leaderboard reads of a run ------------------------------------------------------------


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
    headline: dict[str, Any] | None = None  # run.json headline, checked (parse_headline)
    headline_problem: str | None = None  # why run.json's headline was ignored
    nonfinite: str | None = None  # run.json nonfinite: the non-finite values the run met

    @property
    def complete(self) -> bool:
        return self.status == "complete" and self.done == self.requested + 1

    @classmethod
    def from_run_json(cls, path: Path, run: RunJson) -> "RunRecord":
        """The record of a run; RunJsonError where its run id is not its spec's hash
        (:meth:`RunJson.integrity_problem`: an edited file) or its track does not hold its
        generation count (it could not be ranked against its track)."""
        problem = run.integrity_problem()
        if problem is not None:
            raise RunJsonError(problem, run.path)
        track = run.resolved_track()
        if track["generations"] != run.generations_requested:
            raise RunJsonError(f"track.generations {track['generations']!r} differs from generations_requested "
                               f"{run.generations_requested}", run.path)
        entry = entry_spec(run.spec)
        headline, headline_problem = parse_headline(run.headline)
        return cls(path=path, run_id=run.run_id, seed=run.seed, status=run.status,
                   requested=run.generations_requested, done=run.generations_done, entry=entry,
                   entry_key=entry_key(entry), policy=run.policy_label, track=track,
                   main=tuple(run.leaderboard_metrics),
                   error=run.error if isinstance(run.error, str) else None,
                   mitigation=run.mitigation, headline=headline, headline_problem=headline_problem,
                   nonfinite=run.nonfinite_found)


def parse_run_json(path: Path, data: Any) -> RunRecord:
    """A RunRecord from a run.json's content; RunJsonError with the reason."""
    return RunRecord.from_run_json(path, RunJson.from_dict(data))


def load_run_record(path: Path) -> RunRecord | str:
    """A run folder's RunRecord, or why it cannot be used (``<run.json>: <reason>; skipped``)."""
    try:
        return RunRecord.from_run_json(path, read_run_json(path))
    except RunJsonError as exc:
        return f"{exc}; skipped"


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


# -- finding run folders ------------------------------------------------------------------------


def runs_below(top: Path) -> list[Path]:
    """Run folders at or below ``top`` (sorted); hidden, generation and run folders' subfolders
    are not searched, and a folder reached twice through links is searched once."""
    top = Path(top)
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


def _scan(paths: Iterable[str | Path], strict: bool) -> tuple[list[Path], list[Path]]:
    runs: list[Path] = []
    empty: list[Path] = []
    seen: set[str] = set()
    for p in [paths] if isinstance(paths, (str, Path)) else paths:
        p = Path(p)
        if p.name == R.RUN_JSON and p.is_file():
            p = p.parent
        if not p.is_dir():
            if not strict:
                continue
            if not p.exists():
                raise BenchError(f"{p} does not exist: give folders of results (what `bench run --out` wrote)")
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


def find_run_dirs(paths: Iterable[str | Path]) -> tuple[list[Path], list[Path]]:
    """Run folders (holding run.json) at or below each path, each once, and the paths holding none.

    Hidden folders (``.gen0``, temporary ones) and generation folders are not searched; a run
    folder's own subfolders are not searched either. Raises BenchError for a path that is missing.
    """
    return _scan(paths, strict=True)


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Run folders at or below the given paths (a run folder, its run.json, or a folder of runs at
    any depth), each once, searched as :func:`find_run_dirs` searches; missing paths give none."""
    return _scan(paths, strict=False)[0]


# -- the metric rows ----------------------------------------------------------------------------


def gen_metrics_table(rows: list[dict[str, Any]]) -> pa.Table:
    """One generation's metric rows (dicts with the GEN_METRICS_SCHEMA keys) as its table."""
    return pa.Table.from_pylist(rows, schema=R.GEN_METRICS_SCHEMA)


def stamp(table: pa.Table, identity: Mapping[str, Any]) -> pa.Table:
    """Add the run's identity columns to generation rows, giving METRICS_SCHEMA."""
    n = table.num_rows
    columns = []
    for name, typ in R.RUN_COLUMNS:
        value = R.SCHEMA_VERSION if name == "schema_version" else identity[name]
        columns.append(pa.array([value] * n, type=typ))
    return pa.Table.from_arrays(columns + table.columns, schema=R.METRICS_SCHEMA)


def check_metrics_schema(schema: pa.Schema, expected: pa.Schema = R.METRICS_SCHEMA) -> list[str]:
    """What is wrong with a metrics file's columns (empty: every expected column once, with its
    type). Missing columns give one problem naming them all; then, column by column, a column
    that appears more than once or has another type."""
    names = schema.names
    missing = [f.name for f in expected if f.name not in names]
    if missing:
        return [f"missing columns {', '.join(missing)}"]
    problems = []
    for f in expected:
        if names.count(f.name) != 1:
            problems.append(f"column {f.name} appears {names.count(f.name)} times")
            continue
        actual = schema.field(f.name).type
        if actual != f.type:
            problems.append(f"column {f.name} has type {actual}, expected {f.type}")
    return problems


def schema_problem(schema: pa.Schema) -> str | None:
    """Why a Parquet schema is not METRICS_SCHEMA, the first reason only (None when it is)."""
    problems = check_metrics_schema(schema)
    if not problems:
        return None
    if problems[0].startswith("missing columns"):
        return f"not a collapse-bench metrics file ({problems[0]})"
    return problems[0]


def validate_metrics(table: pa.Table, source: str = "metrics") -> list[str]:
    """Problems with a metrics table (empty list when it is valid)."""
    problems = [f"{source}: {p}" for p in check_metrics_schema(table.schema)]
    if problems:
        return problems
    versions = set(table.column("schema_version").to_pylist())
    if versions - {R.SCHEMA_VERSION}:
        problems.append(f"{source}: schema_version {sorted(versions)} (this reader knows {R.SCHEMA_VERSION})")
    directions = set(table.column("direction").to_pylist())
    if directions - R.DIRECTIONS:
        problems.append(f"{source}: unknown directions {sorted(directions - R.DIRECTIONS)}")
    rows = table.select(["direction", "target"]).to_pylist()
    if any((r["direction"] == "target") != (r["target"] is not None) for r in rows):
        problems.append(f"{source}: a target is given exactly when direction is 'target'")
    for name in ("generation", "metric", "run_id", "seed"):
        if table.column(name).null_count:
            problems.append(f"{source}: column {name} has missing values")
    gens = table.column("generation").to_numpy()
    if len(gens) and gens.min() < 0:
        problems.append(f"{source}: negative generation")
    keys = table.select(["run_id", "generation", "metric"]).to_pylist()
    if len({tuple(k.values()) for k in keys}) != len(keys):
        problems.append(f"{source}: a (run_id, generation, metric) row appears twice")
    return problems


def _identity_of(info: Mapping[str, Any] | RunJson) -> Mapping[str, Any]:
    return info.identity if isinstance(info, RunJson) else info["identity"]


def consolidate(run_dir: Path, info: Mapping[str, Any] | RunJson, done: int, write: bool = True,
                known: Mapping[int, list[dict[str, Any]]] | None = None) -> pa.Table:
    """Join the per-generation metrics into one table with the run's identity columns (``info``:
    run.json or a mapping holding ``identity``), written to metrics.parquet unless ``write=False``.

    ``known`` holds rows already in memory by generation; the others are read from their folders
    (one or a chunk of generations each).
    """
    known = known or {}
    parts = []
    for first, last, path in R.units(Path(run_dir)):
        if first >= done:
            break
        gens = range(first, min(last, done - 1) + 1)
        if all(k in known for k in gens):
            parts += [gen_metrics_table(known[k]) for k in gens]
            continue
        table = _gen_metrics(Path(run_dir), path)
        if last >= done:
            import pyarrow.compute as pc

            table = table.filter(pc.less(table.column("generation"), done))
        parts.append(table)
    gen_table = pa.concat_tables(parts) if parts else R.GEN_METRICS_SCHEMA.empty_table()
    table = stamp(gen_table, _identity_of(info))
    if write:
        R.write_parquet(Path(run_dir) / R.METRICS_FILE, table)
    return table


def _gen_metrics(run_dir: Path, folder: Path) -> pa.Table:
    """A generation folder's (or chunk's) metrics table; a BenchError naming the file when it is damaged."""
    path = folder / R.METRICS_FILE
    try:
        return pq.read_table(path)
    except OSError as exc:
        if exc.errno is not None or isinstance(exc, FileNotFoundError):
            raise  # the file system's own error (a permission, a full disk)
        damage = exc  # pyarrow's errors for a file that is not Parquet are OSErrors without errno
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for damaged files
        damage = exc
    raise BenchError(f"{path}: damaged ({_reason(damage)}), so the run's metrics cannot be joined; "
                     f"`bench validate {run_dir}` lists everything damaged in the run folder") from None


def locked_by(run_dir: Path) -> str | None:
    """Who holds a run folder's lock (a process running it, e.g. "pid 12 on host"), or None."""
    return locked_by_file(Path(run_dir) / LOCK_FILE)


def locked_by_file(path: Path) -> str | None:
    """Who holds the lock file ``path`` (flock, as bench.loop.FolderLock takes it), or None."""
    import fcntl

    try:
        fh = open(path, "rb")
    except OSError:
        return None  # no lock file: never run, or not readable (then nothing can be said)
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return fh.read(200).decode(errors="replace").strip() or "another process"
        except OSError:
            return None
        fcntl.flock(fh, fcntl.LOCK_UN)
    return None


# -- reading a generation's files ------------------------------------------------------------------


def read_file(path: Path, what: str, read: Callable[[Path], Any], hint: str | None = None) -> Any:
    """``read(path)``, with a BenchError naming the file where it cannot be read or is damaged
    (any exception of the reader: pyarrow and safetensors raise several types for a damaged
    file). ``what`` names the content (``model state``); ``hint`` says how to repair it, by
    default `bench validate` on the run folder."""
    try:
        return read(path)
    except BenchError:
        raise
    except OSError as exc:
        if exc.errno is not None and exc.strerror:  # the file system's own error: missing, permissions
            raise BenchError(f"{path}: cannot read the {what} ({exc.strerror})") from None
        damage: BaseException = exc  # pyarrow's errors for a file that is not Parquet have no errno
    except Exception as exc:  # noqa: BLE001 - whatever a damaged file makes the reader raise
        damage = exc
    run = next((p for p in Path(path).parents if (p / R.RUN_JSON).is_file()), Path(path).parent)
    raise BenchError(f"{path}: damaged {what} ({_reason(damage)}); "
                     + (hint or f"`bench validate {run}` lists everything damaged in the run folder")) from None


def read_state(path: Path) -> dict[str, Any]:
    """A generation's kept model state (safetensors); a BenchError naming a damaged file, with
    how to have the harness compute the generation again."""
    gen = Path(path).parent
    return read_file(path, "model state", R.read_state,
                     hint=f"remove {gen} and the generation folders after it, then run the same command again "
                          "to compute them anew")


def read_samples(path: Path) -> tuple[Any, dict[str, Any]]:
    """A generation's samples and their scores (:func:`bench.results.read_samples`); a BenchError
    naming a damaged file."""
    return read_file(path, "samples", R.read_samples)


def read_sample_row(path: Path, index: int) -> dict[str, Any]:
    """One row of a samples file (:func:`bench.results.read_sample_row`); a BenchError naming a
    damaged file, or saying which samples exist."""
    row = read_file(path, "samples", lambda p: R.read_sample_row(p, index))
    if "sample" not in row:
        raise BenchError(f"{path}: damaged samples (no sample column)")
    return row


def read_gen_rows(path: Path, generation: int | None = None) -> list[dict[str, Any]]:
    """A generation's metric rows (GEN_METRICS_SCHEMA) as dicts (of a chunk's file, those of
    ``generation``); a BenchError naming a damaged file or one with other columns."""
    table = read_file(path, "metrics", lambda p: R.read_table(p, generation))
    problems = check_metrics_schema(table.schema, R.GEN_METRICS_SCHEMA)
    if problems:
        raise BenchError(f"{path}: damaged metrics ({problems[0]})")
    return table.select(R.GEN_METRICS_SCHEMA.names).to_pylist()


# -- one generation of a run folder, whether committed alone or in a chunk -------------------------


def generation_unit(run_dir: Path, k: int) -> tuple[int, int, Path]:
    """(first, last, folder) of the committed folder holding generation k; a BenchError when the
    run has not finished it."""
    unit = R.unit_of(Path(run_dir), k)
    if unit is None:
        done = R.finished_generations(run_dir)
        raise BenchError(f"{run_dir}: generation {k} is not finished (the run holds generations 0..{done - 1})"
                         if done else f"{run_dir}: no generation is finished yet")
    return unit


def _chunked(unit: tuple[int, int, Path]) -> bool:
    return unit[0] != unit[1]


def generation_samples(run_dir: Path, k: int) -> tuple[Any, dict[str, Any]]:
    """S_{k+1} (drawn by M_k) and its score columns, from generation k's folder or chunk."""
    unit = generation_unit(run_dir, k)
    return read_file(unit[2] / SAMPLES_FILE, "samples",
                     lambda p: R.read_samples(p, k if _chunked(unit) else None))


def generation_sample_row(run_dir: Path, k: int, index: int) -> dict[str, Any]:
    """One sample of S_{k+1} as a dict (``index``, ``sample``, scores, extra columns)."""
    unit = generation_unit(run_dir, k)
    path = unit[2] / SAMPLES_FILE
    row = read_file(path, "samples", lambda p: R.read_sample_row(p, index, k if _chunked(unit) else None))
    if "sample" not in row:
        raise BenchError(f"{path}: damaged samples (no sample column)")
    return row


def generation_table(run_dir: Path, k: int, columns: Sequence[str]) -> pa.Table:
    """The ``columns`` of S_{k+1}'s samples file that exist, for generation k's rows only (a
    chunk's file holds several generations); pyarrow's errors for a damaged file pass through."""
    first, last, folder = generation_unit(run_dir, k)
    path = folder / SAMPLES_FILE
    if first == last:
        names = pq.read_schema(path).names
        return pq.read_table(path, columns=[c for c in columns if c in names])
    table = R.read_table(path, k)
    return table.select([c for c in columns if c in table.column_names])


def state_file(run_dir: Path, k: int) -> tuple[Path, str | None]:
    """Where M_k's state is kept: (file, key prefix); the prefix is None for a plain state file
    (a generation's own, or a chunk's last generation) and ``"<k>/"`` inside a chunk's
    states.safetensors. The file may not exist: keep_states dropped the state."""
    first, last, folder = generation_unit(run_dir, k)
    if k == last:
        return folder / STATE_FILE, None
    return folder / STATES_FILE, f"{R.gen_name(k)}/"


def has_state(run_dir: Path, k: int) -> bool:
    """Whether M_k's state is kept in the run folder."""
    path, prefix = state_file(run_dir, k)
    if prefix is None or not path.is_file():
        return path.is_file()
    from safetensors import safe_open

    try:
        with safe_open(str(path), "np") as fh:
            return any(key.startswith(prefix) for key in fh.keys())
    except Exception:  # noqa: BLE001 - a damaged file: read_state names it
        return True


def generation_state(run_dir: Path, k: int) -> dict[str, Any] | None:
    """M_k's kept state, or None when keep_states dropped it; a BenchError naming a damaged file."""
    path, prefix = state_file(run_dir, k)
    if not path.is_file():
        return None
    state = read_state(path)
    if prefix is None:
        return state
    mine = {key[len(prefix):]: v for key, v in state.items() if key.startswith(prefix)}
    return mine or None


def generation_info(run_dir: Path, k: int) -> dict[str, Any]:
    """Generation k's info.json record (its step times, training samples, policy record)."""
    first, last, folder = generation_unit(run_dir, k)
    data = read_file(folder / INFO_FILE, "generation info", R.read_json)
    if first == last:
        return data
    records = data.get("generations") if isinstance(data, dict) else None
    if not isinstance(records, list) or len(records) != last - first + 1 or not isinstance(records[k - first], dict):
        raise BenchError(f"{folder / INFO_FILE}: damaged generation info (no record of generation {k})")
    return records[k - first]


def generation_rows(run_dir: Path, k: int) -> list[dict[str, Any]]:
    """Generation k's metric rows (GEN_METRICS_SCHEMA) as dicts."""
    first, last, folder = generation_unit(run_dir, k)
    return read_gen_rows(folder / R.METRICS_FILE, None if first == last else k)


def read_metrics(run_dir: Path, validate: bool = True) -> pa.Table:
    """A run's metrics (METRICS_SCHEMA), from metrics.parquet, or rebuilt from the generation
    folders when the consolidated file is behind them (after a kill). A damaged run.json or
    metrics file gives a BenchError naming it."""
    run_dir = Path(run_dir)
    info = read_run_json(run_dir)
    done = R.finished_generations(run_dir)
    path = run_dir / R.METRICS_FILE
    table = None
    if path.exists():
        table = read_file(path, "metrics", pq.read_table,
                          hint="`bench run` with the same spec and --out rewrites it from the generation folders")
        problem = schema_problem(table.schema)
        if problem:
            raise BenchError(f"{path}: {problem}; `bench run` with the same spec and --out rewrites it from the "
                             "generation folders")
        if table.num_rows and max(table.column("generation").to_pylist()) != done - 1:
            table = None
    if table is None:
        missing = [k for k, _ in R.RUN_COLUMNS if k != "schema_version" and k not in info.identity]
        if missing:
            raise RunJsonError(f"identity lacks {', '.join(missing)}, so the metrics cannot be rebuilt from the "
                               "generation folders", info.path)
        table = consolidate(run_dir, info, done, write=False)
    if validate:
        problems = validate_metrics(table, str(path))
        if problems:
            raise BenchError("invalid results: " + "; ".join(problems))
    return table


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


def load_metric_columns(run_dir: Path, columns: Sequence[str]) -> pa.Table | str:
    """Some columns of a run's metrics.parquet, fast (for ranking thousands of runs), after the
    schema check; or why not (``<file>: <reason>; skipped``)."""
    file = Path(run_dir) / R.METRICS_FILE
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
        table = reader.read_all(column_indices=[schema.get_field_index(c) for c in columns], use_threads=False)
    except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
        return f"{file}: unreadable ({_reason(exc)}); skipped"
    return table.replace_schema_metadata(None)
