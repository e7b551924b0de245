"""Tests of the ``gaussian`` and ``categorical`` bundles (plugins/gaussian.py).

The theory checks drive the chain by hand through the plugin's own ``load_real``, ``trainer.fit``
and ``generator.generate`` and compare Monte Carlo averages over many chains with the closed forms
of PROTOCOLS.md section 4. Fit number n counts fits: the fit on real data is n = 1 (the loop's
row k = n - 1).

Tolerances: every Monte Carlo check asserts |estimate - theory| <= K_SE standard errors, with the
standard error estimated from the same Monte Carlo sample. With K_SE = 4 one check fails by chance
with probability about 6e-5 (two-sided normal tail); this file makes about 70 such checks, so a
correct implementation would fail for an unlucky seed with probability below 0.5% (a union bound:
the checks share chains and are not independent). The seeds are fixed, so the outcome is
deterministic. Where a check could pass trivially, ``assert_detectable`` shows that the effect under
test is at least 2 K_SE standard errors from the no-collapse value.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import linalg, special, stats

import bench
from bench.components import MetricContext
from bench.plugins import Bench
from collapse_bench_plugins import gaussian as g

K_SE = 4.0
RESERVED = {"generations", "policy", "start"}


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reg() -> Bench:
    """This plugin with the first-party metrics it names, without other entry points."""
    from collapse_bench_plugins import metrics, policies

    return Bench(extra_plugins=[g, metrics, policies], entry_points=False)


def merged(reg: Bench, model: str, **overrides) -> dict:
    """The flat params dict the loop builds: component defaults, then bundle params, then overrides."""
    bundle = reg.models.get(model)
    params: dict = {}
    for kind, name in (("trainers", bundle.trainer), ("generators", bundle.generator), ("scorers", bundle.scorer)):
        params.update(reg.registries[kind].get(name).params)
    params.update(bundle.params)
    params.update(overrides)
    return params


def context(reg: Bench, model: str, params: dict, real, state, reference_state, samples, generation=0) -> MetricContext:
    bundle = reg.models.get(model)
    scorer = reg.scorers.get(bundle.scorer)
    return MetricContext(
        generation=generation, bundle=bundle, params=params, real=real, state=state,
        reference_state=reference_state, samples=samples,
        score=lambda st, s: scorer.score(bench.ScoreRequest(st, s, params)), rng=np.random.default_rng(0),
    )


def run_loop(reg: Bench, model: str, seed: int, preset: str | None = None, **overrides) -> tuple[list[dict], list[dict]]:
    """The lead's loop as specified (policy 'replace'): returns one metrics dict per row and the states."""
    bundle = reg.models.get(model)
    settings = dict(bundle.presets[preset]) if preset else {}
    settings.update(overrides)
    generations = int(settings.pop("generations", 5))
    assert settings.pop("policy", "replace") == "replace"
    settings.pop("start", None)
    params = merged(reg, model, **settings)
    trainer = reg.trainers.get(bundle.trainer)
    generator = reg.generators.get(bundle.generator)
    metrics = [reg.metrics.get(name) for name in bundle.metrics]
    rng = np.random.default_rng(seed)
    real = bundle.load_real(bench.RealRequest(params, seed))
    state = trainer.fit(bench.FitRequest(real.train, real.validation, "pretrained", None, params, rng, 0))
    reference = state
    rows, states = [], []
    for k in range(generations + 1):
        samples = generator.generate(bench.GenerateRequest(state, len(real.train), real.train, params, rng, 0))
        ctx = context(reg, model, params, real, state, reference, samples, generation=k)
        rows.append({m.name: m.compute(ctx) for m in metrics})
        states.append(state)
        if k < generations:
            state = trainer.fit(bench.FitRequest(samples, real.validation, "pretrained", None, params, rng, k + 1))
    return rows, states


def check_mc(values: np.ndarray, theory: float, what: str) -> float:
    """Assert mean(values) is within K_SE estimated standard errors of theory; return the SE."""
    values = np.asarray(values, dtype=np.float64)
    se = values.std(ddof=1) / math.sqrt(values.size)
    diff = values.mean() - theory
    assert abs(diff) <= K_SE * se, f"{what}: MC {values.mean():.5f} vs theory {theory:.5f} ({diff / se:+.1f} SE)"
    return se


def assert_detectable(effect: float, se: float, what: str) -> None:
    """The effect under test is at least 2 K_SE standard errors from the no-effect value, so an
    implementation without it would miss the theory by that much and fail ``check_mc``."""
    assert abs(effect) > 2 * K_SE * se, f"{what}: effect {effect:.4f} is only {abs(effect) / se:.1f} SE"


def c4(m: int) -> float:
    """E[s] / sigma for the unbiased sample standard deviation s of m normal draws."""
    return math.sqrt(2.0 / (m - 1)) * math.exp(special.gammaln(m / 2) - special.gammaln((m - 1) / 2))


# --------------------------------------------------------------------------------------------------
# Registration, params, determinism
# --------------------------------------------------------------------------------------------------


def test_registers_everything(reg):
    assert set(reg.models.names()) == {"gaussian", "categorical"}
    assert set(reg.trainers.names()) == {"gaussian-fit", "categorical-fit"}
    assert set(reg.generators.names()) == {"gaussian-sample", "categorical-sample"}
    assert set(reg.scorers.names()) == {"gaussian-loglik", "categorical-loglik"}
    own = [name for name in reg.metrics.names() if reg.owner("metrics", name).name == g.__name__]
    directions = {name: (reg.metrics.get(name).direction, reg.metrics.get(name).target) for name in own}
    assert directions == {
        "gaussian-w2sq": ("lower", None),
        "gaussian-var": ("target", 1.0),
        "gaussian-mean-sq": ("lower", None),
        "categorical-support": ("higher", None),
        "categorical-tv": ("lower", None),
    }
    for name in ("gaussian", "categorical"):
        bundle = reg.models.get(name)
        assert {"smoke", "paper"} <= set(bundle.presets)
        for metric in bundle.metrics:
            assert bundle.kind in reg.metrics.get(metric).kinds
        for preset in bundle.presets.values():
            assert set(preset) <= set(bundle.params) | RESERVED, preset


def test_presets_match_the_brief(reg):
    smoke = reg.models.get("gaussian").presets["smoke"]
    assert (smoke["dim"], smoke["n_samples"], smoke["generations"]) == (2, 20, 100)
    paper = reg.models.get("gaussian").presets["paper"]
    assert (paper["dim"], paper["n_samples"], paper["estimator"]) == (1, 100, "unbiased")
    # rows 0..generations are fits n = 1..generations+1; the last is PROTOCOLS' n = 10
    assert paper["generations"] + 1 == 10


@pytest.mark.parametrize("bad", ["biased", "MLE", "ddof1", None])
def test_bad_estimator_is_a_clear_value_error(reg, bad):
    params = merged(reg, "gaussian", estimator=bad)
    with pytest.raises(ValueError, match="estimator must be 'unbiased'.*'mle'"):
        g.load_gaussian(bench.RealRequest(params, 0))
    data = bench.Samples("vectors", np.zeros((5, 1)))
    with pytest.raises(ValueError, match="estimator"):
        g.fit_gaussian(bench.FitRequest(data, None, "pretrained", None, params, np.random.default_rng(0), 0))


def test_other_bad_params(reg):
    with pytest.raises(ValueError, match="n_samples"):
        g.load_gaussian(bench.RealRequest(merged(reg, "gaussian", n_samples=1), 0))  # unbiased needs 2
    g.load_gaussian(bench.RealRequest(merged(reg, "gaussian", n_samples=1, estimator="mle"), 0))
    with pytest.raises(ValueError, match="std"):
        g.load_gaussian(bench.RealRequest(merged(reg, "gaussian", std=0.0), 0))
    with pytest.raises(ValueError, match="dim"):
        g.load_gaussian(bench.RealRequest(merged(reg, "gaussian", dim=0), 0))
    with pytest.raises(ValueError, match="zipf"):
        g.load_categorical(bench.RealRequest(merged(reg, "categorical", zipf=-1.0), 0))
    params = merged(reg, "categorical", n_states=3)
    with pytest.raises(ValueError, match="0..2"):
        g.fit_categorical(bench.FitRequest(bench.Samples("categorical", np.array([0, 3])), None, "pretrained",
                                           None, params, np.random.default_rng(0), 0))


def test_real_data_shapes_and_kinds(reg):
    params = merged(reg, "gaussian", dim=3, n_samples=7, n_test=11)
    real = g.load_gaussian(bench.RealRequest(params, 4))
    assert real.train.kind == "vectors" and real.train.data.shape == (7, 3) and real.train.data.dtype == np.float64
    assert real.test.data.shape == (11, 3) and real.validation is None
    assert real.fresh(5, np.random.default_rng(0)).data.shape == (5, 3)
    real = g.load_categorical(bench.RealRequest(merged(reg, "categorical", n_states=6, n_samples=9, n_test=13), 4))
    assert real.train.kind == "categorical" and real.train.data.shape == (9,) and real.train.data.dtype == np.int64
    assert real.test.data.shape == (13,) and real.validation is None
    assert real.fresh(5, np.random.default_rng(0)).data.dtype == np.int64


@pytest.mark.parametrize("model", ["gaussian", "categorical"])
def test_a_seed_is_deterministic(reg, model):
    bundle = reg.models.get(model)
    params = merged(reg, model)
    a, b, c = (bundle.load_real(bench.RealRequest(params, seed)) for seed in (3, 3, 4))
    assert np.array_equal(a.train.data, b.train.data) and np.array_equal(a.test.data, b.test.data)
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert not np.array_equal(a.train.data, c.train.data)
    rows_a, states_a = run_loop(reg, model, seed=3, generations=6)
    rows_b, states_b = run_loop(reg, model, seed=3, generations=6)
    rows_c, _ = run_loop(reg, model, seed=4, generations=6)
    assert rows_a == rows_b and rows_a != rows_c
    for sa, sb in zip(states_a, states_b):
        assert sa.keys() == sb.keys() and all(np.array_equal(sa[key], sb[key]) for key in sa)


@pytest.mark.parametrize("model", ["gaussian", "categorical"])
def test_smoke_preset_through_the_loop(reg, model):
    """The smoke preset runs as the loop runs it; states are flat float64 dicts safetensors can store."""
    from safetensors.numpy import load, save

    bundle = reg.models.get(model)
    rows, states = run_loop(reg, model, seed=0, preset="smoke")
    assert len(rows) == bundle.presets["smoke"]["generations"] + 1
    assert all(math.isfinite(v) for row in rows for k, v in row.items() if k.startswith(model))
    for state in (states[0], states[-1]):
        assert all(isinstance(v, np.ndarray) and v.dtype == np.float64 for v in state.values())
        restored = load(save(state))
        assert all(np.array_equal(restored[key], state[key]) for key in state)
    if model == "categorical":
        support = [row["categorical-support"] for row in rows]
        assert all(b <= a for a, b in zip(support, support[1:]))  # support can only shrink
    else:
        assert rows[0]["gaussian-var"] > 0


# --------------------------------------------------------------------------------------------------
# Formulas against independent computations
# --------------------------------------------------------------------------------------------------


def test_w2_closed_form_matches_scipy_sqrtm():
    rng = np.random.default_rng(7)
    for _ in range(5):
        a, b = rng.standard_normal((2, 2)), rng.standard_normal((2, 2))
        s1, s2 = a @ a.T + 0.1 * np.eye(2), b @ b.T + 0.1 * np.eye(2)  # non-commuting pair
        m1, m2 = rng.standard_normal(2), rng.standard_normal(2)
        r2 = linalg.sqrtm(s2)
        expected = np.sum((m1 - m2) ** 2) + np.trace(s1 + s2 - 2 * np.real(linalg.sqrtm(r2 @ s1 @ r2)))
        assert g.w2sq_gaussians(m1, s1, m2, s2) == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert g.w2sq_gaussians(m1, s1, m2, s2) == pytest.approx(g.w2sq_gaussians(m2, s2, m1, s1), rel=1e-9)
    # 1-D: W2^2 = (m1 - m2)^2 + (s1 - s2)^2; and a singular covariance: N(0, 0) vs N(0, I_2) is tr I = 2
    assert g.w2sq_gaussians([0.5], [[4.0]], [-1.0], [[0.25]]) == pytest.approx(1.5**2 + 1.5**2)
    assert g.w2sq_gaussians(np.zeros(2), np.zeros((2, 2)), np.zeros(2), np.eye(2)) == pytest.approx(2.0)
    assert g.w2sq_gaussians(np.ones(2), np.eye(2), np.ones(2), np.eye(2)) == pytest.approx(0.0, abs=1e-12)


def test_gaussian_scorer_and_true_loglik_match_scipy(reg):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((3, 3))
    state = {"mean": rng.standard_normal(3), "cov": a @ a.T + 0.5 * np.eye(3)}
    x = rng.standard_normal((8, 3))
    scores = g.score_gaussian(bench.ScoreRequest(state, bench.Samples("vectors", x), {}))
    assert np.allclose(scores.loglik, stats.multivariate_normal(state["mean"], state["cov"]).logpdf(x), rtol=1e-10)
    assert np.array_equal(scores.units, np.full(8, 3))
    real = g.load_gaussian(bench.RealRequest(merged(reg, "gaussian", dim=2, mean=1.5, std=0.5), 0))
    expected = stats.norm(1.5, 0.5).logpdf(real.test.data).sum(axis=1)
    assert np.allclose(real.true_loglik(real.test), expected, rtol=1e-10)
    # a singular covariance has no density
    flat = {"mean": np.zeros(2), "cov": np.zeros((2, 2))}
    assert np.all(g.score_gaussian(bench.ScoreRequest(flat, bench.Samples("vectors", x[:, :2]), {})).loglik == -np.inf)


def test_gaussian_metrics_hand_worked(reg):
    params = merged(reg, "gaussian", dim=2, mean=1.0, std=2.0)
    real = g.load_gaussian(bench.RealRequest(params, 0))
    state = {"mean": np.array([1.0, 4.0]), "cov": np.diag([1.0, 9.0])}
    ctx = context(reg, "gaussian", params, real, state, state, real.train)
    assert reg.metrics.get("gaussian-mean-sq").compute(ctx) == pytest.approx(9.0)
    assert reg.metrics.get("gaussian-var").compute(ctx) == pytest.approx((1 + 9) / (2 * 4.0))
    # truth N((1,1), 4 I): diagonal case, W2^2 = 9 + (1 - 2)^2 + (3 - 2)^2
    assert reg.metrics.get("gaussian-w2sq").compute(ctx) == pytest.approx(11.0)


def test_gaussian_fit_is_the_sample_mean_and_covariance(reg):
    x = np.random.default_rng(2).standard_normal((12, 3))
    for estimator, ddof in (("unbiased", 1), ("mle", 0)):
        params = merged(reg, "gaussian", estimator=estimator)
        state = g.fit_gaussian(bench.FitRequest(bench.Samples("vectors", x), None, "pretrained", None, params,
                                                np.random.default_rng(0), 0))
        assert np.allclose(state["mean"], x.mean(axis=0))
        assert np.allclose(state["cov"], np.cov(x, rowvar=False, ddof=ddof))


def test_gaussian_sampler_moments():
    """Draws from a fitted state have its mean and covariance (MC, per entry, K_SE standard errors)."""
    state = {"mean": np.array([1.0, -2.0]), "cov": np.array([[2.0, 0.8], [0.8, 1.0]])}
    x = g.sample_gaussian(bench.GenerateRequest(state, 40000, None, {}, np.random.default_rng(3), 0)).data
    for i in range(2):
        check_mc(x[:, i], state["mean"][i], f"mean {i}")
        for j in range(2):
            check_mc((x[:, i] - state["mean"][i]) * (x[:, j] - state["mean"][j]), state["cov"][i, j], f"cov {i}{j}")


def test_categorical_components_hand_worked(reg):
    params = merged(reg, "categorical", n_states=4, zipf=1.0)
    q = g.zipf_probs(4, 1.0)
    assert np.allclose(q, np.array([1, 1 / 2, 1 / 3, 1 / 4]) / (25 / 12))
    data = bench.Samples("categorical", np.array([0, 0, 1, 3, 0], dtype=np.int64))
    state = g.fit_categorical(bench.FitRequest(data, None, "pretrained", None, params, np.random.default_rng(0), 0))
    assert np.allclose(state["probs"], [0.6, 0.2, 0.0, 0.2])
    scores = g.score_categorical(bench.ScoreRequest(state, bench.Samples("categorical", np.array([0, 2, 3])), params))
    assert np.allclose(scores.loglik[[0, 2]], np.log([0.6, 0.2])) and scores.loglik[1] == -np.inf
    assert np.array_equal(scores.units, [1, 1, 1])
    real = g.load_categorical(bench.RealRequest(params, 0))
    assert np.allclose(real.true_loglik(real.test), np.log(q)[real.test.data])
    ctx = context(reg, "categorical", params, real, state, state, data)
    assert reg.metrics.get("categorical-support").compute(ctx) == 3.0
    expected_tv = 0.5 * np.abs(np.array([0.6, 0.2, 0.0, 0.2]) - q).sum()
    assert reg.metrics.get("categorical-tv").compute(ctx) == pytest.approx(expected_tv)
    # the sampler never draws a state of probability 0, and draws the others at their frequencies
    x = g.sample_categorical(bench.GenerateRequest(state, 30000, None, params, np.random.default_rng(5), 0)).data
    assert not np.any(x == 2)
    for i in (0, 1, 3):
        check_mc(x == i, state["probs"][i], f"frequency of state {i}")


# --------------------------------------------------------------------------------------------------
# PROTOCOLS.md section 4: recursive Gaussian fitting
# --------------------------------------------------------------------------------------------------

M = 10          # samples per generation
N_FITS = 5      # fits n = 1..5 per chain
CHAINS = 3000
MU, SIGMA = 2.0, 1.5  # not the defaults: checks that data and metrics use mean and std


def run_chains(reg: Bench, estimator: str, dim: int, chains: int) -> dict[str, np.ndarray]:
    """Many independent chains through the plugin's own components; fit n is index n - 1."""
    params = merged(reg, "gaussian", dim=dim, n_samples=M, estimator=estimator, mean=MU, std=SIGMA, n_test=1)
    bundle = reg.models.get("gaussian")
    trainer, generator = reg.trainers.get(bundle.trainer), reg.generators.get(bundle.generator)
    w2 = reg.metrics.get("gaussian-w2sq")
    mu = np.empty((chains, N_FITS, dim))
    var = np.empty((chains, N_FITS, dim))
    w2sq = np.empty((chains, N_FITS))
    for c in range(chains):
        real = bundle.load_real(bench.RealRequest(params, c))
        rng = np.random.default_rng([c, 99])
        data = real.train
        for n in range(N_FITS):
            state = trainer.fit(bench.FitRequest(data, None, "pretrained", None, params, rng, n))
            data = generator.generate(bench.GenerateRequest(state, M, real.train, params, rng, 0))
            mu[c, n], var[c, n] = state["mean"], np.diag(state["cov"])
            w2sq[c, n] = w2.compute(context(reg, "gaussian", params, real, state, state, data, generation=n))
    return {"mu": mu, "var": var, "w2sq": w2sq}


@pytest.fixture(scope="module")
def chains_1d(reg):
    return {est: run_chains(reg, est, dim=1, chains=CHAINS) for est in ("unbiased", "mle")}


def theory(estimator: str, n: int) -> dict[str, float]:
    """Closed forms at fit n. Unbiased: PROTOCOLS.md section 4. MLE (ratio r = (M-1)/M per fit):
    E[s^2] = r^n; Var(mu) = sum_{j<n} E[s_j^2]/M = 1 - r^n; E[s] = (c4 sqrt r)^n; and
    E[W2^2] = Var(mu) + E[s^2] - 2 E[s] + 1 (1-D W2^2 = (mu - m)^2 + (s - sigma)^2), all times sigma^2."""
    s2 = SIGMA**2
    if estimator == "unbiased":
        return {"var": s2, "var_mu": s2 * n / M, "sd": SIGMA * c4(M) ** n,
                "w2sq": s2 * n / M + 2 * s2 * (1 - c4(M) ** n)}
    r = (M - 1) / M
    return {"var": s2 * r**n, "var_mu": s2 * (1 - r**n), "sd": SIGMA * (c4(M) * math.sqrt(r)) ** n,
            "w2sq": 2 * s2 * (1 - (c4(M) * math.sqrt(r)) ** n)}


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["unbiased", "mle"])
def test_expected_variance(chains_1d, estimator):
    var = chains_1d[estimator]["var"][:, :, 0]
    for n in range(1, N_FITS + 1):
        se = check_mc(var[:, n - 1], theory(estimator, n)["var"], f"E[sigma_{n}^2] ({estimator})")
    if estimator == "mle":  # the MLE shrinkage
        assert_detectable(SIGMA**2 - theory("mle", N_FITS)["var"], se, "MLE shrinkage")


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["unbiased", "mle"])
def test_variance_of_the_mean(chains_1d, estimator):
    mu = chains_1d[estimator]["mu"][:, :, 0]
    for n in range(1, N_FITS + 1):
        # E[mu_n] = MU exactly, so the mean of (mu_n - MU)^2 estimates Var(mu_n) without bias
        se = check_mc((mu[:, n - 1] - MU) ** 2, theory(estimator, n)["var_mu"], f"Var(mu_{n}) ({estimator})")
        check_mc(mu[:, n - 1], MU, f"E[mu_{n}] ({estimator})")
    # the random walk: Var(mu_n) grows beyond the single-fit sigma^2 / M
    assert_detectable(theory(estimator, N_FITS)["var_mu"] - SIGMA**2 / M, se, "random walk of the mean")


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["unbiased", "mle"])
def test_expected_standard_deviation(chains_1d, estimator):
    sd = np.sqrt(chains_1d[estimator]["var"][:, :, 0])
    for n in range(1, N_FITS + 1):
        se = check_mc(sd[:, n - 1], theory(estimator, n)["sd"], f"E[sigma_{n}] ({estimator})")
    assert_detectable(SIGMA - theory(estimator, N_FITS)["sd"], se, "fall of E[sigma_n]")  # even when unbiased


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["unbiased", "mle"])
def test_expected_w2sq(chains_1d, estimator):
    w2sq = chains_1d[estimator]["w2sq"]
    mu, sd = chains_1d[estimator]["mu"][:, :, 0], np.sqrt(chains_1d[estimator]["var"][:, :, 0])
    assert np.allclose(w2sq, (mu - MU) ** 2 + (sd - SIGMA) ** 2)  # the metric is the 1-D W2^2
    for n in range(1, N_FITS + 1):
        se = check_mc(w2sq[:, n - 1], theory(estimator, n)["w2sq"], f"E[W2^2] at n={n} ({estimator})")
    if estimator == "unbiased":  # the 2 sigma^2 (1 - c4^n) term, beyond the mean's sigma^2 n / M
        assert_detectable(2 * SIGMA**2 * (1 - c4(M) ** N_FITS), se, "W2 variance term")


@pytest.mark.slow
def test_log_variance_drifts_down(chains_1d):
    """E[log sigma_n^2 - log sigma_{n-1}^2] = digamma((M-1)/2) + ln(2/(M-1)) < 0 (sigma_0 = SIGMA):
    the unbiased variance is a martingale that still collapses almost surely."""
    log_var = np.log(chains_1d["unbiased"]["var"][:, :, 0])
    steps = np.diff(np.concatenate([np.full((CHAINS, 1), math.log(SIGMA**2)), log_var], axis=1), axis=1)
    drift = special.digamma((M - 1) / 2) + math.log(2 / (M - 1))
    se = check_mc(steps.ravel(), drift, "log-variance drift")  # steps are independent chi^2 ratios
    assert_detectable(drift, se, "log-variance drift")


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["unbiased", "mle"])
def test_d_dimensional_chain(reg, estimator):
    """In d dimensions each coordinate's marginal is a 1-D chain, so E[tr Sigma_n]/d and
    E||mu_n - mean||^2 / d follow the 1-D laws; checked through the metrics at the last fit."""
    dim, chains = 3, 800
    out = run_chains(reg, estimator, dim=dim, chains=chains)
    t = theory(estimator, N_FITS)
    check_mc(out["var"][:, -1].mean(axis=1), t["var"], f"E[tr Sigma]/d ({estimator})")
    check_mc(np.sum((out["mu"][:, -1] - MU) ** 2, axis=1), dim * t["var_mu"], f"E||mu - m||^2 ({estimator})")


# --------------------------------------------------------------------------------------------------
# PROTOCOLS.md section 4: the discrete absorption law
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_categorical_absorption_law(reg):
    """Chains refitted from M draws are absorbed at one state, at state i with probability q_i."""
    n_states, m, chains = 4, 10, 2500
    params = merged(reg, "categorical", n_states=n_states, n_samples=m, zipf=1.0, n_test=1)
    bundle = reg.models.get("categorical")
    trainer, generator = reg.trainers.get(bundle.trainer), reg.generators.get(bundle.generator)
    q = g.zipf_probs(n_states, 1.0)
    absorbed_at = np.empty(chains, dtype=np.int64)
    for c in range(chains):
        real = bundle.load_real(bench.RealRequest(params, c))
        rng = np.random.default_rng([c, 7])
        data, support = real.train, n_states + 1
        for n in range(100_000):
            probs = trainer.fit(bench.FitRequest(data, None, "pretrained", None, params, rng, n))["probs"]
            size = np.count_nonzero(probs)
            assert size <= support  # a lost state never comes back
            support = size
            if size == 1:
                break
            data = generator.generate(bench.GenerateRequest({"probs": probs}, m, real.train, params, rng, 0))
        assert size == 1, "chain not absorbed"
        assert probs.max() == 1.0
        absorbed_at[c] = int(np.argmax(probs))
    for i in range(n_states):
        check_mc(absorbed_at == i, q[i], f"P(absorbed at {i})")
    # the law is told apart from 'uniform over states' at this number of chains
    assert_detectable(q[0] - 1 / n_states, math.sqrt(q[0] * (1 - q[0]) / chains), "absorption vs uniform")


@pytest.mark.slow
def test_categorical_state_vanishes_with_probability_one_minus_p_to_the_m(reg):
    m, trials = 20, 20000
    probs = np.array([0.05, 0.1, 0.85])
    params = merged(reg, "categorical", n_states=3, n_samples=m)
    rng = np.random.default_rng(11)
    lost = np.empty((trials, 3), dtype=bool)
    for t in range(trials):
        data = g.sample_categorical(bench.GenerateRequest({"probs": probs}, m, None, params, rng, 0))
        refit = g.fit_categorical(bench.FitRequest(data, None, "pretrained", None, params, rng, 1))["probs"]
        lost[t] = refit == 0
    for i in (0, 1):
        check_mc(lost[:, i], (1 - probs[i]) ** m, f"P(state of p={probs[i]} vanishes)")
