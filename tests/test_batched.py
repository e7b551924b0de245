"""Tests of plugins/batched.py: batch invariance, agreement with scikit-learn, collapse statistics."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from bench.components import FitRequest, RealRequest, Samples
from bench.loop import GENERATE, TRAIN, rng
from collapse_bench_plugins import batched as bt
from collapse_bench_plugins import gaussian as ga
from collapse_bench_plugins import gmm


def _request(x, seed=0, generation=0, params=None, start="pretrained", init=None):
    p = {**gmm.PARAMS, **(params or {})}
    return FitRequest(Samples("vectors", np.asarray(x, dtype=np.float64)), None, start, init, p,
                      rng(seed, generation, TRAIN), generation)


def _same_state(a, b) -> bool:
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and np.array_equal(a[k], b[k]) for k in a
    )


def _blob_sets():
    """Five data sets: three of the paper's shape (one nearly collapsed, far from 0), two others."""
    g = np.random.default_rng(7)
    return [
        (g.standard_normal((1000, 2)), {}),
        (3.0 + 0.01 * g.standard_normal((1000, 2)), {}),  # a late, collapsed generation
        (gmm.sample_mixture(gmm.true_mixture("two-gaussians"), 1000, g), {}),
        (g.standard_normal((137, 3)) @ np.array([[1.0, 0.3, 0.0], [0.0, 0.5, 0.2], [0.0, 0.0, 2.0]]),
         {"n_components": 3}),
        (g.standard_normal((40, 2)), {"tol": 1e-3}),
    ]


# --------------------------------------------------------------------------------------------------
# Small-matrix algebra
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("d", [1, 2, 3, 5])
def test_chol_inverse_whitens_and_gives_the_log_determinant(d):
    g = np.random.default_rng(d)
    a = g.standard_normal((4, 3, d, d))
    cov = a @ a.transpose(0, 1, 3, 2) + 0.1 * np.eye(d)
    u, half_logdet, ok = bt.chol_inverse(cov)
    assert ok.all()
    assert np.allclose(np.triu(u, 1), 0.0)  # lower triangular
    # U S U^T = I and log det S = 2 sum log L_jj, against LAPACK.
    assert np.allclose(u @ cov @ u.transpose(0, 1, 3, 2), np.eye(d), atol=1e-10)
    assert np.allclose(2.0 * half_logdet, np.linalg.slogdet(cov)[1], rtol=0, atol=1e-10)


def test_chol_inverse_flags_matrices_that_are_not_positive_definite():
    cov = np.array([[[2.0, 0.0], [0.0, 1.0]], [[1.0, 2.0], [2.0, 1.0]], [[0.0, 0.0], [0.0, 1.0]]])
    _, _, ok = bt.chol_inverse(cov)
    assert ok.tolist() == [True, False, False]


# --------------------------------------------------------------------------------------------------
# Bit-for-bit invariance to the batch
# --------------------------------------------------------------------------------------------------


def test_gmm_state_is_identical_alone_and_in_any_batch():
    sets = _blob_sets()
    requests = [_request(x, seed=i, generation=3 + i, params=p) for i, (x, p) in enumerate(sets)]
    # A warm start from a state (the extension starts gen0/previous) in the same batch.
    warm_init = gmm.mixture([0.3, 0.7], [[-1.0, 0.0], [1.0, 0.5]], [np.eye(2), 0.5 * np.eye(2)])
    requests.append(_request(sets[0][0][:500], seed=9, start="previous", init=warm_init))
    alone = [bt.fit_gmm(_clone(r)) for r in requests]
    for state in alone:
        assert {k: v.dtype for k, v in state.items()} == {k: np.float64 for k in state}
    orders = [list(range(len(requests))), list(reversed(range(len(requests)))), [2, 0, 5, 1, 4, 3]]
    # Batches of other sizes too: the same data set twice, and a pair.
    orders += [[0, 2, 0], [1, 3]]
    for order in orders:
        states = bt.fit_gmm_batch([_clone(requests[i]) for i in order])
        for i, state in zip(order, states):
            assert _same_state(state, alone[i]), f"request {i} differs in batch order {order}"


def _clone(request: FitRequest) -> FitRequest:
    """The same request with a new generator in the same state (a fit consumes its rng)."""
    g = np.random.default_rng()
    g.bit_generator.state = request.rng.bit_generator.state
    return FitRequest(request.data, request.validation, request.start, request.init, request.params, g,
                      request.generation)


def test_collapse_chains_are_identical_in_lockstep_and_alone():
    """Four short chains of the smoke protocol, refitted together and one at a time, end equal."""
    params = {**gmm.PARAMS, "n_samples": 50}
    seeds = range(4)
    data = {s: gmm.load_real(RealRequest(params, s)).train.data for s in seeds}
    together = _chains(data, params, 25, batched=True)
    for s in seeds:
        lone = _chains({s: data[s]}, params, 25, batched=True)
        assert _same_state(lone[s][-1], together[s][-1])


def test_gaussian_batch_equals_the_gaussian_trainer_exactly():
    g = np.random.default_rng(3)
    cases = []
    for n, d, est in [(100, 1, "unbiased"), (100, 1, "mle"), (20, 2, "unbiased"), (20, 2, "unbiased"),
                      (7, 3, "mle"), (1000, 2, "unbiased")]:
        x = 5.0 + g.standard_normal((n, d)) * g.uniform(0.01, 3.0)
        cases.append(FitRequest(Samples("vectors", x), None, "pretrained", None,
                                {**ga.GAUSSIAN_PARAMS, "estimator": est}, g, 0))
    reference = [ga.fit_gaussian(r) for r in cases]
    for order in ([0, 1, 2, 3, 4, 5], [5, 3, 1, 0, 2, 4], [2], [4, 4, 0]):
        for i, state in zip(order, bt.fit_gaussian_batch([cases[i] for i in order])):
            assert _same_state(state, reference[i])
    assert _same_state(bt.fit_gaussian(cases[0]), reference[0])


# --------------------------------------------------------------------------------------------------
# Agreement with scikit-learn
# --------------------------------------------------------------------------------------------------


def test_em_reaches_scikit_learns_fit_on_separated_clusters():
    """Three well-separated clusters: both EMs converge to the same maximum of the likelihood.

    With tol = 1e-12 both stop within about tol / (1 - rate) of the fixed point in mean
    log-likelihood, and for separated clusters EM's rate is far below 1, so the fits may differ
    only by rounding and that remainder: 1e-9 in log-likelihood, 1e-6 in parameters (the
    parameters move by about sqrt(change) per step near a maximum).
    """
    from sklearn.mixture import GaussianMixture

    g = np.random.default_rng(11)
    truth = gmm.mixture([0.2, 0.3, 0.5], [[-6.0, 0.0], [0.0, 6.0], [6.0, -1.0]],
                        [np.eye(2), [[1.0, 0.6], [0.6, 1.0]], [[2.0, -0.3], [-0.3, 0.5]]])
    x = gmm.sample_mixture(truth, 900, g)
    params = {"n_components": 3, "tol": 1e-12}
    ours = bt.fit_gmm(_request(x, params=params))
    sk = GaussianMixture(3, covariance_type="full", tol=1e-12, max_iter=2000, random_state=0).fit(x)
    assert abs(gmm.mixture_logpdf(ours, x).mean() - sk.score(x)) < 1e-9
    order = [int(np.argmin(((sk.means_ - m) ** 2).sum(axis=1))) for m in ours["means"]]
    assert sorted(order) == [0, 1, 2]
    assert np.allclose(ours["means"], sk.means_[order], rtol=0, atol=1e-6)
    assert np.allclose(ours["covariances"], sk.covariances_[order], rtol=0, atol=1e-6)
    assert np.allclose(ours["weights"], sk.weights_[order], rtol=0, atol=1e-6)
    # And the fit is the truth within sampling error (900 points: means to within ~0.3).
    order_t = [int(np.argmin(((truth["means"] - m) ** 2).sum(axis=1))) for m in ours["means"]]
    assert np.allclose(ours["means"], truth["means"][order_t], atol=0.3)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_one_component_is_the_maximum_likelihood_gaussian(d):
    """K = 1: EM's fixed point is the sample mean and the ddof-0 covariance plus reg_covar I
    (computed here with np.cov); it is reached after one M-step, so the next iteration stops."""
    g = np.random.default_rng(d)
    x = 2.0 + g.standard_normal((300, d)) @ np.tril(g.uniform(0.2, 1.0, (d, d)))
    state = bt.fit_gmm(_request(x, params={"n_components": 1}))
    assert np.allclose(state["weights"], [1.0], rtol=0, atol=1e-14)
    assert np.allclose(state["means"][0], x.mean(axis=0), rtol=0, atol=1e-12)
    expected = np.cov(x, rowvar=False, ddof=0).reshape(d, d) + 1e-6 * np.eye(d)
    assert np.allclose(state["covariances"][0], expected, rtol=1e-12, atol=1e-14)


@pytest.mark.slow
def test_em_likelihood_matches_scikit_learn_on_the_paper_data():
    """One N(0, I) blob, 1000 points, the paper's settings: the two EMs stop at local maxima of a
    flat likelihood, so they differ per data set; over 24 data sets the mean paired difference of
    the final mean log-likelihood is within 4 standard errors of 0 (Welch/paired t bound)."""
    from sklearn.mixture import GaussianMixture

    diffs = []
    for s in range(24):
        x = gmm.load_real(RealRequest(gmm.PARAMS, s)).train.data
        ours = bt.fit_gmm(_request(x, seed=s))
        sk = GaussianMixture(2, covariance_type="full", tol=1e-5, max_iter=2000, random_state=s).fit(x)
        diffs.append(gmm.mixture_logpdf(ours, x).mean() - sk.score(x))
    diffs = np.array(diffs)
    se = diffs.std(ddof=1) / math.sqrt(diffs.size)
    assert abs(diffs.mean()) < 4 * se + 1e-12
    assert np.abs(diffs).max() < 5e-3  # both near the maximum: a fraction of a millinat per point


@pytest.mark.slow
def test_collapse_statistics_agree_with_the_notebook_loop():
    """Final collapse statistics of 24 chains of each loop agree within seed variation.

    Loop A is the released notebook's: GaussianMixture(2, 'full', tol=1e-5, max_iter=2000) fit,
    sample, refit, from scratch every generation. Loop B refits with the batched EM, all chains
    at once. The protocol is the smoke preset's (50 samples, 60 generations, one blob), where the
    std falls by about an order of magnitude. For the final log std of each component and the
    final log L2 to the generation-0 fit, the Welch statistic |mean_A - mean_B| / sqrt(s_A^2/n_A +
    s_B^2/n_B) must stay below 4 (a two-sided tail of about 3e-4 each under equal laws).
    """
    from sklearn.mixture import GaussianMixture

    params = {**gmm.PARAMS, "n_samples": 50}
    seeds = range(24)
    generations = 60
    data = {s: gmm.load_real(RealRequest(params, s)).train.data for s in seeds}

    def notebook(x, seed):
        states = []
        for k in range(generations + 1):
            model = GaussianMixture(2, covariance_type="full", tol=1e-5, max_iter=2000,
                                    random_state=seed * 100_003 + k)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.fit(x)
            states.append(gmm.mixture(model.weights_, model.means_, model.covariances_))
            x = model.sample(len(x))[0]
        return states

    a = [notebook(data[s], s) for s in seeds]
    b_chains = _chains(data, params, generations, batched=True)
    b = [b_chains[s] for s in seeds]

    def stats(chains):
        std = np.log([gmm.component_stds(c[-1]) for c in chains])  # (seeds, 2)
        l2 = np.log([gmm.l2_squared(c[-1], c[0]) for c in chains])
        return np.column_stack([std, l2])

    sa, sb = stats(a), stats(b)
    # Collapse happened in both loops: the widest component's std fell well below the start.
    assert np.median(sa[:, 0]) < math.log(0.5) and np.median(sb[:, 0]) < math.log(0.5)
    welch = np.abs(sa.mean(0) - sb.mean(0)) / np.sqrt(sa.var(0, ddof=1) / len(sa) + sb.var(0, ddof=1) / len(sb))
    assert np.all(welch < 4), f"Welch statistics {welch} (log std 0, log std 1, log L2)"


def _chains(data, params, generations, batched):
    """Lockstep chains driven directly (no harness), with the harness's random streams."""
    xs = dict(data)
    states = {s: [] for s in xs}
    for k in range(generations + 1):
        seeds = sorted(xs)
        requests = [_request(xs[s], seed=s, generation=k, params=params) for s in seeds]
        fitted = bt.fit_gmm_batch(requests) if batched else [bt.fit_gmm(r) for r in requests]
        for s, state in zip(seeds, fitted):
            states[s].append(state)
            xs[s] = gmm.sample_mixture(state, params["n_samples"], rng(s, k, GENERATE))
    return states


# --------------------------------------------------------------------------------------------------
# Errors and registration
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "x, params, match",
    [
        (np.zeros(10), {}, r"shape \(n, d\)"),
        (np.zeros((1, 2)), {}, "cannot fit 2 components"),
        (np.full((10, 2), np.nan), {}, "NaN"),
        (np.ones((10, 2)), {"max_iter": 0}, "max_iter must be an integer >= 1"),
        (np.ones((10, 2)), {"tol": -1.0}, "tol must be a finite number >= 0"),
        (np.ones((10, 2)), {"reg_covar": 0.0}, "request 0.*not positive definite"),
    ],
)
def test_user_mistakes_give_clear_errors(x, params, match):
    with pytest.raises(ValueError, match=match):
        bt.fit_gmm_batch([_request(x, params=params)])


def test_identical_points_fit_like_scikit_learn():
    """All points equal: k-means finds one distinct cluster, the empty one keeps mass ~1e-16 at
    the centred origin, and reg_covar keeps both covariances positive definite: sklearn's result."""
    from sklearn.mixture import GaussianMixture

    x = np.ones((30, 2))
    state = bt.fit_gmm(_request(x))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = GaussianMixture(2, covariance_type="full", tol=1e-5, max_iter=2000, random_state=0).fit(x)
    assert np.allclose(state["weights"], sk.weights_, rtol=0, atol=1e-15)
    assert np.array_equal(state["means"], sk.means_)
    assert np.allclose(state["covariances"], sk.covariances_, rtol=1e-12, atol=0)


def test_max_iter_reached_warns():
    from sklearn.exceptions import ConvergenceWarning

    x = np.random.default_rng(0).standard_normal((200, 2))
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        bt.fit_gmm(_request(x, params={"max_iter": 2, "tol": 0.0}))


def test_bundles_and_trainers_are_registered(bench_plugins):
    b = bench_plugins
    for name, base, trainer in [("gmm-batched", "gmm", "gmm-em-batched"),
                                ("gaussian-batched", "gaussian", "gaussian-fit-batched")]:
        mine, theirs = b.models.get(name), b.models.get(base)
        assert mine.trainer == trainer and theirs.trainer != trainer
        for field in ("kind", "load_real", "generator", "scorer", "metrics", "params", "presets",
                      "leaderboard_metrics", "default_preset"):
            assert getattr(mine, field) == getattr(theirs, field), field
        t = b.trainers.get(trainer)
        assert t.fit_batch is not None and t.kinds == ("vectors",)
    assert b.trainers.get("gmm-em-batched").params == gmm._EM_DEFAULTS


def test_the_harness_runs_a_lockstep_group_like_lone_runs(tmp_path, bench_plugins):
    """Two seeds of gmm-batched through bench.loop.run_group equal the same seeds run alone."""
    from bench import api

    group = api.run("gmm-batched", "smoke", seeds=[0, 1], generations=8, out=tmp_path / "g", bench=bench_plugins)
    lone = api.run("gmm-batched", "smoke", seeds=[1], generations=8, out=tmp_path / "l", bench=bench_plugins)
    assert group and lone
    mg, ml = api.metrics(tmp_path / "g"), api.metrics(tmp_path / "l")
    mg = mg[mg["seed"] == 1].sort_values(["generation", "metric"])["value"].to_numpy()
    ml = ml.sort_values(["generation", "metric"])["value"].to_numpy()
    assert mg.size == ml.size > 0 and np.array_equal(mg, ml, equal_nan=True)
