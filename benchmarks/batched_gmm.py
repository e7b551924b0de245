"""Many seeds of the paper's GMM chain: the released notebook's loop against the batched EM.

(a) The released notebook's loop, once per seed: ``GaussianMixture(2, 'full', tol=1e-5,
    max_iter=2000)`` fitted from scratch, 1000 samples drawn with ``sample``, refitted, for
    2050 refits after the first (BLAS/OpenMP limited to one thread, as the ``gmm`` plugin runs it).
(b) The batched EM (``collapse_bench_plugins.batched.fit_gmm_batch``) fitting all seeds' chains
    together each generation, driven directly (no harness), sampling with the ``gmm`` plugin's
    sampler and the harness's random streams.

Both start from the ``gmm`` bundle's real training set of each seed (one N(0, I) blob). The
script prints the wall time of each loop and their ratio, and the final collapse statistics of
both (per-component std and squared L2 distance to the generation-0 fit: mean and sd over seeds,
and Welch statistics of the difference of their logs), which should agree within seed variation.

    python benchmarks/batched_gmm.py                      # fit only: (a) against (b), interleaved
    python benchmarks/batched_gmm.py --chains             # whole chains, 16 seeds, 2050 generations
    python benchmarks/batched_gmm.py --chains --sklearn-seeds 2   # (a) on 2 seeds, extrapolated

Fit only (the default): the fits' inputs are the 16 chains' data sets every ``--every`` generations
of a batched chain of ``--generations`` (generation 0 included); each repeat times (a) a
``GaussianMixture`` fit of every data set one after another and (b) one ``fit_gmm_batch`` call per
generation for the same data, sides interleaved, one BLAS/OpenMP thread (threadpoolctl), CPU time
(``time.process_time``) and wall time, through ``benchmarks/_timing.py``; it prints min and
median per chain-generation and the ratios (a) / (b). The whole-chain mode times each loop once, in wall time.
    python benchmarks/batched_gmm.py --harness --out DIR  # also (c): bench run on gmm-batched
    python benchmarks/batched_gmm.py --seeds 2 --generations 10 --skip-sklearn --single-fits 400

(c) runs ``bench run --plugin gmm-batched --preset paper --seeds 0-15`` (the harness drives the
chains in lockstep through ``Trainer.fit_batch``) and times it; with ``--harness-sklearn`` also
``bench run --plugin gmm --preset paper --seeds 0-15``.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np


def notebook_chain(x: np.ndarray, seed: int, generations: int):
    """The released notebook's loop for one seed: returns (first state, last state, seconds)."""
    from sklearn.mixture import GaussianMixture
    from threadpoolctl import threadpool_limits

    from bench.loop import TRAIN, rng
    from collapse_bench_plugins import gmm

    first = None
    t = time.perf_counter()
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in range(generations + 1):
            model = GaussianMixture(n_components=2, covariance_type="full", tol=1e-5, max_iter=2000,
                                    random_state=int(rng(seed, k, TRAIN).integers(0, 2**32 - 1)))
            model.fit(x)
            if first is None:
                first = gmm.mixture(model.weights_, model.means_, model.covariances_)
            x = model.sample(x.shape[0])[0]
    elapsed = time.perf_counter() - t
    return first, gmm.mixture(model.weights_, model.means_, model.covariances_), elapsed


def batched_chains(xs: dict[int, np.ndarray], params, generations: int):
    """All seeds' chains in lockstep through fit_gmm_batch: ({seed: (first, last)}, s, fit s)."""
    from bench.components import FitRequest, Samples
    from bench.loop import GENERATE, TRAIN, rng
    from collapse_bench_plugins import batched, gmm

    seeds = sorted(xs)
    xs = dict(xs)
    first: dict[int, dict] = {}
    fit_time = 0.0
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in range(generations + 1):
            requests = [FitRequest(Samples("vectors", xs[s]), None, "pretrained", None, params,
                                   rng(s, k, TRAIN), k) for s in seeds]
            t_fit = time.perf_counter()
            states = batched.fit_gmm_batch(requests)
            fit_time += time.perf_counter() - t_fit
            for s, state in zip(seeds, states):
                first.setdefault(s, state)
                xs[s] = gmm.sample_mixture(state, xs[s].shape[0], rng(s, k, GENERATE))
    elapsed = time.perf_counter() - t
    return {s: (first[s], state) for s, state in zip(seeds, states)}, elapsed, fit_time


def chain_snapshots(xs: dict[int, np.ndarray], params, generations: int, every: int) -> list[tuple[int, list]]:
    """[(generation, [data set of each seed])] every ``every`` generations of the batched chains."""
    from bench.components import FitRequest, Samples
    from bench.loop import GENERATE, TRAIN, rng
    from collapse_bench_plugins import batched, gmm

    seeds = sorted(xs)
    xs = dict(xs)
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in range(generations + 1):
            if k % every == 0:
                out.append((k, [xs[s] for s in seeds]))
            requests = [FitRequest(Samples("vectors", xs[s]), None, "pretrained", None, params,
                                   rng(s, k, TRAIN), k) for s in seeds]
            for s, state in zip(seeds, batched.fit_gmm_batch(requests)):
                xs[s] = gmm.sample_mixture(state, xs[s].shape[0], rng(s, k, GENERATE))
    return out


def fit_only(snapshots, params, repeats: int) -> dict:
    """(a) scikit-learn fits one after another against (b) one batched fit per generation."""
    from _timing import Timing, interleave, pin_threads, report
    from sklearn.mixture import GaussianMixture
    from threadpoolctl import threadpool_limits

    from bench.components import FitRequest, Samples
    from bench.loop import TRAIN, rng
    from collapse_bench_plugins import batched

    def notebook():
        for k, sets in snapshots:
            for s, x in enumerate(sets):
                GaussianMixture(n_components=2, covariance_type="full", tol=params["tol"],
                                max_iter=params["max_iter"], reg_covar=params["reg_covar"],
                                random_state=int(rng(s, k, TRAIN).integers(0, 2**32 - 1))).fit(x)

    def batch():
        for k, sets in snapshots:
            batched.fit_gmm_batch([FitRequest(Samples("vectors", x), None, "pretrained", None, params,
                                              rng(s, k, TRAIN), k) for s, x in enumerate(sets)])

    fits = sum(len(sets) for _, sets in snapshots)
    pin_threads(1)
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        times = interleave({"notebook": notebook, "batched": batch}, repeats)
    print(f"per chain-generation ({fits} fits a call, times in ms); ratios to the batched fit:")
    per_fit = type(times)({name: [Timing(1e3 * t.wall / fits, 1e3 * t.cpu / fits) for t in ts]
                           for name, ts in times.items()})
    per_fit.cores, per_fit.load_start, per_fit.load_end = times.cores, times.load_start, times.load_end
    figures = report(per_fit, baseline="batched", unit="ms")
    return {"fits": fits, "repeats": repeats,
            "per_fit_ms": {name: [list(t) for t in ts] for name, ts in per_fit.items()},
            "summary": {name: f._asdict() for name, f in figures.items()}}


def statistics(pairs) -> np.ndarray:
    """Per seed: final std of the widest and of the narrowest component, final squared L2 to gen 0."""
    from collapse_bench_plugins import gmm

    return np.array([[*gmm.component_stds(last), gmm.l2_squared(last, first)] for first, last in pairs])


def summary(name: str, stats: np.ndarray) -> str:
    mean, sd = stats.mean(axis=0), stats.std(axis=0, ddof=1) if len(stats) > 1 else np.zeros(3)
    logs = np.log10(stats)
    return (f"{name:<10} std0 {mean[0]:.4f} +- {sd[0]:.4f}   std1 {mean[1]:.4f} +- {sd[1]:.4f}   "
            f"L2 median {np.median(stats[:, 2]):.1f} (log10 {logs[:, 2].mean():.2f} +- "
            f"{logs[:, 2].std(ddof=1) if len(stats) > 1 else 0.0:.2f})")


def welch(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|mean(log a) - mean(log b)| / sqrt(var_a / n_a + var_b / n_b), per column."""
    la, lb = np.log(a), np.log(b)
    return np.abs(la.mean(0) - lb.mean(0)) / np.sqrt(la.var(0, ddof=1) / len(la) + lb.var(0, ddof=1) / len(lb))


def single_fits(count: int, collapsed: bool) -> np.ndarray:
    """Paired single fits on ``count`` data sets: rows of (batched - scikit-learn) differences of
    log std of each component, mean log-likelihood and smaller weight."""
    from sklearn.mixture import GaussianMixture
    from threadpoolctl import threadpool_limits

    from bench.components import FitRequest, Samples
    from collapse_bench_plugins import batched, gmm

    g = np.random.default_rng(123)
    if collapsed:  # two narrow components a few hundredths apart, as late in a chain
        truth = gmm.mixture([0.6, 0.4], [[1.3, -0.7], [1.35, -0.68]],
                            [np.diag([9e-4, 4e-4]), [[2e-4, 5e-5], [5e-5, 3e-4]]])
    else:
        truth = gmm.true_mixture("one-blob")
    data = [gmm.sample_mixture(truth, 1000, g) for _ in range(count)]
    params = dict(gmm.PARAMS)
    ours = batched.fit_gmm_batch([FitRequest(Samples("vectors", x), None, "pretrained", None, params,
                                             np.random.default_rng([5, i]), 0) for i, x in enumerate(data)])

    def stats(state, x):
        std = gmm.component_stds(state)
        return [math.log(std[0]), math.log(std[1]), gmm.mixture_logpdf(state, x).mean(), state["weights"].min()]

    rows = []
    with threadpool_limits(limits=1):
        for i, x in enumerate(data):
            m = GaussianMixture(2, covariance_type="full", tol=1e-5, max_iter=2000, random_state=i).fit(x)
            rows.append(np.subtract(stats(ours[i], x), stats(gmm.mixture(m.weights_, m.means_, m.covariances_), x)))
    return np.array(rows)


def harness(plugin: str, seeds: list[int], generations: int, out: Path) -> float:
    cmd = [str(Path(sys.executable).with_name("bench")), "run", "--plugin", plugin, "--preset", "paper",
           "--seeds", f"{seeds[0]}-{seeds[-1]}", "--generations", str(generations), "--out", str(out)]
    print("$", " ".join(cmd), flush=True)
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=16, help="number of seeds (default 16)")
    ap.add_argument("--first-seed", type=int, default=0, help="seeds FIRST..FIRST+N-1 (default 0)")
    ap.add_argument("--generations", type=int, default=2050, help="refits after the first (default 2050)")
    ap.add_argument("--sklearn-seeds", type=int, default=None,
                    help="run (a) on the first N seeds only and extrapolate its time to all (default: all)")
    ap.add_argument("--skip-sklearn", action="store_true", help="do not run (a)")
    ap.add_argument("--harness", action="store_true", help="also (c): bench run --plugin gmm-batched")
    ap.add_argument("--harness-sklearn", action="store_true", help="also bench run --plugin gmm (slow)")
    ap.add_argument("--out", default="results-batched-bench", help="run folder of (c)")
    ap.add_argument("--single-fits", type=int, default=0,
                    help="also compare N paired single fits with scikit-learn (blob and collapsed data)")
    ap.add_argument("--json", default=None, help="write the figures to this JSON file")
    ap.add_argument("--chains", action="store_true", help="time whole chains instead of the fits alone")
    ap.add_argument("--every", type=int, default=50, help="fit only: data sets every N generations (default 50)")
    ap.add_argument("--repeats", type=int, default=5, help="fit only: interleaved repeats (default 5)")
    args = ap.parse_args()

    import sklearn.mixture  # noqa: F401  (import time belongs to neither loop)

    import bench.api as cb
    from bench.components import RealRequest
    from collapse_bench_plugins import gmm

    params = cb.specs("gmm", "paper", seeds=0)[0].params
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    data = {s: gmm.load_real(RealRequest(params, s)).train.data for s in seeds}
    print(f"paper preset: one N(0, I) blob, n={params['n_samples']}, {args.generations} refits after "
          f"the first, {len(seeds)} seeds", flush=True)
    report: dict = {"seeds": seeds, "generations": args.generations}

    if not args.chains:
        snapshots = chain_snapshots(data, params, args.generations, args.every)
        print(f"fit only: {len(snapshots)} generations (every {args.every}) x {len(seeds)} chains, "
              f"{args.repeats} interleaved repeats, one thread", flush=True)
        report["fit_only"] = fit_only(snapshots, params, args.repeats)
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1))
        return

    pairs_b, t_b, fit_b = batched_chains(data, params, args.generations)
    stats_b = statistics(pairs_b[s] for s in seeds)
    print(f"(b) batched EM, all {len(seeds)} chains together: {t_b:.1f} s "
          f"({fit_b:.1f} s in fit_gmm_batch, {t_b / len(seeds):.2f} s per seed)", flush=True)
    report["batched"] = {"seconds": t_b, "fit_seconds": fit_b, "stats": stats_b.tolist()}

    if not args.skip_sklearn:
        n_a = len(seeds) if args.sklearn_seeds is None else min(args.sklearn_seeds, len(seeds))
        rows, times = [], []
        for s in seeds[:n_a]:
            first, last, dt = notebook_chain(data[s], s, args.generations)
            rows.append((first, last))
            times.append(dt)
            print(f"(a) notebook loop, seed {s}: {dt:.1f} s", flush=True)
        stats_a = statistics(rows)
        t_a = float(np.sum(times)) * len(seeds) / n_a
        how = "measured" if n_a == len(seeds) else f"extrapolated from {n_a} seed(s)"
        print(f"(a) notebook loop, {len(seeds)} seeds one after another: {t_a:.1f} s ({how}; "
              f"{np.mean(times):.2f} s per seed)")
        print(f"speed-up (a) / (b): {t_a / t_b:.1f}x")
        print(summary("(a) sklearn", stats_a))
        print(summary("(b) batched", stats_b))
        if n_a > 1:
            w = welch(stats_a, stats_b)
            print(f"Welch |t| of log values (std0, std1, L2): {w[0]:.2f} {w[1]:.2f} {w[2]:.2f}")
            report["welch"] = w.tolist()
        report["sklearn"] = {"seconds": t_a, "measured_seeds": n_a, "per_seed": times,
                             "stats": stats_a.tolist()}
        report["speedup"] = t_a / t_b
    else:
        print(summary("(b) batched", stats_b))

    if args.single_fits:
        for collapsed in (False, True):
            d = single_fits(args.single_fits, collapsed)
            z = d.mean(0) / (d.std(0, ddof=1) / math.sqrt(len(d)))
            print(f"single fits, {'collapsed' if collapsed else 'one-blob'} data, {len(d)} paired: mean "
                  f"difference in standard errors (log std0, log std1, loglik, min weight): "
                  + " ".join(f"{v:.2f}" for v in z))
            report[f"single_fits_{'collapsed' if collapsed else 'blob'}_z"] = z.tolist()

    if args.harness or args.harness_sklearn:
        out = Path(args.out)
        if args.harness:
            t_c = harness("gmm-batched", seeds, args.generations, out)
            print(f"(c) bench run --plugin gmm-batched: {t_c:.1f} s")
            report["harness_batched_seconds"] = t_c
        if args.harness_sklearn:
            t_d = harness("gmm", seeds, args.generations, out)
            print(f"(d) bench run --plugin gmm: {t_d:.1f} s")
            report["harness_sklearn_seconds"] = t_d
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
