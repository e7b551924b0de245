"""Plugin loading: entry points, first-party versus third-party, duplicates, errors, listing."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

import bench
from bench.plugins import Bench, PluginError
from tests import toy_plugins

FIRST_PARTY = {"gaussian", "gmm", "metrics", "policies"}


def test_first_party_plugins_load_through_entry_points(bench_plugins):
    infos = bench_plugins.infos
    assert FIRST_PARTY <= set(infos)
    assert all(infos[name].first_party and infos[name].version == bench.__version__ for name in FIRST_PARTY)
    assert {"gaussian", "gmm"} <= set(bench_plugins.models.names())
    assert {"replace", "mix", "accumulate", "accumulate-subsample"} <= set(bench_plugins.policies.names())
    assert bench_plugins.owner("policies", "mix").name == "policies"


def test_a_duplicate_name_names_both_plugins():
    with pytest.raises(PluginError, match=r"policy 'replace' is registered twice: by plugin 'policies' and by plugin 'dupe'"):
        Bench(extra_plugins=[toy_plugins.Duplicate()])


def test_a_plugin_raising_at_registration_is_named():
    class Broken:
        __name__ = "broken"

        @bench.hookimpl
        def bench_register_metrics(self, register):
            raise ZeroDivisionError("oops")

    with pytest.raises(PluginError, match=r"plugin 'broken' raised in bench_register_metrics: ZeroDivisionError: oops"):
        Bench(extra_plugins=[Broken()])


def test_registering_the_wrong_thing_is_named():
    class Wrong:
        __name__ = "wrong"

        @bench.hookimpl
        def bench_register_models(self, register):
            register({"name": "x"})

    with pytest.raises(PluginError, match="plugin 'wrong' registered dict through bench_register_models"):
        Bench(extra_plugins=[Wrong()])


@pytest.fixture
def third_party(tmp_path):
    """A third-party distribution on sys.path: a module plus dist-info with a collapse_bench entry point."""
    (tmp_path / "extra_policy.py").write_text(textwrap.dedent("""
        import bench

        @bench.hookimpl
        def bench_register_policies(register):
            register(bench.Policy("keep-first", lambda ctx: ctx.synthetic[0]))
    """))
    dist = tmp_path / "extra_policy-2.5.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: extra-policy\nVersion: 2.5.0\n")
    (dist / "entry_points.txt").write_text("[collapse_bench]\nextra = extra_policy\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    return env


def plugins_json(env):
    proc = subprocess.run([sys.executable, "-m", "bench.cli", "plugins", "--json"], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return {p["name"]: p for p in json.loads(proc.stdout)}


def test_bench_plugins_lists_third_party_with_version_and_registrations(third_party):
    listed = plugins_json(third_party)
    assert listed["extra"] == {"name": "extra", "version": "2.5.0", "distribution": "extra-policy",
                               "first_party": False, "registers": {"policies": ["keep-first"]}}
    assert FIRST_PARTY <= set(listed)
    proc = subprocess.run([sys.executable, "-m", "bench.cli", "plugins"], env=third_party, capture_output=True, text=True)
    assert "extra 2.5.0 (extra-policy)" in proc.stdout and "policies: keep-first" in proc.stdout


@pytest.mark.slow
def test_env_var_limits_third_party_plugins_but_first_party_always_load(third_party):
    assert "extra" not in plugins_json(dict(third_party, BENCH_PLUGINS=""))
    assert "extra" in plugins_json(dict(third_party, BENCH_PLUGINS="extra"))
    only_other = plugins_json(dict(third_party, BENCH_PLUGINS="something-else"))
    assert "extra" not in only_other and FIRST_PARTY <= set(only_other)


def test_trace_env_var_prints_hook_calls(third_party):
    proc = subprocess.run([sys.executable, "-m", "bench.cli", "plugins"], env=dict(third_party, BENCH_TRACE="1"),
                          capture_output=True, text=True)
    assert "[bench trace] bench_register_policies" in proc.stderr and "extra" in proc.stderr


def test_a_plugin_with_two_implementations_of_one_hook_registers_each_once():
    import bench
    from bench.plugins import Bench

    class TwoMetricHooks:
        __name__ = "two-hooks"

        @bench.hookimpl(specname="bench_register_metrics")
        def first(self, register):
            register(bench.Metric("two-a", lambda ctx: 0.0, direction="lower"))

        @bench.hookimpl(specname="bench_register_metrics")
        def second(self, register):
            register(bench.Metric("two-b", lambda ctx: 0.0, direction="lower"))

    b = Bench(extra_plugins=[TwoMetricHooks()])
    assert {"two-a", "two-b"} <= set(b.metrics.names())
    assert sorted(b.plugin_info("two-hooks").registers["metrics"]) == ["two-a", "two-b"]


def test_a_broken_third_party_plugin_says_how_to_run_without_it():
    import pytest

    import bench
    from bench.plugins import Bench, PluginError

    class Broken:
        __name__ = "broken"

        @bench.hookimpl
        def bench_register_metrics(self, register):
            raise RuntimeError("cannot find my metric module")

    with pytest.raises(PluginError, match=r"plugin 'broken' raised in bench_register_metrics: RuntimeError: "
                                          r"cannot find my metric module \(to run without it: BENCH_PLUGINS="):
        Bench(extra_plugins=[Broken()])
