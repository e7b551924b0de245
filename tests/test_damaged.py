"""Damaged run folders: every command exits with a message naming the damaged file, never a traceback.

One small complete gaussian run (every state kept) is built once; each case copies it, applies one
damage from :data:`DAMAGES` and runs one command from :data:`COMMANDS` through ``bench.cli.main``.
A case holds when nothing escapes ``main`` (a user would see a traceback), the output holds no
traceback, and the command either succeeds or exits non-zero with a message naming the file it
found damaged. ``bench validate`` must fail on every damage. The whole cross product is marked
slow; :data:`FAST` keeps a representative subset in the fast tier.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench import results as R
from tests.helpers import bench_as_user

GENERATIONS = 3
RUN_ARGS = ["run", "--plugin", "gaussian", "--keep-states", "all"]


@pytest.fixture(scope="module", autouse=True)
def one_folder_per_generation():
    """The catalogue damages named files of gens/<k>/ (generation 1's samples, generation 3's
    state), so this module pins the layout of one folder per generation (BENCH_COMMIT_EVERY=0;
    child processes inherit it). tests/test_chunks.py covers damaged chunks."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENCH_COMMIT_EVERY", "0")
        yield


@pytest.fixture(scope="module")
def pristine():
    """A results folder holding one complete 3-generation gaussian run (and its generation-0 cache).

    It lives in a world-readable temporary folder: the permission damages run their command as
    another user when the tests run as root (root reads everything)."""
    top = Path(tempfile.mkdtemp(prefix="collapse-damaged-"))
    top.chmod(0o755)
    out = top / "pristine"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code, text, escaped = bench(*RUN_ARGS, "--generations", GENERATIONS, "--out", out)
    assert code == 0 and escaped is None, text
    yield out
    shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def case(pristine):
    """A fresh copy of the results folder: (results folder, run folder, scratch folder for output)."""
    scratch = Path(tempfile.mkdtemp(dir=pristine.parent))
    scratch.chmod(0o777)
    out = scratch / "results"
    shutil.copytree(pristine, out, symlinks=True)
    for p in [out, *out.rglob("*")]:
        p.chmod(0o777 if p.is_dir() else 0o666)
    yield out, next(p.parent for p in out.glob(f"*/{R.RUN_JSON}")), scratch
    for p in scratch.rglob("*"):  # undo permission damage so that the folder can be removed
        if not p.is_symlink():
            p.chmod(0o777)
    shutil.rmtree(scratch, ignore_errors=True)


bench = bench_as_user


# -- the damages ----------------------------------------------------------------------------------


def gen(k: int) -> str:
    return f"{R.GENS_DIR}/{R.gen_name(k)}"


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def truncate_end(path: Path) -> None:
    """Cut the last bytes only (a header that still parses)."""
    data = path.read_bytes()
    path.write_bytes(data[:-16])


def randomize(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 3)


def set_keys(**values):
    def change(data):
        for dotted, value in values.items():
            *parents, key = dotted.split("__")
            target = data
            for p in parents:
                target = target[p]
            target[key] = value
    return lambda run: edit_json(run / R.RUN_JSON, change)


def drop_key(key):
    return lambda run: edit_json(run / R.RUN_JSON, lambda d: d.pop(key))


def wrong_schema(path: Path) -> None:
    pq.write_table(pa.table({"x": [1, 2, 3]}), path)


def chmod0(rel: str):
    return lambda run: (run / rel).chmod(0)


# name: (damage applied to the run folder, the damaged entry's path in the run folder, which a
# failing command must name)
DAMAGES = {
    "run.json truncated": (lambda r: truncate(r / R.RUN_JSON), R.RUN_JSON),
    "run.json random": (lambda r: randomize(r / R.RUN_JSON), R.RUN_JSON),
    "run.json []": (lambda r: (r / R.RUN_JSON).write_text("[]"), R.RUN_JSON),
    "run.json {}": (lambda r: (r / R.RUN_JSON).write_text("{}"), R.RUN_JSON),
    "run.json no spec": (drop_key("spec"), R.RUN_JSON),
    "spec.params a list": (set_keys(spec__params=[1, 2]), R.RUN_JSON),
    "spec.params a string": (set_keys(spec__params="n=5"), R.RUN_JSON),
    "spec.plugin a number": (set_keys(spec__plugin=5), R.RUN_JSON),
    "spec.seed a string": (set_keys(spec__seed="0"), R.RUN_JSON),
    "spec.metrics a string": (set_keys(spec__metrics="gaussian-var"), R.RUN_JSON),
    "spec.policy_params a list": (set_keys(spec__policy_params=[0.1]), R.RUN_JSON),
    "run_id a number": (set_keys(run_id=5), R.RUN_JSON),
    "status null": (set_keys(status=None), R.RUN_JSON),
    "generations_requested a string": (set_keys(generations_requested="3"), R.RUN_JSON),
    "generations_done a float": (set_keys(generations_done=4.0), R.RUN_JSON),
    "identity a list": (set_keys(identity=[]), R.RUN_JSON),
    "track a string": (set_keys(track="gaussian/smoke"), R.RUN_JSON),
    "leaderboard_metrics a string": (set_keys(leaderboard_metrics="gaussian-var"), R.RUN_JSON),
    "headline a list": (set_keys(headline=[]), R.RUN_JSON),
    "provenance a list": (set_keys(provenance=[]), R.RUN_JSON),
    "run_id edited": (set_keys(run_id="0123456789abcdef", identity__run_id="0123456789abcdef"), R.RUN_JSON),
    "spec edited": (set_keys(spec__params__n_samples=7), R.RUN_JSON),
    "metrics.parquet truncated": (lambda r: truncate(r / R.METRICS_FILE), R.METRICS_FILE),
    "metrics.parquet random": (lambda r: randomize(r / R.METRICS_FILE), R.METRICS_FILE),
    "metrics.parquet missing": (lambda r: (r / R.METRICS_FILE).unlink(), R.METRICS_FILE),
    "metrics.parquet wrong schema": (lambda r: wrong_schema(r / R.METRICS_FILE), R.METRICS_FILE),
    "gen 1 missing": (lambda r: shutil.rmtree(r / gen(1)), gen(2)),
    "gen 1 metrics truncated": (lambda r: truncate(r / gen(1) / R.METRICS_FILE), f"{gen(1)}/{R.METRICS_FILE}"),
    "gen 1 metrics wrong schema": (lambda r: wrong_schema(r / gen(1) / R.METRICS_FILE), f"{gen(1)}/{R.METRICS_FILE}"),
    "gen 1 samples truncated": (lambda r: truncate(r / gen(1) / "samples.parquet"), f"{gen(1)}/samples.parquet"),
    "gen 1 samples wrong schema": (lambda r: wrong_schema(r / gen(1) / "samples.parquet"),
                                   f"{gen(1)}/samples.parquet"),
    "gen 3 samples missing": (lambda r: (r / gen(3) / "samples.parquet").unlink(), f"{gen(3)}/samples.parquet"),
    "gen 3 state truncated": (lambda r: truncate(r / gen(3) / "state.safetensors"), f"{gen(3)}/state.safetensors"),
    "gen 3 state truncated at its end": (lambda r: truncate_end(r / gen(3) / "state.safetensors"),
                                         f"{gen(3)}/state.safetensors"),
    "gen 3 state random": (lambda r: randomize(r / gen(3) / "state.safetensors"), f"{gen(3)}/state.safetensors"),
    "gen 0 state random": (lambda r: randomize(r / gen(0) / "state.safetensors"), f"{gen(0)}/state.safetensors"),
    "gen 1 info.json random": (lambda r: randomize(r / gen(1) / "info.json"), f"{gen(1)}/info.json"),
    "gen 1 info.json []": (lambda r: (r / gen(1) / "info.json").write_text("[]"), f"{gen(1)}/info.json"),
    "extra file in a generation": (lambda r: (r / gen(1) / "notes.txt").write_text("hi"), f"{gen(1)}/notes.txt"),
    "extra file in the run folder": (lambda r: (r / "notes.txt").write_text("hi"), "notes.txt"),
    "run.json unreadable": (chmod0(R.RUN_JSON), R.RUN_JSON),
    "metrics.parquet unreadable": (chmod0(R.METRICS_FILE), R.METRICS_FILE),
    "gen 1 unreadable": (chmod0(gen(1)), gen(1)),
    "gen 3 state unreadable": (chmod0(f"{gen(3)}/state.safetensors"), f"{gen(3)}/state.safetensors"),
}
PERMISSIONS = {name for name in DAMAGES if name.endswith("unreadable")}

# name: the command's arguments given (results folder, run folder, scratch folder)
COMMANDS = {
    "resume": lambda out, run, tmp: [*RUN_ARGS, "--generations", GENERATIONS, "--out", out],
    "extend": lambda out, run, tmp: [*RUN_ARGS, "--generations", GENERATIONS + 2, "--out", out],
    "show": lambda out, run, tmp: ["show", run],
    "runs": lambda out, run, tmp: ["runs", out],
    "validate": lambda out, run, tmp: ["validate", out],
    "report": lambda out, run, tmp: ["report", run, "--out", tmp / "reports"],
    "plot": lambda out, run, tmp: ["plot", run, "--out", tmp / "plots"],
    "leaderboard": lambda out, run, tmp: ["leaderboard", out, "--out", tmp / "boards"],
    "rescore": lambda out, run, tmp: ["rescore", run, "--metric", "gaussian-var"],
}

# The fast tier: every damage against validate and one other command, and every command against a few
# damages of each kind.
FAST = {(d, "validate") for d in DAMAGES} | {
    ("run.json truncated", "resume"), ("spec edited", "resume"), ("run.json []", "extend"), ("run.json no spec", "show"),
    ("spec.params a list", "report"), ("spec.params a string", "plot"), ("run_id edited", "leaderboard"),
    ("spec.seed a string", "runs"), ("gen 3 state random", "extend"), ("gen 1 samples truncated", "show"),
    ("metrics.parquet random", "leaderboard"), ("gen 1 metrics truncated", "rescore"),
    ("gen 1 info.json []", "runs"), ("metrics.parquet wrong schema", "plot"), ("run.json unreadable", "runs"),
    ("spec.plugin a number", "show"), ("identity a list", "report"), ("gen 1 unreadable", "show"),
}


@contextmanager
def as_other_user(active: bool):
    """Run the block as user ``nobody`` when the tests run as root (who reads unreadable files)."""
    if not active or os.geteuid() != 0:
        yield
        return
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def try_case(damage: str, command: str, out: Path, run: Path, scratch: Path) -> str | None:
    """Apply the damage, run the command; None when the case holds, else what went wrong."""
    apply, entry = DAMAGES[damage]
    apply(run)
    args = COMMANDS[command](out, run, scratch)
    with warnings.catch_warnings():  # warnings are part of the output (bench prints them)
        warnings.simplefilter("always")
        with as_other_user(damage in PERMISSIONS):
            code, text, escaped = bench(*args)
    if escaped is not None:
        return f"an exception escaped:\n{escaped}\noutput:\n{text}"
    if "Traceback" in text:
        return f"a traceback in the output:\n{text}"
    if command == "validate" and code == 0:
        return f"validate passed a damaged folder:\n{text}"
    if code != 0 and Path(entry).name not in text:
        return f"exit {code} without naming {entry}:\n{text}"
    return None


def _params():
    for damage in DAMAGES:
        for command in COMMANDS:
            marks = [] if (damage, command) in FAST else [pytest.mark.slow]
            yield pytest.param(damage, command, id=f"{command}-{damage.replace(' ', '_')}", marks=marks)


@pytest.mark.parametrize("damage, command", list(_params()))
def test_damaged_run_folder(case, damage, command):
    out, run, scratch = case
    problem = try_case(damage, command, out, run, scratch)
    assert problem is None, problem


def test_the_catalogue_is_whole():
    """Every damage the catalogue promises has a case in the fast tier, and so has every command."""
    assert {d for d, _ in FAST} == set(DAMAGES)
    assert {c for _, c in FAST} == set(COMMANDS)
    assert len(DAMAGES) * len(COMMANDS) == 396


# -- edited results folders: the leaderboard's integrity, CSV cells, state files -------------------


def test_the_leaderboard_skips_a_run_whose_id_is_not_its_spec_hash(case):
    from bench.leaderboard import build

    out, run, scratch = case
    set_keys(spec__params__n_samples=7)(run)  # ranked as n_samples=7, measured with the preset's value
    result = build([out], out=scratch / "boards")
    assert result.runs_skipped == 1 and not result.tracks
    assert any(w.startswith(f"{run / R.RUN_JSON}: run_id ") and "is not the hash of the spec" in w
               for w in result.warnings), result.warnings
    code, text, escaped = bench("validate", out)
    assert code == 1 and escaped is None and "is not the hash of the spec" in text


FORMULAS = {"gaussian-var": "=HYPERLINK(\"http://x\")", "logdet-diff": "@SUM(1)", "test-nll": "+1",
            "tail-mass": "-1+2", "head-mass": "\tx", "gaussian-w2sq": "=w2"}


def test_no_csv_cell_starts_a_formula(case):
    """Text a received results folder or a plugin chose (metric names, the headline, the track and
    policy labels) starting with = + - @ or a tab is written with a leading apostrophe in every
    CSV; numbers, negative ones too, stay numbers."""
    import csv

    from bench.leaderboard import csv_cell

    out, run, scratch = case
    table = pq.read_table(run / R.METRICS_FILE)
    names = [FORMULAS.get(m, m) for m in table.column("metric").to_pylist()]
    table = table.set_column(table.schema.get_field_index("metric"), "metric", pa.array(names))
    pq.write_table(table, run / R.METRICS_FILE)
    set_keys(leaderboard_metrics=[FORMULAS["gaussian-var"], "@SUM(1)"], headline__metric="=w2",
             track__name="-track", identity__policy="=policy")(run)
    code, text, escaped = bench("leaderboard", out, "--suite", "--out", scratch / "boards")
    assert code == 0 and escaped is None, text
    files = sorted((scratch / "boards").glob("*.csv"))
    assert [f.name for f in files] == ["suite.csv", "track.csv"]
    assert (files[0].read_text().count("\n"), files[1].read_text().count("\n")) == (2, 23)
    cells = [cell for f in files for row in csv.reader(open(f, newline="")) for cell in row]
    for cell in cells:
        if cell.startswith(("=", "+", "-", "@", "\t", "\r")):
            float(cell)  # only a number may start so (-0.5, -inf)
    for text_cell in [*FORMULAS.values(), "-track", "=policy"]:
        assert "'" + text_cell in cells, text_cell
    assert any(c.startswith("-") for c in cells)  # negative numbers are there, unguarded
    assert [csv_cell(v) for v in ("=1+1", "-1", -0.5, float("-inf"), np.float64(-1.5), None, 3, True, "")] == \
        ["'=1+1", "'-1", "-0.5", "-inf", "-1.5", "", "3", "True", ""]


def _state_file(path: Path) -> Path:
    from safetensors.numpy import save_file

    save_file({"mean": np.arange(3, dtype=np.float64), "cov": np.eye(2, dtype=np.float32),
               "empty": np.zeros(0, dtype=np.int64)}, str(path))
    return path


@pytest.mark.parametrize("change, found", [
    (lambda b: b, None),
    (lambda b: b[:-1], "cut short"),
    (lambda b: b + b"\0", "bytes left over"),
    (lambda b: b.replace(b'"data_offsets":[0,24]', b'"data_offsets":[0,23]'), "hold 23 bytes"),
])
def test_validate_checks_a_state_file_against_its_header(tmp_path, change, found):
    """A state file's data must be exactly what its header's offsets, dtypes and shapes say (the
    safetensors reader refuses anything else, as validate must)."""
    from safetensors.numpy import load_file

    from bench.validate import _check_safetensors

    path = _state_file(tmp_path / "state.safetensors")
    header = path.read_bytes()
    assert b'"data_offsets":[0,24]' in header  # mean: 3 float64, first in the file
    path.write_bytes(change(path.read_bytes()))
    problems: list[str] = []
    _check_safetensors(path, problems)
    if found is None:
        assert problems == [] and load_file(str(path))["mean"].tolist() == [0.0, 1.0, 2.0]
    else:
        assert len(problems) == 1 and problems[0].startswith(f"{path}: not a safetensors file") and found in problems[0]
        with pytest.raises(Exception):
            load_file(str(path))
