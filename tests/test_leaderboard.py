"""bench.leaderboard: the formulas against independent computations, entries and tracks, warnings
for malformed files, escaping, and outputs that parse."""

from __future__ import annotations

import json
import math
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import integrate, stats

from bench import results as R
from bench.errors import BenchError
from bench.leaderboard import (
    build,
    curve_area,
    main_rows,
    md_escape,
    overall_score,
    rank,
    summarize,
)
from bench.spec import Spec

EVIL = "<script>alert(1)</script>|x"
TRACK = {"name": "toy/smoke", "id": "0123456789ab", "plugin": "toy", "preset": "smoke", "generations": 2,
         "real_data": "toy:data"}


def fake_run(root: Path, *, seed: int, policy: str = "replace", values: dict[str, list[float]],
             directions: dict[str, tuple[str, float | None]] | None = None, track: dict | None = None,
             main: list[str] = (), status: str = "complete", params: dict | None = None, start: str = "pretrained",
             plugin: str = "toy") -> Path:
    """A minimal run folder (run.json and metrics.parquet) with the given metric curves."""
    n = len(next(iter(values.values()))) - 1
    name, _, p = policy.partition(":")
    spec = {"plugin": plugin, "preset": "smoke", "params": params or {"a": 1}, "trainer": "t", "generator": "g",
            "scorer": "s", "metrics": sorted({m.split("/")[0] for m in values}), "policy": name,
            "policy_params": {"p": float(p)} if p else {}, "start": start, "seed": seed, "generations": n}
    s = Spec.from_dict(spec)
    identity = {"run_id": s.run_id, "plugin": plugin, "plugin_version": "1", "preset": "smoke",
                "policy": s.policy_label, "seed": seed}
    directions = directions or {}
    rows = []
    for k in range(n + 1):
        for metric, curve in values.items():
            direction, target = directions.get(metric, ("lower", None))
            rows.append({"generation": k, "metric": metric, "value": float(curve[k]), "direction": direction,
                         "target": target, "metric_version": "1", "metric_plugin": "toy",
                         "metric_plugin_version": "1"})
    folder = root / s.folder_name
    folder.mkdir(parents=True)
    done = n + 1 if status == "complete" else n
    info = {"schema_version": 1, "run_id": s.run_id, "gen0_id": s.gen0_id, "spec": spec, "identity": identity,
            "status": status, "generations_requested": n, "generations_done": done, "error": None,
            "real_data_fingerprint": "toy:data", "track": dict(track or {**TRACK, "generations": n}),
            "leaderboard_metrics": list(main)}
    R.write_json(folder / R.RUN_JSON, info)
    R.write_parquet(folder / R.METRICS_FILE, R.stamp(R.gen_metrics_table(rows), identity))
    return folder


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """Real gmm runs: two policies x 3 seeds, 2 generations; and one gaussian run."""
    import bench.api as cb

    out = tmp_path_factory.mktemp("real")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for policy in ("replace", "mix:0.5"):
            cb.run("gmm", "smoke", generations=2, seeds="0-2", policy=policy, out=out / "gmm")
        cb.run("gaussian", "smoke", generations=2, seeds="0", out=out / "gaussian")
    return out


def copy_runs(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns(".gen0", "gens", ".lock", "log.txt"))
    return dest


# -- the formulas ---------------------------------------------------------------------------------


def test_summarize_is_the_t_interval_of_scipy():
    rng = np.random.default_rng(1)
    for n in (2, 3, 7):
        x = rng.normal(size=(n, 4))
        mean, lo, hi = summarize(x)
        for j in range(4):
            want = stats.t.interval(0.95, n - 1, loc=x[:, j].mean(), scale=stats.sem(x[:, j]))
            assert mean[j] == pytest.approx(x[:, j].mean())
            assert (lo[j], hi[j]) == pytest.approx(want)


def test_summarize_hand_worked_and_edge_cases():
    # values 1, 2, 3: mean 2, sd 1, half-width t(0.975, 2) / sqrt(3) = 4.302653 / 1.732051
    mean, lo, hi = summarize(np.array([[1.0], [2.0], [3.0]]))
    assert mean[0] == 2.0 and hi[0] - 2.0 == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    mean, lo, hi = summarize(np.array([[5.0, 1.0]]))  # one seed: no interval
    assert list(mean) == [5.0, 1.0] and np.isnan(lo).all() and np.isnan(hi).all()
    mean, lo, hi = summarize(np.array([[1.0, 1.0, np.inf], [np.nan, 2.0, 3.0]]))
    assert np.isnan(mean[0]) and mean[1] == 1.5 and mean[2] == np.inf
    assert np.isnan(lo[0]) and np.isfinite(lo[1]) and np.isnan(lo[2])


def test_curve_area_is_the_trapezoid_over_n():
    assert curve_area(np.array([1.0, 3.0, 2.0])) == pytest.approx(((1 + 3) / 2 + (3 + 2) / 2) / 2)  # 2.25
    assert curve_area(np.array([[4.0]]))[0] == 4.0  # N = 0: the value
    curves = np.random.default_rng(2).random((5, 11))
    assert curve_area(curves) == pytest.approx(integrate.trapezoid(curves, axis=1) / 10)
    assert np.isnan(curve_area(np.array([1.0, np.nan, 2.0])))


def test_rank_by_direction_ties_nan_and_inf():
    assert list(rank([3, 1, 2], "lower")) == [3, 1, 2]
    assert list(rank([3, 1, 2], "higher")) == [1, 3, 2]
    assert list(rank([0.5, 1.2, 2.0, 1.0], "target", 1.0)) == [3, 2, 4, 1]  # by |value - 1|
    assert list(rank([0.5, 1.5, 2.0], "target", 1.0)) == [1.5, 1.5, 3]  # equal distances tie
    assert list(rank([1, 1, 2], "lower")) == [1.5, 1.5, 3]
    assert list(rank([np.nan, 1, 2], "lower")) == [3, 1, 2]
    assert list(rank([np.nan, 1, 2], "higher")) == [3, 2, 1]
    assert list(rank([1, np.nan, np.nan], "lower")) == [1, 2.5, 2.5]
    assert list(rank([np.inf, 1, np.nan], "lower")) == [2, 1, 3]
    assert list(rank([np.inf, 1, -np.inf], "higher")) == [1, 2, 3]
    assert list(rank([np.inf, 0.0, np.nan], "target", 1.0)) == [2, 1, 3]
    x = np.random.default_rng(3).integers(0, 5, 30).astype(float)
    assert list(rank(x, "lower")) == list(stats.rankdata(x))
    assert list(rank(x, "higher")) == list(stats.rankdata(-x))


def test_overall_score_weights_each_main_metric_once():
    rows = ["a", "b/0", "b/1", "c"]
    cover = main_rows(rows, ["a", "b", "missing"])
    assert cover == {"a": [0], "b": [1, 2]}
    final = np.array([[1, 1, 3, 1], [2, 3, 1, 2]], dtype=float)
    auc = np.array([[2, 1, 3, 2], [1, 3, 1, 1]], dtype=float)
    # entry 0: a -> (1+2)/2 = 1.5; b -> ((1+1)/2 + (3+3)/2)/2 = 2; score 1.75 (c is not main)
    # entry 1: a -> (2+1)/2 = 1.5; b -> ((3+3)/2 + (1+1)/2)/2 = 2; score 1.75
    assert list(overall_score(final, auc, cover)) == [1.75, 1.75]
    final[1, 1] = 2
    auc[1, 1] = 2
    assert overall_score(final, auc, cover)[1] == pytest.approx((1.5 + (2 + 1) / 2) / 2)


def test_md_escape():
    assert md_escape("a|b*c_d`e[f]<g>\\h\ni") == "a\\|b\\*c\\_d\\`e\\[f\\]\\<g\\>\\\\h i"


# -- building from run folders --------------------------------------------------------------------


def test_hand_worked_table(tmp_path):
    """Two entries x 3 seeds of known curves: means, intervals, AUCs and ranks as computed by hand."""
    res = tmp_path / "res"
    curves = {  # seed -> (entry A, entry B) curves of "loss" (lower) and "ratio" (target 1)
        0: ({"loss": [0, 1, 2], "ratio": [1, 1, 0.5]}, {"loss": [0, 2, 4], "ratio": [1, 1.1, 1.2]}),
        1: ({"loss": [0, 1, 3], "ratio": [1, 0.8, 0.6]}, {"loss": [0, 3, 5], "ratio": [1, 1.0, 1.1]}),
        2: ({"loss": [0, 2, 4], "ratio": [1, 0.9, 0.7]}, {"loss": [0, 1, 3], "ratio": [1, 1.2, 1.0]}),
    }
    d = {"ratio": ("target", 1.0)}
    for seed, (a, b) in curves.items():
        fake_run(res, seed=seed, policy="mix:0.5", values=a, directions=d, main=["loss", "ratio"])
        fake_run(res, seed=seed, policy="replace", values=b, directions=d, main=["loss", "ratio"])
    result = build([res], out=tmp_path / "lb")
    assert result.warnings == [] and result.runs_used == 6 and len(result.tracks) == 1
    data = json.loads((tmp_path / "lb" / "toy-smoke.json").read_text())
    entries = {e["label"]: e for e in data["entries"]}
    assert set(entries) == {"mix:0.5", "replace"} and all(e["seeds"] == [0, 1, 2] for e in entries.values())
    a, b = entries["mix:0.5"]["metrics"], entries["replace"]["metrics"]
    # loss at generation 2: A = 2, 3, 4 -> mean 3; B = 4, 5, 3 -> mean 4
    assert a["loss"]["final"]["mean"] == pytest.approx(3.0) and b["loss"]["final"]["mean"] == pytest.approx(4.0)
    lo, hi = stats.t.interval(0.95, 2, loc=3.0, scale=stats.sem([2, 3, 4]))
    assert a["loss"]["final"]["ci95"] == pytest.approx([lo, hi])
    # AUC of loss, A seed 0: ((0+1)/2 + (1+2)/2) / 2 = 1; seed 1: (0.5 + 2) / 2 = 1.25; seed 2: (1 + 3) / 2 = 2
    assert a["loss"]["auc"]["mean"] == pytest.approx((1 + 1.25 + 2) / 3)
    # ratio (target 1): final A = 0.5, 0.6, 0.7 -> mean 0.6, distance 0.4; B = 1.2, 1.1, 1.0 -> 1.1, 0.1
    assert a["ratio"]["final"]["mean"] == pytest.approx(0.6) and a["ratio"]["final"]["rank"] == 2
    assert b["ratio"]["final"]["rank"] == 1
    # AUC of |ratio - 1|, A seed 0: ((0+0)/2 + (0+0.5)/2) / 2 = 0.125; seed 1: ((0+.2)/2+(.2+.4)/2)/2 = 0.2;
    # seed 2: ((0+.1)/2+(.1+.3)/2)/2 = 0.125
    assert a["ratio"]["auc"]["mean"] == pytest.approx((0.125 + 0.2 + 0.125) / 3)
    assert a["loss"]["final"]["rank"] == 1 and a["loss"]["auc"]["rank"] == 1
    # B AUC of |ratio - 1|: seed 0 ((0+.1)/2+(.1+.2)/2)/2 = 0.1; seed 1 (0+0.05)/2 = 0.025; seed 2
    # ((0+.2)/2+(.2+0)/2)/2 = 0.1 -> 0.075, better than A's 0.15
    assert b["ratio"]["auc"]["rank"] == 1
    # scores: A (loss: 1, 1; ratio: 2, 2) -> 1.5; B -> 1.5: a tie, shared rank 1.5
    assert entries["mix:0.5"]["score"] == 1.5 and entries["replace"]["score"] == 1.5
    assert entries["mix:0.5"]["rank"] == entries["replace"]["rank"] == 1.5


def test_real_runs_entries_outputs_and_seed_drawn_tracks(real, tmp_path):
    out = tmp_path / "lb"
    result = build([real], out=out)
    assert result.warnings == []
    assert sorted(t.name for t in result.tracks) == ["gaussian/smoke", "gmm/smoke"]
    gmm = json.loads((out / "gmm-smoke.json").read_text())
    assert gmm["runs"] == 6 and "ids" not in gmm["track"]
    assert sorted((e["label"], len(e["seeds"])) for e in gmm["entries"]) == [("mix:0.5", 3), ("replace", 3)]
    assert gmm["main_metrics"] == ["gmm-l2", "gmm-std", "logdet-diff", "cov-trace-ratio", "tail-mass"]
    # The means equal an independent computation from the metrics tables.
    import bench.api as cb

    df = cb.metrics(real / "gmm")
    for e in gmm["entries"]:
        sel = df[(df.policy == e["label"]) & (df.metric == "gmm-l2")]
        final = sel[sel.generation == 2].value.to_numpy()
        assert e["metrics"]["gmm-l2"]["final"]["mean"] == pytest.approx(final.mean())
        auc = [integrate.trapezoid(g.sort_values("generation").value) / 2 for _, g in sel.groupby("seed")]
        assert e["metrics"]["gmm-l2"]["auc"]["mean"] == pytest.approx(np.mean(auc))
    # The outputs parse.
    csv = pd.read_csv(out / "gmm-smoke.csv")
    assert len(csv) == 2 * len(gmm["metrics"]) * 2 and set(csv.measure) == {"final", "auc"}
    assert set(csv.entry) == {"mix:0.5", "replace"}
    html = (out / "gmm-smoke.html").read_text()
    assert html.count("<table>") == 1 and html.count("<script>") == 1 and "http" not in html
    md = (out / "gmm-smoke.md").read_text()
    assert "| rank | entry | seeds | score |" in md
    index = (out / "index.md").read_text()
    assert "[HTML](gmm-smoke.html)" in index and "[JSON](gaussian-smoke.json)" in index
    assert f"gmm/smoke (track {gmm['track']['id']}): 2 entries from 6 runs" in result.summary()


def test_tracks_are_never_mixed(tmp_path):
    res = tmp_path / "res"
    for seed in range(2):
        fake_run(res / "a", seed=seed, values={"loss": [0, 1, 2]})
        fake_run(res / "b", seed=seed, values={"loss": [0, 5, 9]}, track={**TRACK, "id": "ffffffffffff"})
        fake_run(res / "c", seed=seed, values={"loss": [0, 1, 2, 3]}, track={**TRACK, "id": "eeeeeeeeeeee",
                                                                             "generations": 3})
    build([res / "a"], out=tmp_path / "lb")
    assert (tmp_path / "lb" / "toy-smoke.json").exists()
    result = build([res], out=tmp_path / "lb")
    assert result.warnings == [] and len(result.tracks) == 3 and all(t.runs == 2 for t in result.tracks)
    # the first build's tables of track 0123456789ab were renamed, not left beside the new ones
    assert not (tmp_path / "lb" / "toy-smoke.json").exists()
    assert len(list((tmp_path / "lb").glob("*.json"))) == 3
    assert (tmp_path / "lb" / "index.md").read_text().count("[HTML](") == 3
    # one name, several ids: the id goes into the file names
    assert sorted(t.slug for t in result.tracks) == ["toy-smoke-0123456789ab", "toy-smoke-eeeeeeeeeeee",
                                                     "toy-smoke-ffffffffffff"]
    b = json.loads((tmp_path / "lb" / "toy-smoke-ffffffffffff.json").read_text())
    assert b["entries"][0]["metrics"]["loss"]["final"]["mean"] == 9
    only = build([res], track="eeeeeeeeeeee", out=tmp_path / "one")
    assert [t.id for t in only.tracks] == ["eeeeeeeeeeee"] and only.runs_other_tracks == 4
    assert len(build([res], track="toy/smoke", out=tmp_path / "all").tracks) == 3
    with pytest.raises(BenchError, match="no run of track 'nope'.*toy/smoke \\(0123456789ab\\)"):
        build([res], track="nope", out=tmp_path / "x")


def test_older_runs_with_one_track_id_per_seed_are_joined(tmp_path):
    """Runs written before tracks named the data source record one id per seed for seed-drawn
    data: an entry's seeds join them, unless one seed has two ids (the data itself differs)."""
    res = tmp_path / "res"
    for seed in range(3):
        per_seed = {**TRACK, "id": f"{seed:012d}", "real_data": f"toy:sha{seed}"}
        fake_run(res, seed=seed, values={"loss": [0, 1, 2]}, track=per_seed)
        fake_run(res, seed=seed, policy="mix:0.1", values={"loss": [0, 1, 3]}, track=per_seed)
    for seed in range(2):  # same spec as mix:0.1 but other data for the same seeds: never joined
        fake_run(res / "other", seed=seed, policy="mix:0.1", values={"loss": [0, 1, 3]},
                 track={**TRACK, "id": f"{seed + 7:012d}"})
    fake_run(res / "other", seed=9, policy="mix:0.1", values={"loss": [0, 1, 3]}, track={**TRACK, "id": "9" * 12})
    result = build([res], out=tmp_path / "lb")
    assert result.warnings == []
    joined = [b for b in result.boards if "ids" in b.track]
    assert len(joined) == 1 and joined[0].track["ids"] == ["000000000000", "000000000001", "000000000002"]
    assert joined[0].track["id"] == "000000000000" and joined[0].runs == 6
    assert sorted(len(e.seeds) for e in joined[0].entries) == [3, 3]
    assert sorted(b.runs for b in result.boards if "ids" not in b.track) == [1, 1, 1]
    assert build([res], track="000000000002", out=tmp_path / "one").tracks[0].runs == 6


def test_labels_name_what_differs_and_main_metrics_choose_the_rank(tmp_path):
    res = tmp_path / "res"
    for seed in range(2):
        fake_run(res, seed=seed, values={"loss": [0, 1], "other": [0, 9]}, main=["loss"])
        fake_run(res, seed=seed, values={"loss": [0, 2], "other": [0, 0]}, main=["loss"], start="gen0",
                 params={"a": 2})
    result = build([res], out=tmp_path / "lb")
    data = json.loads((tmp_path / "lb" / "toy-smoke.json").read_text())
    assert [e["label"] for e in data["entries"]] == ["replace start=pretrained a=1", "replace start=gen0 a=2"]
    assert [m["name"] for m in data["metrics"] if m["main"]] == ["loss"]
    md = (tmp_path / "lb" / "toy-smoke.md").read_text()
    assert "## Other metrics at generation 1" in md and result.warnings == []


def test_partial_duplicate_and_malformed_runs_are_named_and_skipped(tmp_path):
    res = tmp_path / "res"
    good = [fake_run(res, seed=s, values={"loss": [0, 1, 2], "throughput/x": [1, 2, 3]}) for s in range(3)]
    partial = fake_run(res, seed=7, values={"loss": [0, 1, 2]}, status="running")
    failed = fake_run(res, seed=8, values={"loss": [0, 1, 2]}, status="failed")
    info = R.read_json(failed / R.RUN_JSON)
    R.write_json(failed / R.RUN_JSON, {**info, "error": "Traceback...\nValueError: boom"})
    dup = res / "copy-of-seed-0"
    shutil.copytree(good[0], dup)
    bad = {}

    def broken(name: str, seed: int) -> Path:
        folder = fake_run(res / name, seed=seed, values={"loss": [0, 1, 2]})
        bad[name] = folder
        return folder

    (broken("notjson", 10) / R.RUN_JSON).write_text("{not json")
    (broken("list", 11) / R.RUN_JSON).write_text("[1, 2]")
    f = broken("generations", 18) / R.RUN_JSON
    R.write_json(f, {**R.read_json(f), "track": {**TRACK, "generations": 5}})
    pq.write_table(pa.table({"x": [1, 2]}), broken("foreign", 12) / R.METRICS_FILE)
    (broken("text", 13) / R.METRICS_FILE).write_text("hello")
    f = broken("types", 14) / R.METRICS_FILE
    t = pq.read_table(f)
    pq.write_table(t.set_column(t.schema.get_field_index("value"), "value", t.column("value").cast(pa.string())), f)
    f = broken("other-run", 15) / R.METRICS_FILE
    t = pq.read_table(f)
    pq.write_table(t.set_column(1, "run_id", pa.array(["abc"] * t.num_rows)), f)
    f = broken("short", 16) / R.METRICS_FILE
    t = pq.read_table(f)
    pq.write_table(t.filter(pa.compute.less(t.column("generation"), 2)), f)
    (broken("missing", 17) / R.METRICS_FILE).unlink()
    (res / "stray").mkdir()
    (res / "stray" / "notes.txt").write_text("not a run")

    result = build([res, res / "stray"], out=tmp_path / "lb")
    w = "\n".join(result.warnings)
    assert f"{partial}: not complete (status running, 2 of 3 generations done); skipped" in w
    assert f"{failed}: not complete (status failed, 2 of 3 generations done, error: ValueError: boom)" in w
    assert f"{dup}: same spec and seed as" in w or f"{good[0]}: same spec and seed as" in w
    expect = {
        "notjson": (R.RUN_JSON, "unreadable (JSONDecodeError"),
        "list": (R.RUN_JSON, "not a collapse-bench run.json"),
        "generations": (R.RUN_JSON, "track.generations 5 differs from generations_requested 2"),
        "foreign": (R.METRICS_FILE, "not a collapse-bench metrics file (missing columns schema_version"),
        "text": (R.METRICS_FILE, "unreadable ("),
        "types": (R.METRICS_FILE, "column value has type string, expected double"),
        "other-run": (R.METRICS_FILE, "holds rows of another run"),
        "short": (R.METRICS_FILE, "rows for 2 of the 3 generations 0..2"),
        "missing": (R.METRICS_FILE, "missing"),
    }
    for name, (file, reason) in expect.items():
        assert f"{bad[name] / file}: {reason}" in w, name
    assert f"{res / 'stray'}: no run folders" in w
    assert result.runs_used == 3 and result.runs_skipped == 12 and result.runs_found == 15
    data = json.loads((tmp_path / "lb" / "toy-smoke.json").read_text())
    assert [m["name"] for m in data["metrics"]] == ["loss"]  # throughput rows are never ranked


def test_markup_from_plugins_and_results_is_escaped(tmp_path):
    res = tmp_path / "res"
    for seed in range(2):
        folder = fake_run(res, seed=seed, values={"loss": [0, 1]}, track={**TRACK, "name": EVIL, "id": EVIL,
                                                                         "generations": 1}, main=["loss"],
                          params={"<b>k</b>": "<i>v</i>"})  # in the spec, so in the run id
        info = R.read_json(folder / R.RUN_JSON)
        info["identity"]["policy"] = EVIL
        R.write_json(folder / R.RUN_JSON, info)
        t = pq.read_table(folder / R.METRICS_FILE)
        t = t.set_column(t.schema.get_field_index("metric"), "metric", pa.array([f"{EVIL}/m"] * t.num_rows))
        pq.write_table(t, folder / R.METRICS_FILE)
    fake_run(res, seed=0, values={"loss": [0, 1]}, track={**TRACK, "name": EVIL, "id": EVIL, "generations": 1},
             params={"a": 3}, main=["loss"])
    result = build([res], out=tmp_path / "lb")
    assert len(result.tracks) == 1
    out = tmp_path / "lb"
    slug = result.tracks[0].slug
    assert "/" not in slug and not slug.startswith(".")
    for name in (f"{slug}.md", "index.md"):
        md = (out / name).read_text()
        assert "<script>" not in md and "<b>" not in md and "<i>" not in md, name
        assert "\\<script\\>alert(1)\\</script\\>\\|x" in md, name
    md = (out / f"{slug}.md").read_text()
    assert "\\<b\\>k\\</b\\>=\\<i\\>v\\</i\\>" in md or "\\<i\\>v\\</i\\>" in md
    widths = []  # every row of a table has as many cells as its separator line
    for line in md.splitlines() + [""]:
        if line.startswith("|"):
            widths.append(line.replace("\\|", "").count("|"))
        elif widths:
            assert len(set(widths)) == 1 and len(widths) >= 3, widths
            widths = []
    page = (out / f"{slug}.html").read_text()
    assert page.count("<script>") == 1 and "<b>" not in page and "<i>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;|x" in page
    json.loads((out / f"{slug}.json").read_text())


def test_nan_and_inf_values_rank_without_crashing(tmp_path):
    res = tmp_path / "res"
    for seed in range(2):
        fake_run(res, seed=seed, policy="mix:0.1", values={"ppl": [1, 2, np.inf]})
        fake_run(res, seed=seed, policy="mix:0.2", values={"ppl": [1, 2, np.nan]})
        fake_run(res, seed=seed, policy="mix:0.3", values={"ppl": [1, 2, 3 + seed]})
    result = build([res], out=tmp_path / "lb")
    assert result.warnings == []

    def strict(text):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))

    data = strict((tmp_path / "lb" / "toy-smoke.json").read_text())
    by = {e["label"]: e["metrics"]["ppl"] for e in data["entries"]}
    assert by["mix:0.1"]["final"]["mean"] == "inf" and by["mix:0.1"]["final"]["ci95"] == [None, None]
    assert by["mix:0.2"]["final"]["mean"] is None
    assert [by[p]["final"]["rank"] for p in ("mix:0.3", "mix:0.1", "mix:0.2")] == [1, 2, 3]
    assert [e["label"] for e in data["entries"]] == ["mix:0.3", "mix:0.1", "mix:0.2"]
    csv = pd.read_csv(tmp_path / "lb" / "toy-smoke.csv")
    final = csv[(csv.measure == "final")].set_index("entry")["mean"]
    assert final["mix:0.1"] == np.inf and np.isnan(final["mix:0.2"]) and final["mix:0.3"] == 3.5


def test_user_mistakes_are_clear_errors(tmp_path):
    with pytest.raises(BenchError, match="does not exist"):
        build([tmp_path / "nope"], out=tmp_path / "lb")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BenchError, match="no run folders"):
        build([tmp_path / "empty"], out=tmp_path / "lb")
    with pytest.raises(BenchError, match="at least one folder"):
        build([], out=tmp_path / "lb")


def test_run_json_without_track_gets_the_harness_hash(tmp_path):
    import hashlib

    res = tmp_path / "res"
    for seed in range(2):
        folder = fake_run(res, seed=seed, values={"loss": [0, 1, 2]})
        info = R.read_json(folder / R.RUN_JSON)
        del info["track"], info["leaderboard_metrics"]
        R.write_json(folder / R.RUN_JSON, info)
    result = build([res], out=tmp_path / "lb")
    key = {"plugin": "toy", "preset": "smoke", "generations": 2, "real_data": "toy:data"}
    text = json.dumps(key, sort_keys=True, separators=(",", ":"))
    assert result.warnings == [] and [t.runs for t in result.tracks] == [2]
    assert result.tracks[0].id == hashlib.sha256(text.encode()).hexdigest()[:12]


def test_reading_threads_give_the_same_tables(tmp_path):
    res = tmp_path / "res"
    rng = np.random.default_rng(5)
    for seed in range(35):
        for policy in ("replace", "mix:0.5"):
            fake_run(res, seed=seed, policy=policy, values={"loss": list(rng.random(3))})
    one = build([res], out=tmp_path / "one", workers=1)
    four = build([res], out=tmp_path / "four", workers=4)
    assert one.runs_used == four.runs_used == 70
    assert (tmp_path / "one" / "toy-smoke.json").read_text() == (tmp_path / "four" / "toy-smoke.json").read_text()


# -- the commands that reproduce an entry ---------------------------------------------------------


@pytest.fixture(scope="module")
def gaussian_runs(tmp_path_factory):
    """Real gaussian smoke runs: two policies x 2 seeds, 2 generations, two parameters overridden."""
    import bench.api as cb

    out = tmp_path_factory.mktemp("gaussian")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for policy in ("replace", "mix:0.5"):
            cb.run("gaussian", "smoke", generations=2, seeds="0-1", policy=policy,
                   set={"n_samples": 30, "std": 1.5}, out=out)
    return out


def _dry_run_ids(command: str) -> list[str]:
    """The run ids ``command --dry-run`` names (its printed JSON objects)."""
    import shlex

    from click.testing import CliRunner

    from bench.cli import cli

    args = shlex.split(command)
    assert args[:2] == ["bench", "run"], command
    res = CliRunner().invoke(cli, [*args[1:], "--dry-run"])
    assert res.exit_code == 0, res.output
    decoder, text, i, ids = json.JSONDecoder(), res.output, 0, []
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i == len(text):
            return ids
        obj, i = decoder.raw_decode(text, i)
        ids.append(obj["run_id"])


def test_each_entry_prints_the_command_that_reproduces_its_runs(gaussian_runs, tmp_path):
    out = tmp_path / "lb"
    build([gaussian_runs], out=out)
    data = json.loads((out / "gaussian-smoke.json").read_text())
    md = (out / "gaussian-smoke.md").read_text()
    page = (out / "gaussian-smoke.html").read_text()
    assert sorted(e["label"] for e in data["entries"]) == ["mix:0.5", "replace"]
    for e in data["entries"]:
        command = e["command"]
        assert "--seeds 0-1" in command and "--set n_samples=30" in command and "--set std=1.5" in command
        want = sorted(R.read_json(gaussian_runs / run / R.RUN_JSON)["run_id"] for run in e["runs"])
        assert sorted(_dry_run_ids(command)) == want, command
        assert f"  {command}\n" in md  # a code block under "## Reproduce"
        assert command in page  # nothing in it needs HTML escaping
    # a command for another seed names another run: the ids come from the spec, not the folders
    other = data["entries"][0]["command"].replace("--seeds 0-1", "--seeds 5")
    assert not set(_dry_run_ids(other)) & {R.read_json(p)["run_id"] for p in gaussian_runs.glob(f"*/{R.RUN_JSON}")}


def test_command_values_read_back_as_the_spec_holds_them():
    import yaml

    from bench.reproduce import format_seeds, run_command, set_value
    from bench.spec import parse_assignments

    assert format_seeds([4, 0, 1, 2, 7, 9, 10]) == "0-2,4,7,9-10" and format_seeds([3]) == "3"
    values = {"lr": 1e-05, "big": 1e20, "n": 3, "x": 1.0, "s": "01", "t": "true", "e": "", "none": None,
              "flag": False, "dims": [16, 32], "f": [1e-05, 0.5], "odd": "a: b", "inf": float("inf")}
    for key, value in values.items():
        text = set_value(value)
        assert parse_assignments([f"{key}={text}"])[key] == value, (key, text)
    assert set_value(1e-05) == "1.0e-05" and yaml.safe_load("1e-05") == "1e-05"  # why floats keep a point
    spec = {"plugin": "toy", "preset": "smoke", "generations": 3, "policy": "mix", "policy_params": {"p": 0.5},
            "start": "gen0", "params": {"name": "a b", "lr": 0.1}, "metrics": ["m1", "m2"], "seed": 4}
    assert run_command(spec) == ("bench run --plugin toy --preset smoke --generations 3 --policy mix "
                                 "--set policy.p=0.5 --start gen0 --set lr=0.1 --set 'name=a b' "
                                 "--metric m1 --metric m2 --seeds 4")
    with pytest.raises(BenchError, match="seed"):
        run_command({k: v for k, v in spec.items() if k != "seed"})


# -- where the tables go, and never over another track's ------------------------------------------


def test_without_out_the_cli_writes_beside_the_results_and_says_where(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from bench.cli import cli

    for seed in range(2):
        fake_run(tmp_path / "results", seed=seed, values={"loss": [0, 1, 2]})
    monkeypatch.chdir(tmp_path)
    out = CliRunner().invoke(cli, ["leaderboard"])  # no RESULTS: results/
    assert out.exit_code == 0, out.output
    assert not (tmp_path / "leaderboards").exists() and (tmp_path / "results/leaderboards/toy-smoke.md").is_file()
    assert out.output.rstrip().endswith(f"tables written to {Path('results') / 'leaderboards'}{os.sep} (1 track(s), "
                                        "5 files; every table in the folder is listed in index.md)")
    assert CliRunner().invoke(cli, ["leaderboard", "--out", "mine"]).exit_code == 0
    assert (tmp_path / "mine" / "toy-smoke.md").is_file()


@pytest.mark.slow
def test_without_out_the_tables_go_inside_the_first_results_folder(real, tmp_path, monkeypatch):
    """Not into the project's leaderboards/: into RESULTS/leaderboards/, which every reader of the
    results passes over (no run.json), and the command says where they went."""
    from click.testing import CliRunner

    from bench import validate
    from bench.cli import cli
    from bench.leaderboard import default_out
    from bench.runfolder import find_runs

    res = tmp_path / "results"
    shutil.copytree(real, res)
    monkeypatch.chdir(tmp_path)
    runs = find_runs([res])
    out = CliRunner().invoke(cli, ["leaderboard", "results"])
    assert out.exit_code == 0, out.output
    assert not (tmp_path / "leaderboards").exists()
    assert sorted(p.name for p in (res / "leaderboards").iterdir()) == sorted(
        f"{stem}.{ext}" for stem in ("gaussian-smoke", "gmm-smoke") for ext in ("md", "html", "csv", "json")) + [
        "index.md"]
    assert f"tables written to {Path('results') / 'leaderboards'}" in out.output
    assert "-> results/leaderboards/gmm-smoke.{md,html,csv,json}" in out.output
    # the readers of RESULTS do not take the tables for runs, nor complain about them
    assert find_runs([res]) == runs
    assert validate.check([res]).ok
    again = build([res], out=None)
    assert again.warnings == [] and again.runs_found == len(runs) and again.out == res / "leaderboards"
    listing = CliRunner().invoke(cli, ["runs", "results"])
    assert listing.exit_code == 0 and "leaderboards" not in listing.output
    suite = CliRunner().invoke(cli, ["leaderboard", "results", "--suite"])
    assert suite.exit_code == 0, suite.output
    assert (res / "leaderboards" / "index.html").is_file() and "results/leaderboards/index.html" in suite.output
    # a run folder given directly: the tables go beside it, never into it
    assert default_out([runs[0]]) == default_out([runs[0] / R.RUN_JSON]) == runs[0].parent / "leaderboards"
    assert default_out([]) == Path("results") / "leaderboards"
    with pytest.raises(BenchError, match="is a run folder"):
        build([res], out=runs[0])


def test_a_track_never_overwrites_another_tracks_table(tmp_path):
    """The published opt125m-smoke case: tables of another track with the same name are already in
    the folder; build after build, each track keeps its own files and index.md lists both."""
    res, out = tmp_path / "res", tmp_path / "lb"
    for seed in range(2):
        fake_run(res / "a", seed=seed, values={"loss": [0, 1, 2]})
        fake_run(res / "b", seed=seed, values={"loss": [0, 5, 9]}, track={**TRACK, "id": "ffffffffffff"})
    first = build([res / "a"], out=out)
    assert [t.slug for t in first.tracks] == ["toy-smoke"]
    for _ in range(2):  # a second build meets the first build's files, a third its own
        second = build([res / "b"], out=out)
        assert [t.slug for t in second.tracks] == ["toy-smoke-ffffffffffff"]
        assert json.loads((out / "toy-smoke.json").read_text())["track"]["id"] == "0123456789ab"
        assert json.loads((out / "toy-smoke-ffffffffffff.json").read_text())["track"]["id"] == "ffffffffffff"
        assert "toy-smoke-ffffffffffff.{md,html,csv,json}" in second.summary()
        index = (out / "index.md").read_text()
        assert "[JSON](toy-smoke.json)" in index and "[JSON](toy-smoke-ffffffffffff.json)" in index
        assert len(list(out.glob("*.json"))) == 2
    third = build([res / "a"], out=out)  # the first track again: its own stem, the other kept
    assert [t.slug for t in third.tracks] == ["toy-smoke"] and len(list(out.glob("*.json"))) == 2


def test_stems_never_collide_within_a_build_or_with_the_folders_own_files(tmp_path):
    res = tmp_path / "res"
    tracks = {"x": {**TRACK, "name": "a/b", "id": "aaaaaaaaaaaa"}, "y": {**TRACK, "name": "a-b", "id": "bbbbbbbbbbbb"},
              "z": {**TRACK, "name": "index", "id": "cccccccccccc"}, "w": {**TRACK, "name": "suite", "id": "dddddddddddd"}}
    for folder, track in tracks.items():
        fake_run(res / folder, seed=0, values={"loss": [0, 1, 2]}, track=track)
    result = build([res], out=tmp_path / "lb")
    assert sorted(t.slug for t in result.tracks) == ["a-b", "a-b-aaaaaaaaaaaa", "index-cccccccccccc",
                                                     "suite-dddddddddddd"]
    assert (tmp_path / "lb" / "index.md").read_text().startswith("# Leaderboards")


# -- the paper's figures beside a track's table ---------------------------------------------------


def test_paper_figures_beside_the_table_of_entries_that_reproduce_the_experiment(tmp_path):
    """A registry whose toy model declares references for its smoke preset: entries keeping the
    preset (replace) reproduce it, mix:0.5 does not; a track of another plugin shows none."""
    from types import SimpleNamespace

    from bench.components import Reference

    refs = (Reference("loss", 0.5, generation=0, label="the paper's <start>"),
            Reference("loss", 2.0, generation=9, high=3.0, label="after 9"))
    toy = SimpleNamespace(references={"smoke": refs}, presets={"smoke": {"a": 1, "policy": "replace"}}, trainer="t", generator="g",
                          scorer="s")

    class Models:
        def get(self, name):
            if name != "toy":
                raise BenchError(f"unknown model {name}")
            return toy

    res = tmp_path / "res"
    for seed in range(2):
        for policy in ("replace", "mix:0.5"):
            fake_run(res, seed=seed, policy=policy, values={"loss": [0.4, 1, 2]})
        fake_run(tmp_path / "other", seed=seed, values={"loss": [0, 1, 2]}, plugin="other",
                 track={**TRACK, "name": "other/smoke", "id": "999999999999", "plugin": "other"})
    out = tmp_path / "lb"
    result = build([res, tmp_path / "other"], out=out, bench=SimpleNamespace(models=Models()))
    (board,) = [b for b in result.boards if b.track["name"] == "toy/smoke"]
    assert board.references == list(refs) and board.reproducing == ["replace"]
    md = (out / "toy-smoke.md").read_text()
    assert "Paper's figures, for the entries that reproduce the paper's experiment (replace:" in md
    assert "- loss: paper: 0.5 at generation 0 (the paper's \\<start\\>)" in md
    assert "- loss: paper: 2-3 at generation 9 (after 9); beyond this track's generations 0..2" in md
    assert md.index("Paper's figures") < md.index("| rank |")  # beside the table, above it
    page = (out / "toy-smoke.html").read_text()
    assert '<ul class="references">' in page and "<li>loss: paper: 0.5 at generation 0 (the paper&#39;s &lt;start&gt;)" in page
    data = json.loads((out / "toy-smoke.json").read_text())
    assert [r["value"] for r in data["references"]] == [0.5, 2.0] and data["reproducing_entries"] == ["replace"]
    for ext in ("md", "html"):
        assert "figures, for the entries" not in (out / f"other-smoke.{ext}").read_text()
    assert "references" not in json.loads((out / "other-smoke.json").read_text())


@pytest.mark.slow
def test_gmm_paper_runs_show_the_papers_figures(tmp_path):
    """Real runs of the gmm paper preset (2 generations: seconds): the leaderboard page and the
    index page show the figures bench.references gives for the preset."""
    import bench.api as cb
    from bench.plugins import Bench
    from bench.references import describe, for_spec
    from bench.suite import build_suite

    res = tmp_path / "results"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for policy in ("replace", "mix:0.1"):
            cb.run("gmm", "paper", generations=2, seeds="0", policy=policy, out=res)
    result = build_suite([res])
    out = res / "leaderboards"
    (board,) = result.leaderboard.boards
    replace = next(e for e in board.entries if e.label == "replace")
    expected = for_spec(Bench(), replace.spec)
    assert expected and board.references == list(expected) and board.reproducing == ["replace"]
    md = (out / "gmm-paper.md").read_text()
    html = (out / "gmm-paper.html").read_text()
    site = (out / "index.html").read_text()
    for ref in expected:
        line = f"{ref.metric}: {describe(ref)}"
        assert f"- {md_escape(line)}" in md
        assert line.replace("'", "&#39;") in html and line.replace("'", "&#39;") in site
