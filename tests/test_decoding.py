"""Decoding options of the non-LM generators (temperature, top-k, top-p) as mitigation entries.

- At their neutral values the options leave every draw bit-identical to the generators as they
  were before the options existed (the old code is copied here as the reference).
- Sampling bias (Alemohammad et al. 2023; PROTOCOLS.md section 4): refitting a Gaussian, unbiased
  estimator, to its own samples drawn at temperature lambda gives E[tr Sigma_T] = lambda^T tr Sigma_0
  (maximum likelihood: (lambda (M-1)/M)^T tr Sigma_0). Checked by Monte Carlo through the plugin's
  own generate and fit.
- Truncation (Dohmatob et al. 2024): the categorical generator's top-k and top-p kept sets and its
  temperature-scaled distribution against hand-worked values, and its draws against them.

Tolerances: each Monte Carlo check allows K_SE = 4 standard errors, estimated from the same
replicates (for frequencies, the multinomial standard error sqrt(q (1 - q) / n)). One check fails by
chance with probability about 6e-5; the seeds are fixed, so the outcome is deterministic.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

import bench
from bench import results as R
from collapse_bench_plugins import gaussian as g
from collapse_bench_plugins import gmm
from tests.helpers import bench_cli

K_SE = 4.0


def fit_request(x: np.ndarray, params: dict) -> bench.FitRequest:
    kind = "categorical" if x.ndim == 1 else "vectors"
    return bench.FitRequest(data=bench.Samples(kind, x), validation=None, start="pretrained", init=None,
                            params=params, rng=np.random.default_rng(0), generation=1)


def within(estimate: float, expected: float, se: float, what: str) -> None:
    assert se > 0, f"{what}: zero standard error, the check could not fail"
    assert abs(estimate - expected) <= K_SE * se, (
        f"{what}: {estimate:.5g} vs {expected:.5g}, {abs(estimate - expected) / se:.1f} standard errors "
        f"(se {se:.3g})")


# --------------------------------------------------------------------------------------------------
# Neutral values leave the draws as they were
# --------------------------------------------------------------------------------------------------

# The generators before the options existed, verbatim (the reference for bit-identity).


def old_sample_gaussian(state, n, rng):
    mean = np.asarray(state["mean"], dtype=np.float64)
    root = g.psd_sqrt(np.asarray(state["cov"], dtype=np.float64))
    z = rng.standard_normal((int(n), mean.shape[0]))
    return mean + z @ root


def old_sample_categorical(state, n, rng):
    probs = np.asarray(state["probs"], dtype=np.float64)
    return rng.choice(probs.shape[0], size=int(n), p=probs).astype(np.int64)


def old_sample_gmm(state, n, rng):
    return gmm.sample_mixture(state, n, rng)


GAUSS_STATE = {"mean": np.array([0.5, -1.0]), "cov": np.array([[2.0, 0.6], [0.6, 1.0]])}
CAT_STATE = {"probs": np.array([0.1, 0.4, 0.2, 0.2, 0.1, 0.0])}
GMM_STATE = gmm.mixture([0.3, 0.7], [[-2.0, 0.0], [2.0, 1.0]], [np.eye(2), [[0.5, 0.25], [0.25, 0.5]]])

NEUTRAL = [
    (g.sample_gaussian, old_sample_gaussian, GAUSS_STATE, {"temperature": 1.0}),
    (g.sample_gaussian, old_sample_gaussian, GAUSS_STATE, {"temperature": 1}),
    (g.sample_categorical, old_sample_categorical, CAT_STATE, {"temperature": 1.0, "top_k": 0, "top_p": 1.0}),
    (g.sample_categorical, old_sample_categorical, CAT_STATE, {"top_k": 0}),
    (gmm.generate, old_sample_gmm, GMM_STATE, {"temperature": 1.0}),
]


@pytest.mark.parametrize("new, old, state, neutral", NEUTRAL,
                         ids=["gaussian-T1", "gaussian-T1-int", "categorical-all", "categorical-k0", "gmm-T1"])
def test_neutral_options_draw_exactly_what_the_generator_drew_before(new, old, state, neutral):
    for seed in range(3):
        expected = old(state, 257, np.random.default_rng(seed))
        without = new(bench.GenerateRequest(state, 257, None, {}, np.random.default_rng(seed), 0)).data
        with_neutral = new(bench.GenerateRequest(state, 257, None, neutral, np.random.default_rng(seed), 0)).data
        np.testing.assert_array_equal(without, expected)
        np.testing.assert_array_equal(with_neutral, expected)
        assert with_neutral.dtype == expected.dtype


def test_a_non_neutral_option_changes_the_draws():
    """The bit-identity above is not vacuous: the options reach the draws."""
    rng = np.random.default_rng
    a = g.sample_gaussian(bench.GenerateRequest(GAUSS_STATE, 50, None, {}, rng(0), 0)).data
    b = g.sample_gaussian(bench.GenerateRequest(GAUSS_STATE, 50, None, {"temperature": 0.5}, rng(0), 0)).data
    # The same normals, scaled about the mean by sqrt(T).
    np.testing.assert_allclose(b - GAUSS_STATE["mean"], math.sqrt(0.5) * (a - GAUSS_STATE["mean"]), rtol=1e-12)
    c = g.sample_categorical(bench.GenerateRequest(CAT_STATE, 500, None, {"top_k": 1}, rng(0), 0)).data
    assert set(np.unique(c)) == {1}
    hot = gmm.generate(bench.GenerateRequest(GMM_STATE, 50, None, {"temperature": 2.0}, rng(0), 0)).data
    assert not np.array_equal(hot, gmm.generate(bench.GenerateRequest(GMM_STATE, 50, None, {}, rng(0), 0)).data)


# --------------------------------------------------------------------------------------------------
# Gaussian: sampling bias lambda (Alemohammad et al.), E[tr Sigma_T] = lambda^T tr Sigma_0
# --------------------------------------------------------------------------------------------------

M_SAMPLES = 20
T_GENERATIONS = 5
REPLICATES = 1200


def trace_after(lam: float, estimator: str, replicates: int, seed: int) -> np.ndarray:
    """tr Sigma_T of `replicates` chains from GAUSS_STATE: T times, M draws at temperature lam,
    refitted with `estimator`, through the plugin's generate and fit."""
    rng = np.random.default_rng(seed)
    gen_params = {} if lam == 1.0 else {"temperature": lam}
    fit_params = {"estimator": estimator}
    out = np.empty(replicates)
    for r in range(replicates):
        state = GAUSS_STATE
        for _ in range(T_GENERATIONS):
            x = g.sample_gaussian(bench.GenerateRequest(state, M_SAMPLES, None, gen_params, rng, 0)).data
            state = g.fit_gaussian(fit_request(x, fit_params))
        out[r] = np.trace(state["cov"])
    return out


@pytest.mark.parametrize("lam, estimator, shrink", [
    (0.7, "unbiased", 1.0), (1.0, "unbiased", 1.0), (1.5, "unbiased", 1.0),
    # The maximum-likelihood refit shrinks by (M-1)/M a step; temperature M/(M-1) undoes it.
    (M_SAMPLES / (M_SAMPLES - 1), "mle", (M_SAMPLES - 1) / M_SAMPLES),
])
@pytest.mark.slow
def test_sampling_bias_scales_the_expected_trace_by_lambda_to_the_T(lam, estimator, shrink):
    traces = trace_after(lam, estimator, REPLICATES, seed=int(lam * 100))
    tr0 = np.trace(GAUSS_STATE["cov"])
    expected = (lam * shrink) ** T_GENERATIONS * tr0
    se = traces.std(ddof=1) / math.sqrt(len(traces))
    within(traces.mean(), expected, se, f"E[tr Sigma_{T_GENERATIONS}] at lambda={lam}, {estimator}")
    if lam != 1.0:
        # Detectable: the law with the temperature left out is far away.
        assert abs(expected - shrink**T_GENERATIONS * tr0) > 2 * K_SE * se


def test_gaussian_temperature_scales_the_sample_covariance():
    """One step: draws at temperature T have covariance T Sigma (entrywise, batch means)."""
    rng = np.random.default_rng(11)
    t = 2.5
    request = bench.GenerateRequest(GAUSS_STATE, 400, None, {"temperature": t}, rng, 0)
    covs = np.stack([np.cov(g.sample_gaussian(request).data.T) for _ in range(200)])
    est, se = covs.mean(axis=0), covs.std(axis=0, ddof=1) / math.sqrt(len(covs))
    for i, j in [(0, 0), (0, 1), (1, 1)]:
        within(est[i, j], t * GAUSS_STATE["cov"][i, j], se[i, j], f"Cov[{i},{j}] at T={t}")


# --------------------------------------------------------------------------------------------------
# GMM: every component's covariance scaled by T, weights and means unchanged
# --------------------------------------------------------------------------------------------------


def test_gmm_temperature_scales_each_component_and_keeps_the_weights():
    # Components 200 apart, so each draw's component is its side of x_0 = 0.
    means = np.array([[-100.0, 0.0], [100.0, 5.0]])
    covs = np.array([np.eye(2), [[0.5, 0.25], [0.25, 0.5]]])
    weights = np.array([0.3, 0.7])
    state = gmm.mixture(weights, means, covs)
    t, n, batches = 0.4, 2000, 100
    rng = np.random.default_rng(5)
    share, cov_left, cov_right = [], [], []
    for _ in range(batches):
        x = gmm.generate(bench.GenerateRequest(state, n, None, {"temperature": t}, rng, 0)).data
        left = x[:, 0] < 0
        share.append(left.mean())
        cov_left.append(np.cov(x[left].T))
        cov_right.append(np.cov(x[~left].T))
    share = np.asarray(share)
    # Weights: the share of component 0 has the binomial standard error over all draws.
    within(share.mean(), weights[0], math.sqrt(weights[0] * weights[1] / (n * batches)), "weight 0")
    for k, c in enumerate((np.stack(cov_left), np.stack(cov_right))):
        est, se = c.mean(axis=0), c.std(axis=0, ddof=1) / math.sqrt(batches)
        for i, j in [(0, 0), (0, 1), (1, 1)]:
            within(est[i, j], t * covs[k][i, j], se[i, j], f"component {k} Cov[{i},{j}] at T={t}")


# --------------------------------------------------------------------------------------------------
# Categorical: temperature, top-k, top-p
# --------------------------------------------------------------------------------------------------

P = CAT_STATE["probs"]  # [0.1, 0.4, 0.2, 0.2, 0.1, 0.0]; ranked: 1, 2, 3, 0, 4, 5


def test_temperature_by_hand():
    # T = 0.5: p^2 = [0.01, 0.16, 0.04, 0.04, 0.01, 0] / 0.26.
    np.testing.assert_allclose(g.decoded_probs(P, temperature=0.5),
                               np.array([0.01, 0.16, 0.04, 0.04, 0.01, 0.0]) / 0.26, rtol=1e-12)
    # T = 2: sqrt(p) / sum sqrt(p).
    root = np.sqrt(P)
    np.testing.assert_allclose(g.decoded_probs(P, temperature=2.0), root / root.sum(), rtol=1e-12)
    # Extreme temperatures: the top state alone, and uniform over the support (zero stays zero).
    np.testing.assert_array_equal(g.decoded_probs(P, temperature=1e-300), [0, 1, 0, 0, 0, 0])
    np.testing.assert_allclose(g.decoded_probs(P, temperature=1e300), [0.2, 0.2, 0.2, 0.2, 0.2, 0.0])


@pytest.mark.parametrize("k", range(0, 9))
def test_top_k_keeps_exactly_min_k_support_states(k):
    q = g.decoded_probs(P, top_k=k)
    support = int(np.count_nonzero(P))
    assert np.count_nonzero(q) == (support if k == 0 else min(k, support))
    assert math.isclose(q.sum(), 1.0, rel_tol=1e-12)
    kept = q > 0
    # The kept states are the most probable ones, renormalised in proportion.
    assert P[kept].min() >= P[~kept & (P > 0)].max(initial=0.0)
    np.testing.assert_allclose(q[kept], P[kept] / P[kept].sum(), rtol=1e-12)


def test_top_k_ties_go_to_the_lower_state_index():
    # States 2 and 3 tie at 0.2, states 0 and 4 at 0.1.
    np.testing.assert_allclose(g.decoded_probs(P, top_k=2), [0, 2 / 3, 1 / 3, 0, 0, 0], rtol=1e-12)
    np.testing.assert_allclose(g.decoded_probs(P, top_k=4), [1 / 9, 4 / 9, 2 / 9, 2 / 9, 0, 0], rtol=1e-12)


# Ranked masses 0.4, 0.6, 0.8, 0.9, 1.0 (states 1, 2, 3, 0, 4).
TOP_P_CASES = [
    (0.3, [0, 1, 0, 0, 0, 0]),
    (0.4, [0, 1, 0, 0, 0, 0]),  # reaching p counts: 0.4 >= 0.4
    (0.5, [0, 2 / 3, 1 / 3, 0, 0, 0]),
    (0.6, [0, 2 / 3, 1 / 3, 0, 0, 0]),
    (0.61, [0, 0.5, 0.25, 0.25, 0, 0]),
    (0.85, [1 / 9, 4 / 9, 2 / 9, 2 / 9, 0, 0]),  # the tie at 0.1: state 0 before state 4
    (0.95, [0.1, 0.4, 0.2, 0.2, 0.1, 0]),
]


@pytest.mark.parametrize("p, expected", TOP_P_CASES)
def test_top_p_keeps_the_smallest_prefix_reaching_p(p, expected):
    np.testing.assert_allclose(g.decoded_probs(P, top_p=p), expected, rtol=1e-12, atol=0)


def test_top_p_prefix_is_minimal_on_random_distributions():
    rng = np.random.default_rng(3)
    for _ in range(200):
        probs = rng.dirichlet(np.full(12, 0.5))
        p = rng.uniform(0.05, 0.99)
        kept = g.decoded_probs(probs, top_p=p) > 0
        mass = probs[kept].sum()
        assert mass >= p * (1 - 1e-12)
        assert mass - probs[kept].min() < p  # one state fewer would not reach p
        assert probs[kept].min() >= probs[~kept].max(initial=0.0)


def test_options_compose_in_order_temperature_top_k_top_p():
    # T = 0.5 -> [1, 16, 4, 4, 1, 0] / 26; top_k = 3 -> [0, 16, 4, 4, 0, 0] / 24;
    # top_p = 0.7: ranked masses 16/24 = 0.667, 20/24 = 0.833 -> states 1, 2 -> [0, 0.8, 0.2, 0, 0, 0].
    np.testing.assert_allclose(g.decoded_probs(P, temperature=0.5, top_k=3, top_p=0.7),
                               [0, 0.8, 0.2, 0, 0, 0], rtol=1e-12)


@pytest.mark.parametrize("params, expected", [
    ({"temperature": 0.5}, np.array([0.01, 0.16, 0.04, 0.04, 0.01, 0.0]) / 0.26),
    ({"top_k": 3}, np.array([0.0, 0.5, 0.25, 0.25, 0.0, 0.0])),
    ({"top_p": 0.85}, np.array([1, 4, 2, 2, 0, 0]) / 9),
], ids=["T0.5", "k3", "p0.85"])
def test_categorical_draws_follow_the_decoded_distribution(params, expected):
    n = 200_000
    x = g.sample_categorical(bench.GenerateRequest(CAT_STATE, n, None, params, np.random.default_rng(17), 0)).data
    freq = np.bincount(x, minlength=len(P)) / n
    for i, q in enumerate(expected):
        if q == 0:
            assert freq[i] == 0, f"state {i} has probability 0 and was drawn"
        else:
            within(freq[i], q, math.sqrt(q * (1 - q) / n), f"frequency of state {i} at {params}")


@pytest.mark.parametrize("params, message", [
    ({"temperature": 0.0}, "temperature must be a finite number > 0"),
    ({"temperature": -1.0}, "temperature must be a finite number > 0"),
    ({"temperature": float("nan")}, "temperature must be a finite number > 0"),
    ({"temperature": "hot"}, "temperature must be a finite number > 0"),
    ({"top_k": -1}, "top_k must be an integer >= 0"),
    ({"top_k": 2.5}, "top_k must be an integer >= 0"),
    ({"top_p": 0.0}, "top_p must be a number in (0, 1]"),
    ({"top_p": 1.5}, "top_p must be a number in (0, 1]"),
])
def test_out_of_range_options_are_clear_errors(params, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        g.sample_categorical(bench.GenerateRequest(CAT_STATE, 5, None, params, np.random.default_rng(0), 0))
    if "temperature" in params:
        with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
            g.sample_gaussian(bench.GenerateRequest(GAUSS_STATE, 5, None, params, np.random.default_rng(0), 0))
        with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
            gmm.generate(bench.GenerateRequest(GMM_STATE, 5, None, params, np.random.default_rng(0), 0))


# --------------------------------------------------------------------------------------------------
# Through the command line
# --------------------------------------------------------------------------------------------------


def test_registered_options_and_their_neutral_values(bench_plugins):
    gens = bench_plugins.generators
    assert dict(gens.get("gaussian-sample").options) == {"temperature": 1.0}
    assert dict(gens.get("categorical-sample").options) == {"temperature": 1.0, "top_k": 0, "top_p": 1.0}
    assert dict(gens.get("gmm-sample").options) == {"temperature": 1.0}
    # The batched bundles sample with the same generators, so they take the same options.
    assert bench_plugins.models.get("gaussian-batched").generator == "gaussian-sample"
    assert bench_plugins.models.get("gmm-batched").generator == "gmm-sample"


def dry_run(capsys, *args) -> dict:
    code, out, err = bench_cli(capsys, "run", *args, "--dry-run")
    assert code == 0, err
    return json.loads(out)


@pytest.mark.parametrize("plugin, option", [
    ("gmm", "temperature=1.0"), ("gmm", "temperature=1"), ("gmm-batched", "temperature=1.0"),
    ("gaussian", "temperature=1.0"), ("gaussian-batched", "temperature=1.0"), ("categorical", "top_k=0"),
    ("categorical", "top_p=1.0"),
])
def test_a_neutral_option_keeps_the_run_id(capsys, plugin, option):
    plain = dry_run(capsys, "--plugin", plugin)
    neutral = dry_run(capsys, "--plugin", plugin, "--set", option)
    assert neutral["run_id"] == plain["run_id"]
    assert neutral["spec"] == plain["spec"]


@pytest.mark.parametrize("plugin, option, key, value", [
    ("gmm", "temperature=0.5", "temperature", 0.5), ("gmm-batched", "temperature=0.5", "temperature", 0.5),
    ("gaussian-batched", "temperature=2", "temperature", 2.0), ("categorical", "top_k=3", "top_k", 3),
])
def test_a_set_option_enters_the_spec_and_the_run_id(capsys, plugin, option, key, value):
    plain = dry_run(capsys, "--plugin", plugin)
    set_ = dry_run(capsys, "--plugin", plugin, "--set", option)
    assert set_["spec"]["params"][key] == value
    assert type(set_["spec"]["params"][key]) is type(value)
    assert set_["run_id"] != plain["run_id"]


def test_categorical_smoke_run_with_top_k(tmp_path, capsys):
    out = tmp_path / "res"
    code, _, err = bench_cli(capsys, "run", "--plugin", "categorical", "--preset", "smoke", "--set", "top_k=3",
                             "--generations", "3", "--out", out)
    assert code == 0, err
    (folder,) = R.find_runs([out])
    spec = json.loads((folder / R.RUN_JSON).read_text())["spec"]
    assert spec["params"]["top_k"] == 3
    table = R.read_metrics(folder).to_pandas()
    support = table[table.metric == "categorical-support"].set_index("generation").value
    assert sorted(support.index) == [0, 1, 2, 3]
    # M_1.. are fitted to draws from at most 3 states; M_0 (real data, 20 draws of 10 Zipf states)
    # has more, so the option visibly reached the generator.
    assert support.loc[0] > 3
    assert (support.loc[[1, 2, 3]] <= 3).all()


def test_out_of_range_option_stops_before_the_run_starts(tmp_path, capsys):
    out = tmp_path / "res"
    code, _, err = bench_cli(capsys, "run", "--plugin", "gaussian", "--set", "temperature=-1", "--out", out)
    assert code != 0
    assert "temperature must be a finite number > 0" in err
    assert not out.exists() or not any(out.iterdir())
