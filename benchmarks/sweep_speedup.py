"""N independent smoke chains through each executor, against running them one after another.

The baseline runs the N chains (seeds 0..N-1 of one plugin and preset) one after another in this
process with ``bench.api.run``, after a warm-up run so that it pays no import time. Each executor
then runs the same N chains from a sweep into a fresh folder, start-up included (spawning workers,
starting a Dask LocalCluster, submitting submitit jobs), and the script checks that every run
ended complete with the same metrics as the baseline's. It prints wall times, CPU times and the
speed-up (baseline wall time / executor wall time) side by side.

    python benchmarks/sweep_speedup.py [--chains 4] [--workers 2] [--plugin gmm] [--generations 300]
        [--executors local,dask,slurm]

``slurm`` runs through submitit's local executor (every job at once, as subprocesses), since no
Slurm cluster is reachable here.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def cpu_seconds() -> float:
    """CPU time of this process and of every child process it has waited for (workers, clusters, jobs)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def metric_values(folder: Path) -> np.ndarray:
    from bench import results as R

    table = R.read_metrics(folder).to_pandas().sort_values(["generation", "metric"])
    return table.value.to_numpy()


def run_serial(args, out: Path) -> tuple[float, float, dict[str, np.ndarray]]:
    import bench.api as cb
    from bench.plugins import Bench

    b = Bench()
    t, c = time.perf_counter(), cpu_seconds()
    runs = [cb.run(args.plugin, args.preset, seeds=seed, generations=args.generations, out=out, bench=b)[0]
            for seed in range(args.chains)]
    elapsed, cpu = time.perf_counter() - t, cpu_seconds() - c
    return elapsed, cpu, {r.path.name: metric_values(r.path) for r in runs}


def run_executor(args, name: str, out: Path) -> tuple[float, float, dict[str, np.ndarray], dict[str, int]]:
    from bench import sweep as S
    from bench.plugins import Bench

    path = out.parent / f"{name}.yaml"
    path.write_text(f"plugin: {args.plugin}\npreset: {args.preset}\ngenerations: {args.generations}\n"
                    f"seeds: 0-{args.chains - 1}\nslurm: {{cluster: local, poll_s: 0.2, time: 60}}\n")
    b = Bench()
    sweep = S.load(b, path, out=out, executor=name, workers=args.workers)
    t, c = time.perf_counter(), cpu_seconds()
    summary = S.run_sweep(b, sweep)
    elapsed, cpu = time.perf_counter() - t, cpu_seconds() - c
    counts = {s: summary.count(s) for s in S.STATUSES if summary.count(s)}
    values = {Path(r["folder"]).name: metric_values(Path(r["folder"])) for r in summary.rows if r["status"] == "done"}
    return elapsed, cpu, values, counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--plugin", default="gmm")
    ap.add_argument("--preset", default="smoke")
    ap.add_argument("--generations", type=int, default=300)
    ap.add_argument("--executors", default="local,dask,slurm")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    warnings.simplefilter("ignore")

    import bench.api as cb

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cb.run(args.plugin, args.preset, seeds=99, generations=1, out=tmp / "warm-up")  # imports, caches
        load = os.getloadavg()[0]
        serial, serial_cpu, reference = run_serial(args, tmp / "serial")
        rows = [("serial (one process)", 1, serial, serial_cpu, 1.0, "")]
        for name in [e.strip() for e in args.executors.split(",") if e.strip()]:
            elapsed, cpu, values, counts = run_executor(args, name, tmp / name)
            same = values.keys() == reference.keys() and all(
                np.array_equal(values[k], reference[k]) for k in reference)
            note = ", ".join(f"{n} {s}" for s, n in counts.items()) + ("; results equal" if same else "; RESULTS DIFFER")
            rows.append((name, args.workers, elapsed, cpu, serial / elapsed, note))

    print(f"{args.chains} chains of {args.plugin}/{args.preset}, {args.generations} generations each; "
          f"{os.cpu_count()} CPU cores, load average {load:.2f} at the start")
    print(f"{'executor':<22} {'workers':>7} {'wall (s)':>9} {'CPU (s)':>8} {'speed-up':>9}  runs")
    for name, workers, elapsed, cpu, speedup, note in rows:
        print(f"{name:<22} {workers:>7} {elapsed:>9.2f} {cpu:>8.2f} {speedup:>8.2f}x  {note}")
    print("speed-up = serial wall time / executor wall time (start-up of workers, cluster or jobs included);\n"
          "CPU = CPU seconds of this process and the worker processes it waited for.")


if __name__ == "__main__":
    main()
