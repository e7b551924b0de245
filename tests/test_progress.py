"""Where a long fit or draw is: the text, the terminal's sub-line, plain throttled lines for logs and
log.txt, the silent default of a request, the first-party components that report, and a CLI run."""

import io

import numpy as np
import pytest

import bench
from bench import progress as P
from bench import results as R
from bench.components import FitRequest, GenerateRequest, Samples, no_report
from tests import toy_plugins
from tests.helpers import bench_cli


class FakeTerminal(io.StringIO):
    """A stream that says it is a terminal (with no width: the bar falls back to 80 columns)."""

    def isatty(self):
        return True


class Clock:
    """A clock the test moves by hand: no sleeps, no timing."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


# -- the text -------------------------------------------------------------------------------------


def test_the_text_gives_count_percent_rate_and_time_left():
    # 680 steps left at 2.1 s each: 1,428 s = 0:23:48
    assert P.inner_text("fit", "step", 120, 800, 2.1) == "fit: step 120/800 (15%), 2.1 s/step, ETA 0:23:48"
    # fast units read as a rate per second; percentages round down (2/3 is 66%)
    assert P.inner_text("generate", "batch", 2, 3, 0.02) == "generate: batch 2/3 (66%), 50 batch/s, ETA 0:00:00"
    assert P.inner_text("fit", "step", 7, None, 0.5) == "fit: step 7, 2 step/s"
    assert P.inner_text("fit", "step", 0, 4, None) == "fit: step 0/4 (0%)"
    assert P.inner_text("fit", "step", 0, 0, None) == "fit: step 0/0"


def test_the_rate_counts_from_the_first_report_not_from_the_phase_start():
    clock, lines = Clock(), []
    report = P.InnerReport("fit", 3, log=lines.append, interval=30, clock=clock)
    clock.now += 500  # loading the model before the first step
    report("step", 0, 100)
    clock.now += 40  # 10 steps of 4 s
    report("step", 10, 100)
    assert lines == ["generation 3 fit: step 0/100 (0%)",  # 500 s after the start: a line
                     "generation 3 fit: step 10/100 (10%), 4 s/step, ETA 0:06:00"]


# -- plain lines: logs and log.txt ----------------------------------------------------------------


def test_plain_lines_come_at_most_every_interval_seconds_on_the_display_and_in_the_log():
    stream, clock, logged = io.StringIO(), Clock(), []
    progress = P.Progress("run-a", stream=stream)
    progress.start(5, 0)
    report = P.InnerReport("fit", 2, progress, logged.append, interval=30, clock=clock)
    for step in range(100):  # one step a second
        report("step", step, 100)
        clock.now += 1
    lines = [line for line in stream.getvalue().splitlines() if "fit:" in line]
    # nothing in the first 5 s (short fits print nothing), then one line each 30 s
    assert [line.split("fit: ")[1].split(",")[0] for line in lines] == ["step 5/100 (5%)", "step 35/100 (35%)",
                                                                       "step 65/100 (65%)", "step 95/100 (95%)"]
    assert lines[0] == "run-a: generation 2 fit: step 5/100 (5%), 1 s/step, ETA 0:01:35"
    assert logged == [line.removeprefix("run-a: ") for line in lines]
    assert "\r" not in stream.getvalue()


def test_without_a_display_the_log_still_gets_its_lines():
    clock, logged = Clock(), []
    report = P.reporter("generate", 4, None, logged.append, clock=clock)
    report("batch", 0, 8)
    clock.now += 30  # INNER_INTERVAL
    report("batch", 5, 8)
    assert logged == ["generation 4 generate: batch 5/8 (62%), 6 s/batch, ETA 0:00:18"]


# -- the terminal ---------------------------------------------------------------------------------


def test_on_a_terminal_the_sub_line_shows_under_the_bar_and_goes_with_the_generation():
    terminal, clock, logged = FakeTerminal(), Clock(), []
    progress = P.Progress("run-a", stream=terminal)
    progress.start(3, 0)
    report = P.InnerReport("fit", 1, progress, logged.append, interval=30, clock=clock)
    report("step", 0, 4)
    clock.now += 0.05  # sooner than the redraw interval: not drawn
    report("step", 1, 4)
    clock.now += 0.2  # TTY_INTERVAL: 0.25 s for 2 steps
    report("step", 2, 4)
    drawn = terminal.getvalue()
    assert "  fit: step 0/4 (0%)" in drawn
    assert "step 1/4" not in drawn
    assert "  fit: step 2/4 (50%), 8 step/s, ETA 0:00:00" in drawn
    assert progress.sub is not None
    progress.update(1)  # generation 0 is done: its fit's line is wiped
    assert progress.sub is None
    wiped = terminal.getvalue()[len(drawn):]
    assert "fit:" not in wiped and wiped.startswith("\n\r  ")  # the line below the bar, blanked
    clock.now += 0.5
    report("step", 3, 4)  # a new sub-line
    assert progress.sub is not None
    progress.close()
    assert progress.sub is None and progress.bar is None
    assert logged == []  # 0.75 s in all: too short for a log line


def test_a_report_before_the_bar_starts_draws_nothing():
    terminal = FakeTerminal()
    progress = P.Progress("run-a", stream=terminal)
    P.InnerReport("fit", 0, progress, clock=Clock())("step", 0, 4)
    assert terminal.getvalue() == "" and progress.sub is None


def test_chains_of_a_group_report_through_the_group_display(tmp_path, capsys):
    from types import SimpleNamespace

    specs = [SimpleNamespace(run_id=f"r{i}", folder_name=f"run-{i}", generations=2) for i in range(2)]
    group = P.GroupProgress("toy x2", specs, tmp_path)
    member = group.member(specs[1])
    assert member.tty is False  # pytest's stderr is no terminal
    P.InnerReport("fit", 1, member, interval=0, clock=Clock())("step", 3, 6)
    assert "toy x2: generation 1 fit: step 3/6 (50%)" in capsys.readouterr().err


# -- the requests' default ------------------------------------------------------------------------


def test_requests_report_nowhere_by_default_and_take_a_reporter():
    data = Samples("vectors", np.zeros((3, 1)))
    fit = FitRequest(data, None, "pretrained", None, {}, np.random.default_rng(0), 0)
    draw = GenerateRequest({}, 3, None, {}, np.random.default_rng(0), 0)
    assert fit.report is no_report and draw.report is no_report
    assert fit.report("step", 1, 2) is None and no_report("batch", 0, None) is None
    calls = []
    fit = FitRequest(data, None, "pretrained", None, {}, np.random.default_rng(0), 0,
                     report=lambda *args: calls.append(args))
    fit.report("step", 1, 2)
    assert calls == [("step", 1, 2)]


# -- first-party components -----------------------------------------------------------------------


def _recorder():
    calls = []
    return calls, lambda what, done, total: calls.append((what, done, total))


def test_the_vae_reports_every_training_step_and_each_batch_of_its_draw():
    pytest.importorskip("torch")
    from collapse_bench_plugins import vae

    params = {**vae.PARAMS, "channels": [4, 8], "latent_dim": 4, "epochs": 2, "batch_size": 4, "threads": 1,
              "device": "cpu"}
    x = np.random.default_rng(0).random((10, 8, 8)).astype(np.float32)
    calls, report = _recorder()
    state = vae.fit(FitRequest(Samples("images", x), None, "pretrained", None, params, np.random.default_rng(0), 0,
                               report=report))
    assert calls == [("step", k, 6) for k in range(6)]  # 2 epochs of ceil(10 / 4) = 3 steps
    calls.clear()
    n = 2 * vae._EVAL_BATCH + 1
    vae.generate(GenerateRequest(state, n, None, params, np.random.default_rng(1), 0, report=report))
    assert calls == [("batch", k, 3) for k in range(3)]


def test_the_language_model_reports_every_training_step_and_each_generation_batch(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from collapse_bench_plugins import hf_model as H
    from tests.helpers import save_tiny_opt

    folder = save_tiny_opt(tmp_path / "tiny-opt", 20)
    params = {**H.MODEL_PARAMS, "model": str(folder), "revision": None, "tokenizer": None, "device": "cpu",
              "dtype": "fp32", "batch_size": 4, "eval_batch_size": 3, "epochs": 2, "new_tokens": 2,
              "gen_batch_size": 2, "num_beams": 1}
    blocks = np.random.default_rng(0).integers(4, 24, size=(6, 8)).astype(np.int64)
    calls, report = _recorder()
    state = H.fit(FitRequest(Samples("tokens", blocks), None, "pretrained", None, params,
                             np.random.default_rng(0), 0, report=report))
    assert calls == [("step", k, 4) for k in range(4)]  # 2 epochs of ceil(6 / 4) = 2 steps
    calls.clear()
    H.generate(GenerateRequest(state, 5, Samples("tokens", blocks), params, np.random.default_rng(1), 0,
                               report=report))
    assert calls == [("batch", k, 3) for k in range(3)]  # ceil(5 / 2) batches


# -- through the command line ---------------------------------------------------------------------


def _steppy_fit(request):
    for step in range(3):
        request.report("step", step, 3)
    return toy_plugins._fit(request)


def _steppy_generate(request):
    request.report("batch", 1, 2)
    return toy_plugins._generate(request)


class Steppy:
    """The toy model with a trainer and a generator that report where they are."""

    __name__ = "steppy"

    @bench.hookimpl
    def bench_register_models(self, register):
        register(bench.ModelBundle(
            name="steppy", kind="vectors", load_real=toy_plugins._load_real, trainer="steppy-fit",
            generator="steppy-sample", scorer="steppy-loglik", metrics=("perplexity-drift",),
            params={"n": 20, "fail_at": -1}, presets={"smoke": {"generations": 2}}))

    @bench.hookimpl
    def bench_register_trainers(self, register):
        register(bench.Trainer("steppy-fit", _steppy_fit))

    @bench.hookimpl
    def bench_register_generators(self, register):
        register(bench.Generator("steppy-sample", _steppy_generate))

    @bench.hookimpl
    def bench_register_scorers(self, register):
        register(bench.Scorer("steppy-loglik", toy_plugins._score))


def test_a_run_shows_its_trainers_steps_and_its_generators_batches(tmp_path, capsys, monkeypatch):
    from bench import plugins

    real_bench = plugins.Bench
    monkeypatch.setattr(plugins, "Bench", lambda *a, **k: real_bench(*a, extra_plugins=[Steppy()], **k))
    monkeypatch.setattr(P, "INNER_INTERVAL", 0.0)  # a line for every report: no waiting in a test
    code, out, err = bench_cli(capsys, "run", "--plugin", "steppy", "--preset", "smoke", "--out", tmp_path)
    assert code == 0, err
    log = next(tmp_path.glob(f"steppy*/{R.LOG_FILE}")).read_text()
    for k in range(3):
        for text in (f"generation {k} fit: step 2/3 (66%)", f"generation {k} generate: batch 1/2 (50%)"):
            assert text in err, err
            assert text in log, log
