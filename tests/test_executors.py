"""The executors of `bench sweep`: plugins like any other; local pools, a real Dask LocalCluster on
loopback, and submitit's local executor (job arrays, pre-emption and resume)."""

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from collapse_bench_plugins import executors as E

import bench.api as cb
from bench import results as R
from bench import sweep as S
from bench.cli import main
from bench.errors import BenchError
from bench.executors import THREAD_ENV, Task, execute_task, thread_limits
from bench.plugins import Bench
from bench.spec import resolve
from tests.helpers import assert_same_results


def write_sweep(path, text):
    path.write_text(text)
    return path


def test_executors_are_plugins_listed_by_bench_plugins(capsys):
    main(["plugins", "--json"])
    infos = {info["name"]: info for info in json.loads(capsys.readouterr().out)}
    assert infos["executors"]["registers"]["executors"] == ["dask", "local", "slurm"]
    assert infos["executors"]["first_party"] is True
    b = Bench()
    assert b.owner("executors", "dask").name == "executors"
    with pytest.raises(BenchError, match="unknown executor 'slurmm'. Did you mean 'slurm'"):
        b.executors.get("slurmm")


def test_thread_limits_set_and_restore_the_thread_pools(monkeypatch):
    from threadpoolctl import threadpool_info

    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    with thread_limits(1):
        assert all(os.environ[name] == "1" for name in THREAD_ENV)
        assert all(pool["num_threads"] == 1 for pool in threadpool_info())
    assert os.environ["OMP_NUM_THREADS"] == "7" and "MKL_NUM_THREADS" not in os.environ


def test_a_missing_engine_names_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed raises ImportError
    monkeypatch.setitem(sys.modules, "submitit", None)
    settings = S.ExecutorSettings(out=Path("."), options=dict(E.DASK_OPTIONS))
    with pytest.raises(BenchError, match=r'pip install "collapse-bench\[dask\]"'):
        E.check_dask(settings)
    with pytest.raises(BenchError, match=r'pip install "collapse-bench\[slurm\]"'):
        E.check_slurm(S.ExecutorSettings(out=Path("."), options=dict(E.SLURM_OPTIONS)))


@pytest.mark.parametrize("value, minutes", [(90, 90), ("90", 90), ("1:30:00", 90), ("2-00:00:00", 2880),
                                            ("0:00:30", 1), ("1-2:03:00", 1563)])
def test_slurm_time_limits(value, minutes):
    assert E.slurm_minutes(value) == minutes


@pytest.mark.parametrize("value", ["1h", 0, "0:00:00", "1:30", True])
def test_slurm_time_mistakes(value):
    with pytest.raises(BenchError, match="H:MM:SS"):
        E.slurm_minutes(value)


def test_gpu_runs_ask_dask_for_a_gpu_only_where_the_cluster_has_gpus():
    cuda = Task(specs=({"params": {"device": "cuda:1"}},), out="r")
    cpu = Task(specs=({"params": {"device": "cpu"}},), out="r")
    assert E.task_resources(cuda, {}, {"GPU"}) == {"GPU": 1.0}
    assert E.task_resources(cpu, {}, {"GPU"}) == {}
    assert E.task_resources(cuda, {}, set()) == {}
    assert E.task_resources(cuda, {"GPU": 2.0}, {"GPU"}) == {"GPU": 2.0}
    with pytest.raises(BenchError, match="worker_resources"):
        E.check_dask(S.ExecutorSettings(out=Path("."), options={**E.DASK_OPTIONS, "resources": {"GPU": 1}}))


SWEEP = """\
plugin: gaussian
generations: 4
grid:
  std: [1.0, 3.0]
  seed: [0, 1]
"""


def _load_blocked(b, path, out):
    """The sweep of ``path``, its std = 3 runs made to fail when they start: a file stands where
    each one's folder goes (the model's check refuses an out-of-range std before any run)."""
    sweep = S.load(b, path, out=out)
    out.mkdir(parents=True)
    for run in sweep.runs:
        if run.entry["std"] == 3.0:
            run.folder.write_text("not a run folder")
    return sweep


def _check_outcome(summary, out):
    by_entry = {(r["entry"]["std"], r["entry"]["seed"]): r for r in summary.rows}
    assert {k: r["status"] for k, r in by_entry.items()} == {
        (1.0, 0): "done", (1.0, 1): "done", (3.0, 0): "failed", (3.0, 1): "failed"}
    assert all(by_entry[(3.0, s)]["folder"] in by_entry[(3.0, s)]["error"] for s in (0, 1))
    # a run through the executor equals the same run in this process
    spec = resolve(Bench(), "gaussian", seed=1, generations=4)
    (local,) = execute_task(Task(specs=(spec.to_dict(),), out=str(out.parent / "ref")))
    assert_same_results(by_entry[(1.0, 1)]["folder"], local.folder)


@pytest.mark.slow
def test_dask_on_a_local_cluster_on_loopback_with_gpu_resource_tags(tmp_path):
    path = write_sweep(tmp_path / "s.yaml", SWEEP + "executor: dask\nworkers: 2\n"
                       "dask:\n  resources: {GPU: 1}\n  worker_resources: {GPU: 1}\n")
    b = Bench()
    sweep = _load_blocked(b, path, tmp_path / "r")
    summary = S.run_sweep(b, sweep)
    _check_outcome(summary, tmp_path / "r")
    assert summary.executor == "dask"


@pytest.mark.slow
def test_dask_through_a_running_scheduler(tmp_path):
    import logging

    from distributed import LocalCluster

    with LocalCluster(host="127.0.0.1", n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=None, silence_logs=logging.ERROR) as cluster:
        path = write_sweep(tmp_path / "s.yaml", "plugin: gaussian\ngenerations: 3\nseeds: 0-1\n")
        b = Bench()
        sweep = S.load(b, path, out=tmp_path / "r", executor="dask",
                       executor_flags={"scheduler": cluster.scheduler_address})
        summary = S.run_sweep(b, sweep)
        assert [r["status"] for r in summary.rows] == ["done", "done"]
        assert len(cluster.scheduler_info["workers"]) == 1  # ours, untouched: the sweep closes only what it starts


@pytest.mark.slow
def test_slurm_through_submitits_local_executor(tmp_path):
    path = write_sweep(tmp_path / "s.yaml", SWEEP + "executor: slurm\nslurm:\n  cluster: local\n  poll_s: 0.2\n"
                       "  time: 10\n  array_parallelism: 2\n")
    b = Bench()
    messages = []
    summary = S.run_sweep(b, _load_blocked(b, path, tmp_path / "r"), log=messages.append)
    _check_outcome(summary, tmp_path / "r")
    assert any(m.startswith("slurm: submitted 4 job(s)") for m in messages)
    assert (tmp_path / "r" / ".submitit").is_dir()


@pytest.mark.slow
def test_a_preempted_slurm_job_is_requeued_and_resumes(tmp_path):
    import submitit

    spec = resolve(Bench(), "gaussian", seed=3, generations=600)
    task = Task(specs=(spec.to_dict(),), out=str(tmp_path / "r"))
    folder = Path(task.folders[0])
    executor = submitit.AutoExecutor(folder=str(tmp_path / "jobs"), cluster="local")
    executor.update_parameters(timeout_min=60)  # far from its limit: a pre-emption, not a time-out
    job = executor.submit(E.SlurmTask(), task)
    deadline = time.monotonic() + 60
    while R.finished_generations(folder) < 3:
        assert not job.done(), job.stderr()
        assert time.monotonic() < deadline, "the job made no progress"
        time.sleep(0.02)
    # What Slurm sends a job step before pre-empting it (submitit asks for USR2); the run's lock file
    # names the process working in it.
    pid = int((folder / ".lock").read_text().split()[1])
    os.kill(pid, signal.SIGUSR2)
    (result,) = job.result()
    assert result.status == "complete" and result.generations_done == 601
    assert "this job is preempted" in job.stderr() and "Requeued job" in job.stdout()
    log = (folder / R.LOG_FILE).read_text()
    assert "(resumed)" in log
    reference = cb.run("gaussian", seeds=3, generations=600, out=tmp_path / "ref")[0].path
    assert_same_results(folder, reference)


def signalled_sweep(tmp_path, send):
    """A real `bench sweep` of five long gaussian chains on two workers, stopped by ``send(proc)``
    once a run has two generations; returns (exit code, stderr, summary, output folder)."""
    import subprocess

    path = write_sweep(tmp_path / "s.yaml", "plugin: gaussian\ngenerations: 400\nseeds: 0-4\n")
    out = tmp_path / "r"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", "sweep", str(path), "--out", str(out), "-w", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while not any(R.finished_generations(f) >= 2 for f in out.glob("gaussian-*")):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the sweep made no progress"
            time.sleep(0.02)
        send(proc)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    (summary,) = [json.loads(p.read_text()) for p in (out / S.SUMMARY_DIR).glob("*.json")]
    return proc.returncode, stderr, summary, out


@pytest.mark.slow
def test_ctrl_c_stops_the_local_pool_and_the_runs_keep_their_generations(tmp_path):
    # A terminal's Ctrl-C: SIGINT to the whole process group (the sweep and its workers).
    code, stderr, summary, out = signalled_sweep(tmp_path, lambda proc: os.killpg(proc.pid, signal.SIGINT))
    assert code == 130, stderr
    assert summary["counts"]["interrupted"] >= 1 and summary["counts"]["failed"] == 0
    assert "interrupted: run the same sweep again" in stderr
    # no worker goes on in the background: what is on disk stays as the summary left it
    before = {f.name: R.finished_generations(f) for f in out.glob("gaussian-*")}
    time.sleep(1.0)
    assert {f.name: R.finished_generations(f) for f in out.glob("gaussian-*")} == before
    stopped = [r for r in summary["runs"] if r["status"] == "interrupted"]
    assert all(R.finished_generations(r["folder"]) < 401 for r in stopped)


def test_slurm_without_slurm_says_how_to_run_locally(monkeypatch, tmp_path):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(BenchError, match="cluster: local"):
        E.check_slurm(S.ExecutorSettings(out=tmp_path, options=dict(E.SLURM_OPTIONS)))


@pytest.mark.slow
def test_sigterm_to_the_sweep_alone_stops_its_workers_too(tmp_path):
    """A scheduler or `kill` signals only the sweep process: its workers must stop with it."""
    code, stderr, summary, out = signalled_sweep(tmp_path, lambda proc: proc.send_signal(signal.SIGTERM))
    assert code == 130, stderr
    assert summary["counts"]["interrupted"] >= 1 and summary["counts"]["failed"] == 0
    time.sleep(1.5)  # a worker left running would go on writing generations
    before = {f.name: R.finished_generations(f) for f in out.glob("gaussian-*")}
    time.sleep(1.0)
    assert {f.name: R.finished_generations(f) for f in out.glob("gaussian-*")} == before
    assert all(n < 401 for n in before.values())
    statuses = {R.read_json(f / "run.json")["status"] for f in out.glob("gaussian-*")}
    assert "running" not in statuses, statuses
