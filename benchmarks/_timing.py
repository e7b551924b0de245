"""Side-by-side timing for the benchmarks: interleaved repeats, CPU time beside wall time.

A shared machine makes one wall-clock measurement worthless: another process's burst lands on
one side and not the other. So every benchmark here

- pins threads first (:func:`pin_threads`: OpenMP, MKL, OpenBLAS, torch, threadpoolctl), so a
  side cannot win by taking more cores;
- runs its sides interleaved (:func:`interleave`): A B, then B A, then A B ..., so a slow
  stretch of the machine falls on both sides alike;
- measures each call's wall time (``time.perf_counter``) and CPU time (``time.process_time``
  plus the CPU time of child processes it waited for, from ``resource.getrusage``);
- prints min and median of each, and their ratios to a named baseline side (:func:`report`),
  with the machine's cores and load average at the start and end.

    from _timing import interleave, pin_threads, report
    pin_threads()
    results = interleave({"bare": bare, "harness": harness}, repeats=5)
    report(results, baseline="bare")

Import it from a script in ``benchmarks/`` (``sys.path[0]`` is that folder when the script runs).
"""

from __future__ import annotations

import os
import resource
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")
_limits: list[Any] = []  # threadpoolctl's limiter stays referenced for the process's life


class Timing(NamedTuple):
    """One call of one side, in seconds."""

    wall: float
    cpu: float


class Clocks(NamedTuple):
    """Where :func:`interleave` reads the time; tests pass fake clocks."""

    wall: Callable[[], float]
    cpu: Callable[[], float]


def cpu_seconds() -> float:
    """CPU time of this process and of every child process it has waited for (workers, jobs)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


SYSTEM_CLOCKS = Clocks(time.perf_counter, cpu_seconds)


class Results(dict):
    """``{side: [Timing, ...]}`` in the order the calls ran per side, with the machine's state:
    ``cores`` and the 1-minute load average at the start and end (``None`` where the platform has
    none)."""

    cores: int | None = None
    load_start: float | None = None
    load_end: float | None = None


def pin_threads(n: int = 1) -> None:
    """Limit every thread pool this process uses to ``n`` threads: the environment variables
    (read by libraries not yet loaded), torch when it is already imported, and the BLAS and OpenMP
    pools loaded so far (threadpoolctl, when installed)."""
    for var in THREAD_VARIABLES:
        os.environ[var] = str(n)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    _limits.append(threadpool_limits(limits=n))


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def run_order(names: list[str], repeat: int) -> list[str]:
    """The sides' order in one repeat: as given in even repeats, reversed in odd ones (ABBAAB...)."""
    return list(names) if repeat % 2 == 0 else list(reversed(names))


def interleave(sides: Mapping[str, Callable[[], Any]], repeats: int, *, clocks: Clocks = SYSTEM_CLOCKS,
               on_result: Callable[[str, int, Any], None] | None = None) -> Results:
    """Call every side ``repeats`` times, interleaved (:func:`run_order`), timing each call.

    :param sides: name -> a callable taking no argument; all its work is timed.
    :param repeats: calls per side.
    :param clocks: where wall and CPU time are read (default: the system's).
    :param on_result: called as ``on_result(name, repeat, value)`` after each call, outside the
        timed span, with what the side returned (for checking that the sides agree).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, not {repeats}")
    if not sides:
        raise ValueError("no side to time")
    results = Results({name: [] for name in sides})
    results.cores, results.load_start = os.cpu_count(), _load()
    for r in range(repeats):
        for name in run_order(list(sides), r):
            w0, c0 = clocks.wall(), clocks.cpu()
            value = sides[name]()
            w1, c1 = clocks.wall(), clocks.cpu()
            results[name].append(Timing(w1 - w0, c1 - c0))
            if on_result is not None:
                on_result(name, r, value)
    results.load_end = _load()
    return results


class Summary(NamedTuple):
    """One side's figures: (min, median) of wall and CPU seconds, and their ratios to the
    baseline's (min to min, median to median)."""

    wall: tuple[float, float]
    cpu: tuple[float, float]
    wall_ratio: tuple[float, float]
    cpu_ratio: tuple[float, float]


def _min_median(values: list[float]) -> tuple[float, float]:
    return min(values), statistics.median(values)


def _ratio(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    return tuple(x / y if y > 0 else float("nan") for x, y in zip(a, b))  # type: ignore[return-value]


def summarise(results: Mapping[str, list[Timing]], baseline: str) -> dict[str, Summary]:
    """Every side's :class:`Summary` against ``baseline`` (one of the sides)."""
    if baseline not in results:
        raise ValueError(f"baseline {baseline!r} is not a side (sides: {', '.join(results)})")
    figures = {name: (_min_median([t.wall for t in ts]), _min_median([t.cpu for t in ts]))
               for name, ts in results.items()}
    base_wall, base_cpu = figures[baseline]
    return {name: Summary(wall, cpu, _ratio(wall, base_wall), _ratio(cpu, base_cpu))
            for name, (wall, cpu) in figures.items()}


def _machine_line(results: Any) -> str:
    cores = getattr(results, "cores", None)
    start, end = getattr(results, "load_start", None), getattr(results, "load_end", None)
    load = "n/a" if start is None else f"{start:.2f} at the start, {end:.2f} at the end"
    return f"machine: {cores or '?'} cores, load average {load}"


def report(results: Mapping[str, list[Timing]], baseline: str, *, out: Callable[[str], Any] = print,
           unit: str = "s") -> dict[str, Summary]:
    """Print per side min and median of wall and CPU time and the ratios to ``baseline``, then
    the machine; return :func:`summarise`'s figures."""
    figures = summarise(results, baseline)
    repeats = {len(ts) for ts in results.values()}
    width = max(len(n) for n in figures)
    out(f"{sum(len(ts) for ts in results.values())} calls, {'/'.join(map(str, sorted(repeats)))} per side, "
        f"interleaved; baseline: {baseline}")
    out(f"{'side':<{width}}  {'CPU min':>9} {'CPU med':>9} {'wall min':>9} {'wall med':>9}  "
        f"{'CPU ratio min/med':>17}  {'wall ratio min/med':>18}")
    for name, s in figures.items():
        out(f"{name:<{width}}  {s.cpu[0]:>8.3f}{unit} {s.cpu[1]:>8.3f}{unit} {s.wall[0]:>8.3f}{unit} "
            f"{s.wall[1]:>8.3f}{unit}  {s.cpu_ratio[0]:>7.3f}x /{s.cpu_ratio[1]:>6.3f}x  "
            f"{s.wall_ratio[0]:>8.3f}x /{s.wall_ratio[1]:>6.3f}x")
    out(_machine_line(results))
    return figures
