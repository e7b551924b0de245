"""The data policies of the literature (PROTOCOLS.md section 5), registered like any plugin's.

A policy builds D_{k+1}, the training data of generation k+1, from the real training set R and
the synthetic sets S_1..S_{k+1}. ``n`` below is |R|.

- ``replace``: D = S_{k+1} (Shumailov et al., setting a).
- ``mix:P``: a fresh random P-fraction of R (round(P n) samples, drawn anew each generation) plus
  n - round(P n) samples of S_{k+1}; total size n (Shumailov et al., setting b, P = 0.1).
- ``accumulate``: R plus every synthetic set so far (Gerstgrasser et al. 2024).
- ``accumulate-subsample``: a random subset of size ``size`` (default n) of that pool, drawn anew
  each generation (Kazdan et al. 2024).
- ``fresh:P``: round(P n) new, never-seen real samples from the source plus the rest from S_{k+1}
  (Alemohammad et al. 2023); only for sources that can draw fresh data.
"""

from __future__ import annotations

import numpy as np

import bench
from bench.components import PolicyContext, Samples


def _check_fraction(params) -> list[str]:
    p = params.get("p")
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= float(p) <= 1.0:
        raise bench.BenchError(
            f"the real-data fraction P must be a number between 0 and 1, got {p!r} "
            "(for example --policy mix:0.1)"
        )
    return []


def _check_size(params) -> list[str]:
    size = params.get("size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise bench.BenchError(f"size must be a positive integer or left unset, got {size!r}")
    return []


def _subset(samples: Samples, n: int, rng: np.random.Generator) -> Samples:
    """n samples drawn without replacement (all of them, shuffled, when n equals the size)."""
    if n > len(samples):
        raise ValueError(f"cannot draw {n} samples from a set of {len(samples)}")
    return samples.take(np.sort(rng.choice(len(samples), size=n, replace=False)))


def _with_real_share(real_part, ctx: PolicyContext) -> Samples:
    n = len(ctx.real.train)
    n_real = int(round(float(ctx.params["p"]) * n))
    latest = ctx.synthetic[-1]
    synthetic = _subset(latest, n - n_real, ctx.rng)
    if n_real == 0:
        return synthetic
    return Samples.concat([real_part(n_real), synthetic])


def replace(ctx: PolicyContext) -> Samples:
    return ctx.synthetic[-1]


def mix(ctx: PolicyContext) -> Samples:
    return _with_real_share(lambda m: _subset(ctx.real.train, m, ctx.rng), ctx)


def accumulate(ctx: PolicyContext) -> Samples:
    return Samples.concat([ctx.real.train, *ctx.synthetic])


def accumulate_subsample(ctx: PolicyContext) -> Samples:
    pool = Samples.concat([ctx.real.train, *ctx.synthetic])
    size = ctx.params.get("size") or len(ctx.real.train)
    return _subset(pool, min(size, len(pool)), ctx.rng)


def fresh(ctx: PolicyContext) -> Samples:
    if ctx.real.fresh is None:
        raise bench.BenchError(
            "policy 'fresh' needs a data source that can draw new real samples, and this model's "
            "cannot. Use --policy mix:P to reuse the real training set instead."
        )
    return _with_real_share(lambda m: ctx.real.fresh(m, ctx.rng), ctx)


SHUMAILOV = "Shumailov et al. 2024, AI models collapse when trained on recursively generated data (Nature 631)"
GERSTGRASSER = ("Gerstgrasser et al. 2024, Is Model Collapse Inevitable? Breaking the Curse of Recursion by "
                "Accumulating Real and Synthetic Data")
KAZDAN = "Kazdan et al. 2024, Collapse or Thrive? Perils and Promises of Synthetic Data in a Self-Generating World"
ALEMOHAMMAD = "Alemohammad et al. 2023, Self-Consuming Generative Models Go MAD"


@bench.hookimpl
def bench_register_policies(register):
    register(bench.Policy("replace", replace, citation=f"{SHUMAILOV}, setting (a)",
                          description="train only on the previous generation's samples"))
    register(
        bench.Policy(
            "mix",
            mix,
            params={"p": 0.1},
            positional="p",
            check=_check_fraction,
            citation=f"{SHUMAILOV}, setting (b)",
            description="a fresh random fraction p of real data each generation, total size fixed",
        )
    )
    register(bench.Policy("accumulate", accumulate, citation=GERSTGRASSER,
                          description="all real data plus every synthetic set so far"))
    register(
        bench.Policy(
            "accumulate-subsample",
            accumulate_subsample,
            params={"size": None},
            positional="size",
            check=_check_size,
            citation=KAZDAN,
            description="a fixed-size random subset of the accumulated pool",
        )
    )
    register(
        bench.Policy(
            "fresh",
            fresh,
            params={"p": 0.1},
            positional="p",
            check=_check_fraction,
            needs=("fresh-data",),
            citation=ALEMOHAMMAD,
            description="a fraction p of new, unseen real data each generation plus synthetic",
        )
    )
