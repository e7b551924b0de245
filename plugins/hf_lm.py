"""The language-model track: any Hugging Face causal LM, and ``opt125m``, the paper's experiment.

Bundles:

- ``opt125m``: facebook/opt-125m fine-tuned on wikitext-2 (PROTOCOLS.md section 1). Presets
  ``paper`` (setting a: 5 epochs, no real data kept), ``paper-b`` (setting b: 10 epochs,
  ``mix:0.1``), and ``smoke``: the OPT architecture at toy size on the project's synthetic Markov
  corpus, decoded by ancestral sampling (its one difference from the paper's protocol; beam
  decoding is ``--set do_sample=false --set num_beams=5``), downloading nothing.
- ``hf-causal-lm``: the same protocol for any model (``--model``) and dataset (``--dataset``).

The components (``hf-lm-train``, ``hf-lm-generate``, ``hf-lm-score``) live in hf_model.py and the
data in hf_data.py and lm_source.py; this module registers them.
"""

from __future__ import annotations

import bench
from collapse_bench_plugins import hf_data, hf_model, lm_source, text_metrics

# Measured on a 2-core CPU with the full OPT-125m (see README): one training step of 8 x 128 tokens,
# and one 5-beam 64-token generation for 8 prompts.
CPU_SECONDS_PER_TRAIN_TOKEN = 5.6 / (8 * 128)
CPU_SECONDS_PER_BEAM_PROMPT = 11.0 / 8
WIKITEXT2_TRAIN_BLOCKS = 37_500

TEXT_METRICS = (
    "test-perplexity", "perplexity-drift", "head-mass", "tail-mass", "oos-mass", "reference-nll",
    "reference-nll-shift", "distinct-n", "self-bleu", "type-token-ratio", "unigram-entropy",
    "rare-type-mass", "true-head-mass", "true-tail-mass", "true-oos-mass", "true-nll-shift",
)

PARAMS = {**hf_data.DATA_PARAMS, **lm_source.SOURCE_PARAMS, **hf_model.MODEL_PARAMS,
          **text_metrics.TEXT_METRIC_PARAMS, "tail_alpha": 0.1, "perplexity_batch_size": None}

PAPER = {
    "model": "facebook/opt-125m",
    "dataset": "wikitext",
    "dataset_config": "wikitext-2-raw-v1",
    "block_size": 64,
    "epochs": 5,
    "num_beams": 5,
    "do_sample": False,
    "repetition_penalty": 3.0,
    "new_tokens": 64,
    "generations": 9,
    "policy": "replace",
    "start": "pretrained",
}

SMOKE = {
    "model": hf_data.TOY_MODEL,
    "dataset": hf_data.SYNTHETIC_DATASET,
    "block_size": 64,
    "do_sample": True,
    "num_beams": 1,
    "temperature": 1.0,
    "repetition_penalty": 1.0,
    "suppress_special": True,
    "gen_batch_size": 64,
    "position_offset": True,
    "epochs": 10,
    "lr": 3e-3,
    "min_lr": 1e-4,
    "batch_size": 32,
    "generations": 5,
    "policy": "replace",
    "start": "pretrained",
}

PRESETS = {
    "paper": PAPER,
    "paper-b": {**PAPER, "epochs": 10, "policy": "mix:0.1"},
    "smoke": SMOKE,
}


def check(params) -> list[str]:
    """Refuse impossible settings; warn when a full-size model is about to train on a CPU, with an
    estimate of the time."""
    if params["new_tokens"] != params["block_size"]:
        raise bench.BenchError(
            f"new_tokens ({params['new_tokens']}) must equal block_size ({params['block_size']}): each "
            "generated continuation becomes a training block of the next generation. Set both, e.g. "
            f"--set block_size={params['new_tokens']} --set new_tokens={params['new_tokens']}."
        )
    if params.get("model") == hf_data.TOY_MODEL or hf_model.resolve_device(params).type != "cpu":
        return []
    blocks = WIKITEXT2_TRAIN_BLOCKS if params.get("dataset") == "wikitext" else None
    if blocks is None:
        return [f"{params['model']} will train on the CPU; a full-size model is slow there (about "
                f"{CPU_SECONDS_PER_TRAIN_TOKEN * 1e3:.1f} ms per training token for OPT-125m on 2 cores). "
                "Use a GPU (--device cuda) or --preset smoke."]
    train_s = blocks * params["block_size"] * params["epochs"] * CPU_SECONDS_PER_TRAIN_TOKEN
    gen_s = blocks * CPU_SECONDS_PER_BEAM_PROMPT * max(params.get("num_beams", 1), 1) / 5
    hours = (train_s + gen_s) / 3600
    return [f"the paper preset is meant for a GPU: on a 2-core CPU one generation takes roughly {hours:.0f} hours "
            f"({train_s / 3600:.0f} h of training, {gen_s / 3600:.0f} h of generation), and the paper's 10 "
            f"generations about {10 * hours / 24:.0f} days. Use --device cuda, or --preset smoke."]


def _bundle(name: str, description: str, model: str) -> bench.ModelBundle:
    return bench.ModelBundle(
        name=name,
        kind="tokens",
        load_real=hf_data.load_real,
        trainer="hf-lm-train",
        generator="hf-lm-generate",
        scorer="hf-lm-score",
        metrics=TEXT_METRICS,
        params={**PARAMS, "model": model},
        presets=PRESETS,
        default_preset="smoke",
        description=description,
        check=check,
        throughput=True,
        leaderboard_metrics=("test-perplexity", "perplexity-drift", "tail-mass", "oos-mass", "distinct-n",
                             "rare-type-mass", "self-bleu"),
    )


@bench.hookimpl
def bench_register_models(register):
    register(_bundle("opt125m", "facebook/opt-125m fine-tuned on wikitext-2, the paper's language-model "
                     "experiment (smoke: a toy OPT on a synthetic Markov corpus)", "facebook/opt-125m"))
    register(_bundle("hf-causal-lm", "any Hugging Face causal LM (--model) on any dataset (--dataset), "
                     "with the paper's protocol", "facebook/opt-125m"))


@bench.hookimpl
def bench_register_trainers(register):
    register(bench.Trainer("hf-lm-train", hf_model.fit, initial_state=hf_model.initial_state, kinds=("tokens",)))


@bench.hookimpl
def bench_register_generators(register):
    register(bench.Generator("hf-lm-generate", hf_model.generate, kinds=("tokens",)))


@bench.hookimpl
def bench_register_scorers(register):
    register(bench.Scorer("hf-lm-score", hf_model.score, kinds=("tokens",)))
