"""The KDE plugin against independent answers: scipy's gaussian_kde, the variance closed form
(README.md, "Why a KDE diffuses") by Monte Carlo, and hand-worked cases for the metric and policy."""

import math

import numpy as np
import pytest
from collapse_bench_kde import plugin as kde
from scipy import stats

import bench

# Monte Carlo checks allow Z standard errors: with 4, a correct formula fails one check with
# probability 6e-5 (normal approximation), so a handful of checks still fail by chance < 1e-3.
Z = 4.0


def fit_state(x, rule="scott"):
    request = bench.FitRequest(data=bench.Samples("vectors", np.asarray(x, dtype=np.float64)), validation=None,
                               start="pretrained", init=None, params={"bandwidth": rule},
                               rng=np.random.default_rng(0), generation=0)
    return kde.fit(request)


# -- bandwidth and scorer against scipy ----------------------------------------------------------


@pytest.mark.parametrize("rule", ["scott", "silverman"])
@pytest.mark.parametrize("n, d", [(50, 1), (200, 2), (37, 3)])
def test_bandwidth_is_scipys_factor_times_the_standard_deviation(rule, n, d):
    x = np.random.default_rng([n, d]).normal(size=(n, d)) * np.arange(1, d + 1)
    reference = stats.gaussian_kde(x.T, bw_method=rule)
    assert kde.bandwidth_factor(n, d, rule) == pytest.approx(reference.factor, rel=1e-12)
    # scipy's kernel covariance is the data covariance (ddof 1) times factor^2; its diagonal is h^2.
    h = fit_state(x, rule)["bandwidth"]
    np.testing.assert_allclose(h, np.sqrt(np.diag(reference.covariance)), rtol=1e-12)


def test_scott_and_silverman_agree_only_in_two_dimensions():
    assert kde.bandwidth_factor(200, 2, "scott") == pytest.approx(kde.bandwidth_factor(200, 2, "silverman"))
    assert kde.bandwidth_factor(200, 1, "scott") != pytest.approx(kde.bandwidth_factor(200, 1, "silverman"))


def _decorrelated(n, scales, rng):
    """Centred points whose sample covariance is exactly diagonal (orthogonal columns), so scipy's
    full-covariance kernel equals the plugin's per-dimension one."""
    x = rng.normal(size=(n, len(scales)))
    u, s, _ = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)
    return u * s * np.asarray(scales) + 1.5


@pytest.mark.parametrize("d", [1, 2, 3])
def test_scorer_equals_scipy_logpdf(d):
    rng = np.random.default_rng(d)
    x = _decorrelated(80, [1.0, 0.3, 2.0][:d], rng)
    state = fit_state(x)
    y = np.vstack([rng.normal(size=(30, d)) * 2, np.full((1, d), 25.0)])  # one point far out in the tail
    scores = kde.score(bench.ScoreRequest(state, bench.Samples("vectors", y), {}))
    expected = stats.gaussian_kde(x.T).logpdf(y.T)
    np.testing.assert_allclose(scores.loglik, expected, rtol=1e-9, atol=1e-9)
    assert np.all(scores.units == d)


def test_scorer_chunks_give_the_same_answer(monkeypatch):
    rng = np.random.default_rng(5)
    state = fit_state(rng.normal(size=(40, 2)))
    y = bench.Samples("vectors", rng.normal(size=(25, 2)))
    whole = kde.score(bench.ScoreRequest(state, y, {})).loglik
    monkeypatch.setattr(kde, "_SCORE_CHUNK_ELEMENTS", 2 * 40 * 3)  # 3 rows at a time
    np.testing.assert_array_equal(kde.score(bench.ScoreRequest(state, y, {})).loglik, whole)


def test_generator_draws_only_from_the_rng_it_is_given():
    state = fit_state(np.random.default_rng(1).normal(size=(30, 2)))
    a = kde.generate(bench.GenerateRequest(state, 50, None, {}, np.random.default_rng(7), 0)).data
    np.random.seed(123)  # the global stream must not matter
    b = kde.generate(bench.GenerateRequest(state, 50, None, {}, np.random.default_rng(7), 0)).data
    np.testing.assert_array_equal(a, b)
    assert a.shape == (50, 2)


def test_true_loglik_is_the_two_blob_mixture():
    params = dict(kde.PARAMS, n=20, n_test=10, dim=3, separation=3.0)
    real = kde.load_real(bench.RealRequest(params, 4))
    y = real.test.data
    mu = np.array([1.5, 0.0, 0.0])
    expected = np.log(0.5 * stats.multivariate_normal(mu).pdf(y) + 0.5 * stats.multivariate_normal(-mu).pdf(y))
    np.testing.assert_allclose(real.true_loglik(real.test), expected, rtol=1e-12)
    again = kde.load_real(bench.RealRequest(params, 4))
    np.testing.assert_array_equal(real.train.data, again.train.data)
    assert real.source == again.source and real.fingerprint == again.fingerprint
    assert kde.load_real(bench.RealRequest(params, 5)).fingerprint != real.fingerprint


@pytest.mark.parametrize("key, value, message", [
    ("n", 1, "n must be an integer >= 2"),
    ("dim", 0, "dim must be an integer >= 1"),
    ("separation", -1.0, "separation must be a finite number >= 0"),
    ("bandwidth", "wide", "bandwidth must be one of scott, silverman"),
])
def test_impossible_parameters_are_refused_with_a_message(key, value, message):
    params = {**kde.PARAMS, "bandwidth": "scott", key: value}
    with pytest.raises(bench.BenchError, match=message):
        kde.check_params(params)


# -- the variance closed form ---------------------------------------------------------------------


def growth(n, d, rule):
    """rho = 1 + c^2 - 1/n: E[s'^2 | D] = s^2 ((n - 1)/n + c^2) for each dimension (README.md)."""
    c = kde.bandwidth_factor(n, d, rule)
    return 1.0 + c * c - 1.0 / n


def simulate_variance_ratios(real, rule, chains, generations, seed):
    """kde-variance-ratio at rows 0..generations-1 of `chains` replace-policy chains from one R."""
    n = len(real)
    out = np.empty((chains, generations))
    rng = np.random.default_rng(seed)
    for i in range(chains):
        data = real
        for k in range(generations):
            samples = kde.generate(bench.GenerateRequest(fit_state(data, rule), n, None, {}, rng, 0)).data
            out[i, k] = kde.variance_ratio(samples, real)
            data = samples
    return out


@pytest.mark.parametrize("n, d, rule, chains, generations", [
    (200, 2, "scott", 400, 5),      # the smoke preset's setting
    (10, 1, "silverman", 4000, 3),  # small n, where the -1/n term matters
])
@pytest.mark.slow
def test_expected_variance_ratio_is_rho_to_the_k_plus_1(n, d, rule, chains, generations):
    real = np.random.default_rng([n, d, 1]).normal(size=(n, d))
    ratios = simulate_variance_ratios(real, rule, chains, generations, seed=n)
    mean = ratios.mean(axis=0)
    se = ratios.std(axis=0, ddof=1) / math.sqrt(chains)
    expected = growth(n, d, rule) ** np.arange(1, generations + 1)
    assert np.all(np.abs(mean - expected) <= Z * se), (mean, expected, se)


@pytest.mark.slow
def test_the_simulation_can_tell_the_finite_n_term():
    """The naive (1 + c^2)^(k+1) is rejected where 1/n is not small: the check above has power."""
    n, d, rule, chains, generations = 10, 1, "scott", 4000, 3
    real = np.random.default_rng([n, d, 2]).normal(size=(n, d))
    ratios = simulate_variance_ratios(real, rule, chains, generations, seed=11)
    mean, se = ratios[:, -1].mean(), ratios[:, -1].std(ddof=1) / math.sqrt(chains)
    c2 = kde.bandwidth_factor(n, d, rule) ** 2
    assert abs(mean - growth(n, d, rule) ** generations) <= Z * se
    assert abs(mean - (1 + c2) ** generations) > Z * se


# -- the metric and the policy --------------------------------------------------------------------


def test_variance_ratio_by_hand():
    # samples: variances 2 and 8 (ddof 1) -> 10; real: 0.5 and 0.5 -> 1.
    assert kde.variance_ratio(np.array([[0.0, 0.0], [2.0, 4.0]]), np.array([[0.0, 0.0], [1.0, 1.0]])) == 10.0


def test_variance_ratio_equals_the_generic_cov_trace_ratio_for_equal_sizes():
    from collapse_bench_plugins.metrics import covariance, trace_ratio

    rng = np.random.default_rng(3)
    samples, real = rng.normal(size=(40, 3)) * 2, rng.normal(size=(40, 3))
    expected = trace_ratio(covariance(samples), covariance(real))
    assert kde.variance_ratio(samples, real) == pytest.approx(expected, rel=1e-12)


def _policy_context(q, loglik, n_real=10, seed=0):
    real = np.arange(n_real * 2, dtype=np.float64).reshape(n_real, 2)          # rows 0..n_real-1
    synthetic = 1000.0 + np.arange(len(loglik) * 2, dtype=np.float64).reshape(-1, 2)
    return bench.PolicyContext(
        generation=1,
        real=bench.RealData(train=bench.Samples("vectors", real), test=bench.Samples("vectors", real)),
        synthetic=[bench.Samples("vectors", synthetic)],
        params={"q": q},
        rng=np.random.default_rng(seed),
        score=lambda s: bench.Scores(np.asarray(loglik, dtype=np.float64), np.full(len(s), 2.0)),
    ), real, synthetic


def test_curate_keeps_the_most_likely_samples_and_tops_up_with_real_data():
    loglik = [-5.0, 1.0, np.nan, 3.0, -1.0, 2.0, -np.inf, 0.0, 2.5, -2.0]
    ctx, real, synthetic = _policy_context(0.3, loglik)
    data = kde.curate(ctx).data
    assert data.shape == (10, 2)
    kept = data[data[:, 0] >= 1000]
    np.testing.assert_array_equal(kept, synthetic[[3, 5, 8]])  # the three highest: 3.0, 2.5, 2.0
    topped = data[data[:, 0] < 1000]
    assert len(topped) == 7 and len({tuple(r) for r in topped}) == 7  # distinct real rows
    assert all(any((r == real).all(axis=1)) for r in topped)


def test_curate_with_q_1_is_the_newest_samples_and_nan_ranks_last():
    loglik = [0.0, np.nan, 1.0, 2.0]
    ctx, _, synthetic = _policy_context(1.0, loglik, n_real=4)
    np.testing.assert_array_equal(kde.curate(ctx).data, synthetic)
    ctx, _, synthetic = _policy_context(0.75, loglik, n_real=4)
    assert not (kde.curate(ctx).data == synthetic[1]).all(axis=1).any()


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.5, "half", True, None])
def test_curate_refuses_q_outside_0_1(bad):
    with pytest.raises(bench.BenchError, match=r"Q must be a number in \(0, 1\]"):
        kde.check_curate({"q": bad})


def test_curate_q_is_checked_when_the_spec_is_resolved():
    from bench.plugins import Bench
    from bench.spec import resolve

    b = Bench()
    assert resolve(b, "kde", policy="curate:0.25").policy_params == {"q": 0.25}
    with pytest.raises(bench.BenchError, match="policy 'curate': the kept fraction Q"):
        resolve(b, "kde", policy="curate:2")
