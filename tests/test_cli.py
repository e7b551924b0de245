"""The command line: specs from flags and files, and user mistakes as messages, not tracebacks."""

import errno
import json
import subprocess
import sys

import pytest

import bench.api as cb
from bench import results as R
from bench import runfolder as RF
from bench.errors import BenchError
from bench.spec import parse_seeds
from tests.helpers import bench_cli


def test_parse_seeds():
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("3") == [3]
    assert parse_seeds("0,2,5-6") == [0, 2, 5, 6]
    for bad in ("a", "4-1", "1,1", "-1"):
        with pytest.raises(BenchError):
            parse_seeds(bad)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--plugin", "gmn"], "unknown model 'gmn'. Did you mean 'gmm'?"),
        (["--plugin", "gmm", "--preset", "papr"], "has no preset 'papr'. Did you mean 'paper'?"),
        (["--policy", "mixx:0.1"], "unknown policy 'mixx'. Did you mean 'mix'?"),
        (["--policy", "mix:1.5"], "between 0 and 1"),
        (["--policy", "mix:-0.1"], "between 0 and 1"),
        (["--policy", "mix:lots"], "between 0 and 1"),
        (["--policy", "replace:3"], "takes no value"),
        (["--set", "n_sample=5"], "has no parameter 'n_sample'. Did you mean 'n_samples'"),
        (["--set", "n_samples=many"], "n_samples must be int"),
        (["--set", "nothing"], "--set needs key=value"),
        (["--set", "policy.q=1", "--policy", "mix:0.1"], "policy 'mix' has no parameter 'q'"),
        (["--seeds", "1-x"], "invalid seeds"),
        (["--keep-states", "some"], "--keep-states"),
        (["--generations", "-3"], "non-negative"),
    ],
)
def test_user_mistakes_exit_non_zero_with_a_message(capsys, tmp_path, args, message):
    code, out, err = bench_cli(capsys, "run", "--out", str(tmp_path), *args)
    assert code != 0
    assert message in err
    assert "Traceback" not in err
    assert not list(tmp_path.glob("*/gens/*")), "nothing may run after a user mistake"


def test_bad_option_is_a_usage_error(capsys):
    code, out, err = bench_cli(capsys, "run", "--colour", "red")
    assert code == 2 and "No such option" in err


def test_out_folder_that_cannot_be_written(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, out, err = bench_cli(capsys, "run", "--out", str(blocker / "results"))
    assert code == 2
    assert "Choose another folder with --out" in err or "cannot write" in err
    assert "Traceback" not in err


def test_full_disk_keeps_finished_generations(capsys, tmp_path, monkeypatch):
    """ENOSPC while writing generation 3: a message, a non-zero exit, generations 0-2 intact."""
    monkeypatch.setenv("BENCH_COMMIT_EVERY", "0")  # one state file per generation: the 4th write is generation 3's
    real_write = R.write_state
    count = {"n": 0}

    def failing(path, state, **kw):
        count["n"] += 1
        if count["n"] == 4:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_write(path, state, **kw)

    monkeypatch.setattr(R, "write_state", failing)
    code, out, err = bench_cli(capsys, "run", "--plugin", "gaussian", "--out", str(tmp_path), "-g", "6")
    assert code == 2
    assert "disk is full" in err and "run the same command again" in err
    run_dir = next(tmp_path.glob("gaussian-*"))
    assert R.finished_generations(run_dir) == 3
    assert R.validate_metrics(R.read_metrics(run_dir)) == []
    monkeypatch.setattr(R, "write_state", real_write)
    code, out, err = bench_cli(capsys, "run", "--plugin", "gaussian", "--out", str(tmp_path), "-g", "6")
    assert code == 0 and R.finished_generations(run_dir) == 7


def test_dry_run_prints_the_resolved_spec_and_runs_nothing(capsys, tmp_path):
    code, out, err = bench_cli(capsys, "run", "--plugin", "gmm", "--preset", "paper", "--seeds", "0-1",
                               "--policy", "mix:0.1", "--set", "n_samples=500", "--dry-run", "--out", str(tmp_path))
    assert code == 0, err
    docs = [json.loads(chunk) for chunk in out.replace("}\n{", "}\n\x00{").split("\x00")]
    assert [d["spec"]["seed"] for d in docs] == [0, 1]
    spec = docs[0]["spec"]
    assert spec["params"]["n_samples"] == 500 and spec["policy"] == "mix" and spec["policy_params"] == {"p": 0.1}
    assert docs[0]["run_folder"].startswith(str(tmp_path / "gmm-paper-mix-0.1-s0-"))
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("suffix", ["yaml", "toml"])
def test_config_file_gives_a_whole_spec_and_flags_win(capsys, tmp_path, suffix):
    text = {
        "yaml": "plugin: gaussian\npreset: smoke\ngenerations: 3\npolicy: 'mix:0.2'\nseeds: 0-1\nset:\n  n_samples: 30\n",
        "toml": 'plugin = "gaussian"\npreset = "smoke"\ngenerations = 3\npolicy = "mix:0.2"\nseeds = "0-1"\n[set]\nn_samples = 30\n',
    }[suffix]
    cfg = tmp_path / f"spec.{suffix}"
    cfg.write_text(text)
    code, out, err = bench_cli(capsys, "run", "--config", str(cfg), "--generations", "2", "--dry-run")
    assert code == 0, err
    docs = [json.loads(c) for c in out.replace("}\n{", "}\n\x00{").split("\x00")]
    assert len(docs) == 2
    spec = docs[0]["spec"]
    assert spec["plugin"] == "gaussian" and spec["generations"] == 2 and spec["params"]["n_samples"] == 30
    assert spec["policy_params"] == {"p": 0.2}


def test_config_file_mistakes(capsys, tmp_path):
    cfg = tmp_path / "spec.yaml"
    cfg.write_text("plugn: gmm\n")
    code, out, err = bench_cli(capsys, "run", "--config", str(cfg))
    assert code == 2 and "unknown key 'plugn'. Did you mean 'plugin'?" in err
    cfg.write_text("plugin: [unclosed\n")
    code, out, err = bench_cli(capsys, "run", "--config", str(cfg))
    assert code == 2 and "not valid YAML" in err


@pytest.mark.slow
def test_run_reports_where_the_results_are_and_progress_lines(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bench.cli", "run", "--plugin", "gaussian", "--seeds", "0-1",
                           "--out", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert f"Results: {tmp_path}/ (2 runs" in proc.stdout
    # Not a terminal: plain progress lines (no carriage returns), ending at the last generation.
    assert "\r" not in proc.stderr
    assert "generation 100/100" in proc.stderr and "gen/s" in proc.stderr and "ETA" in proc.stderr
    assert len(cb.metrics(tmp_path).run_id.unique()) == 2


def test_second_process_on_a_locked_run_exits_non_zero(tmp_path):
    from bench.loop import FolderLock
    from bench.plugins import Bench
    from bench.spec import resolve

    spec = resolve(Bench(), "gaussian", "smoke")
    run_dir = tmp_path / spec.folder_name
    run_dir.mkdir(parents=True)
    with FolderLock(run_dir / ".lock", "test"):
        proc = subprocess.run([sys.executable, "-m", "bench.cli", "run", "--plugin", "gaussian", "--out", str(tmp_path)],
                              capture_output=True, text=True)
    assert proc.returncode == 2
    assert "is in use by pid" in proc.stderr and "Traceback" not in proc.stderr


def test_show_follows_one_sample_across_generations(capsys, tmp_path):
    code, _, err = bench_cli(capsys, "run", "--plugin", "gaussian", "-g", "3", "--out", str(tmp_path))
    assert code == 0, err
    run_dir = next(tmp_path.glob("gaussian-*"))
    code, out, err = bench_cli(capsys, "show", str(run_dir), "--prompt", "4")
    assert code == 0, err
    for k in range(4):
        samples, scores = RF.generation_samples(run_dir, k)
        assert f"generation {k} (drawn by M_{k})" in out
        assert f"{-scores['loglik_reference'][4] / scores['units'][4]:.3f}" in out
        assert str(samples.data[4].tolist()) in out
    code, out, err = bench_cli(capsys, "show", str(run_dir), "--prompt", "999")
    assert code == 2 and "sample 999 does not exist" in err
    code, out, err = bench_cli(capsys, "show", str(tmp_path / "missing"))
    assert code == 2 and "is not a run folder" in err


def test_show_summarises_vector_samples_of_the_newest_run(capsys, tmp_path, monkeypatch):
    import os
    from pathlib import Path

    import numpy as np

    monkeypatch.chdir(tmp_path)
    code, _, err = bench_cli(capsys, "show")
    assert code == 2 and "no RUN given and no run folder under results/" in err
    code, _, err = bench_cli(capsys, "run", "--plugin", "gaussian", "-g", "3", "--seeds", "0-1")
    assert code == 0, err
    seed0, seed1 = sorted(Path("results").glob("gaussian-*"), key=lambda f: "-s1-" in f.name)
    later = (seed1 / "run.json").stat().st_mtime_ns + 10**12
    os.utime(seed0 / "run.json", ns=(later, later))  # seed 0's run.json changed last
    code, out, err = bench_cli(capsys, "show")
    assert code == 0, err
    assert f"(no RUN given: {seed0}, the most recently modified run under results/)" in out
    assert "independent draws: --prompt N prints sample N of each" in out
    for k in range(4):
        samples, scores = RF.generation_samples(seed0, k)
        mean, std = samples.data.mean(axis=0), samples.data.std(axis=0)
        nll = np.mean(-scores["loglik_reference"] / scores["units"])
        row = next(line.split() for line in out.splitlines() if line.split()[:1] == [str(k)])
        assert " ".join(row[1:]) == (f"[{mean[0]:.3g}, {mean[1]:.3g}] [{std[0]:.3g}, {std[1]:.3g}] {nll:.3f}")


def test_show_summarises_categories_and_images():
    import numpy as np

    from bench.cli import _sample_summary
    from bench.components import Samples

    scores = {"loglik_reference": np.array([-1.0, -2.0, -3.0, -6.0]), "units": np.array([1, 1, 1, 2])}
    categories = Samples("categorical", np.array([3, 1, 3, 3]))
    assert _sample_summary(categories, scores) == ("2", "3 (75%)", "2.250")
    images = Samples("images", np.array([[[0.0, 1.0]], [[1.0, 1.0]]]))
    assert _sample_summary(images, {}) == ("pixel mean 0.75", "std 0.433", "")


def test_plot_and_report_default_to_results(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for command in ("plot", "report"):
        code, _, err = bench_cli(capsys, command)
        assert code == 2 and "no RUN given and no results/ folder here" in err
    code, _, err = bench_cli(capsys, "run", "--plugin", "gaussian", "-g", "2")
    assert code == 0, err
    code, out, err = bench_cli(capsys, "report", "--metric", "gaussian-var")
    assert code == 0, err
    assert len(list((tmp_path / "reports").glob("gaussian-*.html"))) == 1


def test_plugins_lists_presets_and_what_an_option_plugin_adds(capsys):
    code, out, err = bench_cli(capsys, "plugins")
    assert code == 0, err
    assert "  presets of gmm: paper, two-gaussians, smoke (default)" in out
    tensorboard = out.split("tensorboard ", 1)[1].split("\n\n")[0].splitlines()
    assert "  options of bench run: --tensorboard DIR" in tensorboard
    assert any(line.startswith("  run events: ") and "bench_run_started" in line for line in tensorboard)
    headers = [i for i, line in enumerate(out.splitlines()) if not line.startswith(" ")]
    assert all(b - a > 1 for a, b in zip(headers, headers[1:] + [len(out.splitlines())])), "a plugin listed bare"
    code, out, err = bench_cli(capsys, "plugins", "--json")
    listed = {p["name"]: p for p in json.loads(out)}
    assert listed["gmm"]["presets"] == {"gmm": {"presets": ["paper", "two-gaussians", "smoke"], "default": "smoke"}}
    assert listed["tensorboard"]["cli_options"] == {"run": ["--tensorboard DIR"]}


def test_samples_keep_their_text_columns(tmp_path):
    import numpy as np

    from bench.components import Samples

    s = Samples("tokens", np.arange(12, dtype=np.int64).reshape(3, 4), {"text": ["a b", "c", "d e f"]})
    path = tmp_path / "samples.parquet"
    R.write_parquet(path, R.samples_table(s, {"loglik_reference": np.zeros(3)}))
    back, scores = R.read_samples(path)
    np.testing.assert_array_equal(back.data, s.data)
    assert back.columns == {"text": ["a b", "c", "d e f"]} and list(scores) == ["loglik_reference"]
    assert s.take([2, 0]).columns["text"] == ["d e f", "a b"]
    joined = Samples.concat([s, Samples("tokens", s.data[:1])])
    assert len(joined) == 4 and joined.columns == {}
    assert Samples.concat([s, s.take([1])]).columns["text"] == ["a b", "c", "d e f", "c"]
    with pytest.raises(ValueError, match="column 'text' has 1 values for 3 samples"):
        Samples("tokens", s.data, {"text": ["x"]})


def test_config_file_components_reach_the_spec(tmp_path):
    """trainer/generator/scorer in a --config file choose the components, as the file format says."""
    cfg = tmp_path / "spec.yaml"
    cfg.write_text("plugin: gmm\ntrainer: gmm-em-batched\n")
    (spec,) = cb.specs(config=cfg)
    assert spec.plugin == "gmm" and spec.trainer == "gmm-em-batched"


@pytest.mark.parametrize("text, message", [
    ("plugin: [gaussian, gmm]\n", "plugin must be a model name"),
    ("plugin: 5\n", "plugin must be a model name"),
    ("policy: [replace]\n", "policy must be a policy"),
    ("preset: {a: 1}\n", "preset must be a preset name"),
    ("out: [a]\n", "out must be a folder name"),
    ("keep_states: [all]\n", "keep_states must be first-last, all or every:N"),
    ("trainer: [gmm-em]\n", "trainer must be a trainer name"),
    ("seeds: {a: 1}\n", "seeds must be a seed >= 0"),
    ("seed: 1.5\n", "seed must be a seed >= 0"),
    ("seeds: [0, x]\n", "invalid seeds 'x'"),
    ("plugin: gaussian\nset: {1: 2}\n", "set must be a mapping of parameter name (text): value"),
])
def test_config_values_of_the_wrong_type_are_messages(capsys, tmp_path, text, message):
    cfg = tmp_path / "spec.yaml"
    cfg.write_text(text)
    code, _, err = bench_cli(capsys, "run", "--config", cfg, "--dry-run", "--out", tmp_path / "r")
    assert code == 2 and f"config file {cfg}: {message}" in err and "Traceback" not in err, err


def test_a_binary_config_file_is_a_message(capsys, tmp_path):
    cfg = tmp_path / "spec.yaml"
    cfg.write_bytes(b"plugin: gmm\n\x96\xff\x00\x81")
    code, _, err = bench_cli(capsys, "run", "--config", cfg, "--dry-run")
    assert code == 2 and "is not a text file: byte 12 is not UTF-8" in err


def test_metrics_given_as_one_string_is_one_metric(tmp_path):
    cfg = tmp_path / "spec.yaml"
    cfg.write_text("plugin: gaussian\nmetrics: logdet-diff\n")
    (spec,) = cb.specs(config=cfg)
    assert spec.metrics == ["logdet-diff"]
    (spec,) = cb.specs("gaussian", metrics="gaussian-var")
    assert spec.metrics == ["gaussian-var"]


def test_absurd_seed_ranges_are_refused_at_once(capsys, monkeypatch):
    code, out, err = bench_cli(capsys, "run", "--seeds", "0-100000000", "--dry-run")
    assert code == 2 and out == ""
    assert "100,000,001 runs, more than the limit of 10,000" in err and "BENCH_MAX_RUNS=100000001" in err
    monkeypatch.setenv("BENCH_MAX_RUNS", "3")
    assert parse_seeds("0-2") == [0, 1, 2]
    with pytest.raises(BenchError, match="4 runs, more than the limit of 3"):
        parse_seeds("0-1,5-6")
    with pytest.raises(BenchError, match="4 runs, more than the limit of 3"):
        parse_seeds([0, "1-3"])
    monkeypatch.setenv("BENCH_MAX_RUNS", "lots")
    with pytest.raises(BenchError, match="BENCH_MAX_RUNS must be a whole number"):
        parse_seeds("0-2")


def test_seed_lists_take_numbers_and_ranges():
    assert parse_seeds([0, "2-4", 7]) == [0, 2, 3, 4, 7]
    assert parse_seeds(range(3)) == [0, 1, 2]
    for bad in ([0, 1.5], [[1]], {"a": 1}, 1.5, [0, "0-2"]):
        with pytest.raises(BenchError):
            parse_seeds(bad)


def test_runs_of_a_missing_folder_is_an_error(capsys, tmp_path):
    code, out, err = bench_cli(capsys, "runs", tmp_path / "nope")
    assert code == 2 and "nope does not exist" in err
    (tmp_path / "empty").mkdir()
    code, out, err = bench_cli(capsys, "runs", tmp_path / "empty")
    assert code == 0 and "No runs under" in out


@pytest.mark.parametrize("plugin, setting, message", [
    ("gaussian", "std=-1", "std > 0"),
    ("gaussian", "n_samples=1", "n_samples must be an integer >= 2"),
    ("gaussian", "dim=0", "dim must be an integer >= 1"),
    ("gaussian", "estimator=median", "estimator must be 'unbiased'"),
    ("categorical", "zipf=-1", "zipf must be a finite number >= 0"),
    ("gmm", "tol=-1", "tol must be a finite number >= 0"),
    ("gmm", "reg_covar=.nan", "reg_covar must be a finite number >= 0"),
])
def test_out_of_range_parameters_are_refused_before_any_folder(capsys, tmp_path, plugin, setting, message):
    code, out, err = bench_cli(capsys, "run", "--plugin", plugin, "--set", setting, "-g", "1", "--out", tmp_path / "r")
    assert code == 2 and message in err
    assert not (tmp_path / "r").exists()
    code, out, err = bench_cli(capsys, "run", "--plugin", plugin, "--set", setting, "--dry-run")
    assert code == 2 and message in err and out == ""
