"""What `bench run` says: a start line at once with the resolved choices and their defaults, the
pace and time left of its progress lines, and an end summary of each run's main metrics (new,
resumed, extended or already complete), beside the paper's figures where a preset reproduces them."""

import io

import pytest

import bench.api as cb
from bench import progress as P
from bench import results as R
from bench import summary as S
from bench.errors import BenchError
from tests.helpers import bench_cli


class Clock:
    """A clock the test moves by hand: no sleeps, no timing."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


# -- the start line -------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_start_line_comes_before_the_runs_and_marks_the_defaults(capsys, tmp_path, monkeypatch):
    def no_run(*args, **kwargs):
        raise BenchError("stopped before running")

    monkeypatch.setattr(cb, "execute", no_run)
    code, out, err = bench_cli(capsys, "run", "--plugin", "opt125m", "--out", tmp_path)
    assert code != 0 and "stopped before running" in err
    # printed before anything runs: a bare --plugin opt125m says it means the smoke preset
    assert out.splitlines() == [(f"Running opt125m: preset smoke (default), 5 generations (default), policy replace "
                                 f"(default), seed 0 (default); run folders in {tmp_path}/")]
    code, out, err = bench_cli(capsys, "run", "--seeds", "0-4", "--preset", "paper", "--policy", "mix:0.1",
                               "--generations", "3", "--set", "n_samples=50")
    assert out.splitlines() == [("Running gmm (default): preset paper, 3 generations, policy mix:0.1, "
                                 "set n_samples=50, seeds 0-4 (5 runs); run folders in results/ (default)")]


def test_a_config_file_choice_is_not_a_default(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(cb, "execute", lambda *a, **k: (_ for _ in ()).throw(BenchError("no run")))
    config = tmp_path / "spec.yaml"
    config.write_text("plugin: gaussian\nseed: 3\ngenerations: 2\n")
    _, out, _ = bench_cli(capsys, "run", "--config", config, "--out", tmp_path)
    assert out.splitlines()[0] == (f"Running gaussian: preset smoke (default), 2 generations, policy replace "
                                   f"(default), seed 3; run folders in {tmp_path}/")


def test_seeds_read_short():
    assert S.seeds_text([4]) == "seed 4"
    assert S.seeds_text([0, 1, 2]) == "seeds 0-2"
    assert S.seeds_text([0, 2, 7]) == "seeds 0, 2, 7"
    assert S.seeds_text([1, 3, 5, 7, 9, 11]) == "seeds 1, 3, 5, ... (6 in all)"


# -- the pace and the time left -------------------------------------------------------------------


def test_a_slow_pace_reads_as_time_per_generation():
    assert P.pace(100, 3.2) == "31.2 gen/s"
    assert P.pace(1, 1.0) == "1 gen/s"
    assert P.pace(1, 16.0) == "16 s/gen"
    assert P.pace(2, 252.0) == "2.1 min/gen"  # 126 s each; not "0.00794 gen/s"
    assert P.pace(1, 5400.0) == "1.5 h/gen"
    assert P.pace(0, 10.0) == "n/a"


def test_the_time_left_does_not_extrapolate_from_generation_0():
    stream, clock = io.StringIO(), Clock()
    progress = P.Progress("run-a", stream=stream, interval=0, clock=clock)
    progress.start(11, 0)
    clock.now = 400.0  # generation 0: loading the data, fitting on real data
    progress.update(1)
    clock.now = 405.0  # generations 1 and 2: 5 s each
    progress.update(2)
    clock.now = 410.0
    progress.update(3)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "run-a: starting at generation 0"
    assert lines[1] == "run-a: generation 0/10, elapsed 0:06:40, ETA after generation 1"
    assert lines[2] == "run-a: generation 1/10, 5 s/gen, elapsed 0:06:45, ETA 0:00:45"
    # 8 generations left at 5 s each (from generation 0's pace it would say 0:26:40)
    assert lines[3] == "run-a: generation 2/10, 5 s/gen, elapsed 0:06:50, ETA 0:00:40"


def test_a_resumed_run_times_from_after_its_first_generation():
    stream, clock = io.StringIO(), Clock()
    progress = P.Progress("run-a", stream=stream, interval=0, clock=clock)
    progress.start(11, 4)
    clock.now = 100.0
    progress.update(5)
    clock.now = 102.0
    progress.update(6)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "run-a: resuming after generation 3"
    assert lines[1] == "run-a: generation 4/10, elapsed 0:01:40, ETA after generation 5"
    assert lines[2] == "run-a: generation 5/10, 2 s/gen, elapsed 0:01:42, ETA 0:00:10"


def test_a_long_fit_shows_in_a_log_after_seconds_not_half_a_minute():
    clock, logged = Clock(), []
    report = P.reporter("fit", 0, None, logged.append, clock=clock)
    for step in range(8):
        report("step", step, 100)
        clock.now += 1
    assert logged == ["generation 0 fit: step 5/100 (5%), 1 s/step, ETA 0:01:35"]


# -- the end summary ------------------------------------------------------------------------------


def summary_of(out: str) -> list[str]:
    """The summary lines of a `bench run` stdout: after the start line, up to `Results:`."""
    lines = out.splitlines()
    return lines[1:next(i for i, line in enumerate(lines) if line.startswith("Results:"))]


@pytest.mark.slow
def test_every_run_ends_with_its_main_metrics_and_how_it_went(capsys, tmp_path):
    args = ["run", "--plugin", "gaussian", "--out", tmp_path, "--generations"]
    code, out, err = bench_cli(capsys, *args, "2")
    assert code == 0, err
    name = next(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    values = cb.metrics(tmp_path).set_index(["generation", "metric"]).value
    lines = summary_of(out)
    assert lines[0] == f"{name} (new run): generation 0 -> 2"
    # the headline metric first, then the leaderboard metrics; generation 0 -> the last
    assert [line.split()[0] for line in lines[1:]] == ["gaussian-w2sq", "gaussian-var", "logdet-diff"]
    assert lines[2].split() == ["gaussian-var", S.number(values[0, "gaussian-var"]), "->",
                                S.number(values[2, "gaussian-var"])]
    tail = out.splitlines()[-2:]
    assert tail == [(f"Next: bench report {tmp_path / name}  (HTML pages under reports/: the spec, metric tables, "
                     "plots, samples)"),
                    f"      bench plot {tmp_path / name}    (PNG figures under plots/: each metric over generations)"]
    assert "Read them with" not in out

    code, out, err = bench_cli(capsys, *args, "2")
    assert summary_of(out)[0] == f"{name} (already complete: nothing to do): generation 0 -> 2"
    code, out, err = bench_cli(capsys, *args, "4")
    assert summary_of(out)[0] == f"{name} (extended from generation 2): generation 0 -> 4"

    # a run stopped after generation 0: the same command resumes it
    run_json = R.read_json(tmp_path / name / "run.json")
    for unit in (tmp_path / name / "gens").iterdir():
        if unit.name != R.gen_name(0):
            import shutil

            shutil.rmtree(unit)
    R.write_json(tmp_path / name / "run.json", {**run_json, "status": "interrupted", "generations_done": 1})
    code, out, err = bench_cli(capsys, *args, "4")
    assert code == 0, err
    assert summary_of(out)[0] == f"{name} (resumed after generation 0): generation 0 -> 4"


@pytest.mark.slow
def test_past_five_runs_the_summary_gives_the_mean_over_seeds(capsys, tmp_path):
    code, out, err = bench_cli(capsys, "run", "--plugin", "gaussian", "--seeds", "0-5", "--generations", "1",
                               "--out", tmp_path)
    assert code == 0, err
    lines = summary_of(out)
    assert lines[0] == "gaussian smoke replace (6 runs, seeds 0-5, mean over seeds, 6 new): generation 0 -> 1"
    values = cb.metrics(tmp_path)
    w2 = values[values.metric == "gaussian-w2sq"].groupby("generation").value.mean()
    assert lines[1].split() == ["gaussian-w2sq", S.number(w2[0]), "->", S.number(w2[1])]
    assert out.splitlines()[-2].startswith(f"Next: bench report {tmp_path} ")


@pytest.mark.slow
def test_the_paper_figures_stand_beside_the_metrics_of_a_paper_preset(capsys, tmp_path):
    code, out, err = bench_cli(capsys, "run", "--plugin", "gmm", "--preset", "paper", "--generations", "1",
                               "--out", tmp_path)
    assert code == 0, err
    rows = {line.split()[0]: line for line in summary_of(out)[1:]}
    assert list(rows) == ["cov-trace-ratio", "gmm-std/0", "gmm-std/1", "gmm-l2"]
    assert rows["gmm-std/0"].endswith("(paper: 0.9 at generation 0, 0.01 at generation 2050)")
    assert rows["gmm-l2"].endswith("(paper: 536 at generation 2050)")
    assert "paper" not in rows["cov-trace-ratio"]
    # another experiment than the paper's (another policy): no paper figures
    code, out, err = bench_cli(capsys, "run", "--plugin", "gmm", "--preset", "paper", "--generations", "1",
                               "--policy", "mix:0.5", "--out", tmp_path)
    assert code == 0, err
    assert "paper:" not in "\n".join(summary_of(out))
    # the same summary from Python, for the run folders
    assert "(paper: 536 at generation 2050)" in cb.summary(tmp_path)


def test_numbers_read_short():
    assert [S.number(v) for v in (0.0, 0.89412, 262.3, 12345.6, 4e307, 0.00012, float("nan"), float("inf"))] == \
        ["0", "0.894", "262", "12346", "4e+307", "1.20e-04", "n/a", "inf"]


def test_what_happened_to_a_run_folder():
    assert S.what_happened(5, S.OnDisk()) == ("new", "new run")
    assert S.what_happened(5, S.OnDisk(6, 5, True)) == ("already complete", "already complete: nothing to do")
    assert S.what_happened(5, S.OnDisk(3, 5, False)) == ("resumed", "resumed after generation 2")
    assert S.what_happened(5, S.OnDisk(4, 3, True)) == ("extended", "extended from generation 3")
    assert S.what_happened(2, S.OnDisk(6, 5, True))[1] == ("holds generations 0..5, more than the 2 asked for: "
                                                          "nothing to do")
