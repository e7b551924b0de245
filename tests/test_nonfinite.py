"""Non-finite values (NaN, inf) in a generation: the run stops and says so (on_nonfinite stop, the
default) or goes on and marks them (record); validate and the leaderboard show it."""

import dataclasses
import json

import numpy as np
import pytest

import bench
import bench.api as cb
from bench import leaderboard as LB
from bench import results as R
from bench import runfolder as RF
from bench.errors import BenchError
from bench.loop import NonFiniteValues, _nonfinite
from bench.options import RunOptions
from bench.plugins import Bench
from bench.spec import resolve
from bench.validate import validate
from tests import toy_plugins
from tests.helpers import bench_cli


class Poison:
    """A toy model whose generation ``nan_at`` makes NaN in its state, samples or scores
    (``nan_in``); ``Poison.on = False`` is the fixed plugin (same spec, same run id)."""

    __name__ = "poison"
    on = True

    @bench.hookimpl
    def bench_register_models(self, register):
        register(bench.ModelBundle(
            name="poison", kind="vectors", load_real=_load_real, trainer="poison-fit",
            generator="poison-sample", scorer="poison-loglik", metrics=("toy-train-size",),
            params={"n": 40, "fail_at": -1, "nan_at": 2, "nan_in": "state", "neg_inf": False},
            presets={"smoke": {"generations": 4}}))

    @bench.hookimpl
    def bench_register_trainers(self, register):
        register(bench.Trainer("poison-fit", _fit))

    @bench.hookimpl
    def bench_register_generators(self, register):
        register(bench.Generator("poison-sample", _generate))

    @bench.hookimpl
    def bench_register_scorers(self, register):
        register(bench.Scorer("poison-loglik", _score))


def _load_real(request):
    return dataclasses.replace(toy_plugins._load_real(request), source=f"normal:n={request.params['n']}")


def _fit(req):
    state = toy_plugins._fit(req)
    p = req.params
    poisoned = Poison.on and req.generation == p["nan_at"]
    state["poison"] = np.array([float(poisoned)])
    if poisoned and p["nan_in"] == "state":
        state["mean"] = np.full_like(state["mean"], np.nan)
    return state


def _generate(request):
    samples = toy_plugins._generate(request)
    if request.state["poison"][0] and request.params["nan_in"] == "samples":
        data = samples.data.copy()
        data[:3] = np.inf
        return bench.Samples("vectors", data)
    return samples


def _score(request):
    scores = toy_plugins._score(request)
    loglik = scores.loglik.copy()
    if request.state["poison"][0] and request.params["nan_in"] == "scores":
        loglik[0] = np.nan
    if request.params["neg_inf"]:
        loglik[0] = -np.inf  # a sample the model cannot produce: a value, not a fault
    return bench.Scores(loglik, scores.units)


@pytest.fixture
def poison_bench():
    Poison.on = True
    yield Bench(extra_plugins=[toy_plugins.Toy(), Poison()])
    Poison.on = True


def run_json(folder):
    return R.read_json(folder / R.RUN_JSON)


def info(folder, k):
    return RF.generation_info(folder, k)


def only_run(out):
    (folder,) = RF.find_runs([out])
    return folder


def test_the_count_of_what_is_not_finite():
    assert _nonfinite({"a": np.array([1.0, 2.0]), "b": np.array([3])}) is None
    assert _nonfinite({"a": np.array([np.nan, 1.0, np.inf])}) == "'a' holds 1 NaN and 1 inf of 3 values"
    assert _nonfinite({"x": np.array([-np.inf, 0.0])}) == "'x' holds 1 inf of 2 values"
    assert _nonfinite({"x": np.array([-np.inf, 0.0])}, allow_neg_inf=True) is None
    assert _nonfinite({"x": np.array([np.inf, -np.inf])}, allow_neg_inf=True) == "'x' holds 1 +inf of 2 values"
    assert _nonfinite({"t": np.array([1, 2], dtype=np.int64), "e": np.array([])}) is None


@pytest.mark.parametrize("nan_in, role", [("state", "trainer 'poison-fit'"),
                                          ("samples", "generator 'poison-sample'"),
                                          ("scores", "scorer 'poison-loglik'")])
def test_stop_fails_the_run_at_the_generation_naming_the_component(poison_bench, tmp_path, nan_in, role):
    with pytest.raises(NonFiniteValues) as caught:
        cb.run("poison", "smoke", out=tmp_path, bench=poison_bench, set={"nan_in": nan_in})
    message = str(caught.value)
    assert message.startswith("non-finite values at generation 2: ") and role in message
    assert "of plugin 'poison'" in message and "--on-nonfinite record" in message
    folder = only_run(tmp_path)
    data = run_json(folder)
    assert data["status"] == "failed" and data["generations_done"] == 2
    assert data["error"] == message
    assert data["nonfinite"]["generation"] == 2 and data["nonfinite"]["on_nonfinite"] == "stop"
    # the poisoned generation is not committed, alone or in a chunk
    assert R.finished_generations(folder) == 2 and not any(f <= 2 <= l for f, l, _ in R.all_units(folder))
    problems = validate([folder])
    assert len(problems) == 1 and "non-finite values at generation 2" in problems[0]
    assert "the run stopped there" in problems[0]


def test_record_goes_on_and_marks_the_generations(poison_bench, tmp_path):
    with pytest.warns(UserWarning, match="non-finite values at generation 2"):
        runs = cb.run("poison", "smoke", out=tmp_path, bench=poison_bench, on_nonfinite="record")
    assert runs[0].status == "complete"
    folder = runs[0].path
    data = run_json(folder)
    assert data["status"] == "complete" and data["generations_done"] == 5
    assert data["nonfinite"] == {"generation": 2, "on_nonfinite": "record",
                                 "found": data["nonfinite"]["found"]}
    assert "the state from trainer 'poison-fit'" in data["nonfinite"]["found"]
    assert [("nonfinite" in info(folder, k)) for k in range(5)] == [False, False, True, True, True]
    assert any("the samples from generator" in m for m in info(folder, 3)["nonfinite"])
    problems = validate([folder])
    assert len(problems) == 1 and "non-finite values at generation 2" in problems[0]
    assert "on_nonfinite record" in problems[0]


def test_a_chain_without_nonfinite_values_writes_no_marker(poison_bench, tmp_path):
    Poison.on = False
    runs = cb.run("poison", "smoke", out=tmp_path, bench=poison_bench, set={"neg_inf": True})
    assert runs[0].status == "complete"  # -inf log-likelihoods are values, not faults
    assert "nonfinite" not in run_json(runs[0].path)
    assert all("nonfinite" not in info(runs[0].path, k) for k in range(5))
    assert validate([runs[0].path]) == []


def test_on_nonfinite_changes_no_run_id_and_a_stopped_run_goes_on_with_record(poison_bench, tmp_path):
    with pytest.raises(NonFiniteValues):
        cb.run("poison", "smoke", out=tmp_path, bench=poison_bench)
    with pytest.warns(UserWarning):
        runs = cb.run("poison", "smoke", out=tmp_path, bench=poison_bench, on_nonfinite="record")
    assert runs[0].path == only_run(tmp_path)  # the same folder, resumed at generation 2
    data = run_json(runs[0].path)
    assert data["status"] == "complete" and data["nonfinite"]["generation"] == 2
    assert data["nonfinite"]["on_nonfinite"] == "record"


def test_extending_a_marked_run_keeps_the_first_generation_that_held_them(poison_bench, tmp_path):
    with pytest.warns(UserWarning):
        cb.run("poison", "smoke", out=tmp_path, bench=poison_bench, on_nonfinite="record")
    with pytest.raises(NonFiniteValues, match="at generation 5: the state"):  # the poisoned chain, extended
        cb.run("poison", "smoke", out=tmp_path, bench=poison_bench, generations=6)
    data = run_json(only_run(tmp_path))
    assert data["status"] == "failed" and data["generations_done"] == 5
    assert data["nonfinite"]["generation"] == 2 and data["nonfinite"]["on_nonfinite"] == "record"


def test_a_stopped_run_resumed_after_the_fix_drops_the_marker(poison_bench, tmp_path):
    with pytest.raises(NonFiniteValues):
        cb.run("poison", "smoke", out=tmp_path, bench=poison_bench)
    Poison.on = False
    runs = cb.run("poison", "smoke", out=tmp_path, bench=poison_bench)
    assert runs[0].status == "complete"
    assert "nonfinite" not in run_json(runs[0].path)
    assert validate([runs[0].path]) == []


def test_a_marked_shared_generation_zero_is_seen_by_the_runs_that_copy_it(poison_bench, tmp_path):
    with pytest.warns(UserWarning):
        cb.run("poison", "smoke", out=tmp_path, bench=poison_bench, set={"nan_at": 0}, on_nonfinite="record")
    with pytest.raises(NonFiniteValues, match=r"generation 0: .*\(in the shared generation 0\)"):
        cb.run("poison", "smoke", out=tmp_path, bench=poison_bench, set={"nan_at": 0}, policy="mix:0.5")
    copied = [f for f in RF.find_runs([tmp_path]) if "mix" in f.name]
    assert run_json(copied[0])["nonfinite"]["generation"] == 0


def test_the_leaderboard_skips_a_marked_run_with_the_reason(poison_bench, tmp_path):
    with pytest.warns(UserWarning):
        cb.run("poison", "smoke", out=tmp_path, bench=poison_bench, on_nonfinite="record", seeds=0)
    Poison.on = False
    cb.run("poison", "smoke", out=tmp_path, bench=poison_bench, seeds=1)
    result = LB.build([tmp_path], out=tmp_path / "boards")
    assert result.runs_found == 2 and result.runs_used == 1 and result.runs_skipped == 1
    (warning,) = [w for w in result.warnings if "non-finite" in w]
    assert "generation 2" in warning and "on_nonfinite record" in warning and "skipped" in warning


def test_the_option_comes_from_flags_config_and_sweep_files(poison_bench, tmp_path, capsys, monkeypatch):
    assert RunOptions.parse({}).on_nonfinite == "stop"
    assert RunOptions.parse({"on_nonfinite": "record"}).on_nonfinite == "record"
    config = tmp_path / "run.yaml"
    config.write_text("plugin: poison\non_nonfinite: record\n")
    assert RunOptions.parse({}, config=config).on_nonfinite == "record"
    for bad in ("skip", 1):
        with pytest.raises(BenchError, match="on_nonfinite"):
            RunOptions.parse({"on_nonfinite": bad})
    config.write_text("plugin: poison\non_nonfinite: ignore\n")
    with pytest.raises(BenchError, match="on_nonfinite"):
        RunOptions.parse({}, config=config)

    from bench import sweep as S

    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text("plugin: poison\non_nonfinite: record\ngrid:\n  seed: [0, 1]\n")
    sw = S.load(poison_bench, sweep_file, out=tmp_path / "sweep")
    assert sw.on_nonfinite == "record"
    assert {t.on_nonfinite for t in S.plan_tasks(poison_bench, sw)} == {"record"}
    assert S.load(poison_bench, sweep_file, on_nonfinite="stop").on_nonfinite == "stop"

    monkeypatch.setattr("bench.cli._bench", lambda ctx: poison_bench)
    code, _, err = bench_cli(capsys, "run", "--plugin", "poison", "--out", tmp_path / "cli")
    assert code == 2 and "Error: non-finite values at generation 2" in err and "Traceback" not in err
    code, _, err = bench_cli(capsys, "run", "--plugin", "poison", "--out", tmp_path / "cli",
                             "--on-nonfinite", "record")
    assert code == 0 and "non-finite values at generation 2" in err
    assert json.loads((only_run(tmp_path / "cli") / R.RUN_JSON).read_text())["status"] == "complete"


def test_the_run_id_does_not_depend_on_the_option(poison_bench):
    specs = [RunOptions.parse({"plugin": "poison", "on_nonfinite": v}).specs(poison_bench)[0]
             for v in ("stop", "record")]
    assert specs[0].run_id == specs[1].run_id == resolve(poison_bench, "poison", "smoke").run_id
