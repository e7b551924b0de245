"""The plots' drawing decisions, checked on the matplotlib figures (not on pixels): the y scale,
markers, seed bands of non-negative metrics, the paper's reference marks, Figure 1's ticks and
its note on decoding."""

import itertools
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import bench
import bench.api as cb
from bench import plots as P
from bench import report as RP
from bench.references import describe
from tests.test_report import DomText

STD0 = bench.Reference("gmm-std", 0.9, generation=0, label="start")
STD_LATE = bench.Reference("gmm-std", 0.01, generation=2050, label="after 2050 refits")
LEVEL = bench.Reference("gmm-std", 0.5, label="a level")
RANGE = bench.Reference("gmm-std", 0.6, generation=2, high=0.8, label="a range")
OTHER = bench.Reference("gmm-l2", 536.0, generation=1)


def fake_run(values, metric="m", seed=0, direction="lower", references=(), params=None, label="replace"):
    """A RunData held in memory: ``values[k]`` is the metric's value at generation k."""
    df = pd.DataFrame({"generation": np.arange(len(values)), "metric": metric,
                       "value": np.asarray(values, dtype=np.float64), "direction": direction,
                       "target": np.nan})
    spec = {"plugin": "fake", "preset": "p", "policy": "replace", "seed": seed, "params": params or {}}
    run = P.RunData(Path(f"/nowhere/run-s{seed}"), {"spec": spec, "identity": {"policy": "replace"}}, df,
                    "track", "fake/p", "entry", label=label)
    run.references = tuple(references)
    return run


def one_axis(fig):
    (ax,) = fig.axes
    return ax


def legend_labels(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


# -- the y scale --------------------------------------------------------------------------------


def test_values_over_many_orders_of_magnitude_get_a_log_axis():
    # a GMM's test perplexity: 4 at the start, 4e307 (finite) once the fit has collapsed
    fig = P.draw_metric([fake_run([4.2, 40.0, 1e20, 4e307])], "m")
    huge = one_axis(fig)
    assert huge.get_yscale() == "log" and "log scale" in huge.get_ylabel()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow on the way to the PNG
        fig.canvas.draw()
    bottom, top = huge.get_ylim()
    assert 1 < bottom < 4.2 and 4e307 < top < math.inf
    assert one_axis(P.draw_metric([fake_run([0.9, 0.5, 0.2])], "m")).get_yscale() == "linear"
    # a zero cannot sit on a log axis: linear
    assert one_axis(P.draw_metric([fake_run([0.0, 1.0, 500.0])], "m")).get_yscale() == "linear"
    assert P.wants_log([4.0, math.inf, 300.0]) and not P.wants_log([4.0, 100.0]) and not P.wants_log([])
    assert not P.wants_log([-1.0, 1e9]) and not P.wants_log([math.nan])


# -- markers ------------------------------------------------------------------------------------


def test_markers_only_on_short_runs():
    short = one_axis(P.draw_metric([fake_run(np.linspace(1, 2, 10))], "m"))
    assert short.lines[0].get_marker() == "o"
    long = one_axis(P.draw_metric([fake_run(np.linspace(1, 2, 2051))], "m"))
    assert long.lines[0].get_marker() in ("None", "", None) and len(long.lines[0].get_xdata()) == 2051


# -- seed bands ---------------------------------------------------------------------------------


def _band_minimum(ax):
    (band,) = ax.collections
    return min(float(v[:, 1].min()) for v in (p.vertices for p in band.get_paths()))


def test_bands_of_a_metric_never_negative_stop_at_zero():
    seeds = [[0.0, 0.0], [0.0, 0.0], [0.0, 3.0]]  # generation 1: mean 1, t band 1 -/+ 4.30 * sqrt(3)/sqrt(3)
    runs = [fake_run(v, seed=s) for s, v in enumerate(seeds)]
    half = stats.t.ppf(0.975, 2) * np.std([0.0, 0.0, 3.0], ddof=1) / math.sqrt(3)
    assert 1.0 - half < 0  # the raw interval reaches below 0
    assert P.never_negative(runs, "m")
    ax = one_axis(P.draw_metric(runs, "m"))
    assert _band_minimum(ax) == 0.0
    top = max(float(p.vertices[:, 1].max()) for p in ax.collections[0].get_paths())
    assert top == pytest.approx(1.0 + half)  # the upper bound is the t interval's
    # a metric that goes negative keeps its symmetric band
    signed = [fake_run([v0, v1 - 0.5], seed=s) for s, (v0, v1) in enumerate(seeds)]
    assert not P.never_negative(signed, "m")
    assert _band_minimum(one_axis(P.draw_metric(signed, "m"))) == pytest.approx(0.5 - half)


def test_floor_band_by_hand():
    band = P.seed_band([0.0, 0.0, 3.0])
    cut = P.floor_band(band)
    assert (cut.mean, cut.lo, cut.hi, cut.n) == (band.mean, 0.0, band.hi, 3)
    assert P.floor_band(P.seed_band([2.0, 2.1, 2.2])) == P.seed_band([2.0, 2.1, 2.2])  # above 0: unchanged
    assert math.isnan(P.floor_band(P.seed_band([5.0])).lo)  # one seed: still no band


def test_track_table_bands_stop_at_zero_too():
    runs = [fake_run(v, seed=s) for s, v in enumerate([[0.0, 0.0], [0.0, 0.0], [0.0, 3.0]])]
    table = RP._track_metric_table(runs, None)
    (row,) = table["rows"]
    assert row[5] == f"1 [0, {P.fmt(P.seed_band([0.0, 0.0, 3.0]).hi)}]"
    assert RP.PAPER_COLUMN not in table["header"]


# -- the paper's reference marks ----------------------------------------------------------------


def test_reference_marks_and_their_labels():
    run = fake_run([0.95, 0.9, 0.8, 0.7], metric="gmm-std/0", direction="higher",
                   references=(STD0, STD_LATE, LEVEL, RANGE, OTHER))
    ax = one_axis(P.draw_metric([run], "gmm-std/0"))
    labels = legend_labels(ax)
    # every reference of this row in the legend, as bench.references.describe words it; gmm-l2's not
    assert labels[0] == "replace (n=1)"
    assert labels[1:] == [describe(STD0), f"{describe(STD_LATE)}; not reached here, not drawn",
                          describe(LEVEL), describe(RANGE)]
    assert describe(STD0).startswith("paper: ")
    by_label = {line.get_label(): line for line in ax.lines}
    star = by_label[describe(STD0)]
    assert (list(star.get_xdata()), list(star.get_ydata()), star.get_marker()) == ([0], [0.9], "*")
    late = by_label[f"{describe(STD_LATE)}; not reached here, not drawn"]
    assert len(late.get_xdata()) == 0  # generation 2050 lies beyond the plotted 0..3: nothing drawn
    level = by_label[describe(LEVEL)]
    assert list(level.get_ydata()) == [0.5, 0.5] and level.get_linestyle() == "--"
    (bar,) = [c for c in ax.containers if c.get_label() == describe(RANGE)]
    (segments,) = bar.lines[2]
    ((x0, y0), (x1, y1)) = segments.get_segments()[0]
    assert (x0, x1) == (2, 2) and sorted([y0, y1]) == pytest.approx([0.6, 0.8])
    # a run of another experiment: no marks, the plain legend
    plain = one_axis(P.draw_metric([fake_run([0.95, 0.9], metric="gmm-std/0")], "gmm-std/0"))
    assert legend_labels(plain) == ["replace (n=1)"]


@pytest.mark.slow
def test_a_paper_preset_run_gets_the_papers_figures(tmp_path, bench_plugins):
    cb.run("gmm", "paper", generations=3, out=tmp_path / "paper", bench=bench_plugins)
    cb.run("gmm", "paper", generations=3, out=tmp_path / "other", set={"n_samples": 50}, bench=bench_plugins)
    (paper,) = P.load_runs([tmp_path / "paper"], bench_plugins)
    assert {(r.metric, r.generation) for r in paper.references} == {("gmm-std", 0), ("gmm-std", 2050),
                                                                     ("gmm-l2", 2050)}
    labels = legend_labels(one_axis(P.draw_metric([paper], "gmm-std/0")))
    assert "paper: 0.9 at generation 0 (released notebook, start)" in labels
    assert any(label.startswith("paper: 0.01 at generation 2050") and "not drawn" in label for label in labels)
    (page,) = RP.report([paper.path], tmp_path / "rep", metrics=["gmm-std"], bench=bench_plugins)
    text = DomText(page.read_text()).text
    assert "paper's figures" in text and "paper: 0.9 at generation 0 (released notebook, start)" in text
    # the paper's figure sits in the row of its metric, beside the run's own values
    row = text[text.index("gmm-std/0 higher"):text.index("gmm-std/1 higher")]
    assert "paper: 0.9 at generation 0" in row
    # another experiment (n_samples changed): no marks, no column
    (other,) = P.load_runs([tmp_path / "other"], bench_plugins)
    assert other.references == ()
    (page,) = RP.report([other.path], tmp_path / "rep2", metrics=["gmm-std"], bench=bench_plugins)
    assert "paper's figures" not in page.read_text()


# -- Figure 1 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("lo, hi", [(15.0, 900.0), (20.0, 300.0), (49.0, 77.0), (1.0, 1e6), (3.0, 3.5)])
def test_figure1_log_ticks_are_few_and_do_not_overlap(lo, hi):
    fig, axes = P._figure(5.0, 3.8)
    ax = axes[0, 0]
    ax.stairs([1.0, 2.0, 1.0], [lo, (lo * hi) ** 0.5, hi * 0.95, hi])
    ax.set_xscale("log")
    P._log_ticks(ax, lo, hi)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    shown = [t for t in ax.get_xticklabels(which="both")
             if t.get_visible() and t.get_text() and lo <= t.get_position()[0] <= hi]
    assert 3 <= len(shown) <= P.LOG_TICKS
    assert not [t for t in ax.get_xticklabels(which="minor") if t.get_text()]
    boxes = sorted((t.get_window_extent(renderer) for t in shown), key=lambda b: b.x0)
    assert all(b.x0 > a.x1 for a, b in itertools.pairwise(boxes)), [t.get_text() for t in shown]


def test_figure1_note_follows_the_decoding():
    sampled = fake_run([1.0], params={"do_sample": True, "num_beams": 1, "temperature": 1.0})
    beam = fake_run([1.0], params={"do_sample": False, "num_beams": 5})
    assert P.decoding(sampled.spec) == "sampling" and P.decoding(beam.spec) == "beam"
    assert P.decoding(fake_run([1.0]).spec) is None
    assert P.figure1_note([sampled]).startswith("Decoded by sampling, unlike the paper")
    assert "higher perplexity" in P.figure1_note([sampled])
    assert P.figure1_note([beam]).startswith("Decoded by beam search, as in the paper")
    assert "low perplexity" in P.figure1_note([beam])
    assert P.figure1_note([fake_run([1.0])]).startswith("Beam search (the paper's decoding) piles")
    beam.entry, beam.label = "other", "beam5"
    mixed = P.figure1_note([sampled, beam])
    assert mixed.startswith("replace: decoded by sampling") and "; beam5: decoded by beam search" in mixed


def test_rows_with_no_finite_value_are_not_drawn_unless_asked(tmp_path):
    """A metric the data cannot give (NaN in every run, as the true-* text metrics on real data)
    gets no empty plot or table row by default; asked for by name it is still drawn."""
    import types

    table = pd.DataFrame({"metric": ["a", "a", "true-x", "true-x", "b"],
                          "value": [1.0, 2.0, np.nan, None, np.inf]})
    run = types.SimpleNamespace(metrics=table)
    assert P.metric_names([run]) == ["a"]
    assert P.metric_names([run], ["true-x"]) == ["true-x"]
