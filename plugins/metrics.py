"""The generic metrics: any model with a scorer gets them (DESIGN.md, "Metrics").

Row k describes model M_k; ``ctx.samples`` is S_{k+1}, drawn from M_k; M_0 is the reference.

- ``test-nll``: the pooled per-unit NLL of the real test set under M_k (the test cross-entropy in
  nats per unit): finite where the perplexity overflows, so tables can rank it.
- ``test-perplexity``: exp(pooled per-unit NLL of the real test set under M_k).
- ``perplexity-drift``: that, divided by the same under M_0 (1 at generation 0).
- ``head-mass``, ``tail-mass``, ``oos-mass``: where S_{k+1} falls, under M_0's per-unit
  log-likelihood, relative to the real test set's bands (top alpha, bottom alpha, below the minimum).
- ``reference-nll``, ``reference-nll-shift``: quantiles of the per-unit NLL of S_{k+1} under M_0
  (the paper's Figure 1 histogram), raw and minus the same quantiles of the real test set.
- ``cov-trace-ratio``, ``logdet-diff``: covariance trace (ratio) and log-determinant (difference)
  of S_{k+1} against an equal-size sample of the real training set (vectors; images flattened).

The formulas live in plain NumPy functions (``perplexity``, ``mass_bands``, ``quantile_linear``,
``covariance``, ``trace_ratio``, ``logdet_diff``, ...) so that other plugins reuse them. Formulas,
variants and their reasons: docs/metrics.md.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

import bench
from bench.components import Metric, MetricContext, Scores

DEFAULT_TAIL_ALPHA = 0.1
DEFAULT_LOGDET_RIDGE = 1e-6
REFERENCE_QUANTILES = (0.1, 0.5, 0.9)
# Seeds the fixed subsample that makes two sample sets equal in size (see equal_size).
_SUBSAMPLE_SEED = 0x636F76  # "cov"
_COV_CHUNK_ROWS = 8192


# --------------------------------------------------------------------------------------------------
# Pure formulas (NumPy in, floats out)
# --------------------------------------------------------------------------------------------------


def nll_per_unit(loglik: np.ndarray, units: np.ndarray, batch_size: int | None = None) -> float:
    """Mean negative log-likelihood per unit.

    ``batch_size=None`` pools all units: -sum(loglik) / sum(units) (what :attr:`Scores.nll_per_unit`
    gives). With a batch size, consecutive batches of that many samples are pooled separately and
    their per-unit NLLs averaged with equal weight, as the released OPT code averages per-batch mean
    losses (the two agree when every batch holds the same number of units).
    """
    loglik = np.asarray(loglik, dtype=np.float64).reshape(-1)
    units = np.asarray(units, dtype=np.float64).reshape(-1)
    if loglik.shape != units.shape or loglik.size == 0:
        raise ValueError("loglik and units must be non-empty arrays of equal length")
    if np.any(units <= 0):
        raise ValueError("every sample must have a positive unit count")
    if batch_size is None:
        return float(-loglik.sum() / units.sum())
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    b = int(batch_size)
    means = [-loglik[i : i + b].sum() / units[i : i + b].sum() for i in range(0, loglik.size, b)]
    return float(np.mean(means))


def perplexity(nll: float) -> float:
    """exp(NLL per unit): the perplexity of a per-unit NLL in nats (inf past float range)."""
    if math.isnan(nll):
        return math.nan
    return math.exp(nll) if nll < 709.0 else math.inf


def perplexity_ratio(nll: float, nll_reference: float) -> float:
    """exp(nll) / exp(nll_reference), computed as exp(nll - nll_reference) so that it never overflows
    needlessly."""
    if math.isinf(nll) and math.isinf(nll_reference) and nll == nll_reference:
        return math.nan
    return perplexity(nll - nll_reference)


def per_unit_loglik(loglik: np.ndarray, units: np.ndarray) -> np.ndarray:
    """Each sample's log-likelihood divided by its unit count, so samples of any length compare."""
    loglik = np.asarray(loglik, dtype=np.float64).reshape(-1)
    units = np.asarray(units, dtype=np.float64).reshape(-1)
    if loglik.shape != units.shape:
        raise ValueError("loglik and units must have equal length")
    if np.any(units <= 0):
        raise ValueError("every sample must have a positive unit count")
    return loglik / units


def quantile_linear(x: np.ndarray, q: float) -> float:
    """The q-quantile by linear interpolation between order statistics.

    The definition of NumPy's default method ('linear', type 7 of Hyndman and Fan): with the values
    sorted as x_(0) <= ... <= x_(n-1), h = (n - 1) q, the quantile is
    x_(floor h) + (h - floor h) (x_(floor h + 1) - x_(floor h)). Unlike NumPy it copes with infinite
    values: interpolating away from -inf gives -inf, towards +inf gives +inf. NaN is refused.
    """
    x = np.sort(np.asarray(x, dtype=np.float64).reshape(-1))
    if x.size == 0:
        raise ValueError("quantile of an empty array")
    if np.isnan(x).any():
        raise ValueError("quantile of an array with NaN")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile level must lie in [0, 1], got {q}")
    h = (x.size - 1) * q
    lo = int(math.floor(h))
    frac = h - lo
    a = x[lo]
    if frac == 0.0:
        return float(a)
    b = x[min(lo + 1, x.size - 1)]
    if a == b:
        return float(a)
    if a == -np.inf:
        return -math.inf
    if b == np.inf:
        return math.inf
    return float(a + frac * (b - a))


def band_thresholds(real: np.ndarray, alpha: float) -> tuple[float, float, float]:
    """(minimum, alpha-quantile, (1 - alpha)-quantile) of the real per-unit log-likelihoods."""
    if isinstance(alpha, bool) or not 0.0 < float(alpha) <= 0.5:
        raise ValueError(f"tail_alpha must lie in (0, 0.5], got {alpha!r}")
    real = np.asarray(real, dtype=np.float64).reshape(-1)
    if real.size == 0:
        raise ValueError("no real samples to define the bands")
    if np.isnan(real).any():
        raise ValueError("the reference scorer gave NaN log-likelihoods for real test samples")
    return float(real.min()), quantile_linear(real, alpha), quantile_linear(real, 1.0 - alpha)


def mass_bands(real: np.ndarray, generated: np.ndarray, alpha: float = DEFAULT_TAIL_ALPHA) -> dict[str, float]:
    """Head, tail and out-of-support mass of generated samples against real ones.

    ``real`` and ``generated`` are per-sample (per-unit) log-likelihoods under one reference model.
    With m = min(real), q_lo and q_hi the alpha- and (1 - alpha)-quantiles of ``real``
    (:func:`quantile_linear`), a generated value g falls in

    - the head band when g > q_hi;
    - the tail band when m <= g < q_lo;
    - out of support when g < m, or g is -inf or NaN (whatever the real values).

    Returns ``head`` = share in the head band / alpha, ``tail`` = share in the tail band / alpha
    (both about 1 for samples distributed like the real ones) and ``oos`` = share out of support
    (about 1/(n_real + 1) for such samples).
    """
    m, q_lo, q_hi = band_thresholds(real, alpha)
    g = np.asarray(generated, dtype=np.float64).reshape(-1)
    if g.size == 0:
        raise ValueError("no generated samples")
    bad = np.isnan(g) | (g == -np.inf)
    with np.errstate(invalid="ignore"):
        head = (g > q_hi) & ~bad
        oos = bad | (g < m)
        tail = (g >= m) & (g < q_lo) & ~bad
    n = g.size
    return {
        "head": float(head.sum() / n / alpha),
        "tail": float(tail.sum() / n / alpha),
        "oos": float(oos.sum() / n),
    }


def nll_quantiles(nll: np.ndarray, levels=REFERENCE_QUANTILES) -> dict[str, float]:
    """Quantiles of per-unit NLLs (NaN counts as +inf), keyed q10, q50, q90 and so on."""
    nll = np.asarray(nll, dtype=np.float64).reshape(-1)
    nll = np.where(np.isnan(nll), np.inf, nll)
    return {f"q{round(100 * p):d}": quantile_linear(nll, p) for p in levels}


def flatten_rows(x: np.ndarray) -> np.ndarray:
    """(n, ...) -> (n, d): one row per sample (images become vectors of pixels)."""
    x = np.asarray(x)
    if x.ndim == 1:
        return x.reshape(-1, 1)
    return x.reshape(x.shape[0], -1)


def equal_size(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cut the larger of two sample arrays down to the size of the smaller.

    The kept rows are a uniform random subset without replacement (kept in their original order),
    drawn from a generator seeded by a fixed constant and the two sizes: the same rows every
    generation and every run, and no draw from the loop's random stream.
    """
    na, nb = len(a), len(b)
    if na == nb:
        return a, b
    n = min(na, nb)

    def cut(x: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng([_SUBSAMPLE_SEED, len(x), n])
        return x[np.sort(rng.choice(len(x), size=n, replace=False))]

    return (cut(a), b) if na > nb else (a, cut(b))


def covariance(x: np.ndarray) -> np.ndarray:
    """Sample covariance (divisor n - 1) of the rows of x, flattened to (n, d); float64.

    Accumulated over chunks of rows so that large image sets need no float64 copy in full.
    """
    x = flatten_rows(x)
    n, d = x.shape
    if n < 2:
        raise ValueError("a covariance needs at least two samples")
    mean = np.zeros(d)
    for i in range(0, n, _COV_CHUNK_ROWS):
        mean += np.asarray(x[i : i + _COV_CHUNK_ROWS], dtype=np.float64).sum(axis=0)
    mean /= n
    acc = np.zeros((d, d))
    for i in range(0, n, _COV_CHUNK_ROWS):
        c = np.asarray(x[i : i + _COV_CHUNK_ROWS], dtype=np.float64) - mean
        acc += c.T @ c
    return acc / (n - 1)


def trace_ratio(cov_generated: np.ndarray, cov_real: np.ndarray) -> float:
    """tr(C_generated) / tr(C_real): 1 when the total variance matches real data, < 1 when it shrank."""
    tg = float(np.trace(np.atleast_2d(cov_generated)))
    tr = float(np.trace(np.atleast_2d(cov_real)))
    if tr == 0.0:
        return math.nan if tg == 0.0 else math.inf
    return tg / tr


def logdet(cov: np.ndarray, ridge_abs: float = 0.0) -> float:
    """log det(C + ridge_abs I); -inf when that matrix is singular or not positive definite."""
    c = np.atleast_2d(np.asarray(cov, dtype=np.float64))
    if ridge_abs:
        c = c + ridge_abs * np.eye(c.shape[0])
    sign, value = np.linalg.slogdet(c)
    return float(value) if sign > 0 else -math.inf


def logdet_diff(cov_generated: np.ndarray, cov_real: np.ndarray, ridge: float = DEFAULT_LOGDET_RIDGE) -> float:
    """log det(C_g + lam I) - log det(C_r + lam I), lam = ridge * tr(C_r) / d.

    The same ridge lam (relative to the real data's mean variance) goes on both sides, so directions
    where both sets have no variance (constant border pixels) cancel instead of giving -inf - -inf.
    With ridge 0 the value is -inf when only C_g is singular and NaN when both are.
    """
    cg = np.atleast_2d(np.asarray(cov_generated, dtype=np.float64))
    cr = np.atleast_2d(np.asarray(cov_real, dtype=np.float64))
    if cg.shape != cr.shape:
        raise ValueError(f"covariances of different shapes {cg.shape} and {cr.shape}")
    if ridge < 0:
        raise ValueError(f"logdet_ridge must be >= 0, got {ridge}")
    lam = 0.0
    if ridge > 0:
        mean_var = float(np.trace(cr)) / cr.shape[0]
        lam = ridge * (mean_var if mean_var > 0 else 1.0)
    lg, lr = logdet(cg, lam), logdet(cr, lam)
    if math.isinf(lg) and math.isinf(lr):
        return math.nan
    return lg - lr


# --------------------------------------------------------------------------------------------------
# Metric compute steps (MetricContext in)
# --------------------------------------------------------------------------------------------------


def _param(params: Mapping, key: str, default):
    value = params.get(key, default)
    return default if value is None else value


def _test_nll(ctx: MetricContext, scores: Scores) -> float:
    return nll_per_unit(scores.loglik, scores.units, ctx.params.get("perplexity_batch_size"))


def _model_scores_real_test(ctx: MetricContext) -> Scores:
    # At generation 0 the model is the reference: score the test set once, not twice.
    if ctx.state is ctx.reference_state:
        return ctx.reference_scores_real_test()
    return ctx.model_scores_real_test()


def compute_test_nll(ctx: MetricContext) -> float:
    return _test_nll(ctx, _model_scores_real_test(ctx))


def compute_test_perplexity(ctx: MetricContext) -> float:
    return perplexity(_test_nll(ctx, _model_scores_real_test(ctx)))


def compute_perplexity_drift(ctx: MetricContext) -> float:
    nll_k = _test_nll(ctx, _model_scores_real_test(ctx))
    nll_0 = _test_nll(ctx, ctx.reference_scores_real_test())
    return perplexity_ratio(nll_k, nll_0)


def _reference_per_unit(ctx: MetricContext) -> tuple[np.ndarray, np.ndarray]:
    def compute():
        real = ctx.reference_scores_real_test()
        gen = ctx.reference_scores_samples()
        return per_unit_loglik(real.loglik, real.units), per_unit_loglik(gen.loglik, gen.units)

    return ctx.cached("generic:ref-per-unit", compute)


def _bands(ctx: MetricContext) -> dict[str, float]:
    alpha = float(_param(ctx.params, "tail_alpha", DEFAULT_TAIL_ALPHA))

    def compute():
        real, gen = _reference_per_unit(ctx)
        return mass_bands(real, gen, alpha)

    return ctx.cached(f"generic:bands:{alpha!r}", compute)


def compute_head_mass(ctx: MetricContext) -> float:
    return _bands(ctx)["head"]


def compute_tail_mass(ctx: MetricContext) -> float:
    return _bands(ctx)["tail"]


def compute_oos_mass(ctx: MetricContext) -> float:
    return _bands(ctx)["oos"]


def compute_reference_nll(ctx: MetricContext) -> dict[str, float]:
    _, gen = _reference_per_unit(ctx)
    return nll_quantiles(-gen)


def compute_reference_nll_shift(ctx: MetricContext) -> dict[str, float]:
    real, gen = _reference_per_unit(ctx)
    g, r = nll_quantiles(-gen), nll_quantiles(-real)
    out = {}
    for key in g:
        if math.isinf(g[key]) and g[key] == r[key]:
            out[key] = math.nan
        else:
            out[key] = g[key] - r[key]
    return out


def _covariances(ctx: MetricContext) -> tuple[np.ndarray, np.ndarray]:
    def compute():
        gen, real = equal_size(flatten_rows(ctx.samples.data), flatten_rows(ctx.real.train.data))
        if gen.shape[1] != real.shape[1]:
            raise ValueError(
                f"generated samples have {gen.shape[1]} values each and real ones {real.shape[1]}"
            )
        return covariance(gen), covariance(real)

    return ctx.cached("generic:covariances", compute)


def compute_cov_trace_ratio(ctx: MetricContext) -> float:
    cg, cr = _covariances(ctx)
    return trace_ratio(cg, cr)


def compute_logdet_diff(ctx: MetricContext) -> float:
    cg, cr = _covariances(ctx)
    return logdet_diff(cg, cr, float(_param(ctx.params, "logdet_ridge", DEFAULT_LOGDET_RIDGE)))


# --------------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------------

METRICS = (
    Metric(
        name="test-nll",
        compute=compute_test_nll,
        direction="lower",
        needs_scorer=True,
        description="pooled per-unit NLL of the real test set under M_k (test cross-entropy, nats per unit)",
    ),
    Metric(
        name="test-perplexity",
        compute=compute_test_perplexity,
        direction="lower",
        needs_scorer=True,
        description="exp(pooled per-unit NLL of the real test set under M_k)",
    ),
    Metric(
        name="perplexity-drift",
        compute=compute_perplexity_drift,
        direction="lower",
        needs_scorer=True,
        description="test perplexity of M_k divided by that of M_0",
    ),
    Metric(
        name="head-mass",
        compute=compute_head_mass,
        direction="target",
        target=1.0,
        needs_scorer=True,
        description="share of S_{k+1} above the real test set's (1-alpha)-quantile of M_0 "
        "per-unit log-likelihood, over alpha",
    ),
    Metric(
        name="tail-mass",
        compute=compute_tail_mass,
        direction="target",
        target=1.0,
        needs_scorer=True,
        description="share of S_{k+1} between the real minimum and alpha-quantile of M_0 "
        "per-unit log-likelihood, over alpha",
    ),
    Metric(
        name="oos-mass",
        compute=compute_oos_mass,
        direction="lower",
        needs_scorer=True,
        description="share of S_{k+1} below the real test set's minimum M_0 per-unit log-likelihood",
    ),
    Metric(
        name="reference-nll",
        compute=compute_reference_nll,
        direction="lower",
        needs_scorer=True,
        description="10/50/90% quantiles of the per-unit NLL of S_{k+1} under M_0 (descriptive)",
    ),
    Metric(
        name="reference-nll-shift",
        compute=compute_reference_nll_shift,
        direction="target",
        target=0.0,
        needs_scorer=True,
        description="reference-nll quantiles minus the same quantiles of the real test set",
    ),
    Metric(
        name="cov-trace-ratio",
        compute=compute_cov_trace_ratio,
        direction="target",
        target=1.0,
        kinds=("vectors", "images"),
        description="trace of the covariance of S_{k+1} over that of equal-size real training data",
    ),
    Metric(
        name="logdet-diff",
        compute=compute_logdet_diff,
        direction="target",
        target=0.0,
        kinds=("vectors", "images"),
        description="log-determinant of the (ridged) covariance of S_{k+1} minus that of real data",
    ),
)


@bench.hookimpl
def bench_register_metrics(register) -> None:
    for metric in METRICS:
        register(metric)
