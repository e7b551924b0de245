"""The synthetic Markov source (plugins/lm_source.py): exact probabilities, sampling, tokenizer."""

import itertools
import math

import numpy as np
import pytest

from bench.errors import BenchError
from collapse_bench_plugins import lm_source as S

Z = 4.0  # standard errors allowed in Monte Carlo checks

TINY = {"source_vocab": 4, "source_branching": 2, "source_smoothing": 0.2, "source_tokens": 300,
        "source_zipf": 1.0, "source_transition_zipf": 1.0, "source_seed": 3}


def hand_matrix(c: S.SyntheticCorpus) -> np.ndarray:
    """P(b | a) from the definition, element by element: (1 - lam) Q + lam u, with u and the rows of
    Q Zipf weights written out here rather than taken from the corpus."""
    p = c.params
    v, k, lam = p["source_vocab"], p["source_branching"], p["source_smoothing"]
    u = [(w + 1) ** -p["source_zipf"] for w in range(v)]
    u = [x / sum(u) for x in u]
    q = [(r + 1) ** -p["source_transition_zipf"] for r in range(k)]
    q = [x / sum(q) for x in q]
    out = np.zeros((v, v))
    for a in range(v):
        for b in range(v):
            out[a, b] = lam * u[b]
        for r in range(k):
            out[a, int(c.successors[a, r])] += (1 - lam) * q[r]
    return out


def hand_loglik(c: S.SyntheticCorpus, block) -> float:
    pmat = hand_matrix(c)
    w = [int(t) - S.N_SPECIALS for t in block]
    ll = math.log(c.stationary[w[0]])
    for a, b in zip(w, w[1:]):
        ll += math.log(pmat[a, b])
    return ll


# --------------------------------------------------------------------------------------------------
# Exact probabilities
# --------------------------------------------------------------------------------------------------


FULL_ROWS = {"source_vocab": 50, "source_branching": 50, "source_zipf": 0.0}  # every word a successor


@pytest.mark.parametrize("params", [TINY, {}, FULL_ROWS])
def test_probabilities_are_a_proper_distribution(params):
    c = S.synthetic_corpus(params)
    p = c.transition_matrix()
    np.testing.assert_allclose(p, hand_matrix(c), rtol=1e-12, atol=0)
    assert np.all(p > 0)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(c.successor_probs.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert np.all(np.diff(c.successor_probs, axis=1) <= 0)  # weights fall with draw order
    assert all(len(set(row)) == len(row) for row in c.successors.tolist())  # distinct successors
    # pi is stationary, and equals the solution of pi (P - I) = 0, sum pi = 1 by a direct solve
    np.testing.assert_allclose(c.stationary @ p, c.stationary, rtol=1e-10, atol=1e-15)
    a = p.T - np.eye(c.vocab)
    a[-1] = 1.0
    rhs = np.zeros(c.vocab)
    rhs[-1] = 1.0
    np.testing.assert_allclose(c.stationary, np.linalg.solve(a, rhs), rtol=1e-9, atol=1e-15)
    assert c.unigram.shape == (c.vocab + S.N_SPECIALS,)
    assert np.all(c.unigram[: S.N_SPECIALS] == 0) and c.unigram.sum() == pytest.approx(1.0, abs=1e-12)
    assert c.base.sum() == pytest.approx(1.0, abs=1e-12)


def test_two_word_source_by_hand():
    """V = 2, one successor each: P(b|a) = lam u_b + (1 - lam)[b = s(a)], u = (2/3, 1/3), and the
    two-state stationary law pi_0 = P(0|1) / (P(1|0) + P(0|1))."""
    lam = 0.1
    c = S.synthetic_corpus({"source_vocab": 2, "source_branching": 1, "source_smoothing": lam,
                            "source_tokens": 30, "source_seed": 7})
    u = [2 / 3, 1 / 3]
    s = [int(c.successors[0, 0]), int(c.successors[1, 0])]
    p = [[lam * u[b] + (1 - lam) * (b == s[a]) for b in range(2)] for a in range(2)]
    pi0 = p[1][0] / (p[0][1] + p[1][0])
    assert c.stationary[0] == pytest.approx(pi0, rel=1e-12)
    block = [3, 3, 4, 4, 3]  # words 0 0 1 1 0
    expect = math.log(pi0) + math.log(p[0][0]) + math.log(p[0][1]) + math.log(p[1][1]) + math.log(p[1][0])
    assert c.block_loglik(np.array([block]))[0] == pytest.approx(expect, rel=1e-12)
    # both successors (K = V): Q rows are (2/3, 1/3) in draw order
    c2 = S.synthetic_corpus({"source_vocab": 2, "source_branching": 2, "source_smoothing": lam,
                             "source_tokens": 30})
    np.testing.assert_allclose(c2.successor_probs, [[2 / 3, 1 / 3], [2 / 3, 1 / 3]], rtol=1e-12)


def test_block_loglik_matches_hand_computation():
    c = S.synthetic_corpus(TINY)
    rng = np.random.default_rng(0)
    blocks = rng.integers(S.N_SPECIALS, S.N_SPECIALS + c.vocab, size=(20, 6))
    got = c.block_loglik(blocks)
    for row, value in zip(blocks, got):
        assert value == pytest.approx(hand_loglik(c, row), rel=1e-12)
    # a single token is scored by the stationary law alone
    np.testing.assert_allclose(c.block_loglik(blocks[:, :1]), np.log(c.unigram[blocks[:, 0]]), rtol=1e-12)
    # every block of length 3 together carries probability 1
    all_blocks = np.array(list(itertools.product(range(S.N_SPECIALS, S.N_SPECIALS + c.vocab), repeat=3)))
    assert np.exp(c.block_loglik(all_blocks)).sum() == pytest.approx(1.0, abs=1e-12)


def test_block_loglik_on_the_default_corpus_matches_dense_algebra():
    c = S.synthetic_corpus({})
    blocks = c.splits["test"][: 40 * 64].reshape(40, 64)
    p, pi = c.transition_matrix(), c.stationary
    w = blocks - S.N_SPECIALS
    dense = np.log(pi[w[:, 0]]) + np.log(p[w[:, :-1], w[:, 1:]]).sum(axis=1)
    np.testing.assert_allclose(c.block_loglik(blocks), dense, rtol=1e-12)


def test_specials_unknown_and_out_of_range_ids_score_minus_infinity():
    c = S.synthetic_corpus(TINY)
    ok = [3, 4, 5, 6]
    blocks = np.array([ok, [0, 4, 5, 6], [3, 4, 1, 6], [3, 2, 5, 6], [3, 4, 5, 7], [-1, 4, 5, 6]])
    ll = c.block_loglik(blocks)
    assert np.isfinite(ll[0]) and np.all(ll[1:] == -np.inf)
    with pytest.raises(ValueError):
        c.block_loglik(np.array(ok))
    with pytest.raises(ValueError):
        c.block_loglik(np.array([[3.0, 4.0]]))


def test_entropy_rate_matches_the_dense_formula():
    for params in (TINY, {}):
        c = S.synthetic_corpus(params)
        p = c.transition_matrix()
        expect = -(c.stationary[:, None] * p * np.log(p)).sum()
        assert c.entropy_rate == pytest.approx(expect, rel=1e-12)


# --------------------------------------------------------------------------------------------------
# Sampling: empirical block frequencies against exp(block_loglik)
# --------------------------------------------------------------------------------------------------


def _check_frequencies(c, blocks):
    n = len(blocks)
    words = range(S.N_SPECIALS, S.N_SPECIALS + c.vocab)
    all_blocks = np.array(list(itertools.product(words, repeat=blocks.shape[1])))
    p = np.exp(c.block_loglik(all_blocks))
    index = {tuple(b): i for i, b in enumerate(all_blocks.tolist())}
    counts = np.zeros(len(all_blocks))
    for b in blocks.tolist():
        counts[index[tuple(b)]] += 1
    se = np.sqrt(p * (1 - p) / n)
    assert np.all(np.abs(counts / n - p) <= Z * se + 1e-12), np.max(np.abs(counts / n - p) / se)


def test_sampled_blocks_follow_the_exact_law():
    c = S.synthetic_corpus(TINY)
    blocks = c.sample_blocks(20_000, 3, np.random.default_rng(1))
    assert blocks.dtype == np.int64 and blocks.shape == (20_000, 3)
    _check_frequencies(c, blocks)


def test_sampled_streams_follow_the_exact_law():
    """The sequential sampler (the one that makes the splits), on independent short runs."""
    c = S.synthetic_corpus(TINY)
    rng = np.random.default_rng(2)
    blocks = np.array([c.sample_stream(3, rng) for _ in range(4000)])
    _check_frequencies(c, blocks)


def test_splits_are_token_streams_of_the_right_sizes():
    c = S.synthetic_corpus({})
    assert {k: v.shape for k, v in c.splits.items()} == {"train": (80_000,), "validation": (10_000,),
                                                          "test": (10_000,)}
    for stream in c.splits.values():
        assert stream.dtype == np.int64 and not stream.flags.writeable
        assert stream.min() >= S.N_SPECIALS and stream.max() < S.N_SPECIALS + c.vocab
    assert not np.array_equal(c.splits["validation"], c.splits["test"])
    # the empirical unigram of the training stream is near pi (total variation; loose: the chain
    # is correlated, so no binomial bound applies)
    freq = np.bincount(c.splits["train"], minlength=len(c.unigram)) / 80_000
    assert 0.5 * np.abs(freq - c.unigram).sum() < 0.05
    # the exact-source perplexity of the test stream is near exp(entropy rate)
    blocks = c.splits["test"].reshape(-1, 100)
    nll = -c.block_loglik(blocks).sum() / blocks.size
    assert nll == pytest.approx(c.entropy_rate, abs=0.1)


# --------------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------------


def test_tokenizer_round_trips_and_has_the_specials(tmp_path):
    c = S.synthetic_corpus({})
    tok = c.tokenizer
    assert len(tok) == c.vocab + S.N_SPECIALS == 1003
    assert (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id, tok.unk_token_id) == (0, 1, 1, 2)
    ids = c.splits["train"][:64]
    text = tok.decode(ids)
    assert text == " ".join(c.words[i - S.N_SPECIALS] for i in ids) == c.decode_words(ids)
    assert tok(text)["input_ids"] == ids.tolist()  # no specials added on encode
    assert tok("qqq " + c.words[0])["input_ids"] == [tok.unk_token_id, S.N_SPECIALS]
    assert tok.decode([1, 3, 0], skip_special_tokens=True) == c.words[0]
    # words are distinct, pronounceable and never collide with a special
    assert len(set(c.words)) == c.vocab and all(w.isalpha() and w.islower() for w in c.words)
    # saved and reloaded through the ordinary from_pretrained path
    from transformers import AutoTokenizer

    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(text)["input_ids"] == ids.tolist() and len(again) == len(tok)


# --------------------------------------------------------------------------------------------------
# Determinism, caching, parameters
# --------------------------------------------------------------------------------------------------


def test_corpus_is_deterministic_and_ignores_other_params():
    a = S.synthetic_corpus(TINY)
    assert S.synthetic_corpus({**TINY, "seed": 9, "model": "x"}) is a  # cached; the run seed is ignored
    S._build.cache_clear()
    b = S.synthetic_corpus(TINY)
    assert b is not a and b.fingerprint == a.fingerprint and b.words == a.words
    for name in S.SPLITS:
        np.testing.assert_array_equal(a.splits[name], b.splits[name])
    np.testing.assert_array_equal(a.successors, b.successors)
    other = S.synthetic_corpus({**TINY, "source_seed": 4})
    assert other.fingerprint != a.fingerprint
    assert not np.array_equal(other.splits["train"], a.splits["train"])
    assert S.synthetic_corpus({**TINY, "source_smoothing": 0.3}).fingerprint != a.fingerprint


def test_default_corpus_is_pinned():
    """The default corpus is the smoke preset's data: a change to it must be deliberate (then bump
    SOURCE_VERSION and update these values)."""
    c = S.synthetic_corpus({"source_vocab": None})  # None means the default
    assert c.params == S.SOURCE_PARAMS
    assert c.fingerprint == S.fingerprint({}) == "lm-source-4511a4ac415a0829"
    assert c.words[:4] == ("duban", "gepena", "gisukak", "rasabu")
    assert c.splits["train"][:8].tolist() == [29, 11, 4, 6, 863, 168, 563, 18]
    assert c.entropy_rate == pytest.approx(2.9342186861, abs=1e-9)


@pytest.mark.parametrize("key, value", [
    ("source_vocab", 1), ("source_vocab", 2.5), ("source_tokens", 10), ("source_branching", 0),
    ("source_branching", 5000), ("source_smoothing", 0.0), ("source_smoothing", 1.5),
    ("source_zipf", -1.0), ("source_zipf", "big"), ("source_seed", -1), ("source_vocab", True),
])
def test_bad_params_name_the_parameter(key, value):
    with pytest.raises(BenchError, match=key):
        S.synthetic_corpus({key: value})


def test_token_loglik_on_a_two_word_source_by_hand():
    """Seed 3 pins the successors 0 -> 1 and 1 -> 0, so with lam = 0.1 and u = (2/3, 1/3):
    P(1|0) = 0.9 + 0.1/3 = 14/15, P(0|0) = 1/15, P(0|1) = 0.9 + 0.2/3 = 29/30, P(1|1) = 1/30, and
    pi_0 = P(0|1) / (P(1|0) + P(0|1)) = (29/30) / (57/30) = 29/57."""
    c = S.synthetic_corpus({"source_vocab": 2, "source_branching": 1, "source_smoothing": 0.1,
                            "source_tokens": 30, "source_seed": 3})
    assert c.successors[:, 0].tolist() == [1, 0]
    p = {(0, 0): 1 / 15, (0, 1): 14 / 15, (1, 0): 29 / 30, (1, 1): 1 / 30}
    pi = {0: 29 / 57, 1: 28 / 57}
    log = math.log
    blocks = np.array([[3, 3, 4, 4, 3],  # words 0 0 1 1 0
                       [4, 0, 3, 4, 9],  # 1 <pad> 0 1 out-of-range
                       [2, 4, 1, 1, 4]])  # <unk> 1 </s> </s> 1
    expect = [[log(pi[0]), log(p[0, 0]), log(p[0, 1]), log(p[1, 1]), log(p[1, 0])],
              [log(pi[1]), -math.inf, log(pi[0]), log(p[0, 1]), -math.inf],
              [-math.inf, log(pi[1]), -math.inf, -math.inf, log(pi[1])]]
    got = c.token_loglik(blocks)
    assert got.shape == (3, 5) and got.dtype == np.float64
    np.testing.assert_allclose(got, expect, rtol=1e-12)
    # a row of words sums to its block log-likelihood; a row with a bad id sums to -inf as it does
    np.testing.assert_allclose(got.sum(axis=1), c.block_loglik(blocks), rtol=1e-12)
    with pytest.raises(ValueError, match="shape"):
        c.token_loglik(np.array([3, 4]))
    with pytest.raises(ValueError, match="integers"):
        c.token_loglik(np.array([[3.0, 4.0]]))


def test_token_loglik_on_the_default_corpus_matches_dense_algebra():
    c = S.synthetic_corpus({})
    blocks = c.splits["test"][: 40 * 64].reshape(40, 64)
    p, w = c.transition_matrix(), blocks - S.N_SPECIALS
    got = c.token_loglik(blocks)
    np.testing.assert_allclose(got[:, 0], np.log(c.stationary[w[:, 0]]), rtol=1e-12)
    np.testing.assert_allclose(got[:, 1:], np.log(p[w[:, :-1], w[:, 1:]]), rtol=1e-12)
    np.testing.assert_allclose(got.sum(axis=1), c.block_loglik(blocks), rtol=1e-12)
