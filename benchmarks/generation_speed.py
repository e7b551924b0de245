"""Generation speed: the hf_model plugin's generate against the released code's loop, side by side.

The baseline is the released code's generation (curse_recurse main.py): a loop over batches of
128 training blocks, each passed to ``model.generate(input_ids, num_beams=5, max_new_tokens=64,
min_new_tokens=64, repetition_penalty=3.0)`` on a model loaded with ``from_pretrained``, under
``torch.no_grad()``, keeping the tokens after the prompt. Both run on the same toy OPT (the
``toy-opt`` sizes of MODEL_PARAMS, random weights, saved to a temporary folder with a word-level
tokenizer) and the same prompts, in fp32 on the CPU unless --device says otherwise. On CPU fp32
the two must produce the same tokens; the script checks that and prints tokens/s of each and
the ratio.

    python benchmarks/generation_speed.py [--prompts 256] [--gen-batch-size 128 512] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")

RELEASED_BATCH_SIZE = 128


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


def save_toy(folder: str, vocab: int, params: dict, seed: int = 0) -> None:
    """A word-level tokenizer of ``vocab`` words and a random toy OPT of the toy_* sizes, saved."""
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
    OPTForCausalLM(config).save_pretrained(folder)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=256, help="number of 64-token prompts")
    ap.add_argument("--block", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=1000)
    ap.add_argument("--gen-batch-size", type=int, nargs="+", default=[128, 512])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from bench.components import GenerateRequest, Samples
    from collapse_bench_plugins import hf_model

    hf_logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    blocks = rng.integers(4, 4 + args.vocab, size=(args.prompts, args.block)).astype(np.int64)
    n_new = args.prompts * args.new_tokens

    with tempfile.TemporaryDirectory() as folder:
        save_toy(folder, args.vocab, hf_model.MODEL_PARAMS)
        params = {**hf_model.MODEL_PARAMS, "model": folder, "device": args.device, "dtype": args.dtype,
                  "new_tokens": args.new_tokens}
        state = hf_model.initial_state(params, np.random.default_rng(0))
        base_model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).to(args.device)
        print(f"toy OPT {sum(p.numel() for p in base_model.parameters()):,} parameters; {args.prompts} prompts "
              f"of {args.block} tokens, {args.new_tokens} new tokens each, 5 beams, repetition penalty 3.0; "
              f"device {args.device}, torch threads {torch.get_num_threads()}", flush=True)
        released_generate(base_model, blocks[:2], new_tokens=args.new_tokens)  # first-call costs, untimed
        for repeat in range(args.repeats):
            t = time.perf_counter()
            baseline = released_generate(base_model, blocks, new_tokens=args.new_tokens)
            base_s = time.perf_counter() - t
            print(f"[{repeat}] released loop (batch {RELEASED_BATCH_SIZE}): {n_new / base_s:,.0f} new tokens/s "
                  f"({base_s:.2f} s)", flush=True)
            for batch in args.gen_batch_size:
                p = {**params, "gen_batch_size": batch}
                prompts = Samples("tokens", blocks)
                hf_model.generate(GenerateRequest(state, 2, prompts, p, np.random.default_rng(1), 0))  # untimed
                t = time.perf_counter()
                request = GenerateRequest(state, len(blocks), prompts, p, np.random.default_rng(1), 0)
                ours = hf_model.generate(request)
                ours_s = time.perf_counter() - t
                same = np.array_equal(ours.data, baseline)
                rows = int((ours.data != baseline).any(axis=1).sum())
                print(f"[{repeat}] hf_model.generate (gen_batch_size {batch}, {args.dtype}): "
                      f"{n_new / ours_s:,.0f} new tokens/s ({ours_s:.2f} s), ratio {base_s / ours_s:.2f}x; "
                      f"tokens equal to the released loop: {same}" + ("" if same else f" ({rows} rows differ)"),
                      flush=True)
                if args.device == "cpu" and args.dtype == "fp32" and not same:
                    raise SystemExit("on CPU fp32 the tokens must equal the released loop's")


if __name__ == "__main__":
    main()
