"""N independent smoke chains through each executor, against running them one after another.

The baseline runs the N chains (seeds 0..N-1 of one plugin and preset) one after another in this
process with ``bench.api.run``, after a warm-up run so that it pays no import time. Each executor
then runs the same N chains from a sweep into a fresh folder, start-up included (spawning workers,
starting a Dask LocalCluster, submitting submitit jobs), and the script checks that every run
ended complete with the same metrics as the baseline's. The sides run interleaved, --repeats
times each (benchmarks/_timing.py); the script prints min and median of wall time and CPU time
(this process's and the worker processes' it waited for) and their ratios to the serial baseline:
a wall ratio below 1 is a speed-up.

    python benchmarks/sweep_speedup.py [--chains 4] [--workers 2] [--plugin gmm] [--generations 300]
        [--executors local,dask,slurm] [--repeats 3]

``slurm`` runs through submitit's local executor (every job at once, as subprocesses), since no
Slurm cluster is reachable here.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import warnings
from pathlib import Path

import numpy as np

from _timing import interleave, pin_threads, report


def metric_values(folder: Path) -> np.ndarray:
    from bench import results as R

    table = R.read_metrics(folder).to_pandas().sort_values(["generation", "metric"])
    return table.value.to_numpy()


def run_serial(args, out: Path) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    import bench.api as cb
    from bench.plugins import Bench

    b = Bench()
    runs = [cb.run(args.plugin, args.preset, seeds=seed, generations=args.generations, out=out, bench=b)[0]
            for seed in range(args.chains)]
    return {r.path.name: metric_values(r.path) for r in runs}, {"done": len(runs)}


def run_executor(args, name: str, out: Path) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    from bench import sweep as S
    from bench.plugins import Bench

    out.mkdir(parents=True)
    path = out / f"{name}.yaml"
    path.write_text(f"plugin: {args.plugin}\npreset: {args.preset}\ngenerations: {args.generations}\n"
                    f"seeds: 0-{args.chains - 1}\nslurm: {{cluster: local, poll_s: 0.2, time: 60}}\n")
    b = Bench()
    sweep = S.load(b, path, out=out / "runs", executor=name, workers=args.workers)
    summary = S.run_sweep(b, sweep)
    counts = {s: summary.count(s) for s in S.STATUSES if summary.count(s)}
    values = {Path(r["folder"]).name: metric_values(Path(r["folder"])) for r in summary.rows if r["status"] == "done"}
    return values, counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--plugin", default="gmm")
    ap.add_argument("--preset", default="smoke")
    ap.add_argument("--generations", type=int, default=300)
    ap.add_argument("--executors", default="local,dask,slurm")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    pin_threads(1)
    warnings.simplefilter("ignore")

    import bench.api as cb

    with tempfile.TemporaryDirectory() as tmp:
        tmp, fresh = Path(tmp), itertools.count()
        cb.run(args.plugin, args.preset, seeds=99, generations=1, out=tmp / "warm-up")  # imports, caches
        sides = {"serial (one process)": lambda: run_serial(args, tmp / f"serial-{next(fresh)}")}
        for name in [e.strip() for e in args.executors.split(",") if e.strip()]:
            sides[f"{name}, {args.workers} workers"] = lambda name=name: run_executor(args, name, tmp / f"{name}-{next(fresh)}")
        reference: dict[str, np.ndarray] = {}
        notes: dict[str, set[str]] = {}

        def check(side: str, repeat: int, outcome) -> None:
            values, counts = outcome
            if not reference:
                reference.update(values)  # the serial side runs first
            same = values.keys() == reference.keys() and all(np.array_equal(values[k], reference[k]) for k in reference)
            notes.setdefault(side, set()).add(", ".join(f"{n} {s}" for s, n in counts.items())
                                              + ("; results equal" if same else "; RESULTS DIFFER"))

        print(f"{args.chains} chains of {args.plugin}/{args.preset}, {args.generations} generations each", flush=True)
        results = interleave(sides, args.repeats, on_result=check)
    figures = report(results, baseline="serial (one process)")
    for side, seen in notes.items():
        ratio = figures[side].wall_ratio
        print(f"{side}: speed-up {1 / ratio[0]:.2f}x (min) / {1 / ratio[1]:.2f}x (median); "
              f"runs {' | '.join(sorted(seen))}")
    print("speed-up = serial wall time / executor wall time (start-up of workers, cluster or jobs included);\n"
          "CPU = CPU seconds of this process and the worker processes it waited for.")

if __name__ == "__main__":
    main()
