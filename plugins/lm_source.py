"""A seeded text source whose exact probabilities are known: the corpus of the LM smoke preset.

The source is a first-order Markov chain over V made-up words (pronounceable strings drawn from the
seed). Word w has a Zipf base weight u_w proportional to (w + 1)^(-source_zipf). Every word gets
``source_branching`` successors, drawn by u without replacement, weighted by draw order as
Zipf (r + 1)^(-source_transition_zipf): a sparse transition matrix Q whose frequent successors are
frequent words. The chain the text follows mixes Q with a small share lam = ``source_smoothing`` of u,

    P(b | a) = (1 - lam) Q[a, b] + lam u_b,

so that every in-vocabulary transition has positive probability and the exact log-likelihood of any
block of words stays finite (a toy model puts about a quarter of its sampled transitions where Q
has none: LM-SMOKE-FINDINGS.md). Its stationary distribution pi solves pi = (1 - lam) pi Q + lam u;
it is Zipf-like and computed to float precision.

``synthetic_corpus(params)`` builds a :class:`SyntheticCorpus` from the ``source_*`` params alone
(not the run seed; cached in-process): a word-level tokenizer, train/validation/test token streams
(each an independent run of the chain started from pi), the exact block and per-token
log-likelihoods, and the true stationary probability of every token id. Formulas and defaults: docs/lm-source.md.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from bench.errors import BenchError

# Bump when the construction changes, so that the fingerprint of every corpus changes with it.
SOURCE_VERSION = "1"

SOURCE_PARAMS: dict[str, Any] = {
    "source_vocab": 1000,  # V, number of words (the tokenizer adds 3 specials)
    "source_tokens": 100_000,  # tokens over all splits: 80% train, 10% validation, 10% test
    "source_zipf": 1.0,  # exponent of the base word weights u_w ~ (w + 1)^-s
    "source_branching": 32,  # successors per word in the sparse matrix Q
    "source_transition_zipf": 1.0,  # exponent of successor weights by draw order ~ (r + 1)^-t
    "source_smoothing": 0.01,  # lam: the share of u mixed into every transition
    "source_seed": 0,  # seeds the words, Q and the three split streams
}

# Token ids of the specials, ahead of the words: word w has token id N_SPECIALS + w.
PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
SPECIAL_TOKENS = (PAD, EOS, UNK)
N_SPECIALS = len(SPECIAL_TOKENS)
SPLITS = ("train", "validation", "test")
MAX_VOCAB = 100_000

_SEED_TAG = 0x6C6D73  # "lms": mixed into every stream of the source
_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"
_GUMBEL_CHUNK = 2_000_000  # Gumbel keys drawn at once when picking successors (rows x V)


# --------------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------------


def source_params(params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``source_*`` params of a run (defaults from SOURCE_PARAMS; None means default), checked.

    Raises BenchError naming the parameter when a value is out of range.
    """
    params = params or {}
    out: dict[str, Any] = {}
    for key, default in SOURCE_PARAMS.items():
        value = params.get(key, default)
        out[key] = default if value is None else value

    def need(ok: bool, key: str, what: str) -> None:
        if not ok:
            raise BenchError(f"parameter {key}={out[key]!r}: {what} (default {SOURCE_PARAMS[key]!r}; "
                             f"set it with --set {key}=VALUE)")

    for key in ("source_vocab", "source_tokens", "source_branching", "source_seed"):
        v = out[key]
        need(not isinstance(v, bool) and isinstance(v, (int, np.integer)) or
             (isinstance(v, float) and v.is_integer()), key, "must be an integer")
        out[key] = int(v)
    for key in ("source_zipf", "source_transition_zipf", "source_smoothing"):
        v = out[key]
        need(not isinstance(v, bool) and isinstance(v, (int, float, np.number)) and math.isfinite(v),
             key, "must be a finite number")
        out[key] = float(v)
    need(2 <= out["source_vocab"] <= MAX_VOCAB, "source_vocab", f"must lie in [2, {MAX_VOCAB}]")
    need(out["source_tokens"] >= 30, "source_tokens", "must be at least 30 (10 per split)")
    need(1 <= out["source_branching"] <= out["source_vocab"], "source_branching",
         "must lie in [1, source_vocab]")
    need(out["source_zipf"] >= 0, "source_zipf", "must be >= 0")
    need(out["source_transition_zipf"] >= 0, "source_transition_zipf", "must be >= 0")
    need(0 < out["source_smoothing"] <= 1, "source_smoothing",
         "must lie in (0, 1]: a positive share keeps every transition possible")
    need(out["source_seed"] >= 0, "source_seed", "must be >= 0")
    return out


def fingerprint(params: Mapping[str, Any] | None = None) -> str:
    """A stable hash of the source definition: SOURCE_VERSION and the resolved ``source_*`` params."""
    definition = {"source_version": SOURCE_VERSION, **source_params(params)}
    blob = json.dumps(definition, sort_keys=True, separators=(",", ":"))
    return "lm-source-" + hashlib.sha256(blob.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------------
# The corpus
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SyntheticCorpus:
    """The source, its tokenizer and its data. Arrays are read-only (the corpus is shared by a cache;
    equality is identity).

    - ``words[w]``: the string of word w; its token id is N_SPECIALS + w.
    - ``base``: u, the Zipf base weights over words (sum 1); ``successors``, ``successor_probs``:
      (V, K) word indices and Q probabilities of each word's successors (rows sum to 1).
    - ``stationary``: pi over words; ``unigram``: pi over token ids (0 for the specials).
    - ``splits``: ``train``, ``validation``, ``test``: flat int64 streams of token ids.
    - ``entropy_rate``: the exact entropy per token of the chain, nats (test perplexity of the
      source itself is about exp of it).
    """

    params: Mapping[str, Any]
    words: tuple[str, ...]
    base: np.ndarray
    successors: np.ndarray
    successor_probs: np.ndarray
    smoothing: float
    stationary: np.ndarray
    splits: dict[str, np.ndarray]
    fingerprint: str
    _edge_keys: np.ndarray = field(repr=False)
    _edge_logp: np.ndarray = field(repr=False)

    @property
    def vocab(self) -> int:
        """V, the number of words (the tokenizer holds V + N_SPECIALS tokens)."""
        return len(self.words)

    @functools.cached_property
    def unigram(self) -> np.ndarray:
        """The true stationary probability of every token id (0 for the specials)."""
        return _readonly(np.concatenate([np.zeros(N_SPECIALS), self.stationary]))

    @functools.cached_property
    def tokenizer(self):
        """A word-level ``PreTrainedTokenizerFast``: whitespace pre-tokenizer, specials <pad> (0),
        </s> (1, both bos and eos) and <unk> (2), words from id 3; no specials added on encode.
        Built on first use, so that users of the probabilities never import transformers."""
        return build_tokenizer(self.words)

    @functools.cached_property
    def entropy_rate(self) -> float:
        """-sum_a pi_a sum_b P(b|a) log P(b|a) in nats, without forming the dense matrix."""
        lam, u = self.smoothing, self.base
        smooth = lam * u
        with np.errstate(divide="ignore", invalid="ignore"):
            s_log_s = np.where(smooth > 0, smooth * np.log(smooth), 0.0)
            p = (1 - lam) * self.successor_probs + smooth[self.successors]
            p_log_p = np.where(p > 0, p * np.log(p), 0.0)
        row = -(s_log_s.sum() - s_log_s[self.successors].sum(axis=1) + p_log_p.sum(axis=1))
        return float(self.stationary @ row)

    def transition_matrix(self) -> np.ndarray:
        """The dense V x V matrix P over words (for small V: tests, docs)."""
        v = self.vocab
        p = np.tile(self.smoothing * self.base, (v, 1))
        rows = np.repeat(np.arange(v), self.successors.shape[1])
        p[rows, self.successors.reshape(-1)] += (1 - self.smoothing) * self.successor_probs.reshape(-1)
        return p

    def transition_logprob(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        """log P(nxt | prev) for arrays of WORD indices (same shape), float64."""
        prev = np.asarray(prev, dtype=np.int64)
        nxt = np.asarray(nxt, dtype=np.int64)
        keys = prev * self.vocab + nxt
        pos = np.searchsorted(self._edge_keys, keys)
        pos_c = np.minimum(pos, self._edge_keys.size - 1)
        hit = self._edge_keys[pos_c] == keys
        with np.errstate(divide="ignore"):
            off_edge = math.log(self.smoothing) + np.log(self.base[nxt])
        return np.where(hit, self._edge_logp[pos_c], off_edge)

    def block_loglik(self, blocks: np.ndarray) -> np.ndarray:
        """Exact log-probability (nats) of each row of an (n, L) array of token ids under the source.

        log pi(x_1) + sum_t log P(x_t | x_{t-1}): the first token under the stationary distribution,
        as for a block cut from a stationary run. -inf for a row holding a special, unknown or
        out-of-range id.
        """
        x = np.asarray(blocks)
        if x.ndim != 2:
            raise ValueError(f"block_loglik wants an (n, L) array of token ids, got shape {x.shape}")
        if x.shape[1] == 0:
            raise ValueError("block_loglik needs blocks of at least one token")
        if not np.issubdtype(x.dtype, np.integer):
            raise ValueError(f"token ids must be integers, got dtype {x.dtype}")
        w = x.astype(np.int64) - N_SPECIALS
        bad = ((w < 0) | (w >= self.vocab)).any(axis=1)
        w = np.where((w < 0) | (w >= self.vocab), 0, w)
        with np.errstate(divide="ignore"):
            ll = np.log(self.stationary[w[:, 0]])
        if w.shape[1] > 1:
            ll = ll + self.transition_logprob(w[:, :-1], w[:, 1:]).sum(axis=1)
        return np.where(bad, -np.inf, ll)

    def token_loglik(self, blocks: np.ndarray) -> np.ndarray:
        """Exact log-probability (nats) of each token of an (n, L) array of token ids given the tokens
        before it in its row: log pi(x_1) for the first, log P(x_t | x_{t-1}) after it; (n, L) float64.

        Where the row is a word, the row sums are :meth:`block_loglik`. A special, unknown or
        out-of-range id scores -inf, and the word after it log pi (the chain starts afresh after a
        break, as a block does), so that one bad id marks one token, not the rest of its row.
        """
        x = np.asarray(blocks)
        if x.ndim != 2:
            raise ValueError(f"token_loglik wants an (n, L) array of token ids, got shape {x.shape}")
        if not np.issubdtype(x.dtype, np.integer):
            raise ValueError(f"token ids must be integers, got dtype {x.dtype}")
        w = x.astype(np.int64) - N_SPECIALS
        bad = (w < 0) | (w >= self.vocab)
        w = np.where(bad, 0, w)
        with np.errstate(divide="ignore"):
            out = np.log(self.stationary[w])  # the first token, and every word after a bad id
        if w.shape[1] > 1:
            after_word = ~bad[:, :-1]
            out[:, 1:] = np.where(after_word, self.transition_logprob(w[:, :-1], w[:, 1:]), out[:, 1:])
        out[bad] = -np.inf
        return out

    def sample_stream(self, n_tokens: int, rng: np.random.Generator) -> np.ndarray:
        """One continuous run of ``n_tokens`` token ids (int64), started from pi."""
        return _sample_stream(self, int(n_tokens), rng)

    def sample_blocks(self, n: int, length: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` independent runs of ``length`` token ids each, started from pi: (n, length) int64.
        (A block cut from a stationary stream has this same law.)"""
        n, length = int(n), int(length)
        if n < 0 or length < 1:
            raise ValueError("sample_blocks needs n >= 0 and length >= 1")
        cdf_q = np.cumsum(self.successor_probs, axis=1)
        cdf_q[:, -1] = 1.0
        out = np.empty((n, length), dtype=np.int64)
        w = _draw(np.cumsum(self.stationary), rng.random(n))
        out[:, 0] = w
        cdf_u = np.cumsum(self.base)
        for t in range(1, length):
            smooth = rng.random(n) < self.smoothing
            from_u = _draw(cdf_u, rng.random(n))
            r = rng.random(n)
            k = np.minimum((cdf_q[w] <= r[:, None]).sum(axis=1), cdf_q.shape[1] - 1)
            w = np.where(smooth, from_u, self.successors[w, k])
            out[:, t] = w
        return out + N_SPECIALS

    def decode_words(self, ids: np.ndarray) -> str:
        """Token ids to 'word word ...' without transformers (specials by name)."""
        names = SPECIAL_TOKENS + self.words
        return " ".join(names[int(i)] if 0 <= int(i) < len(names) else UNK for i in np.ravel(ids))


def synthetic_corpus(params: Mapping[str, Any] | None = None) -> SyntheticCorpus:
    """The corpus of the ``source_*`` params (other keys, the run seed among them, are ignored).
    Deterministic, and cached in-process: equal source params give the same object."""
    p = source_params(params)
    return _build(tuple(p[k] for k in SOURCE_PARAMS))


@functools.lru_cache(maxsize=4)
def _build(values: tuple) -> SyntheticCorpus:
    p = dict(zip(SOURCE_PARAMS, values))
    v, k, lam = p["source_vocab"], p["source_branching"], p["source_smoothing"]
    rng = np.random.default_rng([_SEED_TAG, p["source_seed"], 0])

    words = make_words(v, rng)
    u = zipf_weights(v, p["source_zipf"])
    successors = draw_successors(u, k, rng)
    q = np.broadcast_to(zipf_weights(k, p["source_transition_zipf"]), (v, k)).copy()
    pi = stationary_distribution(u, successors, q, lam)

    # Every edge of Q as a sorted key prev * V + next with its smoothed log-probability.
    order = np.argsort(successors, axis=1, kind="stable")
    succ_sorted = np.take_along_axis(successors, order, axis=1)
    q_sorted = np.take_along_axis(q, order, axis=1)
    keys = (np.arange(v)[:, None] * v + succ_sorted).reshape(-1)
    logp = np.log((1 - lam) * q_sorted + lam * u[succ_sorted]).reshape(-1)

    corpus = SyntheticCorpus(
        params=dict(p), words=words, base=_readonly(u), successors=_readonly(successors),
        successor_probs=_readonly(q), smoothing=lam, stationary=_readonly(pi), splits={},
        fingerprint=fingerprint(p), _edge_keys=_readonly(keys), _edge_logp=_readonly(logp))
    total = p["source_tokens"]
    n_held = total // 10
    sizes = {"train": total - 2 * n_held, "validation": n_held, "test": n_held}
    for i, name in enumerate(SPLITS):
        stream_rng = np.random.default_rng([_SEED_TAG, p["source_seed"], 1, i])
        corpus.splits[name] = _readonly(_sample_stream(corpus, sizes[name], stream_rng))
    return corpus


# --------------------------------------------------------------------------------------------------
# Construction (pure NumPy)
# --------------------------------------------------------------------------------------------------


def zipf_weights(n: int, exponent: float) -> np.ndarray:
    """(r + 1)^-exponent for r = 0..n-1, normalised to sum 1 (uniform at exponent 0)."""
    w = np.arange(1, n + 1, dtype=np.float64) ** -float(exponent)
    return w / w.sum()


def make_words(n: int, rng: np.random.Generator) -> tuple[str, ...]:
    """n distinct pronounceable words: 2 or 3 consonant-vowel syllables, sometimes a final consonant."""
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < n:
        m = 4 * (n - len(words)) + 16
        n_syl = rng.integers(2, 4, size=m)
        cons = rng.integers(0, len(_CONSONANTS), size=(m, 4))
        vows = rng.integers(0, len(_VOWELS), size=(m, 3))
        coda = rng.integers(0, 2 * len(_CONSONANTS), size=m)  # half the words end in a vowel
        for i in range(m):
            s = "".join(_CONSONANTS[cons[i, j]] + _VOWELS[vows[i, j]] for j in range(n_syl[i]))
            if coda[i] < len(_CONSONANTS):
                s += _CONSONANTS[coda[i]]
            if s not in seen:
                seen.add(s)
                words.append(s)
                if len(words) == n:
                    break
    return tuple(words)


def draw_successors(u: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """(V, k) word indices: for every word, k distinct successors drawn by u without replacement, in
    draw order (Gumbel top-k: the k largest log u_b + Gumbel noise, largest first)."""
    v = u.size
    logu = np.log(u)
    out = np.empty((v, k), dtype=np.int64)
    step = max(1, _GUMBEL_CHUNK // v)
    for start in range(0, v, step):
        rows = min(step, v - start)
        keys = logu + rng.gumbel(size=(rows, v))
        top = np.argpartition(-keys, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1, kind="stable")
        out[start : start + rows] = np.take_along_axis(top, order, axis=1)
    return out


def stationary_distribution(u: np.ndarray, successors: np.ndarray, q: np.ndarray, lam: float,
                            tol: float = 1e-15, max_iter: int = 1_000_000) -> np.ndarray:
    """pi with pi = (1 - lam) pi Q + lam u and sum pi = 1, by fixed-point iteration from u.

    The map contracts the L1 error by at least (1 - lam) per step (usually much more, as Q mixes);
    the iteration stops when a step changes pi by less than ``tol`` in L1.
    """
    v, k = successors.shape
    rows = np.repeat(np.arange(v), k)
    cols = successors.reshape(-1)
    weights = (1 - lam) * q.reshape(-1)
    pi = u.copy()
    for _ in range(max_iter):
        new = np.bincount(cols, weights=pi[rows] * weights, minlength=v) + lam * u
        new /= new.sum()
        if np.abs(new - pi).sum() < tol:
            return new
        pi = new
    raise RuntimeError("the stationary distribution did not converge")  # pragma: no cover


def build_tokenizer(words) -> Any:
    """A word-level PreTrainedTokenizerFast over SPECIAL_TOKENS + words (ids in that order)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + tuple(words))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=EOS, eos_token=EOS,
                                   pad_token=PAD, unk_token=UNK)


# --------------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------------


def _draw(cdf: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Inverse-CDF draws: the first index whose cumulative probability exceeds r."""
    return np.minimum(np.searchsorted(cdf, r, side="right"), cdf.size - 1)


def _sample_stream(corpus: SyntheticCorpus, n_tokens: int, rng: np.random.Generator) -> np.ndarray:
    """A run of the chain from pi: with probability lam the next word is drawn from u, otherwise from
    the current word's row of Q (a mixture, so P = (1 - lam) Q + lam u). Sequential, with the
    per-step work on Python lists, which is several times faster than NumPy calls per token."""
    if n_tokens < 0:
        raise ValueError("n_tokens must be >= 0")
    out = np.empty(n_tokens, dtype=np.int64)
    if n_tokens == 0:
        return out
    smooth = (rng.random(n_tokens) < corpus.smoothing).tolist()
    from_u = _draw(np.cumsum(corpus.base), rng.random(n_tokens)).tolist()
    r = rng.random(n_tokens).tolist()
    cdf = np.cumsum(corpus.successor_probs, axis=1)
    cdf[:, -1] = 1.0
    cdf_rows = cdf.tolist()
    succ_rows = corpus.successors.tolist()
    k_max = corpus.successors.shape[1] - 1
    w = int(_draw(np.cumsum(corpus.stationary), rng.random(1))[0])
    seq = [w]
    for t in range(1, n_tokens):
        if smooth[t]:
            w = from_u[t]
        else:
            w = succ_rows[w][min(bisect.bisect_right(cdf_rows[w], r[t]), k_max)]
        seq.append(w)
    out[:] = seq
    return out + N_SPECIALS


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    a.setflags(write=False)
    return a
