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

Mitigations of this track (docs/lm-model.md, "Mitigations: truncated cross-entropy and token
editing"):

- ``tce:G`` (trainer option ``tce``): the truncated cross-entropy of Shabgahi et al. 2025 (ForTIFAI),
  from generation 1 on;
- ``token-edit:P`` (policy): token-level editing of Zhu et al. 2024 (ToEdit): the next training set
  is the real one with every token M_k predicts with probability above P resampled from M_k.
"""

from __future__ import annotations

import math

import bench
from collapse_bench_plugins import hf_data, hf_model, lm_source, text_metrics

# Measured on a 2-core CPU with the full OPT-125m (see README): one training step of 8 x 128 tokens,
# and one 5-beam 64-token generation for 8 prompts.
CPU_SECONDS_PER_TRAIN_TOKEN = 5.6 / (8 * 128)
CPU_SECONDS_PER_BEAM_PROMPT = 11.0 / 8
WIKITEXT2_TRAIN_BLOCKS = 37_500
# Below this many parameters (from the model's config.json) a model trains on a CPU without warning;
# OPT-125m has 125 million.
SMALL_MODEL_PARAMETERS = 10_000_000

TEXT_METRICS = (
    "test-nll", "test-perplexity", "perplexity-drift", "head-mass", "tail-mass", "oos-mass", "reference-nll",
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


def preflight(params) -> None:
    """Before a run executes (not for dry runs): with the hub offline, a model, tokenizer or
    dataset that is not in the local cache is refused before the run folder is made."""
    hf_data.check_sources(params, hub=True)


def check(params) -> list[str]:
    """Refuse impossible settings, a device torch does not have, and a local model, tokenizer or
    dataset path that does not exist (hf_data.check_sources; nothing is loaded), all before the run
    folder is made; warn when a full-size model is about to train on a CPU, with an estimate of the time."""
    hf_model.check_tce(params)  # a trainer option: refused before generation 0, not when generation 1 trains
    if params["new_tokens"] != params["block_size"]:
        raise bench.BenchError(
            f"new_tokens ({params['new_tokens']}) must equal block_size ({params['block_size']}): each "
            "generated continuation becomes a training block of the next generation. Set both, e.g. "
            f"--set block_size={params['new_tokens']} --set new_tokens={params['new_tokens']}."
        )
    device = hf_model.resolve_device(params)
    # Local paths only here: a spec of the paper preset must still resolve offline (dry runs,
    # sweeps, reference figures). A hub id offline and not cached is refused by preflight.
    hf_data.check_sources(params, hub=False)
    if params.get("model") == hf_data.TOY_MODEL or device.type != "cpu":
        return []
    size = hf_data.parameter_estimate(params)
    if size is not None and size < SMALL_MODEL_PARAMETERS:
        return []  # a small model (a test's or a toy of one's own) trains fast enough on a CPU
    blocks = WIKITEXT2_TRAIN_BLOCKS if params.get("dataset") == "wikitext" else None
    if blocks is None:
        return [f"{params['model']} will train on the CPU; a full-size model is slow there (about "
                f"{CPU_SECONDS_PER_TRAIN_TOKEN * 1e3:.1f} ms per training token for OPT-125m on 2 cores). "
                f"Use a GPU (--device cuda) or {_small_way(params)}."]
    train_s = blocks * params["block_size"] * params["epochs"] * CPU_SECONDS_PER_TRAIN_TOKEN
    gen_s = blocks * CPU_SECONDS_PER_BEAM_PROMPT * max(params.get("num_beams", 1), 1) / 5
    hours = (train_s + gen_s) / 3600
    return [f"the paper preset is meant for a GPU: on a 2-core CPU one generation takes roughly {hours:.0f} hours "
            f"({train_s / 3600:.0f} h of training, {gen_s / 3600:.0f} h of generation), and the paper's 10 "
            f"generations about {10 * hours / 24:.0f} days. Use --device cuda, or {_small_way(params)}."]


def _small_way(params) -> str:
    """The small model to suggest instead of a full-size one on a CPU: ``--preset smoke``, unless
    the run already uses the smoke preset's synthetic data (then its toy model)."""
    if params.get("dataset") == hf_data.SYNTHETIC_DATASET:
        return f"--model {hf_data.TOY_MODEL} (the smoke preset's model)"
    return "--preset smoke"


FORTIFAI = ("Shabgahi et al. 2025, ForTIFAI: Fending Off Recursive Training Induced Failure for AI Models "
            "(truncated cross-entropy)")
TOEDIT = "Zhu et al. 2024, How to Synthesize Text Data without Model Collapse? (ToEdit)"

HEADLINE = bench.Headline(
    "test-nll", threshold=math.log(1.5), mode="diff",
    why="test cross-entropy per token; collapse when it rises by ln 1.5 (perplexity up by half)",
)


def provides(params) -> set[str]:
    """Per-token distributions always; the exact log-likelihood with the synthetic Markov source."""
    features = {"token-probs"}
    if params.get("dataset") == hf_data.SYNTHETIC_DATASET:
        features.add("exact-loglik")
    return features


def _check_edit_threshold(params) -> None:
    p = params.get("p")
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= float(p) <= 1.0:
        raise ValueError(
            f"the editing threshold P must be a probability in [0, 1], got {p!r}: tokens the model predicts "
            "with probability above P are resampled (for example --policy token-edit:0.99)"
        )


def token_edit(ctx: bench.PolicyContext) -> bench.Samples:
    """D_{k+1}: the real training blocks with each token M_k predicts with probability above P
    resampled from M_k's distribution given the real prefix (hf_model.edit_tokens)."""
    real = ctx.real.train
    edited, resampled, changed = hf_model.edit_tokens(ctx.state, real, float(ctx.params["p"]),
                                                      ctx.model_params, ctx.rng)
    editable = len(real) * max(real.data.shape[1] - 1, 0)
    ctx.record.update(tokens_edited=resampled, tokens_changed=changed,
                      edit_fraction=resampled / editable if editable else 0.0)
    return bench.Samples("tokens", edited)


# The paper's figures (PROTOCOLS.md section 1): test perplexity 34 after fine-tuning on real
# wikitext-2; over the 10 generations of setting (a) it rises by about 20 to 28 points, in setting
# (b) (10% real data kept) only slightly, within the figure's axis of 32 to 42.
OPT_REFERENCES = {
    "paper": (bench.Reference("test-perplexity", 34.0, generation=0, label="fine-tuned on real wikitext-2"),
              bench.Reference("test-perplexity", 54.0, generation=9, high=62.0,
                              label="setting (a): 20 to 28 points above generation 0")),
    "paper-b": (bench.Reference("test-perplexity", 34.0, generation=0, label="fine-tuned on real wikitext-2"),
                bench.Reference("test-perplexity", 32.0, generation=9, high=42.0,
                                label="setting (b): minor degradation, within the figure's 32-42")),
}


def _bundle(name: str, description: str, model: str, references=None) -> bench.ModelBundle:
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
        preflight=preflight,
        throughput=True,
        leaderboard_metrics=("test-perplexity", "perplexity-drift", "tail-mass", "oos-mass", "distinct-n",
                             "rare-type-mass", "self-bleu"),
        provides=provides,
        headline=HEADLINE,
        references=references or {},
    )


@bench.hookimpl
def bench_register_models(register):
    register(_bundle("opt125m", "facebook/opt-125m fine-tuned on wikitext-2, the paper's language-model "
                     "experiment (smoke: a toy OPT on a synthetic Markov corpus)", "facebook/opt-125m",
                     references=OPT_REFERENCES))
    register(_bundle("hf-causal-lm", "any Hugging Face causal LM (--model) on any dataset (--dataset), "
                     "with the paper's protocol", "facebook/opt-125m"))


@bench.hookimpl
def bench_register_trainers(register):
    register(bench.Trainer("hf-lm-train", hf_model.fit, initial_state=hf_model.initial_state, kinds=("tokens",),
                           options=dict(hf_model.TRAINER_OPTIONS)))


@bench.hookimpl
def bench_register_generators(register):
    register(bench.Generator("hf-lm-generate", hf_model.generate, kinds=("tokens",)))


@bench.hookimpl
def bench_register_scorers(register):
    register(bench.Scorer("hf-lm-score", hf_model.score, kinds=("tokens",)))


@bench.hookimpl
def bench_register_policies(register):
    register(bench.Policy(
        "token-edit", token_edit, params={"p": 0.99}, positional="p", validate=_check_edit_threshold,
        kinds=("tokens",), needs=("token-probs",), citation=TOEDIT,
        description="the real training data with each token M_k predicts with probability above P "
                    "resampled from M_k's distribution (token-level editing)",
    ))


@bench.hookimpl
def bench_register_mitigations(register):
    register(bench.Mitigation(
        name="tce", kind="trainer", param="tce", neutral=1.0, kinds=("tokens",), citation=FORTIFAI,
        example="tce:0.9",
        description="truncated cross-entropy: target tokens the model predicts with probability above G "
                    "carry no loss (from generation 1 on)",
    ))
    register(bench.Mitigation(
        name="token-edit", kind="policy", kinds=("tokens",), needs=("token-probs",), citation=TOEDIT,
        example="token-edit:0.99",
        description="train on the real data with M_k's confident tokens resampled from M_k "
                    "(token-level editing, semi-synthetic data)",
    ))


@bench.hookimpl
def bench_cli_options(command, register):
    from bench import CliOption

    if command != "run":
        return
    register(CliOption("--model", param="model",
                       help="Model for language-model plugins: a hub id or a local folder (same as --set model=...)."))
    register(CliOption("--dataset", param="dataset",
                       help="Dataset for language-model plugins: a hub id or local files (same as --set dataset=...)."))
    register(CliOption("--device", param="device",
                       help="Device for torch plugins: auto, cpu, cuda, cuda:1, mps (same as --set device=...)."))
    register(CliOption("--dtype", param="dtype",
                       help="Precision for torch plugins: auto, fp32, bf16, fp16 (same as --set dtype=...)."))
