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


def make_ctx(samples, train, test=None, params=None, true_loglik=None, true_token_loglik=None) -> MetricContext:
    real = RealData(train=tok(train), test=tok(test if test is not None else train), true_loglik=true_loglik,
                    true_token_loglik=true_token_loglik)
    bundle = ModelBundle(name="fake-lm", kind="tokens", load_real=lambda p, s: real, trainer="t",
                         generator="g", scorer="s")
    return MetricContext(generation=1, bundle=bundle, params=params or {}, real=real, state={},
                         reference_state={}, samples=tok(samples), score=None, rng=np.random.default_rng(0))


def source_ctx(samples, params=None):
    """A context whose real data and exact likelihood come from the tiny synthetic source."""
    c = S.synthetic_corpus(TINY)
    train = c.splits["train"][: len(c.splits["train"]) // L * L].reshape(-1, L)
    test = c.splits["test"][: len(c.splits["test"]) // L * L].reshape(-1, L)
    return c, make_ctx(samples, train, test, params, **exact(c))


def exact(c):
    """The exact likelihoods of a corpus as a RealData passes them on (plugins/hf_data.py)."""
    return {"true_loglik": lambda s: c.block_loglik(s.data), "true_token_loglik": lambda s: c.token_loglik(s.data)}


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
    """log pi(w_1), then log P(w_t | w_{t-1}) from the dense matrix, token by token: (n, L)."""
    p, pi = c.transition_matrix(), c.stationary
    out = []
    for b in np.asarray(blocks).tolist():
        w = [t - S.N_SPECIALS for t in b]
        out.append([math.log(pi[w[0]])] + [math.log(p[a, z]) for a, z in zip(w, w[1:])])
    return np.array(out)


def test_true_bands_by_hand_on_a_two_word_chain():
    """Words 0, 1 (token ids 3, 4); seed 3 pins the successors 0 -> 1, 1 -> 0, so with lam = 0.1:
    P(1|0) = 14/15, P(0|0) = 1/15, P(0|1) = 29/30, P(1|1) = 1/30, pi = (29/57, 28/57).
    Six per-token values, in increasing order: p00 < pi1 < pi0 < p01 < p10, and p11 below them all."""
    c = S.synthetic_corpus({"source_vocab": 2, "source_branching": 1, "source_smoothing": 0.1,
                            "source_tokens": 30, "source_seed": 3})
    assert c.successors[:, 0].tolist() == [1, 0]
    log = math.log
    p00, p01, p10, p11 = log(1 / 15), log(14 / 15), log(29 / 30), log(1 / 30)
    pi0, pi1 = log(29 / 57), log(28 / 57)
    a, b, pad = 3, 4, 0  # the token ids of words 0 and 1, and <pad>
    test = [[a, b, a, b],  # pi0 p01 p10 p01
            [b, a, b, a],  # pi1 p10 p01 p10
            [a, a, b, a],  # pi0 p00 p01 p10
            [a, b, a, b]]  # pi0 p01 p10 p01
    np.testing.assert_allclose(c.token_loglik(np.array(test)),
                               [[pi0, p01, p10, p01], [pi1, p10, p01, p10], [pi0, p00, p01, p10],
                                [pi0, p01, p10, p01]], rtol=1e-12)
    # 16 real tokens sorted: p00, pi1, pi0 x3, p01 x6, p10 x5. With alpha 0.3 the alpha-quantile sits
    # at (16 - 1) 0.3 = 4.5, between pi0 and p01, the (1 - alpha)-quantile at 10.5, between p01 and
    # p10; the minimum is p00. So: head = p10; tail = p00, pi1, pi0; oos = p11 and specials.
    gen = [[b, b, b, b],  # pi1 p11 p11 p11: tail, oos x3
           [b, a, b, a],  # pi1 p10 p01 p10: tail, head, -, head
           [a, a, a, a],  # pi0 p00 p00 p00: tail x4 (p00 is the real minimum, inside the tail)
           [pad, a, b, a]]  # -inf, then a fresh start: oos, pi0 tail, p01 -, p10 head
    assert p11 < p00
    np.testing.assert_allclose(c.token_loglik(np.array(gen))[[0, 3]],
                               [[pi1, p11, p11, p11], [-math.inf, pi0, p01, p10]], rtol=1e-12)
    ctx = make_ctx(gen, test, test, params={"tail_alpha": 0.3}, **exact(c))
    assert T.compute_true_head_mass(ctx) == pytest.approx(3 / 16 / 0.3)
    assert T.compute_true_tail_mass(ctx) == pytest.approx(7 / 16 / 0.3)
    assert T.compute_true_oos_mass(ctx) == pytest.approx(4 / 16)
    # the real test tokens themselves: 5 of 16 in the head, 5 in the tail, none out of support
    ctx = make_ctx(test, test, test, params={"tail_alpha": 0.3}, **exact(c))
    assert T.compute_true_head_mass(ctx) == pytest.approx(5 / 16 / 0.3)
    assert T.compute_true_tail_mass(ctx) == pytest.approx(5 / 16 / 0.3)
    assert T.compute_true_oos_mass(ctx) == 0.0


def test_true_bands_on_a_tiny_source():
    c, ctx = source_ctx(np.zeros((1, L), dtype=np.int64))
    test = ctx.real.test.data
    r = _hand_per_token(c, test).reshape(-1)  # per token: the bands are over tokens, not blocks
    lo, hi, m = np.quantile(r, 0.1), np.quantile(r, 0.9), r.min()

    # the source's most probable transition, repeated: tokens are classified one by one (the
    # expected shares counted here from the dense matrix and NumPy's quantiles)
    p = c.transition_matrix()
    top_a, top_b = np.unravel_index(np.argmax(p), p.shape)
    top = np.array([S.N_SPECIALS + (top_a, top_b)[i % 2] for i in range(L)])
    t = _hand_per_token(c, [top])[0]
    _, ctx = source_ctx(np.tile(top, (50, 1)))
    assert T.compute_true_head_mass(ctx) == pytest.approx(np.mean(t > hi) / 0.1)
    assert T.compute_true_tail_mass(ctx) == pytest.approx(np.mean((t >= m) & (t < lo)) / 0.1)
    assert T.compute_true_oos_mass(ctx) == 0.0
    # true-nll-shift stays the pooled per-token NLL difference
    assert T.compute_true_nll_shift(ctx) == pytest.approx(-t.mean() - (-r.mean()), rel=1e-10)

    # the real test set itself: the shares counted here with NumPy's quantiles
    _, ctx = source_ctx(test, params={"tail_alpha": 0.2})
    lo2, hi2 = np.quantile(r, 0.2), np.quantile(r, 0.8)
    assert T.compute_true_head_mass(ctx) == pytest.approx(np.mean(r > hi2) / 0.2)
    assert T.compute_true_tail_mass(ctx) == pytest.approx(np.mean((r >= m) & (r < lo2)) / 0.2)
    assert T.compute_true_oos_mass(ctx) == 0.0
    assert T.compute_true_nll_shift(ctx) == pytest.approx(0.0, abs=1e-12)

    # a special token is out of support alone (the word after it starts afresh); the least probable
    # transition occurs in this test set, so it is the real minimum and falls inside the tail band
    low_a, low_b = np.unravel_index(np.argmin(p), p.shape)
    assert math.log(p[low_a, low_b]) == pytest.approx(m, rel=1e-12)
    low = np.array([S.N_SPECIALS + (low_a, low_b)[i % 2] for i in range(L)])
    gen = np.array([test[0], [0, *test[0][1:]], low])
    h = _hand_per_token(c, gen)
    h[1, 0], h[1, 1] = -math.inf, math.log(c.stationary[test[0][1] - S.N_SPECIALS])
    h = h.reshape(-1)
    _, ctx = source_ctx(gen)
    assert T.compute_true_oos_mass(ctx) == pytest.approx(1 / (3 * L))
    assert T.compute_true_tail_mass(ctx) == pytest.approx(np.mean((h >= m) & (h < lo)) / 0.1)
    assert T.compute_true_head_mass(ctx) == pytest.approx(np.mean(h > hi) / 0.1)
    assert T.compute_true_nll_shift(ctx) == math.inf


def test_true_token_loglik_of_the_wrong_shape_is_an_error():
    c, _ = source_ctx(np.zeros((1, L), dtype=np.int64))
    ctx = make_ctx(np.full((2, L), 3), [[3] * L], true_token_loglik=lambda s: c.block_loglik(s.data))
    with pytest.raises(ValueError, match="one value per token"):
        T.compute_true_head_mass(ctx)


def test_a_block_likelihood_alone_leaves_the_bands_nan():
    """A source with true_loglik but no true_token_loglik: the NLL shift, and NaN bands."""
    c, _ = source_ctx(np.zeros((1, L), dtype=np.int64))
    test = c.splits["test"][: 10 * L].reshape(-1, L)
    ctx = make_ctx(test, test, test, true_loglik=lambda s: c.block_loglik(s.data))
    assert T.compute_true_nll_shift(ctx) == pytest.approx(0.0, abs=1e-12)
    for f in (T.compute_true_head_mass, T.compute_true_tail_mass, T.compute_true_oos_mass):
        assert math.isnan(f(ctx))


def test_fresh_source_blocks_sit_near_the_real_bands():
    """Blocks drawn from the source itself: every text metric is near its target (loose bounds:
    a sanity check of the wiring on real-sized data, not of a formula)."""
    c = S.synthetic_corpus({})
    train = c.splits["train"].reshape(-1, 64)
    test = c.splits["test"][: 156 * 64].reshape(-1, 64)
    gen = c.sample_blocks(len(train), 64, np.random.default_rng(5))
    ctx = make_ctx(gen, train, test, **exact(c))
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
