"""Fault injection: a kill -9 at every file operation of a run, a full disk at every write path.

The kill catalogue: a small gaussian run executes once in a child process that records every file
operation (renames, deletions, folder creations, the mode set just after a temporary file is
written, the copies of generation 0); then, for each operation i, a child runs the same command
and dies with os._exit(137) (what kill -9 leaves: no cleanup, no finally) just before operation
i. The same command run again must end with exactly the uninterrupted run's results, and
`bench validate` must find nothing wrong; before that resume, validate must report every
leftover temporary entry it will remove. A fast subset runs by default; the whole catalogue is
marked slow.

The full-disk cases raise ENOSPC as the libraries raise it (safetensors' SafetensorError text,
pyarrow's OSError, a failing write of a JSON file, a failing copy of generation 0) at every write
path, at its first use and in the middle of the run: `bench run` must end with the README's
message and a non-zero exit, the finished generations must be those of the uninterrupted run,
and the same command must then finish identically.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from bench import results as R
from bench import runfolder as RF
from bench.validate import check
from tests.helpers import assert_same_results, bench_cli

GENERATIONS = 4
RUN = ["run", "--plugin", "gaussian", "--preset", "smoke", "--generations", str(GENERATIONS), "--seeds", "0"]


@pytest.fixture(scope="module", autouse=True)
def one_folder_per_generation():
    """Kills and full disks are injected at given file operations of given generation folders,
    so this module pins the layout of one folder per generation (BENCH_COMMIT_EVERY=0; child
    processes inherit it). tests/test_chunks.py covers kills and resumes with chunks."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENCH_COMMIT_EVERY", "0")
        yield

# Runs the command in a child, recording (or dying before) each file operation.
CHILD = r"""
import json, os, shutil, sys
out, kill_at = sys.argv[1], int(sys.argv[2])
ops = []

def counted(name, fn):
    def call(*args, **kwargs):
        if len(ops) == kill_at:
            os._exit(137)
        where = os.path.relpath(str(args[-1] if name == "copyfile" else args[0]), out) if args else ""
        ops.append(f"{name} {where}")
        return fn(*args, **kwargs)
    return call

for module, name in [(os, "replace"), (os, "unlink"), (os, "mkdir"), (os, "chmod"), (shutil, "copyfile")]:
    setattr(module, name, counted(name, getattr(module, name)))
from bench.cli import main
try:
    main(sys.argv[3:] + ["--out", out])
finally:
    with open(sys.argv[1] + ".ops.json", "w") as fh:
        fh.write(json.dumps(ops))
"""


def _child(out: Path, kill_at: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", CHILD, str(out), str(kill_at), *RUN], capture_output=True,
                          text=True, env=env, cwd=Path(__file__).resolve().parent.parent, timeout=120)


def _leftovers(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*") if p.name.endswith(".tmp"))


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    """The uninterrupted run's folder and its file operations, in order."""
    out = tmp_path_factory.mktemp("whole") / "out"
    done = _child(out, -1)
    assert done.returncode == 0, done.stderr
    ops = json.loads(Path(f"{out}.ops.json").read_text())
    run_dir = next(out.glob("gaussian-*"))
    return run_dir, ops


def _kill_and_resume(tmp: Path, kill_at: int, reference: Path, capsys) -> str | None:
    """Kill before operation ``kill_at``, check validate's view, resume; None when all holds."""
    out = tmp / f"kill-{kill_at}"
    killed = _child(out, kill_at)
    if killed.returncode != 137:
        return f"the child did not die at operation {kill_at}: {killed.returncode} {killed.stderr[-300:]}"
    left = _leftovers(out)
    if left and out.is_dir() and list(out.glob("gaussian-*/run.json")):
        reported = "\n".join(check([out]).problems)
        missed = [p for p in left if str(p) not in reported]
        if missed:
            return f"validate does not report the leftovers {missed}"
    code, _, err = bench_cli(capsys, *RUN, "--out", out)
    if code != 0:
        return f"resume failed ({code}): {err[-300:]}"
    run_dir = out / reference.name
    try:
        assert_same_results(run_dir, reference)
        for k in range(GENERATIONS + 1):
            for name in ("samples.parquet", "metrics.parquet"):
                a = pq.read_table(run_dir / R.GENS_DIR / R.gen_name(k) / name)
                b = pq.read_table(reference / R.GENS_DIR / R.gen_name(k) / name)
                assert a.equals(b), f"generation {k} {name} differs"
        states = sorted(p.relative_to(run_dir) for p in run_dir.rglob("state.safetensors"))
        assert states == sorted(p.relative_to(reference) for p in reference.rglob("state.safetensors"))
        for state in states:
            a, b = R.read_state(run_dir / state), R.read_state(reference / state)
            assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), f"{state} differs"
    except AssertionError as exc:
        return f"results differ after a kill at operation {kill_at}: {exc}"
    report = check([out])
    if not report.ok:
        return f"validate after resuming: {report.problems}"
    if _leftovers(out):
        return f"left after resuming: {_leftovers(out)}"
    if RF.read_run_json(run_dir).status != "complete":
        return "run.json is not complete after resuming"
    return None


# Representative operations: generation 0 (its build in the cache, its copy), the middle (a
# generation's commit, pruning a state), the last writes (temp files of metrics.parquet, run.json).
FAST = {
    "gen0 build written": lambda op: op.startswith("chmod .gen0/.") and op.endswith("info.json"),
    "gen0 copied, not renamed": lambda op: op.startswith("copyfile ") and op.endswith("state.safetensors"),
    "a generation's commit": lambda op: op.startswith("replace ") and ".000002." in op,
    "pruning a state": lambda op: op.startswith("unlink ") and "state.safetensors" in op,
    "metrics.parquet written, not renamed": lambda op: op.startswith("chmod ") and ".metrics.parquet." in op
    and "/gens/" not in op,
    "run.json written, not renamed": lambda op: op.startswith("chmod ") and ".run.json." in op,
}


@pytest.mark.slow
@pytest.mark.parametrize("moment", list(FAST))
def test_a_kill_then_the_same_command_ends_identically_and_valid(catalogue, tmp_path, capsys, moment):
    reference, ops = catalogue
    picked = [i for i, op in enumerate(ops) if FAST[moment](op)]
    assert picked, f"no operation matches {moment!r} in {ops}"
    failure = _kill_and_resume(tmp_path, picked[-1], reference, capsys)
    assert failure is None, failure


@pytest.mark.slow
def test_a_kill_at_every_file_operation_then_resume(catalogue, tmp_path, capsys):
    reference, ops = catalogue
    failures = {i: f for i in range(len(ops)) if (f := _kill_and_resume(tmp_path, i, reference, capsys))}
    print(f"kill catalogue: {len(ops)} operations tried, {len(ops) - len(failures)} held")
    assert not failures, "\n".join(f"{i} ({ops[i]}): {f}" for i, f in failures.items())


# -- a full disk ----------------------------------------------------------------------------------


def _no_space_safetensors(real):
    from safetensors import SafetensorError

    def save_file(arrays, path, *args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    return save_file


def _no_space_parquet(real, which):
    def write_table(table, where, *args, **kwargs):
        if which in os.path.basename(str(where)):
            raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device")
        return real(table, where, *args, **kwargs)

    return write_table


def _no_space_json(real, which):
    def dump(obj, fh, *args, **kwargs):
        if which in os.path.basename(getattr(fh, "name", "")):
            raise OSError(errno.ENOSPC, "No space left on device")  # a write's error names no file
        return real(obj, fh, *args, **kwargs)

    return dump


def _no_space_copy(real):
    def copyfile(src, dst, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    return copyfile


WRITE_PATHS = {
    "state": ("safetensors.numpy", "save_file", _no_space_safetensors),
    "samples.parquet": ("pyarrow.parquet", "write_table", lambda real: _no_space_parquet(real, "samples.parquet")),
    "generation metrics.parquet": ("pyarrow.parquet", "write_table",
                                   lambda real: _no_space_parquet(real, "metrics.parquet")),
    "info.json": ("json", "dump", lambda real: _no_space_json(real, "info.json")),
    "run.json": ("json", "dump", lambda real: _no_space_json(real, "run.json")),
    "generation 0 copy": ("shutil", "copyfile", _no_space_copy),
}


@pytest.mark.parametrize("at", [0, 2], ids=["first", "middle"])
@pytest.mark.parametrize("path", list(WRITE_PATHS))
def test_a_full_disk_ends_with_the_message_and_loses_nothing(catalogue, tmp_path, capsys, monkeypatch, path, at):
    import importlib

    reference, _ = catalogue
    module_name, name, make = WRITE_PATHS[path]
    module = importlib.import_module(module_name)
    real = getattr(module, name)
    failing = make(real)
    calls = []

    def sometimes(*args, **kwargs):  # the first `at` calls that would fail succeed
        try:
            return failing(*args, **kwargs)
        except Exception:  # OSError, or safetensors' SafetensorError
            calls.append(1)
            if len(calls) > at:
                raise
            return real(*args, **kwargs)

    out = tmp_path / "out"
    if path == "generation 0 copy" and at:
        bench_cli(capsys, *RUN[:-1], "1", "--out", out)  # another seed fills the cache: seed 0 only copies
    monkeypatch.setattr(module, name, sometimes)
    code, _, err = bench_cli(capsys, *RUN, "--out", out)
    monkeypatch.setattr(module, name, real)
    assert code != 0 and "Traceback" not in err
    assert "the disk is full while writing" in err and "run the same command again" in err, err
    run_dir = out / reference.name
    done = R.finished_generations(run_dir) if run_dir.is_dir() else 0
    for k in range(done):  # nothing lost: the finished generations are those of the whole run
        assert pq.read_table(run_dir / R.GENS_DIR / R.gen_name(k) / "metrics.parquet").equals(
            pq.read_table(reference / R.GENS_DIR / R.gen_name(k) / "metrics.parquet"))
    assert not [p for p in _leftovers(out) if p.is_dir()], "a failed generation's folder was left"
    code, _, err = bench_cli(capsys, *RUN, "--out", out)
    assert code == 0, err
    assert_same_results(run_dir, reference)
    report = check([out])
    assert report.ok, report.problems
    assert not _leftovers(out)


@pytest.mark.skipif(os.geteuid() != 0 or sys.platform != "linux", reason="mounting a tmpfs needs root on Linux")
@pytest.mark.slow
def test_a_real_full_disk_on_a_small_tmpfs(tmp_path, capsys):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=60k", "tmpfs", str(disk)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        args = ["run", "--plugin", "gaussian", "--generations", "1500", "--seeds", "3", "--policy", "mix:0.1"]
        code, _, err = bench_cli(capsys, *args, "--out", disk)
        assert code == 2 and "the disk is full while writing" in err and "Traceback" not in err, err
        run_dir = next(disk.glob("gaussian-*"))
        assert R.finished_generations(run_dir) >= 1
        assert not [p for p in _leftovers(disk) if p.is_dir()]
    finally:
        subprocess.run(["umount", str(disk)])


# -- what a run leaves in its folder in the other failure cases --------------------------------------


def _run_dir(out: Path) -> Path:
    return next(out.glob("gaussian-*"))


def test_asking_for_fewer_generations_than_a_run_holds_changes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    assert bench_cli(capsys, *RUN, "--out", out)[0] == 0
    run_dir = _run_dir(out)
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    code, _, err = bench_cli(capsys, *RUN[:-3], "2", "--seeds", "0", "--out", out)
    assert code == 0
    assert f"already holds generations 0..{GENERATIONS}, more than the 2 asked for: nothing was changed" in err
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before
    assert check([out]).ok


def test_a_seed_beyond_int64_is_refused_before_any_folder(tmp_path, capsys):
    code, _, err = bench_cli(capsys, *RUN[:-1], str(2**63), "--out", tmp_path / "out")
    assert code == 2 and "seed 9223372036854775808 is out of range" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("gaussian-*"))


def test_a_damaged_generation_then_an_extension_leaves_run_json_failed(tmp_path, capsys):
    out = tmp_path / "out"
    assert bench_cli(capsys, *RUN, "--out", out)[0] == 0
    damaged = _run_dir(out) / "gens" / "000002" / "metrics.parquet"
    damaged.write_bytes(damaged.read_bytes()[:100])
    code, _, err = bench_cli(capsys, *RUN[:-3], str(GENERATIONS + 2), "--seeds", "0", "--out", out)
    assert code == 2 and "Traceback" not in err and f"{damaged}: damaged" in err, err
    run = RF.read_run_json(_run_dir(out))
    assert run.status == "failed" and str(damaged) in run.error


def test_a_run_whose_last_run_json_cannot_be_written_is_not_reported_complete(tmp_path, capsys, monkeypatch):
    writes = []
    real = RF.write_run_json

    def full_at_the_end(run_dir, run):
        writes.append(run.status)
        if run.status == "complete":
            raise OSError(errno.ENOSPC, "No space left on device", str(run_dir / "run.json"))
        return real(run_dir, run)

    monkeypatch.setattr(RF, "write_run_json", full_at_the_end)
    code, _, err = bench_cli(capsys, *RUN, "--out", tmp_path)
    assert code == 2 and "the disk is full" in err and writes[-1] == "complete"


def test_every_result_file_gets_one_mode(tmp_path, capsys):
    assert bench_cli(capsys, *RUN, "--out", tmp_path)[0] == 0
    modes = {oct(p.stat().st_mode & 0o777) for p in tmp_path.rglob("*")
             if p.is_file() and p.name != ".lock" and not p.name.endswith(".lock")}
    assert modes == {oct(0o666 & ~R._UMASK)}


def test_validate_calls_a_locked_run_in_progress_not_a_killed_write(tmp_path, capsys):
    from bench.loop import FolderLock

    assert bench_cli(capsys, *RUN, "--out", tmp_path)[0] == 0
    run_dir = _run_dir(tmp_path)
    (run_dir / "gens" / ".000005.1-2.tmp").mkdir()  # what a live run's next generation looks like
    with FolderLock(run_dir / ".lock", "test"):
        problems = check([tmp_path]).problems
    assert len(problems) == 1 and "a run in progress (pid " in problems[0] and "killed" not in problems[0]
    problems = check([tmp_path]).problems  # no process holds it: a killed write, which a run removes
    assert len(problems) == 1 and "leftover temporary file of a killed write" in problems[0]
    assert bench_cli(capsys, *RUN, "--out", tmp_path)[0] == 0 and check([tmp_path]).ok


def test_validate_of_an_unreadable_folder_says_so_without_a_foreign_hint(tmp_path, capsys, monkeypatch):
    import bench.validate as V

    assert bench_cli(capsys, *RUN, "--out", tmp_path)[0] == 0

    def denied(run, problems, tables):
        raise PermissionError(errno.EACCES, "Permission denied", str(run / "gens" / "000001"))

    monkeypatch.setattr(V, "_check_gens", denied)
    code, out, err = bench_cli(capsys, "validate", tmp_path)
    assert code == 1 and "gens/000001: unreadable (Permission denied)" in out and "--out" not in out + err


def test_an_os_error_message_names_the_out_option_only_for_a_run():
    from bench.loop import _os_message

    exc = PermissionError(errno.EACCES, "Permission denied", "x")
    assert "--out" not in _os_message(exc, Path("x")) and "--out" in _os_message(exc, Path("x"), out=True)
    full = _os_message(OSError(errno.ENOSPC, "No space left on device"), Path("y"))
    assert full.startswith("the disk is full while writing y.")


def test_a_state_a_kill_kept_from_pruning_is_removed_unless_kept_on_purpose(tmp_path, capsys):
    out = tmp_path / "out"
    assert bench_cli(capsys, *RUN, "--keep-states", "all", "--out", out)[0] == 0
    states = sorted(p.parent.name for p in _run_dir(out).rglob("state.safetensors"))
    assert bench_cli(capsys, *RUN, "--out", out)[0] == 0  # kept with "all": an earlier choice, not a kill
    assert sorted(p.parent.name for p in _run_dir(out).rglob("state.safetensors")) == states


def test_a_complete_two_generation_run_kept_with_all_keeps_every_state_when_run_again(tmp_path, capsys):
    # With only M_0..M_2 there is no earlier state to show that "all" was chosen: run.json's
    # status (complete, not "running") is what says no process was killed before pruning.
    out = tmp_path / "out"
    run = list(RUN)  # the second --generations wins
    assert bench_cli(capsys, *run, "--generations", "2", "--keep-states", "all", "--out", out)[0] == 0
    states = sorted(p.parent.name for p in _run_dir(out).rglob("state.safetensors"))
    assert len(states) == 3
    assert bench_cli(capsys, *run, "--generations", "2", "--out", out)[0] == 0
    assert sorted(p.parent.name for p in _run_dir(out).rglob("state.safetensors")) == states
