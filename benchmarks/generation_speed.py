"""Generation speed: the hf_model plugin's generate against the released code's loop, side by side.

The baseline is the released code's generation (curse_recurse main.py): a loop over batches of
128 training blocks, each passed to ``model.generate(input_ids, num_beams=5, max_new_tokens=64,
min_new_tokens=64, repetition_penalty=3.0)``, under ``torch.no_grad()``, keeping the tokens after
the prompt. The other side is ``hf_model.generate`` with the same decoding (on the CPU in fp32 it
runs plugins/beam.py's cache-sharing beam search). Both run in this process on the same random
OPT and the same random 64-token prompts:

- ``--size toy``: the ``toy-opt`` sizes of MODEL_PARAMS (181k parameters, 1,000-word vocabulary);
- ``--size opt125m``: OPT-125m's shape (12 layers, hidden 768, 50,272-token vocabulary) with
  random weights, so nothing is downloaded; use fewer prompts (``--prompts 8``).

The sides run interleaved (released, plugin, plugin, released, ...) with threads pinned
(``--threads``, default 1); each call's CPU time and wall time are measured and min and median
printed, with new tokens per second and the ratios to the released loop. Every call's tokens are
compared with the released loop's: on the CPU in fp32 they must be equal (the script exits non-zero
otherwise); elsewhere (a GPU, bf16) the agreement rate is printed: the fraction of prompts whose
continuation is equal and the fraction of tokens equal position by position.

    python benchmarks/generation_speed.py [--size toy|opt125m] [--prompts 256] [--gen-batch-size 128]
        [--repeats 3] [--threads 1] [--device cpu] [--dtype fp32] [--mode auto|fast|reference]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")

RELEASED_BATCH_SIZE = 128

SIZES = {
    "toy": None,  # the toy_* params of MODEL_PARAMS
    "opt125m": dict(toy_layers=12, toy_hidden=768, toy_heads=12, toy_ffn=3072, toy_positions=2048, vocab=50268),
}


def released_generate(model, blocks: np.ndarray, batch_size: int = RELEASED_BATCH_SIZE, num_beams: int = 5,
                      new_tokens: int = 64, repetition_penalty: float = 3.0) -> np.ndarray:
    """The released code's generation loop: only the new tokens of every block, (n, new_tokens)."""
    import torch

    model = model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, blocks.shape[0], batch_size):
            input_ids = torch.from_numpy(blocks[start : start + batch_size]).to(model.device)
            outputs = model.generate(input_ids, num_beams=num_beams, max_new_tokens=new_tokens,
                                     min_new_tokens=new_tokens, repetition_penalty=repetition_penalty)
            out.append(outputs[:, blocks.shape[1]:].cpu().numpy())
    return np.concatenate(out, axis=0)


def save_toy(folder: str, vocab: int, params: dict, seed: int = 0, weights: bool = True):
    """A word-level tokenizer of ``vocab`` words and a random OPT of the toy_* sizes in ``folder``
    (the config only, without ``weights``); returns the model."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import OPTConfig, OPTForCausalLM, PreTrainedTokenizerFast

    words = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, **{f"w{i}": 4 + i for i in range(vocab)}}
    core = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>",
                                  eos_token="</s>", unk_token="<unk>")
    tok.save_pretrained(folder)
    config = OPTConfig(vocab_size=len(tok), hidden_size=params["toy_hidden"],
                       word_embed_proj_dim=params["toy_hidden"],
                       num_hidden_layers=params["toy_layers"], num_attention_heads=params["toy_heads"],
                       ffn_dim=params["toy_ffn"], max_position_embeddings=params["toy_positions"],
                       pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(seed)
    model = OPTForCausalLM(config).eval()
    if weights:
        model.save_pretrained(folder)
    else:
        config.save_pretrained(folder)
    return model


def agreement(ours: np.ndarray, baseline: np.ndarray) -> tuple[float, float]:
    """(fraction of rows equal, fraction of tokens equal position by position)."""
    return float((ours == baseline).all(axis=1).mean()), float((ours == baseline).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="toy")
    ap.add_argument("--prompts", type=int, default=256, help="number of prompts")
    ap.add_argument("--block", type=int, default=64, help="prompt length")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=1000, help="words of the toy tokenizer (--size toy)")
    ap.add_argument("--gen-batch-size", type=int, default=128, help="the plugin's gen_batch_size")
    ap.add_argument("--released-batch-size", type=int, default=RELEASED_BATCH_SIZE)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", help="the plugin's dtype (the released loop runs in fp32)")
    ap.add_argument("--mode", choices=("auto", "fast", "reference"), default=None,
                    help="BENCH_HF_GENERATE for the plugin side (default: as set, else auto)")
    ap.add_argument("--threads", type=int, default=1, help="threads of torch, BLAS and OpenMP")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per side")
    args = ap.parse_args()

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _timing import interleave, pin_threads, report

    pin_threads(args.threads)
    if args.mode:
        os.environ["BENCH_HF_GENERATE"] = args.mode
    import torch
    from transformers.utils import logging as hf_logging

    from bench.components import GenerateRequest, Samples
    from collapse_bench_plugins import hf_model

    hf_logging.disable_progress_bar()
    pin_threads(args.threads)  # torch is loaded now
    size = SIZES[args.size]
    sizes = {**hf_model.MODEL_PARAMS, **(size or {})}
    vocab = size["vocab"] if size else args.vocab
    rng = np.random.default_rng(0)
    blocks = rng.integers(4, 4 + vocab, size=(args.prompts, args.block)).astype(np.int64)
    n_new = args.prompts * args.new_tokens

    with tempfile.TemporaryDirectory() as folder:
        base_model = save_toy(folder, vocab, sizes, weights=False).to(args.device)
        params = {**hf_model.MODEL_PARAMS, "model": folder, "device": args.device, "dtype": args.dtype,
                  "new_tokens": args.new_tokens, "gen_batch_size": args.gen_batch_size}
        state = hf_model.state_from_model(base_model)
        prompts = Samples("tokens", blocks)
        print(f"{args.size} OPT {sum(p.numel() for p in base_model.parameters()):,} parameters (random weights); "
              f"{args.prompts} prompts of {args.block} tokens, {args.new_tokens} new tokens each, 5 beams, "
              f"repetition penalty 3.0; device {args.device}, torch threads {torch.get_num_threads()}; released "
              f"loop batch {args.released_batch_size} fp32, plugin gen_batch_size {args.gen_batch_size} "
              f"{args.dtype}, BENCH_HF_GENERATE={os.environ.get('BENCH_HF_GENERATE', 'auto')}", flush=True)

        def released():
            return released_generate(base_model, blocks, batch_size=args.released_batch_size,
                                     new_tokens=args.new_tokens)

        def plugin():
            request = GenerateRequest(state, len(blocks), prompts, params, np.random.default_rng(1), 0)
            return hf_model.generate(request).data

        # first-call costs (model build, lazy imports), untimed
        released_generate(base_model, blocks[:2], new_tokens=args.new_tokens)
        hf_model.generate(GenerateRequest(state, 2, prompts, params, np.random.default_rng(1), 0))

        outputs: dict[str, list[np.ndarray]] = {"released": [], "plugin": []}
        results = interleave({"released": released, "plugin": plugin}, args.repeats,
                             on_result=lambda name, r, value: outputs[name].append(value))
        figures = report(results, baseline="released")
        for name, s in figures.items():
            print(f"{name}: {n_new / s.cpu[0]:,.0f} new tokens per CPU second (best), {n_new / s.cpu[1]:,.0f} "
                  f"(median); {n_new / s.wall[0]:,.0f} per wall second (best), {n_new / s.wall[1]:,.0f} (median)")
        s = figures["plugin"]
        print(f"speed-up of the plugin over the released loop: CPU time {1 / s.cpu_ratio[0]:.2f}x (min) "
              f"{1 / s.cpu_ratio[1]:.2f}x (median); wall time {1 / s.wall_ratio[0]:.2f}x (min) "
              f"{1 / s.wall_ratio[1]:.2f}x (median)")
        baseline = outputs["released"][0]
        stable = all(np.array_equal(o, baseline) for o in outputs["released"])
        rows, tokens = min(agreement(o, baseline) for o in outputs["plugin"])
        print(f"token agreement with the released loop: {rows:.2%} of prompts, {tokens:.2%} of tokens "
              f"(released loop equal to itself across repeats: {stable})")
        if args.device == "cpu" and args.dtype == "fp32" and rows < 1.0:
            raise SystemExit("on the CPU in fp32 the plugin's tokens must equal the released loop's")


if __name__ == "__main__":
    main()
