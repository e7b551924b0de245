"""The cost of fsync: the gmm paper preset's generation rate with and without it, side by side.

``bench.results.FSYNC`` says which result files are flushed to the disk before their rename (and
the rename after it), so that a power loss leaves them whole: ``always``, ``never``, or ``auto``
(the default: all but the files of generations built in under ``SLOW_GENERATION_S``). The
baseline is ``never``. Each repeat runs the gmm ``paper`` preset (policy replace, seed 0,
``--generations`` generations) into a fresh folder under ``--dir`` (default: a temporary folder;
give one on the disk the results will live on) once per setting, in an order that rotates, and
measures the process's CPU time and the wall time of the run. Every setting must write the same
metrics; the script checks that and prints milliseconds per generation (min and median over the
repeats) and the ratios of the medians to the baseline's.

    python benchmarks/fsync_cost.py [--generations 20] [--repeats 5] [--dir results-bench]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path


def one_run(out: Path, generations: int, fsync: str) -> tuple[float, float, object]:
    """CPU and wall seconds of one run (generation 0 included), and its metric values."""
    from bench import api
    from bench import results as R

    R.FSYNC = fsync
    cpu, wall = time.process_time(), time.perf_counter()
    outcomes = api.run("gmm", preset="paper", generations=generations, seeds=0, out=out)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    values = api.metrics(outcomes).sort_values(["generation", "metric"])["value"].to_numpy()
    return cpu, wall, values


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--generations", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dir", default=None, help="where the runs are written (default: a temporary folder)")
    args = ap.parse_args()

    import numpy as np

    from bench import results as R

    root = Path(args.dir or tempfile.mkdtemp(prefix="fsync-cost-"))
    root.mkdir(parents=True, exist_ok=True)
    settings = ("never", "auto", "always")
    rates: dict[str, dict[str, list[float]]] = {s: {"cpu": [], "wall": []} for s in settings}
    reference = None
    one_run(root / "warm-up", 2, "never")  # imports and first-call costs stay out of the figures
    for i in range(args.repeats):
        for fsync in settings[i % 3:] + settings[:i % 3]:  # interleaved, the order rotating
            out = root / f"{fsync}-{i}"
            cpu, wall, values = one_run(out, args.generations, fsync)
            shutil.rmtree(out)
            if reference is None:
                reference = values
            np.testing.assert_array_equal(values, reference)  # the same results either way
            rates[fsync]["cpu"].append(1000 * cpu / args.generations)
            rates[fsync]["wall"].append(1000 * wall / args.generations)
    R.FSYNC = "auto"
    shutil.rmtree(root / "warm-up", ignore_errors=True)
    if args.dir is None:
        shutil.rmtree(root, ignore_errors=True)

    print(f"gmm paper, {args.generations} generations, {args.repeats} interleaved repeats, in {root}")
    print(f"{'':14}{'min':>10}{'median':>10}   milliseconds per generation")
    for fsync in settings:
        for clock in ("cpu", "wall"):
            r = rates[fsync][clock]
            print(f"{fsync + ' ' + clock:14}{min(r):10.2f}{statistics.median(r):10.2f}")
    for fsync in settings[1:]:
        for clock in ("cpu", "wall"):
            ratio = statistics.median(rates[fsync][clock]) / statistics.median(rates["never"][clock])
            print(f"{fsync} / never, {clock} time (median): {ratio:.3f}")


if __name__ == "__main__":
    main()
