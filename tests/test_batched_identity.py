"""The faster EM of plugins/batched.py (trainer version 1 kept) reproduces the first version bit for bit.

The reference below is the EM loop as first released (tests/test_batched.py checks it against
scikit-learn); the plugin now reuses buffers, keeps the M-step's differences x - m for the next
E-step and, for two components, computes one exponential per point. Those change speed only, so
every state must equal the reference's exactly, and the trainer's version stays "1".
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from bench.components import FitRequest, RealRequest, Samples
from bench.loop import TRAIN, rng
from collapse_bench_plugins import batched as bt
from collapse_bench_plugins import gmm

_TEN_EPS = 10.0 * np.finfo(np.float64).eps
_LOG_2PI = np.log(2.0 * np.pi)


def _ref_m_step(xs, resp, reg_covar, init=False):
    b, k, n = resp.shape
    d = len(xs)
    nk = resp.sum(axis=-1)
    nk += _TEN_EPS
    means = np.empty((b, k, d))
    for i, x in enumerate(xs):
        means[:, :, i] = (resp * x[:, None, :]).sum(axis=-1) / nk
    diffs = [x[:, None, :] - means[:, :, i, None] for i, x in enumerate(xs)]
    cov = np.empty((b, k, d, d))
    for i in range(d):
        rd = resp * diffs[i]
        for j in range(i, d):
            v = (rd * diffs[j]).sum(axis=-1) / nk
            if i == j:
                v += reg_covar
            cov[:, :, i, j] = v
            cov[:, :, j, i] = v
    if init:
        return nk / n, means, cov
    total = nk[:, 0].copy()
    for c in range(1, k):
        total += nk[:, c]
    return nk / total[:, None], means, cov


def _ref_e_step(xs, weights, means, prec, half_logdet):
    k, d = weights.shape[1], len(xs)
    diffs = [x[:, None, :] - means[:, :, i, None] for i, x in enumerate(xs)]
    logp = None
    for i in range(d):
        z = diffs[0] * prec[:, :, i, 0, None]
        for j in range(1, i + 1):
            z += diffs[j] * prec[:, :, i, j, None]
        z *= z
        logp = z if logp is None else logp + z
    logp *= -0.5
    with np.errstate(divide="ignore"):
        const = np.log(weights) - half_logdet - 0.5 * d * _LOG_2PI
    logp += const[:, :, None]
    top = logp[:, 0].copy()
    for c in range(1, k):
        np.maximum(top, logp[:, c], out=top)
    top[~np.isfinite(top)] = 0.0
    logp -= top[:, None, :]
    np.exp(logp, out=logp)
    total = logp[:, 0].copy()
    for c in range(1, k):
        total += logp[:, c]
    lse = np.log(total)
    lse += top
    logp /= total[:, None, :]
    return logp, lse.sum(axis=-1) / lse.shape[-1]


def _reference_fit(x, params, generator):
    """Version 1's fit of one data set (k-means start): the state as a dict of arrays."""
    k, tol, max_iter, reg_covar = bt._em_settings(params)
    xs = [np.ascontiguousarray(x[None, :, i]) for i in range(x.shape[1])]
    labels = bt.kmeans_labels(xs, k, [generator])
    weights, means, cov = _ref_m_step(xs, bt._onehot(labels, k), reg_covar, init=True)
    prec, half_logdet, _ = bt.chol_inverse(cov)
    lower = -np.inf
    for _ in range(max_iter):
        resp, new_lower = _ref_e_step(xs, weights, means, prec, half_logdet)
        weights, means, cov = _ref_m_step(xs, resp, reg_covar)
        prec, half_logdet, _ = bt.chol_inverse(cov)
        change, lower = new_lower[0] - lower, new_lower[0]
        if abs(change) < tol:
            break
    return gmm.mixture(weights[0], means[0], cov[0])


def _data_sets():
    """Paper-shaped data from several points of a chain's life, and other shapes and settings."""
    g = np.random.default_rng(2026)
    collapsed = gmm.mixture([0.6, 0.4], [[1.3, -0.7], [1.35, -0.68]],
                            [np.diag([9e-4, 4e-4]), [[2e-4, 5e-5], [5e-5, 3e-4]]])
    sets = [(gmm.load_real(RealRequest(gmm.PARAMS, s)).train.data, {}) for s in range(12)]
    sets += [(gmm.sample_mixture(collapsed, 1000, g), {}) for _ in range(8)]
    sets += [(gmm.sample_mixture(gmm.true_mixture("two-gaussians"), 1000, g), {}) for _ in range(4)]
    sets += [(g.standard_normal((50, 2)) * 0.05 + 2.0, {}) for _ in range(8)]  # the smoke preset's size
    sets += [(g.standard_normal((300, 3)), {"n_components": 3}), (g.standard_normal((200, 1)), {}),
             (g.standard_normal((200, 2)), {"n_components": 1}), (np.ones((30, 2)), {}),
             (g.standard_normal((400, 2)), {"tol": 1e-9, "max_iter": 40})]
    return sets


def test_fits_equal_the_first_version_bit_for_bit():
    sets = _data_sets()
    requests = []
    for i, (x, p) in enumerate(sets):
        requests.append(FitRequest(Samples("vectors", x), None, "pretrained", None, {**gmm.PARAMS, **p},
                                   rng(i, 7, TRAIN), 7))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = bt.fit_gmm_batch(requests)
        for i, (x, p) in enumerate(sets):
            ref = _reference_fit(x, {**gmm.PARAMS, **p}, rng(i, 7, TRAIN))
            for key in ("weights", "means", "covariances"):
                assert np.array_equal(batch[i][key], ref[key]), f"data set {i}: {key} differs from version 1"


def _normalise_cases():
    g = np.random.default_rng(5)
    base = np.log(g.dirichlet([1.0, 1.0], size=(3, 400))).transpose(0, 2, 1) - g.uniform(0, 50, (3, 1, 400))
    cases = [base.copy()]
    far = base.copy()
    far[:, 1, ::3] -= 800.0  # exponentials that underflow to 0
    far[:, 0, 1::3] = far[:, 1, 1::3]  # ties
    cases.append(far)
    empty = base.copy()
    empty[1, 1] = -np.inf  # a component of weight 0
    cases.append(empty)
    return cases


@pytest.mark.parametrize("case", range(3))
def test_two_component_normalisation_equals_the_general_one(case):
    logp = _normalise_cases()[case]
    general, fast = logp.copy(), logp.copy()
    lower_general = bt._normalise(general)
    lower_fast = bt._normalise_two(fast)
    assert lower_fast is not None
    assert np.array_equal(lower_fast, lower_general) and np.array_equal(fast, general)


def test_two_component_normalisation_declines_points_without_a_finite_maximum():
    logp = _normalise_cases()[0]
    logp[2, :, 7] = -np.inf  # both components impossible at one point: scipy's convention applies
    before = logp.copy()
    with np.errstate(invalid="ignore"):
        assert bt._normalise_two(logp) is None
    assert np.array_equal(logp, before)  # left untouched for the general path
    with np.errstate(invalid="ignore", divide="ignore"):
        lower = bt._normalise(logp.copy())
    assert not np.isfinite(lower[2]) and np.isfinite(lower[:2]).all()
