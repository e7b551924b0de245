"""The paper's reference marks: which runs they belong to, and what the presets declare."""

import math

import pytest

import bench
from bench.options import RunOptions
from bench.references import describe, for_row, for_spec


def refs(b, **args):
    return for_spec(b, RunOptions.parse(args).specs(b)[0])


def test_a_paper_preset_as_given_gets_its_references(bench_plugins):
    got = refs(bench_plugins, plugin="gmm", preset="paper")
    assert {(r.metric, r.generation) for r in got} == {("gmm-std", 0), ("gmm-std", 2050), ("gmm-l2", 2050)}
    vae = refs(bench_plugins, plugin="vae", preset="paper")
    assert [r.value for r in vae] == [0.674, 0.608, 0.527, 0.468, 0.433]  # PROTOCOLS.md section 3
    assert len(refs(bench_plugins, plugin="opt125m", preset="paper-b")) == 2


@pytest.mark.parametrize("args", [
    dict(plugin="gmm", preset="paper", set={"n_samples": 50}),      # another experiment
    dict(plugin="gmm", preset="paper", policy="mix:0.1"),
    dict(plugin="opt125m", preset="paper-b", policy="mix:0.2"),     # the preset keeps 10%
    dict(plugin="gmm", preset="smoke"),                             # no paper figure for smoke
    dict(plugin="hf-causal-lm", preset="paper"),                    # any model: no figures
])
def test_changed_experiments_get_no_references(bench_plugins, args):
    assert refs(bench_plugins, **args) == ()


def test_where_and_how_fast_do_not_matter(bench_plugins):
    assert len(refs(bench_plugins, plugin="opt125m", preset="paper", set={"device": "cpu"})) == 2


def test_a_model_that_is_not_installed_has_none(bench_plugins):
    assert for_spec(bench_plugins, {"plugin": "no-such-model", "preset": "paper"}) == ()


def test_rows_and_descriptions():
    std = bench.Reference("gmm-std", 0.9, generation=0, label="notebook")
    spread = bench.Reference("vae-latent-spread/all", 0.674, generation=0)
    assert for_row([std, spread], "gmm-std/1") == [std]
    assert for_row([std, spread], "vae-latent-spread/all") == [spread]
    assert for_row([std, spread], "vae-latent-spread/dim") == []
    assert describe(std) == "paper: 0.9 at generation 0 (notebook)"
    assert describe(bench.Reference("x", 54.0, generation=9, high=62.0)) == "paper: 54-62 at generation 9"


@pytest.mark.parametrize("value, high", [(math.nan, None), (1.0, 0.5), (math.inf, None)])
def test_a_reference_must_be_a_finite_value_or_range(value, high):
    with pytest.raises(ValueError):
        bench.Reference("m", value, high=high)
