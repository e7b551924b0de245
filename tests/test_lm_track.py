"""The language-model track end to end through `bench run`: the smoke corpus at test size, a model
and dataset saved locally and loaded through the hub code path, provenance, errors, resume."""


import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

import bench  # noqa: E402
import bench.api as cb  # noqa: E402
from bench import results as R  # noqa: E402
from bench import runfolder as RF  # noqa: E402
from tests.test_cli import bench_cli  # noqa: E402

# The smoke preset's code at test size: a 6k-token corpus, 16-token blocks, one epoch.
TINY = ["--set", "source_tokens=6000", "--set", "source_vocab=60", "--set", "block_size=16",
        "--set", "new_tokens=16", "--set", "epochs=1", "--set", "toy_hidden=16", "--set", "toy_ffn=32",
        "--set", "toy_layers=1", "--set", "toy_heads=2", "--set", "toy_positions=64",
        "--set", "text_metric_blocks=50", "--set", "self_bleu_samples=10", "--set", "device=cpu"]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def without_throughput(df):
    return df[~df.metric.str.startswith("throughput/")].reset_index(drop=True)


@pytest.mark.slow
def test_smoke_code_at_test_size_runs_end_to_end(capsys, tmp_path):
    code, out, err = bench_cli(capsys, "run", "--plugin", "opt125m", "--preset", "smoke", "-g", "2",
                               "--out", str(tmp_path), *TINY)
    assert code == 0, err
    run_dir = next(tmp_path.glob("opt125m-smoke-replace-s0-*"))
    df = cb.metrics(run_dir)
    assert sorted(df.generation.unique()) == [0, 1, 2]
    names = set(df.metric)
    for expected in ("test-perplexity", "perplexity-drift", "distinct-n/4", "self-bleu", "rare-type-mass",
                     "true-nll-shift", "true-tail-mass", "reference-nll/q50", "throughput/generate-units-per-s"):
        assert expected in names
    drift = df[(df.metric == "perplexity-drift") & (df.generation == 0)].value.item()
    assert drift == pytest.approx(1.0)
    assert np.isfinite(df[df.metric == "true-nll-shift"].value).all(), "specials suppressed: exact scores finite"
    samples, scores = RF.generation_samples(run_dir, 1)
    assert samples.kind == "tokens" and samples.data.shape[1] == 16
    assert len(samples.columns["text"]) == len(samples) and len(samples.columns["prompt"]) == len(samples)
    assert (scores["units"] == 15).all()
    info = R.read_json(run_dir / "run.json")
    prov = info["data_provenance"]
    assert prov["tokenizer_hash"] and prov["dataset_fingerprint"] and prov["model_fingerprint"]
    # bench show prints the prompt and its continuation at every generation
    code, out, err = bench_cli(capsys, "show", str(run_dir), "--prompt", "3")
    assert code == 0, err
    assert samples.columns["prompt"][3] in out and samples.columns["text"][3] in out
    assert out.count("generation ") == 3


@pytest.mark.slow
def test_lm_run_resumes_to_the_same_results(capsys, tmp_path, monkeypatch):
    args = ["run", "--plugin", "opt125m", "--preset", "smoke", "-g", "2", *TINY]
    code, _, err = bench_cli(capsys, *args, "--out", str(tmp_path / "whole"))
    assert code == 0, err
    code, _, err = bench_cli(capsys, *args, "--generations", "1", "--out", str(tmp_path / "cut"))
    assert code == 0, err
    code, _, err = bench_cli(capsys, *args, "--out", str(tmp_path / "cut"))
    assert code == 0, err
    pd.testing.assert_frame_equal(without_throughput(cb.metrics(tmp_path / "whole")),
                                  without_throughput(cb.metrics(tmp_path / "cut")))


@pytest.fixture(scope="module")
def local_model_and_data(tmp_path_factory):
    """A tiny OPT with its tokenizer, and a text dataset, saved locally (the hub code path reads them)."""
    from datasets import Dataset, DatasetDict
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import OPTConfig, OPTForCausalLM, PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("hub")
    words = [f"w{i}" for i in range(30)]
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: 3 + i for i, w in enumerate(words)}}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="</s>", eos_token="</s>",
                                  unk_token="<unk>")
    model_dir = root / "model"
    tok.save_pretrained(model_dir)
    config = OPTConfig(vocab_size=len(tok), hidden_size=16, word_embed_proj_dim=16, num_hidden_layers=1,
                       num_attention_heads=2, ffn_dim=32, max_position_embeddings=64, pad_token_id=0,
                       bos_token_id=1, eos_token_id=1)
    torch.manual_seed(0)
    OPTForCausalLM(config).save_pretrained(model_dir)
    rng = np.random.default_rng(0)
    rows = lambda n: [" ".join(rng.choice(words, size=rng.integers(5, 30))) for _ in range(n)]  # noqa: E731
    data_dir = root / "data"
    DatasetDict({"train": Dataset.from_dict({"text": rows(120)}),
                 "validation": Dataset.from_dict({"text": rows(20)}),
                 "test": Dataset.from_dict({"text": rows(20)})}).save_to_disk(data_dir)
    return model_dir, data_dir


def test_any_local_causal_lm_and_dataset_through_the_hub_code_path(capsys, tmp_path, local_model_and_data):
    model_dir, data_dir = local_model_and_data
    code, out, err = bench_cli(
        capsys, "run", "--plugin", "hf-causal-lm", "--preset", "paper", "--model", str(model_dir),
        "--dataset", str(data_dir), "--device", "cpu", "-g", "1", "--policy", "mix:0.5",
        "--set", "block_size=16", "--set", "new_tokens=16", "--set", "epochs=1", "--set", "num_beams=2",
        "--set", "batch_size=8", "--set", "text_metric_blocks=20", "--set", "self_bleu_samples=5",
        "--out", str(tmp_path))
    assert code == 0, err
    assert "on the CPU" not in err  # a model this small trains on a CPU without a warning
    run_dir = next(tmp_path.glob("hf-causal-lm-paper-mix-0.5-s0-*"))
    df = cb.metrics(run_dir)
    assert sorted(df.generation.unique()) == [0, 1]
    assert df[df.metric == "true-nll-shift"].value.isna().all(), "no exact source for real text"
    prov = R.read_json(run_dir / "run.json")["data_provenance"]
    assert prov["model"] == str(model_dir) and prov["model_fingerprint"] and prov["tokenizer_hash"]


@pytest.mark.parametrize("flag, value, named", [
    ("--model", "no-such-org/no-such-model", "no-such-org/no-such-model"),
    ("--dataset", "/nonexistent/corpus.txt", "/nonexistent/corpus.txt"),
])
def test_a_missing_model_or_dataset_names_it_and_the_way_out(capsys, tmp_path, local_model_and_data, flag, value, named):
    model_dir, data_dir = local_model_and_data
    base = {"--model": str(model_dir), "--dataset": str(data_dir)}
    base[flag] = value
    code, out, err = bench_cli(capsys, "run", "--plugin", "hf-causal-lm", "--preset", "paper", "--device", "cpu",
                               "--model", base["--model"], "--dataset", base["--dataset"], "--out", str(tmp_path))
    assert code == 2
    assert named in err and "--preset smoke" in err and flag + " PATH" in err
    assert "Traceback" not in err
    # a local path by check, an uncached hub id (the hub is offline in tests) by preflight: both
    # before the run folder is made
    assert not list(tmp_path.iterdir()), "refused before a run folder is made"


def test_an_uncached_hub_model_leaves_no_run_folder_but_a_dry_run_resolves(capsys, tmp_path):
    code, out, err = bench_cli(capsys, "run", "--plugin", "opt125m", "--preset", "smoke", "--model",
                               "no-such-org/no-such-model", "--out", str(tmp_path))
    assert code == 2 and "is not in the local Hugging Face cache" in err and "Traceback" not in err
    assert not list(tmp_path.iterdir()), "refused before a run folder is made"
    code, out, err = bench_cli(capsys, "run", "--plugin", "opt125m", "--preset", "paper", "--dry-run",
                               "--out", str(tmp_path))
    assert code == 0 and '"run_id"' in out, "a dry run of the paper preset resolves offline"


def test_a_device_torch_lacks_is_refused_before_the_run_folder(capsys, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    code, out, err = bench_cli(capsys, "run", "--plugin", "opt125m", "--preset", "smoke", "--device", "cuda",
                               "--out", str(tmp_path))
    assert code == 2 and "torch sees no CUDA GPU; use --device cpu" in err and "--set device" not in err
    assert not list(tmp_path.iterdir()), "refused before a run folder is made"


def test_an_uncached_hub_model_on_the_smoke_preset_is_named_without_suggesting_smoke():
    from collapse_bench_plugins import hf_data

    params = cb.specs("opt125m", "smoke", set={"model": "no-such-org/no-such-model"})[0].params
    with pytest.raises(bench.BenchError) as info:
        hf_data.check_sources(params)
    message = str(info.value)
    assert "'no-such-org/no-such-model' is not in the local Hugging Face cache" in message
    assert "--preset smoke" not in message and "--model toy-opt" in message


def test_a_small_local_model_on_the_cpu_gets_no_speed_warning(local_model_and_data):
    from collapse_bench_plugins import hf_lm

    model_dir, data_dir = local_model_and_data
    spec = cb.specs("hf-causal-lm", "paper", set={"device": "cpu", "model": str(model_dir),
                                                  "dataset": str(data_dir)})[0]
    assert hf_lm.check(spec.params) == []
    assert hf_lm.check({**spec.params, "dataset": "synthetic", "model": "toy-opt"}) == []


def test_continuations_must_be_as_long_as_blocks(capsys, tmp_path):
    code, out, err = bench_cli(capsys, "run", "--plugin", "opt125m", "--set", "new_tokens=8", "--out", str(tmp_path))
    assert code == 2 and "new_tokens (8) must equal block_size (64)" in err
    assert not list(tmp_path.glob("*/gens/*"))


def test_paper_preset_on_cpu_estimates_its_time():
    from collapse_bench_plugins import hf_lm

    spec = cb.specs("opt125m", "paper", set={"device": "cpu"})[0]
    (message,) = hf_lm.check(spec.params)
    assert "meant for a GPU" in message and "hours" in message and "--preset smoke" in message
    assert hf_lm.check(cb.specs("opt125m", "smoke")[0].params) == []


def test_paper_presets_follow_the_protocol():
    a = cb.specs("opt125m", "paper")[0]
    b = cb.specs("opt125m", "paper-b")[0]
    assert (a.params["model"], a.params["dataset"], a.params["dataset_config"]) == (
        "facebook/opt-125m", "wikitext", "wikitext-2-raw-v1")
    assert (a.params["block_size"], a.params["num_beams"], a.params["new_tokens"], a.params["epochs"]) == (64, 5, 64, 5)
    assert (a.policy, b.policy, b.policy_params, b.params["epochs"]) == ("replace", "mix", {"p": 0.1}, 10)
    assert a.generations == 9 and a.start == "pretrained"
    assert a.params["repetition_penalty"] == 3.0 and a.params["lr"] == 2e-5
