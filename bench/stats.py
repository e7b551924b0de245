"""Small statistical formulas that several metrics share (NumPy in, floats out).

Plugins import them from here rather than keeping copies: the Frechet (squared 2-Wasserstein)
distance between Gaussians behind ``gaussian-w2sq`` and ``frechet-distance``, the symmetric square
root it uses, the ratio of two non-negative statistics, and the fixed random subset that keeps
costly metrics on the same rows every generation. Nothing here imports the harness.
"""

from __future__ import annotations

import math

import numpy as np


def psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix, V diag(sqrt(max(w, 0))) V^T
    from its eigendecomposition: eigenvalues below 0 (rounding noise) are set to 0, so that singular
    covariances (a collapsed chain, a dead ReLU unit) still work."""
    m = np.asarray(matrix, dtype=np.float64)
    w, v = np.linalg.eigh(0.5 * (m + m.T))
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_gaussians(m1, s1, m2, s2) -> float:
    """Frechet distance, the squared 2-Wasserstein distance, between N(m1, s1) and N(m2, s2):

        ||m1 - m2||^2 + (tr s1 + tr s2) - 2 tr((s1^1/2 s2 s1^1/2)^1/2)

    from eigendecompositions of symmetric matrices only (real and >= 0 for singular covariances,
    unlike ``scipy.linalg.sqrtm`` of the non-symmetric s1 s2): s1^1/2 is :func:`psd_sqrt`, and the
    trace term is the sum of the square roots of the eigenvalues of the symmetric s1^1/2 s2 s1^1/2.
    The value is symmetric in the two Gaussians up to rounding; only s1 is square-rooted, so a
    caller chooses which covariance that is by the argument order. Rounding below 0 is returned
    as 0. Means are vectors (or scalars), covariances matrices (or scalars for one dimension).
    """
    m1 = np.atleast_1d(np.asarray(m1, dtype=np.float64))
    m2 = np.atleast_1d(np.asarray(m2, dtype=np.float64))
    s1 = np.atleast_2d(np.asarray(s1, dtype=np.float64))
    s2 = np.atleast_2d(np.asarray(s2, dtype=np.float64))
    d = m1.shape[0]
    if m1.shape != (d,) or m2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"means and covariances of unequal dimensions: {m1.shape}, {s1.shape}, "
                         f"{m2.shape}, {s2.shape}")
    root = psd_sqrt(s1)
    inner = root @ s2 @ root
    cross = float(np.sqrt(np.clip(np.linalg.eigvalsh(0.5 * (inner + inner.T)), 0.0, None)).sum())
    value = float(np.sum((m1 - m2) ** 2)) + float(np.trace(s1) + np.trace(s2)) - 2.0 * cross
    return max(value, 0.0)


def ratio(a: float, b: float) -> float:
    """a / b for non-negative statistics: NaN for 0/0 or a NaN side, inf for a positive a over 0."""
    if math.isnan(a) or math.isnan(b):
        return math.nan
    if b == 0.0:
        return math.nan if a == 0.0 else math.inf
    return a / b


def fixed_subset(n: int, size: int, seed: int) -> np.ndarray:
    """Sorted indices of a uniform random subset of ``size`` of range(n) (all of it when size >= n),
    drawn without replacement from a generator seeded by ``[seed, n, size]``: the same rows every
    generation and every run, and no draw from the run's random streams. Each metric passes its
    own constant ``seed``."""
    if size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng([seed, n, size]).choice(n, size=size, replace=False))
