"""The LM track's model functions (plugins/hf_model.py) on a tiny OPT saved to a local folder.

Everything goes through the real from_pretrained path, offline: a word-level tokenizer and an OPT
of about 5k parameters are saved with save_pretrained, and params name that folder.
"""

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from bench import BenchError, FitRequest, GenerateRequest, Samples, ScoreRequest  # noqa: E402
from collapse_bench_plugins import hf_model as H  # noqa: E402
from tests.helpers import save_tiny_opt  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
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
    """A tiny tokenizer and a tiny OPT (tied lm_head) saved side by side."""
    return save_tiny_opt(tmp_path_factory.mktemp("tiny-opt"), WORDS)


@pytest.fixture
def params(folder):
    return {**H.MODEL_PARAMS, "model": str(folder), "revision": None, "tokenizer": None, "device": "cpu",
            "dtype": "fp32", "batch_size": 4, "eval_batch_size": 3, "epochs": 3, "new_tokens": 6,
            "gen_batch_size": 3, "num_beams": 3}


@pytest.fixture(scope="module")
def pretrained(folder):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def blocks(n, seed=0, low=4, high=4 + WORDS):
    return np.random.default_rng(seed).integers(low, high, size=(n, BLOCK)).astype(np.int64)


def cyclic(n, words, seed=0):
    """Blocks of a repeating word cycle, each starting at a random phase."""
    words = np.asarray(words)
    phase = np.random.default_rng(seed).integers(0, len(words), size=n)
    return words[(phase[:, None] + np.arange(BLOCK)[None, :]) % len(words)].astype(np.int64)


def nll_per_token(state, x, params):
    s = H.score(ScoreRequest(state, Samples("tokens", x), params))
    return s.nll_per_unit


# --------------------------------------------------------------------------------------------------
# State <-> model
# --------------------------------------------------------------------------------------------------


def test_tied_weights_round_trip(folder, params, pretrained):
    state = H.initial_state(params, np.random.default_rng(0))
    assert "lm_head.weight" not in state  # stored once, as the embedding
    assert all(v.dtype == np.float32 for v in state.values())
    reference = pretrained.state_dict()
    for key, value in state.items():
        np.testing.assert_array_equal(value, reference[key].numpy())

    model = H.build_model(state, params)
    assert model.lm_head.weight is model.model.decoder.embed_tokens.weight
    again = H.state_from_model(model)
    assert again.keys() == state.keys()
    for key in state:
        np.testing.assert_array_equal(again[key], state[key])
        assert not np.shares_memory(again[key], state[key])
    x = torch.from_numpy(blocks(2))
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, pretrained(x).logits, rtol=0, atol=0)


def test_build_model_rejects_a_state_of_another_architecture(params):
    toy = {**params, "model": "toy-opt", "tokenizer": params["model"], "toy_hidden": 8, "toy_heads": 2,
           "toy_ffn": 16, "toy_layers": 1, "toy_positions": 32}
    state = H.initial_state(toy, np.random.default_rng(0))
    with pytest.raises(BenchError, match="does not"):
        H.build_model(state, params)


def test_toy_initial_state_is_seeded_and_sized_from_the_tokenizer(params, folder):
    toy = {**params, "model": "toy-opt", "tokenizer": str(folder), "toy_hidden": 8, "toy_heads": 2,
           "toy_ffn": 16, "toy_layers": 1, "toy_positions": 32}
    a = H.initial_state(toy, np.random.default_rng(5))
    b = H.initial_state(toy, np.random.default_rng(5))
    c = H.initial_state(toy, np.random.default_rng(6))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["model.decoder.embed_tokens.weight"], c["model.decoder.embed_tokens.weight"])
    assert a["model.decoder.embed_tokens.weight"].shape == (4 + WORDS, 8)  # len(tokenizer) x toy_hidden
    assert a["model.decoder.embed_positions.weight"].shape == (32 + 2, 8)  # OPT's position offset of 2
    assert "lm_head.weight" not in a
    config = H.toy_config(toy)
    assert (config.pad_token_id, config.bos_token_id, config.eos_token_id) == (0, 1, 2)
    assert (config.num_hidden_layers, config.ffn_dim, config.num_attention_heads) == (1, 16, 2)
    # the pad row starts at zero (nn.Embedding padding_idx), as in every OPT
    assert not a["model.decoder.embed_tokens.weight"][0].any()


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


def test_learning_rate_is_the_released_cosine_annealing_per_epoch(params):
    p = {**params, "lr": 1e-3, "min_lr": 1e-6, "epochs": 5, "lr_schedule": "epoch"}
    weight = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([weight], lr=p["lr"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=p["epochs"], eta_min=p["min_lr"])
    steps_per_epoch = 3
    for epoch in range(p["epochs"]):
        expected = opt.param_groups[0]["lr"]
        for s in range(steps_per_epoch):
            lr = H.learning_rate(epoch * steps_per_epoch + s, steps_per_epoch, p)
            assert lr == pytest.approx(expected, rel=1e-12)
        opt.step()
        sched.step()


def test_learning_rate_per_step_and_warmup(params):
    p = {**params, "lr": 1e-3, "min_lr": 1e-5, "epochs": 2, "lr_schedule": "step", "warmup_steps": 0}
    assert H.learning_rate(0, 5, p) == pytest.approx(1e-3)
    assert H.learning_rate(5, 5, p) == pytest.approx((1e-3 + 1e-5) / 2)  # half way: cos(pi/2) = 0
    assert H.learning_rate(9, 5, p) == pytest.approx(1e-5 + (1e-3 - 1e-5) * (1 + math.cos(math.pi * 0.9)) / 2)
    warm = {**p, "warmup_steps": 4}
    assert H.learning_rate(1, 5, warm) == pytest.approx(H.learning_rate(1, 5, p) * 2 / 4)
    assert H.learning_rate(4, 5, warm) == pytest.approx(H.learning_rate(4, 5, p))
    with pytest.raises(BenchError, match="lr_schedule"):
        H.learning_rate(0, 5, {**p, "lr_schedule": "linear"})


def request(params, data, validation=None, init=None, seed=0, **overrides):
    return FitRequest(data=Samples("tokens", data),
                      validation=None if validation is None else Samples("tokens", validation),
                      start="pretrained", init=init, params={**params, **overrides},
                      rng=np.random.default_rng(seed), generation=0)


def test_fit_lowers_training_loss_on_a_repetitive_corpus(params):
    """A 5-word cycle: log 5 nats per token is knowing the words but not their order; the fitted
    model must go well below it (it starts near log 24, a uniform guess)."""
    init = H.initial_state(params, np.random.default_rng(0))
    train = cyclic(12, [4, 5, 6, 7, 8])
    before = nll_per_token(init, train, params)
    state, history = H.fit_with_history(request(params, train, cyclic(6, [4, 5, 6, 7, 8], seed=1),
                                                init=init, lr=3e-2, epochs=8))
    after = nll_per_token(state, train, params)
    assert len(history) == 8
    assert before > 0.9 * math.log(4 + WORDS)
    assert after < 0.5 * math.log(5), (before, after)
    train_losses = [h["train_loss"] for h in history]
    assert all(b < a for a, b in zip(train_losses, train_losses[1:])), train_losses
    assert state.keys() == init.keys()


def test_fit_keeps_the_epoch_with_the_best_validation_loss(params):
    """Training on one word cycle and validating on another: validation gets worse every epoch, so
    the first epoch is the best; without validation the last epoch is returned. Both runs follow
    the same training trajectory (validation draws no random numbers), which checks the selection."""
    init = H.initial_state(params, np.random.default_rng(0))
    train, val = cyclic(12, [4, 5, 6, 7]), cyclic(6, [10, 11, 12, 13], seed=1)
    best, history = H.fit_with_history(request(params, train, val, init=init, lr=1e-2))
    last, history_none = H.fit_with_history(request(params, train, None, init=init, lr=1e-2))
    val_losses = [h["val_loss"] for h in history]
    assert np.argmin(val_losses) == 0 and val_losses[-1] > val_losses[0], val_losses
    assert all(math.isnan(h["val_loss"]) for h in history_none)
    assert [h["train_loss"] for h in history] == [h["train_loss"] for h in history_none]
    # the returned states are those of epoch 0 and of the last epoch: their validation losses say so
    assert nll_per_token(best, val, params) == pytest.approx(val_losses[0], rel=1e-5)
    assert nll_per_token(last, val, params) == pytest.approx(val_losses[-1], rel=1e-5)


def test_fit_is_deterministic_for_a_seed_and_leaves_torch_rng_alone(params):
    init = H.initial_state(params, np.random.default_rng(0))
    train = blocks(6)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = H.fit(request(params, train, init=init, seed=7, epochs=1))
    assert torch.equal(torch.rand(3), expected_next)  # the caller's global stream is untouched
    b = H.fit(request(params, train, init=init, seed=7, epochs=1))
    c = H.fit(request(params, train, init=init, seed=8, epochs=1))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], c[k]) for k in a)


def test_fit_without_init_starts_from_initial_state(params):
    state = H.fit(request(params, blocks(4), epochs=1))
    assert state.keys() == H.initial_state(params, np.random.default_rng(0)).keys()


def test_position_offset_trains_the_positions_a_continuation_uses(params):
    """Without an offset, positions 0..L-2 are trained (the last token predicts nothing and no token
    attends to it); with it, up to L - 2 + new_tokens, every input position a continuation uses.
    Weight decay is off so untrained rows stay exactly as they were (Adam moves only rows with a
    gradient)."""
    init = H.initial_state(params, np.random.default_rng(0))
    key = "model.decoder.embed_positions.weight"  # row = position + 2
    moved = {}
    for offset in (False, True):
        state = H.fit(request(params, blocks(8), init=init, epochs=2, weight_decay=0.0, position_offset=offset))
        moved[offset] = np.flatnonzero((state[key] != init[key]).any(axis=1)) - 2
    assert moved[False].tolist() == list(range(BLOCK - 1))
    assert moved[True].tolist() == list(range(BLOCK - 1 + params["new_tokens"]))


# --------------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------------


def test_generate_shapes_columns_and_determinism(params, folder):
    from transformers import AutoTokenizer

    state = H.initial_state(params, np.random.default_rng(0))
    prompts = Samples("tokens", blocks(7))
    out = H.generate(GenerateRequest(state, 5, prompts, params, np.random.default_rng(1), 0))
    assert out.kind == "tokens" and out.data.dtype == np.int64 and out.data.shape == (5, params["new_tokens"])
    tok = AutoTokenizer.from_pretrained(folder)
    assert list(out.columns["text"]) == [tok.decode(row) for row in out.data]
    assert list(out.columns["prompt"]) == [tok.decode(row) for row in prompts.data[:5]]
    again = H.generate(GenerateRequest(state, 5, prompts, params, np.random.default_rng(1), 0))
    assert np.array_equal(out.data, again.data)
    # beam search uses no random numbers, and batching does not matter
    other = H.generate(GenerateRequest(state, 5, prompts, {**params, "gen_batch_size": 2}, np.random.default_rng(9), 0))
    assert np.array_equal(other.data, out.data)
    empty = H.generate(GenerateRequest(state, 0, prompts, params, np.random.default_rng(1), 0))
    assert empty.data.shape == (0, params["new_tokens"])
    with pytest.raises(ValueError, match="prompts"):
        H.generate(GenerateRequest(state, 8, prompts, params, np.random.default_rng(1), 0))


def _released_generate():
    path = ROOT / "benchmarks" / "generation_speed.py"
    spec = importlib.util.spec_from_file_location("generation_speed", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.released_generate


def test_generate_equals_the_released_code_loop(params, pretrained):
    """5-beam search with repetition penalty 3.0, min = max new tokens: the same tokens as the
    released code's model.generate loop (other batch size), on CPU in fp32."""
    p = {**params, "num_beams": 5, "repetition_penalty": 3.0, "gen_batch_size": 4}
    state = H.initial_state(p, np.random.default_rng(0))
    x = blocks(9, seed=3)
    ours = H.generate(GenerateRequest(state, 9, Samples("tokens", x), p, np.random.default_rng(0), 0)).data
    theirs = _released_generate()(pretrained, x, batch_size=5, num_beams=5, new_tokens=p["new_tokens"],
                                  repetition_penalty=3.0)
    assert theirs.shape == ours.shape == (9, p["new_tokens"])
    np.testing.assert_array_equal(ours, theirs)


def test_generation_never_stops_early_at_eos(params):
    """A model whose every next-token choice is eos still yields exactly new_tokens tokens, none eos.

    The final layer norm's output is x_hat + 1 (weights 1, bias 1) and the logits are its dot
    products with the tied embeddings; an eos row of 50s gives eos a logit of 50 * hidden."""
    state = dict(H.initial_state(params, np.random.default_rng(0)))
    for part in ("weight", "bias"):
        key = f"model.decoder.final_layer_norm.{part}"
        state[key] = np.ones_like(state[key])
    emb = state["model.decoder.embed_tokens.weight"].copy()
    emb[2] = 50.0
    state["model.decoder.embed_tokens.weight"] = emb
    x = blocks(3)
    with torch.no_grad():
        assert (H.build_model(state, params)(torch.from_numpy(x)).logits.argmax(-1) == 2).all()
    p = {**params, "num_beams": 1, "repetition_penalty": 1.0}
    out = H.generate(GenerateRequest(state, 3, Samples("tokens", x), p, np.random.default_rng(0), 0))
    assert out.data.shape == (3, p["new_tokens"])
    assert not (out.data == 2).any()


def test_sampling_is_seeded_by_rng(params, pretrained):
    p = {**params, "do_sample": True, "num_beams": 1, "repetition_penalty": 1.0, "temperature": 1.0}
    state = H.initial_state(p, np.random.default_rng(0))
    prompts = Samples("tokens", blocks(6))
    torch.manual_seed(5)
    expected_next = torch.rand(2)
    torch.manual_seed(5)
    a = H.generate(GenerateRequest(state, 6, prompts, p, np.random.default_rng(3), 0)).data
    assert torch.equal(torch.rand(2), expected_next)  # global torch stream untouched
    b = H.generate(GenerateRequest(state, 6, prompts, p, np.random.default_rng(3), 0)).data
    c = H.generate(GenerateRequest(state, 6, prompts, p, np.random.default_rng(4), 0)).data
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # the same draws as transformers' own sampling seeded the same way, batch by batch
    seed = int(np.random.default_rng(3).integers(0, 2**62))
    torch.manual_seed(seed)
    ref = []
    with torch.no_grad():
        for start in range(0, 6, p["gen_batch_size"]):
            ids = torch.from_numpy(prompts.data[start : start + p["gen_batch_size"]])
            out = pretrained.generate(ids, do_sample=True, num_beams=1, top_k=0, top_p=1.0, temperature=1.0,
                                      min_new_tokens=p["new_tokens"], max_new_tokens=p["new_tokens"])
            ref.append(out[:, BLOCK:])
    np.testing.assert_array_equal(a, torch.cat(ref).numpy())


def test_generate_refuses_prompts_and_continuations_beyond_the_positions(params):
    state = H.initial_state(params, np.random.default_rng(0))
    with pytest.raises(BenchError, match="positions"):
        H.generate(GenerateRequest(state, 1, Samples("tokens", blocks(1)), {**params, "new_tokens": 30},
                                   np.random.default_rng(0), 0))


# --------------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------------


def test_score_is_the_sum_of_next_token_log_probabilities(params, pretrained):
    state = H.initial_state(params, np.random.default_rng(0))
    x = blocks(5, seed=2)
    scores = H.score(ScoreRequest(state, Samples("tokens", x), params))
    with torch.no_grad():
        logp = torch.log_softmax(pretrained(torch.from_numpy(x)).logits.double(), dim=-1).numpy()
    expected = [sum(logp[i, t - 1, x[i, t]] for t in range(1, BLOCK)) for i in range(len(x))]
    np.testing.assert_allclose(scores.loglik, expected, rtol=1e-5)
    assert scores.units.tolist() == [BLOCK - 1] * len(x)
    assert scores.loglik.dtype == np.float64


def test_models_are_cached_per_state(params):
    a = H.initial_state(params, np.random.default_rng(0))
    b = {k: v.copy() for k, v in a.items()}
    device, dtype = H.resolve_device(params), torch.float32
    model_a = H.cached_model(a, params, device, dtype)
    assert H.cached_model(a, params, device, dtype) is model_a
    assert H.cached_model(b, params, device, dtype) is not model_a
    a["model.decoder.final_layer_norm.bias"] = a["model.decoder.final_layer_norm.bias"] + 1.0  # replaced value
    rebuilt = H.cached_model(a, params, device, dtype)
    assert rebuilt is not model_a
    np.testing.assert_array_equal(rebuilt.model.decoder.final_layer_norm.bias.detach().numpy(),
                                  a["model.decoder.final_layer_norm.bias"])


# --------------------------------------------------------------------------------------------------
# Machine and errors
# --------------------------------------------------------------------------------------------------


def test_device_and_dtype_resolution():
    cpu = torch.device("cpu")
    assert H.resolve_dtype("auto", cpu) == torch.float32
    assert H.resolve_dtype("bf16", cpu) == torch.bfloat16
    assert H.resolve_dtype("fp16", cpu) == torch.float16
    with pytest.raises(BenchError, match="dtype"):
        H.resolve_dtype("fp8", cpu)
    if not torch.cuda.is_available():
        with pytest.raises(BenchError, match="cuda"):
            H.resolve_device({"device": "cuda"})
        assert H.resolve_device({"device": "auto"}).type in ("cpu", "mps")


@pytest.mark.parametrize("key, value", [("batch_size", 0), ("new_tokens", 2.5), ("num_beams", True),
                                        ("top_p", 0.0), ("min_lr", 1.0), ("dtype", "fp64"), ("temperature", 0)])
def test_impossible_params_are_named(params, key, value):
    with pytest.raises(BenchError, match=key):
        H.check_params({**params, key: value})


def test_a_missing_model_folder_is_named(params, tmp_path):
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(BenchError, match="no-such-model") as err:
        H.initial_state({**params, "model": missing}, np.random.default_rng(0))
    assert "--preset smoke" in str(err.value)
    state = H.initial_state(params, np.random.default_rng(0))
    with pytest.raises(BenchError, match="no-such-model"):
        H.score(ScoreRequest(state, Samples("tokens", blocks(1)), {**params, "model": missing}))
    with pytest.raises(BenchError, match="no-such-tokenizer"):
        H.initial_state({**params, "model": "toy-opt", "tokenizer": str(tmp_path / "no-such-tokenizer")},
                        np.random.default_rng(0))


def test_read_only_token_arrays_become_tensors_without_a_torch_warning():
    """Samples read back from a run folder on resume are read-only; torch warns when asked to share
    their memory, so they are copied (and writable arrays still shared)."""
    import warnings

    ids = np.arange(12, dtype=np.int64).reshape(3, 4)
    ids.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tensor = H._token_tensor(ids)
    assert tensor.tolist() == ids.tolist()
    writable = np.arange(4, dtype=np.int64)
    assert H._token_tensor(writable).data_ptr() == writable.ctypes.data
