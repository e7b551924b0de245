"""The first-party executors of ``bench sweep``: ``local``, ``dask`` and ``slurm``.

- ``local``: a process pool on this machine (spawned processes: torch and fork do not mix), one
  thread per worker by default, whose workers end when the sweep's process is gone; ``--workers 1``
  runs in the sweep's own process, for debugging.
- ``dask``: dask.distributed. A LocalCluster on 127.0.0.1 by default, or ``--scheduler ADDRESS``
  (then Dask's own deployers, e.g. dask-jobqueue or dask-kubernetes, provide the workers).
  Runs can ask for abstract resources such as ``{GPU: 1}``.
- ``slurm``: Slurm job arrays through submitit, with a cap on how many array tasks run at once; a
  pre-empted or timed-out job is requeued and its run resumes after its last finished generation.

Every executor calls :func:`bench.executors.execute_task` in its workers. The engines are optional
extras (``pip install "collapse-bench[dask]"`` / ``"collapse-bench[slurm]"``) imported only when used.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import bench
from bench.errors import BenchError
from bench.executors import (
    ExecutorSettings,
    Task,
    TaskResult,
    execute_task,
    failed_results,
    first_line,
    require,
)

__version__ = "1"


# --------------------------------------------------------------------------------------------------
# local: a process pool
# --------------------------------------------------------------------------------------------------

# Worker-process state, set only inside pool and Dask workers: their loaded plugins, the pool's
# stop event (set by the sweep on Ctrl-C), and whether a task is running.
_WORKER_BENCH = None
_STOP = None
_IN_TASK = False

# How often a pool worker looks whether the sweep's process is still there, and how long a run it
# interrupts then may take to record how it stopped before the worker exits anyway.
PARENT_POLL_S = 0.5
ORPHAN_GRACE_S = 30.0


def _watch_parent(parent: int) -> None:
    """End this pool worker when the sweep's process is gone (killed with SIGKILL, say, so it could
    not stop its workers): a run in progress is interrupted as by Ctrl-C, keeps its finished
    generations and releases its folder, then the worker exits. Without this, orphaned workers
    would go on holding their runs, and a rerun of the sweep would find them busy."""
    while os.getppid() == parent:  # a dead parent's children are adopted by another process
        time.sleep(PARENT_POLL_S)
    if _IN_TASK:
        os.kill(os.getpid(), signal.SIGINT)
        deadline = time.monotonic() + ORPHAN_GRACE_S
        while _IN_TASK and time.monotonic() < deadline:
            time.sleep(0.05)
    os._exit(1)


def _init_pool_worker(stop, parent: int | None = None) -> None:
    """Pool workers: Ctrl-C interrupts the run in progress (it keeps its finished generations) and
    is ignored between tasks, once the sweep stops no queued task starts, and a worker whose sweep
    process (``parent``) is gone ends (:func:`_watch_parent`)."""
    global _STOP
    _STOP = stop
    if parent is not None:
        threading.Thread(target=_watch_parent, args=(parent,), name="watch-sweep", daemon=True).start()

    interrupted = []

    def on_sigint(signum, frame):
        # once: the terminal's Ctrl-C and the sweep's own signal may both arrive, and a second
        # KeyboardInterrupt must not cut short the run recording how it stopped
        if _IN_TASK and not interrupted:
            interrupted.append(signum)
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)


def run_in_worker(task: Task) -> list[TaskResult]:
    """:func:`execute_task` with the plugins loaded once per worker process, not once per task."""
    global _IN_TASK
    if _STOP is not None and _STOP.is_set():
        return []  # the sweep was stopped: nobody waits for this task any more
    _IN_TASK = True
    try:
        return _run_loaded(task)
    finally:
        _IN_TASK = False


def _run_loaded(task: Task) -> list[TaskResult]:
    global _WORKER_BENCH
    if _WORKER_BENCH is None:
        from bench.plugins import Bench

        try:
            _WORKER_BENCH = Bench()
        except Exception:
            return execute_task(task)  # execute_task reports the loading error per run
    return execute_task(task, bench=_WORKER_BENCH)


def _local_workers(settings: ExecutorSettings, tasks: Sequence[Task]) -> int:
    return max(1, min(settings.workers or os.cpu_count() or 1, len(tasks)))


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ignore SIGINT in this process (and the processes it starts) for a moment; only the main
    thread may change signal handlers, so elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_local(tasks: Sequence[Task], settings: ExecutorSettings) -> Iterator[TaskResult]:
    """Run tasks in a pool of spawned processes, yielding results as runs finish. Ctrl-C cancels
    the tasks not started; the workers (same terminal, same signal) stop the runs in progress,
    which keep their finished generations."""
    if settings.workers == 1 or _local_workers(settings, tasks) == 1 and settings.workers is None:
        from bench.plugins import Bench

        b = settings.bench if settings.bench is not None else Bench()
        for task in tasks:
            yield from execute_task(task, bench=b)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    pool = ProcessPoolExecutor(max_workers=_local_workers(settings, tasks), mp_context=context,
                               initializer=_init_pool_worker, initargs=(stop, os.getpid()))
    try:
        # The workers are spawned while tasks are submitted. They start with Ctrl-C ignored, so that
        # one still importing is not killed by it; their initializer then installs its own handler.
        with _sigint_ignored():
            futures = {pool.submit(run_in_worker, task): task for task in tasks}
        for future in as_completed(futures):
            try:
                results = future.result()
            except Exception as exc:  # the worker process died (killed, out of memory, a crash in C)
                results = failed_results(futures[future], f"the worker process died: {type(exc).__name__}: {exc}")
            yield from results
    except BaseException:  # KeyboardInterrupt, or the sweep stopped reading (GeneratorExit)
        stop.set()
        # Interrupt the runs in progress also when only this process got the signal (a SIGTERM
        # from a scheduler, `kill` of the sweep): they record "interrupted" and keep their
        # finished generations. (The pool has no public list of its processes.)
        for process in list(getattr(pool, "_processes", {}).values()):
            try:
                os.kill(process.pid, signal.SIGINT)
            except (OSError, AttributeError):
                pass
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


# --------------------------------------------------------------------------------------------------
# dask: dask.distributed
# --------------------------------------------------------------------------------------------------

DASK_OPTIONS = {
    "scheduler": None,  # address of a running scheduler; None starts a LocalCluster on 127.0.0.1
    "resources": {},  # what every run asks of a worker, e.g. {"GPU": 1}
    "worker_resources": {},  # what each LocalCluster worker declares, e.g. {"GPU": 1}
}


def _resource_map(value: Any, what: str) -> dict[str, float]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in value.values()):
        raise BenchError(f"dask: {what} must be a mapping of resource name to amount, like {{GPU: 1}}; got {value!r}")
    return {str(k): float(v) for k, v in value.items()}


def check_dask(settings: ExecutorSettings) -> None:
    require("distributed", "dask", "dask")
    opts = settings.options
    asked = _resource_map(opts.get("resources"), "resources")
    declared = _resource_map(opts.get("worker_resources"), "worker_resources")
    if opts.get("scheduler") is None:
        missing = [k for k, v in asked.items() if declared.get(k, 0) < v]
        if missing:
            raise BenchError(
                f"dask: runs ask for {asked} but the LocalCluster workers declare {declared or 'no resources'}, "
                f"so they would never start; declare them with worker_resources: {{{missing[0]}: 1}} "
                "in the sweep file's dask block"
            )
    elif not isinstance(opts["scheduler"], str):
        raise BenchError(f"dask: scheduler must be an address like tcp://10.0.0.5:8786, got {opts['scheduler']!r}")


def task_resources(task: Task, asked: dict[str, float], declared: set[str]) -> dict[str, float]:
    """What a task asks of a Dask worker: the sweep's ``resources``, plus one GPU for runs on a
    CUDA device when the cluster declares GPU resources (so GPU runs never share a GPU)."""
    res = dict(asked)
    on_cuda = any(str(spec.get("params", {}).get("device", "")).startswith("cuda") for spec in task.specs)
    if on_cuda and "GPU" in declared and "GPU" not in res:
        res["GPU"] = 1.0
    return res


def run_dask(tasks: Sequence[Task], settings: ExecutorSettings) -> Iterator[TaskResult]:
    """Submit every task to Dask (``pure=False``: a rerun is a new computation) and yield results as
    they complete; the LocalCluster this starts is closed at the end."""
    import logging
    from contextlib import ExitStack

    distributed = require("distributed", "dask", "dask")
    opts = settings.options
    asked = _resource_map(opts.get("resources"), "resources")
    with ExitStack() as stack:
        if opts.get("scheduler"):
            try:
                client = stack.enter_context(distributed.Client(opts["scheduler"], timeout="30s"))
            except OSError as exc:
                raise BenchError(f"dask: cannot reach the scheduler at {opts['scheduler']}: {exc}") from None
            workers = client.scheduler_info().get("workers", {})
            declared = {name for w in workers.values() for name in (w.get("resources") or {})}
        else:
            worker_resources = _resource_map(opts.get("worker_resources"), "worker_resources")
            cluster = stack.enter_context(distributed.LocalCluster(
                host="127.0.0.1", dashboard_address=None, n_workers=_local_workers(settings, tasks),
                threads_per_worker=1, processes=True, resources=worker_resources or None,
                silence_logs=logging.ERROR))
            client = stack.enter_context(distributed.Client(cluster))
            declared = set(worker_resources)
        futures = {}
        for task in tasks:
            resources = task_resources(task, asked, declared)
            future = client.submit(run_in_worker, task, pure=False, resources=resources or None)
            futures[future] = task
        try:
            for future in distributed.as_completed(list(futures)):
                try:
                    results = future.result()
                except Exception as exc:  # the worker died too often (KilledWorker), or was lost
                    results = failed_results(futures[future], f"dask: {type(exc).__name__}: {exc}")
                yield from results
        except BaseException:
            client.cancel(list(futures))
            raise


# --------------------------------------------------------------------------------------------------
# slurm: job arrays through submitit
# --------------------------------------------------------------------------------------------------

SLURM_OPTIONS = {
    "partition": None,
    "time": 240,  # minutes per job, or "H:MM:SS" / "D-HH:MM:SS"; a run that needs longer is requeued
    "array_parallelism": None,  # array tasks running at once (default: --workers, else 256)
    "cpus_per_task": None,  # default: --threads-per-worker
    "gpus_per_node": None,
    "mem_gb": None,
    "account": None,
    "qos": None,
    "constraint": None,
    "setup": [],  # shell lines run before each job (module load ..., source venv/bin/activate)
    "additional": {},  # any other sbatch option, e.g. {exclusive: true}
    "folder": None,  # submitit's logs and job files (default: OUT/.submitit)
    "cluster": "slurm",  # "local" runs the jobs as local processes (tests), "debug" in-process
    "max_timeouts": 3,  # how many times a job may hit its time limit and be requeued
    "poll_s": 10.0,  # how often to ask Slurm whether jobs have finished
    "job_name": "collapse-bench",
}


def slurm_minutes(value: Any) -> int:
    """Minutes from 90, "90", "1:30:00" or "2-00:00:00" (Slurm's day-hours:minutes:seconds)."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    text = str(value).strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d{1,2}):(\d{1,2})", text)
    if text.isdigit() and int(text) > 0:
        return int(text)
    if m:
        days, hours, minutes, seconds = (int(g or 0) for g in m.groups())
        total = days * 1440 + hours * 60 + minutes + (1 if seconds else 0)
        if total > 0:
            return total
    raise BenchError(f"slurm: time {value!r}: use minutes (90), H:MM:SS (1:30:00) or D-HH:MM:SS (2-00:00:00)")


def check_slurm(settings: ExecutorSettings) -> None:
    require("submitit", "slurm", "slurm")
    opts = settings.options
    slurm_minutes(opts["time"])
    for key in ("array_parallelism", "cpus_per_task", "gpus_per_node", "max_timeouts"):
        value = opts.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise BenchError(f"slurm: {key} must be a whole number, got {value!r}")
    cluster = opts.get("cluster") or "slurm"
    if cluster not in ("slurm", "local", "debug"):
        raise BenchError(f"slurm: cluster must be slurm, local or debug, got {cluster!r}")
    if cluster == "slurm" and shutil.which("srun") is None:
        raise BenchError("slurm: no Slurm on this machine (srun is not on PATH). Run the sweep on a login "
                         "node, or set `cluster: local` in the sweep file's slurm block to run the jobs as "
                         "local processes")
    if not isinstance(opts.get("setup") or [], list) or not isinstance(opts.get("additional") or {}, dict):
        raise BenchError("slurm: setup must be a list of shell lines and additional a mapping of sbatch options")


class SlurmTask:
    """A task as a submitit job that survives pre-emption: when Slurm pre-empts it or its time runs
    out, submitit calls :meth:`checkpoint` and requeues the same task; the loop then resumes the
    run after its last finished generation."""

    def __call__(self, task: Task) -> list[TaskResult]:
        return execute_task(task)

    def checkpoint(self, task: Task) -> Any:
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, task)


def _job_reason(exc: Exception) -> str:
    """A failed job's reason in one line: the last line of a worker traceback, else the first."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if len(lines) > 1 and any(line.startswith("Traceback") for line in lines):
        return lines[-1]
    return first_line(str(exc)) or type(exc).__name__


def run_slurm(tasks: Sequence[Task], settings: ExecutorSettings) -> Iterator[TaskResult]:
    """Submit the tasks as one job array and yield results as jobs end. Ctrl-C cancels the jobs
    still queued or running (their runs keep their finished generations)."""
    submitit = require("submitit", "slurm", "slurm")
    opts = settings.options
    folder = Path(opts.get("folder") or settings.out / ".submitit")
    timeouts = int(opts.get("max_timeouts") or 0)
    executor = submitit.AutoExecutor(folder=str(folder), cluster=opts.get("cluster") or "slurm",
                                     slurm_max_num_timeout=timeouts, local_max_num_timeout=timeouts)
    params: dict[str, Any] = {
        "name": opts["job_name"],
        "timeout_min": slurm_minutes(opts["time"]),
        "cpus_per_task": opts.get("cpus_per_task") or settings.threads_per_worker,
        "slurm_array_parallelism": opts.get("array_parallelism") or settings.workers or 256,
    }
    for key in ("gpus_per_node", "mem_gb"):
        if opts.get(key) is not None:
            params[key] = opts[key]
    for key in ("partition", "account", "qos", "constraint"):
        if opts.get(key):
            params[f"slurm_{key}"] = opts[key]
    if opts.get("setup"):
        params["slurm_setup"] = list(opts["setup"])
    if opts.get("additional"):
        params["slurm_additional_parameters"] = dict(opts["additional"])
    executor.update_parameters(**params)
    jobs = executor.map_array(SlurmTask(), list(tasks))
    task_of = {id(job): task for job, task in zip(jobs, tasks)}
    settings.say(f"slurm: submitted {len(jobs)} job(s) (job {jobs[0].job_id.split('_')[0] if jobs else '-'}); "
                 f"logs under {folder}")
    poll = float(opts.get("poll_s") or 10.0)
    try:
        for job in submitit.helpers.as_completed(jobs, poll_frequency=poll):
            try:
                results = job.result()
            except Exception as exc:  # the job itself failed: cancelled, out of memory, node failure
                results = failed_results(task_of[id(job)], f"slurm job {job.job_id}: {_job_reason(exc)}")
            yield from results
    except BaseException:
        for job in jobs:
            if not job.done():
                job.cancel(check=False)
        raise


# --------------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------------


@bench.hookimpl
def bench_register_executors(register):
    register(bench.Executor(
        name="local", run=run_local,
        description="a process pool on this machine (--workers, default: the CPU count; 1 runs in-process)",
    ))
    register(bench.Executor(
        name="dask", run=run_dask, options=dict(DASK_OPTIONS), check=check_dask,
        description="dask.distributed: a LocalCluster on 127.0.0.1, or --scheduler ADDRESS",
    ))
    register(bench.Executor(
        name="slurm", run=run_slurm, options=dict(SLURM_OPTIONS), check=check_slurm,
        description="Slurm job arrays through submitit; pre-empted jobs are requeued and resume",
    ))


@bench.hookimpl
def bench_cli_options(command, register):
    from bench import CliOption

    if command != "sweep":
        return
    register(CliOption("--scheduler", metavar="ADDRESS", executor="dask", executor_option="scheduler",
                       help="dask: a running scheduler (default: a LocalCluster on 127.0.0.1)."))
    register(CliOption("--slurm-partition", executor="slurm", executor_option="partition",
                       help="slurm: the partition."))
    register(CliOption("--slurm-time", executor="slurm", executor_option="time",
                       help="slurm: time limit per job: minutes, H:MM:SS or D-HH:MM:SS (default 240 minutes)."))
    register(CliOption("--slurm-array-parallelism", type=int, executor="slurm",
                       executor_option="array_parallelism", help="slurm: array tasks running at once."))
    register(CliOption("--slurm-folder", executor="slurm", executor_option="folder",
                       help="slurm: folder for submitit's job files and logs (default OUT/.submitit)."))
