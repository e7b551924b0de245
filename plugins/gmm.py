"""The paper's Gaussian-mixture experiment (PROTOCOLS.md section 2) as the ``gmm`` model bundle.

Each generation refits a full-covariance Gaussian mixture by EM (scikit-learn's
``GaussianMixture``, from scratch, like the released notebook) to samples drawn from the previous
generation's mixture. Registered here:

- model ``gmm`` (kind ``vectors``), presets ``paper``, ``two-gaussians`` and ``smoke``;
- trainer ``gmm-em``, generator ``gmm-sample``, scorer ``gmm-loglik``;
- metrics ``gmm-l2`` (closed-form squared L2 distance to the generation-0 fit, lower is better)
  and ``gmm-std`` (per-component std sqrt(tr S_i / d), largest first, higher is better).

A mixture state is ``{"weights": (K,), "means": (K, d), "covariances": (K, d, d)}``, float64.
See docs/gmm.md for the parameters, presets and formulas.
"""

from __future__ import annotations

import hashlib
import math
import threading
from typing import Any

import numpy as np

import bench
from bench.components import FitRequest, RealData, Samples, Scores

# Mixed into the seed of load_real so the real data's stream differs from every other stream.
_SEED_TAG = 0x676D6D  # "gmm"

DATA_SOURCES = ("one-blob", "two-gaussians")

# The EM settings of the released notebook: GaussianMixture(2, 'full', tol=1e-5, max_iter=2000);
# reg_covar is scikit-learn's default, which the notebook left untouched.
_EM_DEFAULTS = {"n_components": 2, "tol": 1e-5, "max_iter": 2000, "reg_covar": 1e-6}

# The generator's decoding option and its neutral value: in a run's spec only when set to another.
OPTIONS = {"temperature": 1.0}

PARAMS = {
    "n_samples": 1000,
    "n_test": 1000,
    "data": "one-blob",
    **_EM_DEFAULTS,
}


# --------------------------------------------------------------------------------------------------
# Mixture algebra (pure NumPy, any dimension)
# --------------------------------------------------------------------------------------------------


def mixture(weights, means, covariances) -> dict[str, np.ndarray]:
    """A mixture state with float64 arrays of shapes (K,), (K, d), (K, d, d), checked."""
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    m = np.asarray(means, dtype=np.float64)
    s = np.asarray(covariances, dtype=np.float64)
    k = w.shape[0]
    if m.ndim != 2 or m.shape[0] != k or s.shape != (k, m.shape[1], m.shape[1]):
        raise ValueError(
            f"mixture shapes do not agree: weights {w.shape}, means {m.shape}, covariances {s.shape}"
        )
    return {"weights": w, "means": m, "covariances": s}


def _parts(state) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    st = mixture(state["weights"], state["means"], state["covariances"])
    return st["weights"], st["means"], st["covariances"]


def _log_gauss_cross(m1, s1, m2, s2) -> np.ndarray:
    """log N(m1_i - m2_j; 0, S1_i + S2_j) for every pair (i, j): shape (K1, K2)."""
    d = m1.shape[1]
    cov = s1[:, None] + s2[None, :]  # (K1, K2, d, d)
    diff = m1[:, None] - m2[None, :]  # (K1, K2, d)
    sign, logdet = np.linalg.slogdet(cov)
    if np.any(sign <= 0):
        raise np.linalg.LinAlgError("a sum of component covariances is not positive definite")
    sol = np.linalg.solve(cov, diff[..., None])[..., 0]
    quad = np.einsum("abi,abi->ab", diff, sol)
    return -0.5 * (quad + logdet + d * math.log(2.0 * math.pi))


def _key(*arrays: np.ndarray) -> tuple:
    return tuple((a.shape, a.tobytes()) for a in arrays)


_CACHE: dict[tuple, Any] = {}  # terms of recent mixtures: M_0's are asked for every generation
_CACHE_SIZE = 8
_CACHE_LOCK = threading.Lock()


def _cached(kind: str, arrays: tuple[np.ndarray, ...], compute):
    """``compute()`` memoised on the exact bytes of ``arrays``: the same mixture gives the same
    terms, bit for bit, so a run's fixed reference (M_0) is factorised once, not every generation."""
    key = (kind,) + _key(*arrays)
    value = _CACHE.get(key)
    if value is None:
        value = compute()
        with _CACHE_LOCK:  # chains of a group run in threads
            while len(_CACHE) >= _CACHE_SIZE:
                _CACHE.pop(next(iter(_CACHE)))
            _CACHE[key] = value
    return value


def _self_term(w, m, s) -> float:
    """sum_ij w_i w_j N(m_i - m_j; 0, S_i + S_j): the integral of p^2."""
    return _cached("self", (w, m, s), lambda: w @ np.exp(_log_gauss_cross(m, s, m, s)) @ w)


def l2_squared(p, q) -> float:
    """Closed-form integral of (p - q)^2 for two Gaussian mixtures p and q (PROTOCOLS.md sec. 2).

    Uses int N(x; m, S) N(x; n, T) dx = N(m - n; 0, S + T), so with p = sum a_i N(m_i, S_i) and
    q = sum b_j N(n_j, T_j):
    sum_ij a_i a_j N(m_i - m_j; 0, S_i + S_j) + sum_ij b_i b_j N(n_i - n_j; 0, T_i + T_j)
    - 2 sum_ij a_i b_j N(m_i - n_j; 0, S_i + T_j). Rounding below zero is clipped to 0.
    """
    a, m, s = _parts(p)
    b, n, t = _parts(q)
    if m.shape[1] != n.shape[1]:
        raise ValueError(f"mixtures of different dimensions: {m.shape[1]} and {n.shape[1]}")
    pp = _self_term(a, m, s)
    qq = _self_term(b, n, t)
    pq = a @ np.exp(_log_gauss_cross(m, s, n, t)) @ b
    return max(0.0, float(pp + qq - 2.0 * pq))


def _factor(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(inverse Cholesky factors, log-determinants) of covariances s (K, d, d)."""
    def compute():
        chol = np.linalg.cholesky(s)  # (K, d, d); raises for a covariance that is not positive definite
        return np.linalg.inv(chol), 2.0 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)

    return _cached("factor", (s,), compute)


def _squared_norms(chol_inv: np.ndarray, x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """|chol_inv_k (x_n - m_k)|^2 for every component k and sample n: (K, n). For d <= 2 written
    out one coordinate at a time, which gives einsum's values bit for bit (tests/test_gmm.py
    checks) in a seventh of its time; einsum for larger d."""
    d = m.shape[1]
    if d > 2:
        z = np.einsum("kij,knj->kni", chol_inv, x[None, :, :] - m[:, None, :])  # (K, n, d)
        return (z**2).sum(axis=2)
    diffs = [x[:, j] - m[:, j, None] for j in range(d)]  # (K, n) each
    square = None
    for i in range(d):
        z = chol_inv[:, i, 0, None] * diffs[0]
        for j in range(1, d):
            z = z + chol_inv[:, i, j, None] * diffs[j]
        square = z * z if square is None else square + z * z
    return square


def mixture_logpdf(state, x) -> np.ndarray:
    """log sum_k w_k N(x; m_k, S_k) for each row of x (n, d), in nats."""
    w, m, s = _parts(state)
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != m.shape[1]:
        raise ValueError(f"expected samples of shape (n, {m.shape[1]}), got {x.shape}")
    d = m.shape[1]
    chol_inv, logdet = _factor(s)
    square = _squared_norms(chol_inv, x, m)
    with np.errstate(divide="ignore"):
        logw = np.log(w)
    comp = logw[:, None] - 0.5 * (square + logdet[:, None] + d * math.log(2.0 * math.pi))
    top = comp.max(axis=0)
    top = np.where(np.isfinite(top), top, 0.0)
    return top + np.log(np.exp(comp - top).sum(axis=0))


def component_stds(state) -> np.ndarray:
    """sqrt(tr S_k / d) per component, sorted largest first (stable labels across generations)."""
    _, m, s = _parts(state)
    std = np.sqrt(np.trace(s, axis1=1, axis2=2) / m.shape[1])
    return np.sort(std)[::-1]


def mixture_moments(state) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of the whole mixture: sum w m, sum w (S + m m^T) - mu mu^T."""
    w, m, s = _parts(state)
    w = w / w.sum()
    mu = w @ m
    second = np.einsum("k,kij->ij", w, s + m[:, :, None] * m[:, None, :])
    return mu, second - np.outer(mu, mu)


def sample_mixture(state, n: int, rng: np.random.Generator) -> np.ndarray:
    """n draws from the mixture: multinomial component counts, then each component's Gaussian.

    The same law as ``GaussianMixture.sample``; the rows are then shuffled so that no position in
    the array depends on the component (scikit-learn returns them grouped by component).
    """
    w, m, s = _parts(state)
    counts = rng.multinomial(int(n), w / w.sum())
    parts = [rng.multivariate_normal(m[k], s[k], size=int(c)) for k, c in enumerate(counts)]
    x = np.concatenate(parts, axis=0) if parts else np.zeros((0, m.shape[1]))
    return x[rng.permutation(x.shape[0])]


# --------------------------------------------------------------------------------------------------
# Real data
# --------------------------------------------------------------------------------------------------


def true_mixture(data: str) -> dict[str, np.ndarray]:
    """The true density of a data source.

    ``one-blob``: N(0, I_2), as the released notebook. ``two-gaussians``: the supplement's two
    Gaussians (the paper gives no numbers; our choice): weights 1/2, 1/2, means (-2, 0) and (2, 0),
    covariances I_2 and [[0.5, 0.25], [0.25, 0.5]], so the two components differ in spread
    (std sqrt(tr S / 2) = 1 and sqrt(0.5)) and overlap little.
    """
    if data == "one-blob":
        return mixture([1.0], [[0.0, 0.0]], [np.eye(2)])
    if data == "two-gaussians":
        return mixture(
            [0.5, 0.5],
            [[-2.0, 0.0], [2.0, 0.0]],
            [np.eye(2), [[0.5, 0.25], [0.25, 0.5]]],
        )
    raise ValueError(f"unknown gmm data source {data!r}; expected one of {DATA_SOURCES}")


def _check_params(params) -> None:
    for key in ("n_samples", "n_test", "n_components", "max_iter"):
        value = params[key]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"gmm: {key} must be a positive integer, got {value!r}")
    if params["n_samples"] < params["n_components"]:
        raise ValueError(
            f"gmm: n_samples ({params['n_samples']}) must be at least n_components "
            f"({params['n_components']})"
        )
    for key in ("tol", "reg_covar"):  # EM's stopping tolerance and covariance floor
        value = params[key]
        number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
        if not (number and math.isfinite(float(value)) and float(value) >= 0):
            raise ValueError(f"gmm: {key} must be a finite number >= 0, got {value!r}")


def check(params) -> list[str]:
    """The bundle's check before a run starts: impossible settings end with a message."""
    try:
        _check_params(params)
        true_mixture(params["data"])
        temperature_of(params)
    except ValueError as exc:
        raise bench.BenchError(str(exc)) from None
    return []


def load_real(request: bench.RealRequest) -> RealData:
    """Train (n_samples), test and validation (n_test each) drawn from the true density."""
    params, seed = request.params, request.seed
    _check_params(params)
    truth = true_mixture(params["data"])
    rng = np.random.default_rng([int(seed), _SEED_TAG])
    train = sample_mixture(truth, params["n_samples"], rng)
    test = sample_mixture(truth, params["n_test"], rng)
    validation = sample_mixture(truth, params["n_test"], rng)
    digest = hashlib.sha256()
    for part in (train, test, validation):
        digest.update(np.ascontiguousarray(part).tobytes())

    def fresh(n: int, fresh_rng: np.random.Generator) -> Samples:
        return Samples("vectors", sample_mixture(truth, n, fresh_rng))

    def true_loglik(samples: Samples) -> np.ndarray:
        return mixture_logpdf(truth, samples.data)

    return RealData(
        train=Samples("vectors", train),
        test=Samples("vectors", test),
        validation=Samples("vectors", validation),
        fresh=fresh,
        true_loglik=true_loglik,
        fingerprint=f"gmm:{params['data']}:sha256:{digest.hexdigest()[:16]}",
        source=f"gmm:{params['data']}:n={params['n_samples']}:test={params['n_test']}",
    )


# --------------------------------------------------------------------------------------------------
# Trainer, generator, scorer
# --------------------------------------------------------------------------------------------------


_CONTROLLER = None


def _single_thread():
    """Limit BLAS/OpenMP to one thread during EM.

    The problems are tiny (2-D, a few thousand points); with several threads OpenBLAS and the
    OpenMP pool of k-means wait on each other and a fit runs many times slower on a busy machine.
    """
    global _CONTROLLER
    from threadpoolctl import ThreadpoolController

    if _CONTROLLER is None:
        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=1)


def fit(request: FitRequest) -> dict[str, np.ndarray]:
    """Fit GaussianMixture(n_components, 'full', tol, max_iter, reg_covar) by EM.

    The random_state comes from ``request.rng``. Start ``pretrained`` (no initial state exists)
    fits from scratch with k-means initialisation, as the notebook does every generation; ``gen0``
    and ``previous`` warm-start EM from ``request.init`` when it is given.
    """
    from sklearn.mixture import GaussianMixture

    p = request.params
    x = np.asarray(request.data.data, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"gmm-em expects vectors of shape (n, d), got {x.shape}")
    k = int(p["n_components"])
    kwargs = {}
    if request.start in ("gen0", "previous") and request.init is not None:
        w0, m0, s0 = _parts(request.init)
        if w0.shape[0] != k:
            raise ValueError(f"gmm-em: init has {w0.shape[0]} components, params ask for {k}")
        kwargs = dict(weights_init=w0 / w0.sum(), means_init=m0, precisions_init=np.linalg.inv(s0))
    model = GaussianMixture(
        n_components=k,
        covariance_type="full",
        tol=float(p["tol"]),
        max_iter=int(p["max_iter"]),
        reg_covar=float(p["reg_covar"]),
        random_state=int(request.rng.integers(0, 2**32 - 1)),
        **kwargs,
    )
    with _single_thread():
        model.fit(x)
    return mixture(model.weights_, model.means_, model.covariances_)


def temperature_of(params) -> float:
    """The checked sampling temperature T of ``params`` (default 1.0), as gaussian-sample checks it."""
    from collapse_bench_plugins.gaussian import temperature_of as checked

    return checked(params, "gmm-sample")


def generate(request: bench.GenerateRequest) -> Samples:
    """n samples from the mixture at temperature T = ``params['temperature']`` (default 1): every
    component's covariance scaled by T, the weights and means unchanged (unconditional: prompts
    are ignored)."""
    state, n, params, rng = request.state, request.n, request.params, request.rng
    t = temperature_of(params)
    if t != 1.0:  # T = 1 leaves the draws exactly as they were before the option existed
        w, m, s = _parts(state)
        state = mixture(w, m, s * t)
    return Samples("vectors", sample_mixture(state, n, rng))


def score(request: bench.ScoreRequest) -> Scores:
    """Per-sample log mixture density in nats; one unit per dimension."""
    state, samples = request.state, request.samples
    loglik = mixture_logpdf(state, samples.data)
    units = np.full(loglik.shape[0], samples.data.shape[1], dtype=np.int64)
    return Scores(loglik=loglik, units=units)


# --------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------


def _metric_l2(ctx) -> float:
    return l2_squared(ctx.state, ctx.reference_state)


def _metric_std(ctx) -> dict[str, float]:
    return {str(i): float(v) for i, v in enumerate(component_stds(ctx.state))}


# --------------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------------

_PAPER = {
    "data": "one-blob",
    "n_samples": 1000,
    "n_components": 2,
    "tol": 1e-5,
    "max_iter": 2000,
    "generations": 2050,
    "policy": "replace",
    "start": "pretrained",
}

PRESETS = {
    # The released notebook: one N(0, I) blob, 1000 samples, 2050 refits.
    "paper": dict(_PAPER),
    # The supplement's two Gaussians (parameters chosen here, see true_mixture).
    "two-gaussians": {**_PAPER, "data": "two-gaussians"},
    # Seconds on a laptop: with 50 samples a generation the two components' std falls by about an
    # order of magnitude within 60 generations, so collapse is visible.
    "smoke": {**_PAPER, "n_samples": 50, "n_test": 200, "generations": 60},
}


# What the released notebook reports for the paper preset (PROTOCOLS.md section 2): the
# per-component std sqrt(tr S / 2) falls from about 0.90 to about 0.010 over 2050 refits, and the
# squared L2 distance to the first fit ends near 536.
REFERENCES = {
    "paper": (bench.Reference("gmm-std", 0.90, generation=0, label="released notebook, start"),
              bench.Reference("gmm-std", 0.010, generation=2050, label="released notebook, after 2050 refits"),
              bench.Reference("gmm-l2", 536.0, generation=2050, label="released notebook, after 2050 refits")),
}


@bench.hookimpl
def bench_register_models(register) -> None:
    register(
        bench.ModelBundle(
            name="gmm",
            kind="vectors",
            load_real=load_real,
            check=check,
            trainer="gmm-em",
            generator="gmm-sample",
            scorer="gmm-loglik",
            metrics=("gmm-l2", "gmm-std", "test-nll", "test-perplexity", "perplexity-drift", "head-mass", "tail-mass", "oos-mass",
                 "cov-trace-ratio", "logdet-diff"),
            leaderboard_metrics=("gmm-l2", "gmm-std", "logdet-diff", "cov-trace-ratio", "tail-mass"),
            params=dict(PARAMS),
            presets=PRESETS,
            references=REFERENCES,
            default_preset="smoke",
            description="2-D Gaussian mixture refitted by EM on its own samples "
            "(Shumailov et al. 2024, GMM experiment)",
            provides=("exact-loglik", "fresh-data"),
            headline=bench.Headline(
                "cov-trace-ratio", threshold=0.5, mode="diff",
                why="covariance trace of the samples over the real data's (target 1; bounded as the "
                    "components collapse, unlike test-nll, which grows like 1/variance); collapse when its "
                    "distance to 1 grows by 0.5, half the spread lost"),
        )
    )


@bench.hookimpl
def bench_register_trainers(register) -> None:
    register(bench.Trainer(name="gmm-em", fit=fit, params=dict(_EM_DEFAULTS), kinds=("vectors",)))


@bench.hookimpl
def bench_register_generators(register) -> None:
    register(bench.Generator(name="gmm-sample", generate=generate, kinds=("vectors",), options=dict(OPTIONS)))


@bench.hookimpl
def bench_register_scorers(register) -> None:
    register(bench.Scorer(name="gmm-loglik", score=score, kinds=("vectors",)))


@bench.hookimpl
def bench_register_metrics(register) -> None:
    register(
        bench.Metric(
            name="gmm-l2",
            compute=_metric_l2,
            direction="lower",
            kinds=("vectors",),
            description="closed-form squared L2 distance int (p_k - p_0)^2 between the "
            "generation-k mixture and the generation-0 fit",
        )
    )
    register(
        bench.Metric(
            name="gmm-std",
            compute=_metric_std,
            direction="higher",
            kinds=("vectors",),
            description="per-component std sqrt(tr S_i / d), components sorted largest first "
            "(rows gmm-std/0, gmm-std/1, ...)",
        )
    )
