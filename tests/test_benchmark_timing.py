"""benchmarks/_timing.py: the interleaving order and the min/median ratio maths, on fake clocks."""

import importlib.util
import io
import os
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "_timing.py"
_spec = importlib.util.spec_from_file_location("bench_timing_helper", PATH)
T = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(T)


class FakeClocks:
    """Each side advances the clocks by the durations it is given, one per call."""

    def __init__(self):
        self.wall_now = self.cpu_now = 0.0

    def clocks(self):
        return T.Clocks(lambda: self.wall_now, lambda: self.cpu_now)

    def side(self, name, durations, log):
        calls = iter(durations)

        def call():
            wall, cpu = next(calls)
            self.wall_now += wall
            self.cpu_now += cpu
            log.append(name)
            return name.upper()
        return call


def test_sides_alternate_their_order_each_repeat():
    fake, log = FakeClocks(), []
    sides = {n: fake.side(n, [(1, 1)] * 4, log) for n in ("a", "b", "c")}
    T.interleave(sides, 4, clocks=fake.clocks())
    assert log == list("abc" "cba" "abc" "cba")


def test_each_call_is_timed_on_its_own_and_results_are_handed_back():
    fake, log, seen = FakeClocks(), [], []
    sides = {"bare": fake.side("bare", [(2.0, 1.0), (4.0, 3.0), (3.0, 2.0)], log),
             "harness": fake.side("harness", [(5.0, 2.5), (6.0, 4.0), (9.0, 3.0)], log)}
    results = T.interleave(sides, 3, clocks=fake.clocks(), on_result=lambda *a: seen.append(a))
    assert results["bare"] == [(2.0, 1.0), (4.0, 3.0), (3.0, 2.0)]
    assert results["harness"] == [(5.0, 2.5), (6.0, 4.0), (9.0, 3.0)]
    assert seen == [("bare", 0, "BARE"), ("harness", 0, "HARNESS"), ("harness", 1, "HARNESS"),
                    ("bare", 1, "BARE"), ("bare", 2, "BARE"), ("harness", 2, "HARNESS")]
    assert results.cores == os.cpu_count()


def test_ratios_are_min_over_min_and_median_over_median():
    results = {"bare": [T.Timing(2.0, 1.0), T.Timing(4.0, 3.0), T.Timing(3.0, 2.0)],
               "harness": [T.Timing(5.0, 2.5), T.Timing(6.0, 4.0), T.Timing(9.0, 3.0)]}
    s = T.summarise(results, "bare")
    assert s["bare"].wall == (2.0, 3.0) and s["bare"].cpu == (1.0, 2.0)
    assert s["bare"].wall_ratio == (1.0, 1.0) and s["bare"].cpu_ratio == (1.0, 1.0)
    assert s["harness"].wall == (5.0, 6.0) and s["harness"].cpu == (2.5, 3.0)
    assert s["harness"].wall_ratio == pytest.approx((2.5, 2.0))   # 5/2, 6/3
    assert s["harness"].cpu_ratio == pytest.approx((2.5, 1.5))    # 2.5/1, 3/2
    # an even count's median is the mean of the middle two
    assert T.summarise({"x": [T.Timing(1, 1), T.Timing(2, 5), T.Timing(4, 7), T.Timing(9, 9)]}, "x")["x"].cpu == (1, 6)


def test_report_prints_every_side_the_baseline_and_the_machine():
    results = T.Results({"bare": [T.Timing(2.0, 1.0)], "harness": [T.Timing(5.0, 1.5)]})
    results.cores, results.load_start, results.load_end = 2, 0.5, 1.25
    buf = io.StringIO()
    figures = T.report(results, "bare", out=lambda line: print(line, file=buf))
    text = buf.getvalue()
    assert "baseline: bare" in text
    assert "harness" in text and "1.500x" in text and "2.500x" in text
    assert "2 cores, load average 0.50 at the start, 1.25 at the end" in text
    assert figures["harness"].cpu_ratio == (1.5, 1.5)


def test_a_baseline_that_is_no_side_and_no_repeat_are_refused():
    with pytest.raises(ValueError, match="baseline 'nope' is not a side"):
        T.summarise({"bare": [T.Timing(1, 1)]}, "nope")
    with pytest.raises(ValueError, match="repeats must be at least 1"):
        T.interleave({"a": lambda: None}, 0)


def test_the_system_cpu_clock_adds_the_children_it_waited_for(monkeypatch):
    class Usage:
        ru_utime, ru_stime = 3.0, 0.5

    monkeypatch.setattr(T.resource, "getrusage", lambda who: Usage if who == T.resource.RUSAGE_CHILDREN else None)
    monkeypatch.setattr(T.time, "process_time", lambda: 10.0)
    assert T.cpu_seconds() == 13.5
