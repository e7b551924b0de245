"""The generic metrics (plugins/metrics.py) against values known independently.

Hand-worked arrays, closed forms for Gaussians (normal and chi-square CDFs), exact moments of
uniform order statistics and of Wishart matrices; every Monte Carlo tolerance is a few standard
errors computed here from those moments.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special, stats

from bench.components import Metric, MetricContext, ModelBundle, RealData, Samples, Scores
from collapse_bench_plugins import metrics as M

Z = 4.0  # standard errors allowed in Monte Carlo checks (two-sided false-alarm rate about 6e-5)


# --------------------------------------------------------------------------------------------------
# Fakes
# --------------------------------------------------------------------------------------------------


def gaussian_score(state, samples: Samples) -> Scores:
    """Log-density of isotropic N(mu, sigma^2 I) summed over the values of each sample; units = d."""
    x = M.flatten_rows(samples.data).astype(np.float64)
    mu, sigma = float(state["mu"][0]), float(state["sigma"][0])
    d = x.shape[1]
    ll = -0.5 * (((x - mu) / sigma) ** 2).sum(axis=1) - d * (math.log(sigma) + 0.5 * math.log(2 * math.pi))
    return Scores(ll, np.full(len(x), float(d)))


def make_ctx(*, samples, test=None, train=None, score=gaussian_score, state=None, reference=None,
             params=None, generation=1) -> MetricContext:
    kind = samples.kind
    test = test if test is not None else samples
    train = train if train is not None else test
    real = RealData(train=train, test=test)
    bundle = ModelBundle(name="fake", kind=kind, load_real=lambda p, s: real, trainer="t",
                         generator="g", scorer="s")
    reference = reference if reference is not None else {"mu": np.zeros(1), "sigma": np.ones(1)}
    state = state if state is not None else reference
    return MetricContext(generation=generation, bundle=bundle, params=params or {}, real=real,
                         state=state, reference_state=reference, samples=samples, score=score,
                         rng=np.random.default_rng(0))


def vec(x) -> Samples:
    return Samples("vectors", np.asarray(x, dtype=np.float64).reshape(len(x), -1))


# --------------------------------------------------------------------------------------------------
# Perplexity
# --------------------------------------------------------------------------------------------------


def test_nll_per_unit_pooled_and_per_batch():
    ll, units = np.array([-6.0, -4.0, -9.0]), np.array([2.0, 3.0, 3.0])
    assert M.nll_per_unit(ll, units) == pytest.approx(19 / 8)
    # batches of 2: (6 + 4) / 5 = 2, then 9 / 3 = 3; mean 2.5
    assert M.nll_per_unit(ll, units, batch_size=2) == pytest.approx(2.5)
    # equal units per batch: the per-batch mean equals the pooled mean
    assert M.nll_per_unit(ll, np.full(3, 4.0), batch_size=1) == pytest.approx(19 / 12)
    with pytest.raises(ValueError):
        M.nll_per_unit(ll, np.array([1.0, 0.0, 1.0]))
    with pytest.raises(ValueError):
        M.nll_per_unit(ll, units, batch_size=0)


def _table_scorer(calls):
    tables = {
        "k": Scores(np.array([-6.0, -4.0]), np.array([2.0, 3.0])),  # NLL 10/5 = 2
        "0": Scores(np.array([-3.0, -2.0]), np.array([2.0, 3.0])),  # NLL 5/5 = 1
    }

    def score(state, samples):
        calls.append(str(state["id"]))
        return tables[str(state["id"])]

    return score


def test_perplexity_drift_and_test_perplexity_hand_computed():
    calls = []
    ctx = make_ctx(samples=vec([0.0, 1.0]), score=_table_scorer(calls),
                   state={"id": np.array("k")}, reference={"id": np.array("0")})
    assert M.compute_test_perplexity(ctx) == pytest.approx(math.e**2)
    assert M.compute_perplexity_drift(ctx) == pytest.approx(math.e)  # e^2 / e^1
    assert sorted(calls) == ["0", "k"]  # each test-set score computed once (cached)

    # released-code variant, batches of one block: NLL_k = (3 + 4/3)/2 = 13/6, NLL_0 = (1.5 + 2/3)/2
    ctx = make_ctx(samples=vec([0.0, 1.0]), score=_table_scorer([]), state={"id": np.array("k")},
                   reference={"id": np.array("0")}, params={"perplexity_batch_size": 1})
    assert M.compute_test_perplexity(ctx) == pytest.approx(math.exp(13 / 6))
    assert M.compute_perplexity_drift(ctx) == pytest.approx(math.exp(13 / 6 - 13 / 12))


def test_test_nll_is_the_pooled_nll_and_stays_finite_where_perplexity_overflows():
    ctx = make_ctx(samples=vec([0.0, 1.0]), score=_table_scorer([]), state={"id": np.array("k")},
                   reference={"id": np.array("0")})
    assert M.compute_test_nll(ctx) == pytest.approx(2.0)  # (6 + 4) / (2 + 3), as hand-computed above
    # a collapsed model: N(0, 0.01^2) scoring N(0, 1) data gives about 5,000 nats per dimension
    x = np.random.default_rng(2).normal(size=(200, 2))
    s = 0.01
    ctx = make_ctx(samples=vec(x), state={"mu": np.zeros(1), "sigma": np.array([s])})
    nll = math.log(s) + 0.5 * math.log(2 * math.pi) + (x**2).mean() / (2 * s * s)
    with np.errstate(over="ignore"):
        assert M.compute_test_perplexity(ctx) == math.inf
    assert M.compute_test_nll(ctx) == pytest.approx(nll, rel=1e-12) and nll > 709


def test_perplexity_drift_is_one_at_generation_zero_and_scores_once():
    calls = []
    ref = {"id": np.array("0")}
    ctx = make_ctx(samples=vec([0.0]), score=_table_scorer(calls), state=ref, reference=ref, generation=0)
    assert M.compute_perplexity_drift(ctx) == 1.0
    assert M.compute_test_perplexity(ctx) == pytest.approx(math.e)
    assert calls == ["0"]


def test_perplexity_of_gaussian_test_set_matches_entropy():
    # per-dimension NLL of N(0, 1) data under N(0, s^2): log s + 0.5 log 2 pi + E[x^2] / (2 s^2);
    # with the sample's own second moment plugged in the value is exact.
    x = np.random.default_rng(1).normal(size=(500, 2))
    s = 1.7
    ctx = make_ctx(samples=vec(x), state={"mu": np.zeros(1), "sigma": np.array([s])})
    nll_k = math.log(s) + 0.5 * math.log(2 * math.pi) + (x**2).mean() / (2 * s * s)
    nll_0 = 0.5 * math.log(2 * math.pi) + (x**2).mean() / 2
    assert M.compute_test_perplexity(ctx) == pytest.approx(math.exp(nll_k), rel=1e-12)
    assert M.compute_perplexity_drift(ctx) == pytest.approx(math.exp(nll_k - nll_0), rel=1e-12)


# --------------------------------------------------------------------------------------------------
# Quantiles and mass bands: hand-worked cases
# --------------------------------------------------------------------------------------------------


def test_quantile_linear_is_numpy_default_and_handles_infinities():
    rng = np.random.default_rng(2)
    for n in (1, 2, 7, 100):
        x = rng.normal(size=n)
        for q in (0.0, 0.05, 0.1, 0.5, 0.9, 0.95, 1.0):
            assert M.quantile_linear(x, q) == pytest.approx(np.quantile(x, q), rel=1e-12, abs=1e-15)
    assert M.quantile_linear([-np.inf, 1.0, 2.0], 0.1) == -np.inf  # h = 0.2, away from -inf
    assert M.quantile_linear([-np.inf, 1.0, 2.0], 0.5) == 1.0
    assert M.quantile_linear([1.0, 2.0, np.inf], 0.9) == np.inf  # h = 1.8, towards +inf
    assert M.quantile_linear([1.0, 2.0, np.inf], 0.5) == 2.0
    with pytest.raises(ValueError):
        M.quantile_linear([1.0, np.nan], 0.5)


def test_mass_bands_hand_worked_integer_positions():
    real = np.arange(11.0)  # min 0; h = 10 alpha: q_0.1 = 1, q_0.9 = 9
    gen = np.array([-np.inf, -1, 0, 0.5, 1, 5, 9, 9.5, 10, 11])
    # head (> 9): 9.5, 10, 11 -> 3/10; tail (0 <= g < 1): 0, 0.5 -> 2/10; oos (< 0): -inf, -1 -> 2/10
    out = M.mass_bands(real, gen, 0.1)
    assert out == pytest.approx({"head": 3.0, "tail": 2.0, "oos": 0.2})
    # NaN counts as out of support; appending one changes every share's denominator to 11
    out = M.mass_bands(real, np.append(gen, np.nan), 0.1)
    assert out == pytest.approx({"head": 30 / 11, "tail": 20 / 11, "oos": 3 / 11})


def test_mass_bands_hand_worked_interpolated_positions():
    real = np.array([40.0, 0, 30, 10, 20])  # sorted 0..40; h = 4 * 0.3 = 1.2 -> 12; h = 2.8 -> 28
    assert M.band_thresholds(real, 0.3) == pytest.approx((0.0, 12.0, 28.0))
    gen = np.array([11.9, 12.0, 28.0, 28.1, -1.0, 0.0])
    # head: 28.1; tail: 11.9, 0.0; oos: -1.0; the rest (12, 28) in the middle
    assert M.mass_bands(real, gen, 0.3) == pytest.approx({"head": 1 / 6 / 0.3, "tail": 2 / 6 / 0.3, "oos": 1 / 6})


def test_mass_bands_minus_infinity_in_real_data():
    # a real sample the reference cannot explain pulls the minimum to -inf: nothing finite is below
    # it, but a generated -inf still counts as out of support, never as tail.
    real = np.array([-np.inf, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9])  # q_0.1 = 0 (h = 1), q_0.9 = 8
    gen = np.array([-np.inf, -5.0, 0.0, 8.5])
    assert M.mass_bands(real, gen, 0.1) == pytest.approx({"head": 2.5, "tail": 2.5, "oos": 0.25})
    with pytest.raises(ValueError):
        M.mass_bands(np.array([0.0, np.nan]), gen, 0.1)
    with pytest.raises(ValueError):
        M.mass_bands(real, gen, 0.6)


def test_mass_metrics_use_per_unit_loglik_and_tail_alpha():
    # two real lengths, scored loglik = -units * level, so per-unit levels are 0..10 whatever the length
    levels_real = np.arange(11.0)
    units_real = np.where(np.arange(11) % 2 == 0, 3.0, 7.0)
    gen_levels = np.array([-1.0, 0.5, 5.0, 9.5])
    gen_units = np.array([5.0, 2.0, 9.0, 4.0])

    def score(state, samples):
        x = samples.data
        return Scores(x[:, 0] * x[:, 1], x[:, 1])

    test = Samples("vectors", np.stack([levels_real, units_real], axis=1))
    gen = Samples("vectors", np.stack([gen_levels, gen_units], axis=1))
    ctx = make_ctx(samples=gen, test=test, score=score)
    assert M.compute_head_mass(ctx) == pytest.approx(0.25 / 0.1)
    assert M.compute_tail_mass(ctx) == pytest.approx(0.25 / 0.1)
    assert M.compute_oos_mass(ctx) == pytest.approx(0.25)
    ctx = make_ctx(samples=gen, test=test, score=score, params={"tail_alpha": 0.3})
    # h = 3 and 7: q_0.3 = 3, q_0.7 = 7; head 9.5; tail 0.5
    assert M.compute_head_mass(ctx) == pytest.approx(0.25 / 0.3)
    assert M.compute_tail_mass(ctx) == pytest.approx(0.25 / 0.3)


def test_reference_nll_quantiles_and_shift():
    test = Samples("vectors", np.arange(11.0).reshape(-1, 1))  # real NLL 0..10
    gen = Samples("vectors", np.array([[0.0], [2.0], [4.0], [np.inf], [np.nan]]))

    def score(state, samples):  # loglik = -value, one unit
        return Scores(-samples.data[:, 0], np.ones(len(samples)))

    ctx = make_ctx(samples=gen, test=test, score=score)
    # generated NLL sorted: 0, 2, 4, inf, inf (NaN -> inf); h = 0.4, 2, 3.6
    assert M.compute_reference_nll(ctx) == pytest.approx({"q10": 0.8, "q50": 4.0, "q90": np.inf})
    # real NLL quantiles 1, 5, 9
    assert M.compute_reference_nll_shift(ctx) == pytest.approx({"q10": -0.2, "q50": -1.0, "q90": np.inf})


# --------------------------------------------------------------------------------------------------
# Mass bands: same distribution (exact moments from uniform order statistics)
# --------------------------------------------------------------------------------------------------


def _order_stat_moments(n):
    """Mean vector and covariance matrix of the order statistics U_(1..n) of n uniforms."""
    i = np.arange(1, n + 1, dtype=np.float64)
    mean = i / (n + 1)
    lo, hi = np.minimum.outer(i, i), np.maximum.outer(i, i)
    cov = lo * (n + 1 - hi) / ((n + 1) ** 2 * (n + 2))
    return mean, cov


def _quantile_weights(n, q):
    """Weights w with quantile_linear(U, q) = w . U_(1..n) (NumPy's linear rule)."""
    h = (n - 1) * q
    lo = int(math.floor(h))
    w = np.zeros(n)
    w[lo] += 1 - (h - lo)
    if h > lo:
        w[lo + 1] += h - lo
    return w


def test_same_distribution_gives_unit_masses_with_derived_standard_error():
    """Real and generated per-unit log-likelihoods from one continuous law.

    Only ranks matter, so take both Uniform(0, 1). Given the real values, each band's probability p
    is a linear function of the real order statistics (head: 1 - q_hi; tail: q_lo - U_(1);
    oos: U_(1)), so E[p] and Var[p] follow from E[U_(i)] = i/(n+1) and
    Cov(U_(i), U_(j)) = i (n+1-j) / ((n+1)^2 (n+2)), i <= j. The generated share F is Binomial(m, p)/m
    given p, so E[F] = E[p] and Var[F] = (E[p] - E[p]^2 - Var[p]) / m + Var[p]: the binomial SE of the
    generated draw plus the uncertainty of the real quantile, about alpha (1 - alpha)(1/m + 1/n).
    In particular E[head share] = (n alpha + 1 - alpha)/(n + 1) and E[tail share] = (n - 1) alpha/(n + 1).
    """
    n = m = 400
    reps = 400
    alpha = 0.1
    mean_u, cov_u = _order_stat_moments(n)
    first = np.zeros(n)
    first[0] = 1.0
    linear = {  # band share p = c + w . U
        "head": (1.0, -_quantile_weights(n, 1 - alpha)),
        "tail": (0.0, _quantile_weights(n, alpha) - first),
        "oos": (0.0, first),
    }
    expected = {}
    for band, (c, w) in linear.items():
        ep, vp = c + w @ mean_u, w @ cov_u @ w
        expected[band] = (ep, (ep - ep**2 - vp) / m + vp)
    assert expected["head"][0] == pytest.approx((n * alpha + 1 - alpha) / (n + 1))
    assert expected["tail"][0] == pytest.approx((n - 1) * alpha / (n + 1))
    assert expected["oos"][0] == pytest.approx(1 / (n + 1))

    rng = np.random.default_rng(3)
    shares = {b: np.empty(reps) for b in linear}
    for r in range(reps):
        out = M.mass_bands(rng.random(n), rng.random(m), alpha)
        shares["head"][r] = out["head"] * alpha
        shares["tail"][r] = out["tail"] * alpha
        shares["oos"][r] = out["oos"]
    for band, (ep, vf) in expected.items():
        f = shares[band]
        assert abs(f.mean() - ep) < Z * math.sqrt(vf / reps), band
        # the sample variance matches the derived one (SE of a variance from the 4th moment)
        m4 = ((f - f.mean()) ** 4).mean()
        se_var = math.sqrt(max(m4 - f.var() ** 2, 0.0) / reps)
        assert abs(f.var(ddof=1) - vf) < Z * se_var, band
    # so the expected masses are 1 up to O(1/n): head 1 + (1 - 2 alpha)/((n + 1) alpha), tail 1 - 2/(n + 1)
    assert expected["head"][0] / alpha == pytest.approx(1 + (1 - 2 * alpha) / ((n + 1) * alpha))
    assert expected["tail"][0] / alpha == pytest.approx(1 - 2 / (n + 1))


# --------------------------------------------------------------------------------------------------
# Mass bands: shrunken and widened Gaussians scored by the true density (closed forms)
# --------------------------------------------------------------------------------------------------


def _check_band(observed_share, p, n_gen):
    se = math.sqrt(p * (1 - p) / n_gen)
    assert abs(observed_share - p) <= Z * se + 1e-12, (observed_share, p, se)


def test_shrunken_gaussian_head_up_tail_down_exactly():
    """Real N(0, 1), generated N(0, s^2), s = 0.5, 1-D, scored by the N(0, 1) density.

    Per-unit loglik l(x) = -x^2/2 - log(2 pi)/2, so a band l > t is |x| < a with a^2 = -2 t - log 2 pi.
    Given the real thresholds (min, q_lo, q_hi) the generated band probabilities are exact normal
    CDFs: head 2 Phi(a_hi / s) - 1; tail 2 (Phi(a_min / s) - Phi(a_lo / s)); oos 2 (1 - Phi(a_min / s)).
    The generated count is binomial given the real set, hence the SE.
    """
    rng = np.random.default_rng(4)
    s, alpha, n_real, n_gen = 0.5, 0.1, 4000, 20000
    test = vec(rng.normal(size=n_real))
    gen = vec(rng.normal(scale=s, size=n_gen))
    ctx = make_ctx(samples=gen, test=test)

    ll_real = -0.5 * test.data[:, 0] ** 2 - 0.5 * math.log(2 * math.pi)
    radius = lambda t: math.sqrt(-2 * t - math.log(2 * math.pi))  # noqa: E731
    a_min, a_lo, a_hi = radius(ll_real.min()), radius(np.quantile(ll_real, alpha)), radius(np.quantile(ll_real, 1 - alpha))
    Phi = stats.norm.cdf
    p_head = 2 * Phi(a_hi / s) - 1
    p_tail = 2 * (Phi(a_min / s) - Phi(a_lo / s))
    p_oos = 2 * (1 - Phi(a_min / s))

    _check_band(M.compute_head_mass(ctx) * alpha, p_head, n_gen)
    _check_band(M.compute_tail_mass(ctx) * alpha, p_tail, n_gen)
    _check_band(M.compute_oos_mass(ctx), p_oos, n_gen)
    # population values (n_real -> infinity): head (2 Phi(z_0.55 / s) - 1) / alpha = 1.98,
    # tail 2 (1 - Phi(z_0.95 / s)) / alpha = 0.010: collapse moves mass to the head
    head_pop = (2 * Phi(stats.norm.ppf(0.5 + alpha / 2) / s) - 1) / alpha
    assert head_pop == pytest.approx(1.984, abs=1e-3)
    assert M.compute_head_mass(ctx) > 1.5 and M.compute_tail_mass(ctx) < 0.2


def test_widened_gaussian_in_three_dimensions_chi_square():
    """Real N(0, I_3), generated N(0, s^2 I_3), s = 1.5, scored by the N(0, I_3) density.

    Per-unit loglik l = (-r^2/2 - 3 log(2 pi)/2) / 3 with r^2 = |x|^2, so l > t is r^2 < c with
    c = -6 t - 3 log 2 pi, and P_gen(r^2 < c) = chi2_3.cdf(c / s^2): head < 1, tail > 1, oos > 0.
    """
    rng = np.random.default_rng(5)
    s, alpha, d, n_real, n_gen = 1.5, 0.1, 3, 4000, 20000
    test = vec(rng.normal(size=(n_real, d)))
    gen = vec(rng.normal(scale=s, size=(n_gen, d)))
    ctx = make_ctx(samples=gen, test=test)

    ll_real = (-0.5 * (test.data**2).sum(axis=1) - 1.5 * math.log(2 * math.pi)) / d
    c = lambda t: -6 * t - 3 * math.log(2 * math.pi)  # noqa: E731
    c_min, c_lo, c_hi = c(ll_real.min()), c(np.quantile(ll_real, alpha)), c(np.quantile(ll_real, 1 - alpha))
    F = lambda v: stats.chi2.cdf(v / s**2, d)  # noqa: E731
    p_head, p_tail, p_oos = F(c_hi), F(c_min) - F(c_lo), 1 - F(c_min)

    _check_band(M.compute_head_mass(ctx) * alpha, p_head, n_gen)
    _check_band(M.compute_tail_mass(ctx) * alpha, p_tail, n_gen)
    _check_band(M.compute_oos_mass(ctx), p_oos, n_gen)
    assert M.compute_head_mass(ctx) < 1 < M.compute_tail_mass(ctx)
    assert M.compute_oos_mass(ctx) > 0.002  # p_oos is about 0.01 here, 20000 draws


# --------------------------------------------------------------------------------------------------
# Covariance trace ratio and log-determinant difference
# --------------------------------------------------------------------------------------------------


def _with_exact_covariance(rng, n, cov):
    """n rows whose sample covariance (divisor n - 1) is exactly ``cov`` (up to rounding)."""
    z = rng.normal(size=(n, cov.shape[0]))
    z -= z.mean(axis=0)
    white = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T
    return white @ np.linalg.cholesky(cov).T


def test_covariance_matches_numpy_across_chunks(monkeypatch):
    x = np.random.default_rng(6).normal(size=(37, 2, 3)).astype(np.float32)
    monkeypatch.setattr(M, "_COV_CHUNK_ROWS", 5)
    ref = np.cov(x.reshape(37, -1).astype(np.float64), rowvar=False)
    assert np.allclose(M.covariance(x), ref, rtol=1e-12, atol=1e-12)


def test_trace_ratio_and_logdet_diff_exact_on_constructed_data():
    rng = np.random.default_rng(7)
    a = rng.normal(size=(3, 3))
    cov_r = a @ a.T + 0.5 * np.eye(3)
    b = rng.normal(size=(3, 3))
    cov_g = 0.3 * (b @ b.T + 0.2 * np.eye(3))
    real, gen = _with_exact_covariance(rng, 60, cov_r), _with_exact_covariance(rng, 60, cov_g)
    ctx = make_ctx(samples=vec(gen), train=vec(real), params={"logdet_ridge": 0.0})
    assert M.compute_cov_trace_ratio(ctx) == pytest.approx(np.trace(cov_g) / np.trace(cov_r), rel=1e-10)
    want = np.log(np.linalg.eigvalsh(cov_g)).sum() - np.log(np.linalg.eigvalsh(cov_r)).sum()
    assert M.compute_logdet_diff(ctx) == pytest.approx(want, rel=1e-10)
    # with a ridge: lam = ridge * tr(C_r) / d on both sides
    ridge = 0.05
    lam = ridge * np.trace(cov_r) / 3
    want = np.log(np.linalg.eigvalsh(cov_g) + lam).sum() - np.log(np.linalg.eigvalsh(cov_r) + lam).sum()
    ctx = make_ctx(samples=vec(gen), train=vec(real), params={"logdet_ridge": ridge})
    assert M.compute_logdet_diff(ctx) == pytest.approx(want, rel=1e-10)


def test_trace_ratio_and_logdet_diff_gaussian_monte_carlo_wishart_moments():
    """Independent N(0, S_g) and N(0, S_r) sets of equal size n in d dimensions.

    (n - 1) C ~ Wishart_d(n - 1, S): E[log det C] = log det S + sum_i digamma((n - i)/2) + d log(2/(n-1))
    with Var = sum_i trigamma((n - i)/2), i = 1..d. The bias terms cancel in the difference, so
    E[logdet-diff] = log det S_g - log det S_r exactly, SD = sqrt(2 sum_i trigamma((n - i)/2)).
    tr C has mean tr S and variance 2 tr(S^2)/(n - 1); the ratio's SD follows by the delta method
    (its O(1/n) bias, tr-ratio * Var(tr C_r)/tr(S_r)^2, is added; it is far below the SD).
    """
    rng = np.random.default_rng(8)
    n, d = 20000, 4
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    cov_r = q @ np.diag([1.0, 2.0, 3.0, 4.0]) @ q.T
    cov_g = np.diag([0.2, 0.5, 1.0, 3.0])
    real = rng.multivariate_normal(np.zeros(d), cov_r, size=n)
    gen = rng.multivariate_normal(np.zeros(d), cov_g, size=n)
    ctx = make_ctx(samples=vec(gen), train=vec(real), params={"logdet_ridge": 0.0})

    i = np.arange(1, d + 1)
    sd_logdet = math.sqrt(2 * special.polygamma(1, (n - i) / 2).sum())
    want_logdet = np.linalg.slogdet(cov_g)[1] - np.linalg.slogdet(cov_r)[1]
    assert abs(M.compute_logdet_diff(ctx) - want_logdet) < Z * sd_logdet

    tg, tr = np.trace(cov_g), np.trace(cov_r)
    var_tg, var_tr = 2 * np.trace(cov_g @ cov_g) / (n - 1), 2 * np.trace(cov_r @ cov_r) / (n - 1)
    ratio = tg / tr
    sd_ratio = ratio * math.sqrt(var_tg / tg**2 + var_tr / tr**2)
    assert abs(M.compute_cov_trace_ratio(ctx) - ratio * (1 + var_tr / tr**2)) < Z * sd_ratio
    assert sd_ratio < 0.02 * ratio  # tight enough to catch a wrong scale or the wrong set


def test_images_are_flattened_and_constant_pixels_cancel_under_the_ridge():
    # 4x4 images with a constant border: only the 2x2 centre varies. The constant pixels have no
    # covariance with anything, so det(C + lam I) factorises and the border contributes
    # log(lam) - log(lam) = 0; without a ridge both determinants vanish and the difference is NaN.
    rng = np.random.default_rng(9)
    n = 50
    centre_r = _with_exact_covariance(rng, n, np.diag([1.0, 2.0, 3.0, 4.0]))
    centre_g = _with_exact_covariance(rng, n, np.diag([0.5, 0.5, 1.0, 1.0]))

    def images(centre):
        img = np.full((n, 4, 4), 0.25)
        img[:, 1:3, 1:3] = centre.reshape(n, 2, 2)
        return Samples("images", img)

    ridge = 1e-3
    lam = ridge * 10.0 / 16  # tr(C_r) = 10 over 16 pixels
    want = np.log(np.array([0.5, 0.5, 1.0, 1.0]) + lam).sum() - np.log(np.arange(1.0, 5.0) + lam).sum()
    ctx = make_ctx(samples=images(centre_g), train=images(centre_r), params={"logdet_ridge": ridge})
    assert M.compute_cov_trace_ratio(ctx) == pytest.approx(3.0 / 10.0, rel=1e-10)
    assert M.compute_logdet_diff(ctx) == pytest.approx(want, rel=1e-9)
    ctx = make_ctx(samples=images(centre_g), train=images(centre_r), params={"logdet_ridge": 0.0})
    assert math.isnan(M.compute_logdet_diff(ctx))


def test_equal_size_subsample_is_fixed_and_without_replacement():
    big, small = np.arange(100.0).reshape(50, 2), np.zeros((20, 2))
    a, b = M.equal_size(big, small)
    a2, b2 = M.equal_size(big, small)
    assert a.shape == (20, 2) and b is small
    assert np.array_equal(a, a2)  # the same rows every call
    assert len(np.unique(a[:, 0])) == 20 and np.all(np.diff(a[:, 0]) > 0)  # distinct, in order
    _, a3 = M.equal_size(small, big)
    assert np.array_equal(a3, a)
    # the real set is cut to the generated size before the covariance is taken
    ctx = make_ctx(samples=vec(small + np.arange(20.0)[:, None]), train=vec(big))
    cg, cr = M._covariances(ctx)
    assert np.allclose(cr, np.cov(a, rowvar=False))


# --------------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------------


def test_registered_metrics_declare_directions():
    from bench.plugins import Bench

    b = Bench(extra_plugins=[M], entry_points=False)
    want = {
        "test-nll": ("lower", None),
        "test-perplexity": ("lower", None),
        "perplexity-drift": ("lower", None),
        "head-mass": ("target", 1.0),
        "tail-mass": ("target", 1.0),
        "oos-mass": ("lower", None),
        "reference-nll": ("lower", None),
        "reference-nll-shift": ("target", 0.0),
        "cov-trace-ratio": ("target", 1.0),
        "logdet-diff": ("target", 0.0),
    }
    assert set(b.metrics.names()) == set(want)
    for name, (direction, target) in want.items():
        metric = b.metrics.get(name)
        assert isinstance(metric, Metric)
        assert (metric.direction, metric.target) == (direction, target)
        assert metric.needs_scorer == (name not in ("cov-trace-ratio", "logdet-diff"))
    assert b.metrics.get("cov-trace-ratio").kinds == ("vectors", "images")
