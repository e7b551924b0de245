"""bench.suite: generations to collapse against hand-worked curves, the suite table's paired
differences, ranks and n/a cells against independent computations from the run folders, the
headline override, escaping and CSV formulas, malformed runs, and the page in headless Chromium."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from scipy import stats

from bench import mitigations
from bench import results as R
from bench.errors import BenchError
from bench.suite import Collapse, build_suite, generations_to_collapse, heatmap_values, override_headline
from tests.helpers import bench_cli

N = 8  # generations 0..8
EVIL = "<script>alert(1)</script>|x"
FORMULA = '=HYPERLINK("http://x","y")'
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def results(tmp_path_factory, bench_plugins):
    """gaussian smoke: replace, mix:0.5, accumulate, seeds 0-2; categorical smoke: replace and
    top-k:5 (not for gaussian) seeds 0-2, mix:0.5 seeds 1-3 (two seeds shared with replace), no
    accumulate. Generations 0..8."""
    import bench.api as cb

    out = tmp_path_factory.mktemp("suite-runs")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for policy in ("replace", "mix:0.5", "accumulate"):
            cb.run("gaussian", "smoke", generations=N, seeds="0-2", policy=policy, out=out / "gaussian",
                   bench=bench_plugins)
        cb.run("categorical", "smoke", generations=N, seeds="0-2", policy="replace", out=out / "categorical",
               bench=bench_plugins)
        cb.run("categorical", "smoke", generations=N, seeds="1-3", policy="mix:0.5", out=out / "categorical",
               bench=bench_plugins)
        cb.run("categorical", "smoke", generations=N, seeds="0-2", mitigation="top-k:5", out=out / "categorical",
               bench=bench_plugins)
    return out


@pytest.fixture(scope="module")
def suite(results, tmp_path_factory, bench_plugins):
    out = tmp_path_factory.mktemp("suite-out")
    res = build_suite([results], out, bench=bench_plugins)
    return res, out, json.loads((out / "suite.json").read_text())


def read_runs(root: Path) -> pd.DataFrame:
    """Every run's final-generation and full curves, read straight from the files (not through
    bench.leaderboard): track name, mitigation, seed, metric, generation, value."""
    frames = []
    for info_file in sorted(root.rglob(R.RUN_JSON)):
        info = json.loads(info_file.read_text())
        df = pq.read_table(info_file.parent / R.METRICS_FILE).to_pandas()
        frames.append(df.assign(track=info["track"]["name"], mitigation=info["identity"]["mitigation"],
                                headline=json.dumps(info["headline"])))
    return pd.concat(frames)


def final_values(df: pd.DataFrame, track: str, mitigation: str, metric: str) -> dict[int, float]:
    sel = df[(df.track == track) & (df.mitigation == mitigation) & (df.metric == metric) & (df.generation == N)]
    return dict(zip(sel.seed, sel.value))


def first_crossing(curve, direction, threshold, mode):
    """A plain loop: the first g >= 1 whose value moved past the threshold, or None."""
    for g in range(1, len(curve)):
        if mode == "diff":
            change = curve[g] - curve[0]
            hit = change >= threshold if direction == "lower" else change <= -threshold
        else:
            ratio = curve[g] / curve[0]
            hit = ratio >= threshold if direction == "lower" else ratio <= threshold
        if hit:
            return g
    return None


# -- generations to collapse ----------------------------------------------------------------------


def test_generations_to_collapse_hand_worked():
    # lower, diff 0.5: 1.6 - 1.0 = 0.6 at g = 2 (1.2 - 1.0 = 0.2 at g = 1 is not enough)
    assert generations_to_collapse([1.0, 1.2, 1.6, 1.4, 2.0], "lower", 0.5) == 2
    assert generations_to_collapse([1.0, 1.5], "lower", 0.5) == 1  # reaching the threshold counts
    assert generations_to_collapse([1.0, 1.2, 1.3, 0.9], "lower", 0.5) == np.inf  # never: censored
    assert generations_to_collapse([1.0, 0.2, -3.0], "lower", 0.5) == np.inf  # improving is not collapse
    # lower, ratio 2: 3 / 2 = 1.5 no, 4.5 / 2 = 2.25 at g = 2
    assert generations_to_collapse([2.0, 3.0, 4.5], "lower", 2.0, "ratio") == 2
    # higher, diff 0.3: 0.8 - 0.9 = -0.1 no, 0.5 - 0.9 = -0.4 <= -0.3 at g = 2
    assert generations_to_collapse([0.9, 0.8, 0.5, 0.3], "higher", 0.3) == 2
    assert generations_to_collapse([0.9, 1.5, 3.0], "higher", 0.3) == np.inf
    # higher, ratio 0.5: 0.6 / 0.8 = 0.75 no, 0.35 / 0.8 = 0.4375 <= 0.5 at g = 2
    assert generations_to_collapse([0.8, 0.6, 0.35], "higher", 0.5, "ratio") == 2
    # target 1: distances 0, 0.1, 0.4, 0.9 -> 0.9 - 0 >= 0.5 at g = 3 (both sides of the target count)
    assert generations_to_collapse([1.0, 1.1, 0.6, 1.9], "target", 0.5, target=1.0) == 3
    assert generations_to_collapse([1.0, 1.1, 1.6], "target", 0.5, target=1.0) == 2
    # NaN: at generation 0 undefined; later it never crosses
    assert np.isnan(generations_to_collapse([np.nan, 5.0, 9.0], "lower", 0.5))
    assert generations_to_collapse([1.0, np.nan, 2.0], "lower", 0.5) == 2
    assert generations_to_collapse([1.0, np.inf], "lower", 0.5) == 1  # an overflowing value has collapsed
    with pytest.raises(ValueError):
        generations_to_collapse([1.0, 2.0], "sideways", 0.5)


def test_generations_to_collapse_equals_a_plain_loop_on_random_curves():
    rng = np.random.default_rng(7)
    curves = 1.0 + np.cumsum(rng.normal(0, 0.3, size=(6, 50, N + 1)), axis=-1)
    for direction in ("lower", "higher"):
        for mode, threshold in (("diff", 0.5), ("ratio", 1.4 if direction == "lower" else 0.7)):
            got = generations_to_collapse(curves, direction, threshold, mode)
            assert got.shape == (6, 50)
            for idx in np.ndindex(6, 50):
                want = first_crossing(curves[idx], direction, threshold, mode)
                assert got[idx] == (np.inf if want is None else want), (direction, mode, idx)


def test_collapse_median_and_range_over_seeds():
    c = Collapse.of([2, 2, np.inf], [0, 1, 2], 8)
    assert (c.median, c.low, c.high, c.censored) == (2, 2, np.inf, 1) and c.text() == "2 [2–>8]"
    c = Collapse.of([np.inf, np.inf, 5], [0, 1, 2], 8)  # the median is censored: >N
    assert c.median == np.inf and c.text() == ">8 [5–>8]"
    c = Collapse.of([3, np.inf], [0, 1], 8)  # two seeds: the mean of 3 and ">8" is ">8"
    assert c.text() == ">8 [3–>8]"
    assert Collapse.of([4, 4, 4], [0, 1, 2], 8).text() == "4"
    assert Collapse.of([3, 4, 6, 7], [0, 1, 2, 3], 8).text() == "5 [3–7]"
    assert Collapse.of([3, np.nan], [0, 1], 8).text() == "n/a"
    j = Collapse.of([2, np.inf], [5, 6], 8).to_json()
    assert j["per_seed"] == [{"seed": 5, "generation": 2, "censored": False},
                             {"seed": 6, "generation": None, "censored": True}]
    assert j["median"] is None and j["median_censored"] and j["min"] == 2 and j["max_censored"]


def test_override_headline_is_checked():
    assert override_headline({"metric": "m", "threshold": 2})["mode"] == "diff"
    assert override_headline({"metric": "m", "threshold": 2, "mode": "ratio"})["source"] == "override"
    for bad in ({"metric": "m", "threshold": "x"}, {"metric": "m", "threshold": math.inf},
                {"metric": "", "threshold": 1}, {"metric": "m", "threshold": 1, "mode": "log"}):
        with pytest.raises(BenchError, match="headline override"):
            override_headline(bad)


# -- the suite table on real runs -----------------------------------------------------------------


@pytest.mark.slow
def test_gens_to_collapse_in_the_track_tables(suite, results, bench_plugins):
    _, out, _ = suite
    df = read_runs(results)
    collapsed = 0
    for stem, track, plugin in (("gaussian-smoke", "gaussian/smoke", "gaussian"),
                                ("categorical-smoke", "categorical/smoke", "categorical")):
        board = json.loads((out / f"{stem}.json").read_text())
        h = board["headline"]
        declared = bench_plugins.models.get(plugin).headline  # what the bundle declares, run.json copies
        metric, direction = declared.metric, bench_plugins.metrics.get(declared.metric).direction
        assert (h["metric"], h["direction"], h["source"]) == (metric, direction, "run.json")
        assert (h["threshold"], h["mode"]) == (declared.threshold, declared.mode)
        assert json.loads(df[df.track == track].headline.iloc[0])["metric"] == metric
        for entry in board["entries"]:
            got = {p["seed"]: p["generation"] for p in entry["gens_to_collapse"]["per_seed"]}
            for seed in entry["seeds"]:
                run = df[(df.track == track) & (df.metric == metric) & (df.seed == seed)
                         & df.run_id.isin(_run_ids(results, track, entry["runs"]))].sort_values("generation")
                assert len(run) == N + 1
                assert got[seed] == first_crossing(run.value.to_numpy(), direction, h["threshold"], h["mode"])
            collapsed += sum(g is not None for g in got.values())
            gens = [np.inf if g is None else g for g in got.values()]
            med = np.median(gens)
            assert (entry["gens_to_collapse"]["median"] is None) == math.isinf(med)
            if math.isfinite(med):
                assert entry["gens_to_collapse"]["median"] == med
        md = (out / f"{stem}.md").read_text()
        assert "| rank | entry | seeds | score | gens to collapse |" in md
        table = pd.read_csv(out / f"{stem}.csv")
        assert {"gens_to_collapse", "gens_to_collapse_min", "gens_to_collapse_max"} <= set(table.columns)
        html = (out / f"{stem}.html").read_text()
        assert "<th>gens to collapse</th>" in html
    assert collapsed > 0  # some seeds collapse within 8 generations (categorical replace loses states)


def _run_ids(root: Path, track: str, folders: list[str]) -> list[str]:
    ids = []
    for f in root.rglob(R.RUN_JSON):
        if f.parent.name in folders:
            info = json.loads(f.read_text())
            if info["track"]["name"] == track:
                ids.append(info["run_id"])
    return ids


def test_paired_differences_equal_an_independent_computation(suite, results):
    res, _, data = suite
    df = read_runs(results)
    tracks = {t["id"]: t for t in data["tracks"]}
    assert sorted(t["name"] for t in tracks.values()) == ["categorical/smoke", "gaussian/smoke"]
    checked = 0
    for row in data["rows"]:
        for tid, cell in row["cells"].items():
            if cell["entry"] is None or cell["baseline"]:
                continue
            t = tracks[tid]
            metric = t["headline"]["metric"]
            mine = final_values(df, t["name"], row["mitigation"], metric)
            base = final_values(df, t["name"], "replace", metric)
            shared = sorted(set(mine) & set(base))
            a, b = np.array([mine[s] for s in shared]), np.array([base[s] for s in shared])
            d = a - b
            assert cell["diff"]["n_paired"] == len(shared)
            assert cell["diff"]["mean"] == pytest.approx(d.mean(), rel=1e-12, abs=1e-12)
            lo, hi = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
            assert [cell["diff"]["low"], cell["diff"]["high"]] == pytest.approx([lo, hi], rel=1e-9)
            ci = stats.ttest_rel(a, b).confidence_interval(0.95)  # scipy's paired t-test says the same
            assert [cell["diff"]["low"], cell["diff"]["high"]] == pytest.approx([ci.low, ci.high], rel=1e-9)
            # the better side of 0: below for a lower-is-better headline, above for higher
            side = 1.0 if t["headline"]["direction"] == "higher" else -1.0
            assert t["headline"]["direction"] in ("lower", "higher")
            want = "win" if side * lo > 0 and side * hi > 0 else "loss" if side * lo < 0 and side * hi < 0 else None
            assert cell["diff"]["beyond_interval"] == want
            assert cell["diff"]["better"] == ("better" if side * d.mean() > 0 else "worse")
            # the colour: the difference over the sd of replace's final values, signed + = better
            sd = np.std(list(base.values()), ddof=1)
            assert cell["standardised"] == pytest.approx(side * d.mean() / sd)
            checked += 1
    assert checked == 4  # gaussian mix and accumulate, categorical mix and top-k
    mix = next(r for r in data["rows"] if r["label"] == "mix:0.5")
    cat = next(t["id"] for t in data["tracks"] if t["name"] == "categorical/smoke")
    assert mix["cells"][cat]["diff"]["n_paired"] == 2  # seeds 1 and 2: seed 3 has no replace run
    # wins and losses count the cells
    for row in data["rows"]:
        beyond = [c["diff"]["beyond_interval"] for c in row["cells"].values()]
        assert (row["wins"], row["losses"]) == (beyond.count("win"), beyond.count("loss"))
    # the heatmap's values: grey (NaN) without an entry, 0 for the baseline, clipped elsewhere
    z, hatch = heatmap_values(res)
    for i, row in enumerate(res.rows):
        for k, c in enumerate(row.cells):
            if not c.has_entry:
                assert np.isnan(z[i, k])
            elif c.baseline:
                assert z[i, k] == 0 and not hatch[i, k]
            else:
                assert z[i, k] == pytest.approx(max(-3, min(3, c.standardised)))


def test_ranks_by_the_headline_mean_at_the_final_generation(suite, results):
    res, out, data = suite
    df = read_runs(results)
    for t in data["tracks"]:
        metric = t["headline"]["metric"]
        ranked = {r["label"]: r["cells"][t["id"]] for r in data["rows"] if r["cells"][t["id"]]["entry"] is not None}
        means = {label: np.mean(list(final_values(df, t["name"], label, metric).values())) for label in ranked}
        sign = -1 if t["headline"]["direction"] == "higher" else 1
        want = stats.rankdata([sign * means[label] for label in ranked])  # 1 = best
        assert [c["rank"] for c in ranked.values()] == list(want)
        for label, c in ranked.items():
            assert c["final_mean"] == pytest.approx(means[label])
    # rows by mean rank over the tracks where they have one
    means = [r["mean_rank"] for r in data["rows"]]
    assert means == sorted(means)
    for r in data["rows"]:
        ranks = [c["rank"] for c in r["cells"].values() if c["rank"] is not None]
        assert r["mean_rank"] == pytest.approx(np.mean(ranks)) and r["ranked"] == len(ranks)
    assert [r.label for r in res.rows] == [r["label"] for r in data["rows"]]


def test_na_cells_say_why_and_missing_runs_say_no_runs(suite, bench_plugins):
    res, out, data = suite
    gauss = next(t["id"] for t in data["tracks"] if t["name"] == "gaussian/smoke")
    cat = next(t["id"] for t in data["tracks"] if t["name"] == "categorical/smoke")
    topk = next(r for r in data["rows"] if r["label"] == "top-k:5")
    reason = mitigations.unavailable(bench_plugins, "gaussian", "top-k:5", "smoke")
    assert reason  # top-k is a decoding option for tokens and categories, not for vectors
    cell = topk["cells"][gauss]
    assert cell["applies"] is False and cell["reason"] == reason and cell["rank"] is None
    assert topk["cells"][cat]["entry"] is not None and topk["ranked"] == 1
    acc = next(r for r in data["rows"] if r["label"] == "accumulate")["cells"][cat]
    assert mitigations.unavailable(bench_plugins, "categorical", "accumulate", "smoke") is None
    assert acc["applies"] is True and acc["reason"] == "no runs"
    md = (out / "suite.md").read_text()
    html = (out / "suite.html").read_text()
    from bench.leaderboard import html_escape, md_escape

    assert md_escape(f"n/a: {reason}") in md and html_escape(f"n/a: {reason}") in html
    assert "no runs" in md and "baseline" in md
    rows = list(csv.DictReader(open(out / "suite.csv", newline="")))
    na = [r for r in rows if r["mitigation"] == "top-k:5" and r["track"] == "gaussian/smoke"]
    assert len(na) == 1 and na[0]["applies"] == "0" and na[0]["reason"] == reason and na[0]["rank"] == ""
    assert len(rows) == len(data["rows"]) * len(data["tracks"])
    table = pd.read_csv(out / "suite.csv")
    assert table.diff_mean.dtype == float  # negative numbers stay numbers


@pytest.mark.slow
def test_outputs_and_cli_summary(results, tmp_path, capsys):
    code, stdout, stderr = bench_cli(capsys, "leaderboard", results, "--suite", "--out", tmp_path / "lb")
    assert code == 0, stderr
    for ext in ("md", "html", "csv", "json", "png"):
        assert (tmp_path / "lb" / f"suite.{ext}").is_file()
    for stem in ("gaussian-smoke", "categorical-smoke", "index"):  # the per-track tables as before
        assert (tmp_path / "lb" / f"{stem}.md").is_file()
    assert f"suite table: 4 mitigations x 2 tracks -> {tmp_path / 'lb' / 'suite'}.{{md,html,csv,json,png}}" in stdout
    data = json.loads((tmp_path / "lb" / "suite.json").read_text())
    first = data["rows"][0]
    assert f"  1. {first['label']}: mean rank {first['mean_rank']:.4g}" in stdout
    from PIL import Image

    with Image.open(tmp_path / "lb" / "suite.png") as im:
        px = np.asarray(im.convert("RGB"), dtype=float)
    assert im.format == "PNG" and px.std() > 10
    grey = (np.abs(px - 189).max(axis=2) < 4).sum()  # #bdbdbd: the n/a cell (top-k on gaussian)
    assert grey > 100
    # index.md lists the track tables only
    assert "suite" not in (tmp_path / "lb" / "index.md").read_text()
    # without --suite: no suite files
    code, stdout, _ = bench_cli(capsys, "leaderboard", results, "--out", tmp_path / "plain")
    assert code == 0 and not (tmp_path / "plain" / "suite.md").exists() and "suite table" not in stdout


@pytest.mark.slow
def test_headline_override(results, tmp_path, capsys):
    """--headline categorical-support (higher is better) --threshold 0.7 --mode ratio: collapse when
    the support falls to 70% of generation 0's; gaussian has no such row: n/a, and no column."""
    code, stdout, stderr = bench_cli(capsys, "leaderboard", results, "--suite", "--headline", "categorical-support",
                                     "--threshold", "0.7", "--mode", "ratio", "--out", tmp_path)
    assert code == 0, stderr
    data = json.loads((tmp_path / "suite.json").read_text())
    assert [t["name"] for t in data["tracks"]] == ["categorical/smoke"]
    assert any("gaussian/smoke" in n and "no rows of the headline metric categorical-support" in n
               for n in data["notes"])
    gauss = json.loads((tmp_path / "gaussian-smoke.json").read_text())
    assert gauss["headline"]["direction"] is None and all(e["gens_to_collapse"] is None for e in gauss["entries"])
    assert "| n/a |" in (tmp_path / "gaussian-smoke.md").read_text()
    cat = json.loads((tmp_path / "categorical-smoke.json").read_text())
    assert cat["headline"]["source"] == "override" and cat["headline"]["direction"] == "higher"
    df = read_runs(results)
    for entry in cat["entries"]:
        ids = _run_ids(results, "categorical/smoke", entry["runs"])
        for p in entry["gens_to_collapse"]["per_seed"]:
            run = df[df.run_id.isin(ids) & (df.seed == p["seed"]) & (df.metric == "categorical-support")]
            curve = run.sort_values("generation").value.to_numpy()
            assert p["generation"] == first_crossing(curve, "higher", 0.7, "ratio")
    # mistakes are messages
    for args, message in ((["--threshold", "0.5"], "--threshold and --mode go with --headline"),
                          (["--headline", "test-nll"], "--headline needs --threshold"),
                          (["--headline", "test-nll", "--threshold", "nan"], "finite")):
        code, _, err = bench_cli(capsys, "leaderboard", results, "--out", tmp_path / "x", *args)
        assert code != 0 and message in err and "Traceback" not in err


def _copy(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns(".gen0", "gens", ".lock", "log.txt"))
    return dest


def _edit(run: Path, change) -> None:
    info = R.read_json(run / R.RUN_JSON)
    change(info)
    R.write_json(run / R.RUN_JSON, info)


def _respec(run: Path, change) -> None:
    """Change a run's spec as a run of that spec would hold it: the run id (run.json, its identity and
    every metric row) follows the spec; leaderboards skip a run whose id is not its spec's hash."""
    import pyarrow as pa

    from bench.types import Spec

    info = R.read_json(run / R.RUN_JSON)
    change(info["spec"])
    info["run_id"] = info["identity"]["run_id"] = Spec.from_dict(info["spec"]).run_id
    R.write_json(run / R.RUN_JSON, info)
    table = pq.read_table(run / R.METRICS_FILE)
    ids = pa.array([info["run_id"]] * table.num_rows, type=table.schema.field("run_id").type)
    pq.write_table(table.set_column(table.schema.get_field_index("run_id"), "run_id", ids), run / R.METRICS_FILE)


@pytest.fixture(scope="module")
def crafted(results, tmp_path_factory, bench_plugins):
    """The gaussian runs with mix:0.5 relabelled as a spreadsheet formula and accumulate as
    markup, and the page built from them."""
    root = _copy(results / "gaussian", tmp_path_factory.mktemp("crafted") / "res")
    for run in root.iterdir():
        if "-mix-" in run.name:
            _edit(run, lambda i: i["identity"].update(mitigation=FORMULA, policy="-2+3"))
        elif "-accumulate-" in run.name:
            _edit(run, lambda i: i["identity"].update(mitigation=EVIL, policy="@SUM(A1)"))
    out = root.parent / "lb"
    res = build_suite([root], out, bench=bench_plugins)
    return res, out


def test_csv_formulas_are_neutralised(crafted):
    res, out = crafted
    assert {r.label for r in res.rows} == {FORMULA, EVIL, "replace"}
    rows = list(csv.reader(open(out / "suite.csv", newline="")))
    labels = {r[0] for r in rows[1:]}
    assert "'" + FORMULA in labels and EVIL in labels and FORMULA not in labels
    for r in rows[1:]:
        for cell in r:
            assert not cell.startswith(("=", "+", "@")), cell
            if cell.startswith("-"):
                float(cell)  # only numbers may start with a minus sign
    track = list(csv.reader(open(out / "gaussian-smoke.csv", newline="")))
    entries = {r[4] for r in track[1:]}
    assert entries == {"'-2+3", "'@SUM(A1)", "replace"}


def test_markup_is_escaped(crafted):
    _, out = crafted
    md = (out / "suite.md").read_text()
    assert "<script>" not in md and "\\<script\\>alert(1)\\</script\\>\\|x" in md
    widths = {line.replace("\\|", "").count("|") for line in md.splitlines() if line.startswith("| ")}
    assert len(widths) == 1  # the label's | cannot break the table
    page = (out / "suite.html").read_text()
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;|x" in page
    from bench.pages import html_text

    assert "http" not in page.replace(html_text(FORMULA), "")  # nothing fetched
    json.loads((out / "suite.json").read_text())


@pytest.mark.slow
def test_page_renders_in_chromium(crafted, chromium, tmp_path, bench_plugins):
    from html.parser import HTMLParser

    from PIL import Image

    _, out = crafted
    page = (out / "suite.html").resolve()
    profile = tmp_path / "profile"
    base = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
    dom = subprocess.run([*base, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0 and "<html" in dom.stdout, dom.stderr[-2000:]

    class Dom(HTMLParser):
        def __init__(self):
            super().__init__(convert_charrefs=True)
            self.tags, self.parts = [], []

        def handle_starttag(self, tag, attrs):
            self.tags.append((tag, dict(attrs)))

        def handle_data(self, data):
            self.parts.append(data)

    d = Dom()
    d.feed(dom.stdout)
    text = " ".join(" ".join(d.parts).split())
    tags = [t for t, _ in d.tags]
    assert "script" not in tags and tags.count("table") == 1
    assert tags.count("tr") == 1 + 3  # the header and three mitigations
    imgs = [a for t, a in d.tags if t == "img"]
    assert len(imgs) == 1 and imgs[0]["src"].startswith("data:image/png;base64,")
    headline = bench_plugins.models.get("gaussian").headline.metric
    for s in (EVIL, FORMULA, "baseline", "mean rank", headline, "gaussian/smoke"):
        assert s in text, s
    png = tmp_path / "shot.png"
    subprocess.run([*base, f"--screenshot={png}", "--window-size=1200,1600", page.as_uri()],
                   capture_output=True, text=True, timeout=120)
    with Image.open(png) as im:
        px = np.asarray(im.convert("RGB"), dtype=float)
    assert px.std() > 10 and 0.02 < (px.min(axis=2) < 235).mean() < 0.9


def test_malformed_runs_and_tracks_without_a_baseline_are_notes(results, tmp_path, capsys):
    root = tmp_path / "res"
    _copy(results / "gaussian", root / "gaussian")
    cat = _copy(results / "categorical", root / "categorical")
    runs = sorted((root / "gaussian").iterdir())
    replace = [r for r in runs if "-replace-" in r.name]
    mix = [r for r in runs if "-mix-" in r.name]
    (replace[0] / R.RUN_JSON).write_text("{not json")  # skipped with a warning
    (mix[0] / R.METRICS_FILE).unlink()  # skipped with a warning
    _edit(mix[1], lambda i: i.update(headline={"metric": 3}))  # its headline ignored, the run kept
    _edit(mix[2], lambda i: (i["identity"].pop("mitigation"), i["identity"].pop("policy")))  # older run.json
    for r in cat.iterdir():  # the categorical runs predate headlines
        _edit(r, lambda i: i.pop("headline"))
    code, stdout, stderr = bench_cli(capsys, "leaderboard", root, "--suite", "--out", tmp_path / "lb")
    assert code == 0 and "Traceback" not in stderr
    assert f"{replace[0] / R.RUN_JSON}: unreadable" in stderr
    assert f"{mix[0] / R.METRICS_FILE}: missing" in stderr
    assert "run.json headline ignored in 1 run(s) (no metric name)" in stderr
    data = json.loads((tmp_path / "lb" / "suite.json").read_text())
    assert [t["name"] for t in data["tracks"]] == ["gaussian/smoke"]
    assert any("categorical/smoke" in n and "no headline metric" in n for n in data["notes"])
    mix_row = next(r for r in data["rows"] if r["label"] == "mix:0.5")  # older run: label from spec
    (cell,) = mix_row["cells"].values()
    assert cell["diff"]["n_paired"] == 2 and cell["diff"]["low"] is not None  # seed 0 of both is skipped
    assert "no headline metric" in (tmp_path / "lb" / "suite.md").read_text()
    # two replace entries (another start): no single baseline, the track is a note
    for r in replace[1:]:
        twin = _copy(r, root / "gaussian" / (r.name + "-gen0"))
        _respec(twin, lambda spec: spec.update(start="gen0"))
    code, stdout, stderr = bench_cli(capsys, "leaderboard", root, "--suite", "--out", tmp_path / "lb2")
    assert code == 0
    data = json.loads((tmp_path / "lb2" / "suite.json").read_text())
    assert data["tracks"] == [] and data["rows"] == []
    assert any("2 replace entries" in n and "no single baseline" in n for n in data["notes"])
    assert "No track has both a headline metric and a replace entry" in (tmp_path / "lb2" / "suite.md").read_text()


def test_index_page_holds_the_suite_and_every_track(suite, crafted, chromium, tmp_path):
    """index.html (bench.site): the suite table, then each track's table and trajectories, in one
    self-contained page that escapes what it shows and renders in Chromium."""
    from html.parser import HTMLParser

    crafted_page = (crafted[1] / "index.html").read_text()
    assert "<script>alert(1)" not in crafted_page and "&lt;script&gt;alert(1)&lt;/script&gt;|x" in crafted_page
    _, out, _ = suite
    page = (out / "index.html").resolve()
    html = page.read_text()
    assert not re.search(r'(src|href)="(https?:)?//', html)  # nothing fetched
    boards = sorted(p.stem for p in out.glob("*.json") if p.stem != "suite")
    profile = tmp_path / "profile"
    dom = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0 and "<html" in dom.stdout, dom.stderr[-2000:]

    class Dom(HTMLParser):
        def __init__(self):
            super().__init__(convert_charrefs=True)
            self.tags = []

        def handle_starttag(self, tag, attrs):
            self.tags.append((tag, dict(attrs)))

    d = Dom()
    d.feed(dom.stdout)
    sections = [a.get("id") for t, a in d.tags if t == "section"]
    assert sections[0] == "suite" and sorted(sections[1:]) == boards
    tags = [t for t, _ in d.tags]
    assert tags.count("table") == 1 + len(boards)  # the suite table and one per track
    imgs = [a["src"] for t, a in d.tags if t == "img"]
    # the heatmap, then the headline and main-metric trajectories of each track
    assert len(imgs) >= 1 + 2 * len(boards) and all(s.startswith("data:image/png;base64,") for s in imgs)
