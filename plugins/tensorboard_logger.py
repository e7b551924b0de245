"""TensorBoard logging of runs, off unless asked (docs/bridges.md).

Set ``BENCH_TENSORBOARD=DIR`` (``bench run --tensorboard DIR`` sets it for its process) and every
run that starts or resumes writes TensorBoard event files to ``DIR/<run folder name>``:

- one scalar per metric row: tag = the row's metric name (``gaussian-var``, ``distinct-n/1``),
  step = the generation k; non-finite values (NaN: not defined for this run; inf) are skipped,
  since TensorBoard cannot draw them. TensorBoard stores scalars as float32.
- the text ``run/spec`` (the resolved spec as JSON) when the run starts or resumes, and
  ``run/status`` (complete, interrupted or failed, with the reason) when it stops;
- the writer is flushed after each generation, so TensorBoard shows a run while it progresses.

A resumed or extended run appends to the same folder. The ledger ``bench-logged.json`` in it
records the generations logged so far: generations already logged are not logged again, and
finished generations not yet logged (the run began without ``BENCH_TENSORBOARD``, or a crash came
between writing a generation and logging it) are read from the run folder and logged when the run
resumes. Steps never go back, so TensorBoard discards nothing. :func:`export` logs a run folder
after the fact (a complete run calls no hook when run again).

Nothing leaves the machine: TensorBoard is a local viewer (``tensorboard --logdir DIR``).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Iterable, Mapping

import bench
from bench import results as R
from bench.errors import BenchError

ENV_TENSORBOARD = "BENCH_TENSORBOARD"
LEDGER = "bench-logged.json"
INSTALL = "pip install 'collapse-bench[tensorboard]'"

# Runs of this process being logged, by run folder (a run folder is locked to one process).
_open: dict[Path, RunLog] = {}


def summary_writer_class():
    """torch's ``SummaryWriter``, or a BenchError saying how to install TensorBoard."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise BenchError(
            f"TensorBoard logging ({ENV_TENSORBOARD} or --tensorboard) needs the tensorboard package: "
            f"{INSTALL} (or unset {ENV_TENSORBOARD}). ({exc})"
        ) from None
    return SummaryWriter


def logdir_for(run_path: str | Path, root: str | Path) -> Path:
    """Where a run's event files go: ``root/<run folder name>``."""
    return Path(root) / Path(run_path).name


class RunLog:
    """One run's TensorBoard writer and its ledger of generations logged."""

    def __init__(self, run_path: Path, root: str | Path) -> None:
        self.run_path = Path(run_path)
        self.logdir = logdir_for(run_path, root)
        info = R.read_json(self.run_path / R.RUN_JSON)
        self.identity = {"run_id": info.get("run_id"), "created": info.get("created")}
        self.run_info = info
        ledger = self._read_ledger()
        if ledger and {k: ledger.get(k) for k in self.identity} != self.identity:
            raise BenchError(
                f"TensorBoard folder {self.logdir} holds the logs of an earlier run with the same folder "
                f"name (created {ledger.get('created')}, this run {self.identity['created']}). Move or "
                f"delete {self.logdir}, or choose another {ENV_TENSORBOARD} folder."
            )
        self.next = int(ledger.get("generations", 0))  # generations 0..next-1 are logged
        self.last_step = int(ledger.get("last_step", 0))
        writer_class = summary_writer_class()
        try:
            self.logdir.mkdir(parents=True, exist_ok=True)
            self.writer = writer_class(log_dir=str(self.logdir))
        except OSError as exc:
            raise BenchError(f"cannot write TensorBoard logs to {self.logdir}: {exc.strerror or exc}. "
                             f"Choose another {ENV_TENSORBOARD} folder.") from None

    def _read_ledger(self) -> dict[str, Any]:
        path = self.logdir / LEDGER
        if not path.is_file():
            return {}
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise BenchError(f"cannot read {path}: {exc}. Delete it (the next resume logs every "
                             "finished generation again) or choose another folder.") from None

    def _write_ledger(self) -> None:
        R.write_json(self.logdir / LEDGER, {**self.identity, "generations": self.next,
                                             "last_step": self.last_step})

    def _step(self, step: int) -> int:
        """Steps never go back: TensorBoard drops the events after a step that goes back."""
        self.last_step = max(self.last_step, int(step))
        return self.last_step

    def text(self, tag: str, body: str, step: int) -> None:
        self.writer.add_text(tag, body, global_step=self._step(step))

    def spec(self) -> None:
        """The run's spec at the first step this session logs."""
        spec = json.dumps(self.run_info.get("spec", {}), indent=2, sort_keys=True)
        head = f"run `{self.run_path.name}` (run id {self.identity['run_id']})"
        self.text("run/spec", head + "\n\n" + _code(spec), self.next)

    def generation(self, k: int, rows: Iterable[Mapping[str, Any]]) -> None:
        """Generation k's metric rows as scalars at step k; a generation already logged is skipped."""
        if k < self.next:
            return
        step = self._step(k)
        for row in rows:
            value = row.get("value")
            if value is None or not math.isfinite(float(value)):
                continue
            self.writer.add_scalar(str(row["metric"]), float(value), global_step=step)
        self.writer.flush()
        self.next = k + 1
        self._write_ledger()

    def catch_up(self, done: int) -> None:
        """Log finished generations next..done-1 from the run folder (not logged so far)."""
        for k in range(self.next, done):
            from bench import runfolder as RF

            self.generation(k, RF.generation_rows(self.run_path, k))

    def finish(self, status: str, error: str | None) -> None:
        self.text("run/status", status + (f": {error}" if error else ""), self.last_step)
        self.writer.flush()
        self._write_ledger()
        self.writer.close()


def _code(text: str) -> str:
    """Markdown code block (TensorBoard renders text summaries as Markdown)."""
    return "\n".join("    " + line for line in text.splitlines())


def _root() -> str | None:
    value = os.environ.get(ENV_TENSORBOARD, "").strip()
    return value or None


def export(run_folder: str | Path, root: str | Path) -> Path:
    """Log a run folder's finished generations to ``root/<run folder name>`` (its spec, metrics and
    status as in run.json); generations already logged there are skipped. Returns the logdir."""
    run_path = Path(run_folder)
    if not (run_path / R.RUN_JSON).is_file():
        raise BenchError(f"{run_path} is not a run folder (it has no run.json)")
    log = RunLog(run_path, root)
    log.spec()
    log.catch_up(R.finished_generations(run_path))
    log.finish(str(log.run_info.get("status")), log.run_info.get("error"))
    return log.logdir


@contextmanager
def logging_to(folder: str | Path) -> Iterator[Callable[[list], list[str]]]:
    """``bench run --tensorboard DIR``: log the runs of this command under DIR, then log the runs
    that were already complete (they start no logger). Sets ``BENCH_TENSORBOARD`` only meanwhile,
    so the API and later commands in the same process stay unlogged. Yields the function the
    command calls with the run outcomes; it returns the line to print."""
    summary_writer_class()  # says how to install TensorBoard before anything runs
    previous = os.environ.get(ENV_TENSORBOARD)
    os.environ[ENV_TENSORBOARD] = str(Path(folder).absolute())

    def finish(outcomes: list) -> list[str]:
        for outcome in outcomes:
            if not (Path(folder) / outcome.path.name).exists():
                export(outcome.path, folder)
        return [f"TensorBoard: tensorboard --logdir {folder}"]

    try:
        yield finish
    finally:
        if previous is None:
            os.environ.pop(ENV_TENSORBOARD, None)
        else:
            os.environ[ENV_TENSORBOARD] = previous


@bench.hookimpl
def bench_cli_options(command, register):
    from bench import CliOption

    if command == "run":
        register(CliOption("--tensorboard", metavar="DIR", around=logging_to,
                           help="Also log metrics to TensorBoard under DIR/<run folder> (sets BENCH_TENSORBOARD)."))


@bench.hookimpl
def bench_run_started(run):
    root = _root()
    if root is None:
        return
    stale = _open.pop(run.path, None)
    if stale is not None:  # a previous start in this process ended without bench_run_finished
        stale.writer.close()
    log = RunLog(run.path, root)
    log.spec()
    log.catch_up(run.done)
    _open[run.path] = log


@bench.hookimpl
def bench_generation_finished(run, generation, metrics):
    log = _open.get(run.path)
    if log is not None:
        log.generation(generation, metrics)


@bench.hookimpl
def bench_run_finished(run, status, error):
    log = _open.pop(run.path, None)
    if log is not None:
        log.finish(status, error)
