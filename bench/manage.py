"""Keeping runs manageable: list them with their state, and re-score them with new metrics."""

from __future__ import annotations

import fcntl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable


from bench import results as R
from bench import runfolder as RF
from bench.components import MetricContext, RealRequest, ScoreRequest, Scores
from bench.errors import BenchError
from bench.loop import METRICS, FolderLock, rng
from bench.plugins import Bench
from bench.runfolder import RunJsonError


@dataclass
class RunState:
    """What ``bench runs`` shows of one run folder (:func:`run_state`)."""

    path: Path
    plugin: str
    preset: str
    policy: str
    seed: int
    state: str  # complete, running, partial, failed, unreadable
    done: int
    requested: int | None
    reason: str = ""


def _locked(run_dir: Path) -> bool:
    """Whether a live process holds the run's lock (a killed one holds nothing)."""
    lock = run_dir / ".lock"
    if not lock.exists():
        return False
    with open(lock, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
    return False


def run_state(run_dir: Path) -> RunState:
    """What a run folder holds: complete, running (a process works in it), partial (stopped before
    its last generation: interrupted or killed; the same command resumes it), failed (with the
    reason), or unreadable."""
    run_dir = Path(run_dir)
    try:
        info = RF.read_run_json(run_dir)
    except RunJsonError as exc:
        return RunState(run_dir, "?", "?", "?", -1, "unreadable", 0, None, f"run.json: {exc.reason}")
    spec = info.spec
    done = R.finished_generations(run_dir)
    requested = info.generations_requested
    reason = ""
    if _locked(run_dir):
        state = "running"
    elif done >= requested + 1:
        state = "complete"
    elif info.status == "failed":
        state, reason = "failed", info.error or "unknown error"
    else:
        state = "partial"
        reason = "interrupted" if info.status == "interrupted" else "stopped (killed, or extended and not rerun)"
    return RunState(run_dir, spec["plugin"], spec["preset"], info.policy_label, spec["seed"], state, done,
                    requested, reason)


def list_runs(paths: Iterable[str | Path]) -> list[RunState]:
    """The state of every run folder at or below ``paths``."""
    return [run_state(p) for p in RF.find_runs(paths)]


# -- rescoring ----------------------------------------------------------------------------------


class StateNotKept(Exception):
    """A metric asked for a model state that was not kept."""


class MissingState(dict):
    """Stands for M_k's state where it was not kept: any use of it raises StateNotKept."""

    def __getitem__(self, key):
        raise StateNotKept

    def __iter__(self):
        raise StateNotKept

    def __len__(self):
        raise StateNotKept

    def get(self, key, default=None):
        raise StateNotKept

    def items(self):
        raise StateNotKept

    def keys(self):
        raise StateNotKept

    def values(self):
        raise StateNotKept


@dataclass
class RescoreResult:
    path: Path
    generations: int
    rows: int
    skipped: list[int]


def rescore(b: Bench, run_dir: Path, metric_names: list[str],
            echo: Callable[[str], None] = lambda s: None) -> RescoreResult:
    """Compute metrics anew for every finished generation from the saved samples and model states.

    Rows of these metrics replace any earlier rows of the same name in each generation; others are
    kept. Scores under M_0 come from the samples file; a metric that scores with M_k itself needs
    M_k's state, so where it was not kept (see ``--keep-states``) that generation is skipped for
    that metric and named. The run's spec is not
    changed (that would change its id); run.json records what was rescored and when.
    """
    run_dir = Path(run_dir)
    if not (run_dir / R.RUN_JSON).is_file():
        raise BenchError(f"{run_dir} is not a run folder (it has no run.json)")
    info = RF.read_run_json(run_dir)
    spec = info.to_spec()
    missing = [k for k, _ in R.RUN_COLUMNS if k != "schema_version" and k not in info.identity]
    if missing:  # the columns every metric row is stamped with
        raise RunJsonError(f"identity lacks {', '.join(missing)}; `bench validate {run_dir}` lists the problems",
                           info.path)
    metrics = [b.metrics.get(name) for name in metric_names]
    bundle = b.models.get(spec.plugin)
    for metric in metrics:
        if bundle.kind not in metric.kinds:
            raise BenchError(f"metric {metric.name!r} does not accept {bundle.kind} samples")
    scorer = b.scorers.get(spec.scorer)
    with FolderLock(run_dir / ".lock", f"run folder {run_dir}"):
        done = R.finished_generations(run_dir)
        if done == 0:
            raise BenchError(f"run {run_dir.name} has no finished generation to rescore")
        real = bundle.load_real(RealRequest(params=spec.params, seed=spec.seed))
        reference = RF.generation_state(run_dir, 0)
        def score(state, samples):
            if isinstance(state, MissingState):
                raise StateNotKept
            return scorer.score(ScoreRequest(state=state, samples=samples, params=spec.params))

        skipped, total = [], 0
        for first, last, folder in R.units(run_dir):
            rewritten = []
            for k in range(first, last + 1):
                state = RF.generation_state(run_dir, k)
                state = MissingState() if state is None else state
                samples, scores = RF.generation_samples(run_dir, k)
                ctx = MetricContext(generation=k, bundle=bundle, params=spec.params, real=real,
                                    state=state, reference_state=reference,
                                    samples=samples, score=score, rng=rng(spec.seed, k, METRICS))
                if "loglik_reference" in scores:
                    ctx.reference_scores = Scores(scores["loglik_reference"], scores["units"])
                new_rows, missed, computed = [], False, set()
                for metric in metrics:
                    try:
                        value = metric.compute(ctx)
                    except StateNotKept:
                        missed = True
                        continue
                    except Exception as exc:
                        raise BenchError(f"metric {metric.name!r} failed on generation {k} of {run_dir.name}: "
                                         f"{type(exc).__name__}: {exc}") from exc
                    computed.add(metric.name)
                    owner = b.owner("metrics", metric.name)
                    for key, v in (value.items() if isinstance(value, dict) else [(None, value)]):
                        new_rows.append({"generation": k,
                                         "metric": metric.name if key is None else f"{metric.name}/{key}",
                                         "value": float(v), "direction": metric.direction, "target": metric.target,
                                         "metric_version": metric.version, "metric_plugin": owner.name,
                                         "metric_plugin_version": owner.version})
                if missed:
                    skipped.append(k)
                old = RF.generation_rows(run_dir, k)
                rewritten += [r for r in old if r["metric"].split("/")[0] not in computed] + new_rows
                total += len(new_rows)
                echo(f"{run_dir.name}: generation {k}: {len(new_rows)} row(s)")
            # one write per folder: a generation's own, or a chunk's rows of all its generations
            R.write_parquet(folder / R.METRICS_FILE, RF.gen_metrics_table(rewritten))
        RF.consolidate(run_dir, info, done)
        info.extra.setdefault("rescored", []).append({
            "metrics": {m.name: m.version for m in metrics},
            "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "skipped_generations": skipped,
        })
        RF.write_run_json(run_dir, info)
    return RescoreResult(run_dir, done, total, skipped)
