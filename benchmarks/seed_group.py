"""Sixteen seeds of the GMM paper preset through the harness against the released notebook's loop.

(a) The notebook's loop, one seed after another: scikit-learn ``GaussianMixture(2, 'full',
    tol=1e-5, max_iter=2000)`` refitted from scratch on 1000 samples drawn from the previous fit
    (the ``gmm`` plugin's fit and sampler with the harness's random streams, so the work is the
    notebook's; one BLAS/OpenMP thread).
(b) ``bench.api.run("gmm-batched", "paper", seeds=0..15)``: the harness drives the chains in
    lockstep, every generation's fits in one ``fit_batch`` call (``bench run --plugin gmm-batched
    --preset paper --seeds 0-15``), writing every generation to a fresh folder.
(c) with ``--gmm``: ``bench.api.run("gmm", "paper", seeds=0..15)``, one chain after another.

The sides run interleaved (benchmarks/_timing.py); CPU time counts every thread of the process.
Issue 14's goal for (a)/(b) is 10x or more.

    python benchmarks/seed_group.py [--generations 2050] [--seeds 16] [--repeats 3] [--gmm]
"""

from __future__ import annotations

import argparse
import tempfile
import warnings

import _timing


def notebook(seeds: int, generations: int) -> None:
    import bench.api as cb
    from bench.components import FitRequest, GenerateRequest, RealRequest
    from bench.loop import GENERATE, TRAIN, rng
    from collapse_bench_plugins import gmm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for seed in range(seeds):
            params = cb.specs("gmm", "paper", seeds=seed)[0].params
            data = gmm.load_real(RealRequest(params, seed)).train
            for k in range(generations + 1):
                state = gmm.fit(FitRequest(data, None, "pretrained", None, params, rng(seed, k, TRAIN), k))
                data = gmm.generate(GenerateRequest(state, 1000, None, params, rng(seed, k, GENERATE), k))


def harness(plugin: str, seeds: int, generations: int) -> None:
    import bench.api as cb

    with tempfile.TemporaryDirectory() as out, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runs = cb.run(plugin, "paper", generations=generations, seeds=list(range(seeds)), out=out)
        assert all(r.status == "complete" for r in runs), [r.status for r in runs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--generations", type=int, default=2050)
    ap.add_argument("--seeds", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--gmm", action="store_true", help="also (c): the gmm bundle through the harness")
    args = ap.parse_args()
    _timing.pin_threads(1)
    import sklearn.mixture  # noqa: F401  (imports are not part of any side)

    harness("gmm-batched", 2, 2)  # warm-up: plugin loading, first-call imports
    sides = {
        "notebook loop (sklearn)": lambda: notebook(args.seeds, args.generations),
        "bench run gmm-batched": lambda: harness("gmm-batched", args.seeds, args.generations),
    }
    if args.gmm:
        sides["bench run gmm"] = lambda: harness("gmm", args.seeds, args.generations)
    print(f"{args.seeds} seeds x {args.generations + 1} fits, GMM paper preset")
    _timing.report(_timing.interleave(sides, args.repeats), baseline="notebook loop (sklearn)")


if __name__ == "__main__":
    main()
