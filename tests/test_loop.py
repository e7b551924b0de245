"""The recursive loop: row semantics, policies, determinism, resume, extension, sharing, locking."""

import dataclasses
import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pandas as pd
import pytest

import bench
import bench.api as cb
from bench import results as R
from bench import runfolder as RF
from bench.errors import BenchError, RunLocked
from bench.loop import FolderLock, Run
from bench.plugins import Bench, PluginError
from bench.spec import resolve
from tests import toy_plugins
from tests.helpers import generation_frame


@pytest.fixture
def toy_bench():
    return Bench(extra_plugins=[toy_plugins.Toy()])


def run_toy(b, out, **kw):
    kw.setdefault("preset", "smoke")
    return cb.run("toy", out=out, bench=b, **kw)


def values(runs, metric):
    df = cb.metrics(runs)
    df = df[df.metric == metric].sort_values("generation")
    return df.value.to_numpy()


@pytest.mark.parametrize(
    "policy, sizes",
    [
        ("replace", [40, 40, 40, 40, 40]),
        ("mix:0.25", [40, 40, 40, 40, 40]),
        ("accumulate", [40, 80, 120, 160, 200]),
        ("accumulate-subsample", [40, 40, 40, 40, 40]),
        ("accumulate-subsample:100", [40, 80, 100, 100, 100]),
    ],
)
def test_row_k_is_trained_on_the_policy_data(toy_bench, tmp_path, policy, sizes):
    runs = run_toy(toy_bench, tmp_path, policy=policy)
    assert runs[0].status == "complete"
    assert values(runs, "toy-train-size").tolist() == sizes


def test_mix_keeps_a_fresh_share_of_real_data(toy_bench, tmp_path):
    from collapse_bench_plugins import policies

    spec = resolve(toy_bench, "toy", "smoke", policy="mix:0.25")
    run = Run(toy_bench, spec, tmp_path)
    run.execute()
    real = toy_bench.models.get("toy").load_real(bench.RealRequest(spec.params, spec.seed))
    synthetic = [RF.generation_samples(run.path, i)[0] for i in range(2)]
    real_rows = {tuple(r) for r in real.train.data}
    picks = []
    for seed in range(3):
        ctx = cb_policy_context(real, synthetic, {"p": 0.25}, seed)
        d = policies.mix(ctx)
        assert len(d) == 40
        from_real = [tuple(r) for r in d.data if tuple(r) in real_rows]
        assert len(from_real) == 10  # round(0.25 * 40)
        picks.append(frozenset(from_real))
    assert len(set(picks)) > 1  # a fresh random share each time, not a fixed one


def cb_policy_context(real, synthetic, params, seed):
    from bench.components import PolicyContext

    return PolicyContext(generation=len(synthetic), real=real, synthetic=synthetic, params=params,
                         rng=np.random.default_rng(seed), score=None)


def test_a_seed_is_deterministic_and_seeds_differ(toy_bench, tmp_path):
    a = run_toy(toy_bench, tmp_path / "a", seeds="0-1")
    b = run_toy(toy_bench, tmp_path / "b", seeds="0-1")
    ma, mb = cb.metrics(a), cb.metrics(b)
    pd.testing.assert_frame_equal(ma, mb)
    drift = ma[ma.metric == "perplexity-drift"]
    assert not np.array_equal(drift[drift.seed == 0].value.to_numpy(), drift[drift.seed == 1].value.to_numpy())


def test_interrupted_run_resumes_to_the_same_results(toy_bench, tmp_path, monkeypatch):
    whole = run_toy(toy_bench, tmp_path / "whole", generations=6)
    original = toy_plugins._fit
    calls = []

    def interrupt_at_3(req):
        calls.append(req.generation)
        if req.generation == 3:
            raise KeyboardInterrupt
        return original(req)

    trainer = toy_bench.trainers.get("toy-fit")
    object.__setattr__(trainer, "fit", interrupt_at_3)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_toy(toy_bench, tmp_path / "cut", generations=6)
    finally:
        object.__setattr__(trainer, "fit", original)
    cut_dir = next((tmp_path / "cut").glob("toy-*"))
    assert R.finished_generations(cut_dir) == 3
    assert R.read_json(cut_dir / "run.json")["status"] == "interrupted"
    assert len(R.read_metrics(cut_dir)) == 3 * 2
    resumed = run_toy(toy_bench, tmp_path / "cut", generations=6)
    pd.testing.assert_frame_equal(cb.metrics(whole), cb.metrics(resumed))
    for k in (0, 6):
        a = RF.generation_samples(whole[0].path, k)[0].data
        b = RF.generation_samples(resumed[0].path, k)[0].data
        np.testing.assert_array_equal(a, b)


def test_asking_for_more_generations_extends_a_finished_run(toy_bench, tmp_path):
    short = run_toy(toy_bench, tmp_path / "x", generations=2)
    longer = run_toy(toy_bench, tmp_path / "x", generations=5)
    assert short[0].path == longer[0].path
    direct = run_toy(toy_bench, tmp_path / "y", generations=5)
    pd.testing.assert_frame_equal(cb.metrics(longer), cb.metrics(direct))
    assert R.read_json(longer[0].path / "run.json")["generations_done"] == 6


def test_generation_zero_is_shared_by_runs_that_differ_in_policy(toy_bench, tmp_path):
    fits = []
    trainer = toy_bench.trainers.get("toy-fit")
    original = trainer.fit

    def counting(req):
        fits.append(req.generation)
        return original(req)

    object.__setattr__(trainer, "fit", counting)
    try:
        runs = run_toy(toy_bench, tmp_path, policy="replace") + run_toy(toy_bench, tmp_path, policy="mix:0.5")
    finally:
        object.__setattr__(trainer, "fit", original)
    assert fits.count(0) == 1
    assert len(list((tmp_path / ".gen0").iterdir())) == 2  # the cached folder and its lock file
    df = cb.metrics(runs)
    g0 = df[df.generation == 0].pivot(index="metric", columns="policy", values="value")
    np.testing.assert_array_equal(g0["replace"], g0["mix:0.5"])
    later = df[df.generation == 4].pivot(index="metric", columns="policy", values="value")
    assert later.loc["perplexity-drift", "replace"] != later.loc["perplexity-drift", "mix:0.5"]


def test_a_locked_run_folder_is_refused(toy_bench, tmp_path):
    spec = resolve(toy_bench, "toy", "smoke")
    run = Run(toy_bench, spec, tmp_path)
    run.path.mkdir(parents=True)
    with FolderLock(run.path / ".lock", "test"):
        with pytest.raises(RunLocked, match="in use by pid"):
            Run(toy_bench, spec, tmp_path).execute()
    assert Run(toy_bench, spec, tmp_path).execute().status == "complete"


def test_a_failing_trainer_is_named_and_earlier_generations_stay(toy_bench, tmp_path):
    with pytest.raises(BenchError, match=r"trainer 'toy-fit' of plugin 'toy' failed: RuntimeError"):
        run_toy(toy_bench, tmp_path, set={"fail_at": 2})
    run_dir = next(tmp_path.glob("toy-*"))
    info = R.read_json(run_dir / "run.json")
    assert info["status"] == "failed" and "toy-fit" in info["error"]
    assert R.finished_generations(run_dir) == 2
    table = R.read_metrics(run_dir)
    assert sorted(set(table.column("generation").to_pylist())) == [0, 1]
    assert "RuntimeError" in (run_dir / "log.txt").read_text()


# The hook runs after its generation is committed: with one folder per generation ("0") the run
# stops after generation 2; by default generations 1..4 are one chunk, committed before its hooks.
@pytest.mark.parametrize("commit_every, finished", [("0", 3), ("", 5)])
def test_a_raising_event_hook_is_named_and_the_saved_state_stays_consistent(tmp_path, monkeypatch, commit_every,
                                                                             finished):
    monkeypatch.setenv("BENCH_COMMIT_EVERY", commit_every)
    events = toy_plugins.Events(raise_at=2)
    b = Bench(extra_plugins=[toy_plugins.Toy(), events])
    with pytest.raises(PluginError, match="plugin 'events' raised in bench_generation_finished"):
        run_toy(b, tmp_path)
    run_dir = next(tmp_path.glob("toy-*"))
    assert R.finished_generations(run_dir) == finished
    assert R.read_json(run_dir / "run.json")["generations_done"] == finished
    assert [c[1] for c in events.calls if c[0] == "generation"] == [0, 1, 2]
    assert R.validate_metrics(R.read_metrics(run_dir)) == []
    assert R.read_json(run_dir / "run.json")["status"] == "failed"
    assert events.calls[0] == ("started", 0) and events.calls[-1] == ("finished", "failed")


def test_events_fire_in_order(tmp_path):
    events = toy_plugins.Events()
    b = Bench(extra_plugins=[toy_plugins.Toy(), events])
    run_toy(b, tmp_path)
    assert events.calls == [("started", 0)] + [("generation", k, 2) for k in range(5)] + [("finished", "complete")]


@pytest.mark.parametrize("keep, kept", [("first-last", [0, 4]), ("all", [0, 1, 2, 3, 4]), ("every:2", [0, 2, 4])])
def test_state_retention(toy_bench, tmp_path, keep, kept):
    runs = cb.run("toy", "smoke", out=tmp_path, bench=toy_bench, keep_states=keep)
    have = [k for k in range(5) if RF.has_state(runs[0].path, k)]
    assert have == kept


@pytest.mark.slow
def test_kill_9_mid_run_then_the_same_command_finishes_identically(tmp_path):
    """A real process killed with SIGKILL, then resumed by the same command line."""
    cmd = [sys.executable, "-m", "bench.cli", "run", "--plugin", "gaussian", "--preset", "smoke",
           "--generations", "400", "--set", "n_samples=200", "--out"]
    whole = tmp_path / "whole"
    subprocess.run(cmd + [str(whole)], check=True, capture_output=True)
    cut = tmp_path / "cut"
    # chunks of 0.05 s of work, so that the kill lands between chunks and loses the pending ones
    env = {**os.environ, "BENCH_COMMIT_EVERY": "0.05"}
    proc = subprocess.Popen(cmd + [str(cut)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 60
    while time.time() < deadline and not any(R.finished_generations(d) >= 30 for d in cut.glob("gaussian-*")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_dir = next(cut.glob("gaussian-*"))
    done = R.finished_generations(run_dir)
    assert 30 <= done < 401, "the kill should land mid-run"
    assert R.read_json(run_dir / "run.json")["status"] == "running"  # what a killed run leaves
    assert len(set(R.read_metrics(run_dir).column("generation").to_pylist())) == done
    subprocess.run(cmd + [str(cut)], check=True, capture_output=True)
    pd.testing.assert_frame_equal(cb.metrics(whole), cb.metrics(cut))


def test_resuming_under_different_plugin_code_warns(toy_bench, tmp_path):
    runs = run_toy(toy_bench, tmp_path, generations=2)
    path = runs[0].path / "run.json"
    info = R.read_json(path)
    info["provenance"]["code_versions"]["trainer:toy-fit"] = "toy 0.0.1 / 1"
    R.write_json(path, info)
    with pytest.warns(UserWarning, match=r"resuming under different plugin code: trainer:toy-fit: toy 0.0.1 / 1 ->"):
        run_toy(toy_bench, tmp_path, generations=3)
    assert "resuming under different plugin code" in (runs[0].path / "log.txt").read_text()


@pytest.mark.slow
def test_progress_bar_on_a_terminal(tmp_path):
    """On a terminal the progress is a bar (tqdm) redrawn in place, ending at the last generation."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 100-column terminal
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", "run", "--plugin", "gaussian", "--out", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait()
    os.close(master)
    text = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0
    assert "\r" in text and "101/101" in text and "gen/s" in text


def test_a_small_history_budget_changes_nothing(toy_bench, tmp_path, monkeypatch):
    """Past synthetic sets beyond HISTORY_BYTES are read back from disk, exactly."""
    from bench import loop

    full = run_toy(toy_bench, tmp_path / "full", policy="accumulate")
    monkeypatch.setattr(loop, "HISTORY_BYTES", 1)  # keeps only the newest set in memory
    lean = run_toy(toy_bench, tmp_path / "lean", policy="accumulate")
    a, b = cb.metrics(full), cb.metrics(lean)
    assert values(lean, "toy-train-size").tolist() == [40, 80, 120, 160, 200]
    assert a.sort_values(["generation", "metric"]).value.tolist() == b.sort_values(["generation", "metric"]).value.tolist()


def test_a_logger_failing_at_the_start_fails_the_run_visibly(tmp_path):
    class Refuses:
        __name__ = "refuses"

        @bench.hookimpl
        def bench_run_started(self, run):
            raise ValueError("no place to log")

    b = Bench(extra_plugins=[toy_plugins.Toy(), Refuses()])
    with pytest.raises(BenchError, match="no place to log"):
        run_toy(b, tmp_path)
    run_dir = next(tmp_path.glob("toy-*"))
    assert R.read_json(run_dir / "run.json")["status"] == "failed"
    assert "stop: failed" in (run_dir / "log.txt").read_text()


def test_a_generator_returning_the_wrong_count_fails_the_run(tmp_path):
    class Short(toy_plugins.Toy):
        __name__ = "short"

        @bench.hookimpl
        def bench_register_models(self, register):
            register(bench.ModelBundle(
                name="short", kind="vectors", load_real=toy_plugins._load_real, trainer="toy-fit",
                generator="short-sample", scorer="toy-loglik", params={"n": 40, "fail_at": -1},
                presets={"smoke": {"generations": 2}}))

        @bench.hookimpl
        def bench_register_generators(self, register):
            register(bench.Generator("short-sample",
                                     lambda r: toy_plugins._generate(dataclasses.replace(r, n=r.n - 1))))

        bench_register_trainers = bench_register_scorers = bench_register_metrics = None

    b = Bench(extra_plugins=[toy_plugins.Toy(), Short()])
    with pytest.raises(BenchError, match=r"returned 39 samples at generation 0; the harness asked for bench.Samples of n = 40"):
        cb.run("short", out=tmp_path, bench=b)


# -- request objects, the old positional forms, the harness's shared scores ------------------------


def _legacy_load_real(params, seed):
    return toy_plugins._load_real(bench.RealRequest(params, seed))


def _legacy_generate(state, n, prompts, params, rng):
    return toy_plugins._generate(bench.GenerateRequest(state, n, prompts, params, rng, 0))


def _legacy_score(state, samples, params):
    return toy_plugins._score(bench.ScoreRequest(state, samples, params))


class LegacyToy(toy_plugins.Toy):
    """The toy plugin as a plugin written for collapse-bench 0.1 registers it: positional signatures."""

    @bench.hookimpl
    def bench_register_models(self, register):
        register(bench.ModelBundle(
            name="toy", kind="vectors", load_real=_legacy_load_real, trainer="toy-fit", generator="toy-sample",
            scorer="toy-loglik", metrics=("toy-train-size", "perplexity-drift"),
            params={"n": 40, "fail_at": -1}, presets={"smoke": {"generations": 4}, "paper": {"n": 400}}))

    @bench.hookimpl
    def bench_register_generators(self, register):
        register(bench.Generator("toy-sample", _legacy_generate))

    @bench.hookimpl
    def bench_register_scorers(self, register):
        register(bench.Scorer("toy-loglik", _legacy_score))


def test_plugins_with_the_old_positional_signatures_run_unchanged_with_one_warning_each(toy_bench, tmp_path):
    with pytest.warns(DeprecationWarning) as caught:
        legacy = Bench(extra_plugins=[LegacyToy()])
    messages = sorted(str(w.message) for w in caught if issubclass(w.category, DeprecationWarning))
    assert len(messages) == 3
    for message, what, new in zip(messages, ("generator 'toy-sample'", "model bundle 'toy'", "scorer 'toy-loglik'"),
                                  ("GenerateRequest", "RealRequest", "ScoreRequest")):
        assert message.startswith(what) and "tests.test_loop._legacy_" in message and f"bench.{new}" in message
    assert all(w.filename == __file__ for w in caught)  # the warning points at the plugin's own code

    old = run_toy(legacy, tmp_path / "old", policy="accumulate")
    new = run_toy(toy_bench, tmp_path / "new", policy="accumulate")
    assert old[0].spec.run_id == new[0].spec.run_id
    pd.testing.assert_frame_equal(cb.metrics(old), cb.metrics(new))
    for k in range(5):
        a = generation_frame(old[0].path, k)
        b = generation_frame(new[0].path, k)
        pd.testing.assert_frame_equal(a, b)


def test_a_component_taking_one_request_is_kept_as_it_is_and_the_adapter_unpacks_the_request():
    def score(request):
        return toy_plugins._score(request)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert bench.Scorer("s", score).score is score
        assert bench.Generator("g", toy_plugins._generate).generate is toy_plugins._generate

    seen = []
    with pytest.warns(DeprecationWarning, match="generate\\(state, n, prompts, params, rng\\)"):
        generator = bench.Generator("g", lambda state, n, prompts, params, rng: seen.append(
            (state, n, prompts, params, rng)))
    request = bench.GenerateRequest({"a": np.zeros(1)}, 3, None, {"p": 1}, np.random.default_rng(0), 5)
    generator.generate(request)
    assert seen == [(request.state, 3, None, request.params, request.rng)]


def test_a_bundle_without_a_data_source_warns_once_per_run(toy_bench, tmp_path):
    spec = resolve(toy_bench, "toy", "smoke")
    run = Run(toy_bench, spec, tmp_path)
    with pytest.warns(UserWarning, match="each seed gets its own leaderboard track") as caught:
        run.execute()
    assert sum("no `source`" in str(w.message) for w in caught) == 1
    assert "plugin 'toy'" in str(caught[0].message)
    assert run.real_data_fingerprint is None and run.real_data_source is None  # the toy data has neither
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # gaussian names its source: no warning
        b = Bench()
        gaussian = Run(b, resolve(b, "gaussian", "smoke", generations=1), tmp_path)
        gaussian.execute()
    assert gaussian.real_data_fingerprint == R.read_json(gaussian.path / "run.json")["real_data_fingerprint"]


def _run_folder(run) -> dict:
    """Everything a run wrote that does not depend on the clock."""
    out = {"metrics": cb.metrics(run)}
    path = run[0].path
    for gen in range(R.finished_generations(path)):
        out[R.gen_name(gen)] = generation_frame(path, gen)
        info = RF.generation_info(path, gen)
        out[R.gen_name(gen) + "/info"] = {k: v for k, v in info.items() if not k.endswith("_s")}
    return out


def _assert_same_run(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], pd.DataFrame):
            pd.testing.assert_frame_equal(a[key], b[key], check_exact=True)
        else:
            assert a[key] == b[key]


@pytest.mark.parametrize("verifier", ["m0", "self"])
def test_verifiers_reuse_the_harness_scores_of_the_newest_samples_bit_for_bit(tmp_path, monkeypatch, verifier):
    b = Bench()
    scorer = b.scorers.get("gaussian-loglik")
    original = scorer.score
    calls = []

    def counting(request):
        calls.append(len(request.samples))
        return original(request)

    object.__setattr__(scorer, "score", counting)
    policy = f"best-of:1,{verifier}"  # one candidate per kept sample: the verifier scores S_k itself
    try:
        shared = _run_folder(cb.run("gaussian", out=tmp_path / "shared", bench=b, policy=policy, generations=3))
        shared_calls, calls[:] = len(calls), []

        # the same run with the scores read back from samples.parquet (as a resumed run gets them)
        latest_scores = Run._latest_scores

        def from_disk(self, synthetic):
            self._latest = None
            return latest_scores(self, synthetic)

        monkeypatch.setattr(Run, "_latest_scores", from_disk)
        _assert_same_run(shared, _run_folder(cb.run("gaussian", out=tmp_path / "disk", bench=b, policy=policy,
                                                    generations=3)))
        assert len(calls) == shared_calls
        calls[:] = []

        # and without them: the verifier scores S_k again, with the same result
        monkeypatch.setattr(Run, "_latest_scores", lambda self, synthetic: None)
        rescored = _run_folder(cb.run("gaussian", out=tmp_path / "rescored", bench=b, policy=policy, generations=3))
    finally:
        object.__setattr__(scorer, "score", original)
    _assert_same_run(shared, rescored)
    assert len(calls) == shared_calls + 3  # one scoring of S_k per generation 1..3 saved


def test_metric_context_accessors_use_the_harness_scores_and_compute_the_rest_once():
    calls = []

    def score(state, samples):
        calls.append(state["id"])
        return bench.Scores(np.zeros(len(samples)), np.ones(len(samples)))

    real = toy_plugins._load_real(bench.RealRequest({"n": 5}, 0))
    given = bench.Scores(np.arange(5.0), np.ones(5))
    ctx = bench.MetricContext(generation=1, bundle=None, params={}, real=real, state={"id": "k"},
                              reference_state={"id": "0"}, samples=real.train, score=score,
                              rng=np.random.default_rng(0), reference_scores=given)
    assert ctx.reference_scores_samples() is given
    assert ctx.model_scores_samples() is ctx.model_scores_samples()
    assert ctx.model_scores_real_test() is ctx.model_scores_real_test()
    assert ctx.reference_scores_real_test() is ctx.reference_scores_real_test()
    assert calls == ["k", "k", "0"]
    assert ctx.cached("mine:x", lambda: 42) == 42 and ctx.cache == {"mine:x": 42}
