"""The cache-sharing beam search (plugins/beam.py) against transformers' model.generate.

Tokens must be equal, not close: equal tokens keep run ids, samples and metrics as they were.
The cases: several prompt batches, beam counts, repetition penalties and model sizes; exact ties
between tokens (duplicated embedding rows); eos as the best token everywhere; suppressed tokens.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from bench import BenchError, GenerateRequest, Samples  # noqa: E402
from collapse_bench_plugins import beam  # noqa: E402
from collapse_bench_plugins import hf_model as H  # noqa: E402

EOS = 2


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.delenv(beam.GENERATE_ENV, raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    H.clear_model_cache()


def opt(vocab=40, hidden=16, layers=2, heads=2, ffn=32, seed=0):
    from transformers import OPTConfig, OPTForCausalLM

    config = OPTConfig(vocab_size=vocab, hidden_size=hidden, word_embed_proj_dim=hidden, num_hidden_layers=layers,
                       num_attention_heads=heads, ffn_dim=ffn, max_position_embeddings=64,
                       pad_token_id=0, bos_token_id=1, eos_token_id=EOS)
    torch.manual_seed(seed)
    model = OPTForCausalLM(config).eval()
    H._reset_generation_config(model)
    return model


def settings(model, **kw):
    params = {**H.MODEL_PARAMS, "new_tokens": 12, "num_beams": 5, "repetition_penalty": 3.0, **kw}
    return H.generation_config(params, model)


def both(model, prompts, config):
    ids = torch.as_tensor(prompts)
    assert beam.fast_path_refusal(config, model, torch.device("cpu"), torch.float32, "auto") is None
    with torch.inference_mode():
        ours = beam.beam_search(model, ids, config)
        theirs = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config)
    return ours, theirs


def prompts(n, length, vocab, seed):
    return np.random.default_rng(seed).integers(4, vocab, size=(n, length)).astype(np.int64)


@pytest.mark.parametrize("beams,penalty,batch,length", [
    (5, 3.0, 7, 10), (5, 3.0, 1, 6), (3, 2.0, 4, 9), (2, 1.0, 5, 8), (4, 3.0, 3, 16),
])
def test_tokens_equal_model_generate(beams, penalty, batch, length):
    model = opt(seed=beams)
    config = settings(model, num_beams=beams, repetition_penalty=penalty)
    for seed in range(3):  # several prompt batches
        ours, theirs = both(model, prompts(batch, length, 40, seed), config)
        assert ours.shape == theirs.shape == (batch, length + 12)
        assert torch.equal(ours, theirs)


def test_tokens_equal_model_generate_at_a_larger_size():
    model = opt(vocab=300, hidden=64, layers=2, heads=4, ffn=128, seed=7)
    ours, theirs = both(model, prompts(6, 20, 300, 1), settings(model, new_tokens=24))
    assert torch.equal(ours, theirs)


def test_exact_ties_are_broken_as_transformers_breaks_them():
    """Tokens 10..13 share one embedding row (and so, tied, one output row): their logits are equal
    at every step, so candidates tie exactly and beams with equal histories tie too."""
    model = opt(seed=3)
    with torch.no_grad():
        emb = model.model.decoder.embed_tokens.weight
        emb[11:14] = emb[10]
        emb[10] *= 4.0  # large enough to be chosen
        emb[11:14] = emb[10]
    ids = torch.as_tensor(prompts(6, 8, 40, 5))
    with torch.inference_mode():
        logits = model(input_ids=ids).logits[:, -1]
    assert torch.equal(logits[:, 10], logits[:, 13])
    for penalty in (1.0, 3.0):
        config = settings(model, repetition_penalty=penalty)
        ours, theirs = both(model, ids.numpy(), config)
        assert torch.isin(theirs[:, 8:], torch.arange(10, 14)).any()  # the tied tokens were chosen
        assert torch.equal(ours, theirs)


def test_eos_as_the_best_token_is_never_chosen_and_tokens_still_agree():
    """eos has the largest logit everywhere; min = max new tokens masks it, as in model.generate."""
    model = opt(seed=4)
    with torch.no_grad():
        model.model.decoder.final_layer_norm.weight.fill_(1.0)
        model.model.decoder.final_layer_norm.bias.fill_(1.0)
        model.model.decoder.embed_tokens.weight[EOS] = 50.0
    x = prompts(4, 8, 40, 2)
    with torch.inference_mode():
        assert (model(input_ids=torch.as_tensor(x)).logits.argmax(-1) == EOS).all()
    ours, theirs = both(model, x, settings(model))
    assert not (ours[:, 8:] == EOS).any()
    assert torch.equal(ours, theirs)


def test_suppressed_tokens_agree():
    model = opt(seed=5)
    config = settings(model)
    config.suppress_tokens = [0, 3, 17]
    ours, theirs = both(model, prompts(5, 8, 40, 3), config)
    assert not torch.isin(ours[:, 8:], torch.tensor([0, 3, 17])).any()
    assert torch.equal(ours, theirs)


def test_children_keep_their_parents_rows_and_extra_children_get_copies():
    """Old beams 0..4 in rows 10..14. New beams' parents: 0, 0, 1, 3, 3. The first child of each
    parent keeps its row; the second children of 0 and 3 take the rows of the childless old beams
    2 and 4 (rows 12 and 14), in that order, which receive copies of rows 10 and 13."""
    rows_of = torch.tensor([[10, 11, 12, 13, 14]])
    parents = torch.tensor([[0, 0, 1, 3, 3]])
    earlier = torch.ones((5, 5), dtype=torch.bool).tril(-1)
    new_rows, dst, src = beam._place_children(rows_of, parents, earlier)
    assert new_rows.tolist() == [[10, 12, 11, 13, 14]]
    assert dst.tolist() == [12, 14] and src.tolist() == [10, 13]
    # a permutation moves nothing
    new_rows, dst, src = beam._place_children(rows_of, torch.tensor([[4, 2, 0, 1, 3]]), earlier)
    assert new_rows.tolist() == [[14, 12, 10, 11, 13]] and dst.numel() == 0


def test_refusals_fall_back_to_model_generate():
    model = opt()
    cpu, fp32 = torch.device("cpu"), torch.float32
    config = settings(model)
    assert beam.fast_path_refusal(config, model, cpu, fp32, "reference") == f"{beam.GENERATE_ENV}=reference"
    assert "sampling" in beam.fast_path_refusal(settings(model, do_sample=True), model, cpu, fp32, "auto")
    assert "beams" in beam.fast_path_refusal(settings(model, num_beams=1), model, cpu, fp32, "auto")
    uneven = settings(model)
    uneven.min_new_tokens = 3
    assert "min_new_tokens" in beam.fast_path_refusal(uneven, model, cpu, fp32, "auto")
    ngram = settings(model)
    ngram.no_repeat_ngram_size = 2
    assert "no_repeat_ngram_size" in beam.fast_path_refusal(ngram, model, cpu, fp32, "auto")
    assert "cuda" in beam.fast_path_refusal(config, model, torch.device("cuda"), fp32, "auto")
    assert "bfloat16" in beam.fast_path_refusal(config, model, cpu, torch.bfloat16, "auto")
    assert beam.fast_path_refusal(config, model, torch.device("cuda"), torch.bfloat16, "fast") is None

    class Other:
        config = type("C", (), {"model_type": "gpt2"})()

    assert "gpt2" in beam.fast_path_refusal(config, Other(), cpu, fp32, "auto")


def test_generate_mode_reads_the_environment(monkeypatch):
    assert beam.generate_mode() == "auto"
    monkeypatch.setenv(beam.GENERATE_ENV, "Reference")
    assert beam.generate_mode() == "reference"
    monkeypatch.setenv(beam.GENERATE_ENV, "quick")
    with pytest.raises(BenchError, match="BENCH_HF_GENERATE.*reference"):
        beam.generate_mode()


def test_the_plugin_uses_the_fast_search_unless_told_not_to(tmp_path, monkeypatch):
    from tests.helpers import save_tiny_opt

    folder = save_tiny_opt(tmp_path / "opt", 20)
    params = {**H.MODEL_PARAMS, "model": str(folder), "revision": None, "tokenizer": None, "device": "cpu",
              "dtype": "fp32", "new_tokens": 6, "gen_batch_size": 3}
    state = H.initial_state(params, np.random.default_rng(0))
    x = Samples("tokens", prompts(7, 8, 24, 0))
    calls = []
    search = beam.beam_search
    monkeypatch.setattr(beam, "beam_search", lambda *a: calls.append(1) or search(*a))
    fast = H.generate(GenerateRequest(state, 7, x, params, np.random.default_rng(0), 0)).data
    assert len(calls) == 3  # one per batch of 3
    monkeypatch.setenv(beam.GENERATE_ENV, "reference")
    reference = H.generate(GenerateRequest(state, 7, x, params, np.random.default_rng(0), 0)).data
    assert len(calls) == 3
    np.testing.assert_array_equal(fast, reference)
    monkeypatch.setenv(beam.GENERATE_ENV, "nonsense")
    with pytest.raises(BenchError, match="BENCH_HF_GENERATE"):
        H.generate(GenerateRequest(state, 7, x, params, np.random.default_rng(0), 0))
