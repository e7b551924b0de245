"""Text metrics (plugins/text_metrics.py): hand-worked cases, sacrebleu, exact-source bands."""

import math

import numpy as np
import pytest
import sacrebleu

from bench.components import MetricContext, ModelBundle, RealData, Samples
from collapse_bench_plugins import lm_source as S
from collapse_bench_plugins import text_metrics as T

TINY = {"source_vocab": 8, "source_branching": 2, "source_smoothing": 0.05, "source_tokens": 3000,
        "source_seed": 1}
L = 5  # block length in the context tests


def tok(x) -> Samples:
    return Samples("tokens", np.asarray(x, dtype=np.int64))


def make_ctx(samples, train, test=None, params=None, true_loglik=None) -> MetricContext:
    real = RealData(train=tok(train), test=tok(test if test is not None else train), true_loglik=true_loglik)
    bundle = ModelBundle(name="fake-lm", kind="tokens", load_real=lambda p, s: real, trainer="t",
                         generator="g", scorer="s")
    return MetricContext(generation=1, bundle=bundle, params=params or {}, real=real, state={},
                         reference_state={}, samples=tok(samples), score=None, rng=np.random.default_rng(0))


def source_ctx(samples, params=None):
    """A context whose real data and exact likelihood come from the tiny synthetic source."""
    c = S.synthetic_corpus(TINY)
    train = c.splits["train"][: len(c.splits["train"]) // L * L].reshape(-1, L)
    test = c.splits["test"][: len(c.splits["test"]) // L * L].reshape(-1, L)
    return c, make_ctx(samples, train, test, params, true_loglik=lambda s: c.block_loglik(s.data))


def joined(x) -> str:
    return " ".join(str(int(v)) for v in x)


# --------------------------------------------------------------------------------------------------
# Diversity formulas, hand-worked
# --------------------------------------------------------------------------------------------------


def test_distinct_n_by_hand():
    x = [[1, 2, 1, 2], [1, 2, 3, 3]]
    assert T.distinct_n(x, 1) == pytest.approx(3 / 8)  # {1, 2, 3} of 8 tokens
    assert T.distinct_n(x, 2) == pytest.approx(4 / 6)  # 12 21 12 | 12 23 33
    assert T.distinct_n(x, 3) == 1.0 and T.distinct_n(x, 4) == 1.0
    assert math.isnan(T.distinct_n(x, 5))
    # n-grams never span two blocks: the pair (2, 2) across the boundary is not counted
    assert T.distinct_n([[1, 2], [2, 1]], 2) == 1.0
    assert T.distinct_n([[7, 7, 7]], 1) == pytest.approx(1 / 3)


def test_type_token_ratio_by_hand():
    assert T.type_token_ratio([[1, 1, 2, 3], [4, 4, 4, 4]]) == pytest.approx((3 / 4 + 1 / 4) / 2)
    # it measures repetition inside blocks: two repeated blocks of distinct tokens score 1
    assert T.type_token_ratio([[1, 2, 3], [1, 2, 3]]) == 1.0
    assert T.distinct_n([[1, 2, 3], [1, 2, 3]], 1) == 0.5


def test_unigram_entropy_closed_forms():
    assert T.unigram_entropy([[1, 2, 3, 4, 5, 6]]) == pytest.approx(math.log(6))
    assert T.unigram_entropy([[9, 9, 9]]) == 0.0
    # counts 2, 1, 1: -(1/2 log 1/2 + 2 (1/4) log 1/4) = (3/2) log 2
    assert T.unigram_entropy([[5, 5], [6, 7]]) == pytest.approx(1.5 * math.log(2))


def test_rare_types_and_their_share_by_hand():
    # counts: 10 -> 50, 11 -> 30, 12 -> 10, 13 -> 5, 14 -> 5 (100 tokens)
    tokens = np.repeat([10, 11, 12, 13, 14], [50, 30, 10, 5, 5]).reshape(1, -1)
    np.testing.assert_array_equal(T.rare_types(tokens, 0.1), [13, 14])  # 5 + 5 = 10 tokens
    np.testing.assert_array_equal(T.rare_types(tokens, 0.2), [12, 13, 14])  # 20 tokens
    np.testing.assert_array_equal(T.rare_types(tokens, 0.19), [13, 14])
    assert T.rare_types(tokens, 0.09).size == 0  # the rarest group alone carries 10% > 9%
    assert T.type_share([[13, 14, 10, 10], [12, 13, 99, 11]], np.array([13, 14])) == pytest.approx(3 / 8)
    with pytest.raises(ValueError):
        T.rare_types(tokens, 0.0)


def test_ratio_and_difference_edge_cases():
    assert T.ratio(1.0, 2.0) == 0.5 and T.ratio(1.0, 0.0) == math.inf
    assert math.isnan(T.ratio(0.0, 0.0)) and math.isnan(T.ratio(math.nan, 1.0))
    assert T.difference(3.0, 1.0) == 2.0 and math.isnan(T.difference(math.inf, math.inf))


# --------------------------------------------------------------------------------------------------
# BLEU against sacrebleu
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tokenize", ["13a", "none"])
def test_sentence_bleu_matches_sacrebleu(tokenize):
    rng = np.random.default_rng(0)
    for trial in range(40):
        k = int(rng.integers(1, 6))
        hyp = rng.integers(0, 5, size=int(rng.integers(1, 12)))
        refs = [rng.integers(0, 5, size=int(rng.integers(1, 12))) for _ in range(k)]
        expect = sacrebleu.sentence_bleu(joined(hyp), [joined(r) for r in refs], tokenize=tokenize).score
        assert 100 * T.sentence_bleu(hyp, refs) == pytest.approx(expect, rel=1e-9, abs=1e-9), trial


def test_self_bleu_matches_sacrebleu():
    rng = np.random.default_rng(1)
    for vocab in (3, 6, 50):  # heavy, some and little overlap between blocks
        x = rng.integers(0, vocab, size=(15, 10))
        expect = np.mean([
            sacrebleu.sentence_bleu(joined(x[i]), [joined(x[j]) for j in range(len(x)) if j != i]).score
            for i in range(len(x))
        ]) / 100
        assert T.self_bleu(x) == pytest.approx(expect, rel=1e-9)
    assert T.self_bleu(np.tile([[1, 2, 3, 4, 5]], (3, 1))) == pytest.approx(1.0)
    assert math.isnan(T.self_bleu([[1, 2, 3]]))


def test_fixed_subset_is_fixed_and_uniform_sized():
    a = T.fixed_subset(1000, 100)
    assert len(np.unique(a)) == 100 and np.all(np.diff(a) > 0)
    np.testing.assert_array_equal(a, T.fixed_subset(1000, 100))
    np.testing.assert_array_equal(T.fixed_subset(5, 100), np.arange(5))


# --------------------------------------------------------------------------------------------------
# The metric wrappers on hand-made contexts
# --------------------------------------------------------------------------------------------------


def test_samples_like_the_real_data_score_on_target():
    real = np.random.default_rng(2).integers(0, 40, size=(30, 8))
    ctx = make_ctx(real, real)
    assert T.compute_distinct_n(ctx) == {"1": 1.0, "2": 1.0, "3": 1.0, "4": 1.0}
    assert T.compute_self_bleu(ctx) == 1.0
    assert T.compute_type_token_ratio(ctx) == 1.0
    assert T.compute_unigram_entropy(ctx) == 0.0
    assert T.compute_rare_type_mass(ctx) == 1.0
    # no exact source: the true-* metrics are NaN
    for f in (T.compute_true_head_mass, T.compute_true_tail_mass, T.compute_true_oos_mass,
              T.compute_true_nll_shift):
        assert math.isnan(f(ctx))


def test_wrappers_compare_generated_with_real_by_hand():
    real = [[1, 2, 3, 4], [1, 2, 7, 8]]
    gen = [[1, 1, 1, 1], [1, 1, 2, 2]]
    ctx = make_ctx(gen, real)
    d = T.compute_distinct_n(ctx)
    assert d["1"] == pytest.approx((2 / 8) / (6 / 8))
    assert d["2"] == pytest.approx((3 / 6) / (5 / 6))  # 11 11 11 | 11 12 22 against 12 23 34 | 12 27 78
    assert T.compute_type_token_ratio(ctx) == pytest.approx(((1 / 4 + 2 / 4) / 2) / 1.0)
    h_gen = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    h_real = -(2 * 0.25 * math.log(0.25) + 4 * 0.125 * math.log(0.125))
    assert T.compute_unigram_entropy(ctx) == pytest.approx(h_gen - h_real)
    self_bleu_gen = np.mean([sacrebleu.sentence_bleu(joined(gen[i]), [joined(gen[1 - i])]).score
                             for i in (0, 1)])
    assert T.compute_self_bleu(ctx) == pytest.approx(self_bleu_gen / 100 / T.self_bleu(real))


def test_unequal_sizes_use_the_first_blocks():
    real = [[1, 2, 3], [4, 5, 6], [7, 7, 7]]
    gen = [[1, 2, 3, 9], [4, 5, 6, 9], [8, 8, 8, 8], [8, 8, 8, 8]]
    ctx = make_ctx(gen, real)
    g, r = T.paired_blocks(ctx)
    np.testing.assert_array_equal(g, [[1, 2, 3], [4, 5, 6], [8, 8, 8]])
    np.testing.assert_array_equal(r, real)
    # text_metric_blocks limits distinct-n to the first blocks of each side
    ctx = make_ctx(gen, real, params={"text_metric_blocks": 2})
    assert T.compute_distinct_n(ctx)["1"] == 1.0
    with pytest.raises(ValueError, match="text_metric_blocks"):
        T.compute_distinct_n(make_ctx(gen, real, params={"text_metric_blocks": 0}))


def test_rare_type_mass_by_hand():
    # training counts: 10 -> 8, 11 -> 1, 12 -> 1 (10 tokens); alpha 0.2 -> rare types {11, 12}
    train = [[10, 10, 10, 10, 10], [10, 10, 10, 11, 12]]
    test = [[10, 10, 11, 10], [12, 10, 10, 10]]  # rare share 2/8
    gen = [[11, 11, 12, 10], [10, 10, 10, 10], [10, 10, 10, 10]]  # rare share 3/12
    ctx = make_ctx(gen, train, test, params={"tail_alpha": 0.2})
    assert T.compute_rare_type_mass(ctx) == pytest.approx((3 / 12) / (2 / 8))
    ctx = make_ctx([[10, 10, 10, 10]], train, test, params={"tail_alpha": 0.2})
    assert T.compute_rare_type_mass(ctx) == 0.0


# --------------------------------------------------------------------------------------------------
# Exact-source bands on a tiny source
# --------------------------------------------------------------------------------------------------


def _hand_per_token(c, blocks):
    p, pi = c.transition_matrix(), c.stationary
    out = []
    for b in np.asarray(blocks).tolist():
        if min(b) < S.N_SPECIALS:
            out.append(-math.inf)
            continue
        w = [t - S.N_SPECIALS for t in b]
        out.append((math.log(pi[w[0]]) + sum(math.log(p[a, z]) for a, z in zip(w, w[1:]))) / len(b))
    return np.array(out)


def test_true_bands_on_a_tiny_source():
    c, ctx = source_ctx(np.zeros((1, L), dtype=np.int64))
    test = ctx.real.test.data
    r = _hand_per_token(c, test)
    lo, hi, m = np.quantile(r, 0.1), np.quantile(r, 0.9), r.min()

    # the most probable block of the source, repeated: all head
    import itertools
    words = range(S.N_SPECIALS, S.N_SPECIALS + c.vocab)
    every = np.array(list(itertools.product(words, repeat=L)))
    top = every[np.argmax(c.block_loglik(every))]
    assert _hand_per_token(c, [top])[0] > hi
    _, ctx = source_ctx(np.tile(top, (50, 1)))
    assert T.compute_true_head_mass(ctx) == pytest.approx(1 / 0.1)
    assert T.compute_true_tail_mass(ctx) == 0.0 and T.compute_true_oos_mass(ctx) == 0.0
    nll_top = -_hand_per_token(c, [top])[0]
    assert T.compute_true_nll_shift(ctx) == pytest.approx(nll_top - (-r.mean()), rel=1e-10)

    # the real test set itself: the shares counted here with NumPy's quantiles
    _, ctx = source_ctx(test, params={"tail_alpha": 0.2})
    lo2, hi2 = np.quantile(r, 0.2), np.quantile(r, 0.8)
    assert T.compute_true_head_mass(ctx) == pytest.approx(np.mean(r > hi2) / 0.2)
    assert T.compute_true_tail_mass(ctx) == pytest.approx(np.mean((r >= m) & (r < lo2)) / 0.2)
    assert T.compute_true_oos_mass(ctx) == 0.0
    assert T.compute_true_nll_shift(ctx) == pytest.approx(0.0, abs=1e-12)

    # a block holding a special token, and a block less probable than every real one
    low = every[np.argmin(c.block_loglik(every))]
    assert _hand_per_token(c, [low])[0] < m
    gen = np.array([test[0], [0, 4, 5, 6, 7], low, low])
    _, ctx = source_ctx(gen)
    assert T.compute_true_oos_mass(ctx) == pytest.approx(3 / 4)
    assert T.compute_true_nll_shift(ctx) == math.inf
    assert T.compute_true_head_mass(ctx) == pytest.approx((r[0] > hi) / 4 / 0.1)


def test_fresh_source_blocks_sit_near_the_real_bands():
    """Blocks drawn from the source itself: every text metric is near its target (loose bounds:
    a sanity check of the wiring on real-sized data, not of a formula)."""
    c = S.synthetic_corpus({})
    train = c.splits["train"].reshape(-1, 64)
    test = c.splits["test"][: 156 * 64].reshape(-1, 64)
    gen = c.sample_blocks(len(train), 64, np.random.default_rng(5))
    ctx = make_ctx(gen, train, test, true_loglik=lambda s: c.block_loglik(s.data))
    d = T.compute_distinct_n(ctx)
    for n in "1234":
        assert d[n] == pytest.approx(1.0, abs=0.05)
    assert T.compute_type_token_ratio(ctx) == pytest.approx(1.0, abs=0.02)
    assert T.compute_unigram_entropy(ctx) == pytest.approx(0.0, abs=0.05)
    assert T.compute_self_bleu(ctx) == pytest.approx(1.0, abs=0.15)
    assert T.compute_rare_type_mass(ctx) == pytest.approx(1.0, abs=0.15)
    assert T.compute_true_head_mass(ctx) == pytest.approx(1.0, abs=0.4)
    assert T.compute_true_tail_mass(ctx) == pytest.approx(1.0, abs=0.4)
    assert T.compute_true_oos_mass(ctx) < 0.05
    assert T.compute_true_nll_shift(ctx) == pytest.approx(0.0, abs=0.1)


# --------------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------------


def test_metrics_are_registered_with_their_directions():
    from bench.plugins import Bench
    from collapse_bench_plugins import metrics as generic

    b = Bench(extra_plugins=[generic, T], entry_points=False)  # no clash with the generic names
    expect = {
        "distinct-n": ("target", 1.0), "self-bleu": ("target", 1.0), "type-token-ratio": ("target", 1.0),
        "unigram-entropy": ("target", 0.0), "rare-type-mass": ("target", 1.0),
        "true-head-mass": ("target", 1.0), "true-tail-mass": ("target", 1.0),
        "true-oos-mass": ("lower", None), "true-nll-shift": ("target", 0.0),
    }
    for name, (direction, target) in expect.items():
        m = b.metrics.get(name)
        assert (m.direction, m.target, m.kinds, m.needs_scorer) == (direction, target, ("tokens",), False)
    assert {m.name for m in T.METRICS} == set(expect)
