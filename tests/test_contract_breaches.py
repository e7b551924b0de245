"""A component that returns the wrong thing ends the run failed with a message naming the role, the
component, its plugin, what came back and what was expected; never a traceback on the command line."""

import numpy as np
import pytest

import bench
import bench.api as cb
from bench import results as R
from bench import runfolder as RF
from bench.loop import PluginFailure
from bench.plugins import Bench
from tests import toy_plugins
from tests.helpers import bench_cli


def _fit(req):
    if req.params["breach"] == "trainer-none":
        return None
    if req.params["breach"] == "trainer-object":
        return {"mean": np.array([None, "x"], dtype=object)}
    return toy_plugins._fit(req)


def _generate(request):
    samples = toy_plugins._generate(request)
    breach = request.params["breach"]
    if breach == "generator-count":
        return samples.take(np.arange(len(samples) - 1))
    if breach == "generator-kind":
        return bench.Samples("categorical", np.zeros(request.n, dtype=np.int64))
    if breach == "generator-list":
        return samples.data.tolist()
    return samples


def _score(request):
    scores = toy_plugins._score(request)
    breach = request.params["breach"]
    if breach == "scorer-shape":
        return bench.Scores(scores.loglik[:, None], scores.units)
    if breach == "scorer-tuple":
        return scores.loglik, scores.units
    return scores


def _metric(ctx):
    breach = ctx.params["breach"]
    if breach == "metric-str":
        return "0.5"
    if breach == "metric-dict":
        return {"a": 1.0, "b": [1.0, 2.0]}
    if breach == "metric-none":
        return None
    return {"a": 1.0, "b": np.float32(2.0)}


def _policy(ctx):
    return list(ctx.real.train.data)


class Breach:
    """A toy model whose components break their contract as ``breach`` says."""

    __name__ = "breach"

    @bench.hookimpl
    def bench_register_models(self, register):
        register(bench.ModelBundle(
            name="breach", kind="vectors", load_real=toy_plugins._load_real, trainer="breach-fit",
            generator="breach-sample", scorer="breach-loglik", metrics=("breach-metric",),
            params={"n": 30, "fail_at": -1, "breach": "none"}, presets={"smoke": {"generations": 2}}))

    @bench.hookimpl
    def bench_register_trainers(self, register):
        register(bench.Trainer("breach-fit", _fit))

    @bench.hookimpl
    def bench_register_generators(self, register):
        register(bench.Generator("breach-sample", _generate))

    @bench.hookimpl
    def bench_register_scorers(self, register):
        register(bench.Scorer("breach-loglik", _score))

    @bench.hookimpl
    def bench_register_metrics(self, register):
        register(bench.Metric("breach-metric", _metric, direction="higher"))

    @bench.hookimpl
    def bench_register_policies(self, register):
        register(bench.Policy("breach-policy", _policy))


@pytest.fixture(scope="module")
def breach_bench():
    return Bench(extra_plugins=[toy_plugins.Toy(), Breach()])


CASES = {
    "metric-str": ("metric 'breach-metric' of plugin 'breach' returned str '0.5' at generation 0",
                   "a metric returns a number"),
    "metric-dict": ("metric 'breach-metric' of plugin 'breach' returned a dict whose 'b' is list [1.0, 2.0]",
                    "dict of name: number"),
    "metric-none": ("metric 'breach-metric' of plugin 'breach' returned NoneType None", "a metric returns"),
    "trainer-none": ("trainer 'breach-fit' of plugin 'breach' returned NoneType None at generation 0",
                     "expected the model state, a dict of name: numpy array"),
    "trainer-object": ("trainer 'breach-fit' of plugin 'breach' returned a state whose 'mean' is ndarray",
                       "numpy array (bench.State) of numbers"),
    "generator-count": ("generator 'breach-sample' of plugin 'breach' returned 29 samples at generation 0",
                        "asked for bench.Samples of n = 30, of kind vectors"),
    "generator-kind": ("generator 'breach-sample' of plugin 'breach' returned 30 samples of kind categorical",
                       "n = 30, of kind vectors"),
    "generator-list": ("generator 'breach-sample' of plugin 'breach' returned list [[", "bench.Samples"),
    "scorer-shape": (("scorer 'breach-loglik' of plugin 'breach' returned Scores with loglik of shape (30, 1) "
                      "and units of shape (30,)"), "shape (30,) each"),
    "scorer-tuple": ("scorer 'breach-loglik' of plugin 'breach' returned tuple (array(", "bench.Scores(loglik, units)"),
}


@pytest.mark.parametrize("breach", sorted(CASES))
def test_a_breach_fails_the_run_with_a_message_naming_the_plugin(breach_bench, tmp_path, breach):
    got, expected = CASES[breach]
    with pytest.raises(PluginFailure) as caught:
        cb.run("breach", "smoke", out=tmp_path, bench=breach_bench, set={"breach": breach})
    message = str(caught.value)
    assert got in message and expected in message and "`bench.conformance` checks this contract" in message
    (folder,) = RF.find_runs([tmp_path])
    data = R.read_json(folder / R.RUN_JSON)
    assert data["status"] == "failed" and data["error"] == message


def test_a_policy_returning_no_samples_is_named(breach_bench, tmp_path):
    with pytest.raises(PluginFailure, match="policy 'breach-policy' of plugin 'breach' returned list .* at "
                                            "generation 1; the harness expected the training data D_1"):
        cb.run("breach", "smoke", out=tmp_path, bench=breach_bench, policy="breach-policy")


def test_numbers_of_any_numeric_type_are_accepted(breach_bench, tmp_path):
    runs = cb.run("breach", "smoke", out=tmp_path, bench=breach_bench)
    assert runs[0].status == "complete"
    df = cb.metrics(runs)
    assert sorted(set(df.metric)) == ["breach-metric/a", "breach-metric/b"] and (df.value > 0).all()


@pytest.mark.parametrize("breach", ["metric-str", "trainer-none", "scorer-shape"])
def test_the_command_line_shows_the_message_without_a_traceback(breach_bench, capsys, tmp_path, monkeypatch,
                                                                breach):
    monkeypatch.setattr("bench.cli._bench", lambda ctx: breach_bench)
    code, _, err = bench_cli(capsys, "run", "--plugin", "breach", "--set", f"breach={breach}", "--out", tmp_path)
    assert code == 2 and "Traceback" not in err
    assert f"Error: {CASES[breach][0]}" in err
