"""Mitigations that select synthetic data, the verifiers they score with, and decoding as an entry.

Registered through the same hooks a third party uses (docs/mitigations.md has each one's paper,
what the benchmark implements and where the two differ):

- ``filter:Q[,VERIFIER]`` (verification, after Feng et al. 2024): drop synthetic samples whose
  verifier score is below the Q-quantile of the real training set's scores, refilling from extra
  candidates so that the training set keeps its size n.
- ``best-of:K[,VERIFIER]`` (curation, after Ferbach et al. 2024): keep the best n of K n candidates
  by the verifier's score.
- verifiers: ``oracle`` (the true log-density, where the source knows it), ``m0`` (the frozen
  generation-0 model's log-likelihood), ``self`` (the log-likelihood under the model that drew the
  candidates); the image track adds ``classifier`` (plugins/image_metrics.py).
- decoding: ``temperature:T``, ``top-p:P``, ``top-k:K`` set the generator's parameters of those
  names, where the bundle's generator samples (Dohmatob et al. 2024, "A Tale of Tails").
"""

from __future__ import annotations

import math

import numpy as np

import bench
from bench.components import PolicyContext, Samples, VerifyContext

FEND = "Feng et al. 2024, Beyond Model Collapse: Scaling Up with Synthesized Data Requires Verification"
FERBACH = ("Ferbach et al. 2024, Self-Consuming Generative Models with Curated Data Provably Optimize "
           "Human Preferences")
DOHMATOB = "Dohmatob et al. 2024, A Tale of Tails: Model Collapse as a Change of Scaling Laws"
ALEMOHAMMAD = "Alemohammad et al. 2023, Self-Consuming Generative Models Go MAD"
FILTER_MAX_DRAWS = 10


# -- verifiers --------------------------------------------------------------------------------------


def oracle(ctx: VerifyContext, samples: Samples) -> np.ndarray:
    if ctx.real.true_loglik is None:
        raise bench.BenchError("verifier 'oracle' needs the true density of the data source, and this run's "
                               "source has none; use verifier m0 (the generation-0 model) instead")
    return np.asarray(ctx.real.true_loglik(samples), dtype=np.float64)


def reference(ctx: VerifyContext, samples: Samples) -> np.ndarray:
    if ctx.latest is not None and samples is ctx.latest.samples:  # scored by the harness already
        return np.asarray(ctx.latest.reference.loglik, dtype=np.float64)
    return np.asarray(ctx.score(ctx.reference_state, samples).loglik, dtype=np.float64)


def own(ctx: VerifyContext, samples: Samples) -> np.ndarray:
    if ctx.latest is not None and samples is ctx.latest.samples:
        return np.asarray(ctx.latest.model.loglik, dtype=np.float64)
    return np.asarray(ctx.score(ctx.state, samples).loglik, dtype=np.float64)


# -- selecting policies -------------------------------------------------------------------------------


def _check_verifier(params) -> list[str]:
    v = params.get("verifier")
    if not isinstance(v, str) or not v:
        raise bench.BenchError(f"verifier must be a verifier's name (oracle, m0, self, ...), got {v!r}")
    return []


def _check_best_of(params) -> list[str]:
    k = params.get("k")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise bench.BenchError(f"K must be a positive integer (candidates per kept sample), got {k!r} "
                               "(for example --policy best-of:4)")
    return _check_verifier(params)


def _check_filter(params) -> list[str]:
    q = params.get("q")
    if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0.0 <= float(q) < 1.0:
        raise bench.BenchError(f"Q must be a quantile in [0, 1), got {q!r} (for example --policy filter:0.5)")
    return _check_verifier(params)


def best_of_candidates(params, n: int) -> int:
    return int(params["k"]) * n


def filter_draws(q: float) -> int:
    """Candidates per training sample that ``filter:Q`` draws: twice what a sample that passes
    with probability 1 - Q needs on average, at most FILTER_MAX_DRAWS."""
    return min(FILTER_MAX_DRAWS, max(1, math.ceil(2.0 / (1.0 - float(q)))))


def filter_candidates(params, n: int) -> int:
    return filter_draws(params["q"]) * n


def best_of(ctx: PolicyContext) -> Samples:
    """The n candidates with the highest verifier scores (ties: the earlier drawn), in draw order."""
    n = len(ctx.real.train)
    pool = ctx.candidates
    scores = ctx.verify(pool)
    keep = np.sort(np.argsort(-scores, kind="stable")[:n])
    ctx.record.update(synthetic_kept=int(len(keep)), verifier_mean_kept=float(np.mean(scores[keep])),
                      verifier_mean_drawn=float(np.mean(scores)))
    return pool.take(keep)


def filter_(ctx: PolicyContext) -> Samples:
    """Candidates whose verifier score reaches the Q-quantile of the real training set's scores,
    the first n in draw order; when fewer pass, the best of the rest fill the set up to n."""
    n = len(ctx.real.train)
    q = float(ctx.params["q"])
    threshold = float(np.quantile(ctx.verify(ctx.real.train), q))
    pool = ctx.candidates
    scores = ctx.verify(pool)
    passing = np.flatnonzero(scores >= threshold)
    keep = passing[:n]
    short = n - len(keep)
    if short:
        failing = np.flatnonzero(scores < threshold)
        keep = np.concatenate([keep, failing[np.argsort(-scores[failing], kind="stable")[:short]]])
    keep = np.sort(keep)
    ctx.record.update(synthetic_kept=int(len(keep)), passed=int(len(passing)), shortfall=int(short),
                      threshold=threshold)
    return pool.take(keep)


@bench.hookimpl
def bench_register_verifiers(register):
    register(bench.Verifier("oracle", oracle, needs=("exact-loglik",),
                            description="the true log-density of the data source (nats per sample)"))
    register(bench.Verifier("m0", reference, description="log-likelihood under the frozen generation-0 model"))
    register(bench.Verifier("self", own, description="log-likelihood under the model that drew the candidates"))


@bench.hookimpl
def bench_register_policies(register):
    register(bench.Policy(
        "filter", filter_, params={"q": 0.5, "verifier": "m0"}, positional=("q", "verifier"),
        check=_check_filter, candidates=filter_candidates, citation=FEND,
        description="drop synthetic samples scoring below the Q-quantile of the real data's verifier "
                    "scores; refill from extra candidates to keep the size",
    ))
    register(bench.Policy(
        "best-of", best_of, params={"k": 2, "verifier": "m0"}, positional=("k", "verifier"),
        check=_check_best_of, candidates=best_of_candidates, citation=FERBACH,
        description="keep the best n of K*n candidates by the verifier's score",
    ))


def _sampled(name: str):
    def applies(bundle, params) -> str | None:
        if params.get("do_sample") is False:
            return (f"{bundle.name} decodes by beam search at this preset (do_sample false); {name} applies "
                    "to sampled generators, and the paper's beam search stays as it is")
        return None
    return applies


@bench.hookimpl
def bench_register_mitigations(register):
    register(bench.Mitigation(
        "temperature", kind="generator", param="temperature", neutral=1.0,
        kinds=("tokens", "categorical", "vectors"), applies=_sampled("temperature"), example="temperature:0.7",
        citation=f"{ALEMOHAMMAD} (sampling bias); {DOHMATOB}",
        description="sample at temperature T (T < 1 sharpens: the sampling bias lambda of Alemohammad et al.)",
    ))
    register(bench.Mitigation(
        "top-p", kind="generator", param="top_p", neutral=1.0, kinds=("tokens", "categorical"),
        applies=_sampled("top-p"), example="top-p:0.9", citation=DOHMATOB,
        description="nucleus sampling: draw from the smallest set of outcomes holding mass P (cuts the tail)",
    ))
    register(bench.Mitigation(
        "top-k", kind="generator", param="top_k", neutral=0, kinds=("tokens", "categorical"),
        applies=_sampled("top-k"), example="top-k:5", citation=DOHMATOB,
        description="draw from the K most probable outcomes only (cuts the tail)",
    ))
