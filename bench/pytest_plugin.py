"""pytest fixtures of the conformance kit, for the test suites of third-party plugins.

Registered through the ``pytest11`` entry point, so it loads in every pytest session where
collapse-bench is installed: it imports nothing of the harness until a fixture is used.

    def test_my_model_conforms(bench_conformance):
        bench_conformance("my-model", set={"n_samples": 50})

See docs/conformance.md; the class-based alternative is ``bench.conformance.PluginContract``.
"""

from __future__ import annotations


import pytest

MARKER = "bench_conformance"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}: a collapse-bench plugin conformance check (deselect with -m 'not {MARKER}')")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests of PluginContract subclasses and those using the fixture, so that
    ``-m 'not bench_conformance'`` skips them (by name: bench.conformance is not imported here)."""
    for item in items:
        cls = getattr(item, "cls", None)
        contract = cls is not None and any(
            c.__name__ == "PluginContract" and c.__module__ == "bench.conformance" for c in cls.__mro__)
        if contract or MARKER in getattr(item, "fixturenames", ()):
            item.add_marker(MARKER)


@pytest.fixture
def bench_conformance(tmp_path_factory: pytest.TempPathFactory):
    """A callable ``check(plugin, preset="smoke", **options)`` that runs every conformance check
    (options as ``bench.conformance.check_plugin``) and fails the test listing every failed
    check; notes become ConformanceNote warnings. It returns the findings when all checks pass."""

    def check(plugin: str, preset: str = "smoke", **options):
        from bench.conformance import check_plugin, fail_on_breaches

        if options.get("workdir") is None:
            options["workdir"] = tmp_path_factory.mktemp("bench-conformance")
        from bench.errors import BenchError

        try:
            findings, error = check_plugin(plugin, preset, **options), None
        except BenchError as exc:  # the arguments are wrong: say it once, without a traceback
            findings, error = [], str(exc)
        if error is not None:
            pytest.fail(error, pytrace=False)
        return fail_on_breaches(findings, plugin, f"model bundle {plugin!r} (preset {preset!r}) breaks the "
                                "plugin contract in {checks} check(s)")

    return check
