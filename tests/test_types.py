"""bench.types at the bottom of the layers; typed registries and hook specs."""

import inspect
import typing

import pytest

import bench
from bench import executors, hookspecs, loop, spec, types
from bench.plugins import KINDS, Bench, Registry


def test_types_keep_their_old_homes():
    assert spec.Spec is types.Spec and spec._digest is types.digest
    assert spec.DEFAULT_GENERATIONS == types.DEFAULT_GENERATIONS
    assert loop.RunInfo is types.RunInfo and loop.RunOutcome is types.RunOutcome
    assert executors.Task is types.Task and executors.TaskResult is types.TaskResult
    assert executors.Executor is types.Executor is bench.Executor


def test_run_id_is_unchanged():
    """The digest behind run ids, track ids and entry ids: sha256 of canonical JSON, 16 hex digits."""
    import hashlib
    import json

    data = {"b": [1, 2.5, None], "a": "x"}
    want = hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
    assert types.digest(data) == want
    s = types.Spec(plugin="gaussian", preset="smoke", params={"d": 1}, trainer="t", generator="g", scorer="s",
                   metrics=["m"], policy="mix", policy_params={"share": 0.1}, start="pretrained", seed=3)
    assert (s.run_id, s.gen0_id) == ("9af3196d625a68c6", "fda0ff7f3174420f")  # pinned before the move
    assert s.folder_name == f"gaussian-smoke-mix-0.1-s3-{s.run_id[:8]}"
    assert types.Spec.from_dict(s.to_dict()) == s


@pytest.fixture(scope="module")
def loaded():
    return Bench()


def test_each_kind_has_a_typed_registry(loaded):
    hints = typing.get_type_hints(Bench)  # properties are not in here: read their return annotations
    assert not hints.get("__getattr__")
    for kind, (_, cls) in KINDS.items():
        prop = getattr(Bench, kind)
        assert isinstance(prop, property), f"Bench.{kind} should be a typed property"
        assert prop.fget.__annotations__["return"] == f"Registry[{cls.__name__}]"
        registry = getattr(loaded, kind)
        assert isinstance(registry, Registry) and registry is loaded.registries[kind]
        assert all(isinstance(registry.get(name), cls) for name in registry.names())
    assert loaded.models.get("gaussian").name == "gaussian"
    with pytest.raises(AttributeError):
        loaded.no_such_kind  # noqa: B018


def test_hook_specs_are_typed():
    """Every hook's parameters name real types (no Any for the register callbacks or the run)."""
    registering = {hook: cls for hook, cls in KINDS.values()}
    specs = [f for name, f in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("bench_")]
    assert specs
    for fn in specs:
        hints = typing.get_type_hints(fn, vars(hookspecs) | {"CliOption": object})
        if fn.__name__ in registering:
            assert hints["register"] == typing.Callable[[registering[fn.__name__]], None], fn.__name__
        if "run" in hints:
            assert hints["run"] is types.RunInfo, fn.__name__
        assert all(h is not typing.Any for k, h in hints.items() if k in ("register", "run")), fn.__name__
