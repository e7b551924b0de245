"""The language-model track's mitigations: the truncated cross-entropy (trainer option ``tce``,
Shabgahi et al. 2025) and token-level editing (policy ``token-edit``, Zhu et al. 2024).

Unit tests on a tiny OPT saved to a local folder (dropout off, so a training step's loss can be
recomputed outside the trainer), and two `bench run`s of the smoke preset at test size.
"""

import functools
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import bench.api as cb  # noqa: E402
from bench import BenchError, FitRequest, PolicyContext, RealData, Samples  # noqa: E402
from bench import results as R  # noqa: E402
from bench import runfolder as RF  # noqa: E402
from collapse_bench_plugins import hf_lm  # noqa: E402
from collapse_bench_plugins import hf_model as H  # noqa: E402
from tests.helpers import bench_cli, save_tiny_opt  # noqa: E402
from tests.test_lm_track import TINY  # noqa: E402

WORDS = 20  # ids 4..23; 0..3 are <pad>, <s>, </s>, <unk>
BLOCK = 8


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    H.clear_model_cache()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A word-level tokenizer and a tiny OPT without dropout, saved side by side."""
    return save_tiny_opt(tmp_path_factory.mktemp("tiny-opt-no-dropout"), WORDS, dropout=0.0, attention_dropout=0.0,
                         activation_dropout=0.0, layerdrop=0.0)


@pytest.fixture(scope="module")
def params(folder):
    return {**H.MODEL_PARAMS, "model": str(folder), "revision": None, "tokenizer": None, "device": "cpu",
            "dtype": "fp32", "batch_size": 4, "eval_batch_size": 5, "epochs": 2, "new_tokens": BLOCK}


@pytest.fixture(scope="module")
def init(params):
    return H.initial_state(params, np.random.default_rng(0))


@pytest.fixture(scope="module")
def confident(params, init):
    """A state fitted hard to a 4-word cycle: every next word of the cycle has probability > 0.99."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return H.fit(request(params, cyclic(16, [4, 5, 6, 7]), init=init, lr=5e-2, min_lr=5e-3, epochs=15))
    finally:
        torch.set_num_threads(threads)


def request(params, data, init=None, generation=0, seed=0, **overrides):
    return FitRequest(data=Samples("tokens", data), validation=None, start="pretrained", init=init,
                      params={**params, **overrides}, rng=np.random.default_rng(seed), generation=generation)


def blocks(n, seed=0):
    return np.random.default_rng(seed).integers(4, 4 + WORDS, size=(n, BLOCK)).astype(np.int64)


def cyclic(n, words, seed=0):
    words = np.asarray(words)
    phase = np.random.default_rng(seed).integers(0, len(words), size=n)
    return words[(phase[:, None] + np.arange(BLOCK)[None, :]) % len(words)].astype(np.int64)


def target_probs(state, x, params):
    """p(b_t | b_<t) for t = 1..L-1, (n, L-1) float64, computed here from softmax."""
    model = H.build_model(state, params)
    with torch.no_grad():
        logits = model(input_ids=torch.from_numpy(x)).logits[:, :-1].double()
    return torch.softmax(logits, dim=-1).gather(-1, torch.from_numpy(x[:, 1:, None]))[..., 0].numpy()


def equal_states(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------------------------------
# tce
# --------------------------------------------------------------------------------------------------


def test_tce_one_masks_nothing_even_where_the_probability_rounds_to_one():
    logits = torch.tensor([[200.0, -200.0, 0.0], [0.0, 0.0, 0.0], [50.0, 49.0, -1e4]])
    labels = torch.tensor([0, 2, 0])
    assert torch.softmax(logits, -1)[0, 0].item() == 1.0  # float32 rounds it to exactly 1
    out, mask = H.truncate_labels(logits, labels, 1.0)
    assert not mask.any() and torch.equal(out, labels)
    out, mask = H.truncate_labels(logits, labels, 0.5)  # 1.0, 1/3, 0.73: the first and the last go
    assert mask.tolist() == [True, False, True] and out.tolist() == [H.IGNORE_INDEX, 2, H.IGNORE_INDEX]


@pytest.mark.slow
def test_tce_one_is_plain_cross_entropy_bit_for_bit(params, confident):
    """At generation 1 the masking runs (and at G = 1 masks nothing); at generation 0 it does not run
    at all. On a model predicting most tokens with probability near 1 both give the same states and
    losses, bit for bit, while G just below 1 masks many of those tokens."""
    data = cyclic(12, [4, 5, 6, 7], seed=3)
    plain, plain_history = H.fit_with_history(request(params, data, init=confident, generation=0))
    one, one_history = H.fit_with_history(request(params, data, init=confident, generation=1, tce=1.0))
    unset, _ = H.fit_with_history(request(params, data, init=confident, generation=1))
    assert equal_states(plain, one) and equal_states(plain, unset)
    assert [h["train_loss"] for h in one_history] == [h["train_loss"] for h in plain_history]
    assert all(h["tce_masked"] == 0.0 for h in one_history)
    _, near_one = H.fit_with_history(request(params, data, init=confident, generation=1, tce=0.999))
    assert target_probs(confident, data, params).min() > 0.99
    assert near_one[0]["tce_masked"] > 0.2, "the model is confident: G < 1 masks tokens"


def test_tce_loss_is_the_mean_cross_entropy_over_the_tokens_at_or_below_G(params, confident):
    """One step (every block in one batch, one epoch): the recorded training loss is the loss at the
    initial weights, recomputed here with cross_entropy on the unmasked tokens only."""
    data = np.concatenate([cyclic(6, [4, 5, 6, 7], seed=4), blocks(6, seed=5)])
    p = target_probs(confident, data, params).ravel()
    # G in the middle of the widest gap between the middle probabilities: no token near the edge
    inner = np.sort(p[(p > np.quantile(p, 0.3)) & (p < np.quantile(p, 0.7))])
    gap = int(np.argmax(np.diff(inner)))
    G = float((inner[gap] + inner[gap + 1]) / 2)
    keep = p <= G
    assert 0.2 < keep.mean() < 0.9, keep.mean()

    model = H.build_model(confident, params)
    with torch.no_grad():
        logits = model(input_ids=torch.from_numpy(data)).logits[:, :-1]
    logits = logits.reshape(-1, logits.shape[-1])
    targets = torch.from_numpy(data[:, 1:].reshape(-1))
    kept = torch.from_numpy(keep)
    expected = torch.nn.functional.cross_entropy(logits[kept], targets[kept]).item()
    plain = torch.nn.functional.cross_entropy(logits, targets).item()

    _, history = H.fit_with_history(request(params, data, init=confident, generation=1, tce=G,
                                            batch_size=len(data), epochs=1))
    assert history[0]["train_loss"] == pytest.approx(expected, rel=1e-5)
    assert abs(expected - plain) > 0.1, "the masked tokens change the mean"
    assert history[0]["tce_masked"] == pytest.approx(1 - keep.mean(), abs=1e-12)


def test_tce_is_off_at_generation_zero(params, init):
    data = blocks(8)
    base = H.fit(request(params, data, init=init, generation=0))
    assert equal_states(base, H.fit(request(params, data, init=init, generation=0, tce=0.05)))
    assert not equal_states(base, H.fit(request(params, data, init=init, generation=1, tce=0.05)))


def test_a_batch_with_every_token_masked_is_skipped(params, init):
    """G below every probability: no token carries a loss, no step is taken, the loss is 0 (not NaN)."""
    data = blocks(8)
    assert target_probs(init, data, params).min() > 1e-6
    state, history = H.fit_with_history(request(params, data, init=init, generation=1, tce=1e-6))
    assert equal_states(state, init)
    assert [h["train_loss"] for h in history] == [0.0, 0.0]
    assert [h["tce_masked"] for h in history] == [1.0, 1.0]


@pytest.mark.parametrize("value", [0, 0.0, -0.5, 1.5, float("nan"), True, "high"])
def test_tce_outside_zero_to_one_is_refused(params, init, value):
    with pytest.raises(BenchError, match=r"tce .* must lie in \(0, 1\]"):
        H.fit(request(params, blocks(4), init=init, generation=1, tce=value))
    with pytest.raises(BenchError, match="tce"):
        hf_lm.check({**cb.specs("opt125m", "smoke")[0].params, "tce": value})


# --------------------------------------------------------------------------------------------------
# token-edit
# --------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def token_edit_policy():
    from bench.plugins import Bench

    return Bench().policies.get("token-edit")


def edit(state, real, p, params, seed=0, record=None):
    """The registered token-edit policy's build, on a PolicyContext as the loop makes one."""
    policy = token_edit_policy()
    ctx = PolicyContext(generation=1, real=RealData(train=Samples("tokens", real), test=Samples("tokens", real)),
                        synthetic=[], params={**policy.params, "p": p}, rng=np.random.default_rng(seed),
                        score=None, state=state, model_params=params, record={} if record is None else record)
    return policy.build(ctx), ctx.record


def test_token_edit_is_registered_as_the_brief_says(bench_plugins):
    policy = bench_plugins.policies.get("token-edit")
    assert (policy.params, policy.positional, policy.kinds, policy.needs) == ({"p": 0.99}, "p", ("tokens",),
                                                                              ("token-probs",))
    assert "Zhu et al. 2024" in policy.citation
    for bad in (-0.1, 1.01, "x", True):
        with pytest.raises(ValueError, match="token-edit"):
            policy.validate({"p": bad})
    bundle = bench_plugins.models.get("opt125m")
    assert bundle.features({"dataset": "synthetic"}) == {"token-probs", "exact-loglik"}
    assert bundle.features({"dataset": "wikitext"}) == {"token-probs"}
    assert bundle.headline.metric == "test-nll" and bundle.headline.threshold == pytest.approx(math.log(1.5))
    assert bundle.metrics[0] == "test-nll"
    mitigations = {m: bench_plugins.mitigations.get(m) for m in ("tce", "token-edit")}
    assert (mitigations["tce"].kind, mitigations["tce"].param, mitigations["tce"].neutral) == ("trainer", "tce", 1.0)
    assert bench_plugins.trainers.get("hf-lm-train").options == {"tce": 1.0}
    assert (mitigations["token-edit"].kind, mitigations["token-edit"].needs) == ("policy", ("token-probs",))


def test_token_edit_above_every_probability_returns_the_real_data(params, confident):
    real = cyclic(10, [4, 5, 6, 7])
    assert target_probs(confident, real, params).max() > 0.99  # so P = 1 is the only safe "never"
    out, record = edit(confident, real, 1.0, params)
    assert out.kind == "tokens" and np.array_equal(out.data, real)
    assert record["tokens_edited"] == 0 and record["edit_fraction"] == 0.0


def test_token_edit_resamples_only_tokens_above_P(params, init):
    real = blocks(30, seed=1)
    p = target_probs(init, real, params)
    out, record = edit(init, real, 0.001, params)  # every probability is above 0.001
    assert p.min() > 0.001 and out.data.shape == real.shape and out.data.dtype == np.int64
    assert np.array_equal(out.data[:, 0], real[:, 0]), "the first token has no prediction: kept"
    assert (out.data != real).mean() > 0.8, "resampled from about 24 tokens: most change"
    assert record["tokens_edited"] == real.shape[0] * (BLOCK - 1) and record["edit_fraction"] == 1.0

    P = float(np.median(p))
    out, record = edit(init, real, P, params)
    changed = out.data[:, 1:] != real[:, 1:]
    above = p > P
    assert changed.any() and not (changed & ~above).any(), "only tokens with probability above P change"
    assert record["tokens_edited"] == int(above.sum()) and record["tokens_changed"] == int(changed.sum())
    assert record["edit_fraction"] == pytest.approx(above.mean())


def test_token_edit_draws_from_the_models_distribution(params, confident):
    """After the confident model, the cycle's next word has probability near 1: resampling keeps it;
    under a uniform-ish model (P = 0) the draws spread over the vocabulary, specials banned on ask."""
    real = cyclic(10, [4, 5, 6, 7], seed=2)
    p = target_probs(confident, real, params)
    out, _ = edit(confident, real, 0.0, params)
    assert (out.data[:, 1:] == real[:, 1:]).mean() >= 0.9 * (p > 0.99).mean()
    suppressed, _ = edit(H.initial_state(params, np.random.default_rng(0)), blocks(40), 0.0,
                         {**params, "suppress_special": True})
    free, _ = edit(H.initial_state(params, np.random.default_rng(0)), blocks(40), 0.0, params)
    assert not np.isin(suppressed.data, [0, 3]).any(), "pad and unk never drawn with suppress_special"
    assert np.isin(free.data, [0, 1, 2, 3]).any(), "without it the specials are drawn too"


def test_token_edit_is_deterministic_for_an_rng(params, init):
    real = blocks(12, seed=2)
    a, _ = edit(init, real, 0.01, params, seed=5)
    b, _ = edit(init, real, 0.01, params, seed=5)
    c, _ = edit(init, real, 0.01, params, seed=6)
    torch.manual_seed(11)
    expected_next = torch.rand(2)
    torch.manual_seed(11)
    edit(init, real, 0.01, params, seed=5)
    assert torch.equal(torch.rand(2), expected_next), "torch's global stream untouched"
    assert np.array_equal(a.data, b.data) and not np.array_equal(a.data, c.data)


# --------------------------------------------------------------------------------------------------
# end to end
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_smoke_runs_with_tce_and_with_token_edit(capsys, tmp_path):
    """G = P = 0.02: after one epoch at test size the toy model gives most tokens a few percent (the
    source has 60 words), so both the mask and the edit have work to do; at 0.9 neither would."""
    runs = {}
    for name, extra in (("tce", ["--set", "tce=0.02"]), ("token-edit", ["--policy", "token-edit:0.02"])):
        out = tmp_path / name
        code, _, err = bench_cli(capsys, "run", "--plugin", "opt125m", "--preset", "smoke", "-g", "1",
                                 "--out", str(out), *TINY, *extra)
        assert code == 0, err
        (run_json,) = out.glob("*/run.json")
        runs[name] = run_json.parent
        info = R.read_json(run_json)
        assert info["status"] == "complete" and info["generations_done"] == 2  # rows 0 and 1
        assert info["headline"]["metric"] == "test-nll"
    assert R.read_json(runs["tce"] / "run.json")["spec"]["params"]["tce"] == 0.02
    gen1 = RF.generation_info(runs["token-edit"], 1)
    assert gen1["tokens_edited"] > 0 and 0.0 < gen1["edit_fraction"] < 1.0
    assert 0 < gen1["tokens_changed"] <= gen1["tokens_edited"]
    # TCE leaves generation 0 alone: both runs (seed 0) have the same M_0, so the same row 0
    rows = {name: cb.metrics(path) for name, path in runs.items()}
    zero = {name: df[(df.generation == 0) & ~df.metric.str.startswith("throughput/")].reset_index(drop=True)
            for name, df in rows.items()}
    assert "test-nll" in set(zero["tce"].metric)
    assert zero["tce"][["metric", "value"]].equals(zero["token-edit"][["metric", "value"]])


def test_smoke_refuses_tce_out_of_range_before_training(capsys, tmp_path):
    code, _, err = bench_cli(capsys, "run", "--plugin", "opt125m", "--preset", "smoke", "-g", "1",
                             "--out", str(tmp_path), *TINY, "--set", "tce=1.5")
    assert code == 2 and "tce" in err and "(0, 1]" in err
    assert not list(tmp_path.glob("*/gens/*"))
