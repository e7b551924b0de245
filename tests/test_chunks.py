"""Chunked commits: fast generations committed together as ``gens/<first>-<last>/``.

Each test compares a run whose generations were committed in chunks with the same run committed
one folder per generation (BENCH_COMMIT_EVERY=0), through the run folder's readers
(bench.runfolder.generation_*): samples, scores, states, metric rows and info records must be the
same bit for bit. The in-process runs make the chunk boundaries independent of the clock: no
generation counts as slow, the time limit is an hour and a chunk holds at most CHUNK generations,
so a run of GENERATIONS generations is committed as gens/000000, 000001-000004, 000005-000008,
000009-000010.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import bench.api as cb
from bench import loop as L
from bench import plots as P
from bench import report as RP
from bench import results as R
from bench import runfolder as RF
from bench.plugins import Bench
from bench.validate import validate
from tests.helpers import bench_cli

GENERATIONS = 10
CHUNK = 4
LAYOUT = [(0, 0), (1, 4), (5, 8), (9, 10)]
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _chunk_settings(patch: pytest.MonkeyPatch) -> None:
    """Chunks of at most CHUNK generations, whatever the clock says."""
    patch.setattr(R, "SLOW_GENERATION_S", float("inf"))
    patch.setattr(L, "CHUNK_GENERATIONS", CHUNK)
    patch.setenv("BENCH_COMMIT_EVERY", "3600")


@pytest.fixture(autouse=True)
def chunks(monkeypatch):
    _chunk_settings(monkeypatch)


def run_gmm(out: Path, bench=None, **kw) -> Path:
    kw.setdefault("generations", GENERATIONS)
    (outcome,) = cb.run("gmm", "smoke", out=out, bench=bench, **kw)
    return outcome.path


def one_folder_per_generation(monkeypatch, out: Path, **kw) -> Path:
    """The same run with the layout of one folder per generation."""
    monkeypatch.setenv("BENCH_COMMIT_EVERY", "0")
    try:
        return run_gmm(out, **kw)
    finally:
        monkeypatch.setenv("BENCH_COMMIT_EVERY", "3600")


def layout(run_dir: Path) -> list[tuple[int, int]]:
    return [(first, last) for first, last, _ in R.all_units(run_dir)]


def contents(run_dir: Path) -> dict:
    """Everything a run folder holds of its generations but the clock, read through the readers."""
    out = {"metrics.parquet": pq.read_table(run_dir / R.METRICS_FILE),
           "done": RF.read_run_json(run_dir).generations_done}
    for k in range(R.finished_generations(run_dir)):
        samples, scores = RF.generation_samples(run_dir, k)
        info = {key: v for key, v in RF.generation_info(run_dir, k).items() if not key.endswith("_s")}
        out[k] = {"kind": samples.kind, "data": samples.data, "columns": samples.columns, "scores": scores,
                  "state": RF.generation_state(run_dir, k), "has_state": RF.has_state(run_dir, k),
                  "rows": RF.generation_rows(run_dir, k), "info": info,
                  "row 3": RF.generation_sample_row(run_dir, k, 3)}
    return out


def assert_same(a, b, where="run") -> None:
    """``a`` and ``b`` are equal bit for bit (arrays: values and dtype; floats: NaN equals NaN)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), (where, a.keys(), b.keys() if isinstance(b, dict) else b)
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape, where
        assert np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"), where
    elif isinstance(a, pa.Table):
        assert a.schema.equals(b.schema) and a.num_rows == b.num_rows, where
        assert_same(a.to_pydict(), b.to_pydict(), where)
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), where
    else:
        assert type(a) is type(b) and a == b, (where, a, b)


# -- (a) the same results as one folder per generation -------------------------------------------


def test_a_chunked_run_holds_exactly_what_one_folder_per_generation_holds(tmp_path, monkeypatch):
    chunked = run_gmm(tmp_path / "chunked")
    single = one_folder_per_generation(monkeypatch, tmp_path / "single")
    assert layout(chunked) == LAYOUT
    assert layout(single) == [(k, k) for k in range(GENERATIONS + 1)]
    assert sorted(p.name for p in (chunked / R.GENS_DIR).iterdir()) == [
        "000000", "000001-000004", "000005-000008", "000009-000010"]
    assert R.finished_generations(chunked) == GENERATIONS + 1
    assert R.read_json(chunked / R.RUN_JSON)["schema_version"] == R.RUN_SCHEMA_VERSION == 2
    # a chunk's files (keep_states first-last: generation 8's state went when chunk 9-10 came)
    chunk = chunked / R.GENS_DIR / "000005-000008"
    assert sorted(p.name for p in chunk.iterdir()) == ["info.json", "metrics.parquet", "samples.parquet"]
    assert sorted(p.name for p in (chunked / R.GENS_DIR / "000009-000010").iterdir()) == [
        "info.json", "metrics.parquet", "samples.parquet", "state.safetensors"]
    table = pq.read_table(chunk / RF.SAMPLES_FILE)
    assert table.column_names[0] == "generation" and table.schema.field("generation").type == pa.int64()
    assert sorted(set(table.column("generation").to_pylist())) == [5, 6, 7, 8]
    records = R.read_json(chunk / RF.INFO_FILE)["generations"]
    assert [r["generation"] for r in records] == [5, 6, 7, 8]
    assert sorted(set(pq.read_table(chunk / R.METRICS_FILE).column("generation").to_pylist())) == [5, 6, 7, 8]
    # ... and the same values, bit for bit
    a, b = contents(chunked), contents(single)
    assert [k for k in a if isinstance(k, int)] == list(range(GENERATIONS + 1))
    assert_same(a, b)
    assert [k for k in range(GENERATIONS + 1) if a[k]["has_state"]] == [0, GENERATIONS]


# -- (b) keep_states ------------------------------------------------------------------------------


@pytest.mark.parametrize("keep, kept", [("first-last", [0, 11]), ("all", list(range(12))),
                                        ("every:2", [0, 2, 4, 6, 8, 10, 11])])
def test_keep_states_keeps_exactly_what_its_rule_says_across_chunks(tmp_path, monkeypatch, keep, kept):
    run = run_gmm(tmp_path / "chunked", generations=11, keep_states=keep)
    assert layout(run) == [(0, 0), (1, 4), (5, 8), (9, 11)]
    assert [k for k in range(12) if RF.has_state(run, k)] == kept
    assert [k for k in range(12) if RF.generation_state(run, k) is not None] == kept
    everything = one_folder_per_generation(monkeypatch, tmp_path / "all", generations=11, keep_states="all")
    for k in kept:  # a kept state is M_k's, whichever file of its chunk holds it
        assert_same(RF.generation_state(run, k), RF.generation_state(everything, k), f"state {k}")
    # a chunk's states.safetensors holds the kept states of its generations but the last, keyed
    # "<k:06d>/<name>"; its state.safetensors the last one's, unless a later chunk pruned it
    for first, last, folder in R.units(run):
        held = set()
        if (folder / RF.STATES_FILE).exists():
            held = {int(key.split("/")[0]) for key in R.read_state(folder / RF.STATES_FILE)}
        assert held == {k for k in kept if first <= k < last}, folder.name
        assert (folder / RF.STATE_FILE).exists() == (last in kept), folder.name
    assert RF.state_file(run, 6) == (run / R.GENS_DIR / "000005-000008" / RF.STATES_FILE, "000006/")
    assert RF.state_file(run, 8) == (run / R.GENS_DIR / "000005-000008" / RF.STATE_FILE, None)


# -- (c) an interrupt commits what is finished ----------------------------------------------------


def test_an_interrupt_at_generation_7_commits_0_to_6_and_the_same_command_resumes_identically(tmp_path, monkeypatch):
    whole = contents(run_gmm(tmp_path / "whole"))
    b = Bench()
    metric = b.metrics.get("gmm-l2")
    compute = metric.compute

    def interrupt_at_7(ctx):
        if ctx.generation == 7:
            raise KeyboardInterrupt
        return compute(ctx)

    object.__setattr__(metric, "compute", interrupt_at_7)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_gmm(tmp_path / "cut", bench=b)
    finally:
        object.__setattr__(metric, "compute", compute)
    (cut,) = RF.find_runs([tmp_path / "cut"])
    # the pending generations 5 and 6 were committed as a chunk before the run stopped
    assert layout(cut) == [(0, 0), (1, 4), (5, 6)]
    data = R.read_json(cut / R.RUN_JSON)
    assert data["status"] == "interrupted" and data["generations_done"] == 7
    assert sorted(set(R.read_metrics(cut).column("generation").to_pylist())) == list(range(7))
    assert validate([cut]) == []
    assert run_gmm(tmp_path / "cut", bench=b) == cut
    assert layout(cut) == [(0, 0), (1, 4), (5, 6), (7, 10)]
    assert_same(contents(cut), whole)


# -- (d) a kill loses the pending generations only ------------------------------------------------


def test_a_kill_before_the_last_chunk_then_the_same_command_ends_identically(tmp_path):
    """What a kill -9 before the last chunk's rename leaves: no chunk 9-10 but a temporary folder,
    run.json 'running', no metrics.parquet of the run's end. (States kept with 'all': with
    first-last, the commit of chunk 9-10 had already dropped generation 8's state.)"""
    whole = contents(run_gmm(tmp_path / "whole", keep_states="all"))
    run = run_gmm(tmp_path / "cut", keep_states="all")
    last = run / R.GENS_DIR / "000009-000010"
    last.rename(run / R.GENS_DIR / f".000009-000010.{os.getpid()}-1.tmp")
    (run / R.METRICS_FILE).unlink()
    data = R.read_json(run / R.RUN_JSON)
    data.update(status="running", generations_done=9)
    (run / R.RUN_JSON).write_text(json.dumps(data))
    assert R.finished_generations(run) == 9
    assert run_gmm(tmp_path / "cut", keep_states="all") == run
    assert not list((run / R.GENS_DIR).glob(".*"))
    assert layout(run) == LAYOUT
    assert_same(contents(run), whole)
    assert validate([run]) == []


def test_a_kill_between_a_commit_and_its_pruning_then_the_same_command_prunes(tmp_path, monkeypatch):
    """A kill after chunk 9-10's rename, before generation 8's state (first-last) is dropped."""
    everything = one_folder_per_generation(monkeypatch, tmp_path / "all", keep_states="all")
    run = run_gmm(tmp_path / "cut")
    whole = contents(run)
    kept = run / R.GENS_DIR / "000005-000008" / RF.STATE_FILE
    R.write_state(kept, RF.generation_state(everything, 8))
    data = R.read_json(run / R.RUN_JSON)
    data.update(status="running")
    (run / R.RUN_JSON).write_text(json.dumps(data))
    assert RF.has_state(run, 8)
    assert run_gmm(tmp_path / "cut") == run
    assert not kept.exists() and [k for k in range(GENERATIONS + 1) if RF.has_state(run, k)] == [0, GENERATIONS]
    assert_same(contents(run), whole)


@pytest.mark.slow
def test_a_kill_9_after_the_first_chunk_then_the_same_command_ends_identically(tmp_path):
    """A real SIGKILL of `bench run` once a chunk is committed, then the same command line."""
    cmd = [sys.executable, "-m", "bench.cli", "run", "--plugin", "gmm", "--preset", "smoke", "--generations", "60",
           "--out"]
    env = {**os.environ, "BENCH_COMMIT_EVERY": "0.3", "OMP_NUM_THREADS": "1"}
    subprocess.run(cmd + [str(tmp_path / "whole")], check=True, capture_output=True, env=env)
    cut = tmp_path / "cut"
    proc = subprocess.Popen(cmd + [str(cut)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 120

    def chunked():
        return [u for d in cut.glob("gmm-*") for u in R.units(d) if u[0] < u[1]]

    while time.time() < deadline and not chunked():
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (run,) = cut.glob("gmm-*")
    done = R.finished_generations(run)
    assert chunked() and done < 61, "the kill should land after the first chunk, before the end"
    assert R.read_json(run / R.RUN_JSON)["status"] == "running"  # what a killed run leaves
    subprocess.run(cmd + [str(cut)], check=True, capture_output=True, env=env)
    (whole,) = (tmp_path / "whole").glob("gmm-*")
    assert_same(contents(run), contents(whole))
    assert validate([run]) == []


# -- (e) bench validate ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A complete chunked run of GENERATIONS generations, every state kept (rescore needs them)."""
    with pytest.MonkeyPatch.context() as patch:
        _chunk_settings(patch)
        return run_gmm(tmp_path_factory.mktemp("pristine") / "out", keep_states="all")


@pytest.fixture
def chunked_run(pristine, tmp_path):
    """A copy of the pristine run that a test may damage."""
    run = tmp_path / "out" / pristine.name
    shutil.copytree(pristine, run)
    return run


def test_validate_passes_a_chunked_run(chunked_run, capsys):
    assert validate([chunked_run]) == []
    code, out, err = bench_cli(capsys, "validate", chunked_run)
    assert code == 0 and "no problems" in out, out + err


def test_validate_reports_a_chunk_with_truncated_samples(chunked_run):
    path = chunked_run / R.GENS_DIR / "000005-000008" / RF.SAMPLES_FILE
    path.write_bytes(path.read_bytes()[:200])
    problems = validate([chunked_run])
    assert any(p.startswith(f"{path}: unreadable samples") for p in problems), problems


def test_validate_reports_a_chunk_whose_info_lacks_a_record_per_generation(chunked_run):
    path = chunked_run / R.GENS_DIR / "000005-000008" / RF.INFO_FILE
    data = R.read_json(path)
    data["generations"] = data["generations"][:3]
    path.write_text(json.dumps(data))
    problems = validate([chunked_run])
    assert problems == [f"{path}: the chunk's info.json lists no record per generation 5..8"], problems


def test_validate_reports_a_folder_overlapping_a_chunk(chunked_run):
    gens = chunked_run / R.GENS_DIR
    (gens / "000001-000004").rename(gens / "000001-000003")
    (gens / "000004").mkdir()
    overlap = gens / "000003-000006"
    overlap.mkdir()
    problems = validate([chunked_run])
    assert any(p.startswith(f"{overlap}: generations 3..6 overlap the folders of generations 0..") for p in problems), problems


def test_validate_reports_a_chunk_holding_samples_of_other_generations(chunked_run):
    path = chunked_run / R.GENS_DIR / "000005-000008" / RF.SAMPLES_FILE
    table = pq.read_table(path)
    table = table.set_column(0, "generation", pa.array(np.full(table.num_rows, 5, dtype=np.int64)))
    pq.write_table(table, path)
    problems = validate([chunked_run])
    assert any(p.startswith(f"{path}: holds samples of generations [5]") for p in problems), problems


# -- (f) the tools on a chunked run ---------------------------------------------------------------


def test_show_follows_one_sample_through_chunks(chunked_run, capsys):
    code, out, err = bench_cli(capsys, "show", chunked_run, "--prompt", "4")
    assert code == 0, err
    for k in range(GENERATIONS + 1):
        samples, scores = RF.generation_samples(chunked_run, k)
        assert f"generation {k} (drawn by M_{k})" in out
        assert f"{-scores['loglik_reference'][4] / scores['units'][4]:.3f}" in out
        assert str(samples.data[4].tolist()) in out
    assert len({tuple(RF.generation_samples(chunked_run, k)[0].data[4]) for k in (5, 6, 7, 8)}) == 4


def test_rescore_of_a_chunked_run_recomputes_the_same_values(chunked_run, capsys):
    before = pq.read_table(chunked_run / R.METRICS_FILE)
    units = R.units(chunked_run)
    for _, _, folder in units:  # drop gmm-l2 everywhere, then rescore it: the same values come back
        rows = [r for r in R.read_parquet_rows(folder / R.METRICS_FILE) if r["metric"] != "gmm-l2"]
        R.write_parquet(folder / R.METRICS_FILE, R.gen_metrics_table(rows))
    R.consolidate(chunked_run, R.read_json(chunked_run / R.RUN_JSON), GENERATIONS + 1)
    assert "gmm-l2" not in pq.read_table(chunked_run / R.METRICS_FILE).column("metric").to_pylist()
    code, out, err = bench_cli(capsys, "rescore", chunked_run, "--metric", "gmm-l2")
    assert code == 0, err
    assert R.units(chunked_run) == units

    def by_key(table):
        rows = table.select(["generation", "metric", "value"]).to_pylist()
        return {(r["generation"], r["metric"]): r["value"] for r in rows}

    assert by_key(pq.read_table(chunked_run / R.METRICS_FILE)) == by_key(before)
    assert [r["value"] for r in RF.generation_rows(chunked_run, 6) if r["metric"] == "gmm-l2"] == [
        by_key(before)[(6, "gmm-l2")]]
    assert validate([chunked_run]) == []


@pytest.mark.slow
def test_report_and_plots_of_a_chunked_run(chunked_run, tmp_path):
    files = P.plot([chunked_run], tmp_path / "plots", metrics=["gmm-l2"])
    assert files and all(f.stat().st_size > 0 for f in files)
    (page,) = RP.report([chunked_run], tmp_path / "report", metrics=["gmm-l2"])
    text = page.read_text()
    last = R.read_metrics(chunked_run).to_pandas().query(f"metric == 'gmm-l2' and generation == {GENERATIONS}")
    assert "gmm-l2" in text and P.fmt(last.value.item()) in text
    assert f"samples drawn by M_0 and by M_{GENERATIONS}" in text


# -- (g) a run folder of the old layout ----------------------------------------------------------


def test_an_old_layout_run_extends_with_chunks_to_the_uninterrupted_results(tmp_path, monkeypatch):
    whole = contents(one_folder_per_generation(monkeypatch, tmp_path / "whole"))
    old = one_folder_per_generation(monkeypatch, tmp_path / "old", generations=5)
    data = R.read_json(old / R.RUN_JSON)
    data["schema_version"] = 1  # as written before chunks
    (old / R.RUN_JSON).write_text(json.dumps(data))
    assert validate([old]) == []
    assert run_gmm(tmp_path / "old") == old
    assert layout(old) == [(k, k) for k in range(6)] + [(6, 9), (10, 10)]
    assert R.read_json(old / R.RUN_JSON)["schema_version"] == 2
    assert_same(contents(old), whole)
    assert validate([old]) == []


def test_samples_of_another_schema_start_a_new_chunk(tmp_path, monkeypatch):
    """One Parquet file holds one schema: a generation whose samples carry another extra column
    than the pending ones' is committed after them, in a chunk of its own; every generation
    reads back with exactly its own columns."""
    from bench.components import Samples
    from collapse_bench_plugins import gmm

    b = Bench()
    generator = b.generators.get("gmm-sample")

    def generate(request):
        samples = gmm.generate(request)
        if 3 <= request.generation <= 5:  # generations 3..5 tag their samples
            return Samples(samples.kind, samples.data, {"tag": [f"g{request.generation}"] * len(samples)})
        return samples

    object.__setattr__(generator, "generate", generate)  # a frozen component of this test's own Bench
    run = run_gmm(tmp_path, bench=b)
    assert layout(run) == [(0, 0), (1, 2), (3, 5), (6, 9), (10, 10)]
    for k in range(GENERATIONS + 1):
        samples, _ = RF.generation_samples(run, k)
        assert samples.columns == ({"tag": [f"g{k}"] * len(samples)} if 3 <= k <= 5 else {})


def test_a_chunk_holds_no_more_than_chunk_bytes(tmp_path, monkeypatch):
    """CHUNK_BYTES bounds what a run holds in memory: samples (with their three scores) and the
    states a chunk writes. A gmm smoke generation holds 50 2-D samples (800 bytes, 1,200 with
    scores) and its state (14 floats, 112 bytes, dropped once a later one is held): 2,112,
    4,224, then 6,224 >= 5,000 bytes commit three generations at a time."""
    monkeypatch.setattr(L, "CHUNK_BYTES", 5_000)
    run = run_gmm(tmp_path)
    assert layout(run) == [(0, 0), (1, 3), (4, 6), (7, 9), (10, 10)]
