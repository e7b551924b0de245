"""The generator ``vllm-sample``: sampled continuations of the language-model tracks with vLLM.

An optional generator for the ``opt125m`` and ``hf-causal-lm`` bundles (extra ``[vllm]``). It
continues real block i by exactly ``new_tokens`` tokens as ``hf-lm-generate`` does, but samples
with vLLM's engine: temperature, top_k, top_p and repetition penalty from the run's params, eos
masked until the last token (``min_tokens`` = ``max_tokens``), pad and unk banned with
``suppress_special``. Sampling only: vLLM's beam search has no repetition penalty, so it cannot
reproduce the paper's beam decoding, and beam settings are refused.

Every prompt is its own request with its own seed, drawn from the generator's random stream, so
a run's samples do not depend on how vLLM batches the requests. The samples are not those of
``hf-lm-generate`` (another sampler, other random streams): being another generator, a run with it
is another track. vLLM is imported only when the generator runs; docs/lm-model.md describes it.
"""

from __future__ import annotations

import gc
import tempfile
from typing import Any, Mapping

import numpy as np

import bench
from bench.components import GenerateRequest, Samples
from bench.errors import BenchError
from collapse_bench_plugins import hf_model

NAME = "vllm-sample"
SEED_HIGH = 2**31  # vLLM takes any int; this keeps the seeds in every integer type it might use


def _vllm():
    try:
        import vllm
    except ImportError as e:
        raise BenchError(
            f"the generator {NAME!r} needs vLLM, which is not installed ({e}). Install it with "
            "pip install 'collapse-bench[vllm]' (vLLM needs a CUDA GPU), or use the generator "
            "'hf-lm-generate', the bundles' default"
        ) from e
    return vllm


def check_sampling(params: Mapping[str, Any]) -> None:
    """BenchError unless the params ask for plain sampling (do_sample, one beam)."""
    hf_model.check_params(params)
    if not params.get("do_sample") or int(params["num_beams"]) != 1:
        raise BenchError(
            f"the generator {NAME!r} only samples (do_sample true, num_beams 1), got do_sample "
            f"{params.get('do_sample')!r} and num_beams {params['num_beams']!r}: vLLM's beam search "
            "has no repetition penalty, so it cannot reproduce the paper's beam decoding. Use the "
            "generator 'hf-lm-generate' for beam search, or --set do_sample=true --set num_beams=1"
        )


def banned_ids(params: Mapping[str, Any]) -> list[int]:
    """The ids generation never returns: pad and unk with ``suppress_special`` (as hf-lm-generate)."""
    return hf_model._suppressed_ids(params)


def sampling_params(params: Mapping[str, Any], seed: int, vocab_size: int | None = None):
    """One request's ``vllm.SamplingParams``: exactly ``new_tokens`` tokens, the run's temperature,
    top_k (0 = off, which vLLM writes -1), top_p and repetition penalty, and ``seed``. With banned
    ids (``suppress_special``) every other id of the ``vocab_size`` ids is allowed."""
    vllm = _vllm()
    new = int(params["new_tokens"])
    kwargs: dict[str, Any] = dict(
        n=1,
        temperature=float(params["temperature"]),
        top_k=int(params["top_k"]) or -1,
        top_p=float(params["top_p"]),
        repetition_penalty=float(params["repetition_penalty"]),
        min_tokens=new,
        max_tokens=new,
        seed=int(seed),
        detokenize=False,
    )
    banned = banned_ids(params)
    if banned:
        if vocab_size is None:
            raise ValueError("sampling_params: banned ids need the vocabulary size")
        kwargs["allowed_token_ids"] = [i for i in range(vocab_size) if i not in set(banned)]
    return vllm.SamplingParams(**kwargs)


def build_requests(prompts: np.ndarray, params: Mapping[str, Any], rng: np.random.Generator,
                   vocab_size: int | None = None) -> tuple[list[dict[str, list[int]]], list[Any]]:
    """The prompts as vLLM token prompts and one SamplingParams per prompt, each with its own seed
    drawn from ``rng`` in prompt order."""
    seeds = rng.integers(0, SEED_HIGH, size=len(prompts))
    requests = [{"prompt_token_ids": [int(t) for t in row]} for row in prompts]
    return requests, [sampling_params(params, s, vocab_size) for s in seeds]


def _engine_dtype(params: Mapping[str, Any]) -> str:
    return {"auto": "auto", "fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[str(params["dtype"])]


def generate(request: GenerateRequest) -> Samples:
    """Continue real block i (i < n) by exactly ``new_tokens`` sampled tokens with vLLM; return only
    the new tokens, with ``text`` and ``prompt`` columns as hf-lm-generate's.

    The state is written to a temporary folder (``save_pretrained`` with the run's tokenizer) that
    a ``vllm.LLM`` engine loads; the engine is dropped afterwards so that training and scoring get
    the GPU's memory back.
    """
    params = request.params
    check_sampling(params)
    x = np.asarray(request.prompts.data if request.prompts is not None else np.zeros((0, 0)), dtype=np.int64)
    n = int(request.n)
    if x.ndim != 2 or n > x.shape[0]:
        raise ValueError(f"generate: {n} samples asked for but {x.shape[0] if x.ndim == 2 else 0} prompts given")
    x = x[:n]
    new = int(params["new_tokens"])
    engine_seed = int(request.rng.integers(0, SEED_HIGH))
    tokens = np.empty((n, new), dtype=np.int64)
    tokenizer = hf_model.tokenizer_for(params)
    if n:
        vllm = _vllm()
        model = hf_model.build_model(request.state, params)
        vocab_size = int(model.config.vocab_size)
        hf_model._check_positions(model.config, x.shape[1] + new, params,
                                  f"a {x.shape[1]}-token prompt plus {new} new tokens")
        prompts, sampling = build_requests(x, params, request.rng, vocab_size)
        with tempfile.TemporaryDirectory(prefix="collapse-bench-vllm-") as folder:
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            del model
            llm = vllm.LLM(model=folder, tokenizer=folder, dtype=_engine_dtype(params), seed=engine_seed,
                           max_model_len=x.shape[1] + new)
            try:
                outputs = llm.generate(prompts, sampling)
            finally:
                del llm
                gc.collect()
        for i, output in enumerate(outputs):
            ids = list(output.outputs[0].token_ids)
            if len(ids) != new:
                raise RuntimeError(f"vLLM returned {len(ids)} new tokens for prompt {i}, not {new}")
            tokens[i] = ids
    columns = {"text": hf_model._decode(tokenizer, tokens), "prompt": hf_model._decode(tokenizer, x)}
    return Samples("tokens", tokens, columns=columns)


@bench.hookimpl
def bench_register_generators(register):
    register(bench.Generator(NAME, generate, kinds=("tokens",)))
