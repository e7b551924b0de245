"""Text metrics for token samples (DESIGN.md, "Metrics"): diversity, rare types, exact-source bands.

Row k describes model M_k; ``ctx.samples`` is S_{k+1}, an (n, L) array of token ids. Each metric
compares S_{k+1} with real data, as a ratio for positive quantities and a difference for
logarithmic ones:

- ``distinct-n`` (rows ``distinct-n/1`` .. ``/4``), ``self-bleu``, ``type-token-ratio``: ratios,
  generated over real, on the first blocks of S_{k+1} and of the real training set;
- ``unigram-entropy``: difference (nats), generated minus real;
- ``rare-type-mass``: share of generated tokens of the real corpus's rare types, over the share in
  the real test set;
- ``true-head-mass``, ``true-tail-mass``, ``true-oos-mass``: the bands of
  :func:`collapse_bench_plugins.metrics.mass_bands` over single tokens, each scored by its exact
  log-probability given its prefix (``ctx.real.true_token_loglik``) instead of by M_0;
  ``true-nll-shift``: the per-token NLL under the exact source (``ctx.real.true_loglik``). NaN
  where the source has no exact likelihood.

The formulas are plain NumPy functions (``distinct_n``, ``type_token_ratio``, ``unigram_entropy``,
``sentence_bleu``, ``self_bleu``, ``rare_types``, ``type_share``, ``ratio``); docs/text-metrics.md
gives them with the choices made.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Mapping, Sequence

import numpy as np

import bench
from bench import stats
from bench.components import Metric, MetricContext
from bench.stats import ratio
from collapse_bench_plugins.metrics import DEFAULT_TAIL_ALPHA, mass_bands

TEXT_METRIC_PARAMS = {
    "text_metric_blocks": 1000,  # blocks of each side for distinct-n
    "self_bleu_samples": 100,  # blocks of each side for self-BLEU
}
DISTINCT_ORDERS = (1, 2, 3, 4)
BLEU_ORDER = 4
# Seeds the fixed subset of blocks that self-BLEU scores (the same rows every generation and run).
_SELF_BLEU_SEED = 0x626C6575  # "bleu"


# --------------------------------------------------------------------------------------------------
# Pure formulas (NumPy in, floats out)
# --------------------------------------------------------------------------------------------------


def _blocks(x) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"expected an (n, L) array of token ids, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"token ids must be integers, got dtype {x.dtype}")
    return x.astype(np.int64, copy=False)


def ngrams(blocks, n: int) -> np.ndarray:
    """Every n-gram inside every block, as rows of an (m, n) array (none spans two blocks)."""
    x = _blocks(blocks)
    if n < 1:
        raise ValueError(f"n-gram order must be >= 1, got {n}")
    if x.shape[1] < n:
        return np.empty((0, n), dtype=np.int64)
    return np.lib.stride_tricks.sliding_window_view(x, n, axis=1).reshape(-1, n)


def distinct_n(blocks, n: int) -> float:
    """Distinct n-grams over all blocks / total n-grams, n-grams taken inside each block:
    #unique / (n_blocks (L - n + 1)). NaN when there is no n-gram."""
    g = ngrams(blocks, n)
    if len(g) == 0:
        return math.nan
    return len(np.unique(g, axis=0)) / len(g)


def type_token_ratio(blocks) -> float:
    """Mean over blocks of (distinct tokens in the block) / (tokens in the block): repetition inside
    a sequence. (Pooled over blocks, types / tokens is ``distinct_n(blocks, 1)``.)"""
    x = _blocks(blocks)
    if x.size == 0:
        return math.nan
    s = np.sort(x, axis=1)
    types = 1 + (np.diff(s, axis=1) != 0).sum(axis=1)
    return float(np.mean(types / x.shape[1]))


def unigram_entropy(blocks) -> float:
    """Entropy in nats of the empirical token distribution of all blocks: -sum_t p_t log p_t."""
    x = _blocks(blocks)
    if x.size == 0:
        return math.nan
    _, counts = np.unique(x, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def rare_types(blocks, alpha: float = DEFAULT_TAIL_ALPHA) -> np.ndarray:
    """The rare types of a corpus: the sorted ids of every type whose count is at most c, with c the
    largest count for which those types together carry at most ``alpha`` of the tokens.

    Whole groups of equally frequent types go in or out together, so no tie is broken arbitrarily;
    the set carries at most alpha of the mass (empty when even the rarest group carries more).
    """
    if isinstance(alpha, bool) or not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"tail_alpha must lie in (0, 1), got {alpha!r}")
    x = _blocks(blocks).reshape(-1)
    if x.size == 0:
        raise ValueError("no real tokens to find rare types in")
    types, counts = np.unique(x, return_counts=True)
    levels, per_level = np.unique(counts, return_counts=True)
    mass_up_to = np.cumsum(levels * per_level)  # tokens of all types with count <= level
    fits = np.nonzero(mass_up_to <= alpha * x.size * (1 + 1e-12))[0]  # alpha N may round down
    if fits.size == 0:
        return np.empty(0, dtype=np.int64)
    return types[counts <= levels[fits[-1]]]


def type_share(blocks, types: np.ndarray) -> float:
    """The share of tokens whose id is in ``types``."""
    x = _blocks(blocks).reshape(-1)
    if x.size == 0:
        return math.nan
    return float(np.isin(x, types).mean())


def difference(a: float, b: float) -> float:
    """a - b, with NaN (not an error) when both are the same infinity."""
    if math.isinf(a) and a == b:
        return math.nan
    return a - b


def _counts(tokens: Sequence[int], order: int) -> Counter:
    t = tuple(int(v) for v in tokens)
    return Counter(t[i : i + n] for n in range(1, order + 1) for i in range(len(t) - n + 1))


def _closest_length(hyp_len: int, ref_lens: Sequence[int]) -> int:
    # sacrebleu's rule: the reference length closest to the hypothesis, the shorter on a tie
    return min(ref_lens, key=lambda r: (abs(hyp_len - r), r))


def bleu_from_stats(correct: Sequence[int], total: Sequence[int], hyp_len: int, ref_len: int) -> float:
    """Sentence BLEU in [0, 1] from matched and total n-gram counts (orders 1..N), sacrebleu's
    ``sentence_bleu`` defaults: brevity penalty exp(1 - r/h) when h < r; 'exp' smoothing (the k-th
    order with no match gets precision 1 / (2^k total)); effective order (orders without any
    hypothesis n-gram are left out); 0 when no n-gram matches at all."""
    bp = 1.0
    if hyp_len < ref_len:
        bp = math.exp(1 - ref_len / hyp_len) if hyp_len > 0 else 0.0
    if not any(correct):
        return 0.0
    log_p, order, smooth = 0.0, 0, 1.0
    for c, t in zip(correct, total):
        if t == 0:
            break
        order += 1
        if c == 0:
            smooth *= 2
            log_p += math.log(1.0 / (smooth * t))
        else:
            log_p += math.log(c / t)
    return bp * math.exp(log_p / order)


def sentence_bleu(hypothesis: Sequence[int], references: Sequence[Sequence[int]],
                  order: int = BLEU_ORDER) -> float:
    """BLEU of one token sequence against several references, in [0, 1]: clipped n-gram matches
    (a hypothesis n-gram counts at most as often as in the reference where it is most frequent)."""
    if not references:
        raise ValueError("BLEU needs at least one reference")
    hyp = _counts(hypothesis, order)
    ref: Counter = Counter()
    for r in references:
        for g, c in _counts(r, order).items():
            if c > ref[g]:
                ref[g] = c
    correct, total = [0] * order, [0] * order
    for g, c in hyp.items():
        total[len(g) - 1] += c
        correct[len(g) - 1] += min(c, ref.get(g, 0))
    ref_len = _closest_length(len(hypothesis), [len(r) for r in references])
    return bleu_from_stats(correct, total, len(hypothesis), ref_len)


def self_bleu(blocks, order: int = BLEU_ORDER) -> float:
    """Mean over blocks of the BLEU of each block against all the other blocks as references
    (:func:`sentence_bleu`), computed in one pass: for every n-gram the two largest per-block counts
    give the best count among the others. NaN for fewer than two blocks."""
    x = _blocks(blocks)
    n = len(x)
    if n < 2:
        return math.nan
    length = x.shape[1]
    counts = [_counts(row, order) for row in x.tolist()]
    best: dict[tuple, list] = {}  # n-gram -> [largest count, its block, second largest count]
    for i, cnt in enumerate(counts):
        for g, c in cnt.items():
            b = best.get(g)
            if b is None:
                best[g] = [c, i, 0]
            elif c > b[0]:
                best[g] = [c, i, b[0]]
            elif c > b[2]:
                b[2] = c
    scores = []
    for i, cnt in enumerate(counts):
        correct, total = [0] * order, [0] * order
        for g, c in cnt.items():
            top, holder, second = best[g]
            total[len(g) - 1] += c
            correct[len(g) - 1] += min(c, second if holder == i else top)
        scores.append(bleu_from_stats(correct, total, length, length))
    return float(np.mean(scores))


def fixed_subset(n: int, size: int, seed: int = _SELF_BLEU_SEED) -> np.ndarray:
    """:func:`bench.stats.fixed_subset`, seeded by default with self-BLEU's constant."""
    return stats.fixed_subset(n, size, seed)


# --------------------------------------------------------------------------------------------------
# Metric compute steps (MetricContext in)
# --------------------------------------------------------------------------------------------------


def _param(params: Mapping, key: str, default):
    value = params.get(key, default)
    return default if value is None else value


def _count_param(params: Mapping, key: str) -> int:
    value = _param(params, key, TEXT_METRIC_PARAMS[key])
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{key} must be a positive integer, got {value!r}")
    return int(value)


def paired_blocks(ctx: MetricContext) -> tuple[np.ndarray, np.ndarray]:
    """S_{k+1} and the real training set cut to equal size: the first min(n_gen, n_real) blocks of
    each, and to a common block length (the shorter) should the lengths differ."""

    def compute():
        gen, real = _blocks(ctx.samples.data), _blocks(ctx.real.train.data)
        n, length = min(len(gen), len(real)), min(gen.shape[1], real.shape[1])
        return gen[:n, :length], real[:n, :length]

    return ctx.cached("text:paired", compute)


def compute_distinct_n(ctx: MetricContext) -> dict[str, float]:
    gen, real = paired_blocks(ctx)
    m = _count_param(ctx.params, "text_metric_blocks")
    return {str(n): ratio(distinct_n(gen[:m], n), distinct_n(real[:m], n)) for n in DISTINCT_ORDERS}


def compute_self_bleu(ctx: MetricContext) -> float:
    gen, real = paired_blocks(ctx)
    idx = fixed_subset(len(gen), _count_param(ctx.params, "self_bleu_samples"))
    return ratio(self_bleu(gen[idx]), self_bleu(real[idx]))


def compute_type_token_ratio(ctx: MetricContext) -> float:
    gen, real = paired_blocks(ctx)
    return ratio(type_token_ratio(gen), type_token_ratio(real))


def compute_unigram_entropy(ctx: MetricContext) -> float:
    gen, real = paired_blocks(ctx)
    return difference(unigram_entropy(gen), unigram_entropy(real))


def _alpha(ctx: MetricContext) -> float:
    return float(_param(ctx.params, "tail_alpha", DEFAULT_TAIL_ALPHA))


def compute_rare_type_mass(ctx: MetricContext) -> float:
    alpha = _alpha(ctx)
    rare = ctx.cached(f"text:rare-types:{alpha!r}", lambda: rare_types(ctx.real.train.data, alpha))
    return ratio(type_share(ctx.samples.data, rare), type_share(ctx.real.test.data, rare))


def _true_scores(ctx: MetricContext):
    """Per-sample exact log-likelihoods and token counts of the real test set and of S_{k+1};
    None when the data source has no exact likelihood."""
    if ctx.real.true_loglik is None:
        return None

    def compute():
        out = []
        for samples in (ctx.real.test, ctx.samples):
            ll = np.asarray(ctx.real.true_loglik(samples), dtype=np.float64).reshape(-1)
            if ll.shape != (len(samples),):
                raise ValueError(f"true_loglik gave {ll.shape[0]} values for {len(samples)} samples")
            out.append((ll, np.full(len(samples), float(samples.data.shape[1]))))
        return tuple(out)

    return ctx.cached("text:true-scores", compute)


def _true_token_scores(ctx: MetricContext):
    """The exact log-probability of every token given its prefix, flattened, for the real test set
    and for S_{k+1}; None when the data source gives none (``RealData.true_token_loglik``)."""
    if ctx.real.true_token_loglik is None:
        return None

    def compute():
        out = []
        for samples in (ctx.real.test, ctx.samples):
            ll = np.asarray(ctx.real.true_token_loglik(samples), dtype=np.float64)
            if ll.shape != samples.data.shape:
                raise ValueError(f"true_token_loglik gave an array of shape {ll.shape} for token "
                                 f"samples of shape {samples.data.shape}; it must give one value per token")
            out.append(ll.reshape(-1))
        return tuple(out)

    return ctx.cached("text:true-token-scores", compute)


def _true_bands(ctx: MetricContext) -> dict[str, float] | None:
    """mass_bands over tokens: the real test tokens' exact log-probabilities set the thresholds, the
    tokens of S_{k+1} are classified."""
    scores = _true_token_scores(ctx)
    if scores is None:
        return None
    alpha = _alpha(ctx)
    real, generated = scores
    return ctx.cached(f"text:true-token-bands:{alpha!r}", lambda: mass_bands(real, generated, alpha))


def compute_true_head_mass(ctx: MetricContext) -> float:
    bands = _true_bands(ctx)
    return math.nan if bands is None else bands["head"]


def compute_true_tail_mass(ctx: MetricContext) -> float:
    bands = _true_bands(ctx)
    return math.nan if bands is None else bands["tail"]


def compute_true_oos_mass(ctx: MetricContext) -> float:
    bands = _true_bands(ctx)
    return math.nan if bands is None else bands["oos"]


def compute_true_nll_shift(ctx: MetricContext) -> float:
    scores = _true_scores(ctx)
    if scores is None:
        return math.nan
    (lr, ur), (lg, ug) = scores
    return difference(float(-lg.sum() / ug.sum()), float(-lr.sum() / ur.sum()))


# --------------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------------

_TOKENS = ("tokens",)
# 2: bands over tokens (the real test tokens set the thresholds); 1 was over 64-token blocks
_TRUE_BANDS_VERSION = "2"

METRICS = (
    Metric(
        name="distinct-n",
        compute=compute_distinct_n,
        direction="target",
        target=1.0,
        kinds=_TOKENS,
        description="distinct n-grams / n-grams (n = 1..4) in the first text_metric_blocks blocks, "
        "generated over real training blocks",
    ),
    Metric(
        name="self-bleu",
        compute=compute_self_bleu,
        direction="target",
        target=1.0,
        kinds=_TOKENS,
        description="mean BLEU-4 of each of self_bleu_samples fixed blocks against the others, "
        "generated over real",
    ),
    Metric(
        name="type-token-ratio",
        compute=compute_type_token_ratio,
        direction="target",
        target=1.0,
        kinds=_TOKENS,
        description="mean per-block distinct tokens / tokens, generated over real",
    ),
    Metric(
        name="unigram-entropy",
        compute=compute_unigram_entropy,
        direction="target",
        target=0.0,
        kinds=_TOKENS,
        description="entropy (nats) of the token distribution, generated minus real",
    ),
    Metric(
        name="rare-type-mass",
        compute=compute_rare_type_mass,
        direction="target",
        target=1.0,
        kinds=_TOKENS,
        description="share of generated tokens of the real training set's rare types (its least "
        "frequent tail_alpha of mass), over that share in the real test set",
    ),
    Metric(
        name="true-head-mass",
        compute=compute_true_head_mass,
        direction="target",
        target=1.0,
        kinds=_TOKENS,
        description="head-mass of single tokens, each scored by its exact log-probability given its "
        "prefix under the data source (NaN where the source has none)",
        version=_TRUE_BANDS_VERSION,
    ),
    Metric(
        name="true-tail-mass",
        compute=compute_true_tail_mass,
        direction="target",
        target=1.0,
        kinds=_TOKENS,
        description="tail-mass of single tokens, each scored by its exact log-probability given its "
        "prefix under the data source (NaN where the source has none)",
        version=_TRUE_BANDS_VERSION,
    ),
    Metric(
        name="true-oos-mass",
        compute=compute_true_oos_mass,
        direction="lower",
        kinds=_TOKENS,
        description="oos-mass of single tokens, each scored by its exact log-probability given its "
        "prefix under the data source (NaN where the source has none)",
        version=_TRUE_BANDS_VERSION,
    ),
    Metric(
        name="true-nll-shift",
        compute=compute_true_nll_shift,
        direction="target",
        target=0.0,
        kinds=_TOKENS,
        description="per-token NLL (nats) of S_{k+1} under the exact source minus that of the real "
        "test set",
    ),
)


@bench.hookimpl
def bench_register_metrics(register) -> None:
    for metric in METRICS:
        register(metric)
