"""`bench new-plugin NAME`: write a working plugin package to start a model of your own from.

The package holds a trivial but real model (a diagonal Gaussian on 2-D vectors) registered under
NAME through the ``collapse_bench`` entry-point group, a ``smoke`` and a ``paper`` preset, a metric
of its own (``NAME-mean-shift``), and tests that pass as generated: the conformance kit
(:mod:`bench.conformance`) and unit tests of the model. The places to change are marked REPLACE.

The templates live in this module as strings, so they ship inside the wheel with the code.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.errors import BenchError

NAME_PATTERN = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
MAX_NAME_LENGTH = 40
MODULE_PREFIX = "collapse_bench_"
DIST_PREFIX = "collapse-bench-"
# The components the generated plugin registers, by registry: each must be free.
COMPONENT_SUFFIXES = {"trainers": "-fit", "generators": "-sample", "scorers": "-loglik", "metrics": "-mean-shift"}


@dataclass(frozen=True)
class Names:
    """Every name the generated package uses, derived from the plugin name."""

    name: str  # what `bench run --plugin NAME` selects; also the entry-point name
    module: str  # the import package: collapse_bench_ + NAME with - as _
    dist: str  # the distribution: collapse-bench-NAME
    test_stem: str  # NAME with - as _, for test file names

    @classmethod
    def of(cls, name: str) -> Names:
        stem = name.replace("-", "_")
        return cls(name=name, module=MODULE_PREFIX + stem, dist=DIST_PREFIX + name, test_stem=stem)


# --------------------------------------------------------------------------------------------------
# Checks (all of them run before anything is written)
# --------------------------------------------------------------------------------------------------


def suggest_name(name: str) -> str:
    """A valid plugin name close to ``name``: lowercase, runs of other characters as one hyphen."""
    text = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    if text and not text[0].isalpha():
        text = "model-" + text
    return text[:MAX_NAME_LENGTH].rstrip("-") or "my-model"


def check_name(name: str) -> None:
    """Raise BenchError unless ``name`` is a valid plugin name (lowercase letters, digits, hyphens)."""
    if NAME_PATTERN.fullmatch(name) and len(name) <= MAX_NAME_LENGTH:
        return
    raise BenchError(
        f"invalid plugin name {name!r}: use lowercase letters, digits and single hyphens, starting "
        f"with a letter, at most {MAX_NAME_LENGTH} characters (it is what users pass to --plugin). "
        f"Try: bench new-plugin {suggest_name(name)}"
    )


def name_clashes(name: str, bench: Any = None) -> list[str]:
    """Why ``name`` cannot be used: an installed plugin, bundle or component holds one of the names
    the package would register, or its module or distribution exists already. Empty when free.

    ``bench`` is a loaded :class:`bench.plugins.Bench`; None loads the installed plugins.
    """
    from bench.plugins import ENTRY_POINT_GROUP, SINGULAR, Bench

    names = Names.of(name)
    reasons: list[str] = []
    # Every installed entry point, including those BENCH_PLUGINS hides from this process.
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            dist = ep.dist.name if ep.dist is not None else "an unknown distribution"
            reasons.append(f"an installed plugin is named {name!r} (from {dist})")
    b = bench if bench is not None else Bench()
    wanted = {"models": name, **{kind: name + suffix for kind, suffix in COMPONENT_SUFFIXES.items()}}
    for kind, wanted_name in wanted.items():
        registry = b.registries[kind]
        if wanted_name in registry:
            reasons.append(f"{SINGULAR[kind]} {wanted_name!r} is registered by plugin "
                           f"{registry.plugin_of(wanted_name)!r}")
    try:
        metadata.distribution(names.dist)
        reasons.append(f"the distribution {names.dist} is already installed")
    except metadata.PackageNotFoundError:
        pass
    try:
        spec = importlib.util.find_spec(names.module)
    except (ImportError, ValueError):
        spec = None
    if spec is not None:
        where = spec.origin or ", ".join(spec.submodule_search_locations or []) or "somewhere on sys.path"
        reasons.append(f"a Python module {names.module} already exists ({where})")
    return reasons


def check_target(target: Path) -> None:
    """Raise BenchError when ``target`` is a file or a folder with something in it."""
    if target.is_dir():
        if any(target.iterdir()):
            raise BenchError(
                f"{target} already exists and is not empty; new-plugin writes only into a new or empty "
                f"folder. Choose another NAME or --dir, or move that folder away."
            )
    elif target.exists() or target.is_symlink():
        raise BenchError(f"{target} already exists and is not a folder; choose another NAME or --dir.")


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------


def default_description(name: str) -> str:
    return f"A {name} model for collapse-bench (a plugin generated by bench new-plugin)."


def render(name: str, description: str | None = None) -> dict[str, str]:
    """The package's files as {relative path: text}, for a valid ``name``."""
    check_name(name)
    names = Names.of(name)
    text = " ".join((description or "").split()) or default_description(name)
    salt = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big")
    values = {
        "__NAME__": name,
        "__MODULE__": names.module,
        "__DIST__": names.dist,
        "__TEST_STEM__": names.test_stem,
        "__DESCRIPTION_TEXT__": text,
        # json.dumps gives a valid TOML basic string and a valid Python string literal.
        "__DESCRIPTION_LITERAL__": json.dumps(text),
        "__SALT__": f"0x{salt:08X}",
    }
    files = {
        "pyproject.toml": PYPROJECT,
        "README.md": README,
        ".gitignore": GITIGNORE,
        f"{names.module}/__init__.py": INIT,
        f"{names.module}/plugin.py": PLUGIN,
        f"tests/test_{names.test_stem}_contract.py": CONTRACT_TEST,
        f"tests/test_{names.test_stem}_model.py": MODEL_TEST,
    }
    # One pass, so that a description containing a placeholder's spelling stays as written.
    pattern = re.compile("|".join(re.escape(key) for key in values))
    return {path: pattern.sub(lambda m: values[m.group(0)], template) for path, template in files.items()}


def scaffold(name: str, parent: str | Path = ".", description: str | None = None, bench: Any = None) -> Path:
    """Write the plugin package NAME into ``parent``/NAME; return that folder.

    Everything is checked first (the name, clashes with installed names, the target folder), so a
    refusal leaves nothing behind.
    """
    check_name(name)
    target = Path(parent) / name
    check_target(target)
    reasons = name_clashes(name, bench)
    if reasons:
        alternative = f"my-{name}"[:MAX_NAME_LENGTH].rstrip("-")
        raise BenchError(
            f"the plugin name {name!r} is taken: {'; '.join(reasons)}. Choose a name of your own "
            f"(`bench plugins` lists those in use), for example: bench new-plugin {alternative}"
        )
    files = render(name, description)
    target.mkdir(parents=True, exist_ok=True)
    for rel, text in files.items():
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return target


def next_steps(target: Path, name: str) -> str:
    """What to type after the package is written."""
    return (
        f"Created the plugin package {target}/ (model {name!r}, distribution {Names.of(name).dist}).\n"
        f"Next steps:\n"
        f"  cd {target}\n"
        f"  pip install -e \".[test]\"\n"
        f"  bench plugins\n"
        f"  bench run --plugin {name} --preset smoke\n"
        f"  pytest\n"
        f"Then replace the placeholder model in {Names.of(name).module}/plugin.py (look for REPLACE)."
    )


# --------------------------------------------------------------------------------------------------
# Templates
# --------------------------------------------------------------------------------------------------

PYPROJECT = '''\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "__DIST__"
version = "0.1.0"
description = __DESCRIPTION_LITERAL__
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["collapse-bench", "numpy"]

[project.optional-dependencies]
test = ["pytest>=8", "scipy"]

# How collapse-bench finds the plugin: `bench plugins` lists it under this name.
[project.entry-points.collapse_bench]
__NAME__ = "__MODULE__.plugin"

[tool.setuptools]
packages = ["__MODULE__"]

[tool.pytest.ini_options]
testpaths = ["tests"]
'''

GITIGNORE = '''\
results/
__pycache__/
*.egg-info/
build/
dist/
.pytest_cache/
'''

INIT = '''\
"""The collapse-bench plugin `__NAME__`; its hooks are in plugin.py."""

__version__ = "0.1.0"
'''

PLUGIN = '''\
"""__NAME__: a collapse-bench plugin (generated by `bench new-plugin __NAME__`).

The model is a placeholder that already works end to end: a diagonal Gaussian on 2-D vectors.
Each generation fits a mean and a standard deviation per dimension to its training data, draws new
samples from that fit, and scores samples by their log-density in nats. Refitted on its own samples
generation after generation, its spread shrinks and its mean wanders: model collapse in miniature.

Replace it piece by piece; the places to change are marked REPLACE. What the harness relies on
(tests/test___TEST_STEM___contract.py checks it with the conformance kit):

- samples are bench.Samples(kind, array) with one sample per row of the first axis;
- a model state is a flat dict of NumPy arrays (it is saved as safetensors, never pickled);
- all randomness comes from the rng the harness hands in, and load_real's from the seed, so a run
  is the same for the same seed and a resumed run ends like an uninterrupted one;
- log-likelihoods are in nats, and `units` counts what each is over (dimensions, tokens, pixels).
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

import bench

NAME = "__NAME__"
DESCRIPTION = __DESCRIPTION_LITERAL__

# Separates this plugin's real-data random stream from any other use of the same seed.
_SEED_SALT = __SALT__

# The dimension of the vectors. REPLACE: your data's shape.
DIM = 2

# The parameters and their defaults; presets and `bench run --set KEY=VALUE` override them, and
# they are all part of a run's spec. REPLACE: your model's and your data's settings.
PARAMS = {
    "n_samples": 100,  # real training samples, and samples drawn per generation
    "n_test": 500,  # real test samples (and as many validation samples)
    "true_mean": 0.0,  # the real data: N(true_mean, true_std^2) in each dimension
    "true_std": 1.0,
}

PRESETS = {
    # Seconds on a laptop CPU, offline: the default preset, and the one the tests run.
    "smoke": {"n_samples": 100, "generations": 10},
    # PLACEHOLDER values: set the sample sizes and the number of generations of your protocol
    # before anyone publishes results under this preset.
    "paper": {"n_samples": 1000, "n_test": 2000, "generations": 200},
}


# --------------------------------------------------------------------------------------------------
# Real data
# --------------------------------------------------------------------------------------------------


def check(params) -> list[str]:
    """Refuse impossible settings before a run starts; return warnings to show (none here)."""
    for key in ("n_samples", "n_test"):
        value = params[key]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 2:
            raise bench.BenchError(
                f"{NAME}: {key} must be an integer >= 2 (a standard deviation needs two samples), "
                f"got {value!r}; for example --set {key}=100"
            )
    mean, std = float(params["true_mean"]), float(params["true_std"])
    if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
        raise bench.BenchError(
            f"{NAME}: true_mean must be finite and true_std finite and > 0, got {mean!r} and {std!r}"
        )
    return []


def load_real(request: bench.RealRequest) -> bench.RealData:
    """Train, test and validation splits for one seed, drawn from N(true_mean, true_std^2 I).

    REPLACE this with your data: read your files or dataset here and split them with the seed.
    """
    params, seed = request.params, request.seed
    check(params)
    rng = np.random.default_rng([int(seed), _SEED_SALT])
    mean = np.full(DIM, float(params["true_mean"]))
    std = np.full(DIM, float(params["true_std"]))

    def draw(n: int, generator: np.random.Generator) -> np.ndarray:
        return mean + std * generator.standard_normal((n, DIM))

    train = draw(params["n_samples"], rng)
    test = draw(params["n_test"], rng)
    validation = draw(params["n_test"], rng)
    digest = hashlib.sha256()
    for part in (train, test, validation):
        digest.update(np.ascontiguousarray(part).tobytes())
    return bench.RealData(
        train=bench.Samples("vectors", train),
        test=bench.Samples("vectors", test),
        validation=bench.Samples("vectors", validation),
        # Unseen real samples for the `fresh` policy; leave it out if your source cannot make more.
        fresh=lambda n, fresh_rng: bench.Samples("vectors", draw(n, fresh_rng)),
        # The true log-density, where you know it; leave it out otherwise.
        true_loglik=lambda samples: diag_gaussian_logpdf(samples.data, mean, std),
        fingerprint=f"{NAME}:sha256:{digest.hexdigest()[:16]}",
        # What the data is, independent of the seed: runs that differ only in seed share a track.
        source=f"{NAME}:mean={mean[0]!r}:std={std[0]!r}:n={params['n_samples']}:test={params['n_test']}",
    )


# --------------------------------------------------------------------------------------------------
# The model: trainer, generator, scorer
# --------------------------------------------------------------------------------------------------


def diag_gaussian_logpdf(x, mean, std) -> np.ndarray:
    """Log-density in nats of each row of x under independent normals N(mean_j, std_j^2):
    sum_j [-(x_j - mean_j)^2 / (2 std_j^2) - log std_j - log(2 pi) / 2].

    A zero std (a fully collapsed model) has no density: every row then scores -inf.
    """
    x = np.asarray(x, dtype=np.float64)
    mean = np.asarray(mean, dtype=np.float64)
    std = np.asarray(std, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != mean.shape[0]:
        raise ValueError(f"expected vectors of shape (n, {mean.shape[0]}), got {x.shape}")
    if not np.all(np.isfinite(std) & (std > 0)):
        return np.full(x.shape[0], -np.inf)
    z = (x - mean) / std
    return np.sum(-0.5 * z**2 - np.log(std) - 0.5 * math.log(2 * math.pi), axis=1)


def fit(request: bench.FitRequest) -> dict[str, np.ndarray]:
    """Fit the model to request.data (D_k): per dimension, the sample mean and the sample standard
    deviation (ddof 1).

    REPLACE this with your model's training. request.init is the state to start from (with
    --start gen0 or previous), request.validation the real validation split, and request.rng the
    only source of randomness to use; this closed-form fit needs none of them.
    """
    x = np.asarray(request.data.data, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"{NAME}-fit needs at least two vectors of shape (n, d), got {x.shape}")
    return {"mean": x.mean(axis=0), "std": x.std(axis=0, ddof=1)}


def generate(request: bench.GenerateRequest) -> bench.Samples:
    """request.n samples from the fitted model, drawn with the rng the harness hands in.

    REPLACE this with your model's sampling. request.prompts is the real training set, for
    conditional models (one continuation per prompt); this model ignores it.
    """
    mean, std = request.state["mean"], request.state["std"]
    return bench.Samples("vectors", mean + std * request.rng.standard_normal((request.n, mean.shape[0])))


def score(request: bench.ScoreRequest) -> bench.Scores:
    """Per-sample log-likelihood in nats under the fitted model; one unit per dimension.

    REPLACE this with your model's scoring (a language model: the summed token log-probabilities,
    units = tokens).
    """
    samples, state = request.samples, request.state
    loglik = diag_gaussian_logpdf(samples.data, state["mean"], state["std"])
    units = np.full(len(samples), samples.data.shape[1], dtype=np.int64)
    return bench.Scores(loglik=loglik, units=units)


# --------------------------------------------------------------------------------------------------
# A metric of its own
# --------------------------------------------------------------------------------------------------


def mean_shift(ctx: bench.MetricContext) -> float:
    """||mean of M_k - mean of M_0||: how far the fitted mean has wandered from generation 0's.

    A template for your own metrics: read the states (ctx.state is M_k, ctx.reference_state M_0),
    the samples M_k drew (ctx.samples) or the real data (ctx.real), and return a float, or a dict
    of floats (one result row each).
    """
    return float(np.linalg.norm(ctx.state["mean"] - ctx.reference_state["mean"]))


# --------------------------------------------------------------------------------------------------
# Registration: what `bench plugins` lists and `bench run --plugin __NAME__` uses
# --------------------------------------------------------------------------------------------------


@bench.hookimpl
def bench_register_models(register) -> None:
    register(
        bench.ModelBundle(
            name=NAME,
            kind="vectors",
            load_real=load_real,
            trainer=f"{NAME}-fit",
            generator=f"{NAME}-sample",
            scorer=f"{NAME}-loglik",
            # Computed every generation: this plugin's metric, then generic ones from the
            # first-party `metrics` plugin (`bench plugins` lists every installed metric).
            metrics=(f"{NAME}-mean-shift", "cov-trace-ratio", "logdet-diff", "perplexity-drift", "tail-mass"),
            params=dict(PARAMS),
            presets=PRESETS,
            default_preset="smoke",
            description=DESCRIPTION,
            check=check,
        )
    )


@bench.hookimpl
def bench_register_trainers(register) -> None:
    register(bench.Trainer(name=f"{NAME}-fit", fit=fit, kinds=("vectors",)))


@bench.hookimpl
def bench_register_generators(register) -> None:
    register(bench.Generator(name=f"{NAME}-sample", generate=generate, kinds=("vectors",)))


@bench.hookimpl
def bench_register_scorers(register) -> None:
    register(bench.Scorer(name=f"{NAME}-loglik", score=score, kinds=("vectors",)))


@bench.hookimpl
def bench_register_metrics(register) -> None:
    # Names are global: prefix your metrics with the plugin's name.
    register(
        bench.Metric(
            name=f"{NAME}-mean-shift",
            compute=mean_shift,
            direction="lower",
            kinds=("vectors",),
            description="Euclidean distance between the fitted means of M_k and M_0",
        )
    )
'''

MODEL_TEST = '''\
"""Unit tests of the __NAME__ model, each against an independent computation.

REPLACE these with tests of your model when you replace it.
"""

import math
import statistics
import types

import numpy as np
import pytest

import bench
from __MODULE__ import plugin as P

# Two-sided normal tail of about 7e-6 per check: a correct model fails by chance almost never.
Z = 4.5


def fit_request(x):
    return bench.FitRequest(data=bench.Samples("vectors", x), validation=None, start="pretrained", init=None,
                            params=dict(P.PARAMS), rng=np.random.default_rng(0), generation=0)


def test_fit_is_the_sample_mean_and_standard_deviation():
    x = np.random.default_rng(1).normal(size=(30, P.DIM))
    state = P.fit(fit_request(x))
    for j in range(P.DIM):
        column = [float(v) for v in x[:, j]]
        assert state["mean"][j] == pytest.approx(statistics.fmean(column), rel=1e-12)
        assert state["std"][j] == pytest.approx(statistics.stdev(column), rel=1e-12)


def test_fit_recovers_a_known_mean_and_std_within_standard_errors():
    n, mu, sigma = 4000, np.array([1.5, -2.0]), np.array([0.5, 3.0])
    x = mu + sigma * np.random.default_rng(2).standard_normal((n, 2))
    state = P.fit(fit_request(x))
    # Standard errors: sigma / sqrt(n) for the mean; about sigma / sqrt(2 (n - 1)) for the std.
    assert np.all(np.abs(state["mean"] - mu) < Z * sigma / math.sqrt(n))
    assert np.all(np.abs(state["std"] - sigma) < Z * sigma / math.sqrt(2 * (n - 1)))


def test_score_is_the_sum_of_scipy_normal_log_densities():
    from scipy.stats import norm

    state = {"mean": np.array([0.3, -1.0]), "std": np.array([0.7, 2.0])}
    x = 3.0 * np.random.default_rng(3).normal(size=(20, 2))
    scores = P.score(bench.ScoreRequest(state, bench.Samples("vectors", x), P.PARAMS))
    expected = norm.logpdf(x, loc=state["mean"], scale=state["std"]).sum(axis=1)
    np.testing.assert_allclose(scores.loglik, expected, rtol=1e-12, atol=0)
    assert scores.units.tolist() == [2] * 20


def test_a_collapsed_model_has_no_density():
    state = {"mean": np.zeros(2), "std": np.array([1.0, 0.0])}
    scores = P.score(bench.ScoreRequest(state, bench.Samples("vectors", np.zeros((3, 2))), P.PARAMS))
    assert np.all(scores.loglik == -np.inf)


def test_samples_come_from_the_given_rng_and_follow_the_state():
    state = {"mean": np.array([2.0, -1.0]), "std": np.array([0.5, 1.5])}

    def draw(seed):
        return P.generate(bench.GenerateRequest(state, 5000, None, P.PARAMS, np.random.default_rng(seed), 0)).data

    a, b, c = draw(4), draw(4), draw(5)
    assert a.shape == (5000, 2) and np.array_equal(a, b) and not np.array_equal(a, c)
    n = len(a)
    assert np.all(np.abs(a.mean(axis=0) - state["mean"]) < Z * state["std"] / math.sqrt(n))
    assert np.all(np.abs(a.std(axis=0, ddof=1) - state["std"]) < Z * state["std"] / math.sqrt(2 * (n - 1)))


def test_real_data_is_fixed_by_the_seed():
    a, b, c = (P.load_real(bench.RealRequest(P.PARAMS, seed)) for seed in (0, 0, 1))
    assert a.train.data.shape == (P.PARAMS["n_samples"], P.DIM)
    assert a.test.data.shape == (P.PARAMS["n_test"], P.DIM)
    assert np.array_equal(a.train.data, b.train.data) and a.fingerprint == b.fingerprint
    assert not np.array_equal(a.train.data, c.train.data) and a.fingerprint != c.fingerprint
    assert a.source == c.source  # same data source, different draws
    truth = {"mean": np.full(P.DIM, P.PARAMS["true_mean"]), "std": np.full(P.DIM, P.PARAMS["true_std"])}
    np.testing.assert_allclose(a.true_loglik(a.test), P.score(bench.ScoreRequest(truth, a.test, P.PARAMS)).loglik,
                               rtol=1e-12)


def test_mean_shift_is_the_distance_between_the_fitted_means():
    ctx = types.SimpleNamespace(state={"mean": np.array([4.0, 1.0])},
                                reference_state={"mean": np.array([1.0, -3.0])})
    assert P.mean_shift(ctx) == pytest.approx(5.0)  # a 3-4-5 right triangle


@pytest.mark.parametrize("key, value", [("n_samples", 1), ("n_test", 2.5), ("true_std", 0.0)])
def test_impossible_settings_are_refused_with_a_message(key, value):
    with pytest.raises(bench.BenchError, match=key):
        P.check({**P.PARAMS, key: value})
'''

CONTRACT_TEST = '''\
"""The collapse-bench conformance kit, run against this plugin as installed.

It checks what the harness relies on (registration, the presets, determinism for a seed, the
state and sample formats, the scores); see bench.conformance for what each check means.
"""

from bench.conformance import PluginContract


class TestContract(PluginContract):
    plugin = "__NAME__"
'''

README = '''\
# __DIST__

__DESCRIPTION_TEXT__

A collapse-bench plugin: it adds the model
`__NAME__`, which the harness trains generation after generation on its own samples. It was
generated by `bench new-plugin __NAME__`; the model in it is a placeholder (a diagonal Gaussian on
2-D vectors) that already runs end to end.

## Install and run

This package depends on `collapse-bench`. When your package index does not have it (`pip install
collapse-bench` says "No matching distribution found"), install collapse-bench first from its
source, in the same environment; pip then counts the dependency as met and does not look it up:

```bash
pip show collapse-bench                           # already installed? then skip the next line
pip install -e /path/to/collapse-bench            # a checkout of its repository (the folder with its pyproject.toml)
```

Then, in this folder:

```bash
pip install -e ".[test]"                          # with collapse-bench installed
bench plugins                                     # lists __NAME__ (from __DIST__)
bench run --plugin __NAME__ --preset smoke        # seconds on a CPU; results under results/
pytest                                            # the conformance kit and the model's tests
```

## Where to edit

Everything is in `__MODULE__/plugin.py`; look for `REPLACE`:

- `load_real`: your real data (train, test, validation splits drawn from the seed);
- `fit`, `generate`, `score`: your model's training, sampling and log-likelihood (nats);
- `PARAMS` and `PRESETS`: the settings; `smoke` must stay fast, and `paper` holds placeholder
  values to set to your protocol's;
- `mean_shift`: a template for metrics of your own (name them `__NAME__-...`);
- the `metrics` of the bundle: the metrics computed by default (`bench plugins` lists them all).

Keep the tests passing: `tests/test___TEST_STEM___contract.py` runs collapse-bench's conformance
kit (`bench.conformance.PluginContract`), which checks what the harness relies on: registration,
determinism for a seed, state and sample formats, scores in nats. Replace
`tests/test___TEST_STEM___model.py` with tests of your own model. The hooks are documented in
collapse-bench's CONTRIBUTING.md.
'''
