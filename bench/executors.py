"""Executors: what runs the runs of a sweep, and the one task function every executor calls.

A sweep (``bench sweep FILE``, see :mod:`bench.sweep`) turns a grid into run specs and hands them
to an executor as :class:`Task` objects. A task holds one spec, or several that differ only in
seed when their trainer can fit them in lockstep (``bench.loop.run_group``). Every executor, in
whatever process or machine runs a task, calls :func:`execute_task`; it never raises for a failed
run, so one bad run cannot stop the others, and it returns one :class:`TaskResult` per spec.

Executors are registered by plugins through ``bench_register_executors`` (the first-party
``local``, ``dask`` and ``slurm`` live in ``plugins/executors.py``).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import BenchError, RunLocked
# Executor, Task and TaskResult live in bench.types; importing them from here keeps working.
from bench.types import Executor, RunOutcome, Spec, Task, TaskResult  # noqa: F401 (Executor re-exported)

# Environment variables the numeric libraries read for their thread pools when they load.
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS")

COMPLETE, FAILED, BUSY = "complete", "failed", "busy"
FINISHED = "finished"  # complete before the worker got to it (another process finished it first)


@dataclass(frozen=True)
class ExecutorSettings:
    """What a sweep tells its executor: the results folder (absolute), how many workers (None: the
    executor's default), the thread limit per worker, and the executor's own options (its
    defaults, updated by the sweep file's block named after the executor, then by CLI flags).
    ``log(message)`` tells the user something (job ids, where logs go). ``bench`` is the sweep's
    loaded :class:`bench.plugins.Bench`, for executors that run tasks in the sweep's own process."""

    out: Path
    workers: int | None = None
    threads_per_worker: int = 1
    options: Mapping[str, Any] = field(default_factory=dict)
    log: Callable[[str], None] | None = None
    bench: Any = None

    def say(self, message: str) -> None:
        if self.log is not None:
            self.log(message)


# -- the task function --------------------------------------------------------------------------


@contextmanager
def thread_limits(threads: int) -> Iterator[None]:
    """Limit numeric libraries to ``threads`` threads while a task or a ``bench run`` runs (the
    harness thread setting: ``--threads``, ``threads:``; see :func:`bench.options.default_threads`),
    then restore.

    The environment variables cover libraries loaded later (torch reads ``OMP_NUM_THREADS`` when
    it loads); threadpoolctl limits the BLAS and OpenMP pools already loaded, and torch's own pool
    is set when torch is already imported. Without this, N workers on N cores each start N threads.
    """
    from threadpoolctl import threadpool_limits

    threads = max(1, int(threads))
    old_env = {name: os.environ.get(name) for name in THREAD_ENV}
    os.environ.update({name: str(threads) for name in THREAD_ENV})
    torch = sys.modules.get("torch")
    old_torch = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        for name, value in old_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if torch is not None and old_torch is not None:
            torch.set_num_threads(old_torch)


def first_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else str(text)


def failed_results(task: Task, reason: str, seconds: float = 0.0) -> list[TaskResult]:
    """Every run of ``task`` as failed with ``reason``: for executors whose worker died."""
    from bench import results as R

    out = []
    for data in task.specs:
        spec = Spec.from_dict(data)
        folder = Path(task.out) / spec.folder_name
        out.append(TaskResult(str(folder), spec.run_id, FAILED, R.finished_generations(folder),
                              first_line(reason), seconds))
    return out


def execute_task(task: Task, bench: Any = None) -> list[TaskResult]:
    """Run every spec of ``task`` and say how each ended; never raises for a failed run.

    Picklable and top-level so any executor can ship it to a worker. ``bench`` is a loaded
    :class:`bench.plugins.Bench` to reuse (in-process runs); workers load their own.
    A KeyboardInterrupt or a SystemExit (a job scheduler's pre-emption) still propagates.
    """
    with thread_limits(task.threads):
        start = time.perf_counter()
        try:
            from bench.plugins import Bench

            b = bench if bench is not None else Bench()
        except Exception as exc:
            return failed_results(task, f"plugins failed to load: {exc}", time.perf_counter() - start)
        from bench import loop

        specs = [Spec.from_dict(d) for d in task.specs]
        if len(specs) < 2:
            return [_run_one(b, spec, task) for spec in specs]
        finished = {spec.run_id: _finished(spec, task) for spec in specs}
        todo = [spec for spec in specs if finished[spec.run_id] is None]
        if len(todo) < 2:
            ran = {spec.run_id: _run_one(b, spec, task) for spec in todo}
        else:
            try:
                outcomes = loop.run_group(b, todo, Path(task.out), task.keep_states, raise_errors=False,
                                          on_nonfinite=task.on_nonfinite)
            except Exception as exc:
                ran = {r.run_id: r for r in _after_group_failure(task, todo, exc, time.perf_counter() - start)}
            else:
                seconds = time.perf_counter() - start
                ran = {o.spec.run_id: _from_outcome(o, seconds) for o in outcomes}
        return [finished[spec.run_id] or ran[spec.run_id] for spec in specs]


def _finished(spec: Spec, task: Task) -> TaskResult | None:
    """A ``finished`` result when the run is already complete on disk, else None."""
    from bench import results as R

    folder = Path(task.out) / spec.folder_name
    done = R.finished_generations(folder)
    if done >= spec.generations + 1:
        return TaskResult(str(folder), spec.run_id, FINISHED, done, None, 0.0)
    return None


def _run_one(b: Any, spec: Spec, task: Task) -> TaskResult:
    from bench import results as R
    from bench.loop import Run

    folder = Path(task.out) / spec.folder_name
    start = time.perf_counter()
    finished = _finished(spec, task)
    if finished is not None:
        return finished
    try:
        outcome = Run(b, spec, Path(task.out), keep_states=task.keep_states, on_nonfinite=task.on_nonfinite).execute()
    except RunLocked as exc:
        return TaskResult(str(folder), spec.run_id, BUSY, R.finished_generations(folder), first_line(exc),
                          time.perf_counter() - start)
    except Exception as exc:
        reason = str(exc) if isinstance(exc, BenchError) else f"{type(exc).__name__}: {exc}"
        return TaskResult(str(folder), spec.run_id, FAILED, R.finished_generations(folder), first_line(reason),
                          time.perf_counter() - start)
    return _from_outcome(outcome, time.perf_counter() - start)


def _from_outcome(outcome: RunOutcome, seconds: float) -> TaskResult:
    # run_group reports a chain whose folder another process holds as busy
    status = outcome.status if outcome.status in (COMPLETE, BUSY) else FAILED
    error = None if status == COMPLETE else first_line(outcome.error or f"the run ended {outcome.status}")
    return TaskResult(str(outcome.path), outcome.spec.run_id, status, outcome.generations_done, error, seconds)


def _after_group_failure(task: Task, specs: list[Spec], exc: Exception, seconds: float) -> list[TaskResult]:
    """A group that raised: runs that finished anyway are complete, the others failed."""
    from bench import results as R

    reason = first_line(str(exc) if isinstance(exc, BenchError) else f"{type(exc).__name__}: {exc}")
    out = []
    for spec in specs:
        folder = Path(task.out) / spec.folder_name
        done = R.finished_generations(folder)
        if done >= spec.generations + 1:
            out.append(TaskResult(str(folder), spec.run_id, COMPLETE, done, None, seconds))
        else:
            out.append(TaskResult(str(folder), spec.run_id, FAILED, done, reason, seconds))
    return out


def require(module: str, extra: str, what: str) -> Any:
    """Import an optional engine, or say which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise BenchError(
            f"the {what} executor needs {module.split('.')[0]}: pip install \"collapse-bench[{extra}]\""
        ) from None
