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
from typing import Any, Callable, Sequence

import numpy as np

import bench
from bench import results as R
from bench import runfolder as RF
from bench.components import (FitRequest, GenerateRequest, MetricContext, PolicyContext, RealData, RealRequest,
                              SampleScores, Samples, ScoreRequest, Scores, State, VerifyContext)
from bench.errors import BenchError, RunLocked
from bench.plugins import SINGULAR, Bench, PluginError
from bench.spec import Spec
from bench.types import RunInfo, RunOutcome  # re-exported: their home is bench.types

# Independent random streams of one generation.
TRAIN, GENERATE, POLICY, METRICS, INIT, CANDIDATES = range(6)
GEN0_CACHE = ".gen0"
# Synthetic samples a run keeps in memory for its policy (older ones are read back from disk).
HISTORY_BYTES = 256 * 2**20


def rng(seed: int, generation: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, generation, stream])


class PluginFailure(BenchError):
    """A plugin's component raised during a run."""


@dataclass
class GenerationResult:
    """What building generation k gives: M_k's state, S_{k+1} with its scores under M_k and M_0
    (the samples.parquet columns), the metric rows, and the temporary folder holding all of it
    until it is renamed into place."""

    generation: int
    state: State
    latest: SampleScores
    rows: list[dict[str, Any]]
    folder: Path


def _as_float64(scores: Scores) -> Scores:
    """Scores as samples.parquet stores them, so that a resumed run's policies see the same values."""
    return Scores(np.asarray(scores.loglik, dtype=np.float64), np.asarray(scores.units, dtype=np.float64))


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
                 fit: Callable[[FitRequest], State] | None = None) -> None:
        """``fit`` replaces the trainer's own ``fit`` (run_group passes its batched fit)."""
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
        self._last_rows: list[dict[str, Any]] = []  # the newest committed generation's rows
        self._pretrained = None
        self._ref_test = None  # M_0's scores of the real test set, once a metric asked for them

    # -- public ---------------------------------------------------------------------------------

    def execute(self, progress=None) -> RunOutcome:
        # The bundle's own check first: impossible settings end before any folder is made.
        self._warnings = list(self.bundle.check(self.spec.params) if self.bundle.check else ())
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
            schema_version=R.SCHEMA_VERSION,
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
        ))

    def _track(self, fingerprint: str | None) -> dict[str, Any]:
        """The fixed protocol this run belongs to: runs are ranked only against their track."""
        return RF.make_track(self.spec.plugin, self.spec.preset, self.spec.generations, fingerprint)

    def _check_resume(self) -> None:
        if not (self.path / R.RUN_JSON).exists():
            return
        old = RF.read_run_json(self.path)
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
        self._check_resume()
        _clean_tmp(self.path / R.GENS_DIR)
        done = R.finished_generations(self.path)
        self.info.done = done
        total = spec.generations + 1  # rows 0..N
        if done >= total:
            self._write_run_json("complete", done)
            R.consolidate(self.path, R.read_json(self.path / R.RUN_JSON), done)
            return RunOutcome(self.path, spec, "complete", done)
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
                self._after_commit(0, progress)
            self.reference_state = R.read_state(self._gen_dir(0) / "state.safetensors")
            previous_state = R.read_state(self._gen_dir(k - 1) / "state.safetensors") if k > 0 else None
            while k < total:
                previous_state = self._generation(k, previous_state).state
                self._after_commit(k, progress)
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
            status, error = "failed", _os_message(exc, self.path)
            raise BenchError(error) from exc
        except Exception as exc:
            status, error = "failed", f"{type(exc).__name__}: {exc}"
            self.log("".join(traceback.format_exception(exc)))
            raise
        finally:
            done = R.finished_generations(self.path)
            try:
                info = {"identity": self._identity()}
                R.consolidate(self.path, info, done, known=self._rows)
                self._write_run_json(status if status != "running" else "failed", done, error)
                self.log(f"stop: {status}, {done} generation(s) finished" + (f": {error}" if error else ""))
            except OSError:
                pass  # a full disk: the generation folders already hold everything
            if progress is not None:
                progress.close()
            if status != "running":
                try:
                    self.b.emit("bench_run_finished", run=self.info, status=status, error=error)
                except PluginError as exc:
                    if status == "complete":
                        raise
                    self.log(str(exc))
        return RunOutcome(self.path, spec, status, done, error)

    def _after_commit(self, k: int, progress) -> None:
        self.info.done = k + 1
        self._prune_states(k)
        self.b.emit("bench_generation_finished", run=self.info, generation=k, metrics=self._last_rows)
        if progress is not None:
            progress.update(k + 1)

    def _gen_dir(self, k: int) -> Path:
        return self.path / R.GENS_DIR / R.gen_name(k)

    def _call(self, role: str, name: str, fn, *args, **kwargs):
        """Run a plugin's component; an exception becomes a PluginFailure naming the plugin."""
        try:
            return fn(*args, **kwargs)
        except (KeyboardInterrupt, BenchError):
            raise
        except Exception as exc:
            kind = {v: k for k, v in SINGULAR.items()}[role]
            plugin = self.b.owner(kind, name).name
            self.log("".join(traceback.format_exception(exc)))
            raise PluginFailure(
                f"{role} {name!r} of plugin {plugin!r} failed: {type(exc).__name__}: {exc} "
                f"(traceback in {self.path / R.LOG_FILE})"
            ) from exc

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
        return self._call("scorer", self.scorer.name, self.scorer.score,
                          ScoreRequest(state=state, samples=samples, params=self.spec.params))

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
                             params=self.spec.params, rng=rng(self.spec.seed, k, TRAIN), generation=k)
        state = self._call("trainer", self.trainer.name, self.fit, request)
        return {key: np.asarray(v) for key, v in state.items()}

    def _generation_zero(self) -> None:
        """M_0 and its row; shared through a cache by runs that differ only in policy or start."""
        cache_root = self.out / GEN0_CACHE
        _make_dir(cache_root)
        cache = cache_root / self.spec.gen0_id
        with FolderLock(cache_root / f"{self.spec.gen0_id}.lock", "the shared generation 0", blocking=True):
            if not cache.is_dir():
                built = self._build_generation(0, self.real.train, self._initial_state(), None, cache_root)
                os.replace(built.folder, cache)
            target = self._gen_dir(0)
            _make_dir(target.parent)
            tmp = target.parent / f".{target.name}.tmp"
            shutil.copytree(cache, tmp)
            os.replace(tmp, target)
        self._last_rows = R.read_parquet_rows(target / R.METRICS_FILE)

    def _latest_scores(self, synthetic: "History") -> SampleScores | None:
        """S_k (``synthetic[-1]``) with its scores under M_{k-1} and M_0: those this process
        computed when it built generation k-1, else those samples.parquet holds."""
        k = len(synthetic)
        samples = synthetic[-1]
        if self._latest is not None and self._latest.generation == k - 1:
            return SampleScores(samples, self._latest.latest.model, self._latest.latest.reference)
        _, columns = R.read_samples(self._gen_dir(k - 1) / "samples.parquet")
        if not {"loglik_model", "loglik_reference", "units"} <= set(columns):
            return None  # a folder written without scores: policies score for themselves
        units = columns["units"]
        return SampleScores(samples, model=Scores(columns["loglik_model"], units),
                            reference=Scores(columns["loglik_reference"], units))

    def _generation(self, k: int, previous_state) -> GenerationResult:
        spec = self.spec
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
        if drawn is not None:
            record = {"candidates_drawn": drawn, **record}
        init = {"pretrained": self._initial_state, "gen0": lambda: self.reference_state,
                "previous": lambda: previous_state}[spec.start]()
        built = self._build_generation(k, data, init, self.reference_state, self.path / R.GENS_DIR,
                                       policy_record=record)
        os.replace(built.folder, self._gen_dir(k))
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
                                  rng=rng(self.spec.seed, k, stream), generation=k)
        samples = self._call("generator", self.generator.name, self.generator.generate, request)
        if not isinstance(samples, Samples) or len(samples) != n:
            got = f"{len(samples)} samples" if isinstance(samples, Samples) else type(samples).__name__
            raise PluginFailure(
                f"generator {self.generator.name!r} of plugin {self.b.owner('generators', self.generator.name).name!r} "
                f"returned {got} at generation {k}; the harness asked for bench.Samples of n = "
                f"{n}. `bench.conformance` checks this contract.")
        return samples

    def _build_generation(self, k: int, data: Samples, init, reference_state, parent: Path,
                          policy_record: dict | None = None) -> GenerationResult:
        """Fit M_k, draw S_{k+1}, score and measure; write all of it into a temporary folder."""
        spec = self.spec
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
                rows.append({
                    "generation": k,
                    "metric": metric.name if key is None else f"{metric.name}/{key}",
                    "value": float(v),
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

        # unique per process and thread: chains of a group build their generation 0 side by side
        tmp = parent / f".{R.gen_name(k)}.{os.getpid()}-{threading.get_ident()}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        R.write_state(tmp / "state.safetensors", state, atomic=False)
        R.write_parquet(tmp / "samples.parquet", atomic=False, table=R.samples_table(samples, {
            "loglik_reference": ref_scores.loglik, "loglik_model": own_scores.loglik,
            "units": ref_scores.units}))
        R.write_parquet(tmp / R.METRICS_FILE, R.gen_metrics_table(rows), atomic=False)
        self._last_rows = self._rows[k] = rows
        R.write_json(tmp / "info.json", {"generation": k, "training_samples": len(data), **(policy_record or {}),
                                         **times}, atomic=False)
        self._remember(k + 1, samples)
        latest = SampleScores(samples, _as_float64(own_scores), _as_float64(ref_scores))
        self._latest = GenerationResult(generation=k, state=state, latest=latest, rows=rows, folder=tmp)
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

    def _prune_states(self, k: int) -> None:
        """Keep M_0 and the newest state; others per ``keep_states`` (first-last, all, every:N)."""
        if k < 2 or self.keep_states == "all":
            return
        old = k - 1
        if self.keep_states.startswith("every:") and old % int(self.keep_states.split(":")[1]) == 0:
            return
        path = self._gen_dir(old) / "state.safetensors"
        if path.exists():
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
            samples, _ = R.read_samples(self.run._gen_dir(i) / "samples.parquet")
            self.run._remember(key, samples)
        return samples

    def __iter__(self):
        return (self[i] for i in range(self.k))


# -- helpers ------------------------------------------------------------------------------------


def _make_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchError(_os_message(exc, path)) from None
    if not os.access(path, os.W_OK):
        raise BenchError(f"cannot write to {path}: permission denied. Choose another folder with --out.")


def _clean_tmp(gens: Path) -> None:
    if gens.is_dir():
        for p in gens.glob(".*.tmp"):
            shutil.rmtree(p, ignore_errors=True)


def _os_message(exc: OSError, path: Path) -> str:
    where = exc.filename or path
    if exc.errno == errno.ENOSPC:
        return (f"the disk is full while writing {where}. Free some space and run the same command "
                "again: finished generations are kept and the run resumes after the last one.")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write to {where}: {exc.strerror}. Choose another folder with --out."
    return f"cannot write {where}: {exc.strerror or exc}"


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
              progress: Callable[[Spec], Any] | None = None, raise_errors: bool = True) -> list[RunOutcome]:
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
        run = Run(b, spec, Path(out), keep_states=keep_states, fit=rendezvous.fit)
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
