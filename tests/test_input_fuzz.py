"""Config files and sweep files of any type and shape end in a run plan or a message, never a
traceback: generated YAML through the command line (``bench run --config``, ``bench sweep``, both
with --dry-run, so nothing runs) and through the Python API (``bench.api.specs``, ``bench.sweep.load``).

Two kinds of input: values of a wrong type for one key at a time (the message must name the key),
and mappings of arbitrary keys, values and shapes (any ending but a traceback)."""

import os

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bench.api as cb
from bench import options as O
from bench import sweep as S
from bench.errors import BenchError
from bench.plugins import Bench
from tests.helpers import bench_as_user

FUZZ = settings(max_examples=30, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module", autouse=True)
def workdir(tmp_path_factory):
    """A scratch folder as the working directory, and a small run limit (a generated grid or seed
    range resolves at most this many runs)."""
    folder = tmp_path_factory.mktemp("fuzz")
    old_cwd, old_limit = os.getcwd(), os.environ.get("BENCH_MAX_RUNS")
    os.chdir(folder)
    os.environ["BENCH_MAX_RUNS"] = "20"
    yield folder
    os.chdir(old_cwd)
    if old_limit is None:
        os.environ.pop("BENCH_MAX_RUNS", None)
    else:
        os.environ["BENCH_MAX_RUNS"] = old_limit


@pytest.fixture(scope="module")
def b():
    return Bench()


bench = bench_as_user


def write(path, data) -> str:
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return str(path)


# -- values ---------------------------------------------------------------------------------------

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(), st.text(max_size=10))
anything = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                         st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                        max_leaves=8)
containers = st.one_of(st.lists(scalars, min_size=1, max_size=3),
                       st.dictionaries(st.text(max_size=6), scalars, min_size=1, max_size=3))
numbers_ = st.one_of(st.booleans(), st.integers(-10**6, 10**6), st.floats())
not_text = st.one_of(numbers_, containers)
not_whole = st.one_of(st.booleans(), st.floats(), st.text(max_size=6), containers)

# Per key: values of a wrong type or shape (what the message must refuse, naming the key).
NAME_KEYS = ("plugin", "preset", "policy", "start", "trainer", "generator", "scorer", "keep_states",
             *(("on_nonfinite",) if "on_nonfinite" in O.CONFIG_KEYS else ()))
WRONG = {
    **{key: not_text for key in NAME_KEYS},
    "generations": st.one_of(not_whole, st.integers(max_value=-1)),
    "threads": st.one_of(not_whole, st.integers(max_value=0)),
    "seeds": st.one_of(st.booleans(), st.floats(), st.integers(max_value=-1), st.text(alphabet="ab,-x ", min_size=1),
                       st.dictionaries(st.text(max_size=4), scalars, min_size=1, max_size=2),
                       st.lists(st.one_of(st.floats(), st.booleans(), st.lists(st.integers(), max_size=2)),
                                min_size=1, max_size=3)),
    "set": st.one_of(numbers_, st.text(max_size=6), st.lists(scalars, min_size=1, max_size=3),
                     st.dictionaries(st.integers(), scalars, min_size=1, max_size=2)),
    "metrics": st.one_of(numbers_, st.dictionaries(st.text(max_size=4), scalars, min_size=1, max_size=2),
                         st.lists(numbers_, min_size=1, max_size=3)),
    "mitigation": st.one_of(numbers_, st.dictionaries(st.text(max_size=4), scalars, min_size=1, max_size=2),
                            st.lists(numbers_, min_size=1, max_size=3)),
    "out": st.one_of(numbers_, containers, st.just(""), st.just("a\0b")),
}
WRONG["seed"] = WRONG["seeds"]
assert set(WRONG) == set(O.CONFIG_KEYS), "every key of a config file has wrong values to try"

SWEEP_WRONG = {
    "executor": not_text,
    "workers": st.one_of(not_whole, st.integers(max_value=0)),
    "threads_per_worker": st.one_of(not_whole, st.integers(max_value=0)),
    "batch": st.one_of(st.integers(), st.floats(), st.text(max_size=6), containers),
    "summary": st.one_of(numbers_, containers, st.just("")),
    "grid": st.one_of(numbers_, st.text(max_size=6)),
    "dask": st.one_of(numbers_, st.text(max_size=6), st.lists(scalars, min_size=1, max_size=2)),
    "slurm": st.one_of(numbers_, st.text(max_size=6), st.lists(scalars, min_size=1, max_size=2)),
}
assert set(S.SWEEP_KEYS) <= set(WRONG) | set(SWEEP_WRONG)
GRID_WRONG = {key: WRONG[key] for key in ("plugin", "preset", "policy", "start", "trainer", "generator", "scorer",
                                          "generations", "metrics", "mitigation")}
assert set(GRID_WRONG) == set(O.SPEC_KEYS), "every spec key a grid may sweep has wrong values to try"

PLUGINS = st.sampled_from(["gaussian", "gmm", "categorical"])
AXIS_NAMES = st.one_of(st.sampled_from([*S.AXES, "set", "n_samples", "std", "dim", "n_components", "policy.p"]),
                       st.text(max_size=6))


def grids():
    def values(name):
        near = PLAUSIBLE.get(name, st.integers(0, 60) if name in ("n_samples", "dim", "n_components") else anything)
        return st.one_of(st.lists(st.one_of(near, anything), max_size=3), anything)

    axis = st.lists(AXIS_NAMES, max_size=3, unique=True).flatmap(
        lambda names: st.fixed_dictionaries({name: values(name) for name in names}))
    return st.one_of(axis, st.lists(axis, max_size=2), anything)


# Values near real ones, so that generated files also get past the type checks into resolution.
PARAMS = st.sampled_from(["n_samples", "n_test", "std", "mean", "dim", "estimator", "n_components", "tol",
                          "temperature", "top_k", "zipf", "policy.p", "policy.size", "nope"])
PLAUSIBLE = {
    "preset": st.sampled_from(["smoke", "paper", "smok"]),
    "generations": st.integers(-2, 3),
    "seeds": st.one_of(st.integers(-1, 3), st.sampled_from(["0-2", "1,1", "3-1", "0-50", ""]),
                       st.lists(st.one_of(st.integers(-1, 3), st.just("0-1")), max_size=3)),
    "policy": st.sampled_from(["replace", "mix:0.1", "mix:2", "mix:x", "accumulate", "accumulate-subsample:5",
                               "fresh:0.5", "replace:3", "mix:", ":", "best-of:4"]),
    "mitigation": st.one_of(st.sampled_from(["best-of:4", "tce:0.9", "temperature:0.7", "top-k:3", "mix:0.1+temperature:0.5",
                                             "filter:0.5,oracle", "+", "best-of:x"]),
                            st.lists(st.sampled_from(["best-of:4", "temperature:2", "nope"]), max_size=2)),
    "start": st.sampled_from(["pretrained", "gen0", "previous", "later"]),
    "set": st.dictionaries(PARAMS, anything, max_size=3),
    "metrics": st.one_of(st.sampled_from(["gaussian-var", "test-nll", "logdet-diff", "categorical-tv", "nope"]),
                         st.lists(st.sampled_from(["gaussian-var", "test-nll", "gmm-std", "x"]), max_size=2)),
    "trainer": st.sampled_from(["gaussian-fit", "gmm-em", "gmm-em-batched", "categorical-fit", "nope"]),
    "generator": st.sampled_from(["gaussian-sample", "gmm-sample", "categorical-sample", "nope"]),
    "scorer": st.sampled_from(["gaussian-loglik", "gmm-loglik", "nope"]),
    "keep_states": st.sampled_from(["first-last", "all", "every:2", "every:0", "some"]),
    "threads": st.integers(-1, 2),
    "workers": st.integers(-1, 2),
    "executor": st.sampled_from(["local", "dask", "slurm", "dusk"]),
}
PLAUSIBLE["seed"] = PLAUSIBLE["seeds"]


def configs(keys, extra=()):
    """Mappings over ``keys`` with values of any type and shape or near real ones, mostly naming a
    real model so that the values reach resolution."""
    def value(key):
        return st.one_of(PLAUSIBLE[key], anything) if key in PLAUSIBLE else anything

    body = st.lists(st.sampled_from([*keys, *extra, "nonsense"]), max_size=4, unique=True).flatmap(
        lambda names: st.fixed_dictionaries({name: value(name) for name in names}))
    return st.tuples(st.one_of(st.none(), PLUGINS), body).map(
        lambda pair: {**({"plugin": pair[0]} if pair[0] else {}), **pair[1]})


def assert_message(code, text, escaped):
    assert escaped is None, escaped
    assert "Traceback" not in text, text
    assert code in (0, 2), text
    if code == 2:
        assert text.startswith("Error: ") or "\nError: " in text, text


# -- config files ---------------------------------------------------------------------------------


@FUZZ
@given(data=st.data())
def test_a_wrong_type_in_a_config_file_is_a_message_naming_the_key(workdir, b, data):
    key = data.draw(st.sampled_from(sorted(WRONG)))
    value = data.draw(WRONG[key])
    path = write(workdir / "wrong.yaml", {"plugin": "gaussian", key: value} if key != "plugin" else {key: value})
    code, text, escaped = bench("run", "--config", path, "--dry-run")
    assert escaped is None and "Traceback" not in text, escaped or text
    assert code == 2 and f"config file {path}" in text and key in text.split(f"config file {path}", 1)[1], text
    with pytest.raises(BenchError, match=key):
        cb.specs(config=path, bench=b)


@pytest.mark.slow
@FUZZ
@given(data=configs(O.CONFIG_KEYS))
def test_any_config_file_is_a_run_plan_or_a_message(workdir, b, data):
    path = write(workdir / "any.yaml", data)
    assert_message(*bench("run", "--config", path, "--dry-run"))
    try:
        cb.specs(config=path, bench=b)
    except BenchError:
        pass


@pytest.mark.slow
@settings(FUZZ, max_examples=15)
@given(content=st.binary(max_size=64))
def test_any_bytes_as_a_config_or_sweep_file_are_a_plan_or_a_message(workdir, content):
    path = workdir / "bytes.yaml"
    path.write_bytes(content)
    assert_message(*bench("run", "--config", path, "--dry-run"))
    assert_message(*bench("sweep", path, "--dry-run"))


# -- sweep files ----------------------------------------------------------------------------------


@FUZZ
@given(data=st.data())
def test_a_wrong_type_in_a_sweep_file_is_a_message_naming_the_key(workdir, b, data):
    where = data.draw(st.sampled_from(["top", "sweep", "grid"]))
    if where == "grid":
        key = data.draw(st.sampled_from(sorted(GRID_WRONG)))
        values = data.draw(st.lists(GRID_WRONG[key], min_size=1, max_size=2))
        sweep, named = {"plugin": "gaussian", "grid": {key: values}}, f"grid.{key}"
        if key == "plugin":
            del sweep["plugin"]
    else:
        table = WRONG if where == "top" else SWEEP_WRONG
        key = data.draw(st.sampled_from(sorted(table)))
        sweep, named = {"plugin": "gaussian", key: data.draw(table[key])}, key
        if key == "plugin":
            sweep["plugin"] = data.draw(table[key])
    path = write(workdir / "wrong-sweep.yaml", sweep)
    code, text, escaped = bench("sweep", path, "--dry-run")
    assert escaped is None and "Traceback" not in text, escaped or text
    assert code == 2 and f"sweep file {path}" in text and named in text, text
    with pytest.raises(BenchError, match=named.replace(".", r"\.")):
        S.load(b, path)


@pytest.mark.slow
@FUZZ
@given(data=configs([*S.SWEEP_KEYS, "dask", "slurm", "local"]), grid=grids())
def test_any_sweep_file_is_a_plan_or_a_message(workdir, b, data, grid):
    data = {**data, "grid": grid} if "grid" not in data else data
    path = write(workdir / "any-sweep.yaml", data)
    assert_message(*bench("sweep", path, "--dry-run"))
    try:
        S.dry_run_lines(b, S.load(b, path))
    except BenchError:
        pass
