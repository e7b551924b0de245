"""collapse-bench's conformance kit against the kde plugin as installed (entry point ``kde``).

The kit runs the real harness on the smoke preset, cut to a few generations, and checks the plugin
contract (CONTRIBUTING.md): registration and presets, sample counts and kinds, determinism for a
seed, scores in nats per unit, metric directions, resume, and flat-array state. Two ways to use it:
a PluginContract subclass (one test per check) and the ``bench_conformance`` fixture.
"""

from bench.conformance import PluginContract


class TestKde(PluginContract):
    plugin = "kde"
    generations = 2


def test_kde_in_one_dimension_conforms(bench_conformance):
    """In 1-D the kit also integrates exp(loglik) on a grid: the KDE's density must have mass 1."""
    findings = bench_conformance("kde", generations=1, set={"dim": 1, "n": 60, "n_test": 60})
    density = [f.message for f in findings if f.check == "nll-units" and f.ok]
    assert density and "sums to 1" in density[0], density
