"""Progress of a run: a bar on a terminal, plain lines (every few seconds) otherwise; and lists of
run names kept short for the user."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from typing import TextIO


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
        if self.bar is not None:
            self.bar.close()
            self.bar = None

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
