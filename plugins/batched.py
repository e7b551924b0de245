"""Batched trainers: many chains of the Gaussian and Gaussian-mixture tracks fitted at once.

Runs that differ only in seed can be driven in lockstep (``bench.loop.run_group``): every
generation, the fit requests of all chains go to one ``Trainer.fit_batch`` call. This module's
trainers do those fits together, vectorised over the chains with NumPy:

- ``gmm-em-batched``: EM for full-covariance Gaussian mixtures, scikit-learn's
  ``GaussianMixture`` algorithm (k-means++ seeded Lloyd k-means initialisation, ``n_init=1``; EM
  with ``reg_covar`` on the diagonal, stopping when the mean log-likelihood changes by less than
  ``tol`` or after ``max_iter`` iterations), written out with elementwise array operations;
- ``gaussian-fit-batched``: the ``gaussian`` bundle's sample mean and covariance.

Bundles ``gmm-batched`` and ``gaussian-batched`` are the ``gmm`` and ``gaussian`` bundles with
these trainers (everything else is taken from those modules), so their runs form their own
leaderboard tracks and are never ranked against the scikit-learn path.

Invariance: a request's state is bit-for-bit the same whether it is fitted alone or in a batch of
any size, composition and order. Every operation is either elementwise or a reduction along the
samples axis of one chain (NumPy sums each row of a C-ordered array on its own), the d x d
algebra is written out by formula, and requests are grouped by shape, never padded. See
docs/batched.md.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, Sequence

import numpy as np

import bench
from bench.components import FitRequest, State
from collapse_bench_plugins import gaussian as _gaussian
from collapse_bench_plugins import gmm as _gmm

__version__ = "1"

_TEN_EPS = 10.0 * np.finfo(np.float64).eps  # scikit-learn adds it to every component's mass
_LOG_2PI = math.log(2.0 * math.pi)
_KMEANS_MAX_ITER = 300  # scikit-learn KMeans defaults
_KMEANS_TOL = 1e-4

_ILL_DEFINED = (
    "the fitted covariance of a component is not positive definite (for instance a component "
    "holds a single point or collapsed samples); increase reg_covar or decrease n_components"
)


# --------------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------------


def _int_param(params, key: str, default: int, minimum: int) -> int:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"gmm-em-batched: {key} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _float_param(params, key: str, default: float) -> float:
    value = params.get(key, default)
    try:
        out = float(value)
    except (TypeError, ValueError):
        out = float("nan")
    if isinstance(value, bool) or not math.isfinite(out) or out < 0:
        raise ValueError(f"gmm-em-batched: {key} must be a finite number >= 0, got {value!r}")
    return out


def _em_settings(params) -> tuple[int, float, int, float]:
    """Checked (n_components, tol, max_iter, reg_covar), defaults those of ``gmm``."""
    d = _gmm._EM_DEFAULTS
    return (
        _int_param(params, "n_components", d["n_components"], 1),
        _float_param(params, "tol", d["tol"]),
        _int_param(params, "max_iter", d["max_iter"], 1),
        _float_param(params, "reg_covar", d["reg_covar"]),
    )


def _gmm_data(request: FitRequest, k: int, where: str) -> np.ndarray:
    x = np.asarray(request.data.data, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"gmm-em-batched{where}: expects vectors of shape (n, d), got {x.shape}")
    if x.shape[0] < max(k, 2):
        raise ValueError(
            f"gmm-em-batched{where}: {x.shape[0]} samples cannot fit {k} components "
            f"(need at least max(n_components, 2))"
        )
    if not np.all(np.isfinite(x)):
        raise ValueError(f"gmm-em-batched{where}: the data hold NaN or infinite values")
    return x


def _warm_start(request: FitRequest, k: int, d: int, where: str):
    """(weights, means, covariances) of ``request.init`` for starts gen0/previous, else None."""
    if request.start not in ("gen0", "previous") or request.init is None:
        return None
    w, m, s = _gmm._parts(request.init)
    if w.shape[0] != k or m.shape[1] != d:
        raise ValueError(
            f"gmm-em-batched{where}: init has {w.shape[0]} components in {m.shape[1]} dimensions, "
            f"params and data ask for {k} in {d}"
        )
    return w / w.sum(), m, s


# --------------------------------------------------------------------------------------------------
# Small-matrix algebra by formula (batch-invariant: elementwise over the leading axes)
# --------------------------------------------------------------------------------------------------


def chol_inverse(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For covariances (..., d, d): (U, half_logdet, ok) with U = L^-1, L the lower Cholesky factor.

    U (x - m) has identity covariance, so ||U (x - m)||^2 is the Mahalanobis distance and
    half_logdet = sum_j log L_jj = log det(S) / 2. ``ok`` is False where S is not positive definite
    (U and half_logdet are then meaningless). Loops run over d, operations over the leading axes,
    so each matrix's result does not depend on what else is in the array.
    """
    d = cov.shape[-1]
    lead = cov.shape[:-2]
    low = np.zeros(cov.shape)
    ok = np.ones(lead, dtype=bool)
    for j in range(d):
        s = cov[..., j, j].copy()
        for k in range(j):
            s -= low[..., j, k] * low[..., j, k]
        good = s > 0  # False for NaN too
        ok &= good
        ljj = np.sqrt(np.where(good, s, 1.0))
        low[..., j, j] = ljj
        for i in range(j + 1, d):
            t = cov[..., i, j].copy()
            for k in range(j):
                t -= low[..., i, k] * low[..., j, k]
            low[..., i, j] = t / ljj
    inv = np.zeros(cov.shape)
    for i in range(d):
        inv[..., i, i] = 1.0 / low[..., i, i]
        for j in range(i - 1, -1, -1):
            t = low[..., i, j] * inv[..., j, j]
            for k in range(j + 1, i):
                t += low[..., i, k] * inv[..., k, j]
            inv[..., i, j] = -t / low[..., i, i]
    half_logdet = np.zeros(lead)
    for j in range(d):
        half_logdet += np.log(np.ascontiguousarray(low[..., j, j]))
    return inv, half_logdet, ok


# --------------------------------------------------------------------------------------------------
# Batched k-means (scikit-learn's KMeans: k-means++ seeding, Lloyd iterations, n_init=1)
# --------------------------------------------------------------------------------------------------


def _sq_dist(xs: Sequence[np.ndarray], centers: np.ndarray) -> np.ndarray:
    """Squared distances (B, C, n) from the points xs[i] (B, n) to centers (B, C, d)."""
    out = None
    for i, x in enumerate(xs):
        diff = x[:, None, :] - centers[:, :, i, None]
        diff *= diff
        if out is None:
            out = diff
        else:
            out += diff
    return out


def _onehot(labels: np.ndarray, k: int) -> np.ndarray:
    return (labels[:, None, :] == np.arange(k)[None, :, None]).astype(np.float64)


def kmeans_plusplus(xs: Sequence[np.ndarray], k: int, rngs: Sequence[np.random.Generator]) -> np.ndarray:
    """k-means++ seeding, greedy with 2 + int(log k) trials per centre (scikit-learn's), per chain.

    xs: d arrays (B, n); each chain draws from its own generator. Returns centres (B, k, d).
    """
    b, n = xs[0].shape
    d = len(xs)
    rows = np.arange(b)
    trials = 2 + int(np.log(k))
    centers = np.empty((b, k, d))
    first = np.array([int(r.integers(n)) for r in rngs], dtype=np.int64)
    for i in range(d):
        centers[:, 0, i] = xs[i][rows, first]
    closest = _sq_dist(xs, centers[:, :1])[:, 0]  # (B, n)
    pot = closest.sum(axis=-1)
    for c in range(1, k):
        draws = np.stack([r.random(trials) for r in rngs]) * pot[:, None]  # (B, trials)
        cum = np.cumsum(closest, axis=-1)
        cand = np.stack([np.searchsorted(cum[j], draws[j]) for j in range(b)])
        np.clip(cand, None, n - 1, out=cand)
        cand_centres = np.stack([x[rows[:, None], cand] for x in xs], axis=-1)  # (B, trials, d)
        dist = _sq_dist(xs, cand_centres)  # (B, trials, n)
        np.minimum(closest[:, None, :], dist, out=dist)
        cand_pot = dist.sum(axis=-1)
        best = np.argmin(cand_pot, axis=1)
        pot = cand_pot[rows, best]
        closest = dist[rows, best]
        centers[:, c, :] = cand_centres[rows, best]
    return centers


def _relocate_empty(xs, centers_old, labels, sums, counts, chain: int) -> None:
    """scikit-learn's rule for one chain: each empty cluster takes the point farthest from its centre."""
    d = len(xs)
    empty = np.flatnonzero(counts[chain] == 0)
    x = np.stack([xs[i][chain] for i in range(d)], axis=-1)  # (n, d)
    lab = labels[chain]
    far = ((x - centers_old[chain][lab]) ** 2).sum(axis=1)
    order = np.argsort(-far, kind="stable")[: empty.size]
    for new, idx in zip(empty, order):
        old = lab[idx]
        sums[chain, old] -= x[idx]
        counts[chain, old] -= 1.0
        sums[chain, new] = x[idx]
        counts[chain, new] = 1.0


def kmeans_labels(xs: Sequence[np.ndarray], k: int, rngs: Sequence[np.random.Generator]) -> np.ndarray:
    """Lloyd k-means labels (B, n) for the chains xs[i] (B, n), as ``KMeans(k, n_init=1)``.

    The data are centred first and the tolerance is 1e-4 times the mean per-feature variance, as
    in scikit-learn. A chain stops when its labels repeat (strict convergence) or when the squared
    centre shift falls to the tolerance (then labels are recomputed for the final centres), or
    after 300 iterations; stopped chains leave the arrays (no padding, no masking).
    """
    b, n = xs[0].shape
    d = len(xs)
    xs = [x - (x.sum(axis=-1) / n)[:, None] for x in xs]
    tol = np.zeros(b)
    for x in xs:
        dev = x - (x.sum(axis=-1) / n)[:, None]
        tol += (dev * dev).sum(axis=-1) / n
    tol *= _KMEANS_TOL / d
    centers = kmeans_plusplus(xs, k, rngs)

    out = np.empty((b, n), dtype=np.int64)
    active = np.arange(b)
    old_labels = np.full((b, n), -1, dtype=np.int64)
    for it in range(_KMEANS_MAX_ITER):
        labels = np.argmin(_sq_dist(xs, centers), axis=1)
        onehot = _onehot(labels, k)
        counts = onehot.sum(axis=-1)  # (B, k), exact small integers
        sums = np.stack([(onehot * x[:, None, :]).sum(axis=-1) for x in xs], axis=-1)  # (B, k, d)
        for chain in np.flatnonzero((counts == 0).any(axis=1)):
            _relocate_empty(xs, centers, labels, sums, counts, chain)
        new = sums / counts[:, :, None]
        shift = np.zeros(active.size)
        for c in range(k):
            for i in range(d):
                step = new[:, c, i] - centers[:, c, i]
                shift += step * step
        strict = (labels == old_labels).all(axis=1)
        loose = ~strict & ((shift <= tol) | (it == _KMEANS_MAX_ITER - 1))
        centers = new
        if loose.any():  # labels that match the final centres, as scikit-learn recomputes them
            sub = [x[loose] for x in xs]
            labels[loose] = np.argmin(_sq_dist(sub, centers[loose]), axis=1)
        done = strict | loose
        if done.any():
            out[active[done]] = labels[done]
            keep = ~done
            active, xs, centers, tol = active[keep], [x[keep] for x in xs], centers[keep], tol[keep]
            labels = labels[keep]
            if active.size == 0:
                break
        old_labels = labels
    return out


# --------------------------------------------------------------------------------------------------
# Batched EM
# --------------------------------------------------------------------------------------------------


def m_step(xs: Sequence[np.ndarray], resp: np.ndarray, reg_covar: float, init: bool = False):
    """Weights (B, K), means (B, K, d), covariances (B, K, d, d) from responsibilities (B, K, n).

    nk = sum_n r + 10 eps; m = sum_n r x / nk; S = sum_n r (x - m)(x - m)^T / nk + reg_covar I;
    weights nk / n at initialisation and nk / sum_k nk after an E-step, as scikit-learn.
    """
    work = _Workspace(xs, resp.shape[1])
    weights, means, cov = work.m_step(resp, reg_covar, init)
    return weights, means, cov


def e_step(xs: Sequence[np.ndarray], weights, means, prec_factor, half_logdet):
    """Responsibilities (B, K, n) and the mean log-likelihood (B,) of each chain's data.

    log p_k(x) = log w_k - d/2 log 2 pi - log det(S_k)/2 - ||U_k (x - m_k)||^2 / 2, normalised
    over k by log-sum-exp (the maximum over k subtracted first, as scipy's logsumexp).
    """
    work = _Workspace(xs, weights.shape[1])
    work.set_means(means)
    return work.e_step(weights, prec_factor, half_logdet)


class _Workspace:
    """Arrays of one EM over chains of one shape, reused from iteration to iteration.

    The M-step leaves the differences x - m_k of its new means in ``diffs``; the next E-step
    starts from them instead of subtracting again. Every value is computed by the same
    operations, in the same order, as written in ``m_step``/``e_step``'s docstrings, so the
    buffers change speed, not bits.
    """

    def __init__(self, xs: Sequence[np.ndarray], k: int) -> None:
        self.xs = list(xs)
        self.k = k
        b, n = xs[0].shape
        self.rows = [x[:, None, :] for x in self.xs]  # (B, 1, n) views
        shape = (b, k, n)
        self.diffs = [np.empty(shape) for _ in self.xs]
        self.scratch = np.empty(shape)
        self.product = np.empty(shape)
        self.logp = np.empty(shape)

    def keep(self, keep: np.ndarray) -> None:
        """Drop the chains where ``keep`` is False (their rows leave every array)."""
        self.xs = [x[keep] for x in self.xs]
        self.rows = [x[:, None, :] for x in self.xs]
        self.diffs = [dx[keep] for dx in self.diffs]
        shape = self.diffs[0].shape
        self.scratch = np.empty(shape)
        self.product = np.empty(shape)
        self.logp = np.empty(shape)

    def set_means(self, means: np.ndarray) -> None:
        for i, row in enumerate(self.rows):
            np.subtract(row, means[:, :, i, None], out=self.diffs[i])

    def m_step(self, resp: np.ndarray, reg_covar: float, init: bool = False):
        """``m_step`` on this workspace's data; leaves x - m_k in ``diffs``."""
        b, k, n = resp.shape
        d = len(self.xs)
        nk = resp.sum(axis=-1)
        nk += _TEN_EPS
        means = np.empty((b, k, d))
        scratch, product = self.scratch, self.product
        for i, row in enumerate(self.rows):
            np.multiply(resp, row, out=scratch)
            np.divide(scratch.sum(axis=-1), nk, out=means[:, :, i])
        self.set_means(means)
        cov = np.empty((b, k, d, d))
        for i in range(d):
            np.multiply(resp, self.diffs[i], out=product)
            for j in range(i, d):
                np.multiply(product, self.diffs[j], out=scratch)
                v = scratch.sum(axis=-1)
                v /= nk
                if i == j:
                    v += reg_covar
                cov[:, :, i, j] = v
                cov[:, :, j, i] = v
        if init:
            weights = nk / n
        else:
            total = nk[:, 0].copy()
            for c in range(1, k):
                total += nk[:, c]
            weights = nk / total[:, None]
        return weights, means, cov

    def e_step(self, weights, prec_factor, half_logdet):
        """``e_step`` for the means of the last ``m_step``/``set_means``: (resp, lower bound)."""
        d = len(self.xs)
        diffs, logp, z, product = self.diffs, self.logp, self.scratch, self.product
        for i in range(d):
            target = logp if i == 0 else z
            np.multiply(diffs[0], prec_factor[:, :, i, 0, None], out=target)
            for j in range(1, i + 1):
                np.multiply(diffs[j], prec_factor[:, :, i, j, None], out=product)
                target += product
            target *= target
            if i:
                logp += z
        logp *= -0.5
        with np.errstate(divide="ignore"):
            const = np.log(weights) - half_logdet - 0.5 * d * _LOG_2PI
        logp += const[:, :, None]
        if self.k == 2:
            lower = _normalise_two(logp)
            if lower is not None:
                return logp, lower
        return logp, _normalise(logp)


def _normalise_two(logp: np.ndarray):
    """``_normalise`` for K = 2 computing one exponential per point instead of two.

    With top = max(a, b) finite, exp(top - top) is exactly 1 and exp(min(a, b) - top) is
    exp(-|a - b|) (IEEE subtraction is exactly antisymmetric), so every value equals the general
    path's. Returns None, leaving ``logp`` untouched, where top is not finite for some point
    (the lower bound is then not finite either); the caller takes the general path.
    """
    a, b = logp[:, 0], logp[:, 1]
    top = np.maximum(a, b)
    gap = a - b
    small = np.abs(gap)
    np.negative(small, out=small)
    np.exp(small, out=small)
    total = small + 1.0
    lse = np.log(total)
    lse += top
    lower = lse.sum(axis=-1) / lse.shape[-1]
    if not np.isfinite(lower).all():
        return None
    first = gap >= 0  # a is the maximum (on ties both exponentials are 1)
    a[...] = np.where(first, 1.0, small)
    b[...] = np.where(first, small, 1.0)
    logp /= total[:, None, :]
    return lower


def _normalise(logp: np.ndarray) -> np.ndarray:
    """Responsibilities in place from log w_k p_k (B, K, n); returns the mean log-likelihood (B,)."""
    k = logp.shape[1]
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
    return lse.sum(axis=-1) / lse.shape[-1]


def _raise_ill_defined(ok: np.ndarray, who: Sequence[int], requests) -> None:
    bad = np.flatnonzero(~ok.all(axis=1))
    if bad.size:
        i = who[int(bad[0])]
        n, d = np.shape(requests[i].data.data)
        raise ValueError(
            f"gmm-em-batched: fitting failed for request {i} of the batch (generation "
            f"{requests[i].generation}, {n} samples in {d} dimensions): {_ILL_DEFINED}"
        )


def _fit_gmm_group(requests, members: Sequence[int], xs_list, settings) -> list[State]:
    """EM for chains of one shape and one setting; returns their states in ``members`` order."""
    k, tol, max_iter, reg_covar = settings
    d = xs_list[0].shape[1]
    b = len(members)
    xs = [np.stack([x[:, i] for x in xs_list]) for i in range(d)]  # d arrays (B, n), C-ordered
    weights = np.empty((b, k))
    means = np.empty((b, k, d))
    cov = np.empty((b, k, d, d))
    cold = []
    for j, i in enumerate(members):
        warm = _warm_start(requests[i], k, d, f" (request {i})")
        if warm is None:
            cold.append(j)
        else:
            weights[j], means[j], cov[j] = warm
    if cold:
        sub = [x[cold] for x in xs]
        labels = kmeans_labels(sub, k, [requests[members[j]].rng for j in cold])
        weights[cold], means[cold], cov[cold] = m_step(sub, _onehot(labels, k), reg_covar, init=True)
    prec, half_logdet, ok = chol_inverse(cov)
    _raise_ill_defined(ok, members, requests)

    results: list[State | None] = [None] * b
    unconverged = []
    active = np.arange(b)
    lower = np.full(b, -np.inf)
    work = _Workspace(xs, k)
    work.set_means(means)
    for it in range(1, max_iter + 1):
        resp, new_lower = work.e_step(weights, prec, half_logdet)
        weights, means, cov = work.m_step(resp, reg_covar)
        prec, half_logdet, ok = chol_inverse(cov)
        if not ok.all():
            _raise_ill_defined(ok, [members[j] for j in active], requests)
        change = new_lower - lower
        lower = new_lower
        converged = np.abs(change) < tol
        done = converged | (it == max_iter)
        if not done.any():
            continue
        for j in np.flatnonzero(done):
            chain = int(active[j])
            results[chain] = _gmm.mixture(weights[j].copy(), means[j].copy(), cov[j].copy())
            if not converged[j]:
                unconverged.append(members[chain])
        keep = ~done
        if not keep.any():
            break
        active = active[keep]
        work.keep(keep)
        weights, means, cov = weights[keep], means[keep], cov[keep]
        prec, half_logdet, lower = prec[keep], half_logdet[keep], lower[keep]
    if unconverged:
        from sklearn.exceptions import ConvergenceWarning

        warnings.warn(
            f"gmm-em-batched: EM did not converge within max_iter={max_iter} for request(s) "
            f"{sorted(unconverged)}; increase max_iter or tol",
            ConvergenceWarning,
            stacklevel=3,
        )
    return results


def fit_gmm_batch(requests: Sequence[FitRequest]) -> list[State]:
    """Fit a Gaussian mixture to each request's data by EM, all requests together.

    Requests are grouped by (n, d, n_components, tol, max_iter, reg_covar); each group runs as one
    set of arrays. Start ``pretrained`` fits from scratch (k-means initialisation drawn from the
    request's rng), ``gen0``/``previous`` with an init warm-start from it, as ``gmm-em``. Each
    state equals what the request gets alone (tests/test_batched.py checks it bit for bit).
    """
    requests = list(requests)
    groups: dict[tuple, list[int]] = {}
    data: list[np.ndarray] = []
    for i, request in enumerate(requests):
        settings = _em_settings(request.params)
        x = _gmm_data(request, settings[0], f" (request {i})" if len(requests) > 1 else "")
        data.append(x)
        groups.setdefault((x.shape, settings), []).append(i)
    out: list[State | None] = [None] * len(requests)
    for (_, settings), members in groups.items():
        states = _fit_gmm_group(requests, members, [data[i] for i in members], settings)
        for i, state in zip(members, states):
            out[i] = state
    return out


def fit_gmm(request: FitRequest) -> State:
    """One request through :func:`fit_gmm_batch` (the same arithmetic as in any batch)."""
    return fit_gmm_batch([request])[0]


# --------------------------------------------------------------------------------------------------
# Batched Gaussian fit
# --------------------------------------------------------------------------------------------------


def fit_gaussian_batch(requests: Sequence[FitRequest]) -> list[State]:
    """Sample mean and covariance (the estimator's ddof) of each request's data, stacked by shape.

    The same operations as ``gaussian.fit_gaussian`` on a (B, n, d) stack: ``mean`` along the
    samples axis and a stacked matmul, which NumPy computes matrix by matrix with the same BLAS
    call as the 2-D product, so each state equals the unbatched fit exactly.
    """
    requests = list(requests)
    groups: dict[tuple, list[int]] = {}
    data: list[np.ndarray] = []
    for i, request in enumerate(requests):
        ddof = _gaussian.ddof_of(request.params)
        x = np.asarray(request.data.data, dtype=np.float64)
        if x.ndim == 1:
            x = x.reshape(-1, 1)
        if x.ndim != 2:
            raise ValueError(f"gaussian-fit-batched: expects vectors of shape (n, d), got {x.shape}")
        if x.shape[0] <= ddof:
            raise ValueError(f"gaussian-fit-batched: the {request.params.get('estimator', 'unbiased')} "
                             f"covariance needs more than {ddof} samples; got {x.shape[0]}")
        data.append(x)
        groups.setdefault((x.shape, ddof), []).append(i)
    out: list[State | None] = [None] * len(requests)
    for ((n, _), ddof), members in groups.items():
        x = np.stack([data[i] for i in members])  # (B, n, d)
        mean = x.mean(axis=1)
        centred = x - mean[:, None, :]
        cov = centred.transpose(0, 2, 1) @ centred / (n - ddof)
        cov = 0.5 * (cov + cov.transpose(0, 2, 1))
        for j, i in enumerate(members):
            out[i] = {"mean": mean[j].copy(), "cov": cov[j].copy()}
    return out


def fit_gaussian(request: FitRequest) -> State:
    """One request through :func:`fit_gaussian_batch`."""
    return fit_gaussian_batch([request])[0]


# --------------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------------


def _bundle(module: Any, name: str) -> bench.ModelBundle:
    """The bundle ``name`` as ``module`` registers it (so nothing of it is copied here)."""
    found: list[bench.ModelBundle] = []
    module.bench_register_models(found.append)
    (bundle,) = [b for b in found if b.name == name]
    return bundle


def batched_bundle(module: Any, name: str, trainer: str) -> bench.ModelBundle:
    """A copy of bundle ``name`` of ``module`` named ``<name>-batched`` that uses ``trainer``."""
    base = _bundle(module, name)
    return dataclasses.replace(
        base,
        name=f"{name}-batched",
        trainer=trainer,
        description=f"{base.description}; all seeds' fits batched ({trainer}, its own track)",
    )


@bench.hookimpl
def bench_register_models(register) -> None:
    register(batched_bundle(_gmm, "gmm", "gmm-em-batched"))
    register(batched_bundle(_gaussian, "gaussian", "gaussian-fit-batched"))


@bench.hookimpl
def bench_register_trainers(register) -> None:
    register(bench.Trainer(name="gmm-em-batched", fit=fit_gmm, fit_batch=fit_gmm_batch,
                           params=dict(_gmm._EM_DEFAULTS), kinds=("vectors",), version=__version__))
    register(bench.Trainer(name="gaussian-fit-batched", fit=fit_gaussian, fit_batch=fit_gaussian_batch,
                           kinds=("vectors",), version=__version__))
