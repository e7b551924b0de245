"""The harness's cost over a bare loop of the same fits, measured side by side.

The bare loop is the released notebook's loop (GaussianMixture refitted on 1000 samples, then
sampled, generation after generation) made of the very same fits: it calls the `gmm` plugin's fit
and sample functions with the random streams the harness gives them, so both do identical EM
work (checked: the final states are equal). The harness runs the paper preset through
`bench.api.run`, once with only the protocol metrics (gmm-l2, gmm-std: what the notebook
measures) and once with the preset's full metric set, writing every generation to disk.

    python benchmarks/harness_overhead.py [--generations 2050] [--repeats 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings

import numpy as np


def bare_loop(generations: int, seed: int) -> tuple[float, dict]:
    import bench.api as cb
    from bench.components import FitRequest, GenerateRequest, RealRequest
    from bench.loop import GENERATE, TRAIN, rng
    from collapse_bench_plugins import gmm

    spec = cb.specs("gmm", "paper", seeds=seed)[0]
    params = spec.params
    data = gmm.load_real(RealRequest(params, seed)).train
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in range(generations + 1):
            state = gmm.fit(FitRequest(data, None, "pretrained", None, params, rng(seed, k, TRAIN), k))
            data = gmm.generate(GenerateRequest(state, 1000, None, params, rng(seed, k, GENERATE), k))
    return time.perf_counter() - t, state


def harness(generations: int, seed: int, metrics) -> tuple[float, dict]:
    import bench.api as cb
    from bench import results as R

    with tempfile.TemporaryDirectory() as out, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = time.perf_counter()
        run = cb.run("gmm", "paper", generations=generations, seeds=seed, out=out, metrics=metrics)[0]
        elapsed = time.perf_counter() - t
        state = R.read_state(run.path / "gens" / R.gen_name(generations) / "state.safetensors")
        return elapsed, state


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--generations", type=int, default=2050)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    g = args.generations
    import sklearn.mixture  # noqa: F401  (import time is not part of either loop)

    rows = []
    for r in range(args.repeats):
        bare, s_bare = bare_loop(g, r)
        lean, s_lean = harness(g, r, ["gmm-l2", "gmm-std"])
        full, _ = harness(g, r, None)
        assert all(np.array_equal(s_bare[k], s_lean[k]) for k in s_bare), "the loops did different fits"
        rows.append((bare, lean, full))
        print(f"repeat {r}: bare loop {bare:.1f} s | harness, protocol metrics {lean:.1f} s "
              f"(x{lean / bare:.2f}) | harness, all preset metrics {full:.1f} s (x{full / bare:.2f})", flush=True)
    bare, lean, full = np.median(np.array(rows), axis=0)
    print(f"median over {args.repeats}: {g + 1} fits; bare {bare:.1f} s, harness {lean:.1f} s "
          f"(overhead ratio {lean / bare:.2f}), with all metrics {full:.1f} s (ratio {full / bare:.2f})")


if __name__ == "__main__":
    main()
