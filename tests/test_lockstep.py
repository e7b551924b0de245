"""Chains of a batch-capable trainer run together (bench.loop.run_group) and end as if run alone."""

import numpy as np
import pytest

import bench
import bench.api as cb
from bench import results as R
from bench import runfolder as RF
from bench.errors import BenchError
from bench.loop import run_group
from bench.plugins import Bench
from tests import toy_plugins


class BatchedToy:
    """The toy model with a trainer that fits a batch at once and records the batch sizes."""

    __name__ = "batched-toy"

    def __init__(self):
        self.batches = []

    def _fit_batch(self, requests):
        self.batches.append(sorted((r.generation, len(r.data)) for r in requests))
        for r in requests:
            if r.params["fail_seed"] == int(r.rng.bit_generator.seed_seq.entropy[0]) and r.generation == 2:
                raise RuntimeError("the batched toy broke on purpose")
        return [toy_plugins._fit(r) for r in requests]

    @bench.hookimpl
    def bench_register_models(self, register):
        register(bench.ModelBundle(
            name="btoy", kind="vectors", load_real=toy_plugins._load_real, trainer="btoy-fit",
            generator="toy-sample", scorer="toy-loglik", metrics=("toy-train-size", "perplexity-drift"),
            params={"n": 30, "fail_at": -1, "fail_seed": -1}, presets={"smoke": {"generations": 4}}))

    @bench.hookimpl
    def bench_register_trainers(self, register):
        register(bench.Trainer("btoy-fit", lambda r: self._fit_batch([r])[0], fit_batch=self._fit_batch))


@pytest.fixture
def batched():
    plugin = BatchedToy()
    return plugin, Bench(extra_plugins=[toy_plugins.Toy(), plugin])


def _values(path):
    t = R.read_metrics(path).to_pandas()
    return t.sort_values(["generation", "metric"])[["generation", "metric", "value"]].reset_index(drop=True)


def test_chains_fit_together_and_end_as_if_alone(batched, tmp_path):
    plugin, b = batched
    together = cb.run("btoy", seeds="0-2", out=tmp_path / "together", bench=b)
    assert [o.status for o in together] == ["complete"] * 3
    # generation 0 of each chain is fitted alone or together; later generations in batches of 3
    assert max(len(batch) for batch in plugin.batches) == 3
    alone = [cb.run("btoy", seeds=s, out=tmp_path / f"alone{s}", bench=b)[0] for s in range(3)]
    for o_together, o_alone in zip(together, alone):
        assert _values(o_together.path).equals(_values(o_alone.path))
        a = RF.generation_state(o_together.path, 4)
        c = RF.generation_state(o_alone.path, 4)
        assert a.keys() == c.keys()
        assert all(np.array_equal(a[k], c[k]) for k in a)


def test_chains_at_different_generations_share_batches(batched, tmp_path):
    plugin, b = batched
    cb.run("btoy", seeds="0", generations=3, out=tmp_path, bench=b)
    plugin.batches.clear()
    outcomes = cb.run("btoy", seeds="0-1", generations=4, out=tmp_path, bench=b)
    assert [o.generations_done for o in outcomes] == [5, 5]
    # seed 0 resumes at generation 4 while seed 1 starts: their fits meet in one batch
    assert any(len(batch) == 2 and batch[0][0] != batch[1][0] for batch in plugin.batches)


def test_a_failing_fit_stops_only_its_chain(batched, tmp_path):
    plugin, b = batched
    specs = cb.specs("btoy", seeds="0-2", set={"fail_seed": 1}, bench=b)
    outcomes = run_group(b, specs, tmp_path, raise_errors=False)
    # seed 1's generation-2 fit raises: the batch is refitted chain by chain, seed 1 stops with
    # generations 0-1 on disk, and the other chains finish with the results of lone runs
    assert [o.status for o in outcomes] == ["complete", "failed", "complete"]
    assert outcomes[1].generations_done == 2 and "broke on purpose" in outcomes[1].error
    alone = cb.run("btoy", seeds="2", set={"fail_seed": 1}, out=tmp_path / "alone", bench=b)[0]
    assert _values(outcomes[2].path).equals(_values(alone.path))
    with pytest.raises(BenchError, match="broke on purpose"):
        cb.run("btoy", seeds="0-2", set={"fail_seed": 1}, out=tmp_path / "again", bench=b)


def test_run_group_refuses_a_trainer_without_fit_batch(tmp_path):
    b = Bench(extra_plugins=[toy_plugins.Toy()])
    with pytest.raises(BenchError, match="batch-capable"):
        run_group(b, cb.specs("toy", seeds="0-1", bench=b), tmp_path)


def test_one_progress_display_for_the_group(batched, tmp_path, capsys):
    _, b = batched
    cb.run("btoy", seeds="0-1", out=tmp_path, bench=b, progress=True)
    err = capsys.readouterr().err
    # one display counting the generations of both chains (2 x 5 rows), ending at the last one
    assert "btoy x2: 10/10 generations over 2 chains" in err


@pytest.mark.slow
def test_ctrl_c_stops_a_lockstep_group_and_the_same_command_finishes_it(tmp_path):
    """SIGINT to `bench run --seeds 0-2` of a batched trainer: exit 130, every chain interrupted with
    its finished generations kept; the same command then ends as lone runs do."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import pandas as pd

    cmd = [sys.executable, "-m", "bench.cli", "run", "--plugin", "gaussian-batched", "--preset", "smoke",
           "--generations", "400", "--set", "n_samples=200", "--seeds", "0-2", "--out"]
    cut = tmp_path / "cut"
    # chunks of 0.05 s of work: the interrupt lands with committed chunks and pending generations
    env = {**os.environ, "BENCH_COMMIT_EVERY": "0.05"}
    proc = subprocess.Popen(cmd + [str(cut)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 60
    while time.time() < deadline and sum(R.finished_generations(d) >= 20 for d in cut.glob("*-s*")) < 3:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Interrupted" in err and "Traceback" not in err
    runs = sorted(cut.glob("gaussian-batched-*"))
    assert len(runs) == 3
    for run in runs:
        assert R.read_json(run / "run.json")["status"] == "interrupted"
        assert 20 <= R.finished_generations(run) < 401
    subprocess.run(cmd + [str(cut)], check=True, capture_output=True)
    lone = tmp_path / "lone"
    for seed in range(3):
        one = [c if c != "0-2" else str(seed) for c in cmd]
        subprocess.run(one + [str(lone)], check=True, capture_output=True)
    pd.testing.assert_frame_equal(cb.metrics(lone), cb.metrics(cut))
