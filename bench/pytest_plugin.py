"""pytest fixtures of the conformance kit, for the test suites of third-party plugins.

Registered through the ``pytest11`` entry point, so it loads in every pytest session where
collapse-bench is installed: it imports nothing of the harness until a fixture is used.

    def test_my_model_conforms(bench_conformance):
        bench_conformance("my-model", set={"n_samples": 50})

    def test_my_policy_conforms(bench_policy_conformance):
        bench_policy_conformance("my-policy:0.5")          # run on the first-party gaussian model

See docs/conformance.md; the class-based alternatives are ``bench.conformance.PluginContract`` and
``bench.conformance.PolicyContract``.
"""

from __future__ import annotations


import pytest

MARKER = "bench_conformance"
# The fixtures and the kit's base classes (by name: bench.conformance is not imported here).
FIXTURES = ("bench_conformance", "bench_policy_conformance")
CONTRACTS = ("PluginContract", "PolicyContract")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}: a collapse-bench plugin conformance check (deselect with -m 'not {MARKER}')")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests of PluginContract and PolicyContract subclasses and those using a fixture of
    the kit, so that ``-m 'not bench_conformance'`` skips them."""
    for item in items:
        cls = getattr(item, "cls", None)
        contract = cls is not None and any(
            c.__name__ in CONTRACTS and c.__module__ == "bench.conformance" for c in cls.__mro__)
        if contract or set(FIXTURES) & set(getattr(item, "fixturenames", ())):
            item.add_marker(MARKER)


@pytest.fixture
def bench_conformance(tmp_path_factory: pytest.TempPathFactory):
    """A callable ``check(plugin, preset="smoke", **options)`` that runs every conformance check
    (options as ``bench.conformance.check_plugin``) and fails the test listing every failed
    check; notes become ConformanceNote warnings. It returns the findings when all checks pass."""

    def check(plugin: str, preset: str = "smoke", **options):
        from bench.conformance import check_plugin

        return _checked(check_plugin, (plugin, preset), options, tmp_path_factory, plugin,
                        f"model bundle {plugin!r} (preset {preset!r})")

    return check


@pytest.fixture
def bench_policy_conformance(tmp_path_factory: pytest.TempPathFactory):
    """A callable ``check(policy, plugin="gaussian", preset="smoke", **options)`` that runs every
    policy check (options as ``bench.conformance.check_policy``) on the model bundle ``plugin``
    and fails the test listing every failed check; it returns the findings when all pass."""

    def check(policy: str, plugin: str | None = None, preset: str = "smoke", **options):
        from bench.conformance import POLICY_HOST, check_policy

        plugin = plugin or POLICY_HOST
        return _checked(check_policy, (policy, plugin, preset), options, tmp_path_factory, policy,
                        f"policy {policy!r} (on {plugin!r}, preset {preset!r})")

    return check


def _checked(run_checks, args, options, tmp_path_factory, who, what):
    """The findings of ``run_checks(*args, **options)``; a breach or a wrong argument fails the test."""
    from bench.conformance import fail_on_breaches
    from bench.errors import BenchError

    if options.get("workdir") is None:
        options["workdir"] = tmp_path_factory.mktemp("bench-conformance")
    try:
        findings, error = run_checks(*args, **options), None
    except BenchError as exc:  # the arguments are wrong: say it once, without a traceback
        findings, error = [], str(exc)
    if error is not None:
        pytest.fail(error, pytrace=False)
    return fail_on_breaches(findings, who, f"{what} breaks the plugin contract in {{checks}} check(s)")
