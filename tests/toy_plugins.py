"""Small plugins the harness tests register by hand (not through entry points)."""

import numpy as np

import bench


def _load_real(request: bench.RealRequest):
    params, seed = request.params, request.seed
    rng = np.random.default_rng([seed, 7])
    return bench.RealData(
        train=bench.Samples("vectors", rng.normal(size=(params["n"], 1))),
        test=bench.Samples("vectors", rng.normal(size=(50, 1))),
    )


def _fit(req):
    if req.generation == req.params["fail_at"]:
        raise RuntimeError("the toy trainer broke on purpose")
    x = req.data.data
    return {"mean": x.mean(axis=0), "std": x.std(axis=0, ddof=1), "n": np.array([len(x)], dtype=np.float64)}


def _generate(request: bench.GenerateRequest):
    state, n, rng = request.state, request.n, request.rng
    return bench.Samples("vectors", state["mean"] + state["std"] * rng.normal(size=(n, 1)))


def _score(request: bench.ScoreRequest):
    state, samples = request.state, request.samples
    z = (samples.data - state["mean"]) / state["std"]
    loglik = (-0.5 * z**2 - np.log(state["std"]) - 0.5 * np.log(2 * np.pi)).sum(axis=1)
    return bench.Scores(loglik, np.ones(len(samples)))


def _train_size(ctx):
    return float(ctx.state["n"][0])


class Toy:
    """A model 'toy' that records the size of the data each generation was trained on."""

    __name__ = "toy"

    @bench.hookimpl
    def bench_register_models(self, register):
        register(bench.ModelBundle(
            name="toy", kind="vectors", load_real=_load_real, trainer="toy-fit", generator="toy-sample",
            scorer="toy-loglik", metrics=("toy-train-size", "perplexity-drift"),
            params={"n": 40, "fail_at": -1}, presets={"smoke": {"generations": 4}, "paper": {"n": 400}}))

    @bench.hookimpl
    def bench_register_trainers(self, register):
        register(bench.Trainer("toy-fit", _fit))

    @bench.hookimpl
    def bench_register_generators(self, register):
        register(bench.Generator("toy-sample", _generate))

    @bench.hookimpl
    def bench_register_scorers(self, register):
        register(bench.Scorer("toy-loglik", _score))

    @bench.hookimpl
    def bench_register_metrics(self, register):
        register(bench.Metric("toy-train-size", _train_size, direction="higher"))


class Events:
    """Records event hooks; raises in bench_generation_finished when told to."""

    __name__ = "events"

    def __init__(self, raise_at=None):
        self.calls = []
        self.raise_at = raise_at

    @bench.hookimpl
    def bench_run_started(self, run):
        self.calls.append(("started", run.done))

    @bench.hookimpl
    def bench_generation_finished(self, run, generation, metrics):
        self.calls.append(("generation", generation, len(metrics)))
        if generation == self.raise_at:
            raise ValueError("logger exploded")

    @bench.hookimpl
    def bench_run_finished(self, run, status, error):
        self.calls.append(("finished", status))


class Duplicate:
    """Registers a policy under a name the first-party policies already use."""

    __name__ = "dupe"

    @bench.hookimpl
    def bench_register_policies(self, register):
        register(bench.Policy("replace", lambda ctx: ctx.synthetic[-1]))
