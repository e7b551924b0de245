"""bench runs and bench rescore."""

import json

import numpy as np
import pandas as pd
import pytest

import bench.api as cb
from bench import results as R
from bench import runfolder as RF
from bench.loop import FolderLock
from tests.test_cli import bench_cli


@pytest.fixture
def runs(tmp_path):
    return cb.run("gmm", "smoke", generations=4, seeds="0-1", out=tmp_path)


def test_runs_lists_states_and_reasons(capsys, tmp_path, runs, monkeypatch):
    cb.run("gaussian", "smoke", generations=3, out=tmp_path, set={"n_samples": 30})
    partial = next(tmp_path.glob("gaussian-*"))
    info = R.read_json(partial / "run.json")
    info.update(generations_requested=8, status="interrupted")
    R.write_json(partial / "run.json", info)
    failed = runs[1].path
    info = R.read_json(failed / "run.json")
    info.update(status="failed", error="trainer 'gmm-em' of plugin 'gmm' failed: boom", generations_requested=9)
    R.write_json(failed / "run.json", info)
    with FolderLock(runs[0].path / ".lock", "test"):
        code, out, err = bench_cli(capsys, "runs", str(tmp_path))
        states = {r["path"].split("/")[-1]: r for r in json.loads(bench_cli(capsys, "runs", str(tmp_path), "--json")[1])}
    assert code == 0
    assert states[runs[0].path.name]["state"] == "running"
    assert states[failed.name]["state"] == "failed" and "boom" in states[failed.name]["reason"]
    assert states[partial.name]["state"] == "partial" and states[partial.name]["done"] == 4
    assert "1 failed, 1 partial, 1 running" in out and "boom" in out
    line = next(row for row in out.splitlines() if row.startswith(partial.name))
    assert "generation         3/8" in line  # generations 0..3 finished of 0..8 asked for
    code, out, err = bench_cli(capsys, "runs", str(tmp_path))
    assert states[runs[0].path.name]["requested"] == 4 and "1 complete" in out


def test_rescore_recomputes_from_saved_samples_and_states(capsys, tmp_path):
    run_dir = cb.run("gmm", "smoke", generations=4, out=tmp_path / "all", keep_states="all")[0].path
    before = cb.metrics(run_dir)
    # Remove one metric's rows everywhere, then rescore it: the same values come back.
    units = R.units(run_dir)
    assert units[-1][1] == 4 and any(first < last for first, last, _ in units)  # a chunk of generations
    for _, _, folder in units:
        gen = folder / "metrics.parquet"
        rows = [r for r in R.read_parquet_rows(gen) if not r["metric"].startswith("gmm-std")]
        R.write_parquet(gen, R.gen_metrics_table(rows))
    R.consolidate(run_dir, R.read_json(run_dir / "run.json"), 5)
    assert not cb.metrics(run_dir).metric.str.startswith("gmm-std").any()
    code, out, err = bench_cli(capsys, "rescore", str(run_dir), "--metric", "gmm-std", "--metric", "test-perplexity")
    assert code == 0, err and "skipped" not in out
    after = cb.metrics(run_dir)
    key = ["generation", "metric"]
    merged = before.merge(after, on=key, suffixes=("_before", "_after"), how="outer")
    assert len(merged) == len(before) == len(after)
    np.testing.assert_allclose(merged.value_before, merged.value_after, rtol=1e-12)
    assert R.validate_metrics(R.read_metrics(run_dir)) == []
    assert R.read_json(run_dir / "run.json")["rescored"][0]["metrics"] == {"gmm-std": "1", "test-perplexity": "1"}


def test_rescore_skips_what_needs_a_state_that_was_not_kept(capsys, tmp_path, runs):
    run_dir = runs[0].path  # default retention: states of generations 0 and 4 only
    before = cb.metrics(run_dir)
    code, out, err = bench_cli(capsys, "rescore", str(run_dir), "--metric", "test-perplexity")
    assert code == 0, err
    assert "generations [1, 2, 3] skipped: their model state was not kept" in out
    pd.testing.assert_frame_equal(before.sort_values(["generation", "metric"]).reset_index(drop=True),
                                  cb.metrics(run_dir).sort_values(["generation", "metric"]).reset_index(drop=True))
    assert R.read_json(run_dir / "run.json")["rescored"][0]["skipped_generations"] == [1, 2, 3]


def test_rescore_adds_a_new_metric(capsys, tmp_path, runs):
    code, out, err = bench_cli(capsys, "rescore", str(tmp_path), "--metric", "reference-nll")
    assert code == 0, err
    df = cb.metrics(tmp_path)
    q = df[df.metric == "reference-nll/q50"]
    assert len(q) == 10  # every generation of both runs: scores under M_0 are saved with the samples
    samples, scores = RF.generation_samples(runs[0].path, 2)
    expected = np.quantile(-scores["loglik_reference"] / scores["units"], 0.5)
    got = q[(q.run_id == runs[0].spec.run_id) & (q.generation == 2)].value.item()
    assert got == pytest.approx(expected)


def test_rescore_mistakes(capsys, tmp_path, runs):
    code, out, err = bench_cli(capsys, "rescore", str(tmp_path), "--metric", "gmm-l3")
    assert code == 2 and "unknown metric 'gmm-l3'" in err
    code, out, err = bench_cli(capsys, "rescore", str(tmp_path / "none"), "--metric", "gmm-l2")
    assert code == 2 and "no run folders" in err
