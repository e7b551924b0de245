"""Recursive fitting of a Gaussian and of a categorical distribution: the theory track.

Two model bundles whose collapse has closed forms (PROTOCOLS.md section 4), so the harness can be
checked against theory and collapse can be watched in milliseconds:

- ``gaussian``: a d-dimensional Gaussian N(mean * 1, std^2 I) refitted from M samples per generation
  by the sample mean and the full sample covariance, with the unbiased (ddof 1) or the
  maximum-likelihood (ddof 0) estimator. The variance is a positive martingale (unbiased) that still
  tends to 0 almost surely, and the mean performs a random walk.
- ``categorical``: a distribution over K states (Zipf truth) refitted by empirical frequencies from M
  samples (multinomial resampling, the Wright-Fisher model); it is absorbed at a single state, state
  i with probability q_i.

Model states are flat dicts of float64 arrays: ``{"mean": (d,), "cov": (d, d)}`` and
``{"probs": (K,)}``. All randomness comes from the generator handed in by the loop, or, for the real
data, from ``np.random.default_rng([seed, salt])`` with a salt fixed per bundle.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np

import bench
from bench.components import Params, State
from bench.stats import frechet_gaussians, psd_sqrt

__version__ = "1"

# Salts that separate each bundle's real-data stream from any other use of the same seed.
_GAUSSIAN_SALT = 0x67617573  # "gaus"
_CATEGORICAL_SALT = 0x63617467  # "catg"

ESTIMATORS = {"unbiased": 1, "mle": 0}

GAUSSIAN_PARAMS: dict[str, Any] = {
    "dim": 1,
    "n_samples": 100,
    "estimator": "unbiased",
    "mean": 0.0,
    "std": 1.0,
    "n_test": 1000,
}

CATEGORICAL_PARAMS: dict[str, Any] = {
    "n_states": 20,
    "n_samples": 50,
    "zipf": 1.0,
    "n_test": 1000,
}


# --------------------------------------------------------------------------------------------------
# Parameter checks
# --------------------------------------------------------------------------------------------------


def ddof_of(params: Params) -> int:
    """The ``ddof`` of the covariance estimator named by ``params['estimator']``."""
    name = params.get("estimator", "unbiased")
    if name not in ESTIMATORS:
        raise ValueError(
            f"gaussian: estimator must be 'unbiased' (ddof 1, the sample covariance) or 'mle' "
            f"(ddof 0, the maximum-likelihood covariance); got {name!r}"
        )
    return ESTIMATORS[name]


def _positive_int(params: Params, key: str, default: int, minimum: int = 1) -> int:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{key} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def _gaussian_params(params: Params) -> tuple[int, int, int, float, float, int]:
    """Checked (dim, n_samples, ddof, mean, std, n_test)."""
    ddof = ddof_of(params)
    dim = _positive_int(params, "dim", 1)
    # The unbiased covariance of fewer than 2 samples is undefined.
    n_samples = _positive_int(params, "n_samples", 100, minimum=ddof + 1)
    n_test = _positive_int(params, "n_test", 1000)
    mean = float(params.get("mean", 0.0))
    std = float(params.get("std", 1.0))
    if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
        raise ValueError(f"gaussian: mean must be finite and std > 0; got mean={mean!r}, std={std!r}")
    return dim, n_samples, ddof, mean, std, n_test


def _categorical_params(params: Params) -> tuple[int, int, float, int]:
    """Checked (n_states, n_samples, zipf, n_test)."""
    n_states = _positive_int(params, "n_states", 20)
    n_samples = _positive_int(params, "n_samples", 50)
    n_test = _positive_int(params, "n_test", 1000)
    zipf = float(params.get("zipf", 1.0))
    if not (math.isfinite(zipf) and zipf >= 0):
        raise ValueError(f"categorical: zipf must be a finite number >= 0; got {zipf!r}")
    return n_states, n_samples, zipf, n_test


# Decoding options of the generators with their neutral values ("off"). A run's spec holds one only
# when it is set away from neutral, so the generators read them with these defaults.
GAUSSIAN_OPTIONS: dict[str, Any] = {"temperature": 1.0}
CATEGORICAL_OPTIONS: dict[str, Any] = {"temperature": 1.0, "top_k": 0, "top_p": 1.0}


def temperature_of(params: Params, who: str) -> float:
    """The checked sampling temperature T of ``params`` (default 1.0): a finite number > 0."""
    value = params.get("temperature", 1.0)
    number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    t = float(value) if number else math.nan
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"{who}: temperature must be a finite number > 0 (1 samples the fitted model as "
                         f"it is, below 1 sharpens it, above 1 flattens it); got {value!r}")
    return t


def categorical_decoding(params: Params, who: str) -> tuple[float, int, float]:
    """Checked (temperature, top_k, top_p) of ``params``, defaults (1.0, 0, 1.0)."""
    t = temperature_of(params, who)
    k = params.get("top_k", 0)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"{who}: top_k must be an integer >= 0 (the number of most probable states "
                         f"kept; 0 keeps all); got {k!r}")
    p = params.get("top_p", 1.0)
    if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)) or not 0.0 < float(p) <= 1.0:
        raise ValueError(f"{who}: top_p must be a number in (0, 1] (the probability mass of the most "
                         f"probable states kept; 1 keeps all); got {p!r}")
    return t, int(k), float(p)


def _check_with(decoding):
    """A bundle check that ends a run before it starts when a parameter or a decoding option is out
    of range."""

    def check(params: Params) -> list[str]:
        try:
            decoding(params)
        except (ValueError, TypeError) as exc:
            raise bench.BenchError(str(exc)) from None
        return []

    return check


# The bundles' checks: every parameter the run reads, before any folder is made.
check_gaussian = _check_with(lambda params: (_gaussian_params(params), temperature_of(params, "gaussian-sample")))
check_categorical = _check_with(lambda params: (_categorical_params(params),
                                                categorical_decoding(params, "categorical-sample")))


def _fingerprint(tag: str, *arrays: np.ndarray) -> str:
    digest = hashlib.sha256(tag.encode())
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return f"{tag}:sha256:{digest.hexdigest()[:16]}"


# --------------------------------------------------------------------------------------------------
# Gaussian: linear algebra
# --------------------------------------------------------------------------------------------------


def w2sq_gaussians(m1: np.ndarray, s1: np.ndarray, m2: np.ndarray, s2: np.ndarray) -> float:
    """Squared 2-Wasserstein distance between N(m1, s1) and N(m2, s2):
    ||m1 - m2||^2 + tr(s1 + s2 - 2 (s2^1/2 s1 s2^1/2)^1/2), by :func:`bench.stats.frechet_gaussians`
    with s2 (the true covariance, never singular) as the one square-rooted."""
    return frechet_gaussians(m2, s2, m1, s1)


def gaussian_logpdf(x: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Log density (nats) of each row of ``x`` under N(mean, cov).

    A singular covariance (a fully collapsed chain) has no density: every point then gets -inf."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x.reshape(-1, 1)
    d = x.shape[1]
    try:
        chol = np.linalg.cholesky(np.asarray(cov, dtype=np.float64))
    except np.linalg.LinAlgError:
        return np.full(x.shape[0], -np.inf)
    diag = np.diag(chol)
    if not np.all(diag > 0):
        return np.full(x.shape[0], -np.inf)
    z = np.linalg.solve(chol, (x - mean).T)  # (d, n); triangular, small d
    maha = np.sum(z * z, axis=0)
    logdet = 2.0 * np.sum(np.log(diag))
    return -0.5 * (maha + logdet + d * math.log(2.0 * math.pi))


# --------------------------------------------------------------------------------------------------
# Gaussian: components
# --------------------------------------------------------------------------------------------------


def _gaussian_truth(params: Params, dim: int) -> tuple[np.ndarray, np.ndarray]:
    mean = float(params.get("mean", 0.0))
    std = float(params.get("std", 1.0))
    return np.full(dim, mean), (std**2) * np.eye(dim)


def _draw_gaussian(n: int, dim: int, mean: float, std: float, rng: np.random.Generator) -> np.ndarray:
    return mean + std * rng.standard_normal((n, dim))


def load_gaussian(request: bench.RealRequest) -> bench.RealData:
    """Real data of the ``gaussian`` bundle: train = n_samples draws, test = n_test draws from
    N(mean * 1, std^2 I); no validation split; the true density is known."""
    params, seed = request.params, request.seed
    dim, n_samples, _, mean, std, n_test = _gaussian_params(params)
    rng = np.random.default_rng([int(seed), _GAUSSIAN_SALT])
    train = _draw_gaussian(n_samples, dim, mean, std, rng)
    test = _draw_gaussian(n_test, dim, mean, std, rng)
    true_mean, true_cov = _gaussian_truth(params, dim)

    def true_loglik(samples: bench.Samples) -> np.ndarray:
        return gaussian_logpdf(samples.data, true_mean, true_cov)

    def fresh(n: int, fresh_rng: np.random.Generator) -> bench.Samples:
        return bench.Samples("vectors", _draw_gaussian(int(n), dim, mean, std, fresh_rng))

    return bench.RealData(
        train=bench.Samples("vectors", train),
        test=bench.Samples("vectors", test),
        validation=None,
        fresh=fresh,
        true_loglik=true_loglik,
        fingerprint=_fingerprint(f"gaussian:d={dim}:M={n_samples}:mean={mean!r}:std={std!r}", train, test),
        source=f"gaussian:d={dim}:M={n_samples}:mean={mean!r}:std={std!r}:test={n_test}",
    )


def fit_gaussian(request: bench.FitRequest) -> State:
    """Sample mean and full sample covariance of ``request.data`` with the estimator's ddof.

    A closed-form fit: ``start`` and ``init`` do not matter."""
    ddof = ddof_of(request.params)
    x = np.asarray(request.data.data, dtype=np.float64)
    if x.ndim == 1:
        x = x.reshape(-1, 1)
    n = x.shape[0]
    if n <= ddof:
        raise ValueError(f"gaussian-fit: the {request.params.get('estimator', 'unbiased')} "
                         f"covariance needs more than {ddof} samples; got {n}")
    mean = x.mean(axis=0)
    centred = x - mean
    cov = centred.T @ centred / (n - ddof)
    return {"mean": mean, "cov": 0.5 * (cov + cov.T)}


def sample_gaussian(request: bench.GenerateRequest) -> bench.Samples:
    """``n`` draws from N(state['mean'], T state['cov']) at temperature T = ``params['temperature']``
    (default 1: the fitted Gaussian itself); symmetric square root, so a singular covariance is
    fine; the prompts are ignored."""
    state, n, params, rng = request.state, request.n, request.params, request.rng
    t = temperature_of(params, "gaussian-sample")
    mean = np.asarray(state["mean"], dtype=np.float64)
    root = psd_sqrt(np.asarray(state["cov"], dtype=np.float64))
    if t != 1.0:  # T = 1 leaves the draws exactly as they were before the option existed
        root = root * math.sqrt(t)
    z = rng.standard_normal((int(n), mean.shape[0]))
    return bench.Samples("vectors", mean + z @ root)


def score_gaussian(request: bench.ScoreRequest) -> bench.Scores:
    """Log density in nats of each sample under the fitted Gaussian; d units per sample."""
    state, samples = request.state, request.samples
    loglik = gaussian_logpdf(samples.data, state["mean"], state["cov"])
    dim = int(np.asarray(state["mean"]).shape[0])
    return bench.Scores(loglik=loglik, units=np.full(loglik.shape[0], dim, dtype=np.int64))


def metric_w2sq(ctx: bench.MetricContext) -> float:
    """W2^2 between the fitted Gaussian M_k and the truth N(mean * 1, std^2 I)."""
    mean, cov = ctx.state["mean"], ctx.state["cov"]
    true_mean, true_cov = _gaussian_truth(ctx.params, np.asarray(mean).shape[0])
    return w2sq_gaussians(mean, cov, true_mean, true_cov)


def metric_var(ctx: bench.MetricContext) -> float:
    """tr(Sigma_k) / (d std^2): the mean per-dimension variance relative to the true one (1 = as
    the truth, whatever std is)."""
    cov = np.asarray(ctx.state["cov"], dtype=np.float64)
    std = float(ctx.params.get("std", 1.0))
    return float(np.trace(cov) / (cov.shape[0] * std**2))


def metric_mean_sq(ctx: bench.MetricContext) -> float:
    """||mu_k - mean * 1||^2: squared distance of the fitted mean from the true mean."""
    mu = np.asarray(ctx.state["mean"], dtype=np.float64)
    return float(np.sum((mu - float(ctx.params.get("mean", 0.0))) ** 2))


# --------------------------------------------------------------------------------------------------
# Categorical: components
# --------------------------------------------------------------------------------------------------


def zipf_probs(n_states: int, exponent: float) -> np.ndarray:
    """q_i proportional to 1 / (i + 1)^exponent, i = 0..n_states-1."""
    weights = 1.0 / np.arange(1, n_states + 1, dtype=np.float64) ** exponent
    return weights / weights.sum()


def _as_states(data: np.ndarray, n_states: int, who: str) -> np.ndarray:
    x = np.asarray(data)
    if x.ndim != 1 or not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"{who}: categorical samples must be a 1-D integer array; got {x.dtype} {x.shape}")
    if x.size and (x.min() < 0 or x.max() >= n_states):
        raise ValueError(f"{who}: states must lie in 0..{n_states - 1}; got {x.min()}..{x.max()}")
    return x.astype(np.int64, copy=False)


def load_categorical(request: bench.RealRequest) -> bench.RealData:
    """Real data of the ``categorical`` bundle: n_samples and n_test draws from the Zipf truth q."""
    params, seed = request.params, request.seed
    n_states, n_samples, zipf, n_test = _categorical_params(params)
    q = zipf_probs(n_states, zipf)
    rng = np.random.default_rng([int(seed), _CATEGORICAL_SALT])
    train = rng.choice(n_states, size=n_samples, p=q).astype(np.int64)
    test = rng.choice(n_states, size=n_test, p=q).astype(np.int64)
    log_q = np.log(q)

    def true_loglik(samples: bench.Samples) -> np.ndarray:
        return log_q[_as_states(samples.data, n_states, "categorical true_loglik")]

    def fresh(n: int, fresh_rng: np.random.Generator) -> bench.Samples:
        return bench.Samples("categorical", fresh_rng.choice(n_states, size=int(n), p=q).astype(np.int64))

    return bench.RealData(
        train=bench.Samples("categorical", train),
        test=bench.Samples("categorical", test),
        validation=None,
        fresh=fresh,
        true_loglik=true_loglik,
        fingerprint=_fingerprint(f"categorical:K={n_states}:M={n_samples}:zipf={zipf!r}", train, test),
        source=f"categorical:K={n_states}:M={n_samples}:zipf={zipf!r}:test={n_test}",
    )


def fit_categorical(request: bench.FitRequest) -> State:
    """Empirical frequencies of the states in ``request.data`` (the maximum-likelihood fit)."""
    data = np.asarray(request.data.data)
    # The number of states belongs to the data source; without it, the largest state seen decides.
    default = int(data.max()) + 1 if data.size and np.issubdtype(data.dtype, np.integer) else 1
    n_states = _positive_int(request.params, "n_states", default)
    x = _as_states(data, n_states, "categorical-fit")
    if x.size == 0:
        raise ValueError("categorical-fit: cannot fit zero samples")
    counts = np.bincount(x, minlength=n_states).astype(np.float64)
    return {"probs": counts / counts.sum()}


def decoded_probs(probs: np.ndarray, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> np.ndarray:
    """The distribution ``categorical-sample`` draws from at these decoding settings.

    In order, each step renormalised: temperature (p_i^(1/T)), top-k (the k most probable states;
    0 = off) and top-p (the nucleus: the shortest run of most probable states whose mass reaches
    p; 1 = off). States are ranked by probability, ties by state index (the lower first), so the
    kept set is deterministic. Settings at their neutral values return ``probs`` itself."""
    p = np.asarray(probs, dtype=np.float64)
    if temperature != 1.0:
        # p^(1/T) in log space: no overflow or underflow to an all-zero vector for small T.
        positive = p > 0
        logp = np.log(p, where=positive, out=np.full(p.shape, -np.inf))
        top = logp[positive].max() if positive.any() else 0.0
        p = np.where(positive, np.exp((logp - top) / temperature), 0.0)
        p = p / p.sum()
    if top_k or top_p < 1.0:
        order = np.lexsort((np.arange(p.shape[0]), -p))  # most probable first, ties by index
        keep = order
        if top_k:
            keep = keep[: int(top_k)]
        if top_p < 1.0:
            mass = np.cumsum(p[keep]) / p[keep].sum()
            # The first prefix whose mass reaches p; a relative 1e-12 absorbs rounding in the sum.
            reached = np.flatnonzero(mass >= top_p * (1.0 - 1e-12))
            keep = keep[: int(reached[0]) + 1] if reached.size else keep
        kept = np.zeros_like(p)
        kept[keep] = p[keep]
        p = kept / kept.sum()
    return p


def sample_categorical(request: bench.GenerateRequest) -> bench.Samples:
    """``n`` independent draws from the fitted probabilities after the decoding options
    (``temperature``, ``top_k``, ``top_p``; see :func:`decoded_probs`); the prompts are ignored."""
    state, n, params, rng = request.state, request.n, request.params, request.rng
    temperature, top_k, top_p = categorical_decoding(params, "categorical-sample")
    probs = decoded_probs(np.asarray(state["probs"], dtype=np.float64), temperature, top_k, top_p)
    return bench.Samples("categorical", rng.choice(probs.shape[0], size=int(n), p=probs).astype(np.int64))


def score_categorical(request: bench.ScoreRequest) -> bench.Scores:
    """log p(x) in nats (-inf for a state the model gives probability 0); one unit per sample."""
    state, samples = request.state, request.samples
    probs = np.asarray(state["probs"], dtype=np.float64)
    x = _as_states(samples.data, probs.shape[0], "categorical-loglik")
    with np.errstate(divide="ignore"):
        loglik = np.log(probs)[x]
    return bench.Scores(loglik=loglik, units=np.ones(x.shape[0], dtype=np.int64))


def metric_support(ctx: bench.MetricContext) -> float:
    """Number of states with positive fitted probability."""
    return float(np.count_nonzero(np.asarray(ctx.state["probs"]) > 0))


def metric_tv(ctx: bench.MetricContext) -> float:
    """Total variation distance 1/2 sum_i |p_i - q_i| between the fit and the Zipf truth."""
    probs = np.asarray(ctx.state["probs"], dtype=np.float64)
    q = zipf_probs(probs.shape[0], float(ctx.params.get("zipf", 1.0)))
    return float(0.5 * np.abs(probs - q).sum())


# --------------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------------

GAUSSIAN_PRESETS = {
    # Well under a second; 100 generations of M = 20 shrink the variance visibly (at row 100 the
    # median of tr(Sigma)/d is about e^-5 and 90% of seeds are below 0.5).
    "smoke": {"dim": 2, "n_samples": 20, "estimator": "unbiased", "generations": 100, "policy": "replace"},
    # PROTOCOLS.md section 4: 1-D, M = 100, unbiased estimators, fits n = 1..10 (rows 0..9).
    "paper": {"dim": 1, "n_samples": 100, "estimator": "unbiased", "mean": 0.0, "std": 1.0,
              "generations": 9, "policy": "replace"},
}

CATEGORICAL_PRESETS = {
    # 10 states, M = 20: about 7 states at row 0; about 85% of chains absorbed by row 50.
    "smoke": {"n_states": 10, "n_samples": 20, "zipf": 1.0, "generations": 50, "policy": "replace"},
    # 20 Zipf states, M = 50 (the defaults): median absorption near row 80, 99.7% absorbed by 300.
    "paper": {"n_states": 20, "n_samples": 50, "zipf": 1.0, "generations": 300, "policy": "replace"},
}


@bench.hookimpl
def bench_register_models(register):
    register(bench.ModelBundle(
        name="gaussian",
        check=check_gaussian,
        kind="vectors",
        load_real=load_gaussian,
        trainer="gaussian-fit",
        generator="gaussian-sample",
        scorer="gaussian-loglik",
        metrics=("gaussian-w2sq", "gaussian-var", "gaussian-mean-sq", "test-nll", "test-perplexity", "perplexity-drift",
                 "head-mass", "tail-mass", "oos-mass", "cov-trace-ratio", "logdet-diff"),
        leaderboard_metrics=("gaussian-w2sq", "gaussian-var", "logdet-diff"),
        params=dict(GAUSSIAN_PARAMS),
        presets=GAUSSIAN_PRESETS,
        description="d-dimensional Gaussian refitted from M samples per generation (PROTOCOLS.md section 4)",
        provides=("exact-loglik", "fresh-data"),
        headline=bench.Headline(
            "gaussian-w2sq", threshold=1.0, mode="diff",
            why="squared 2-Wasserstein distance of M_k to the truth (closed form; bounded as the variance "
                "collapses, unlike test-nll, which grows like 1/variance); collapse when it grows by 1, "
                "a distance of one true standard deviation"),
    ))
    register(bench.ModelBundle(
        name="categorical",
        check=check_categorical,
        kind="categorical",
        load_real=load_categorical,
        trainer="categorical-fit",
        generator="categorical-sample",
        scorer="categorical-loglik",
        metrics=("categorical-support", "categorical-tv"),
        leaderboard_metrics=("categorical-support", "categorical-tv"),
        params=dict(CATEGORICAL_PARAMS),
        presets=CATEGORICAL_PRESETS,
        description="Zipf categorical distribution refitted by empirical frequencies (absorption law)",
        provides=("exact-loglik", "fresh-data"),
        headline=bench.Headline(
            "categorical-tv", threshold=0.25, mode="diff",
            why="total variation to the true distribution (finite where the test cross-entropy is "
                "infinite once a state vanishes); collapse when it grows by 0.25"),
    ))


@bench.hookimpl
def bench_register_trainers(register):
    register(bench.Trainer(name="gaussian-fit", fit=fit_gaussian, kinds=("vectors",)))
    register(bench.Trainer(name="categorical-fit", fit=fit_categorical, kinds=("categorical",)))


@bench.hookimpl
def bench_register_generators(register):
    register(bench.Generator(name="gaussian-sample", generate=sample_gaussian, kinds=("vectors",),
                             options=dict(GAUSSIAN_OPTIONS)))
    register(bench.Generator(name="categorical-sample", generate=sample_categorical, kinds=("categorical",),
                             options=dict(CATEGORICAL_OPTIONS)))


@bench.hookimpl
def bench_register_scorers(register):
    register(bench.Scorer(name="gaussian-loglik", score=score_gaussian, kinds=("vectors",)))
    register(bench.Scorer(name="categorical-loglik", score=score_categorical, kinds=("categorical",)))


@bench.hookimpl
def bench_register_metrics(register):
    register(bench.Metric(
        name="gaussian-w2sq", compute=metric_w2sq, direction="lower", kinds=("vectors",),
        description="squared 2-Wasserstein distance between the fitted Gaussian and the truth N(mean, std^2 I)",
    ))
    register(bench.Metric(
        name="gaussian-var", compute=metric_var, direction="target", target=1.0, kinds=("vectors",),
        description="tr(Sigma_k) / (d std^2): fitted per-dimension variance relative to the true variance",
    ))
    register(bench.Metric(
        name="gaussian-mean-sq", compute=metric_mean_sq, direction="lower", kinds=("vectors",),
        description="||mu_k - mean||^2: squared error of the fitted mean",
    ))
    register(bench.Metric(
        name="categorical-support", compute=metric_support, direction="higher", kinds=("categorical",),
        description="number of states with positive fitted probability",
    ))
    register(bench.Metric(
        name="categorical-tv", compute=metric_tv, direction="lower", kinds=("categorical",),
        description="total variation distance between the fitted probabilities and the Zipf truth",
    ))
