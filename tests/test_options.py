"""One options object for the CLI, the API and sweep files (bench.options), plugins' own CLI
options, the harness thread limit, and long lists printed short."""

import inspect
import json
import os
import re
from pathlib import Path

import pytest

import bench
import bench.api as cb
from bench import options as O
from bench import sweep as S
from bench.errors import BenchError
from bench.plugins import Bench, PluginError
from bench.progress import count_and_names
from bench.spec import parse_assignments, resolve
from tests import toy_plugins
from tests.helpers import bench_cli

ROOT = Path(__file__).resolve().parent.parent


# -- one list of keys, one default ----------------------------------------------------------------


def test_config_keys_sweep_axes_and_api_keywords_come_from_one_list():
    assert set(O.CONFIG_KEYS) == set(O.OPTION_KEYS) | {"seed"}
    assert set(S.SWEEP_KEYS) >= set(O.CONFIG_KEYS)
    assert set(S.AXES) == set(O.SPEC_KEYS) | {"seed", "seeds"}
    api_keywords = {name for name, p in inspect.signature(cb.specs).parameters.items()
                    if p.kind == p.KEYWORD_ONLY or p.kind == p.POSITIONAL_OR_KEYWORD} - {"bench", "config"}
    run_keywords = {name for name, p in inspect.signature(cb.run).parameters.items()
                    if p.kind == p.KEYWORD_ONLY} - {"bench", "progress"}
    assert api_keywords | run_keywords == set(O.OPTION_KEYS)


def test_cli_and_api_default_to_the_same_plugin(capsys, tmp_path):
    code, out, err = bench_cli(capsys, "run", "--dry-run", "--out", str(tmp_path))
    assert code == 0, err
    assert json.loads(out)["spec"]["plugin"] == O.DEFAULT_PLUGIN == "gmm"
    assert cb.specs()[0].plugin == O.DEFAULT_PLUGIN


def test_unknown_api_keyword_is_refused_with_a_near_name(tmp_path):
    with pytest.raises(BenchError, match="unknown option 'seed'. Did you mean 'seeds'"):
        cb.run("gaussian", seed=3, out=tmp_path)


# -- checked once ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["every:0", "bogus", "every:x", ""])
def test_keep_states_is_checked_before_the_api_runs_anything(tmp_path, value):
    with pytest.raises(BenchError, match="every:N with N >= 1"):
        cb.run("gaussian", generations=2, keep_states=value, out=tmp_path)
    assert not any(tmp_path.iterdir())


def test_keep_states_is_checked_by_execute_too(tmp_path):
    b = Bench()
    with pytest.raises(BenchError, match="keep_states"):
        cb.execute(b, [resolve(b, "gaussian", "smoke")], tmp_path, keep_states="every:0")


@pytest.mark.parametrize("value", ["first-last", "all", "every:1", "every:25"])
def test_keep_states_grammar_accepts(value):
    assert O.parse_keep_states(value) == value


def test_keep_states_from_a_config_file(tmp_path, capsys):
    cfg = tmp_path / "spec.yaml"
    cfg.write_text("plugin: gaussian\nkeep_states: every:0\n")
    code, _, err = bench_cli(capsys, "run", "--config", str(cfg), "--out", str(tmp_path / "r"))
    assert code == 2 and "every:N" in err
    assert O.RunOptions.parse({}, config=_write(tmp_path / "ok.yaml", "keep_states: all\n")).keep_states == "all"


def _write(path, text):
    path.write_text(text)
    return path


def test_dry_run_runs_the_models_check(capsys, tmp_path):
    code, out, err = bench_cli(capsys, "run", "--plugin", "gmm", "--set", "n_samples=1", "--dry-run",
                               "--out", str(tmp_path))
    assert code == 2 and "n_samples (1) must be at least n_components (2)" in err
    assert out == ""
    with pytest.raises(BenchError, match="must be at least n_components"):
        cb.specs("gmm", set={"n_samples": 1})


@pytest.mark.parametrize("text, value", [
    ("1e-2", 0.01), ("1E5", 100000.0), ("-3e+2", -300.0), ("1.0e5", 100000.0), (".5e1", 5.0),
    ("0.1", 0.1), ("3", 3), ("true", True), ("abc", "abc"), ("1e", "1e"), ("e5", "e5"), ("inf", "inf"),
    ("[1, 2]", [1, 2]), ("", ""),
])
def test_set_reads_numbers_with_an_exponent_as_floats(text, value):
    parsed = parse_assignments([f"x={text}"])["x"]
    assert parsed == value and type(parsed) is type(value)


def test_set_lr_with_an_exponent_reaches_the_spec(capsys, tmp_path):
    code, out, err = bench_cli(capsys, "run", "--plugin", "gaussian", "--set", "n_samples=1e2", "--dry-run",
                               "--out", str(tmp_path))
    assert code == 0, err  # an int parameter takes a whole float, as it did for 100.0
    assert json.loads(out)["spec"]["params"]["n_samples"] == 100
    b = Bench()
    mix = resolve(b, "gaussian", "smoke", policy="mix:1e-1")
    assert mix.policy_params["p"] == 0.1


# -- one lockstep rule ----------------------------------------------------------------------------


def test_lockstep_groups_only_specs_that_differ_in_seed():
    b = Bench()
    a = [resolve(b, "gmm-batched", "smoke", seed=s) for s in (0, 1)]
    other = resolve(b, "gmm-batched", "smoke", seed=2, overrides={"n_samples": 60})  # same trainer, other params
    lone = resolve(b, "gmm", "smoke", seed=0)  # no fit_batch
    groups = cb.lockstep_groups(b, [*a, other, lone])
    assert [[s.seed for s in g] for g in groups] == [[0, 1], [2], [0]]
    assert groups[1][0].params["n_samples"] == 60
    assert [len(g) for g in cb.lockstep_groups(b, a, batch=False)] == [1, 1]


def test_sweep_tasks_follow_the_same_rule(tmp_path):
    b = Bench()
    path = _write(tmp_path / "grid.yaml", "plugin: gmm-batched\ngenerations: 2\nworkers: 1\ngrid:\n"
                                          "  seed: [0, 1, 2]\n  n_samples: [50, 60]\n")
    sweep = S.load(b, path, out=tmp_path / "out")
    tasks = S.plan_tasks(b, sweep)
    specs = [r.spec for r in sweep.runs]
    assert [len(t.specs) for t in tasks] == [len(g) for g in cb.lockstep_groups(b, specs)] == [3, 3]


# -- threads --------------------------------------------------------------------------------------


def test_default_threads(monkeypatch):
    monkeypatch.setattr(O, "available_cores", lambda: 32)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert O.default_threads() == 8
    assert O.default_threads(workers=4) == 1
    monkeypatch.setattr(O, "available_cores", lambda: 2)
    assert O.default_threads() == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert O.default_threads() == 3 and O.default_threads(workers=2) == 1


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_threads_must_be_a_whole_number(bad, tmp_path):
    with pytest.raises(BenchError, match="threads"):
        cb.run("gaussian", threads=bad, out=tmp_path)


def test_runs_go_under_the_thread_limit_which_changes_no_run_id(monkeypatch, tmp_path):
    seen = []
    real_fit = toy_plugins._fit

    def recording_fit(req):
        seen.append(os.environ.get("OMP_NUM_THREADS"))
        return real_fit(req)

    monkeypatch.setattr(toy_plugins, "_fit", recording_fit)
    b = Bench(extra_plugins=[toy_plugins.Toy()])
    before = os.environ.get("OMP_NUM_THREADS")
    one = cb.run("toy", "smoke", generations=1, out=tmp_path / "a", threads=3, bench=b)[0]
    assert seen and set(seen) == {"3"}
    assert os.environ.get("OMP_NUM_THREADS") == before  # restored after the runs
    two = cb.run("toy", "smoke", generations=1, out=tmp_path / "b", threads=1, bench=b)[0]
    assert one.path.name == two.path.name and one.spec == two.spec
    assert "threads" not in json.dumps(one.spec.to_dict())


def test_cli_threads_flag_reaches_the_run(monkeypatch, capsys, tmp_path):
    calls = []
    real = cb.execute

    def spy(*args, **kwargs):
        calls.append(kwargs.get("threads"))
        return real(*args, **kwargs)

    monkeypatch.setattr(cb, "execute", spy)
    code, _, err = bench_cli(capsys, "run", "--plugin", "gaussian", "-g", "1", "--threads", "2", "--out", str(tmp_path))
    assert code == 0, err
    assert calls == [2]
    code, _, err = bench_cli(capsys, "run", "--plugin", "gaussian", "--threads", "0", "--out", str(tmp_path))
    assert code == 2 and "threads (--threads) must be a whole number >= 1" in err


def test_sweep_threads_key_and_flags(tmp_path, capsys):
    b = Bench()
    grid = "plugin: gaussian\ngenerations: 1\ngrid:\n  seed: [0, 1]\n"
    assert S.load(b, _write(tmp_path / "a.yaml", grid + "threads: 3\n")).threads_per_worker == 3
    assert S.load(b, _write(tmp_path / "b.yaml", grid + "threads_per_worker: 2\n")).threads_per_worker == 2
    assert S.load(b, _write(tmp_path / "c.yaml", grid + "workers: 4\n")).threads_per_worker == 1
    in_process = _write(tmp_path / "e.yaml", grid + "workers: 1\n")
    assert S.load(b, in_process).threads_per_worker == O.default_threads(1)
    assert S.load(b, in_process, executor="slurm").threads_per_worker == 1  # a job per task: one thread each
    with pytest.raises(BenchError, match="not both"):
        S.load(b, _write(tmp_path / "d.yaml", grid + "threads: 3\nthreads_per_worker: 2\n"))
    code, _, err = bench_cli(capsys, "sweep", str(tmp_path / "a.yaml"), "--threads", "2", "--threads-per-worker", "3",
                             "--dry-run")
    assert code == 2 and "give one" in err


# -- plugins' CLI options -------------------------------------------------------------------------


def test_the_cli_names_no_plugin_flag_and_imports_no_first_party_plugin():
    source = (ROOT / "bench" / "cli.py").read_text()
    assert "collapse_bench_plugins" not in source
    for flag in ("--model", "--dataset", "--device", "--dtype", "--tensorboard", "--scheduler", "--slurm-"):
        assert not re.search(rf'"{flag}', source), flag


def test_plugins_register_their_options():
    b = Bench()
    run = {o.flag: o for o in O.cli_options(b, "run")}
    assert {"--model", "--dataset", "--device", "--dtype", "--tensorboard"} <= set(run)
    assert run["--device"].param == "device" and run["--tensorboard"].around is not None
    sweep = {o.flag: o for o in O.cli_options(b, "sweep")}
    assert sweep["--slurm-array-parallelism"].type is int
    assert (sweep["--scheduler"].executor, sweep["--scheduler"].executor_option) == ("dask", "scheduler")


def test_a_flag_registered_twice_names_both_plugins():
    class Clash:
        __name__ = "clash"

        @bench.hookimpl
        def bench_cli_options(self, command, register):
            register(O.CliOption("--model", help="mine"))

    with pytest.raises(PluginError, match="'hf_lm' and by plugin 'clash'"):
        O.cli_options(Bench(extra_plugins=[Clash()]), "run")


def test_a_plugin_option_sets_its_parameter(capsys, tmp_path):
    code, out, err = bench_cli(capsys, "run", "--plugin", "opt125m", "--device", "cpu", "--dtype", "fp32",
                               "--set", "device=cuda", "--dry-run", "--out", str(tmp_path))
    assert code == 0, err
    params = json.loads(out)["spec"]["params"]
    assert params["device"] == "cpu" and params["dtype"] == "fp32"  # the flag wins over --set, as before


def test_executor_flag_of_another_executor_is_refused(capsys, tmp_path):
    path = _write(tmp_path / "g.yaml", "plugin: gaussian\ngenerations: 1\n")
    code, _, err = bench_cli(capsys, "sweep", str(path), "--slurm-time", "10", "--dry-run")
    assert code == 2 and "--slurm-time is an option of --executor slurm, but this sweep uses 'local'" in err


# -- long lists print short -----------------------------------------------------------------------


def test_count_and_names():
    assert count_and_names([], "run") == "0 runs"
    assert count_and_names(["a"], "run") == "1 run: a"
    assert count_and_names(list("abcde"), "run") == "5 runs: a, b, c, d, e"
    names = [f"r{i}" for i in range(400)]
    assert count_and_names(names, "run") == "400 runs: r0, r1, r2, ... and 397 more"


def test_run_of_many_seeds_ends_with_a_short_line(capsys, tmp_path):
    code, out, err = bench_cli(capsys, "run", "--plugin", "gaussian", "--seeds", "0-6", "-g", "1",
                               "--out", str(tmp_path))
    assert code == 0, err
    line = next(line for line in out.splitlines() if line.startswith("Results:"))
    assert line.startswith(f"Results: {tmp_path}/ (7 runs: gaussian-smoke-replace-s0-")
    assert line.endswith("... and 4 more)") and line.count("gaussian-smoke") == 3


@pytest.mark.parametrize("keywords, message", [
    ({"policy": ["replace"]}, "policy (--policy) must be a policy such as replace"),
    ({"preset": {"a": 1}}, "preset (--preset) must be a preset name"),
    ({"seeds": {"a": 1}}, "seeds (--seeds) must be a seed >= 0"),
    ({"seeds": [0, 1.5]}, "seeds (--seeds) must be a seed >= 0"),
    ({"set": {1: 2}}, "set (--set) must be a mapping of parameter name (text): value"),
    ({"metrics": 5}, "metrics (--metric) must be a metric name or a list of metric names"),
    ({"mitigation": [1]}, "mitigation (--mitigation) must be a mitigation"),
    ({"generations": 2.5}, "generations (--generations) must be a non-negative whole number"),
])
def test_api_keywords_of_the_wrong_type_are_messages(keywords, message):
    with pytest.raises(BenchError) as info:
        cb.specs("gaussian", **keywords)
    assert message in str(info.value)


def test_check_value_names_the_key_and_passes_what_fits():
    assert O.check_value("policy", "mix:0.1") == "mix:0.1"
    assert O.check_value("plugin", None) is None  # not given
    assert O.check_value("seed", [0, "2-4"]) == [0, "2-4"]
    with pytest.raises(BenchError, match=r"^f\.yaml: seed must be a seed >= 0 .*got -1$"):
        O.check_value("seed", -1, "f.yaml")
    with pytest.raises(BenchError, match=r"got \[0, 0, 0, .*\.\.\.$"):
        O.check_value("plugin", [0] * 100)  # long values are cut short
    assert set(O.EXPECTS) >= set(O.OPTION_KEYS) - {"on_nonfinite"}
