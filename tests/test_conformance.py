"""The conformance kit passes conforming plugins and catches each breach of the plugin contract
with a message that says what is wrong."""

import dataclasses
import math
import re
import types
from pathlib import Path

import numpy as np
import pytest

import bench
import bench.conformance
from bench.conformance import (CHECKS, CONTRACT, POLICY_CHECKS, ConformanceNote, PluginContract, PolicyContract,
                               check_plugin, check_policy)
from bench.errors import BenchError
from tests import toy_plugins

ROOT = Path(__file__).resolve().parent.parent


def failed(findings):
    return {f.check for f in findings if not f.ok}


def message(findings, check):
    return " ".join(f.message for f in findings if f.check == check and not f.ok)


# --------------------------------------------------------------------------------------------------
# Hand-built plugins: the toy of tests/toy_plugins.py with one component swapped for a broken one
# --------------------------------------------------------------------------------------------------


def _load_real(req):
    rng = np.random.default_rng([req.seed, 7])
    return bench.RealData(train=bench.Samples("vectors", rng.normal(size=(req.params["n"], 1))),
                          test=bench.Samples("vectors", rng.normal(size=(50, 1))), source=f"toy:n={req.params['n']}")


def _generate(req):
    return bench.Samples("vectors", req.state["mean"] + req.state["std"] * req.rng.normal(size=(req.n, 1)))


def _score(req):
    z = (req.samples.data - req.state["mean"]) / req.state["std"]
    loglik = (-0.5 * z**2 - np.log(req.state["std"]) - 0.5 * np.log(2 * np.pi)).sum(axis=1)
    return bench.Scores(loglik, np.ones(len(req.samples)))


def _load_categorical(req):
    rng = np.random.default_rng([req.seed, 11])
    probs = np.array([0.4, 0.3, 0.2, 0.1])
    return bench.RealData(train=bench.Samples("categorical", rng.choice(4, size=req.params["n"], p=probs)),
                          test=bench.Samples("categorical", rng.choice(4, size=200, p=probs)), source="toy-cat")


def _fit_categorical(req):
    counts = np.bincount(req.data.data, minlength=req.params["n_states"]).astype(np.float64)
    return {"probs": counts / counts.sum()}


def _generate_categorical(req):
    return bench.Samples("categorical", req.rng.choice(len(req.state["probs"]), size=req.n, p=req.state["probs"]))


def _score_categorical(req):
    with np.errstate(divide="ignore"):
        return bench.Scores(np.log(req.state["probs"])[req.samples.data], np.ones(len(req.samples)))


def _support(ctx):
    return float(np.count_nonzero(ctx.state["probs"]))


class Variant:
    """A one-model plugin 'toy' (1-D vectors) or 'toy-cat' (4 states) with replaceable parts."""

    __name__ = "toy-variant"

    def __init__(self, kind="vectors", fit=None, generate=None, score=None, metric=None, **bundle):
        if kind == "vectors":
            parts = dict(name="toy", load_real=_load_real, params={"n": 40, "fail_at": -1},
                         metrics=("toy-train-size",))
            self.parts = (fit or toy_plugins._fit, generate or _generate, score or _score)
            self.metric = metric or bench.Metric("toy-train-size", toy_plugins._train_size, direction="higher")
        else:
            parts = dict(name="toy-cat", load_real=_load_categorical, params={"n": 40, "n_states": 4},
                         metrics=("toy-cat-support",))
            self.parts = (fit or _fit_categorical, generate or _generate_categorical, score or _score_categorical)
            self.metric = metric or bench.Metric("toy-cat-support", _support, direction="higher")
        parts.update(presets={"smoke": {"generations": 3}, "paper": {"n": 400}}, trainer="v-fit",
                     generator="v-sample", scorer="v-loglik")
        parts.update(bundle)
        self.bundle = bench.ModelBundle(kind=kind, **parts)

    @bench.hookimpl
    def bench_register_models(self, register):
        register(self.bundle)

    @bench.hookimpl
    def bench_register_trainers(self, register):
        register(bench.Trainer("v-fit", self.parts[0]))

    @bench.hookimpl
    def bench_register_generators(self, register):
        register(bench.Generator("v-sample", self.parts[1]))

    @bench.hookimpl
    def bench_register_scorers(self, register):
        register(bench.Scorer("v-loglik", self.parts[2]))

    @bench.hookimpl
    def bench_register_metrics(self, register):
        register(self.metric)


def check(variant, **kw):
    return check_plugin(variant.bundle.name, extra_plugins=[variant], **kw)


class LaxMetric(bench.Metric):
    """A Metric whose constructor checks are skipped, so that a bad direction reaches the run."""

    def __post_init__(self):
        pass


# --------------------------------------------------------------------------------------------------
# Conforming plugins pass
# --------------------------------------------------------------------------------------------------


def test_the_messages_quote_contributing_word_for_word():
    docs = " ".join((ROOT / "CONTRIBUTING.md").read_text().split())
    for key, sentence in CONTRACT.items():
        assert " ".join(sentence.split()) in docs, f"CONTRACT[{key!r}] is no longer in CONTRIBUTING.md"


def test_a_conforming_toy_passes_every_check_through_the_fixture(bench_conformance, request):
    findings = bench_conformance("toy", extra_plugins=[toy_plugins.Toy()])
    assert [f.check for f in findings] == list(CHECKS)
    assert all(f.ok and not f.note for f in findings)
    # The toy's scorer is a 1-D Gaussian log-density in nats: the kit integrates exp(loglik) to 1.
    nll = next(f.message for f in findings if f.check == "nll-units")
    assert re.search(r"exp\(loglik\) sums to (0\.99|1\.00)", nll), nll
    assert request.node.get_closest_marker("bench_conformance") is not None


def test_the_contributing_example_plugin_conforms():
    docs = (ROOT / "CONTRIBUTING.md").read_text()
    code = docs.split("# my_package/my_plugin.py\n", 1)[1].split("```", 1)[0]
    module = types.ModuleType("my_plugin")
    exec(compile(code, "CONTRIBUTING.md", "exec"), module.__dict__)
    findings = check_plugin("my-model", extra_plugins=[module], set={"n": 50})
    assert failed(findings) == set(), [str(f) for f in findings if not f.ok]


class TestGaussianContract(PluginContract):
    """The first-party gaussian bundle honours the contract on its smoke preset (shrunk further)."""

    plugin = "gaussian"
    set = {"n_samples": 10, "n_test": 200}


# --------------------------------------------------------------------------------------------------
# Each breach fails its check
# --------------------------------------------------------------------------------------------------


def test_a_generator_returning_the_wrong_number_of_samples_fails_the_sample_check():
    def generate(req):
        return _generate(dataclasses.replace(req, n=req.n - 1))

    findings = check(Variant(generate=generate))
    text = message(findings, "samples")
    assert "asked for n = 40" in text and "returned 39" in text
    assert CONTRACT["generate"] in text
    # the harness itself refuses such samples, so the checks that need a run say why they could not
    assert failed(findings) == {"samples", "determinism", "metric-directions", "resume", "state", "warm-start"}
    assert "returned 39 samples at generation 0; the harness asked for bench.Samples of n = 40" in text
    assert all("not checked: the run" in message(findings, c) for c in ("determinism", "resume", "state"))


def test_randomness_outside_the_given_rng_fails_the_determinism_check():
    def generate(req):
        return bench.Samples("vectors", req.state["mean"] + req.state["std"] * np.random.normal(size=(req.n, 1)))

    findings = check(Variant(generate=generate))
    # The resumed runs (cold and warm-started) differ from the uninterrupted ones for the same reason.
    assert failed(findings) == {"determinism", "resume", "warm-start"}
    text = message(findings, "determinism")
    assert "in different folders differ: generation 0: samples differ" in text
    assert "does not reproduce the run's generation-0 samples" in text
    assert "Draw every random number from the rng you are given" in text


def test_a_generator_with_a_fixed_seed_gets_a_note():
    def generate(req):
        return _generate(dataclasses.replace(req, rng=np.random.default_rng(0)))

    findings = check(Variant(generate=generate), checks=["determinism"])
    assert failed(findings) == set()
    notes = [f.message for f in findings if f.note]
    assert len(notes) == 1 and "same samples for two different rngs" in notes[0]


def _bits(req):
    scores = _score(req)
    return bench.Scores(scores.loglik / math.log(2), scores.units)


def _categorical_bits(req):
    scores = _score_categorical(req)
    return bench.Scores(scores.loglik / math.log(2), scores.units)


def _categorical_nll(req):
    scores = _score_categorical(req)
    return bench.Scores(-scores.loglik, scores.units)


def _two_units(req):
    return bench.Scores(_score(req).loglik, np.full(len(req.samples), 2.0))


@pytest.mark.parametrize("kind, score, expected", [
    ("vectors", _bits, "the scorer returns log-likelihoods in bits: 2**loglik sums to 1.00"),
    ("categorical", _categorical_bits, "the scorer returns log-likelihoods in bits: 2**loglik sums to 1.000000 "
                                       "over the states 0..3"),
    ("categorical", _categorical_nll, "log-likelihoods are positive"),
    ("vectors", _two_units, "units must equal the dimension d = 1 of each vector; got 2"),
])
@pytest.mark.slow
def test_a_scorer_not_in_nats_per_unit_fails_the_nll_check(kind, score, expected):
    findings = check(Variant(kind=kind, score=score))
    assert failed(findings) == {"nll-units"}
    text = message(findings, "nll-units")
    assert expected in text
    assert CONTRACT["nats"] in text


def test_the_categorical_toy_passes_with_its_probabilities_summing_to_one():
    findings = check(Variant(kind="categorical"), checks=["nll-units"])
    assert failed(findings) == set()
    assert "exp(loglik) sums to 1.000000 over the states 0..3" in findings[0].message


@pytest.mark.parametrize("direction, target, expected", [
    ("up", None, "metric 'toy-train-size' has direction 'up'; use one of higher, lower, target"),
    ("target", None, "give target=<the value to be near> exactly when direction='target'"),
])
def test_a_metric_without_a_valid_direction_fails_the_metric_check(direction, target, expected):
    metric = LaxMetric("toy-train-size", toy_plugins._train_size, direction=direction, target=target)
    findings = check(Variant(metric=metric))
    assert failed(findings) == {"metric-directions"}
    text = message(findings, "metric-directions")
    assert expected in text
    assert CONTRACT["direction"] in text


def test_a_metric_name_without_the_model_prefix_gets_a_note():
    metric = bench.Metric("train-size", toy_plugins._train_size, direction="higher")
    findings = check(Variant(metric=metric, metrics=("train-size",)), checks=["metric-directions"])
    assert failed(findings) == set()
    notes = [f.message for f in findings if f.note]
    assert len(notes) == 1 and "registers metric(s) train-size without a model name prefix (toy-...)" in notes[0]


_FITS = 0


def _fit_counting(req):
    """Remembers how many generations it fitted in a module global: right within one process, wrong
    after a resume, when a new process starts counting again."""
    global _FITS
    _FITS = 1 if req.generation == 0 else _FITS + 1
    state = toy_plugins._fit(req)
    state["mean"] = state["mean"] + 0.01 * _FITS
    return state


def test_a_trainer_that_keeps_a_counter_in_memory_fails_the_resume_check():
    findings = check(Variant(fit=_fit_counting))
    assert failed(findings) == {"resume", "warm-start"}
    text = message(findings, "resume")
    assert "generation 2: samples differ" in text
    assert "keep no counters or caches in module globals" in text
    assert CONTRACT["randomness"] in text


def test_a_nested_state_fails_the_state_check():
    def fit(req):
        state = toy_plugins._fit(req)
        return {"gaussian": {"mean": state["mean"], "std": state["std"]}, "n": state["n"]}

    findings = check(Variant(fit=fit))
    assert "state" in failed(findings)
    text = message(findings, "state")
    assert "state['gaussian'] is a nested dict; flatten it into keys like 'gaussian.mean'" in text
    assert CONTRACT["state"] in text


def test_a_bundle_with_missing_parts_fails_the_fixture_listing_every_check(bench_conformance):
    variant = Variant(scorer="no-such-scorer", presets={"tiny": {}}, default_preset="tiny")
    with pytest.warns(ConformanceNote, match="no `paper` preset"), pytest.raises(pytest.fail.Exception) as failure:
        bench_conformance("toy", extra_plugins=[variant])
    text = str(failure.value)
    assert f"breaks the plugin contract in {len(CHECKS)} check(s)" in text
    assert "the bundle's scorer 'no-such-scorer' is not registered" in text
    assert "the bundle has no `smoke` preset" in text
    assert "[resume] FAIL: not checked: the spec of 'toy' with preset 'smoke' does not resolve" in text


# --------------------------------------------------------------------------------------------------
# The class-based contract
# --------------------------------------------------------------------------------------------------


def test_the_contract_class_shares_five_runs_and_fails_the_right_method():
    metric = LaxMetric("toy-train-size", toy_plugins._train_size, direction="up")

    class BadDirection(PluginContract):  # only its metric check fails
        plugin = "toy"
        extra_plugins = (Variant(metric=metric, presets={"smoke": {}}),)

    methods = [name for name in dir(PluginContract) if name.startswith("test_")]
    assert len(methods) == len(CHECKS)
    try:
        for name in methods:
            if name in ("test_metric_directions_declared", "test_bundle_is_complete"):
                continue
            getattr(BadDirection(), name)()  # passes
        with pytest.raises(pytest.fail.Exception, match=r"metric 'toy-train-size' has direction 'up'"):
            BadDirection().test_metric_directions_declared()
        with pytest.warns(ConformanceNote, match="no `paper` preset"):
            BadDirection().test_bundle_is_complete()
        root = BadDirection.conformance().root
        assert BadDirection.conformance() is BadDirection.conformance()
        # One run, its repeat, a resumed run (two calls in one folder) and one generation of seed 1;
        # then for each warm start a run, a resumed run and one generation of seed 1.
        assert sorted(p.name for p in root.iterdir()) == ["main", "other-seed", "repeat", "resumed", "start-gen0",
                                                          "start-previous"]
        for start in ("gen0", "previous"):
            assert sorted(p.name for p in (root / f"start-{start}").iterdir()) == ["main", "other-seed", "resumed"]
        assert "_conformance" not in PluginContract.__dict__  # the cache belongs to the subclass
    finally:
        BadDirection.teardown_class()
    assert not root.exists()


def test_bad_arguments_are_reported_not_run():
    with pytest.raises(BenchError, match="generations must be an integer >= 1"):
        check_plugin("toy", generations=0)

    class Unnamed(PluginContract):
        pass

    with pytest.raises(pytest.fail.Exception, match="name the model bundle to check"):
        Unnamed().test_bundle_is_complete()


# --------------------------------------------------------------------------------------------------
# docs/conformance.md stays true to the kit
# --------------------------------------------------------------------------------------------------


def test_the_docs_list_every_check_and_test_method():
    docs = (ROOT / "docs" / "conformance.md").read_text()
    rows = dict(re.findall(r"^\| `(test_\w+)` \| `([\w-]+)` \|$", docs, flags=re.M))
    for cls, checks in ((PluginContract, CHECKS), (PolicyContract, POLICY_CHECKS)):
        methods = {name for name in dir(cls) if name.startswith("test_")}
        assert methods <= set(rows), f"{cls.__name__}: {sorted(methods - set(rows))} are not in the docs"
        assert sorted(rows[name] for name in methods) == sorted(checks)
        for name in methods:
            assert f"### `{rows[name]}`" in docs
            source = getattr(cls, name).__code__.co_consts
            assert rows[name] in source, f"{name} runs another check than the docs say"
    assert len(rows) == len(CHECKS) + len(POLICY_CHECKS)


def test_the_docs_shrinking_examples_resolve():
    docs = (ROOT / "docs" / "conformance.md").read_text()
    code = docs.split("## Shrinking the smoke preset", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    namespace = {"PluginContract": PluginContract}
    exec(compile(code, "docs/conformance.md", "exec"), namespace)
    classes = [v for k, v in namespace.items() if k.startswith("Test")]
    assert {c.plugin for c in classes} == {"opt125m", "vae"}
    for cls in classes:
        try:
            spec = cls.conformance().spec
            assert spec.preset == "smoke" and all(spec.params[k] == v for k, v in cls.set.items())
        finally:
            cls.teardown_class()


class BatchDrift:
    """The toy model whose trainer's fit_batch pools the batch's data scale: not what fit gives."""

    __name__ = "batch-drift"

    @bench.hookimpl
    def bench_register_models(self, register):
        register(bench.ModelBundle(
            name="bdrift", kind="vectors", load_real=_load_real, trainer="bdrift-fit",
            generator="toy-sample", scorer="toy-loglik", metrics=("toy-train-size",),
            params={"n": 40, "fail_at": -1}, presets={"smoke": {"generations": 2}}))

    @bench.hookimpl
    def bench_register_trainers(self, register):
        def fit_batch(requests):
            states = [toy_plugins._fit(r) for r in requests]
            if len(requests) > 1:  # a batch-dependent rounding: std through a pooled rescaling
                scale = np.mean([s["std"] for s in states])
                for s in states:
                    s["std"] = (s["std"] / scale) * scale
            return states

        register(bench.Trainer("bdrift-fit", toy_plugins._fit, fit_batch=fit_batch))


def test_fit_batch_must_equal_fit_bit_for_bit():
    findings = check_plugin("bdrift", extra_plugins=[toy_plugins.Toy(), BatchDrift()], checks=["batch"])
    (finding,) = findings
    assert not finding.ok and "does not give the states fit gives alone" in finding.message
    assert "'std'" in finding.message


def test_the_batched_gmm_trainer_passes_the_batch_check():
    findings = check_plugin("gmm-batched", set={"n_samples": 200, "n_test": 100}, checks=["batch", "determinism"])
    assert all(f.ok for f in findings), [str(f) for f in findings]
    assert "equals fit bit for bit" in findings[0].message


class GaussianInBits:
    """The first-party 2-D gaussian bundle with a scorer that returns log2 likelihoods."""

    __name__ = "gaussian-bits"

    def __init__(self):
        import dataclasses

        from bench.plugins import Bench

        b = Bench()
        gaussian = b.models.get("gaussian")
        self.loglik = b.scorers.get(gaussian.scorer).score
        self.bundle = dataclasses.replace(gaussian, name="gbits", scorer="gaussian-bits")

    @bench.hookimpl
    def bench_register_models(self, register):
        register(self.bundle)

    @bench.hookimpl
    def bench_register_scorers(self, register):
        def score(req):
            s = self.loglik(req)
            return bench.Scores(s.loglik / math.log(2), s.units)

        register(bench.Scorer("gaussian-bits", score))


def test_2d_densities_are_integrated_so_bits_are_caught():
    shrink = {"n_samples": 20, "n_test": 100}
    (ok,) = [f for f in check_plugin("gaussian", set=shrink, checks=["nll-units"]) if not f.note]
    assert ok.ok and "exp(loglik) sums to 1.00" in ok.message and "401x401 grid" in ok.message
    (bad,) = check_plugin("gbits", set=shrink, extra_plugins=[GaussianInBits()], checks=["nll-units"])
    assert not bad.ok and "the scorer returns log-likelihoods in bits: 2**loglik sums to 1.00" in bad.message


def test_arguments_that_make_no_spec_raise_once():
    with pytest.raises(BenchError, match=r"conformance check of 'gaussian', set=\{'nn': 3\}: --set nn: 'gaussian' has "
                                         r"no parameter 'nn'"):
        check_plugin("gaussian", set={"nn": 3})
    with pytest.raises(BenchError, match=r"--set n_samples: n_samples must be int"):
        check_plugin("gaussian", set={"n_samples": "many"})
    with pytest.raises(BenchError, match=r"starts names 'scratch'; the warm starts are previous, gen0"):
        check_plugin("gaussian", starts=("scratch",))
    with pytest.raises(BenchError, match="name the policy to check"):
        check_policy("")


# --------------------------------------------------------------------------------------------------
# Parameters: the kit takes what `bench run --set` takes
# --------------------------------------------------------------------------------------------------


class WithEpochs(Variant):
    """The toy whose trainer brings a parameter of its own (not in the bundle's params)."""

    @bench.hookimpl
    def bench_register_trainers(self, register):
        register(bench.Trainer("v-fit", self.parts[0], params={"epochs": 3}))


def test_set_accepts_the_components_own_parameters():
    variant = WithEpochs()
    findings = check(variant, set={"epochs": 1}, checks=["bundle"])
    assert failed(findings) == set(), [str(f) for f in findings]
    kit = bench.conformance.Conformance("toy", set={"epochs": 1}, extra_plugins=[WithEpochs()])
    try:
        kit.validate()
        assert kit.spec.params["epochs"] == 1
        assert "--set epochs=1" in kit.command()
    finally:
        kit.close()
    with pytest.raises(BenchError, match=r"--set epochs: epochs must be int like its default 3"):
        check(WithEpochs(), set={"epochs": "two"}, checks=["bundle"])


# --------------------------------------------------------------------------------------------------
# Warm starts
# --------------------------------------------------------------------------------------------------


_VELOCITY = [0.0]


def _fit_with_momentum_in_memory(req):
    """Keeps a momentum between warm-started fits in a module global instead of in the state:
    right within one process, wrong after a resume. Cold starts (init None) do not use it."""
    state = toy_plugins._fit(req)
    if req.init is None or req.generation == 0:
        _VELOCITY[0] = 0.0
        return state
    _VELOCITY[0] = 0.5 * _VELOCITY[0] + 0.01
    state["mean"] = state["mean"] + _VELOCITY[0]
    return state


def _fit_writing_into_init(req):
    state = toy_plugins._fit(req)
    if req.init is not None:
        req.init["mean"] *= 0.5  # "continues" from init by updating it in place
    return state


def test_a_warm_start_that_keeps_momentum_in_memory_fails_only_the_warm_start_check():
    findings = check(Variant(fit=_fit_with_momentum_in_memory))
    assert failed(findings) == {"warm-start"}
    text = message(findings, "warm-start")
    assert "trainer 'v-fit' of 'toy' breaks the contract when warm-started" in text
    for start in ("previous", "gen0"):
        assert f"with `--start {start}`: running `bench run --plugin toy --preset smoke --seeds 0 --generations 1 " \
               f"--start {start}`" in text
    assert "generation 2: samples differ" in text
    assert CONTRACT["randomness"] in text


def test_a_trainer_writing_into_init_fails_the_warm_start_check():
    findings = check(Variant(fit=_fit_writing_into_init), checks=["warm-start"])
    text = message(findings, "warm-start")
    assert "trainer 'v-fit'" in text
    assert "with `--start previous`: fitting generation 1 changed the init state it was given (arrays 'mean')" in text


def test_the_warm_starts_checked_can_be_chosen():
    findings = check(Variant(fit=_fit_with_momentum_in_memory), checks=["warm-start"], starts=("gen0",))
    text = message(findings, "warm-start")
    assert "`--start gen0`" in text and "`--start previous`" not in text
    (skipped,) = check(Variant(fit=_fit_with_momentum_in_memory), checks=["warm-start"], starts=())
    assert skipped.ok and "not applicable" in skipped.message


# --------------------------------------------------------------------------------------------------
# Policies
# --------------------------------------------------------------------------------------------------


def _returns_an_array(ctx):
    return ctx.synthetic[-1].data


def _drops_a_dimension(ctx):
    return bench.Samples("vectors", np.zeros((len(ctx.real.train), 0)))


def _writes_into_the_samples(ctx):
    latest = ctx.synthetic[-1]
    latest.data[:] = 0.0
    return latest


def _uses_the_global_numpy_rng(ctx):
    latest = ctx.synthetic[-1]
    return latest.take(np.random.permutation(len(latest)))


def _uses_an_unseeded_rng(ctx):
    latest = ctx.synthetic[-1]
    return latest.take(np.random.default_rng().permutation(len(latest)))


_CALLS = [0]


def _counts_its_calls(ctx):
    """Shifts the samples by the number of calls so far, kept in a module global: a resumed run, in
    a new process, counts from another number."""
    _CALLS[0] += 1
    latest = ctx.synthetic[-1]
    return bench.Samples(latest.kind, latest.data + 0.01 * _CALLS[0])


class Policies:
    """Policies, one per way of breaking the contract, and one that keeps it ('half')."""

    __name__ = "test-policies"

    def __init__(self, **builds):
        self.builds = builds

    @bench.hookimpl
    def bench_register_policies(self, register):
        for name, build in self.builds.items():
            register(bench.Policy(name, build))


def _half(ctx):
    n = len(ctx.real.train)
    real = ctx.real.train.take(np.sort(ctx.rng.choice(n, size=n // 2, replace=False)))
    return bench.Samples.concat([real, ctx.synthetic[-1].take(np.arange(n - n // 2))])


def check_a_policy(build, **kw):
    return check_policy("p", "toy", extra_plugins=[Variant(), Policies(p=build)], **kw)


def test_a_conforming_policy_passes_on_a_toy_host():
    findings = check_a_policy(_half)
    assert [f.check for f in findings] == list(POLICY_CHECKS)
    assert failed(findings) == set(), [str(f) for f in findings]
    assert "policy 'p' (on 'toy') returns 40 vectors samples of shape (1,)" in findings[0].message


@pytest.mark.parametrize("build, expected", [
    (_returns_an_array, "policy 'p' (on 'toy'): build returned ndarray; return the training set D_{k+1} as "
                        "bench.Samples"),
    (_drops_a_dimension, "policy 'p' (on 'toy'): each sample has shape (0,), a real training sample (1,)"),
    (_writes_into_the_samples, "policy 'p' (on 'toy'): build wrote into S_1; the harness keeps them"),
])
def test_a_policy_returning_the_wrong_samples_fails_the_policy_samples_check(build, expected):
    findings = check_a_policy(build, checks=["policy-samples"])
    assert expected in message(findings, "policy-samples")


@pytest.mark.parametrize("build, expected", [
    (_uses_the_global_numpy_rng, "build drew from NumPy's global random state (np.random.*)"),
    (_uses_an_unseeded_rng, "two calls with ctx.rng seeded alike returned different samples"),
])
def test_a_policy_with_randomness_outside_ctx_rng_fails_the_rng_check(build, expected):
    findings = check_a_policy(build, checks=["policy-rng"])
    text = message(findings, "policy-rng")
    assert text.startswith("policy 'p' (on 'toy'): ") and expected in text
    assert CONTRACT["randomness"] in text


def test_a_policy_with_a_counter_in_memory_fails_the_resume_check():
    findings = check_a_policy(_counts_its_calls, checks=["policy-resume"])
    text = message(findings, "policy-resume")
    assert text.startswith("policy 'p' (on 'toy'): running `bench run --plugin toy --preset smoke --seeds 0 "
                           "--generations 1 --policy p`, then `bench run --plugin toy --preset smoke --seeds 1 "
                           "--generations 1 --policy p`")
    assert "does not end as the uninterrupted run" in text and "keep nothing between calls in globals" in text


def test_an_unknown_policy_is_reported_by_every_check():
    findings = check_policy("no-such-policy", "toy", extra_plugins=[Variant()])
    assert failed(findings) == set(POLICY_CHECKS)
    assert "not checked: no policy named 'no-such-policy' is registered (known: " in message(findings, "policy-samples")


def test_a_policy_that_selects_gets_candidates_and_a_verifier(bench_policy_conformance, request):
    """The first-party best-of policy, on the first-party gaussian (its default host), through the fixture."""
    findings = bench_policy_conformance("best-of:3,m0", set={"n_samples": 20, "n_test": 100})
    assert [f.check for f in findings] == list(POLICY_CHECKS) and all(f.ok for f in findings)
    assert "policy 'best-of' (on 'gaussian')" in findings[0].message
    assert request.node.get_closest_marker("bench_conformance") is not None


class TestMixPolicyContract(PolicyContract):
    """The first-party mix policy honours the policy contract on the gaussian bundle."""

    policy = "mix:0.2"
    set = {"n_samples": 10, "n_test": 200}


def test_the_policy_contract_class_fails_the_right_method():
    class Leaky(PolicyContract):
        policy = "p"
        plugin = "toy"
        extra_plugins = (Variant(), Policies(p=_uses_the_global_numpy_rng))

    methods = [name for name in dir(PolicyContract) if name.startswith("test_")]
    assert len(methods) == len(POLICY_CHECKS)
    try:
        Leaky().test_policy_returns_samples_of_the_kind()
        with pytest.raises(pytest.fail.Exception, match=r"Leaky \(policy 'p' on 'toy', preset 'smoke'\) breaks the "
                                                        r"plugin contract:\n\[policy-rng\] FAIL"):
            Leaky().test_policy_uses_only_ctx_rng()
        root = Leaky.conformance().root
        assert Leaky.conformance() is Leaky.conformance() and "_conformance" not in PolicyContract.__dict__
    finally:
        Leaky.teardown_class()
    assert not root.exists()
