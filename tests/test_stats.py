"""bench.stats: the formulas several metrics share, against independent computations."""

import math

import numpy as np
import pytest
import scipy.linalg

from bench import stats
from collapse_bench_plugins import gaussian as g
from collapse_bench_plugins import image_metrics as I
from collapse_bench_plugins import text_metrics as T


def random_spd(rng, d, rank=None):
    a = rng.normal(size=(d, rank or d))
    return a @ a.T / d


def sqrtm_frechet(m1, s1, m2, s2):
    """The textbook route: scipy's general matrix square roots, tr(s1 + s2 - 2 (s1^1/2 s2 s1^1/2)^1/2)."""
    r1 = scipy.linalg.sqrtm(s1).real
    cross = np.trace(scipy.linalg.sqrtm(r1 @ s2 @ r1)).real
    return float(np.sum((m1 - m2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * cross)


@pytest.mark.parametrize("d", [1, 2, 5, 12])
def test_frechet_gaussians_matches_scipy_sqrtm_on_random_spd(d):
    rng = np.random.default_rng(100 + d)
    for _ in range(4):
        m1, m2 = rng.normal(size=d), rng.normal(size=d)
        s1, s2 = random_spd(rng, d) + 0.05 * np.eye(d), random_spd(rng, d) + 0.05 * np.eye(d)
        got = stats.frechet_gaussians(m1, s1, m2, s2)
        assert got == pytest.approx(sqrtm_frechet(m1, s1, m2, s2), rel=1e-9)
        assert got == pytest.approx(stats.frechet_gaussians(m2, s2, m1, s1), rel=1e-9)  # symmetric
        # and the usual FID form, tr sqrtm(s1 s2) of the non-symmetric product
        fid = np.sum((m1 - m2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2)).real
        assert got == pytest.approx(fid, rel=1e-8)


def test_frechet_gaussians_closed_form_for_commuting_covariances():
    # diagonal (commuting) covariances, zero variances included: sum (m1 - m2)^2 + sum (sqrt a - sqrt b)^2
    a, b = np.array([1.0, 4.0, 0.0, 9.0, 2.5]), np.array([0.25, 4.0, 1.0, 0.0, 0.1])
    m1, m2 = np.array([0.0, 1.0, 2.0, 3.0, -1.0]), np.array([1.0, 1.0, 0.0, 3.0, 0.5])
    want = np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert stats.frechet_gaussians(m1, np.diag(a), m2, np.diag(b)) == pytest.approx(want, rel=1e-12)
    # commuting but not diagonal: positive variances in a rotated basis (near-zero eigenvalues would
    # turn rounding noise e into sqrt(e) and loosen any tolerance)
    a, b = a + 0.5, b + 0.5
    want = np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(5, 5)))
    rotated = stats.frechet_gaussians(q @ m1, q @ np.diag(a) @ q.T, q @ m2, q @ np.diag(b) @ q.T)
    assert rotated == pytest.approx(want, rel=1e-12)
    # one dimension with scalars; identical Gaussians; a point mass against N(0, I_2)
    assert stats.frechet_gaussians(1.0, 4.0, -0.5, 0.25) == pytest.approx(1.5**2 + 1.5**2)
    assert stats.frechet_gaussians(np.ones(3), np.eye(3), np.ones(3), np.eye(3)) == pytest.approx(0.0, abs=1e-12)
    assert stats.frechet_gaussians(np.zeros(2), np.zeros((2, 2)), np.zeros(2), np.eye(2)) == pytest.approx(2.0)


def test_frechet_gaussians_rank_deficient_stays_real_and_non_negative():
    rng = np.random.default_rng(3)
    s1, s2 = random_spd(rng, 10, rank=3), random_spd(rng, 10, rank=3)
    got = stats.frechet_gaussians(np.zeros(10), s1, np.zeros(10), s2)
    assert isinstance(got, float) and got > 0
    assert got == pytest.approx(sqrtm_frechet(np.zeros(10), s1, np.zeros(10), s2), rel=1e-6)
    assert stats.frechet_gaussians(np.zeros(10), s1, np.zeros(10), s1) == pytest.approx(0.0, abs=1e-9)


def test_frechet_gaussians_refuses_unequal_dimensions():
    with pytest.raises(ValueError, match="unequal dimensions"):
        stats.frechet_gaussians(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def _w2sq_before(m1, s1, m2, s2):
    """gaussian.w2sq_gaussians as it was before it called bench.stats."""
    def psd_sqrt(matrix):
        w, v = np.linalg.eigh(0.5 * (matrix + matrix.T))
        return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T

    m1, m2 = np.atleast_1d(np.asarray(m1, float)), np.atleast_1d(np.asarray(m2, float))
    s1, s2 = np.atleast_2d(np.asarray(s1, float)), np.atleast_2d(np.asarray(s2, float))
    root2 = psd_sqrt(s2)
    inner = root2 @ s1 @ root2
    cross = float(np.sqrt(np.clip(np.linalg.eigvalsh(0.5 * (inner + inner.T)), 0.0, None)).sum())
    return max(float(np.sum((m1 - m2) ** 2)) + float(np.trace(s1) + np.trace(s2)) - 2.0 * cross, 0.0)


def _frechet_before(mu1, s1, mu2, s2):
    """image_metrics.frechet_distance as it was: the same square root, the terms summed left to right."""
    w, v = np.linalg.eigh((s1 + s1.T) / 2)
    r1 = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    m = r1 @ s2 @ r1
    tr_cross = float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0.0, None)).sum())
    return max(float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2.0 * tr_cross), 0.0)


def test_callers_keep_their_results():
    """gaussian-w2sq is bit-identical to its former code; frechet-distance, which summed the same
    terms in another order, differs from its former code by rounding of the final sum at most."""
    rng = np.random.default_rng(11)
    differ = 0
    for trial in range(200):
        d = int(rng.integers(1, 9))
        s2 = random_spd(rng, d) + 0.1 * np.eye(d)
        s1 = random_spd(rng, d) if trial % 2 else s2 * rng.uniform(0.05, 1.0)
        m1, m2 = rng.normal(size=d), rng.normal(size=d)
        assert g.w2sq_gaussians(m1, s1, m2, s2) == _w2sq_before(m1, s1, m2, s2)
        new, old = I.frechet_distance(m1, s1, m2, s2), _frechet_before(m1, s1, m2, s2)
        terms = np.sum((m1 - m2) ** 2) + np.trace(s1) + np.trace(s2)
        assert abs(new - old) <= 4 * np.spacing(terms)
        differ += new != old
    assert differ < 100  # most values are unchanged to the last bit


def test_ratio():
    assert stats.ratio(1.0, 2.0) == 0.5
    assert stats.ratio(3.0, 0.0) == math.inf
    assert math.isnan(stats.ratio(0.0, 0.0))
    assert math.isnan(stats.ratio(math.nan, 1.0)) and math.isnan(stats.ratio(1.0, math.nan))
    assert I.ratio is stats.ratio and T.ratio is stats.ratio


def test_fixed_subset_is_fixed_and_keeps_each_metrics_seed():
    a = stats.fixed_subset(1000, 100, seed=7)
    assert len(a) == 100 and len(set(a.tolist())) == 100 and np.all(np.diff(a) > 0)
    assert a.min() >= 0 and a.max() < 1000
    np.testing.assert_array_equal(a, stats.fixed_subset(1000, 100, seed=7))
    assert not np.array_equal(a, stats.fixed_subset(1000, 100, seed=8))
    np.testing.assert_array_equal(stats.fixed_subset(5, 100, seed=7), np.arange(5))
    np.testing.assert_array_equal(stats.fixed_subset(5, 5, seed=7), np.arange(5))
    # vendi-score and self-BLEU keep the rows they always scored (pinned before the move to bench.stats)
    assert I.fixed_subset(10, 3).tolist() == [2, 6, 7]
    assert T.fixed_subset(10, 3).tolist() == [2, 3, 5]
    assert T.fixed_subset(1000, 5).tolist() == [7, 65, 493, 639, 678]
