"""`bench sweep FILE`: grids expanded into runs, finished runs skipped, failures summarised, crashes
and concurrent sweeps survived."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import bench
import bench.api as cb
from bench import results as R
from bench import sweep as S
from bench.executors import Task, execute_task
from bench.plugins import Bench
from tests.helpers import bench_cli, assert_same_results

ISSUE_YAML = """\
plugin: gmm
generations: 15
grid:
  policy: [replace, "mix:0.1"]
  seed: [0, 1]
"""

ISSUE_TOML = """\
plugin = "gmm"
generations = 15

[grid]
policy = ["replace", "mix:0.1"]
seed = [0, 1]
"""


def summaries(out):
    return [json.loads(p.read_text()) for p in sorted((Path(out) / S.SUMMARY_DIR).glob("*.json"))]


def sweep_env():
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    return env


@pytest.mark.slow
@pytest.mark.parametrize("name, text, workers", [("grid.yaml", ISSUE_YAML, 2), ("grid.toml", ISSUE_TOML, 1)])
def test_the_issue_grid_runs_in_yaml_and_toml(capsys, tmp_path, name, text, workers):
    (tmp_path / name).write_text(text)
    out = tmp_path / "results"
    code, stdout, _ = bench_cli(capsys, "sweep", tmp_path / name, "--out", out, "--workers", workers)
    assert code == 0, stdout
    assert "4 done, 0 skipped, 0 failed" in stdout
    runs = R.find_runs([out])
    assert len(runs) == 4
    made = set()
    for folder in runs:
        info = R.read_json(folder / R.RUN_JSON)
        assert info["status"] == "complete" and info["generations_done"] == 16
        assert info["spec"]["plugin"] == "gmm" and info["spec"]["generations"] == 15
        made.add((info["identity"]["policy"], info["spec"]["seed"]))
    assert made == {("replace", 0), ("replace", 1), ("mix:0.1", 0), ("mix:0.1", 1)}
    (summary,) = summaries(out)
    assert summary["counts"]["done"] == 4 and summary["executor"] == "local"
    assert {tuple(sorted(r["entry"].items())) for r in summary["runs"]} == {
        (("policy", p), ("seed", s)) for p in ("replace", "mix:0.1") for s in (0, 1)}
    code, out_text, _ = bench_cli(capsys, "validate", out)
    assert code == 0, out_text


class Recorder:
    """An executor plugin that records the tasks it is given and runs them in-process."""

    __name__ = "recorder"

    def __init__(self):
        self.tasks = []

    def _run(self, tasks, settings):
        self.tasks.extend(tasks)
        for task in tasks:
            yield from execute_task(task)

    @bench.hookimpl
    def bench_register_executors(self, register):
        register(bench.Executor(name="recorder", run=self._run, options={"note": None}))


def test_a_finished_sweep_is_skipped_without_starting_a_worker(tmp_path):
    (tmp_path / "s.yaml").write_text("plugin: gaussian\ngenerations: 3\nseeds: 0-2\nexecutor: recorder\n"
                                     "recorder: {note: hello}\n")
    recorder = Recorder()
    b = Bench(extra_plugins=[recorder])
    first = S.run_sweep(b, S.load(b, tmp_path / "s.yaml", out=tmp_path / "r"))
    assert [first.count(s) for s in ("done", "skipped", "failed")] == [3, 0, 0]
    assert len(recorder.tasks) == 3 and all(len(t.specs) == 1 for t in recorder.tasks)
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "r").glob("*/metrics.parquet")}

    recorder.tasks.clear()
    sweep = S.load(b, tmp_path / "s.yaml", out=tmp_path / "r")
    assert sweep.options == {"note": "hello"}
    second = S.run_sweep(b, sweep)
    assert recorder.tasks == []
    assert [second.count(s) for s in ("done", "skipped", "failed")] == [0, 3, 0]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert len(summaries(tmp_path / "r")) == 2  # one JSON per sweep, never overwritten


def test_extending_generations_reruns_and_dry_run_shows_what_is_finished(capsys, tmp_path):
    out = tmp_path / "r"
    cb.run("gaussian", seeds=0, generations=3, out=out)
    (tmp_path / "s.yaml").write_text("plugin: gaussian\ngenerations: 3\ngrid:\n  seed: [0, 1]\n")
    code, stdout, _ = bench_cli(capsys, "sweep", tmp_path / "s.yaml", "--out", out, "--dry-run")
    assert code == 0
    lines = stdout.splitlines()
    assert lines[0].startswith("finished (skip)") and "-s0-" in lines[0]
    assert lines[1].startswith("new") and "-s1-" in lines[1]
    assert "1 to run in 1 task(s), 1 finished" in lines[2]
    assert not (out / S.SUMMARY_DIR).exists() and len(R.find_runs([out])) == 1  # the dry run wrote nothing

    # More generations than on disk: the same run (same folder) is extended, not skipped.
    (tmp_path / "s.yaml").write_text("plugin: gaussian\ngenerations: 5\ngrid:\n  seed: [0]\n")
    code, stdout, _ = bench_cli(capsys, "sweep", tmp_path / "s.yaml", "--out", out, "--dry-run")
    assert stdout.splitlines()[0].startswith("partial 4/6")
    code, stdout, _ = bench_cli(capsys, "sweep", tmp_path / "s.yaml", "--out", out, "--workers", "1")
    assert code == 0 and "1 done" in stdout
    assert R.finished_generations(R.find_runs([out])[0]) == 6


def test_a_finished_run_longer_than_the_grid_is_named_with_its_own_track(capsys, tmp_path):
    """The README's order: a 60-generation `bench run`, then a 15-generation grid over the same
    folder. The longer run is skipped as it is; the dry run, the sweep's log, its printed summary
    and the JSON say so, and the JSON gives each run's track so that readers never mix them."""
    out = tmp_path / "r"
    cb.run("gaussian", seeds=0, generations=5, out=out)
    (tmp_path / "s.yaml").write_text("plugin: gaussian\ngenerations: 3\ngrid:\n  seed: [0, 1]\n")
    code, stdout, _ = bench_cli(capsys, "sweep", tmp_path / "s.yaml", "--out", out, "--dry-run")
    assert code == 0
    lines = stdout.splitlines()
    assert lines[0].startswith("finished (skip)") and "-s0-" in lines[0]
    assert "holds generations 0..5, more than this grid's 3" in lines[1]
    assert "ranks on the 5-generation track" in lines[1] and "generations: 5" in lines[1]
    assert lines[2].startswith("new") and "-s1-" in lines[2]
    assert "1 finished run(s) hold more generations than the grid" in lines[-1]

    code, stdout, stderr = bench_cli(capsys, "sweep", tmp_path / "s.yaml", "--out", out, "--workers", "1")
    assert code == 0 and "1 done, 1 skipped" in stdout
    assert "holds generations 0..5" in stderr  # the log, before the runs start
    assert "skipped:" in stdout and "ranks on the 5-generation track" in stdout
    (summary,) = summaries(out)
    rows = {r["seed"]: r for r in summary["runs"]}
    assert rows[0]["note"] and rows[1]["note"] is None
    assert rows[0]["track"]["generations"] == 5 and rows[1]["track"]["generations"] == 3
    assert rows[0]["track"]["id"] != rows[1]["track"]["id"] and rows[0]["track"]["name"] == "gaussian/smoke"

    # The same grid over runs of its own length: one track, no note.
    (tmp_path / "s.yaml").write_text("plugin: gaussian\ngenerations: 5\ngrid:\n  seed: [0]\n")
    code, stdout, _ = bench_cli(capsys, "sweep", tmp_path / "s.yaml", "--out", out, "--dry-run")
    assert "holds generations" not in stdout and "track of their own" not in stdout


@pytest.mark.slow
def test_one_failing_run_does_not_stop_the_others(capsys, tmp_path):
    # The std = 3 run cannot make its folder (a file stands in its place): it fails when it starts.
    (tmp_path / "s.yaml").write_text("plugin: gaussian\ngenerations: 3\ngrid:\n  std: [1.0, 3.0, 2.0]\n")
    out = tmp_path / "r"
    blocked = S.load(Bench(), tmp_path / "s.yaml", out=out).runs[1].folder
    out.mkdir()
    blocked.write_text("not a run folder")
    code, stdout, _ = bench_cli(capsys, "sweep", tmp_path / "s.yaml", "--out", out, "--workers", "2",
                                "--summary", tmp_path / "summary.json")
    assert code == 1
    assert "2 done, 0 skipped, 1 failed" in stdout
    failed_lines = [line for line in stdout.splitlines() if line.strip().startswith("failed:")]
    assert len(failed_lines) == 1 and blocked.name in failed_lines[0]
    summary = json.loads((tmp_path / "summary.json").read_text())
    (bad,) = [r for r in summary["runs"] if r["status"] == "failed"]
    assert bad["entry"] == {"std": 3.0, "seed": 0} and bad["error"]
    assert bad["folder"] in failed_lines[0]
    good = [r for r in summary["runs"] if r["status"] == "done"]
    assert {r["entry"]["std"] for r in good} == {1.0, 2.0}
    assert all(R.read_json(Path(r["folder"]) / R.RUN_JSON)["status"] == "complete" for r in good)


@pytest.mark.parametrize("text, message", [
    ("plugin: gmm\ngrid:\n  policy: [replace, 'mixx:0.1']\n", "grid entry policy=mixx:0.1: unknown policy 'mixx'"),
    ("plugin: gmm\ngrid:\n  n_sample: [50, 100]\n", "has no parameter 'n_sample'. Did you mean 'n_samples'"),
    ("plugin: gmm\ngrid:\n  polcy: [replace]\n", "the axis 'policy'"),
    ("plugin: gmm\ngenrations: 3\n", "unknown key 'genrations'. Did you mean 'generations'"),
    ("plugin: gmm\ngrid:\n  policy: replace\n", "grid.policy must be a list"),
    ("plugin: gmm\npolicy: replace\ngrid:\n  policy: [replace]\n", "both a grid axis and a top-level value"),
    ("plugin: gmm\ngrid:\n  seed: [0, x]\n", "invalid seeds"),
    ("plugin: gmm\nexecutor: dusk\n", "unknown executor 'dusk'. Did you mean 'dask'"),
    ("plugin: gmm\nexecutor: dask\ndask: {schedular: x}\n", "has no option 'schedular'. Did you mean 'scheduler'"),
    ("grid:\n  seed: [0]\n", "names no plugin"),
    ("plugin: gmm\ngrid: [1, 2\n", "is not valid YAML"),
    ("plugin: [gaussian, gmm]\n", "plugin must be a model name"),
    ("plugin: gmm\nout: [a]\n", "out must be a folder name"),
    ("plugin: gmm\ngrid:\n  policy: [{a: 1}]\n", "value 1 of grid.policy must be a policy"),
    ("plugin: gmm\ngrid:\n  preset: [smoke, [paper]]\n", "value 2 of grid.preset must be a preset name"),
    ("plugin: gmm\nsummary: [a]\n", "summary must be a file name"),
    ("plugin: gmm\nexecutor: [local]\n", "executor must be an executor name"),
    ("plugin: gmm\ndask: 5\n", "dask must be a mapping of option: value"),
    ("plugin: gmm\ngrid: 5\n", "grid must be a mapping of axis: [values]"),
    ("plugin: gmm\nseed: '0-2000000'\n", "2,000,001 runs, more than the limit of 10,000"),
    ("plugin: gmm\ngrid:\n  seed: '0-200'\n  n_samples: [" + ", ".join(map(str, range(10, 60))) + "]\n",
     "the grid: 10,050 runs, more than the limit of 10,000 runs per command: split the grid"),
])
def test_a_mistake_in_the_file_exits_2_and_writes_nothing(capsys, tmp_path, text, message):
    (tmp_path / "s.yaml").write_text(text)
    code, _, err = bench_cli(capsys, "sweep", tmp_path / "s.yaml", "--out", tmp_path / "r")
    assert code == 2
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_command_line_options_win_and_foreign_options_are_refused(capsys, tmp_path):
    (tmp_path / "s.yaml").write_text("plugin: gaussian\ngenerations: 2\nexecutor: dask\nworkers: 3\n"
                                     "out: elsewhere\nslurm: {partition: gpu}\n")
    b = Bench()
    sweep = S.load(b, tmp_path / "s.yaml", out=tmp_path / "r", executor="local", workers=1)
    assert (sweep.executor, sweep.workers, sweep.out) == ("local", 1, (tmp_path / "r").absolute())
    code, _, err = bench_cli(capsys, "sweep", tmp_path / "s.yaml", "--out", tmp_path / "r", "--executor", "local",
                             "--scheduler", "tcp://127.0.0.1:1")
    assert code == 2 and "--scheduler is an option of --executor dask" in err
    slurm = S.load(b, tmp_path / "s.yaml", executor="slurm", executor_flags={"time": "1:00:00"})
    assert slurm.options["partition"] == "gpu" and slurm.options["time"] == "1:00:00"


def test_grid_expansion_dedupes_runs_and_keeps_the_longest(tmp_path):
    b = Bench()
    data = {"plugin": "gaussian", "seeds": "0-1",
            "grid": {"generations": [2, 4], "set": {"n_samples": [20, 30]}, "policy": ["replace"]}}
    pairs, duplicates = S.expand(b, data)
    # generations is not part of the run id: 2 and 4 are the same run, and the longer one stays
    assert duplicates == 4 and len(pairs) == 4
    assert {(s.params["n_samples"], s.seed, s.generations) for _, s in pairs} == {
        (n, seed, 4) for n in (20, 30) for seed in (0, 1)}
    assert len({s.run_id for _, s in pairs}) == 4

    # policy parameters and metric lists are axes too; top-level seeds multiply every combination
    data = {"plugin": "gaussian", "policy": "mix", "seeds": [3, 4],
            "grid": {"policy.p": [0.1, 0.2], "metrics": [["gaussian-var"], ["gaussian-var", "logdet-diff"]]}}
    pairs, duplicates = S.expand(b, data)
    assert duplicates == 0 and len(pairs) == 8
    assert {(s.policy_params["p"], tuple(s.metrics), s.seed) for _, s in pairs} == {
        (p, m, seed) for p in (0.1, 0.2) for m in (("gaussian-var",), ("gaussian-var", "logdet-diff"))
        for seed in (3, 4)}
    assert all(entry["seed"] == s.seed and entry["policy.p"] == s.policy_params["p"] for entry, s in pairs)


def test_grid_blocks_join_their_runs_and_find_mistakes_per_block():
    b = Bench()
    data = {"preset": "smoke", "grid": [
        {"plugin": ["gaussian"], "seed": [0, 1, 2], "mitigation": ["replace", "mix:0.1"]},
        {"plugin": ["categorical"], "seed": [0], "mitigation": ["replace", "top-k:3"]},
        {"plugin": ["gaussian"], "seed": [0], "mitigation": ["replace"]},  # a duplicate of block 1
    ]}
    na: list = []
    pairs, duplicates = S.expand(b, data, "s", na)
    assert duplicates == 1 and na == []
    assert sorted((s.plugin, s.seed, s.policy_label, s.params.get("top_k", 0)) for _, s in pairs) == [
        ("categorical", 0, "replace", 0), ("categorical", 0, "replace", 3),
        *[("gaussian", seed, policy, 0) for seed in (0, 1, 2) for policy in ("mix:0.1", "replace")]]
    with pytest.raises(bench.BenchError, match="grid block 2, grid entry plugin=gaussian, mitigation=mixx"):
        S.expand(b, {"grid": [{"plugin": ["gaussian"]}, {"plugin": ["gaussian"], "mitigation": ["mixx"]}]})
    with pytest.raises(bench.BenchError, match="grid block 1 must be a mapping"):
        S.expand(b, {"grid": [["gaussian"]]})


class Batched:
    """A batch-capable trainer for the gaussian model: fit_batch fits each request as fit does."""

    __name__ = "test-batched"

    def __init__(self):
        self.batches = []

    def _fit_batch(self, requests):
        from collapse_bench_plugins.gaussian import fit_gaussian

        self.batches.append(len(requests))
        return [fit_gaussian(r) for r in requests]

    @bench.hookimpl
    def bench_register_trainers(self, register):
        from collapse_bench_plugins.gaussian import fit_gaussian

        register(bench.Trainer("gaussian-fit-lockstep", fit_gaussian, fit_batch=self._fit_batch,
                               kinds=("vectors",)))


def test_seeds_of_one_setting_run_in_lockstep_when_the_trainer_batches(tmp_path):
    from bench.loop import FolderLock, Run

    batched = Batched()
    b = Bench(extra_plugins=[batched])
    path = tmp_path / "s.yaml"
    path.write_text("plugin: gaussian\ngenerations: 3\nseeds: 0-3\ntrainer: gaussian-fit-lockstep\n"
                    "grid:\n  policy: [replace, 'mix:0.5']\n")
    out = tmp_path / "r"
    for workers, sizes in ((1, [4, 4]), (2, [4, 4]), (4, [2, 2, 2, 2]), (8, [1] * 8)):
        sweep = S.load(b, path, out=out, workers=workers)
        assert sorted(len(t.specs) for t in S.plan_tasks(b, sweep)) == sizes
    assert [len(t.specs) for t in S.plan_tasks(b, S.load(b, path, out=out, workers=1, batch=False))] == [1] * 8
    plain = tmp_path / "plain.yaml"
    plain.write_text("plugin: gaussian\ngenerations: 3\nseeds: 0-3\n")  # gaussian-fit has no fit_batch
    assert [len(t.specs) for t in S.plan_tasks(b, S.load(b, plain, out=out, workers=1))] == [1] * 4

    sweep = S.load(b, path, out=out, workers=1)  # in-process: two tasks of four seeds
    busy = sweep.runs[2]  # policy replace, seed 2: another process holds its folder
    busy.folder.mkdir(parents=True)
    with FolderLock(busy.folder / ".lock", "run folder"):
        summary = S.run_sweep(b, sweep)
    statuses = {row["folder"]: row["status"] for row in summary.rows}
    assert statuses.pop(str(busy.folder)) == "busy"
    assert set(statuses.values()) == {"done"}
    assert max(batched.batches) == 4  # the fits of four chains went to fit_batch together
    assert "busy:" in "\n".join(summary.lines())
    # a lockstep chain equals the same spec run alone (fit instead of fit_batch)
    lone = Run(b, sweep.runs[0].spec, tmp_path / "lone").execute()
    assert_same_results(sweep.runs[0].folder, lone.path)

    # the busy run is all that is left; a task holding finished runs reports them as finished
    sweep = S.load(b, path, out=out, workers=1)
    assert [r.folder for r in sweep.runs if not r.finished] == [busy.folder]
    results = execute_task(Task(specs=tuple(r.spec.to_dict() for r in sweep.runs[:4]), out=str(out)), bench=b)
    assert [r.status for r in results] == ["finished", "finished", "complete", "finished"]


def _start_sweep(path, out, *extra):
    return subprocess.Popen([sys.executable, "-m", "bench.cli", "sweep", str(path), "--out", str(out), *map(str, extra)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=sweep_env(),
                            start_new_session=True)


@pytest.mark.slow
def test_a_killed_sweep_rerun_finishes_only_what_is_missing(tmp_path):
    (tmp_path / "s.yaml").write_text("plugin: gaussian\ngenerations: 150\nseeds: 0-2\n")
    out = tmp_path / "r"
    b = Bench()
    runs = S.load(b, tmp_path / "s.yaml", out=out).runs
    proc = _start_sweep(tmp_path / "s.yaml", out, "--workers", "1")  # in order: seed 0, 1, 2
    try:
        deadline = time.monotonic() + 60
        while R.finished_generations(runs[0].folder) < 151 or R.finished_generations(runs[1].folder) < 1:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the sweep made no progress"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    partial = R.finished_generations(runs[1].folder)

    proc = _start_sweep(tmp_path / "s.yaml", out, "--workers", "2")
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    (second,) = summaries(out)  # the killed sweep never got to write one
    statuses = {Path(r["folder"]).name: r["status"] for r in second["runs"]}
    assert statuses[runs[0].folder.name] == "skipped"
    assert statuses[runs[1].folder.name] == "done" and statuses[runs[2].folder.name] == "done"
    if partial < 151:  # the kill landed mid-run: it resumed after its last finished generation
        assert "(resumed)" in (runs[1].folder / R.LOG_FILE).read_text()
    for run in runs:
        assert R.finished_generations(run.folder) == 151
    reference = cb.run("gaussian", seeds=1, generations=150, out=tmp_path / "ref")[0].path
    assert_same_results(runs[1].folder, reference)


@pytest.mark.slow
def test_two_sweeps_at_once_on_one_folder_lose_nothing(tmp_path):
    out = tmp_path / "r"
    (tmp_path / "a.yaml").write_text("plugin: gaussian\ngenerations: 40\nseeds: 0-1\n"
                                     "grid:\n  policy: ['mix:0.5', replace]\n")
    (tmp_path / "b.yaml").write_text("plugin: gaussian\ngenerations: 40\nseeds: 0-1\n"
                                     "grid:\n  policy: ['mix:0.5', accumulate]\n")
    procs = [_start_sweep(tmp_path / name, out, "--workers", "2") for name in ("a.yaml", "b.yaml")]
    outputs = [p.communicate(timeout=180) for p in procs]
    by_name = {s["sweep"]: s for s in summaries(out)}
    for p, name, (stdout, stderr) in zip(procs, ("a", "b"), outputs):
        # a sweep that found a shared run busy (the other sweep was running it) says so and exits 1
        busy = by_name[name]["counts"]["busy"]
        assert p.returncode == (1 if busy else 0), stdout + stderr
        assert ("run the same sweep again" in stdout) == bool(busy)
    folders = R.find_runs([out])
    assert len(folders) == 6
    for folder in folders:
        info = R.read_json(folder / R.RUN_JSON)
        assert info["status"] == "complete" and R.finished_generations(folder) == 41
    check = subprocess.run([sys.executable, "-m", "bench.cli", "validate", str(out)], capture_output=True,
                           text=True, env=sweep_env(), check=False)
    assert check.returncode == 0, check.stdout
    both = summaries(out)
    assert len(both) == 2
    for s in both:
        assert s["counts"]["failed"] == 0 and s["counts"]["interrupted"] == 0
        assert s["counts"]["done"] + s["counts"]["skipped"] + s["counts"]["busy"] == 4
    # the shared runs: each was run by one sweep (or both, one after the other) and equals a lone run
    for seed in (0, 1):
        (folder,) = [f for f in folders if f"-mix-0.5-s{seed}-" in f.name]
        reference = cb.run("gaussian", seeds=seed, generations=40, policy="mix:0.5", out=tmp_path / "ref")[0].path
        assert_same_results(folder, reference)


@pytest.mark.parametrize("grid, expected", [
    ("grid:\n  seed: []\n", "grid.seed is an empty list"),
    ("grid:\n  policy: []\n", "grid.policy is an empty list"),
])
def test_an_empty_grid_axis_is_a_mistake(capsys, tmp_path, grid, expected):
    path = tmp_path / "s.yaml"
    path.write_text("plugin: gaussian\ngenerations: 2\n" + grid)
    code, _, err = bench_cli(capsys, "sweep", path, "--out", tmp_path / "r")
    assert code == 2 and expected in err and not (tmp_path / "r").exists()


def test_an_unwritable_summary_is_refused_before_any_run(capsys, tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("plugin: gaussian\ngenerations: 2\n")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, _, err = bench_cli(capsys, "sweep", path, "--out", tmp_path / "r", "--summary", blocker / "x.json")
    assert code == 2 and "--summary" in err and "cannot write" in err
    assert not list((tmp_path / "r").glob("gaussian-*"))  # no run started


def test_a_value_the_model_refuses_is_found_before_any_run(capsys, tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("plugin: gmm\ngenerations: 2\ngrid:\n  n_samples: [50, 1]\n")
    code, _, err = bench_cli(capsys, "sweep", path, "--out", tmp_path / "r")
    assert code == 2
    assert "grid entry n_samples=1" in err and "must be at least n_components (2)" in err
    assert not list((tmp_path / "r").glob("gmm-*"))


def test_a_metric_named_as_one_string_is_one_metric(tmp_path):
    (tmp_path / "s.yaml").write_text("plugin: gaussian\ngrid:\n  metrics: [gaussian-var, [test-nll, logdet-diff]]\n")
    runs = S.load(Bench(), tmp_path / "s.yaml", out=tmp_path / "r").runs
    assert [r.spec.metrics for r in runs] == [["gaussian-var"], ["test-nll", "logdet-diff"]]
    (tmp_path / "t.yaml").write_text("plugin: gaussian\nmetrics: logdet-diff\n")
    (run,) = S.load(Bench(), tmp_path / "t.yaml", out=tmp_path / "r").runs
    assert run.spec.metrics == ["logdet-diff"]


def test_a_busy_run_makes_the_sweep_exit_1_and_says_what_to_do(capsys, tmp_path):
    from bench.loop import FolderLock

    out = tmp_path / "r"
    (tmp_path / "s.yaml").write_text("plugin: gaussian\ngenerations: 2\nseeds: 0-1\n")
    held = cb.run("gaussian", seeds=0, generations=1, out=out)[0].path  # partial: the sweep wants 2
    with FolderLock(held / ".lock", "test"):
        code, stdout, _ = bench_cli(capsys, "sweep", tmp_path / "s.yaml", "--out", out, "--workers", "1")
    assert code == 1
    assert "1 done, 0 skipped, 1 busy, 0 failed" in stdout
    assert f"busy: {held}" in stdout and "run the same sweep again" in stdout
    code, stdout, _ = bench_cli(capsys, "sweep", tmp_path / "s.yaml", "--out", out, "--workers", "1")
    assert code == 0 and "1 done, 1 skipped" in stdout


def _workers_of(pid):
    """The pids of the multiprocessing workers whose parent is ``pid`` (read from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and b"multiprocessing" in cmdline and b"resource_tracker" not in cmdline:
            found.append(int(stat.parent.name))
    return found


def _alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie has ended; nobody may reap it here


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the workers through /proc")
def test_workers_of_a_killed_sweep_stop_and_release_their_runs(tmp_path):
    from bench.loop import FolderLock

    (tmp_path / "s.yaml").write_text("plugin: gaussian\ngenerations: 5000\nseeds: 0-1\n")
    out = tmp_path / "r"
    runs = S.load(Bench(), tmp_path / "s.yaml", out=out).runs
    proc = _start_sweep(tmp_path / "s.yaml", out, "--workers", "2", "--no-batch")
    try:
        deadline = time.monotonic() + 120
        while any(R.finished_generations(run.folder) < 2 for run in runs):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the sweep made no progress"
            time.sleep(0.05)
        workers = _workers_of(proc.pid)
        assert len(workers) == 2
    finally:
        proc.kill()  # the sweep's own process only: its workers are left to notice
        proc.wait()  # (not communicate: workers still running would hold its output pipes)
    try:
        deadline = time.monotonic() + 120
        while any(_alive(pid) for pid in workers):
            assert time.monotonic() < deadline, "the workers of the killed sweep are still running"
            time.sleep(0.1)
    finally:
        for pid in filter(_alive, workers):
            os.kill(pid, signal.SIGKILL)
        proc.communicate()
    for run in runs:
        with FolderLock(run.folder / ".lock", "test"):  # released: a rerun finds no run busy
            pass
        assert R.read_json(run.folder / R.RUN_JSON)["status"] == "interrupted"
        assert R.finished_generations(run.folder) < 5001
