"""Helpers shared by the test modules."""

import numpy as np

from bench import results as R
from bench.cli import main


def bench_cli(capsys, *args):
    """Run `bench ARGS` in-process; return (exit code, stdout, stderr)."""
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    out, err = capsys.readouterr()
    return code, out, err


def metric_values(folder):
    """A run's metric rows (generation, metric, value) in a fixed order."""
    table = R.read_metrics(folder).to_pandas().sort_values(["generation", "metric"])
    return table[["generation", "metric", "value"]].reset_index(drop=True)


def assert_same_results(folder, reference):
    """Two runs wrote the same metric rows with exactly the same values."""
    a, b = metric_values(folder), metric_values(reference)
    assert list(a.metric) == list(b.metric) and list(a.generation) == list(b.generation)
    np.testing.assert_array_equal(a.value.to_numpy(), b.value.to_numpy())


def save_tiny_opt(path, words: int = 20, **config):
    """A word-level tokenizer (<pad> <s> </s> <unk>, then w0..w{words-1}) and a tiny seeded OPT
    saved side by side in ``path``; ``config`` overrides OPTConfig fields (e.g. dropout=0.0)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import OPTConfig, OPTForCausalLM, PreTrainedTokenizerFast
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, **{f"w{i}": 4 + i for i in range(words)}}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>",
                                  eos_token="</s>", unk_token="<unk>")
    tok.save_pretrained(path)
    settings = dict(vocab_size=len(tok), hidden_size=16, word_embed_proj_dim=16, num_hidden_layers=2,
                    num_attention_heads=2, ffn_dim=32, max_position_embeddings=32,
                    pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    OPTForCausalLM(OPTConfig(**{**settings, **config})).save_pretrained(path)
    return path


def bench_as_user(*args):
    """``bench ARGS`` in-process as a user runs it: (exit code, stdout and stderr, the traceback of
    an exception that escaped ``main``, or None)."""
    import traceback

    from click.testing import CliRunner

    runner = CliRunner()
    escaped = None
    with runner.isolation() as streams:
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:  # what a user would see as a traceback
            escaped = traceback.format_exc()
            code = -1
    text = streams[-1].getvalue().decode(errors="replace")
    return code, text, escaped


def generation_frame(run_dir, k):
    """S_{k+1}'s samples file as a DataFrame (its index, sample and score columns), read through
    the run folder's readers whether generation k was committed alone or in a chunk."""
    import pyarrow.parquet as pq

    from bench import runfolder as RF

    folder = RF.generation_unit(run_dir, k)[2]
    names = [n for n in pq.read_schema(folder / RF.SAMPLES_FILE).names if n != "generation"]
    return RF.generation_table(run_dir, k, names).to_pandas()
