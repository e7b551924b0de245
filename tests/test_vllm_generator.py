"""The optional generator vllm-sample (plugins/vllm_generator.py) with a fake ``vllm`` module.

vLLM is not installed here (it needs a CUDA GPU): a small stand-in in sys.modules records what the
generator asks of it. What is checked: the SamplingParams of each request, per-request seeds drawn
from the run's stream, the refusal of beam decoding, the message when vLLM is missing, the
engine's arguments and the returned samples, and that the generator is registered.
"""

import sys
import types

import numpy as np
import pytest

from bench import BenchError, GenerateRequest, Samples
from collapse_bench_plugins import hf_model as H
from collapse_bench_plugins import vllm_generator as V

SAMPLED = {**H.MODEL_PARAMS, "do_sample": True, "num_beams": 1, "temperature": 0.7, "top_k": 0, "top_p": 0.9,
           "repetition_penalty": 1.2, "new_tokens": 5}


class FakeSamplingParams:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


class FakeLLM:
    instances: list = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.calls = []
        FakeLLM.instances.append(self)

    def generate(self, prompts, sampling):
        self.calls.append((prompts, sampling))
        new = sampling[0].kwargs["max_tokens"]
        out = []
        for p, s in zip(prompts, sampling):  # a deterministic function of the seed, like a seeded sampler
            ids = np.random.default_rng(s.kwargs["seed"]).integers(4, 20, size=new).tolist()
            out.append(types.SimpleNamespace(outputs=[types.SimpleNamespace(token_ids=ids)]))
        return out


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.SamplingParams = FakeSamplingParams
    module.LLM = FakeLLM
    FakeLLM.instances = []
    monkeypatch.setitem(sys.modules, "vllm", module)
    return module


def test_sampling_params_map_the_run_settings(fake_vllm):
    sp = V.sampling_params(SAMPLED, seed=123)
    assert sp.kwargs == dict(n=1, temperature=0.7, top_k=-1, top_p=0.9, repetition_penalty=1.2, min_tokens=5,
                             max_tokens=5, seed=123, detokenize=False)
    assert V.sampling_params({**SAMPLED, "top_k": 40}, seed=1).kwargs["top_k"] == 40


def test_per_request_seeds_come_from_the_run_stream_in_prompt_order(fake_vllm):
    prompts = np.arange(4 * 3).reshape(4, 3) + 4
    requests, sampling = V.build_requests(prompts, SAMPLED, np.random.default_rng(7))
    expected = np.random.default_rng(7).integers(0, V.SEED_HIGH, size=4).tolist()
    assert [s.kwargs["seed"] for s in sampling] == expected
    assert len(set(expected)) == 4
    assert requests == [{"prompt_token_ids": row.tolist()} for row in prompts]
    assert all(isinstance(t, int) for r in requests for t in r["prompt_token_ids"])


def test_suppress_special_allows_every_id_but_pad_and_unk(fake_vllm, monkeypatch):
    monkeypatch.setattr(V, "banned_ids", lambda params: [0, 3])
    sp = V.sampling_params({**SAMPLED, "suppress_special": True}, seed=1, vocab_size=8)
    assert sp.kwargs["allowed_token_ids"] == [1, 2, 4, 5, 6, 7]


@pytest.mark.parametrize("change", [{"do_sample": False}, {"num_beams": 5}, {"do_sample": False, "num_beams": 5}])
def test_beam_decoding_is_refused(fake_vllm, change):
    with pytest.raises(BenchError, match="only samples.*no repetition penalty.*hf-lm-generate"):
        V.check_sampling({**SAMPLED, **change})


def test_a_missing_vllm_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm raises ImportError
    with pytest.raises(BenchError, match=r"needs vLLM, which is not installed.*collapse-bench\[vllm\]"):
        V.sampling_params(SAMPLED, seed=1)


def test_generate_runs_one_engine_and_returns_the_new_tokens(fake_vllm, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tests.helpers import save_tiny_opt

    folder = save_tiny_opt(tmp_path / "opt", 20)
    params = {**SAMPLED, "model": str(folder), "revision": None, "tokenizer": None, "device": "cpu", "dtype": "fp32"}
    state = H.initial_state(params, np.random.default_rng(0))
    x = np.random.default_rng(0).integers(4, 24, size=(6, 8)).astype(np.int64)
    out = V.generate(GenerateRequest(state, 4, Samples("tokens", x), params, np.random.default_rng(5), 1))
    assert out.kind == "tokens" and out.data.shape == (4, 5) and out.data.dtype == np.int64
    (llm,) = FakeLLM.instances
    assert llm.kwargs["dtype"] == "float32" and llm.kwargs["max_model_len"] == 13
    prompts, sampling = llm.calls[0]
    assert [p["prompt_token_ids"] for p in prompts] == x[:4].tolist()
    rng = np.random.default_rng(5)
    assert llm.kwargs["seed"] == int(rng.integers(0, V.SEED_HIGH))
    assert [s.kwargs["seed"] for s in sampling] == rng.integers(0, V.SEED_HIGH, size=4).tolist()
    assert len(out.columns["text"]) == len(out.columns["prompt"]) == 4
    again = V.generate(GenerateRequest(state, 4, Samples("tokens", x), params, np.random.default_rng(5), 1))
    np.testing.assert_array_equal(out.data, again.data)


def test_the_generator_is_registered_without_importing_vllm(bench_plugins):
    assert bench_plugins.generators.get("vllm-sample").generate is not None
    assert "tokens" in bench_plugins.generators.get("vllm-sample").kinds
