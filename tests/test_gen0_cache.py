"""The shared generation 0 (`.gen0/`) is keyed by the code that makes it: a run after a plugin
change never reuses the old generation 0, while run ids and run.json's gen0_id stay as they were."""

import importlib.util
import sys
import textwrap

import numpy as np
import pytest

import bench.api as cb
from bench import results as R
from bench.loop import GEN0_CACHE, code_fingerprint, gen0_cache_key
from bench.plugins import Bench
from bench.spec import resolve
from tests import toy_plugins

MODULE = "collapse_bench_test_drift_plugin"
SOURCE = '''
import numpy as np
import bench

OFFSET = {offset}


def load_real(request):
    rng = np.random.default_rng([request.seed, 7])
    return bench.RealData(train=bench.Samples("vectors", rng.normal(size=(30, 1))),
                          test=bench.Samples("vectors", rng.normal(size=(20, 1))), source="normal:30")


def fit(req):
    x = req.data.data
    return {{"mean": x.mean(axis=0) + OFFSET, "std": x.std(axis=0, ddof=1)}}


def generate(req):
    return bench.Samples("vectors", req.state["mean"] + req.state["std"] * req.rng.normal(size=(req.n, 1)))


def score(req):
    z = (req.samples.data - req.state["mean"]) / req.state["std"]
    return bench.Scores((-0.5 * z ** 2 - np.log(req.state["std"])).sum(axis=1), np.ones(len(req.samples)))


def mean(ctx):
    return float(ctx.state["mean"][0])


class Drift:
    __name__ = "drift"

    @bench.hookimpl
    def bench_register_models(self, register):
        register(bench.ModelBundle(name="drift", kind="vectors", load_real=load_real, trainer="drift-fit",
                                   generator="drift-sample", scorer="drift-loglik", metrics=("drift-mean",),
                                   presets={{"smoke": {{"generations": 1}}}}))

    @bench.hookimpl
    def bench_register_trainers(self, register):
        register(bench.Trainer("drift-fit", fit, version="{version}"))

    @bench.hookimpl
    def bench_register_generators(self, register):
        register(bench.Generator("drift-sample", generate))

    @bench.hookimpl
    def bench_register_scorers(self, register):
        register(bench.Scorer("drift-loglik", score))

    @bench.hookimpl
    def bench_register_metrics(self, register):
        register(bench.Metric("drift-mean", mean, direction="higher"))
'''


@pytest.fixture
def drift(tmp_path):
    """drift(offset, version): a Bench with the plugin module written with that code, as if the
    plugin were edited between runs (the module's file changes, its name stays)."""
    def make(offset=0.0, version="1"):
        path = tmp_path / "src" / f"{MODULE}.py"
        path.parent.mkdir(exist_ok=True)
        path.write_text(textwrap.dedent(SOURCE.format(offset=offset, version=version)))
        spec = importlib.util.spec_from_file_location(MODULE, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[MODULE] = module
        spec.loader.exec_module(module)
        return Bench(extra_plugins=[toy_plugins.Toy(), module.Drift()])

    yield make
    sys.modules.pop(MODULE, None)


def gen0_mean(runs):
    df = cb.metrics(runs)
    return float(df[(df.generation == 0) & (df.metric == "drift-mean")].value.iloc[0])


def test_a_changed_plugin_builds_its_own_generation_zero(drift, tmp_path):
    out = tmp_path / "results"
    before = gen0_mean(cb.run("drift", "smoke", out=out, bench=drift(0.0)))
    after = cb.run("drift", "smoke", out=out, bench=drift(1.0), policy="mix:0.5")
    assert gen0_mean(after) == pytest.approx(before + 1.0)  # not the old generation 0 (the issue: 0.307 vs 1.307)
    caches = sorted(p.name for p in (out / GEN0_CACHE).iterdir() if p.is_dir())
    assert len(caches) == 2
    spec = resolve(drift(1.0), "drift", "smoke")
    assert all(name.startswith(spec.gen0_id + "-") for name in caches)


def test_the_key_follows_versions_and_code_but_not_the_policy(drift):
    b = drift()
    replace, mix = resolve(b, "drift", "smoke"), resolve(b, "drift", "smoke", policy="mix:0.5")
    assert replace.gen0_id == mix.gen0_id and gen0_cache_key(b, replace) == gen0_cache_key(b, mix)
    key = gen0_cache_key(b, replace)
    assert key.startswith(replace.gen0_id + "-") and len(key) == len(replace.gen0_id) + 13
    assert gen0_cache_key(drift(version="2"), replace) != key
    assert gen0_cache_key(drift(offset=0.5), replace) != key
    assert gen0_cache_key(drift(), replace) == key  # the same code gives the same key
    trainer = b.trainers.get("drift-fit")
    assert list(code_fingerprint([trainer])) == [MODULE]


def test_run_ids_and_gen0_id_in_run_json_are_unchanged(drift, tmp_path):
    b = drift()
    runs = cb.run("drift", "smoke", out=tmp_path, bench=b)
    data = R.read_json(runs[0].path / R.RUN_JSON)
    spec = resolve(b, "drift", "smoke")
    assert (data["run_id"], data["gen0_id"]) == (spec.run_id, spec.gen0_id)
    assert runs[0].path.name.endswith(spec.run_id[:8])


def test_an_old_cache_named_by_the_gen0_id_alone_is_not_reused(drift, tmp_path):
    b = drift()
    spec = resolve(b, "drift", "smoke")
    old = tmp_path / GEN0_CACHE / spec.gen0_id
    old.mkdir(parents=True)
    (old / "metrics.parquet").write_text("from an older collapse-bench")
    runs = cb.run("drift", "smoke", out=tmp_path, bench=b)
    assert runs[0].status == "complete"
    assert np.isfinite(gen0_mean(runs))
