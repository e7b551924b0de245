"""Progress of a run: a bar on a terminal, plain lines (every few seconds) otherwise; under it, where
a long fit or draw is (:func:`reporter`, what the loop hands components as ``request.report``); and
lists of run names kept short for the user."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TextIO

INNER_INTERVAL = 30.0  # seconds between plain lines (logs, log.txt) of a fit's or a draw's progress
TTY_INTERVAL = 0.2  # seconds between redraws of the terminal's sub-line


def count_and_names(names: Sequence[str], noun: str, limit: int = 5, shown: int = 3) -> str:
    """``2 runs: a, b``; more than ``limit`` names print as the first ``shown`` and how many more
    (``400 runs: a, b, c, ... and 397 more``), so a long command does not end in a wall of names."""
    count = f"{len(names)} {noun}{'s' * (len(names) != 1)}"
    if not names:
        return count
    listed = list(names) if len(names) <= limit else [*names[:shown], f"... and {len(names) - shown} more"]
    return f"{count}: {', '.join(listed)}"


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """Shows generations done, the rate and the time left for one run."""

    def __init__(self, label: str, stream: TextIO | None = None, interval: float = 5.0,
                 chains: int | None = None) -> None:
        self.label = label
        self.chains = chains  # a group: count generations done over all its chains
        self.stream = stream or sys.stderr
        self.interval = interval
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.bar = None
        self.sub = None  # the terminal's sub-line under the bar: where the current fit or draw is

    def start(self, total: int, done: int) -> None:
        self.total, self.first, self.done = total, done, done
        self.t0 = self.last = time.perf_counter()
        if self.tty:
            from tqdm import tqdm

            try:
                width = os.get_terminal_size(self.stream.fileno()).columns
            except (OSError, ValueError, AttributeError):
                width = 0
            # A terminal that reports no width (some CI pseudo-terminals) still gets an 80-column bar.
            self.bar = tqdm(total=total, initial=done, desc=self.label, unit="gen", file=self.stream,
                            dynamic_ncols=width > 0, ncols=None if width > 0 else 80, leave=True)
        elif done:
            self._line(f"resuming after generation {done - 1}")

    def update(self, done: int) -> None:
        self._clear_inner()  # a generation ended: its fit and draw are over
        if self.bar is not None:
            self.bar.update(done - self.done)
        self.done = done
        now = time.perf_counter()
        if self.bar is None and (now - self.last >= self.interval or done == self.total):
            self.last = now
            elapsed = now - self.t0
            rate = (done - self.first) / elapsed if elapsed > 0 else 0.0
            eta = (self.total - done) / rate if rate > 0 else 0.0
            where = (f"generation {done - 1}/{self.total - 1}" if self.chains is None else
                     f"{done}/{self.total} generations over {self.chains} chains")
            self._line(f"{where}, {rate:.3g} gen/s, elapsed {_clock(elapsed)}, ETA {_clock(eta)}")

    def close(self) -> None:
        self._clear_inner()
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def inner(self, text: str) -> None:
        """Show where the current fit or draw is: on the sub-line under the bar on a terminal, as a
        plain line otherwise (the caller, :class:`InnerReport`, decides how often)."""
        if not self.tty:
            self._line(text)
        elif self.bar is not None:
            if self.sub is None:
                from tqdm import tqdm

                self.sub = tqdm(file=self.stream, bar_format="  {desc}", leave=False,
                                dynamic_ncols=self.bar.dynamic_ncols, ncols=self.bar.ncols)
            self.sub.set_description_str(text)

    def _clear_inner(self) -> None:
        if self.sub is not None:
            self.sub.close()  # leave=False: the line is wiped
            self.sub = None

    def _line(self, text: str) -> None:
        print(f"{self.label}: {text}", file=self.stream, flush=True)


class GroupProgress:
    """One display for chains run together: generations done over all of them.

    ``member(spec)`` gives each chain an object with the Progress interface (start, update,
    close) that adds its share to the shared count; chains call it from their own threads.
    """

    def __init__(self, label: str, specs, out) -> None:
        import threading
        from pathlib import Path

        from bench import results as R

        self.lock = threading.Lock()
        self.progress = Progress(label, chains=len(specs))
        self.done = {s.run_id: R.finished_generations(Path(out) / s.folder_name)
                     if (Path(out) / s.folder_name).is_dir() else 0 for s in specs}
        self.total = sum(s.generations + 1 for s in specs)
        self.open = len(specs)
        self.progress.start(self.total, min(sum(self.done.values()), self.total))

    def member(self, spec) -> "_Member":
        return _Member(self, spec.run_id)

    def _update(self, key: str, done: int) -> None:
        with self.lock:
            self.done[key] = done
            self.progress.update(min(sum(self.done.values()), self.total))

    def _close(self) -> None:
        with self.lock:
            self.open -= 1
            if self.open == 0:
                self.progress.close()


class _Member:
    def __init__(self, group: GroupProgress, key: str) -> None:
        self.group, self.key = group, key

    def start(self, total: int, done: int) -> None:
        self.group._update(self.key, done)

    def update(self, done: int) -> None:
        self.group._update(self.key, done)

    def close(self) -> None:
        self.group._close()

    @property
    def tty(self) -> bool:
        return self.group.progress.tty

    def inner(self, text: str) -> None:
        with self.group.lock:  # chains report from their own threads onto one display
            self.group.progress.inner(text)


# -- where a fit or a draw is ---------------------------------------------------------------------


def _per(seconds: float, unit: str) -> str:
    """``2.1 s/step`` for slow units, ``45.3 step/s`` for fast ones."""
    value, shown = (seconds, f"s/{unit}") if seconds >= 1 else (1 / seconds, f"{unit}/s")
    return f"{value:.3g} {shown}" if value < 1000 else f"{value:.0f} {shown}"


def inner_text(phase: str, what: str, done: int, total: int | None, seconds_each: float | None) -> str:
    """``fit: step 120/800 (15%), 2.1 s/step, ETA 0:23:48``; without ``total`` (unknown) only the
    count and the rate; without ``seconds_each`` (no step timed yet) no rate and no ETA."""
    text = f"{phase}: {what} {done}"
    if total is not None:
        text += f"/{total}" + (f" ({100 * done // total}%)" if total > 0 else "")
    if seconds_each is not None and seconds_each > 0:
        text += f", {_per(seconds_each, what)}"
        if total is not None:
            text += f", ETA {_clock(seconds_each * max(total - done, 0))}"
    return text


class InnerReport:
    """``request.report`` for one fit or one draw of one generation: where it is, under the run's
    progress display and in the run's log.

    On a terminal the progress display's sub-line shows each report (redrawn at most every
    ``TTY_INTERVAL`` seconds); otherwise the display prints a plain line, and ``log`` (the run's
    log.txt) gets one, at most every ``interval`` seconds (``INNER_INTERVAL``), the first one
    ``interval`` seconds after the fit or draw began, so short ones print nothing. The rate counts
    from the first report, so that loading a model before the first step does not count as a step.
    ``clock`` is injectable for tests.
    """

    def __init__(self, phase: str, generation: int | None = None, progress=None,
                 log: Callable[[str], None] | None = None, interval: float | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        self.phase = phase
        self.generation = generation
        self.progress = progress  # a Progress, a group's member, or None (no display)
        self.log = log
        self.interval = INNER_INTERVAL if interval is None else interval
        self.clock = clock or time.monotonic
        self.last_line = self.clock()
        self.last_drawn: float | None = None
        self.first: tuple[float, int] | None = None  # (time, done) of the first report

    def __call__(self, what: str, done: int, total: int | None = None) -> None:
        now = self.clock()
        done = int(done)
        total = None if total is None else int(total)
        if self.first is None:
            self.first = (now, done)
        tty = self.progress is not None and self.progress.tty
        drawn = tty and (self.last_drawn is None or now - self.last_drawn >= TTY_INTERVAL)
        lined = now - self.last_line >= self.interval
        if not (drawn or lined):
            return
        start, done0 = self.first
        seconds_each = (now - start) / (done - done0) if done > done0 else None
        text = inner_text(self.phase, what, done, total, seconds_each)
        if drawn:
            self.last_drawn = now
            self.progress.inner(text)
        if lined:
            self.last_line = now
            line = text if self.generation is None else f"generation {self.generation} {text}"
            if self.progress is not None and not tty:
                self.progress.inner(line)
            if self.log is not None:
                self.log(line)


def reporter(phase: str, generation: int | None = None, progress=None,
             log: Callable[[str], None] | None = None, *,
             clock: Callable[[], float] | None = None) -> InnerReport:
    """The ``report`` the loop puts on a request: ``reporter("fit", k, progress, run.log)`` for the
    trainer of generation k, ``reporter("generate", k, ...)`` for its generator. ``progress`` is
    the run's display (None: none) and ``log`` writes a line to the run's log.txt."""
    return InnerReport(phase, generation, progress, log, clock=clock)
