"""A Gaussian kernel density estimate retrained on its own samples: a model, a metric and a policy.

One module registers everything the package adds (entry point ``kde``):

- model ``kde``: real data from a two-blob Gaussian mixture; trainer ``kde-fit`` (the state is
  the training points and a per-dimension bandwidth h = c * sigma_hat, with c from Scott's or
  Silverman's rule); generator ``kde-sample`` (a training point picked uniformly plus
  N(0, diag(h^2)) noise); scorer ``kde-loglik`` (the log of the mixture density, nats, d units).
- metric ``kde-variance-ratio``: total variance of the samples over that of the real training set.
- policy ``curate:Q``: the fraction Q of the newest samples that the current model scores
  highest, topped up with real training data.

Resampling a KDE is a smoothed bootstrap, so the model does not collapse, it diffuses: the
expected variance grows by (1 + c^2 - 1/n) each generation (README.md derives it).
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

import bench

# Separates this plugin's real-data stream from any other use of the same seed.
_REAL_SALT = 0x6B6465  # "kde"
BANDWIDTH_RULES = ("scott", "silverman")
# Rows of samples scored at once: bounds the (rows, n_train, d) difference array in memory.
_SCORE_CHUNK_ELEMENTS = 1 << 22


# --------------------------------------------------------------------------------------------------
# Parameters and real data
# --------------------------------------------------------------------------------------------------


def _int_at_least(params, key: str, minimum: int) -> int:
    value = params.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise bench.BenchError(f"kde: {key} must be an integer >= {minimum}, got {value!r} (--set {key}=...)")
    return int(value)


def data_params(params) -> tuple[int, int, int, float]:
    """The checked real-data parameters (n, n_test, dim, separation)."""
    n = _int_at_least(params, "n", 2)  # the bandwidth needs a standard deviation (ddof 1)
    n_test = _int_at_least(params, "n_test", 2)
    dim = _int_at_least(params, "dim", 1)
    separation = params.get("separation")
    if isinstance(separation, bool) or not isinstance(separation, (int, float)) or not (
        math.isfinite(separation) and separation >= 0
    ):
        raise bench.BenchError(f"kde: separation must be a finite number >= 0, got {separation!r}")
    return n, n_test, dim, float(separation)


def check_params(params) -> list[str]:
    """Refuse impossible settings before a run starts (ModelBundle.check); no warnings to give."""
    data_params(params)
    if params.get("bandwidth") not in BANDWIDTH_RULES:
        raise bench.BenchError(
            f"kde: bandwidth must be one of {', '.join(BANDWIDTH_RULES)}, got {params.get('bandwidth')!r}"
        )
    return []


def _blobs(n: int, dim: int, separation: float, rng: np.random.Generator) -> np.ndarray:
    """n draws from 1/2 N(-a e_1, I) + 1/2 N(a e_1, I) with a = separation / 2."""
    side = 2.0 * rng.integers(0, 2, size=n) - 1.0
    x = rng.standard_normal((n, dim))
    x[:, 0] += 0.5 * separation * side
    return x


def blobs_loglik(x: np.ndarray, separation: float) -> np.ndarray:
    """Log density of the two-blob mixture at the rows of x (nats)."""
    d = x.shape[1]
    shift = np.zeros(d)
    shift[0] = 0.5 * separation
    base = -0.5 * d * math.log(2 * math.pi)
    left = base - 0.5 * ((x + shift) ** 2).sum(axis=1)
    right = base - 0.5 * ((x - shift) ** 2).sum(axis=1)
    return np.logaddexp(left, right) - math.log(2.0)


def load_real(request: bench.RealRequest) -> bench.RealData:
    """Train (n) and test (n_test) draws from the two-blob mixture, from the seed alone."""
    params, seed = request.params, request.seed
    n, n_test, dim, separation = data_params(params)
    rng = np.random.default_rng([int(seed), _REAL_SALT])
    train = _blobs(n, dim, separation, rng)
    test = _blobs(n_test, dim, separation, rng)
    source = f"kde-blobs:d={dim}:separation={separation!r}:n={n}:test={n_test}"
    digest = hashlib.sha256(train.tobytes() + test.tobytes()).hexdigest()[:16]
    return bench.RealData(
        train=bench.Samples("vectors", train),
        test=bench.Samples("vectors", test),
        fresh=lambda m, fresh_rng: bench.Samples("vectors", _blobs(int(m), dim, separation, fresh_rng)),
        true_loglik=lambda samples: blobs_loglik(np.asarray(samples.data, dtype=np.float64), separation),
        fingerprint=f"{source}:sha256:{digest}",
        source=source,
    )


# --------------------------------------------------------------------------------------------------
# Trainer, generator, scorer
# --------------------------------------------------------------------------------------------------


def bandwidth_factor(n: int, d: int, rule: str) -> float:
    """c in h = c * sigma_hat: Scott n^(-1/(d+4)); Silverman (n (d+2) / 4)^(-1/(d+4))."""
    if rule == "scott":
        return float(n ** (-1.0 / (d + 4)))
    if rule == "silverman":
        return float((n * (d + 2) / 4.0) ** (-1.0 / (d + 4)))
    raise ValueError(f"unknown bandwidth rule {rule!r}; use one of {', '.join(BANDWIDTH_RULES)}")


def fit(request: bench.FitRequest) -> dict[str, np.ndarray]:
    """Keep the training points; bandwidth h_j = c * (standard deviation of dimension j, ddof 1).

    A KDE is fitted from scratch every generation, so ``start`` and ``init`` do not matter.
    """
    x = np.asarray(request.data.data, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"kde-fit needs at least two d-dimensional points, got an array of shape {x.shape}")
    n, d = x.shape
    sigma = x.std(axis=0, ddof=1)
    if not np.all(np.isfinite(sigma) & (sigma > 0)):
        raise ValueError("kde-fit: every dimension of the training data must vary (a zero or non-finite spread)")
    h = bandwidth_factor(n, d, request.params["bandwidth"]) * sigma
    return {"points": x.copy(), "bandwidth": h}


def generate(request: bench.GenerateRequest) -> bench.Samples:
    """A training point chosen uniformly, plus N(0, diag(h^2)) noise; only ``rng`` is used."""
    state, n, rng = request.state, request.n, request.rng
    points, h = state["points"], state["bandwidth"]
    picked = points[rng.integers(0, len(points), size=n)]
    return bench.Samples("vectors", picked + h * rng.standard_normal((n, points.shape[1])))


def score(request: bench.ScoreRequest) -> bench.Scores:
    """log p(x) = logsumexp_i sum_j log N(x_j; X_ij, h_j^2) - log n, in nats; d units per sample."""
    state, samples = request.state, request.samples
    from scipy.special import logsumexp

    points, h = state["points"], state["bandwidth"]
    x = np.asarray(samples.data, dtype=np.float64)
    n, d = points.shape
    const = -np.log(h).sum() - 0.5 * d * math.log(2 * math.pi) - math.log(n)
    rows = max(1, _SCORE_CHUNK_ELEMENTS // (n * d))
    loglik = np.empty(len(x))
    for start in range(0, len(x), rows):
        z = (x[start : start + rows, None, :] - points[None, :, :]) / h
        loglik[start : start + rows] = logsumexp(-0.5 * (z**2).sum(axis=2), axis=1) + const
    return bench.Scores(loglik, np.full(len(x), float(d)))


# --------------------------------------------------------------------------------------------------
# Metric
# --------------------------------------------------------------------------------------------------


def variance_ratio(samples: np.ndarray, real: np.ndarray) -> float:
    """tr Cov(samples) / tr Cov(real), both with ddof 1: 1 for samples spread like the real data."""
    return float(np.var(samples, axis=0, ddof=1).sum() / np.var(real, axis=0, ddof=1).sum())


def compute_variance_ratio(ctx: bench.MetricContext) -> float:
    return variance_ratio(np.asarray(ctx.samples.data, dtype=np.float64),
                          np.asarray(ctx.real.train.data, dtype=np.float64))


# --------------------------------------------------------------------------------------------------
# Policy
# --------------------------------------------------------------------------------------------------


def check_curate(params) -> list[str]:
    q = params.get("q")
    if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0.0 < float(q) <= 1.0:
        raise bench.BenchError(
            f"the kept fraction Q must be a number in (0, 1], got {q!r} (for example --policy curate:0.5)"
        )
    return []


def curate(ctx: bench.PolicyContext) -> bench.Samples:
    """Keep round(Q m) of the m newest samples, those with the highest per-unit log-likelihood
    under the current model, and fill up to the real training-set size n with real samples drawn
    without replacement."""
    latest = ctx.synthetic[-1]
    n = len(ctx.real.train)
    keep = min(n, max(1, round(float(ctx.params["q"]) * len(latest))))
    # the harness already scored the newest samples under the current model: no need to again
    scores = ctx.latest.model if ctx.latest is not None else ctx.score(latest)
    per_unit = np.nan_to_num(scores.loglik / scores.units, nan=-np.inf)
    best = np.sort(np.argsort(-per_unit, kind="stable")[:keep])
    kept = latest.take(best)
    if keep == n:
        return kept
    real = ctx.real.train.take(np.sort(ctx.rng.choice(n, size=n - keep, replace=False)))
    return bench.Samples.concat([kept, real])


# --------------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------------

PARAMS = {"dim": 2, "n": 200, "n_test": 500, "separation": 4.0}

PRESETS = {
    # CPU, about a second: 200 points in 2-D, 20 generations; the variance grows ~1.17x per generation.
    "smoke": {"n": 200, "n_test": 500, "generations": 20, "policy": "replace"},
    # A bigger setting of our own (the paper has no KDE): 2,000 points, 50 generations.
    "paper": {"n": 2000, "n_test": 2000, "generations": 50, "policy": "replace"},
}


@bench.hookimpl
def bench_register_models(register):
    register(bench.ModelBundle(
        name="kde",
        kind="vectors",
        load_real=load_real,
        trainer="kde-fit",
        generator="kde-sample",
        scorer="kde-loglik",
        metrics=("kde-variance-ratio", "logdet-diff", "perplexity-drift", "head-mass", "tail-mass", "oos-mass"),
        leaderboard_metrics=("kde-variance-ratio", "perplexity-drift", "oos-mass"),
        params=dict(PARAMS),
        presets=PRESETS,
        check=check_params,
        description="Gaussian kernel density estimate on a two-blob mixture: diffuses instead of collapsing",
        # the source knows its density and draws fresh data: the oracle verifier and fresh:P apply
        provides=("exact-loglik", "fresh-data"),
    ))


@bench.hookimpl
def bench_register_trainers(register):
    register(bench.Trainer("kde-fit", fit, params={"bandwidth": "scott"}, kinds=("vectors",)))


@bench.hookimpl
def bench_register_generators(register):
    register(bench.Generator("kde-sample", generate, kinds=("vectors",)))


@bench.hookimpl
def bench_register_scorers(register):
    register(bench.Scorer("kde-loglik", score, kinds=("vectors",)))


@bench.hookimpl
def bench_register_metrics(register):
    register(bench.Metric(
        "kde-variance-ratio", compute_variance_ratio, direction="target", target=1.0, kinds=("vectors",),
        description="total variance (trace of the covariance) of S_{k+1} over that of the real training set",
    ))


@bench.hookimpl
def bench_register_policies(register):
    register(bench.Policy(
        "curate", curate, params={"q": 0.5}, positional="q", check=check_curate,
        description="the top fraction q of the newest samples by likelihood under M_k, topped up with real data",
    ))
