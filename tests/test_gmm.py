"""Tests of the gmm plugin: the L2 closed form, EM, sampling, scoring, determinism, collapse."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, special, stats

import bench
from bench.components import FitRequest, MetricContext
from collapse_bench_plugins import gmm

RESERVED_PRESET_KEYS = {"generations", "policy", "start"}

# Two hand-picked 2-D mixtures with different component counts and correlated covariances.
P2 = gmm.mixture(
    [0.3, 0.7],
    [[-1.0, 0.0], [1.5, 0.5]],
    [[[1.0, 0.4], [0.4, 0.8]], [[0.5, -0.1], [-0.1, 0.3]]],
)
Q3 = gmm.mixture(
    [0.2, 0.5, 0.3],
    [[0.0, 0.0], [1.0, -1.0], [-1.5, 1.0]],
    [[[0.7, 0.0], [0.0, 0.7]], [[1.2, 0.5], [0.5, 0.9]], [[0.2, 0.05], [0.05, 0.4]]],
)
ONE = gmm.mixture([1.0], [[0.3, -0.2]], [[[0.6, 0.2], [0.2, 1.1]]])

# A well-separated mixture (means 8 apart, stds about 1): EM on it is per-cluster ML estimation.
SEPARATED = gmm.mixture(
    [0.3, 0.7],
    [[-4.0, 0.0], [4.0, 1.0]],
    [[[1.0, 0.3], [0.3, 0.5]], [[0.6, -0.2], [-0.2, 1.2]]],
)


def _params(**overrides):
    return {**gmm.PARAMS, **overrides}


def _request(x, rng, params=None, start="pretrained", init=None, generation=0):
    return FitRequest(
        data=bench.Samples("vectors", np.asarray(x, dtype=np.float64)),
        validation=None,
        start=start,
        init=init,
        params=params or _params(),
        rng=rng,
        generation=generation,
    )


# --------------------------------------------------------------------------------------------------
# L2 closed form
# --------------------------------------------------------------------------------------------------


def _density_2d(state):
    """A plain-float density p(x, y), independent of the plugin's code, for the integrator."""
    comps = []
    for w, m, s in zip(state["weights"], state["means"], state["covariances"]):
        inv = np.linalg.inv(s)
        norm = w / (2.0 * math.pi * math.sqrt(np.linalg.det(s)))
        comps.append((norm, m[0], m[1], inv[0, 0], 2.0 * inv[0, 1], inv[1, 1]))

    def f(x, y):
        total = 0.0
        for c, a, b, i00, i01, i11 in comps:
            dx, dy = x - a, y - b
            total += c * math.exp(-0.5 * (i00 * dx * dx + i01 * dx * dy + i11 * dy * dy))
        return total

    return f


def _outside_box_bound(state, lo, hi):
    """An upper bound on int_{outside [lo, hi]^d} p^2 <= sup p * P_p(X outside the box).

    sup p <= sum_k w_k / sqrt((2 pi)^d det S_k); P(outside) by a union bound over coordinates.
    """
    d = state["means"].shape[1]
    sup = sum(
        w / math.sqrt((2 * math.pi) ** d * np.linalg.det(s))
        for w, s in zip(state["weights"], state["covariances"])
    )
    out = 0.0
    for w, m, s in zip(state["weights"], state["means"], state["covariances"]):
        sd = np.sqrt(np.diag(s))
        out += w * float(np.sum(stats.norm.cdf((lo - m) / sd) + stats.norm.sf((hi - m) / sd)))
    return sup * out


@pytest.mark.parametrize("p, q", [(P2, Q3), (ONE, Q3), (ONE, P2)], ids=["2v3", "1v3", "1v2"])
def test_l2_matches_2d_numerical_integration(p, q):
    half, epsabs, epsrel = 12.0, 1e-12, 1e-10
    fp, fq = _density_2d(p), _density_2d(q)
    value, err = integrate.dblquad(
        lambda y, x: (fp(x, y) - fq(x, y)) ** 2, -half, half, -half, half, epsabs=epsabs, epsrel=epsrel
    )
    # (p - q)^2 <= p^2 + q^2 outside the box; inner integrals each err by at most
    # max(epsabs, epsrel * |inner|), integrated over the outer range of length 2 * half.
    tail = _outside_box_bound(p, -half, half) + _outside_box_bound(q, -half, half)
    tol = tail + err + 2 * half * epsabs + epsrel * value + 1e-15
    assert tail < 1e-12
    assert value > 1e-3  # the pairs really differ, so the check is not 0 == 0
    assert abs(gmm.l2_squared(p, q) - value) <= tol


def test_l2_matches_1d_integration_and_hand_formula():
    # 1-D exercises the (2 pi)^(-d/2) factor at another d.
    p = gmm.mixture([0.4, 0.6], [[-0.5], [1.0]], [[[0.3]], [[1.5]]])
    q = gmm.mixture([1.0], [[0.2]], [[[0.8]]])

    def dens(st, x):
        return sum(
            w * stats.norm.pdf(x, m[0], math.sqrt(s[0, 0]))
            for w, m, s in zip(st["weights"], st["means"], st["covariances"])
        )

    value, err = integrate.quad(lambda x: (dens(p, x) - dens(q, x)) ** 2, -np.inf, np.inf,
                                epsabs=1e-13, epsrel=1e-11)
    assert abs(gmm.l2_squared(p, q) - value) <= err + 1e-11 * value + 1e-15

    # Hand-worked: N(0, s^2) vs N(delta, s^2) gives (1 - exp(-delta^2 / (4 s^2))) / (s sqrt(pi)).
    s, delta = 0.7, 1.3
    a = gmm.mixture([1.0], [[0.0]], [[[s * s]]])
    b = gmm.mixture([1.0], [[delta]], [[[s * s]]])
    expected = (1.0 - math.exp(-delta**2 / (4 * s * s))) / (s * math.sqrt(math.pi))
    assert gmm.l2_squared(a, b) == pytest.approx(expected, rel=1e-13)


def test_l2_self_zero_and_symmetric():
    for st in (P2, Q3, ONE):
        scale = gmm.l2_squared(st, gmm.mixture([1.0], [[50.0, 50.0]], [np.eye(2)]))  # ~ int p^2 + ...
        assert gmm.l2_squared(st, st) <= 1e-12 * scale
    assert gmm.l2_squared(P2, Q3) == pytest.approx(gmm.l2_squared(Q3, P2), rel=1e-13)
    # Relabelling components does not change the density, so the distance stays 0.
    perm = [2, 0, 1]
    q_perm = gmm.mixture(Q3["weights"][perm], Q3["means"][perm], Q3["covariances"][perm])
    assert gmm.l2_squared(Q3, q_perm) <= 1e-12 * gmm.l2_squared(Q3, ONE)


# --------------------------------------------------------------------------------------------------
# Trainer, generator, scorer
# --------------------------------------------------------------------------------------------------


def _match_to(state, reference):
    """Reorder the components of ``state`` to the reference's order (by nearest mean)."""
    order = [int(np.argmin(np.linalg.norm(state["means"] - m, axis=1))) for m in reference["means"]]
    assert sorted(order) == list(range(len(order)))
    return {k: v[order] for k, v in state.items()}


def test_trainer_recovers_known_mixture_within_sampling_error():
    n = 4000
    rng = np.random.default_rng(11)
    x = gmm.sample_mixture(SEPARATED, n, rng)
    state = gmm.fit(_request(x, rng))
    assert set(state) == {"weights", "means", "covariances"}
    assert all(v.dtype == np.float64 for v in state.values())
    fitted = _match_to(state, SEPARATED)
    # ML standard errors: weight sqrt(w(1-w)/n); mean sqrt(S_jj/(n w)); Gaussian covariance entry
    # sqrt((S_ii S_jj + S_ij^2)/(n w)). Checks at 4 SE.
    for k, w in enumerate(SEPARATED["weights"]):
        nk = n * w
        s = SEPARATED["covariances"][k]
        assert abs(fitted["weights"][k] - w) <= 4 * math.sqrt(w * (1 - w) / n)
        se_mean = np.sqrt(np.diag(s) / nk)
        assert np.all(np.abs(fitted["means"][k] - SEPARATED["means"][k]) <= 4 * se_mean)
        se_cov = np.sqrt((np.outer(np.diag(s), np.diag(s)) + s**2) / nk)
        assert np.all(np.abs(fitted["covariances"][k] - s) <= 4 * se_cov)


def test_trainer_warm_start_from_init():
    rng = np.random.default_rng(3)
    x = gmm.sample_mixture(SEPARATED, 2000, rng)
    cold = gmm.fit(_request(x, np.random.default_rng(0)))
    warm = gmm.fit(_request(x, np.random.default_rng(1), start="previous", init=SEPARATED))
    # Both reach the same (well-separated, unique) maximum of the likelihood.
    np.testing.assert_allclose(_match_to(warm, SEPARATED)["means"], _match_to(cold, SEPARATED)["means"],
                               atol=1e-3)
    with pytest.raises(ValueError, match="components"):
        gmm.fit(_request(x, rng, start="previous", init=ONE))


def test_generator_moments_match_state_within_se():
    n = 40000
    samples = gmm.generate(bench.GenerateRequest(SEPARATED, n, None, {}, np.random.default_rng(5), 0))
    assert samples.kind == "vectors" and samples.data.shape == (n, 2)
    x = samples.data
    mu, cov = gmm.mixture_moments(SEPARATED)
    xbar = x.mean(axis=0)
    assert np.all(np.abs(xbar - mu) <= 4 * np.sqrt(np.diag(cov) / n))
    centred = x - mu
    products = centred[:, :, None] * centred[:, None, :]
    se = products.std(axis=0, ddof=1) / math.sqrt(n)
    assert np.all(np.abs(products.mean(axis=0) - cov) <= 4 * se)
    # Component shares: the components are 8 apart in x, so the sign of x tells them apart.
    w0 = SEPARATED["weights"][0]
    assert abs(np.mean(x[:, 0] < 0) - w0) <= 4 * math.sqrt(w0 * (1 - w0) / n)
    # Rows are shuffled: the first half is not all from one component.
    assert 0 < np.mean(x[: n // 2, 0] < 0) < 1


@pytest.mark.parametrize("state", [P2, Q3, ONE], ids=["k2", "k3", "k1"])
def test_scorer_matches_scipy_mixture_logpdf(state):
    rng = np.random.default_rng(2)
    x = np.vstack([rng.normal(0, 2, size=(200, 2)), [[40.0, -40.0]]])  # one point far in the tail
    scores = gmm.score(bench.ScoreRequest(state, bench.Samples("vectors", x), {}))
    per_comp = np.stack([
        math.log(w) + stats.multivariate_normal(m, s).logpdf(x)
        for w, m, s in zip(state["weights"], state["means"], state["covariances"])
    ])
    np.testing.assert_allclose(scores.loglik, special.logsumexp(per_comp, axis=0), rtol=1e-11)
    assert np.all(scores.units == 2)


def test_true_loglik_is_the_true_density():
    real = gmm.load_real(bench.RealRequest(_params(n_samples=30, n_test=40), 0))
    np.testing.assert_allclose(
        real.true_loglik(real.test), stats.multivariate_normal(np.zeros(2), np.eye(2)).logpdf(real.test.data),
        rtol=1e-12,
    )
    real2 = gmm.load_real(bench.RealRequest(_params(n_samples=30, n_test=40, data="two-gaussians"), 0))
    t = gmm.true_mixture("two-gaussians")
    expected = special.logsumexp(
        [math.log(w) + stats.multivariate_normal(m, s).logpdf(real2.test.data)
         for w, m, s in zip(t["weights"], t["means"], t["covariances"])], axis=0)
    np.testing.assert_allclose(real2.true_loglik(real2.test), expected, rtol=1e-12)
    assert (len(real.train), len(real.test), len(real.validation)) == (30, 40, 40)
    assert len(real.fresh(7, np.random.default_rng(0))) == 7
    with pytest.raises(ValueError, match="one-blob"):
        gmm.load_real(bench.RealRequest(_params(data="three-blobs"), 0))


def test_deterministic_for_a_seed():
    params = _params(n_samples=200, n_test=50)
    a, b, c = (gmm.load_real(bench.RealRequest(params, s)) for s in (4, 4, 5))
    np.testing.assert_array_equal(a.train.data, b.train.data)
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert not np.array_equal(a.train.data, c.train.data)
    runs = []
    for _ in range(2):
        rng = np.random.default_rng(9)
        st = gmm.fit(_request(a.train.data, rng, params))
        runs.append((st, gmm.generate(bench.GenerateRequest(st, 200, None, params, rng, 0)).data))
    for key in runs[0][0]:
        np.testing.assert_array_equal(runs[0][0][key], runs[1][0][key])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])


# --------------------------------------------------------------------------------------------------
# Metrics, registration, and the collapse itself
# --------------------------------------------------------------------------------------------------


def _ctx(state, reference):
    return MetricContext(
        generation=1, bundle=None, params={}, real=None, state=state, reference_state=reference,
        samples=None, score=None, rng=np.random.default_rng(0),
    )


def test_metrics_values_and_labels():
    from bench.plugins import Bench

    b = Bench(extra_plugins=[gmm], entry_points=False)
    l2, std = b.metrics.get("gmm-l2"), b.metrics.get("gmm-std")
    assert (l2.direction, std.direction) == ("lower", "higher")
    assert l2.compute(_ctx(P2, Q3)) == pytest.approx(gmm.l2_squared(P2, Q3))
    assert l2.compute(_ctx(P2, P2)) == 0.0
    # sqrt(tr S / d): P2's components have sqrt(1.8 / 2) and sqrt(0.8 / 2); largest first.
    assert std.compute(_ctx(P2, P2)) == pytest.approx({"0": math.sqrt(0.9), "1": math.sqrt(0.4)})
    swapped = gmm.mixture(P2["weights"][::-1], P2["means"][::-1], P2["covariances"][::-1])
    assert std.compute(_ctx(swapped, P2)) == std.compute(_ctx(P2, P2))


def test_registration_and_presets():
    from bench.plugins import Bench

    b = Bench(extra_plugins=[gmm], entry_points=False)
    bundle = b.models.get("gmm")
    assert (bundle.trainer, bundle.generator, bundle.scorer) == ("gmm-em", "gmm-sample", "gmm-loglik")
    assert bundle.metrics[:2] == ("gmm-l2", "gmm-std")
    assert {"perplexity-drift", "head-mass", "tail-mass", "cov-trace-ratio"} <= set(bundle.metrics)
    assert b.trainers.get("gmm-em").params == {"n_components": 2, "tol": 1e-5, "max_iter": 2000,
                                                "reg_covar": 1e-6}
    for preset in bundle.presets.values():
        assert set(preset) <= set(bundle.params) | RESERVED_PRESET_KEYS
    paper = bundle.presets["paper"]
    assert {k: paper[k] for k in ("data", "n_samples", "n_components", "tol", "max_iter", "generations")} == {
        "data": "one-blob", "n_samples": 1000, "n_components": 2, "tol": 1e-5, "max_iter": 2000,
        "generations": 2050,
    }
    assert bundle.presets["two-gaussians"]["data"] == "two-gaussians"
    assert set(bundle.presets) >= {"smoke", "paper"}


@pytest.mark.slow
def test_recursive_chain_std_falls_and_l2_grows():
    """Refit on own samples (M = 30, 40 generations, 6 chains): the stds shrink towards 0."""
    params = _params(n_samples=30, n_test=10)
    log_ratios, l2_first, l2_final = [], [], []
    for seed in range(6):
        real = gmm.load_real(bench.RealRequest(params, seed))
        rng = np.random.default_rng(seed)
        m0 = state = gmm.fit(_request(real.train.data, rng, params))
        for k in range(1, 41):
            x = gmm.generate(bench.GenerateRequest(state, 30, None, params, rng, 0))
            state = gmm.fit(_request(x.data, rng, params, generation=k))
            if k == 1:
                l2_first.append(gmm.l2_squared(state, m0))
        log_ratios.append(np.log(gmm.component_stds(state) / gmm.component_stds(m0)))
        l2_final.append(gmm.l2_squared(state, m0))
    log_ratios = np.array(log_ratios)
    assert log_ratios.mean() < 0
    assert np.all(log_ratios.mean(axis=1) < 0)  # every chain's mean log std fell
    assert all(last > first for first, last in zip(l2_first, l2_final))


def test_paper_size_em_fit_time(benchmark):
    """Measured, not asserted: one paper-size fit (1000 points, tol 1e-5). Runs with --benchmark-only."""
    x = np.random.default_rng(0).standard_normal((1000, 2))
    benchmark(lambda: gmm.fit(_request(x, np.random.default_rng(1))))


def _reference_logpdf(state, x):
    """mixture_logpdf as it was written before the factor cache and the d <= 2 fast path: the
    harness's results must not change by a bit."""
    w, m, s = gmm._parts(state)
    d = m.shape[1]
    chol = np.linalg.cholesky(s)
    z = np.einsum("kij,knj->kni", np.linalg.inv(chol), x[None, :, :] - m[:, None, :])
    logdet = 2.0 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
    with np.errstate(divide="ignore"):
        logw = np.log(w)
    comp = logw[:, None] - 0.5 * ((z**2).sum(axis=2) + logdet[:, None] + d * math.log(2.0 * math.pi))
    top = comp.max(axis=0)
    top = np.where(np.isfinite(top), top, 0.0)
    return top + np.log(np.exp(comp - top).sum(axis=0))


def _random_mixture(rng, k, d):
    a = rng.standard_normal((k, d, d)) * rng.uniform(0.01, 10)
    return gmm.mixture(rng.dirichlet(np.ones(k)), rng.standard_normal((k, d)) * 3,
                       a @ a.transpose(0, 2, 1) + 1e-3 * np.eye(d))


@pytest.mark.parametrize("d", [1, 2, 3])
def test_logpdf_and_l2_bit_identical_to_the_uncached_formulas(d):
    """The fast path (d <= 2) and the cache of factorisations and self-terms give the same bits
    as the plain formulas, for fresh and for repeated (cached) mixtures."""
    rng = np.random.default_rng(d)
    states = [_random_mixture(rng, int(rng.integers(1, 4)), d) for _ in range(40)]
    for i, state in enumerate(states):
        x = rng.standard_normal((int(rng.integers(1, 500)), d)) * 4
        for _ in range(2):  # the second call reads the cache
            assert np.array_equal(gmm.mixture_logpdf(state, x), _reference_logpdf(state, x))
        other = states[i - 1]
        a, m, s = gmm._parts(state)
        b, n, t = gmm._parts(other)
        cross = gmm._log_gauss_cross
        plain = max(0.0, float(a @ np.exp(cross(m, s, m, s)) @ a + b @ np.exp(cross(n, t, n, t)) @ b
                               - 2.0 * (a @ np.exp(cross(m, s, n, t)) @ b)))
        assert gmm.l2_squared(state, other) == plain
