"""The recursive loop: fit, generate, measure, build the next data; one generation at a time.

Row k of the results describes model M_k. M_0 is fitted on the real training set; S_{k+1} is drawn
from M_k and measured with it; D_{k+1} = policy(R, S_1..S_{k+1}) trains M_{k+1}. Each generation is
written to ``gens/<k>/`` by renaming a finished temporary folder, so a crash at any moment leaves
the run at its last finished generation, and the same command resumes it. Randomness comes only
from ``rng(seed, k, stream)``, so a resumed run ends exactly as an uninterrupted one.
"""

from __future__ import annotations

import errno
import fcntl
import os
import platform
import shutil
import socket
import subprocess
import sys
import threading
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pyarrow as pa

import bench
from bench import results as R
from bench import runfolder as RF
from bench.components import (FitRequest, GenerateRequest, MetricContext, PolicyContext, RealData, RealRequest,
                              SampleScores, Samples, ScoreRequest, Scores, State, VerifyContext)
from bench.errors import BenchError, RunLocked
from bench.options import DEFAULT_ON_NONFINITE, parse_on_nonfinite
from bench.plugins import SINGULAR, Bench, PluginError
from bench.progress import reporter
from bench.spec import Spec
from bench.types import RunInfo, RunOutcome, digest  # RunInfo, RunOutcome re-exported: their home is bench.types

# Independent random streams of one generation.
TRAIN, GENERATE, POLICY, METRICS, INIT, CANDIDATES = range(6)
GEN0_CACHE = ".gen0"
# Synthetic samples a run keeps in memory for its policy (older ones are read back from disk).
HISTORY_BYTES = 256 * 2**20
# Fast generations (each built in under bench.results.SLOW_GENERATION_S) are committed together,
# as one chunk folder gens/<first>-<last>: at the latest after COMMIT_EVERY_S seconds of work,
# CHUNK_GENERATIONS generations or CHUNK_BYTES of samples and states to write. A kill loses at most that much work;
# any other stop (an error, Ctrl-C) commits what is finished first. Slow generations are each
# committed on their own as soon as they are built.
COMMIT_EVERY_S = 5.0
CHUNK_GENERATIONS = 256
CHUNK_BYTES = 64 * 2**20


def rng(seed: int, generation: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, generation, stream])


class PluginFailure(BenchError):
    """A plugin's component raised during a run."""


@dataclass
class GenerationResult:
    """What building generation k gives: M_k's state, S_{k+1} with its scores under M_k and M_0
    (the samples.parquet columns), the metric rows and the info.json record; held in memory
    until it is committed, alone or in a chunk (:meth:`Run._commit`)."""

    generation: int
    state: State
    latest: SampleScores
    rows: list[dict[str, Any]]
    samples: Any  # the samples.parquet table (pyarrow.Table)
    info: dict[str, Any]
    seconds: float  # the time its fit, generation and measurement took


def _state_bytes(state: Mapping[str, Any]) -> int:
    return sum(getattr(v, "nbytes", 0) for v in state.values())


def commit_every() -> float:
    """Seconds of work the loop may hold in memory before committing (BENCH_COMMIT_EVERY, default
    COMMIT_EVERY_S; 0: every generation in its own folder, the layout of run.json schema_version 1)."""
    text = os.environ.get("BENCH_COMMIT_EVERY", "").strip()
    if not text:
        return COMMIT_EVERY_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise BenchError(f"BENCH_COMMIT_EVERY={text!r}: give the seconds of work a run may hold before it "
                         "commits its generations (a number >= 0; 0 commits each generation on its own)")
    return value


def _as_float64(scores: Scores) -> Scores:
    """Scores as samples.parquet stores them, so that a resumed run's policies see the same values."""
    return Scores(np.asarray(scores.loglik, dtype=np.float64), np.asarray(scores.units, dtype=np.float64))


# -- non-finite values and plugin contracts ---------------------------------------------------------

class NonFiniteValues(BenchError):
    """A generation's state, samples or scores hold NaN or inf, and the run stops (on_nonfinite stop)."""


def _nonfinite(arrays: dict[str, Any], allow_neg_inf: bool = False) -> str | None:
    """What is not finite in the floating-point ``arrays`` (None: all finite), e.g. "'mean' holds
    2 NaN of 3 values". ``allow_neg_inf``: -inf is a value, not a fault (a log-likelihood of a
    sample the model cannot produce)."""
    found = []
    for key, value in arrays.items():
        a = np.asarray(value)
        if a.dtype.kind not in "fc" or a.size == 0 or np.isfinite(a).all():
            continue
        if allow_neg_inf and not (np.isnan(a).any() or np.isposinf(a.real).any()):
            continue
        nan = int(np.isnan(a).sum())
        inf = int(np.isposinf(a.real).sum()) + (0 if allow_neg_inf else int(np.isneginf(a.real).sum()))
        if nan or inf:
            parts = [f"{nan} NaN"] * bool(nan) + [f"{inf} {'+inf' if allow_neg_inf else 'inf'}"] * bool(inf)
            found.append(f"{key!r} holds {' and '.join(parts)} of {a.size} values")
    return "; ".join(found) or None


def _metric_number(value: Any) -> float | None:
    """A metric's value as a float; None for what is not one number (a string, None, an array)."""
    if value is None or isinstance(value, (str, bytes)):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # numpy: float() of a 1-element array
            return float(value)
    except (TypeError, ValueError):
        return None


def _shown(value: Any) -> str:
    """A value returned by a plugin, for a message: its type and a short repr."""
    text = repr(value)
    return f"{type(value).__name__} {text[:60] + '...' if len(text) > 63 else text}"


# -- locking ------------------------------------------------------------------------------------


class FolderLock:
    """An exclusive lock on a folder (flock: released by the OS when the process dies)."""

    def __init__(self, path: Path, what: str, blocking: bool = False) -> None:
        self.path = path
        self.what = what
        self.blocking = blocking
        self.fh = None

    def __enter__(self) -> "FolderLock":
        self.fh = open(self.path, "a+")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | (0 if self.blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            self.fh.seek(0)
            holder = self.fh.read().strip() or "another process"
            self.fh.close()
            raise RunLocked(
                f"{self.what} is in use by {holder}. Wait for that process to finish (or stop it) "
                "and run the command again; it continues from the last finished generation."
            ) from None
        self.fh.seek(0)
        self.fh.truncate()
        self.fh.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        self.fh.flush()
        return self

    def __exit__(self, *exc) -> None:
        if self.fh is not None:
            self.fh.seek(0)
            self.fh.truncate()
            fcntl.flock(self.fh, fcntl.LOCK_UN)
            self.fh.close()


# -- provenance ---------------------------------------------------------------------------------


def _git_sha() -> str | None:
    here = Path(bench.__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "--verify", "-q", "HEAD"],
            capture_output=True, text=True, timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def code_versions(b: Bench, spec: Spec) -> dict[str, str]:
    """The versions of everything whose code makes the results: package, plugins, components."""
    versions = {"collapse-bench": bench.__version__}
    parts = [("models", spec.plugin), ("trainers", spec.trainer), ("generators", spec.generator),
             ("scorers", spec.scorer), ("policies", spec.policy)] + [("metrics", m) for m in spec.metrics]
    for kind, name in parts:
        info = b.owner(kind, name)
        item = b.registries[kind].get(name)
        versions[f"{SINGULAR[kind]}:{name}"] = f"{info.name} {info.version} / {getattr(item, 'version', '1')}"
    return versions


def _defining_module(fn: Any) -> str | None:
    """The module that defines a component's callable (through the harness's adapters, partials
    and bound methods); None for what is not callable."""
    if not callable(fn):
        return None
    for _ in range(8):
        inner = getattr(fn, "legacy", None) or getattr(fn, "__wrapped__", None) or getattr(fn, "func", None) \
            or getattr(fn, "__func__", None)
        if inner is None or not callable(inner):
            break
        fn = inner
    module = getattr(fn, "__module__", None)
    return module if isinstance(module, str) else type(fn).__module__


def _helper_modules(name: str) -> set[str]:
    """The modules of the same top-level package that module ``name`` uses at its top level (a
    module it imports, or the module of a function or class it imports): their code makes the
    results too (``hf_model`` generates through ``beam``)."""
    module = sys.modules.get(name)
    top = name.split(".")[0]
    found = set()
    for value in vars(module).values() if module is not None else ():
        other = value.__name__ if isinstance(value, type(sys)) else getattr(value, "__module__", None)
        if isinstance(other, str) and other != name and other.split(".")[0] == top and other in sys.modules:
            found.add(other)
    return found


def code_fingerprint(components: Sequence[Any]) -> dict[str, str]:
    """Module name -> SHA-256 prefix of the source file of each module that defines a callable of
    the ``components`` (bundle, trainer, generator, scorer, metrics): their code, beyond the
    versions their authors give. A module without a readable file counts by its name alone."""
    import dataclasses
    import hashlib

    modules = set()
    for component in components:
        for f in dataclasses.fields(component):
            module = _defining_module(getattr(component, f.name))
            if module is not None:
                modules.add(module)
    modules |= {helper for module in list(modules) for helper in _helper_modules(module)}
    out = {}
    for module in sorted(modules):
        path = getattr(sys.modules.get(module), "__file__", None)
        try:
            out[module] = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16] if path else ""
        except OSError:
            out[module] = ""
    return out


def gen0_cache_key(b: Bench, spec: Spec) -> str:
    """The folder name of the shared generation 0 under ``.gen0/``: the spec's gen0 id, then a
    digest of the code that makes generation 0 (the versions of :func:`code_versions` but the
    policy's, and :func:`code_fingerprint` of the model, trainer, generator, scorer and metrics),
    so that a run after a plugin change never reuses a generation 0 of the old code. Run ids and
    the gen0_id in run.json do not depend on it."""
    versions = {k: v for k, v in code_versions(b, spec).items() if not k.startswith("policy:")}
    components = [b.models.get(spec.plugin), b.trainers.get(spec.trainer), b.generators.get(spec.generator),
                  b.scorers.get(spec.scorer)] + [b.metrics.get(m) for m in spec.metrics]
    return f"{spec.gen0_id}-{digest({'versions': versions, 'code': code_fingerprint(components)})[:12]}"


def provenance(b: Bench, spec: Spec) -> dict[str, Any]:
    return {
        "collapse_bench": bench.__version__,
        "git_sha": _git_sha(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "device": "cpu",
        "code_versions": code_versions(b, spec),
    }


# -- the run ------------------------------------------------------------------------------------


class Run:
    """One chain for one spec and seed, living in ``out/<spec.folder_name>``."""

    def __init__(self, b: Bench, spec: Spec, out: Path, keep_states: str = "first-last",
                 log: Callable[[str], None] | None = None,
                 fit: Callable[[FitRequest], State] | None = None,
                 on_nonfinite: str = DEFAULT_ON_NONFINITE) -> None:
        """``fit`` replaces the trainer's own ``fit`` (run_group passes its batched fit).
        ``on_nonfinite``: ``stop`` (fail the run) or ``record`` (go on, mark the generations) when a
        state, samples or scores hold NaN or inf."""
        self.on_nonfinite = parse_on_nonfinite(on_nonfinite)
        self._nonfinite: dict[str, Any] | None = None  # the first non-finite values this process found
        self._marks: list[str] = []  # what is non-finite in the generation being built (record)
        self._building = 0  # the generation being built, for messages
        self.b = b
        self.spec = spec
        self.out = Path(out).absolute()
        self.path = self.out / spec.folder_name
        self.keep_states = keep_states
        self._echo = log
        self.bundle = b.models.get(spec.plugin)
        self.trainer = b.trainers.get(spec.trainer)
        self.generator = b.generators.get(spec.generator)
        self.scorer = b.scorers.get(spec.scorer)
        self.policy = b.policies.get(spec.policy)
        self.metrics = [b.metrics.get(m) for m in spec.metrics]
        self.info = RunInfo(self.path, spec, spec.run_id)
        self.fit = fit or self.trainer.fit
        # The real data and what run.json records of it; None until the data loads.
        self.real: RealData | None = None
        self.real_data_fingerprint: str | None = None
        self.real_data_source: str | None = None  # the track's real_data: source, else fingerprint
        self.data_provenance: dict[str, Any] = {}
        self._history: dict[int, Samples] = {}  # S_j by j, newest last, at most HISTORY_BYTES
        self._history_bytes = 0
        self._rows: dict[int, list[dict[str, Any]]] = {}  # metric rows written by this process
        self._latest: GenerationResult | None = None  # the generation this process built last
        self._pending: list[GenerationResult] = []  # built, not yet committed (a chunk in the making)
        self._pending_since = 0.0  # time.monotonic() when the first pending generation was started
        self._pending_bytes = 0  # their samples and the states the chunk will write
        self._last_rows: list[dict[str, Any]] = []  # the newest committed generation's rows
        self._pretrained = None
        self._progress = None  # the run's display while it executes: fits and draws report under it
        self._ref_test = None  # M_0's scores of the real test set, once a metric asked for them

    # -- public ---------------------------------------------------------------------------------

    def execute(self, progress=None) -> RunOutcome:
        # The bundle's own check first: impossible settings end before any folder is made.
        self._warnings = list(self.bundle.check(self.spec.params) if self.bundle.check else ())
        if not 0 <= self.spec.seed < 2**63:  # metrics.parquet stores it as int64
            raise BenchError(f"seed {self.spec.seed} is out of range: seeds are integers from 0 to 2**63 - 1")
        if self.bundle.preflight is not None:  # what this machine has: refused before a folder exists
            self.bundle.preflight(self.spec.params)
        _make_dir(self.path)
        with FolderLock(self.path / ".lock", f"run folder {self.path}"):
            return self._execute_locked(progress)

    # -- internals ------------------------------------------------------------------------------

    def log(self, message: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(self.path / R.LOG_FILE, "a") as fh:
            fh.write(f"{stamp} {message}\n")
        if self._echo:
            self._echo(message)

    def _identity(self) -> dict[str, Any]:
        from bench.mitigations import label

        info = self.b.owner("models", self.spec.plugin)
        return {
            "run_id": self.spec.run_id,
            "plugin": self.spec.plugin,
            "plugin_version": info.version,
            "preset": self.spec.preset,
            "policy": self.spec.policy_label,
            "mitigation": label(self.b, self.spec),
            "seed": self.spec.seed,
        }

    def _write_run_json(self, status: str, done: int, error: str | None = None) -> None:
        old = RF.read_run_json(self.path) if (self.path / R.RUN_JSON).exists() else None
        loaded = self.real is not None
        RF.write_run_json(self.path, RF.RunJson(
            schema_version=R.RUN_SCHEMA_VERSION,
            run_id=self.spec.run_id,
            gen0_id=self.spec.gen0_id,
            spec=self.spec.to_dict(),
            identity=self._identity(),
            provenance=(old and old.provenance) or provenance(self.b, self.spec),
            created=(old and old.created) or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            updated=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            status=status,
            generations_requested=self.spec.generations,
            generations_done=done,
            error=error,
            # a run only re-consolidated never loads its data: then run.json keeps what it said
            real_data_fingerprint=(self.real_data_fingerprint if loaded
                                   else old.real_data_fingerprint if old else None),
            data_provenance=(loaded and self.data_provenance) or (old and old.data_provenance) or {},
            track=self._track((loaded and self.real_data_source) or ((old and old.track) or {}).get("real_data")),
            leaderboard_metrics=list(self.bundle.leaderboard_metrics),
            headline=self.bundle.headline.to_dict() if self.bundle.headline else None,
            nonfinite=self._nonfinite_record(old, done),
        ))

    def _track(self, fingerprint: str | None) -> dict[str, Any]:
        """The fixed protocol this run belongs to: runs are ranked only against their track."""
        return RF.make_track(self.spec.plugin, self.spec.preset, self.spec.generations, fingerprint)

    def _check_resume(self) -> None:
        if not (self.path / R.RUN_JSON).exists():
            return
        old = RF.read_run_json(self.path)
        problem = old.integrity_problem()
        if problem is not None:
            raise RF.RunJsonError(problem, old.path)
        if old.to_spec().identity() != self.spec.identity():
            raise BenchError(
                f"run folder {self.path} holds a different spec (run id {old.run_id}); "
                "use another --out folder"
            )
        before = (old.provenance or {}).get("code_versions", {})
        now = code_versions(self.b, self.spec)
        changed = sorted(k for k in now if before.get(k) not in (None, now[k]))
        if changed:
            msg = "resuming under different plugin code: " + "; ".join(
                f"{k}: {before[k]} -> {now[k]}" for k in changed
            )
            warnings.warn(msg, stacklevel=2)
            self.log("warning: " + msg)

    def _execute_locked(self, progress) -> RunOutcome:
        spec = self.spec
        self._progress = progress
        self._check_resume()
        done = self._clean_up_after_kill()
        self.info.done = done
        total = spec.generations + 1  # rows 0..N
        if done > total:
            return self._holds_more(done)
        if done == total:
            self._write_run_json("complete", done)
            return self._consolidated(RunOutcome(self.path, spec, "complete", done))
        self._write_run_json("running", done)
        for message in self._warnings:
            warnings.warn(message, stacklevel=2)
            self.log("warning: " + message)
        self.log(f"start: {spec.folder_name}, generations {done}..{spec.generations}"
                 + (" (resumed)" if done else ""))
        status, error = "running", None
        try:
            # inside the try: a logger that refuses to start fails the run, recorded as such
            self.b.emit("bench_run_started", run=self.info)
            if progress is not None:
                progress.start(total, done)
            self._load_real()
            self._write_run_json("running", done)
            k = done
            if k == 0:
                self._generation_zero()
                k = 1
                self._after_commit([0])
                if progress is not None:
                    progress.update(1)
            self.reference_state = RF.read_state(self._gen_dir(0) / RF.STATE_FILE)
            previous_state = self._state_of(k - 1) if k > 0 else None
            every = commit_every()
            while k < total:
                built = self._generation(k, previous_state)
                previous_state = built.state
                self._hold(built, every, last=k == total - 1)
                if progress is not None:
                    progress.update(k + 1)
                k += 1
            status = "complete"
        except KeyboardInterrupt:
            status, error = "interrupted", "interrupted by the user"
            raise
        except SystemExit as exc:  # a scheduler's pre-emption (submitit) or a signal handler
            status, error = "interrupted", f"stopped by the process's exit ({exc.code})"
            raise
        except PluginFailure as exc:
            status, error = "failed", str(exc)
            raise
        except BenchError as exc:
            status, error = "failed", str(exc)
            raise
        except OSError as exc:
            status, error = "failed", _os_message(exc, self.path, out=True)
            raise BenchError(error) from exc
        except Exception as exc:
            status, error = "failed", f"{type(exc).__name__}: {exc}"
            self.log("".join(traceback.format_exception(exc)))
            raise
        finally:
            # Whatever stopped the run, run.json ends in a true final status (never "running").
            # A failed run writes run.json first: on a full disk, the small file most likely fits.
            R.remove_temporaries(self.path / R.GENS_DIR)  # a failed build's folder: free its space
            if self._pending and status != "complete":  # the generations finished before the stop
                try:
                    self._commit()
                except (OSError, BenchError):
                    self._pending = []
                    R.remove_temporaries(self.path / R.GENS_DIR)
            done = R.finished_generations(self.path)
            failed_after = None
            if status == "complete":
                outcome = self._consolidated(RunOutcome(self.path, spec, status, done), raising=False)
                if outcome.status == "failed":  # a damaged generation folder (its metrics)
                    status, error = outcome.status, outcome.error
                    failed_after = BenchError(error)
            try:
                self._write_run_json(status if status != "running" else "failed", done, error)
                self.log(f"stop: {status}, {done} generation(s) finished" + (f": {error}" if error else ""))
            except OSError as exc:  # a full disk: the generation folders already hold everything
                if status == "complete" and failed_after is None:  # run.json still says "running"
                    status, error = "failed", _os_message(exc, self.path, out=True)
                    failed_after = BenchError(error)
            if status != "complete":
                self._consolidated(RunOutcome(self.path, spec, status, done, error), raising=False)
            if progress is not None:
                progress.close()
            if status != "running":
                try:
                    self.b.emit("bench_run_finished", run=self.info, status=status, error=error)
                except PluginError as exc:
                    if status == "complete":
                        raise
                    self.log(str(exc))
            if failed_after is not None:
                raise failed_after
        return RunOutcome(self.path, spec, status, done, error)

    def _clean_up_after_kill(self) -> int:
        """Remove what a killed process left (temporary files and folders of the run folder and
        of gens/, the state a kill kept from being pruned); return the finished generations."""
        for folder in (self.path, self.path / R.GENS_DIR):
            for leftover in R.remove_temporaries(folder):
                self.log(f"removed {leftover.name}, left by a killed write")
        found = R.units(self.path)
        done = found[-1][1] + 1 if found else 0
        if len(found) >= 3 and self._killed():
            before = found[-2][1]  # the last generation of the folder before the newest
            if self._pruned(before) and (found[-2][2] / RF.STATE_FILE).exists() and not any(
                    self._pruned(u[1]) and (u[2] / RF.STATE_FILE).exists() for u in found[1:-2]):
                # A kill between committing the newest folder and pruning; when earlier states the
                # rule drops are still there, an earlier run kept them on purpose (--keep-states all).
                self._prune_states(found[-1][0])
        return done

    def _killed(self) -> bool:
        """Whether run.json says a process was running this run when it stopped (we hold the lock,
        so that process is gone): only then can a kill have kept a state from being pruned."""
        try:
            return (self.path / R.RUN_JSON).exists() and RF.read_run_json(self.path).status == "running"
        except BenchError:
            return False

    def _holds_more(self, done: int) -> RunOutcome:
        """Fewer generations asked for than the run folder holds: change nothing, say so."""
        old = RF.read_run_json(self.path)
        message = (f"run folder {self.path} already holds generations 0..{done - 1}, more than the "
                   f"{self.spec.generations} asked for: nothing was changed")
        if old.complete:
            warnings.warn(message, stacklevel=3)
            return RunOutcome(self.path, self.spec, "complete", done)
        message += f" (give --generations {old.generations_requested} to finish it)"
        warnings.warn(message, stacklevel=3)
        status = old.status if old.status in ("interrupted", "failed") else "interrupted"  # "running": killed
        return RunOutcome(self.path, self.spec, status, done, message)

    def _pruned(self, j: int) -> bool:
        """Whether ``keep_states`` drops M_j's state once a later generation is finished."""
        if j < 1 or self.keep_states == "all":
            return False
        return not (self.keep_states.startswith("every:") and j % int(self.keep_states.split(":")[1]) == 0)

    def _consolidated(self, outcome: RunOutcome, raising: bool = True) -> RunOutcome:
        """Write metrics.parquet from the generation folders; a damaged one (or any error but a
        full disk, after which the folders still hold everything) makes the outcome failed, and
        run.json says so; ``raising`` raises it as a BenchError."""
        try:
            RF.consolidate(self.path, {"identity": self._identity()}, outcome.generations_done, known=self._rows)
            return outcome
        except OSError as exc:
            if exc.errno == errno.ENOSPC or not raising:
                return outcome
            error = _os_message(exc, self.path, out=True)
        except BenchError as exc:
            error = str(exc)
        except Exception as exc:  # noqa: BLE001 - recorded in run.json and raised as a message
            error = f"cannot write {self.path / R.METRICS_FILE}: {type(exc).__name__}: {exc}"
        failed = RunOutcome(self.path, self.spec, "failed", outcome.generations_done, error)
        if raising:
            self._write_run_json("failed", outcome.generations_done, error)
            self.log(f"stop: failed: {error}")
            raise BenchError(error)
        return failed

    def _after_commit(self, generations: Sequence[int]) -> None:
        """The generations just committed (one folder): prune, then tell the hooks, in order."""
        self._prune_states(generations[0])
        for k in generations:
            self.info.done = k + 1
            self.b.emit("bench_generation_finished", run=self.info, generation=k, metrics=self._rows.get(k, self._last_rows))

    def _hold(self, built: GenerationResult, every: float, last: bool) -> None:
        """Add a built generation to the pending ones and commit as the chunk rules say
        (COMMIT_EVERY_S = ``every``, CHUNK_GENERATIONS, CHUNK_BYTES). A slow generation (or
        ``every`` 0) is committed alone, after the pending ones; so is a generation whose
        samples have another schema than the pending ones' (one Parquet file holds one schema)."""
        slow = built.seconds >= R.SLOW_GENERATION_S or every == 0
        if self._pending and (slow or not built.samples.schema.equals(self._pending[-1].samples.schema,
                                                                      check_metadata=True)):
            self._commit()
            self._pending_since = time.monotonic() - built.seconds
        if self._pending and self._pruned(self._pending[-1].generation):
            before = self._pending[-1]  # no longer the chunk's last: its state is not written
            self._pending_bytes -= _state_bytes(before.state)
            before.state = {}
        self._pending.append(built)
        samples = built.latest.samples
        self._pending_bytes += samples.data.nbytes + 24 * len(samples) + _state_bytes(built.state)  # + 3 scores
        if slow or last or time.monotonic() - self._pending_since >= every \
                or len(self._pending) >= CHUNK_GENERATIONS or self._pending_bytes >= CHUNK_BYTES:
            self._commit()

    def _commit(self) -> None:
        """Write the pending generations (one folder, or a chunk ``gens/<first>-<last>`` of
        several) to a temporary folder and rename it into place."""
        pending, self._pending = self._pending, []
        self._pending_bytes = 0
        if not pending:
            return
        first, last = pending[0].generation, pending[-1].generation
        parent = self.path / R.GENS_DIR
        sync = sum(g.seconds for g in pending) >= R.SLOW_GENERATION_S  # a fast one costs less to redo than to flush
        tmp = self._write_unit(parent, pending, R.chunk_name(first, last), sync)
        R.fsync_dir(tmp, sync)
        os.replace(tmp, parent / R.chunk_name(first, last))
        R.fsync_dir(parent, sync)
        self._after_commit([g.generation for g in pending])

    def _write_unit(self, parent: Path, built: list[GenerationResult], name: str, sync: bool) -> Path:
        """The files of generations ``built`` in a new temporary folder of ``parent``: one
        generation's folder, or a chunk's (module docstring of bench.results)."""
        # unique per process and thread: chains of a group build their generation 0 side by side
        # (``name``: the shared generation 0's cache name, so a resume finds what a kill left of it)
        tmp = parent / f".{name}.{os.getpid()}-{threading.get_ident()}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        last = built[-1]
        try:
            R.write_state(tmp / RF.STATE_FILE, last.state, atomic=False, sync=sync)
            if len(built) == 1:
                R.write_parquet(tmp / RF.SAMPLES_FILE, last.samples, atomic=False, sync=sync)
                R.write_parquet(tmp / R.METRICS_FILE, RF.gen_metrics_table(last.rows), atomic=False, sync=sync)
                R.write_json(tmp / RF.INFO_FILE, last.info, atomic=False, sync=sync)
            else:
                kept = {f"{R.gen_name(g.generation)}/{key}": value for g in built[:-1]
                        if not self._pruned(g.generation) for key, value in g.state.items()}
                if kept:
                    R.write_state(tmp / RF.STATES_FILE, kept, atomic=False, sync=sync)
                tables = [g.samples.add_column(0, "generation", pa.array(np.full(g.samples.num_rows, g.generation,
                                                                                  dtype=np.int64)))
                          for g in built]
                R.write_parquet(tmp / RF.SAMPLES_FILE, pa.concat_tables(tables), atomic=False, sync=sync,
                                use_dictionary=False)
                R.write_parquet(tmp / R.METRICS_FILE, RF.gen_metrics_table([r for g in built for r in g.rows]),
                                atomic=False, sync=sync)
                R.write_json(tmp / RF.INFO_FILE, {"generations": [g.info for g in built]}, atomic=False, sync=sync)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # a full disk: give its space back at once
            raise
        return tmp

    def _pending_result(self, k: int) -> GenerationResult | None:
        """Generation k when it is built but not yet committed."""
        return next((g for g in self._pending if g.generation == k), None)

    def _state_of(self, k: int) -> State:
        """M_k's state from the run folder (the newest finished generation's is always kept)."""
        state = RF.generation_state(self.path, k)
        if state is None:
            raise BenchError(f"{self.path}: the state of generation {k} is missing; remove that generation's "
                             "folder and run the same command again to compute it anew")
        return state

    def _gen_dir(self, k: int) -> Path:
        return self.path / R.GENS_DIR / R.gen_name(k)

    def _call(self, role: str, name: str, fn, *args, **kwargs):
        """Run a plugin's component; an exception becomes a PluginFailure naming the plugin."""
        try:
            return fn(*args, **kwargs)
        except (KeyboardInterrupt, BenchError):
            raise
        except Exception as exc:
            self.log("".join(traceback.format_exception(exc)))
            raise PluginFailure(
                f"{role} {name!r} of plugin {self._plugin(role, name)!r} failed: {type(exc).__name__}: {exc} "
                f"(traceback in {self.path / R.LOG_FILE})"
            ) from exc

    def _plugin(self, role: str, name: str) -> str:
        """The name of the plugin that registered component ``name`` of ``role`` (``trainer``, ...)."""
        kind = {v: k for k, v in SINGULAR.items()}[role]
        return self.b.owner(kind, name).name

    def _breach(self, role: str, name: str, k: int, got: str, expected: str) -> PluginFailure:
        """A component broke its contract: what came back at generation k, and what was expected."""
        return PluginFailure(f"{role} {name!r} of plugin {self._plugin(role, name)!r} returned {got} at generation "
                             f"{k}; {expected}. `bench.conformance` checks this contract.")

    def _check_finite(self, k: int, what: str, role: str, name: str, arrays: dict[str, Any],
                      allow_neg_inf: bool = False) -> None:
        """Non-finite values in ``arrays`` (``what`` of generation k, made by the component): with
        on_nonfinite stop the run stops (NonFiniteValues); with record they are noted for the
        generation's info.json and the first is recorded in run.json (``nonfinite``)."""
        found = _nonfinite(arrays, allow_neg_inf)
        if found is None:
            return
        where = f"{what} from {role} {name!r} of plugin {self._plugin(role, name)!r}: {found}"
        self._mark_nonfinite(k, where)

    def _mark_nonfinite(self, k: int, where: str) -> None:
        message = f"non-finite values at generation {k}: {where}"
        if self.on_nonfinite == "stop":
            self._nonfinite = {"generation": k, "found": message, "on_nonfinite": "stop"}
            kept = f"generations 0..{k - 1}" if k else "no generation"
            raise NonFiniteValues(
                f"{message}. The run stops (on_nonfinite stop), keeping {kept}; every later "
                "generation would inherit them. Fix the component, or run again with --on-nonfinite record "
                "to go on and mark the generations")
        self._marks.append(where)
        if self._nonfinite is None:
            self._nonfinite = {"generation": k, "found": message, "on_nonfinite": "record"}
            note = f"{message}; the run goes on (on_nonfinite record) and marks this and later generations"
            warnings.warn(note, stacklevel=2)
            self.log("warning: " + note)

    def _cached_nonfinite(self, cache: Path) -> None:
        """A shared generation 0 built by a run that recorded non-finite values (on_nonfinite
        record): this run stops or records them as if it had built it."""
        try:
            marks = R.read_json(cache / RF.INFO_FILE).get("nonfinite")
        except (OSError, ValueError, AttributeError):
            return  # an unreadable info.json: the copy and validate report it
        if isinstance(marks, list) and marks:
            self._mark_nonfinite(0, f"{marks[0]} (in the shared generation 0)")
            self._marks = []  # generation 0's info.json already holds them

    def _nonfinite_record(self, old: Any, done: int) -> dict[str, Any] | None:
        """run.json's ``nonfinite``: found by this process, else the earlier record while the
        generation it names is still on disk (a stopped run resumed after a fix records none)."""
        before = getattr(old, "nonfinite", None)
        if not (isinstance(before, dict) and isinstance(before.get("generation"), int) and before["generation"] < done):
            before = None
        mine = self._nonfinite
        if before is not None and (mine is None or before["generation"] < mine.get("generation", done)):
            return before  # the first generation that held them
        return mine

    def _load_real(self) -> None:
        real = self._call("model", self.bundle.name, self.bundle.load_real,
                          RealRequest(params=self.spec.params, seed=self.spec.seed))
        self.real = real
        self.real_data_fingerprint = real.fingerprint or None
        self.real_data_source = real.source or real.fingerprint or None
        self.data_provenance = dict(real.provenance)
        if not real.source:
            plugin = self.b.owner("models", self.bundle.name).name
            message = (f"model bundle {self.bundle.name!r} of plugin {plugin!r} gives its real data no `source`, "
                       "so each seed gets its own leaderboard track; set RealData.source to name the data "
                       "independently of the seed (a distribution and sample sizes, a dataset)")
            warnings.warn(message, stacklevel=2)
            self.log("warning: " + message)

    def _score(self, state, samples: Samples) -> Scores:
        name = self.scorer.name
        scores = self._call("scorer", name, self.scorer.score,
                            ScoreRequest(state=state, samples=samples, params=self.spec.params))
        n = len(samples)
        if not isinstance(scores, Scores):
            raise self._breach("scorer", name, self._building, _shown(scores),
                               f"the harness expected bench.Scores(loglik, units) for {n} samples")
        shapes = (np.shape(scores.loglik), np.shape(scores.units))
        if shapes != ((n,), (n,)):
            raise self._breach("scorer", name, self._building,
                               f"Scores with loglik of shape {shapes[0]} and units of shape {shapes[1]}",
                               f"the harness expected one log-likelihood and one unit count per sample, "
                               f"shape ({n},) each")
        return scores

    def _initial_state(self):
        if self.trainer.initial_state is None:
            return None
        if self._pretrained is None:
            self._pretrained = self._call("trainer", self.trainer.name, self.trainer.initial_state,
                                          self.spec.params, rng(self.spec.seed, 0, INIT))
        return self._pretrained

    def _fit(self, k: int, data: Samples, init) -> dict:
        start = "pretrained" if k == 0 else self.spec.start
        request = FitRequest(data=data, validation=self.real.validation, start=start, init=init,
                             params=self.spec.params, rng=rng(self.spec.seed, k, TRAIN), generation=k,
                             report=reporter("fit", k, self._progress, self.log))
        state = self._call("trainer", self.trainer.name, self.fit, request)
        expected = "the harness expected the model state, a dict of name: numpy array (bench.State)"
        if not isinstance(state, Mapping) or not all(isinstance(key, str) for key in state):
            raise self._breach("trainer", self.trainer.name, k, _shown(state), expected)
        arrays = {key: np.asarray(v) for key, v in state.items()}
        odd = [key for key, a in arrays.items() if a.dtype.kind not in "biufc"]
        if odd:
            raise self._breach("trainer", self.trainer.name, k, f"a state whose {odd[0]!r} is "
                               f"{_shown(state[odd[0]])}", expected + " of numbers")
        self._check_finite(k, "the state", "trainer", self.trainer.name, arrays)
        return arrays

    def _generation_zero(self) -> None:
        """M_0 and its row; shared through a cache by runs that differ only in policy or start."""
        cache_root = self.out / GEN0_CACHE
        _make_dir(cache_root)
        cache = cache_root / gen0_cache_key(self.b, self.spec)
        with FolderLock(cache_root / f"{cache.name}.lock", "the shared generation 0", blocking=True):
            _clean_cache_tmp(cache_root, cache.name)
            if not cache.is_dir():
                built = self._build_generation(0, self.real.train, self._initial_state(), None)
                sync = built.seconds >= R.SLOW_GENERATION_S
                folder = self._write_unit(cache_root, [built], cache.name, sync)
                R.fsync_dir(folder, sync)
                os.replace(folder, cache)
                R.fsync_dir(cache_root, sync)
            else:
                self._cached_nonfinite(cache)
            target = self._gen_dir(0)
            _make_dir(target.parent)
            tmp = target.parent / f".{target.name}.tmp"
            sync = _slow(cache / "info.json")
            try:
                R.copy_folder(cache, tmp, sync)
                R.fsync_dir(tmp, sync)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)  # a full disk: give its space back at once
                raise
            os.replace(tmp, target)
            R.fsync_dir(target.parent, sync)
        self._last_rows = R.read_parquet_rows(target / R.METRICS_FILE)

    def _latest_scores(self, synthetic: "History") -> SampleScores | None:
        """S_k (``synthetic[-1]``) with its scores under M_{k-1} and M_0: those this process
        computed when it built generation k-1, else those samples.parquet holds."""
        k = len(synthetic)
        samples = synthetic[-1]
        built = self._latest if self._latest is not None and self._latest.generation == k - 1 \
            else self._pending_result(k - 1)
        if built is not None:
            return SampleScores(samples, built.latest.model, built.latest.reference)
        _, columns = RF.generation_samples(self.path, k - 1)
        if not {"loglik_model", "loglik_reference", "units"} <= set(columns):
            return None  # a folder written without scores: policies score for themselves
        units = columns["units"]
        return SampleScores(samples, model=Scores(columns["loglik_model"], units),
                            reference=Scores(columns["loglik_reference"], units))

    def _generation(self, k: int, previous_state) -> GenerationResult:
        spec = self.spec
        self._building = k
        started = time.monotonic()
        synthetic = History(self, k)  # S_1..S_k
        latest = self._latest_scores(synthetic)
        n = len(self.real.train)
        candidates, verify, drawn = None, None, None
        if self.policy.candidates is not None:
            # A selecting policy: S_k and as many extra samples of M_{k-1} as it asks for.
            drawn = int(self._call("policy", self.policy.name, self.policy.candidates, spec.policy_params, n))
            if drawn < n:
                raise PluginFailure(f"policy {self.policy.name!r} asked for {drawn} candidates, fewer than the "
                                    f"{n} samples of S_{k}; `candidates` must return at least n")
            candidates = synthetic[-1]
            if drawn > n:
                extra = self._generate(previous_state, drawn - n, k, CANDIDATES)
                candidates = Samples.concat([candidates, extra])
            verify = self._verifier(k, previous_state, latest)
        record: dict[str, Any] = {}
        pctx = PolicyContext(generation=k, real=self.real, synthetic=synthetic, params=spec.policy_params,
                             rng=rng(spec.seed, k, POLICY), score=lambda s: self._score(previous_state, s),
                             candidates=candidates, verify=verify, state=previous_state,
                             model_params=spec.params, record=record, latest=latest)
        data = self._call("policy", self.policy.name, self.policy.build, pctx)
        if not isinstance(data, Samples) or data.kind != self.bundle.kind:
            got = f"{len(data)} samples of kind {data.kind}" if isinstance(data, Samples) else _shown(data)
            raise self._breach("policy", self.policy.name, k, got,
                               f"the harness expected the training data D_{k}, bench.Samples of kind "
                               f"{self.bundle.kind}")
        if drawn is not None:
            record = {"candidates_drawn": drawn, **record}
        init = {"pretrained": self._initial_state, "gen0": lambda: self.reference_state,
                "previous": lambda: previous_state}[spec.start]()
        built = self._build_generation(k, data, init, self.reference_state, policy_record=record)
        if not self._pending:
            self._pending_since = started
        return built

    def _verifier(self, k: int, state, latest: SampleScores | None):
        """The verifier the policy's ``verifier`` parameter names, bound to M_{k-1} and M_0."""
        name = self.spec.policy_params.get("verifier")
        if name is None:
            return None
        verifier = self.b.verifiers.get(name)
        vctx = VerifyContext(generation=k, real=self.real, state=state, reference_state=self.reference_state,
                             score=self._score, params=self.spec.params, latest=latest)

        def verify(samples: Samples) -> np.ndarray:
            scores = np.asarray(self._call("verifier", name, verifier.score, vctx, samples), dtype=np.float64)
            if scores.shape != (len(samples),):
                raise PluginFailure(f"verifier {name!r} returned scores of shape {scores.shape} for "
                                    f"{len(samples)} samples; it must return one float per sample")
            return scores

        return verify

    def _generate(self, state, n: int, k: int, stream: int) -> Samples:
        """n samples of the model ``state`` from random stream ``stream`` of generation k; the
        prompts (the real training set) repeat when n exceeds them."""
        prompts = self.real.train
        if n > len(prompts):
            prompts = prompts.take(np.arange(n) % len(prompts))
        request = GenerateRequest(state=state, n=n, prompts=prompts, params=self.spec.params,
                                  rng=rng(self.spec.seed, k, stream), generation=k,
                                  report=reporter("generate", k, self._progress, self.log))
        name = self.generator.name
        samples = self._call("generator", name, self.generator.generate, request)
        kind = self.bundle.kind
        if not isinstance(samples, Samples) or len(samples) != n or samples.kind != kind:
            got = (_shown(samples) if not isinstance(samples, Samples) else f"{len(samples)} samples"
                   if samples.kind == kind else f"{len(samples)} samples of kind {samples.kind}")
            raise self._breach("generator", name, k, got,
                               f"the harness asked for bench.Samples of n = {n}, of kind {kind}")
        self._check_finite(k, "the samples", "generator", name, {"data": samples.data})
        return samples

    def _build_generation(self, k: int, data: Samples, init, reference_state,
                          policy_record: dict | None = None) -> GenerationResult:
        """Fit M_k, draw S_{k+1}, score and measure: the generation in memory, to be committed."""
        spec = self.spec
        self._building = k
        times = {}
        t = time.perf_counter()
        state = self._fit(k, data, init)
        times["fit_s"] = time.perf_counter() - t
        reference = state if reference_state is None else reference_state

        t = time.perf_counter()
        samples = self._generate(state, len(self.real.train), k, GENERATE)
        times["generate_s"] = time.perf_counter() - t

        t = time.perf_counter()
        ref_scores = self._score(reference, samples)
        own_scores = ref_scores if reference_state is None else self._score(state, samples)
        for model, scores in [("M_0", ref_scores)] + [(f"M_{k}", own_scores)] * (own_scores is not ref_scores):
            self._check_finite(k, f"the scores under {model}", "scorer", self.scorer.name,
                               {"loglik": scores.loglik, "units": scores.units}, allow_neg_inf=True)
        ctx = MetricContext(generation=k, bundle=self.bundle, params=spec.params, real=self.real, state=state,
                            reference_state=reference, samples=samples, score=self._score,
                            rng=rng(spec.seed, k, METRICS), model_scores=own_scores, reference_scores=ref_scores,
                            # M_0 and the real test set are fixed: score them once a run
                            reference_test_scores=self._ref_test)
        rows = []
        for metric in self.metrics:
            value = self._call("metric", metric.name, metric.compute, ctx)
            info = self.b.owner("metrics", metric.name)
            values = value.items() if isinstance(value, dict) else [(None, value)]
            for key, v in values:
                number = _metric_number(v)
                if number is None or not (key is None or isinstance(key, str)):
                    got = _shown(value) if key is None else f"a dict whose {key!r} is {_shown(v)}"
                    raise self._breach("metric", metric.name, k, got,
                                       "a metric returns a number (float; NaN where undefined) or a dict of "
                                       "name: number")
                rows.append({
                    "generation": k,
                    "metric": metric.name if key is None else f"{metric.name}/{key}",
                    "value": number,
                    "direction": metric.direction,
                    "target": metric.target,
                    "metric_version": metric.version,
                    "metric_plugin": info.name,
                    "metric_plugin_version": info.version,
                })
        times["measure_s"] = time.perf_counter() - t
        self._ref_test = ctx.reference_test_scores
        if self.bundle.throughput:
            harness = {"metric_plugin": "bench", "metric_plugin_version": bench.__version__,
                       "direction": "higher", "target": None, "metric_version": "1", "generation": k}
            units = float(samples.data.size)  # array elements drawn: tokens for text
            rows.append({**harness, "metric": "throughput/generate-units-per-s",
                         "value": units / max(times["generate_s"], 1e-9)})
            rows.append({**harness, "metric": "throughput/fit-samples-per-s",
                         "value": len(data) / max(times["fit_s"], 1e-9)})

        marks, self._marks = self._marks, []  # on_nonfinite record: what this generation holds
        table = R.samples_table(samples, {"loglik_reference": ref_scores.loglik, "loglik_model": own_scores.loglik,
                                          "units": ref_scores.units})
        info = {"generation": k, "training_samples": len(data), **(policy_record or {}), **times,
                **({"nonfinite": marks} if marks else {})}
        self._last_rows = self._rows[k] = rows
        self._remember(k + 1, samples)
        latest = SampleScores(samples, _as_float64(own_scores), _as_float64(ref_scores))
        self._latest = GenerationResult(generation=k, state=state, latest=latest, rows=rows, samples=table,
                                        info=info, seconds=sum(times.values()))
        return self._latest

    def _remember(self, key: int, samples: Samples) -> None:
        """Keep S_key in memory; drop the oldest kept sets beyond HISTORY_BYTES (the newest stays).
        Policies that read older sets get them back from the generation folders."""
        replaced = self._history.pop(key, None)
        self._history_bytes -= replaced.data.nbytes if replaced is not None else 0
        self._history[key] = samples
        self._history_bytes += samples.data.nbytes
        while self._history_bytes > HISTORY_BYTES and len(self._history) > 1:
            oldest = next(iter(self._history))
            self._history_bytes -= self._history.pop(oldest).data.nbytes

    def _prune_states(self, first: int) -> None:
        """After committing the folder whose first generation is ``first``: keep M_0 and the
        newest state; the state of the folder before (its last generation's) per ``keep_states``
        (first-last, all, every:N)."""
        old = first - 1
        if not self._pruned(old):
            return
        unit = R.unit_of(self.path, old)
        path = unit[2] / RF.STATE_FILE if unit is not None and unit[1] == old else None
        if path is not None and path.exists():
            path.unlink()


class History:
    """S_1..S_k as a read-only sequence, loaded from the generation folders on demand."""

    def __init__(self, run: Run, k: int) -> None:
        self.run = run
        self.k = k

    def __len__(self) -> int:
        return self.k

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.k))]
        if i < 0:
            i += self.k
        if not 0 <= i < self.k:
            raise IndexError(i)
        key = i + 1  # S_{i+1} was drawn by M_i
        samples = self.run._history.get(key)
        if samples is None:
            pending = self.run._pending_result(i)
            samples = pending.latest.samples if pending is not None else RF.generation_samples(self.run.path, i)[0]
            self.run._remember(key, samples)
        return samples

    def __iter__(self):
        return (self[i] for i in range(self.k))


# -- helpers ------------------------------------------------------------------------------------


def _make_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchError(_os_message(exc, path, out=True)) from None
    if not os.access(path, os.W_OK):
        raise BenchError(f"cannot write to {path}: permission denied. Choose another folder with --out.")


def _clean_cache_tmp(cache_root: Path, name: str) -> None:
    """Remove the temporary folders a killed build of the shared generation 0 ``name`` left (call
    it holding that generation's lock), and those of older versions (``.000000.<pid>-...``) whose
    process is gone."""
    R.remove_temporaries(cache_root, prefix=f".{name}.")
    for p in cache_root.glob(f".{R.gen_name(0)}.*.tmp"):
        pid = p.name.split(".")[2].split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


def _slow(info: Path) -> bool:
    """Whether the generation whose info.json this is took SLOW_GENERATION_S or more to build."""
    try:
        times = R.read_json(info)
        return sum(times.get(k, 0) for k in ("fit_s", "generate_s", "measure_s")) >= R.SLOW_GENERATION_S
    except (OSError, ValueError, TypeError, AttributeError):
        return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # another user's process
    return True


def _os_message(exc: OSError, path: Path, out: bool = False) -> str:
    """A message for an OSError; ``out``: it came from writing a run, whose command has --out."""
    where = exc.filename or path
    if exc.errno == errno.ENOSPC:
        return (f"the disk is full while writing {where}. Free some space and run the same command "
                "again: finished generations are kept and the run resumes after the last one.")
    if exc.errno == errno.EROFS:
        return f"cannot write to {where}: {exc.strerror}." + (" Choose another folder with --out." if out else "")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (f"cannot access {where}: {exc.strerror}. Check its permissions"
                + (", or choose another folder with --out." if out else "."))
    return f"cannot {'write' if out else 'access'} {where}: {exc.strerror or exc}"


# -- chains in lockstep ---------------------------------------------------------------------------


def batchable(b: Bench, spec: Spec) -> bool:
    """Whether the spec's trainer can fit several chains at once (it has ``fit_batch``)."""
    return b.trainers.get(spec.trainer).fit_batch is not None


class _Rendezvous:
    """Collects the fit requests of a group's chains and fits them with one ``fit_batch`` call.

    A chain that asks for a fit waits until every chain still running has asked too (whatever its
    generation), then one of them calls ``fit_batch`` for all. A chain that stops (finished,
    failed) leaves the group so that the others never wait for it.
    """

    def __init__(self, trainer, members: int) -> None:
        self.trainer = trainer
        self.active = members
        self.pending: list[tuple[FitRequest, dict]] = []
        self.cond = threading.Condition()
        self.cancelled = False
        self.batches: list[int] = []  # sizes of the fit_batch calls made (for tests and logs)

    def fit(self, request: FitRequest):
        slot: dict[str, Any] = {}
        with self.cond:
            if self.cancelled:  # the group was stopped: no chain starts another fit
                raise KeyboardInterrupt
            self.pending.append((request, slot))
            if len(self.pending) >= self.active:
                self._flush()
            while "done" not in slot:
                if self.cancelled:
                    raise KeyboardInterrupt
                self.cond.wait(timeout=0.5)
        if "error" in slot:
            raise slot["error"]
        return slot["state"]

    def leave(self) -> None:
        with self.cond:
            self.active -= 1
            if self.pending and len(self.pending) >= self.active:
                self._flush()

    def cancel(self) -> None:
        with self.cond:
            self.cancelled = True
            self.cond.notify_all()

    def _flush(self) -> None:  # called with the lock held, by the last chain to arrive
        batch, self.pending = self.pending, []
        self.batches.append(len(batch))
        try:
            states = self.trainer.fit_batch([request for request, _ in batch])
            if len(states) != len(batch):
                raise RuntimeError(f"fit_batch returned {len(states)} states for {len(batch)} requests")
            for (_, slot), state in zip(batch, states):
                slot["state"] = state
        except Exception:
            # Refit each request alone (the same states, by the fit_batch contract), so that only
            # the chains whose own fit fails stop; each reports it as its trainer's failure.
            for request, slot in batch:
                try:
                    slot["state"] = self.trainer.fit(request)
                except Exception as exc:
                    slot["error"] = exc
        for _, slot in batch:
            slot["done"] = True
        self.cond.notify_all()


def run_group(b: Bench, specs: Sequence[Spec], out: Path, keep_states: str = "first-last",
              progress: Callable[[Spec], Any] | None = None, raise_errors: bool = True,
              on_nonfinite: str = DEFAULT_ON_NONFINITE) -> list[RunOutcome]:
    """Run several chains of one batch-capable trainer in lockstep, one thread per chain.

    Every generation's fits go to the trainer's ``fit_batch`` together; everything else (policy,
    generation, metrics, files) is each chain's own, exactly as in a lone run, so results equal
    those of the chains run one by one (the trainer guarantees its part). ``progress(spec)`` makes
    each chain's progress display. With ``raise_errors`` the first failure is raised once every
    chain has stopped; otherwise failures come back as outcomes with status ``failed``.
    """
    specs = list(specs)
    if not specs:
        return []
    trainers = {spec.trainer for spec in specs}
    if len(trainers) != 1 or not batchable(b, specs[0]):
        raise BenchError(f"run_group needs specs of one batch-capable trainer, got {sorted(trainers)}")
    rendezvous = _Rendezvous(b.trainers.get(specs[0].trainer), len(specs))
    outcomes: list[RunOutcome | None] = [None] * len(specs)
    errors: list[BaseException | None] = [None] * len(specs)

    def chain(i: int, spec: Spec) -> None:
        run = Run(b, spec, Path(out), keep_states=keep_states, fit=rendezvous.fit, on_nonfinite=on_nonfinite)
        try:
            outcomes[i] = run.execute(progress(spec) if progress else None)
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            errors[i] = exc
            done = R.finished_generations(run.path) if run.path.is_dir() else 0
            status = ("interrupted" if isinstance(exc, (KeyboardInterrupt, SystemExit))
                      else "busy" if isinstance(exc, RunLocked) else "failed")
            outcomes[i] = RunOutcome(run.path, spec, status, done, str(exc) or type(exc).__name__)
        finally:
            rendezvous.leave()
            with finished:
                stopped[0] += 1
                finished.notify_all()

    # The main thread waits on a condition, not in Thread.join: a Ctrl-C that lands inside join()
    # can mark the joined thread as stopped while it still runs (CPython, bpo-45274), and the
    # process would then exit under that chain before it records how it stopped.
    finished, stopped = threading.Condition(), [0]

    def wait_all(timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with finished:
            while stopped[0] < len(specs):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return
                finished.wait(timeout=0.5 if left is None else min(left, 0.5))

    threads = [threading.Thread(target=chain, args=(i, spec), name=f"chain-{spec.seed}", daemon=True)
               for i, spec in enumerate(specs)]
    for t in threads:
        t.start()
    try:
        wait_all()
    except KeyboardInterrupt:
        rendezvous.cancel()  # chains stop at their next fit; finished generations stay
        wait_all(timeout=60)
        raise
    if raise_errors:
        for exc in errors:
            if exc is not None:
                raise exc
    return [o for o in outcomes if o is not None]
