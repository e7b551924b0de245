"""bench.validate: a clean results folder passes; each kind of damage is found and names its file."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import bench
from bench import results as R
from bench.validate import check, validate


@pytest.fixture(scope="module", autouse=True)
def one_folder_per_generation():
    """The damages below name files of gens/<k>/ (generation 1's samples, generation 2's state),
    so this module pins the layout of one folder per generation (BENCH_COMMIT_EVERY=0) rather than
    depend on how long a generation takes. tests/test_chunks.py checks validate on chunks."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENCH_COMMIT_EVERY", "0")
        yield


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """Two complete gmm runs (seeds 0 and 1, 2 generations) and the shared generation-0 cache."""
    import bench.api as cb

    out = tmp_path_factory.mktemp("clean")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cb.run("gmm", "smoke", generations=2, seeds="0-1", policy="mix:0.5", out=out)
    return out


@pytest.fixture
def results(clean, tmp_path):
    dest = tmp_path / "results"
    shutil.copytree(clean, dest)
    return dest


def first_run(root: Path) -> Path:
    return sorted(p.parent for p in root.glob(f"*/{R.RUN_JSON}"))[0]


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def edit_table(path: Path, change) -> None:
    pq.write_table(change(pq.read_table(path)), path)


def set_column(table: pa.Table, name: str, values) -> pa.Table:
    i = table.schema.get_field_index(name)
    return table.set_column(i, table.schema.field(i), pa.array(values, type=table.schema.field(i).type))


def test_a_clean_folder_passes(results):
    report = check([results])
    assert report.problems == [] and report.runs == 2 and report.ok
    assert validate([first_run(results)]) == []
    assert validate([first_run(results) / R.RUN_JSON]) == []
    assert "2 run folder(s) checked: no problems" == report.summary()


def test_paths_without_runs(tmp_path):
    (tmp_path / "empty").mkdir()
    problems = validate([tmp_path / "empty", tmp_path / "nope"])
    assert problems == [f"{tmp_path / 'empty'}: no run folder (holding run.json) at or below it",
                        f"{tmp_path / 'nope'}: does not exist"]


def _gen(k: int) -> str:
    return f"{R.GENS_DIR}/{R.gen_name(k)}"


BREAKS = {
    "run.json not JSON": (lambda r: (r / R.RUN_JSON).write_text("{oops"), R.RUN_JSON, "unreadable (JSONDecodeError"),
    "run.json a list": (lambda r: (r / R.RUN_JSON).write_text("[]"), R.RUN_JSON, "not a JSON object"),
    "missing key": (lambda r: edit_json(r / R.RUN_JSON, lambda d: d.pop("status")), R.RUN_JSON, "missing key status"),
    "wrong type": (lambda r: edit_json(r / R.RUN_JSON, lambda d: d.update(generations_done="3")), R.RUN_JSON,
                   "generations_done should be int, not str"),
    "spec key type": (lambda r: edit_json(r / R.RUN_JSON, lambda d: d["spec"].update(seed=True)), R.RUN_JSON,
                      "spec: seed should be int, not bool"),
    "edited spec": (lambda r: edit_json(r / R.RUN_JSON, lambda d: d["spec"]["params"].update(n_samples=51)),
                    R.RUN_JSON, "is not the hash of the spec"),
    "identity": (lambda r: edit_json(r / R.RUN_JSON, lambda d: d["identity"].update(policy="replace")), R.RUN_JSON,
                 "identity.policy is 'replace', the spec says 'mix:0.5'"),
    "track id": (lambda r: edit_json(r / R.RUN_JSON, lambda d: d["track"].update(id="000000000000")), R.RUN_JSON,
                 "track.id is '000000000000'"),
    "older run.json": (lambda r: edit_json(r / R.RUN_JSON, lambda d: d.pop("track")), R.RUN_JSON,
                       "written by an older collapse-bench"),
    "complete too soon": (lambda r: edit_json(r / R.RUN_JSON, lambda d: d.update(generations_requested=3)),
                          R.RUN_JSON, "status complete but 3 of the 4 generations done"),
    "unknown status": (lambda r: edit_json(r / R.RUN_JSON, lambda d: d.update(status="done")), R.RUN_JSON,
                       "status 'done' is not one of"),
    "metrics schema": (lambda r: edit_table(r / R.METRICS_FILE, lambda t: t.drop_columns(["direction"])),
                       R.METRICS_FILE, "missing columns direction"),
    "metrics type": (lambda r: edit_table(r / R.METRICS_FILE, lambda t: t.set_column(
        t.schema.get_field_index("value"), "value", t.column("value").cast(pa.string()))),
        R.METRICS_FILE, "column value has type string, expected double"),
    "metrics not parquet": (lambda r: (r / R.METRICS_FILE).write_text("csv,please"), R.METRICS_FILE, "unreadable"),
    "metrics missing": (lambda r: (r / R.METRICS_FILE).unlink(), R.METRICS_FILE, "missing"),
    "metrics of another seed": (lambda r: edit_table(r / R.METRICS_FILE, lambda t: set_column(
        t, "seed", [7] * t.num_rows)), R.METRICS_FILE, "column seed holds ['7']"),
    "metrics edited": (lambda r: edit_table(r / R.METRICS_FILE, lambda t: set_column(
        t, "value", [0.5] * t.num_rows)), R.METRICS_FILE, "rows differ from those of the generation folders"),
    "metrics behind": (lambda r: edit_table(r / R.METRICS_FILE, lambda t: t.filter(
        pa.compute.less(t.column("generation"), 2))), R.METRICS_FILE, "rows for 2 generations, 3 are finished"),
    "generation missing": (lambda r: shutil.rmtree(r / _gen(1)), _gen(2), "generation 2 without generation 1"),
    "gen metrics wrong generation": (lambda r: edit_table(r / _gen(1) / R.METRICS_FILE, lambda t: set_column(
        t, "generation", [5] * t.num_rows)), f"{_gen(1)}/{R.METRICS_FILE}", "rows of other generations than 1"),
    "samples corrupt": (lambda r: (r / _gen(1) / "samples.parquet").write_bytes(b"PAR1 nope"),
                        f"{_gen(1)}/samples.parquet", "unreadable samples"),
    "samples missing": (lambda r: (r / _gen(0) / "samples.parquet").unlink(), f"{_gen(0)}/samples.parquet",
                        "unreadable samples (missing)"),
    "info missing": (lambda r: (r / _gen(2) / "info.json").unlink(), f"{_gen(2)}/info.json", "unreadable (missing)"),
    "state of generation 0 missing": (lambda r: (r / _gen(0) / "state.safetensors").unlink(),
                                      f"{_gen(0)}/state.safetensors", "missing (the state of generation 0"),
    "state corrupt": (lambda r: (r / _gen(2) / "state.safetensors").write_bytes(b"\xff" * 16),
                      f"{_gen(2)}/state.safetensors", "not a safetensors file"),
    "unexpected file": (lambda r: (r / "notes.md").write_text("hi"), "notes.md", "unexpected in a run folder"),
    "unexpected in a generation": (lambda r: (r / _gen(1) / "x.bin").write_bytes(b""), f"{_gen(1)}/x.bin",
                                   "unexpected in a generation folder"),
    "leftover temporary": (lambda r: (r / R.GENS_DIR / ".000003.123.tmp").mkdir(), f"{R.GENS_DIR}/.000003.123.tmp",
                           "leftover temporary file"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BREAKS))
def test_each_problem_is_found_and_names_its_file(results, name):
    breaker, file, message = BREAKS[name]
    run = first_run(results)
    breaker(run)
    problems = validate([results])
    assert any(p.startswith(f"{run / file}: ") and message in p for p in problems), problems
    others = [p for p in problems if not p.startswith(str(run))]
    assert others == [], others  # the other run stays clean


def test_two_copies_of_one_run(results, tmp_path):
    run = first_run(results)
    shutil.copytree(run, results / "copy")
    problems = validate([results])
    assert len(problems) == 1 and "the same run (id" in problems[0] and str(run) in problems[0]


class _GridsGmm:
    """Stands for an installed plugin whose model `gmm` declares a `grids/` entry (as the VAE does)."""

    @bench.hookimpl
    def bench_register_models(self, register):
        register(bench.ModelBundle(name="gmm", kind="vectors", load_real=None, trainer="t", generator="g",
                                   scorer="s", files={"grids": "pictures of samples"}))


def test_entries_a_plugin_declares(results):
    from bench.plugins import Bench

    run = first_run(results)
    (run / "grids").mkdir()
    (run / "grids" / "gen-000000.png").write_bytes(b"")
    declared = Bench(extra_plugins=[_GridsGmm()], entry_points=False)
    assert check([results], bench=declared).problems == []
    # The installed gmm declares nothing: grids/ is unexpected there.
    assert validate([results]) == [f"{run / 'grids'}: unexpected in a run folder"]
    # An undeclared entry fails even where the plugin declares others.
    (run / "notes.md").write_text("hi")
    assert validate([results], bench=declared) == [f"{run / 'notes.md'}: unexpected in a run folder"]
    # Without the plugin installed, its entries cannot be judged: not failed, but named.
    report = check([results], bench=Bench(entry_points=False))
    assert report.ok and report.notes == [f"{run}: grids, notes.md: model plugin 'gmm' is not installed, so the "
                                          "entries it writes are unknown"]
    assert report.summary().splitlines()[1] == f"not checked: {report.notes[0]}"
