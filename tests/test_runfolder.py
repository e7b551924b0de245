"""bench.runfolder: run.json round-trips unchanged, one track-id formula, one scan, one schema check."""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings

import pyarrow as pa
import pytest

from bench import grouping
from bench import plots as P
from bench import results as R
from bench import runfolder as RF


@pytest.fixture(scope="module")
def gaussian_runs(tmp_path_factory):
    """What `bench run --plugin gaussian --preset smoke --generations 2` writes, for seeds 0 and 1."""
    import bench.api as cb

    out = tmp_path_factory.mktemp("gaussian")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cb.run("gaussian", "smoke", generations=2, seeds="0-1", out=out)
    return out


def _folders(root):
    return sorted(p.parent for p in root.glob(f"*/{R.RUN_JSON}"))


def test_run_json_round_trips_byte_for_byte(gaussian_runs, tmp_path):
    for folder in _folders(gaussian_runs):
        original = (folder / R.RUN_JSON).read_bytes()
        run = RF.read_run_json(folder)
        assert run.absent == frozenset() and run.extra == {}
        assert run.to_dict() == json.loads(original)
        RF.write_run_json(tmp_path, run)
        assert (tmp_path / R.RUN_JSON).read_bytes() == original


def test_older_and_extended_run_json_keep_their_keys(gaussian_runs, tmp_path):
    data = json.loads((_folders(gaussian_runs)[0] / R.RUN_JSON).read_text())
    for key in ("track", "headline", "created", "provenance"):  # an older writer's file
        del data[key]
    data["rescored"] = [{"metrics": {"m": "1"}}]  # a key this module does not know
    run = RF.RunJson.from_dict(data)
    assert run.to_dict() == data and run.extra == {"rescored": data["rescored"]}
    assert {"track", "headline", "created", "provenance"} <= run.absent
    # The track is derived as the harness derives it.
    assert run.resolved_track()["id"] == RF.make_track("gaussian", "smoke", 2, data["real_data_fingerprint"])["id"]


@pytest.mark.parametrize("change, reason", [
    (lambda d: d["spec"].update(seed="0"), "missing or wrong type: spec.seed"),
    (lambda d: d.pop("generations_done"), "missing or wrong type: generations_done"),
    (lambda d: d.pop("spec"), "not a collapse-bench run.json (no spec with plugin and preset)"),
    (lambda d: d.update(track=[1]), "track is not an object with a name and an id"),
    (lambda d: d.update(leaderboard_metrics=[1]), "leaderboard_metrics is not a list of metric names"),
])
def test_unusable_run_json_is_refused_naming_the_field(gaussian_runs, tmp_path, change, reason):
    folder = tmp_path / "run"
    shutil.copytree(_folders(gaussian_runs)[0], folder)
    data = json.loads((folder / R.RUN_JSON).read_text())
    change(data)
    (folder / R.RUN_JSON).write_text(json.dumps(data))
    with pytest.raises(RF.RunJsonError) as exc:
        RF.read_run_json(folder)
    assert exc.value.reason == reason and str(exc.value) == f"{folder / R.RUN_JSON}: {reason}"
    assert RF.load_run_record(folder) == f"{folder / R.RUN_JSON}: {reason}; skipped"
    (folder / R.RUN_JSON).write_text("{oops")
    with pytest.raises(RF.RunJsonError, match="unreadable \\(JSONDecodeError"):
        RF.read_run_json(folder)


def test_a_track_of_other_generations_is_not_ranked(gaussian_runs, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(_folders(gaussian_runs)[0], folder)
    data = json.loads((folder / R.RUN_JSON).read_text())
    data["track"]["generations"] = 7
    (folder / R.RUN_JSON).write_text(json.dumps(data))
    assert RF.read_run_json(folder).track["generations"] == 7  # readable: `bench runs` lists it
    reason = "track.generations 7 differs from generations_requested 2"
    assert RF.load_run_record(folder) == f"{folder / R.RUN_JSON}: {reason}; skipped"
    with pytest.raises(RF.RunJsonError) as exc:
        RF.parse_run_json(folder, data)
    assert str(exc.value) == reason


def _legacy_track_id(plugin, preset, generations, real_data) -> str:
    """The track id as loop.py, grouping.py and validate.py each computed it, written out
    independently: SHA-256 of the canonical JSON of the four values, 12 hex digits."""
    key = {"plugin": plugin, "preset": preset, "generations": generations, "real_data": real_data}
    text = json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@pytest.mark.parametrize("plugin, preset, generations, real_data", [
    ("gmm", "paper", 10, "gmm:one-blob:n=1000:test=1000"),
    ("gaussian", "smoke", 2, None),
    ("hf-lm", "smoke", 5, "wikitext-2:sha256:abc"),
])
def test_one_track_id_formula(plugin, preset, generations, real_data):
    expected = _legacy_track_id(plugin, preset, generations, real_data)
    track = RF.make_track(plugin, preset, generations, real_data)
    assert track == {"name": f"{plugin}/{preset}", "id": expected, "plugin": plugin, "preset": preset,
                     "generations": generations, "real_data": real_data}
    spec = {"plugin": plugin, "preset": preset, "seed": 0, "generations": generations}
    assert grouping.derived_track(spec, generations, real_data) == track
    info = {"spec": spec, "generations_requested": generations, "real_data_fingerprint": real_data}
    assert P.track_of(info) == RF.track_of(info) == (expected, f"{plugin}/{preset}")


def test_the_loop_writes_the_track_the_formula_gives(gaussian_runs):
    for folder in _folders(gaussian_runs):
        run = RF.read_run_json(folder)
        assert run.track == RF.make_track("gaussian", "smoke", 2, run.track["real_data"])
        problems, usable = RF.run_json_problems(run.to_dict(), "run.json")
        assert problems == [] and usable


def test_find_runs_searches_below_once_and_skips_hidden(gaussian_runs, tmp_path):
    nested = tmp_path / "a" / "b"
    shutil.copytree(gaussian_runs, nested)
    (tmp_path / "link").symlink_to(nested)
    names = sorted(p.name for p in _folders(gaussian_runs))
    assert sorted(p.name for p in RF.find_runs([tmp_path])) == names  # .gen0 is not a run; the link adds none
    assert RF.find_runs([tmp_path / "missing"]) == []
    assert RF.find_runs([nested / names[0] / R.RUN_JSON]) == [nested / names[0]]
    assert R.find_runs is RF.find_runs  # the old name still works
    with pytest.raises(RF.BenchError, match="does not exist"):
        RF.find_run_dirs([tmp_path / "missing"])
    runs, empty = RF.find_run_dirs([tmp_path, tmp_path / "a" / "b" / names[0] / R.GENS_DIR])
    assert len(runs) == 2 and empty == [tmp_path / "a" / "b" / names[0] / R.GENS_DIR]


def test_one_metrics_schema_check():
    good = R.METRICS_SCHEMA
    assert RF.check_metrics_schema(good) == [] and RF.schema_problem(good) is None
    missing = pa.schema([f for f in good if f.name not in ("value", "metric")])
    assert RF.check_metrics_schema(missing) == ["missing columns metric, value"]
    assert RF.schema_problem(missing) == "not a collapse-bench metrics file (missing columns metric, value)"
    typed = pa.schema([pa.field("value", pa.string()) if f.name == "value" else f for f in good])
    assert RF.check_metrics_schema(typed) == ["column value has type string, expected double"]
    doubled = pa.schema(list(good) + [pa.field("seed", pa.int64())])
    assert RF.check_metrics_schema(doubled) == ["column seed appears 2 times"]
    table = RF.stamp(RF.gen_metrics_table([]), {"run_id": "r", "plugin": "p", "plugin_version": "1",
                                                 "preset": "s", "policy": "replace", "seed": 0})
    assert table.schema == good and R.validate_metrics(table) == []
    assert RF.check_metrics_schema(R.GEN_METRICS_SCHEMA, R.GEN_METRICS_SCHEMA) == []


def test_leaderboard_records_come_from_run_json(gaussian_runs):
    recs = [RF.load_run_record(f) for f in _folders(gaussian_runs)]
    assert all(isinstance(r, RF.RunRecord) and r.complete for r in recs)
    assert len({r.track["id"] for r in recs}) == 1  # gaussian's data source is the same for every seed
    assert RF.assign_tracks(recs) == [] and all(r.track_ids == (recs[0].track["id"],) for r in recs)
    assert recs[0].policy == recs[0].mitigation == "replace"
