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
INNER_FIRST = 5.0  # seconds before the first such line: a long fit shows itself early, a short one not at all
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


def pace(generations: float, seconds: float) -> str:
    """The speed of a run as it reads best: ``31.5 gen/s`` from one generation a second up, else
    the time one generation takes (``16 s/gen``, ``2.1 min/gen``, ``1.5 h/gen``)."""
    if generations <= 0 or seconds <= 0:
        return "n/a"
    each = seconds / generations
    if each <= 1:
        return f"{1 / each:.3g} gen/s"
    for unit, size in (("h", 3600.0), ("min", 60.0)):
        if each >= size:
            return f"{each / size:.2g} {unit}/gen"
    return f"{each:.2g} s/gen"


class Progress:
    """Shows generations done, the pace and the time left for one run.

    The first generation a process builds also loads the data and the model (generation 0 also
    fits on real data), so the pace and the time left count from the end of it: until then the
    line says when the estimate comes (``ETA after generation 1``)."""

    def __init__(self, label: str, stream: TextIO | None = None, interval: float = 5.0,
                 chains: int | None = None, clock: Callable[[], float] | None = None) -> None:
        self.label = label
        self.chains = chains  # a group: count generations done over all its chains
        self.stream = stream or sys.stderr
        self.interval = interval
        self.clock = clock or time.perf_counter  # injectable for tests
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.bar = None
        self.sub = None  # the terminal's sub-line under the bar: where the current fit or draw is

    def start(self, total: int, done: int) -> None:
        self.total, self.first, self.done = total, done, done
        self.t0 = self.last = self.clock()
        self.timed_from: tuple[float, int] | None = None  # (time, done) when the first generation ended
        if self.tty:
            from tqdm import tqdm

            try:
                width = os.get_terminal_size(self.stream.fileno()).columns
            except (OSError, ValueError, AttributeError):
                width = 0
            # A terminal that reports no width (some CI pseudo-terminals) still gets an 80-column bar.
            # The pace and ETA are this class's (see the class docstring), shown as tqdm's postfix.
            self.bar = tqdm(total=total, initial=done, desc=self.label, unit="gen", file=self.stream,
                            dynamic_ncols=width > 0, ncols=None if width > 0 else 80, leave=True,
                            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")
            self.bar.set_postfix_str(self._estimate(done, self.t0)[1])
        elif done:
            self._line(f"resuming after generation {done - 1}")
        else:
            self._line("starting at generation 0" if self.chains is None else
                       f"starting {self.chains} chains at generation 0")

    def status(self, done: int, now: float) -> str:
        """``generation 3/60, 16 s/gen, elapsed 0:01:10, ETA 0:15:12`` for ``done`` generations."""
        where = (f"generation {done - 1}/{self.total - 1}" if self.chains is None else
                 f"{done}/{self.total} generations over {self.chains} chains")
        speed, eta = self._estimate(done, now)
        return ", ".join([where, *speed, f"elapsed {_clock(now - self.t0)}", eta])

    def _estimate(self, done: int, now: float) -> tuple[list[str], str]:
        """The pace (none yet, or one item) and the time left, from the generations after the first
        one this process built."""
        warm_up = self.chains or 1  # a group's first round: one generation per chain
        if self.timed_from is None and done - self.first >= warm_up:
            self.timed_from = (now, done)
        since, base = self.timed_from or (now, done)
        timed = done > base and now > since
        speed = [pace(done - base, now - since)] if timed else []
        if done >= self.total:
            return speed, f"ETA {_clock(0)}"
        if timed:
            return speed, f"ETA {_clock((now - since) / (done - base) * (self.total - done))}"
        if self.chains is None:
            return speed, f"ETA after generation {self.first + 1}"
        return speed, "ETA after each chain's next generation"

    def update(self, done: int) -> None:
        self._clear_inner()  # a generation ended: its fit and draw are over
        now = self.clock()
        speed, eta = self._estimate(done, now)  # on every update: the timing starts when it should
        if self.bar is not None:
            self.bar.set_postfix_str(", ".join([eta, *speed]), refresh=False)  # a narrow bar cuts the pace
            self.bar.update(done - self.done)
        elif now - self.last >= self.interval or done == self.total:
            self.last = now
            self._line(self.status(done, now))
        self.done = done

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
    ``first`` seconds after the fit or draw began (``INNER_FIRST``, at most ``interval``): a long
    fit shows itself early in a log, a short one prints nothing. The rate counts
    from the first report, so that loading a model before the first step does not count as a step.
    ``clock`` is injectable for tests.
    """

    def __init__(self, phase: str, generation: int | None = None, progress=None,
                 log: Callable[[str], None] | None = None, interval: float | None = None,
                 clock: Callable[[], float] | None = None, first: float | None = None) -> None:
        self.phase = phase
        self.generation = generation
        self.progress = progress  # a Progress, a group's member, or None (no display)
        self.log = log
        self.interval = INNER_INTERVAL if interval is None else interval
        self.clock = clock or time.monotonic
        first = min(INNER_FIRST if first is None else first, self.interval)
        self.last_line = self.clock() - (self.interval - first)  # as if a line came that long ago
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
