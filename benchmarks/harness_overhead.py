"""The harness's cost over a bare loop of the same fits, measured side by side.

The bare loop is the released notebook's loop (GaussianMixture refitted on 1000 samples, then
sampled, generation after generation) made of the very same fits: it calls the `gmm` plugin's fit
and generate functions with the random streams the harness gives them, so both sides do identical
EM work (checked: the final states are equal, or the script fails). The harness runs the paper
preset through `bench.api.run` into a fresh folder, writing every generation to disk: once with
only the protocol metrics (gmm-l2, gmm-std: what the notebook measures) and, unless
--protocol-only, once with the preset's full metric set.

Threads are pinned to one; imports and plugin loading happen in a warm-up before the timed calls;
the sides run interleaved (benchmarks/_timing.py) and the script prints min and median of CPU and
wall time and their ratios to the bare loop.

    python benchmarks/harness_overhead.py [--generations 2050] [--repeats 5] [--seed 0]
        [--protocol-only] [--profile]

--profile runs the harness (protocol metrics) once under cProfile instead, and prints where its
time goes per generation, the fits and samplings the bare loop also does included.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import numpy as np

from _timing import interleave, pin_threads, report

PROTOCOL_METRICS = ["gmm-l2", "gmm-std"]


def final_state(run_dir: Path, k: int) -> dict[str, np.ndarray]:
    """M_k's state as the run folder keeps it (the one place this script reads a run folder)."""
    from bench import runfolder

    reader = getattr(runfolder, "generation_state", None)
    if reader is not None:
        state = reader(run_dir, k)
        if state is None:
            raise SystemExit(f"{run_dir} keeps no state for generation {k}")
        return state
    from bench import results as R

    return R.read_state(run_dir / "gens" / R.gen_name(k) / "state.safetensors")


def bare_loop(generations: int, seed: int) -> dict[str, np.ndarray]:
    """The notebook's loop: fit, sample, generation after generation; returns the last state."""
    import bench.api as cb
    from bench.components import FitRequest, GenerateRequest, RealRequest
    from bench.loop import GENERATE, TRAIN, rng
    from collapse_bench_plugins import gmm

    params = cb.specs("gmm", "paper", seeds=seed)[0].params
    data = gmm.load_real(RealRequest(params, seed)).train
    for k in range(generations + 1):
        state = gmm.fit(FitRequest(data, None, "pretrained", None, params, rng(seed, k, TRAIN), k))
        data = gmm.generate(GenerateRequest(state, 1000, None, params, rng(seed, k, GENERATE), k))
    return state


def harness(generations: int, seed: int, metrics: list[str] | None, b) -> dict[str, np.ndarray]:
    """The paper preset through `bench.api.run` into a fresh folder; returns the last state."""
    import bench.api as cb

    with tempfile.TemporaryDirectory() as out:
        [run] = cb.run("gmm", "paper", generations=generations, seeds=seed, out=out, metrics=metrics, bench=b)
        return final_state(Path(run.path), generations)


def _area(file: str) -> str:
    """Which code a profiled function belongs to: the harness, a plugin, or a library."""
    parts = Path(file).parts
    for name in ("bench", "plugins", "collapse_bench_plugins", "sklearn", "scipy", "numpy", "pyarrow",
                 "safetensors", "threadpoolctl"):
        if name in parts:
            return {"plugins": "first-party plugins", "collapse_bench_plugins": "first-party plugins",
                    "bench": "harness (bench/)"}.get(name, name)
    return "python and builtins"


def profile(generations: int, seed: int, b, top: int = 30) -> None:
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.runcall(harness, generations, seed, PROTOCOL_METRICS, b)
    stats = pstats.Stats(profiler)
    rows = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)[:top]  # own time
    total = stats.total_tt
    print(f"harness, {generations + 1} generations: {total:.2f} s under the profiler, "
          f"{1000 * total / (generations + 1):.3f} ms a generation")
    areas: dict[str, float] = {}
    for (file, _, _), (_, _, own, _, _) in stats.stats.items():
        areas[_area(file)] = areas.get(_area(file), 0.0) + own
    print("own time by where the code lives (ms a generation):  " + ", ".join(
        f"{area} {1000 * t / (generations + 1):.3f}" for area, t in sorted(areas.items(), key=lambda a: -a[1])))
    print(f"{'own ms/gen':>10} {'cum ms/gen':>10} {'calls/gen':>9}  function")
    for (file, line, name), (_, calls, own, cum, _) in rows:
        where = f"{Path(file).parent.name}/{Path(file).name}:{line}" if line else file
        print(f"{1000 * own / (generations + 1):>10.3f} {1000 * cum / (generations + 1):>10.3f} "
              f"{calls / (generations + 1):>9.1f}  {name} ({where})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--generations", type=int, default=2050)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--protocol-only", action="store_true", help="leave out the side with every preset metric")
    ap.add_argument("--profile", action="store_true", help="profile the harness once instead of timing")
    args = ap.parse_args()
    pin_threads(1)
    warnings.simplefilter("ignore")  # scikit-learn's convergence warnings, on both sides alike

    from bench.plugins import Bench

    b = Bench()
    g, seed = args.generations, args.seed
    bare_loop(2, seed), harness(2, seed, PROTOCOL_METRICS, b), harness(2, seed, None, b)  # warm-up
    if args.profile:
        profile(g, seed, b)
        return

    sides = {"bare loop": lambda: bare_loop(g, seed),
             "harness, protocol metrics": lambda: harness(g, seed, PROTOCOL_METRICS, b)}
    if not args.protocol_only:
        sides["harness, all preset metrics"] = lambda: harness(g, seed, None, b)
    states: dict[str, dict[str, np.ndarray]] = {}

    def check(name: str, repeat: int, state: dict[str, np.ndarray]) -> None:
        states.setdefault(name, state)
        reference = states.get("bare loop", state)
        if state.keys() != reference.keys() or not all(np.array_equal(state[k], reference[k]) for k in state):
            raise SystemExit(f"{name} (repeat {repeat}) ended in another state than the bare loop: "
                             "the sides did different fits, so their times are not comparable")

    print(f"gmm paper preset, seed {seed}: {g + 1} fits a call, {args.repeats} calls a side", flush=True)
    results = interleave(sides, args.repeats, on_result=check)
    report(results, baseline="bare loop")
    print("final states: equal on every side and repeat")


if __name__ == "__main__":
    main()
