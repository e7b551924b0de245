"""Plots and HTML reports: the numbers they show, the files they make, and the pages as a real
headless Chromium renders them (escaping included)."""

import io
import math
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import stats

import bench.api as cb
from bench import plots as P
from bench import report as RP
from bench import results as R
from bench.components import Samples
from bench.errors import BenchError
from tests.helpers import generation_frame

INJECT = "<img src=x onerror=alert(1)>"
INJECT_POLICY = "<script>alert(1)</script>|x $^$"
LM_SET = {"source_tokens": 6000, "source_vocab": 60, "block_size": 16, "new_tokens": 16, "epochs": 1,
          "toy_hidden": 16, "toy_ffn": 32, "toy_layers": 1, "toy_heads": 2, "toy_positions": 64,
          "text_metric_blocks": 50, "self_bleu_samples": 10, "device": "cpu"}
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vector_runs(tmp_path_factory, bench_plugins):
    """gaussian smoke, 3 generations, seeds 0-2, policies replace and mix:0.2."""
    out = tmp_path_factory.mktemp("vec")
    for policy in ("replace", "mix:0.2"):
        cb.run("gaussian", "smoke", generations=3, seeds="0-2", policy=policy, out=out, bench=bench_plugins)
    return out


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory, bench_plugins):
    """A tiny language-model run (toy OPT on the synthetic corpus), generations 0 and 1."""
    out = tmp_path_factory.mktemp("lm")
    (outcome,) = cb.run("opt125m", "smoke", generations=1, out=out, set=LM_SET, bench=bench_plugins)
    return Path(outcome.path)


def _browse(binary, page, tmp_path, *args):
    profile = tmp_path / "chromium-profile"
    profile.mkdir(exist_ok=True)
    cmd = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, Path(page).resolve().as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def screenshot(binary, page, tmp_path):
    png = tmp_path / (Path(page).stem + ".png")
    done = _browse(binary, page, tmp_path, f"--screenshot={png}", "--window-size=1200,2000")
    assert png.is_file(), done.stderr[-2000:]
    return png


def dump_dom(binary, page, tmp_path):
    done = _browse(binary, page, tmp_path, "--dump-dom")
    assert done.returncode == 0 and "<html" in done.stdout, done.stderr[-2000:]
    return done.stdout


class DomText(HTMLParser):
    """The text and the elements of a page."""

    def __init__(self, page):
        super().__init__(convert_charrefs=True)
        self.parts, self.tags = [], []
        self.feed(page)
        self.text = " ".join(" ".join(self.parts).split())

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.parts.append(data)


def copy_run(src, dst_root, name=None):
    dst = Path(dst_root) / (name or Path(src).name)
    shutil.copytree(src, dst)
    return dst


def edit_json(path, change):
    info = R.read_json(path)
    change(info)
    R.write_json(path, info)


def edit_metrics(run_dir, change):
    df = pq.read_table(run_dir / R.METRICS_FILE).to_pandas()
    df = change(df)
    pq.write_table(pa.Table.from_pandas(df, schema=R.METRICS_SCHEMA, preserve_index=False), run_dir / R.METRICS_FILE)


def metric_df(folder):
    return pd.concat([pq.read_table(p / R.METRICS_FILE).to_pandas().assign(folder=p.name)
                      for p in R.find_runs([folder])])


# -- the numbers --------------------------------------------------------------------------------


def test_block_perplexity_by_hand():
    got = P.block_perplexity([-61.0, -30.0, -math.inf, 0.0, -5.0], [15, 10, 5, 0, math.nan])
    assert got[0] == pytest.approx(math.exp(61 / 15))
    assert got[1] == pytest.approx(math.exp(3.0))
    assert got[2] == math.inf
    assert math.isnan(got[3]) and math.isnan(got[4])


def test_seed_band_is_a_95_percent_t_interval():
    b = P.seed_band([1.0, 2.0, 4.0])
    # by hand: mean 7/3, s = sqrt(7/3), t(0.975, 2) = 4.302652729911275
    half = 4.302652729911275 * math.sqrt(7 / 3) / math.sqrt(3)
    assert (b.mean, b.lo, b.hi, b.n, b.dropped) == pytest.approx((7 / 3, 7 / 3 - half, 7 / 3 + half, 3, 0))
    lo, hi = stats.t.interval(0.95, 2, loc=7 / 3, scale=stats.sem([1.0, 2.0, 4.0]))
    assert (b.lo, b.hi) == pytest.approx((lo, hi))


def test_seed_band_leaves_non_finite_values_out():
    b = P.seed_band([1.0, math.inf, 3.0, math.nan])
    half = stats.t.ppf(0.975, 1) * math.sqrt(2) / math.sqrt(2)
    assert (b.mean, b.lo, b.hi, b.n, b.dropped) == pytest.approx((2.0, 2.0 - half, 2.0 + half, 2, 2))
    one = P.seed_band([5.0])
    assert one.mean == 5.0 and math.isnan(one.lo) and math.isnan(one.hi)
    none = P.seed_band([math.inf, -math.inf])
    assert math.isnan(none.mean) and none.n == 0 and none.dropped == 2


def test_histogram_shares_and_log_bins():
    edges = P.log_edges([1.0, 10.0, 100.0, math.inf, -1.0], bins=2)
    assert edges == pytest.approx([1.0, 10.0, 100.0])
    assert P.proportions([1.0, 10.0, 100.0, math.inf], edges) == pytest.approx([1 / 3, 2 / 3])
    assert P.log_edges([5.0], bins=1) == pytest.approx([5 / math.sqrt(10), 5 * math.sqrt(10)])


def test_value_format_and_slugs():
    assert [P.fmt(v) for v in (math.inf, -math.inf, math.nan, 0.123456, 52.3457, None)] == \
        ["inf", "-inf", "nan", "0.1235", "52.35", "-"]
    used = set()
    assert P.slug("distinct-n/1", used) == "distinct-n-1"
    assert P.slug("distinct-n 1", used).startswith("distinct-n-1-")  # collision: hash appended
    for nasty in ("../../etc/passwd", INJECT, "///", "a" * 200):
        s = P.slug(nasty)
        assert s and len(s) <= 80 and all(c.isalnum() or c in "._-" for c in s) and not s.startswith(".")
    assert P.mpl_text("cost $5 and $^$") == r"cost \$5 and \$^\$"


# -- plots --------------------------------------------------------------------------------------


def _png_size(path):
    from PIL import Image

    with Image.open(path) as im:
        return im.format, im.size


@pytest.mark.slow
def test_plot_draws_each_entry_as_seed_mean_and_band(vector_runs, tmp_path):
    files = P.plot([vector_runs], tmp_path, metrics=["gaussian-w2sq", "test-perplexity"])
    assert sorted(f.name for f in files) == ["gaussian-w2sq.png", "test-perplexity.png"]
    assert {f.parent.name for f in files} == {P.track_folder(P.load_runs([vector_runs]))}
    assert all(_png_size(f) == ("PNG", (640, 400)) for f in files)
    # the line and band of one entry against the table, computed independently
    runs = P.load_runs([vector_runs])
    entries = P.by_entry(runs)
    assert sorted(rs[0].label for rs in entries.values()) == ["mix:0.2", "replace"]
    replace = next(rs for rs in entries.values() if rs[0].label == "replace")
    gens, bands = P.trajectory(replace, "gaussian-w2sq")
    df = metric_df(vector_runs)
    rows = df[(df.policy == "replace") & (df.metric == "gaussian-w2sq")]
    assert gens == [0, 1, 2, 3]
    for g, band in zip(gens, bands):
        values = rows[rows.generation == g].value.to_numpy()
        assert len(values) == 3
        lo, hi = stats.t.interval(0.95, 2, loc=values.mean(), scale=stats.sem(values))
        assert (band.mean, band.lo, band.hi) == pytest.approx((values.mean(), lo, hi))


def test_entry_labels_name_the_differing_params(vector_runs, tmp_path, bench_plugins):
    cb.run("gaussian", "smoke", generations=3, seeds=0, start="gen0", out=tmp_path, bench=bench_plugins)
    copy_run(next(p for p in R.find_runs([vector_runs]) if "replace-s0" in p.name), tmp_path)
    labels = sorted({r.label for r in P.load_runs([tmp_path])})
    assert labels == ["replace start=gen0", "replace start=pretrained"]


def test_seeds_share_one_track_and_older_per_seed_ids_are_joined(vector_runs, tmp_path):
    """The track id names the data source, not the seed's draw, so every seed of an entry shares
    it; run.json files written before that named one id per seed, and those are joined into one
    track under the id of seed 0's run."""
    folders = R.find_runs([vector_runs])
    infos = {p.name: R.read_json(p / R.RUN_JSON) for p in folders}
    ids = {i["spec"]["seed"]: i["track"]["id"] for i in infos.values()}
    assert len(set(ids.values())) == 1
    old_root = tmp_path / "old"
    for folder in folders:
        old = copy_run(folder, old_root)
        edit_json(old / R.RUN_JSON, lambda i: i["track"].update(id=f"seed{i['spec']['seed']}-id"))
    runs = P.load_runs([old_root])
    assert {r.track_id for r in runs} == {"seed0-id"}
    assert P.track_folder(runs) == "gaussian-smoke-seed0-id"
    # an older run.json without "track": derived from plugin, preset, generations, data fingerprint
    from bench.spec import _digest

    old = copy_run(folders[0], tmp_path)
    edit_json(old / R.RUN_JSON, lambda i: i.pop("track"))
    info = R.read_json(old / R.RUN_JSON)
    key = {"plugin": "gaussian", "preset": "smoke", "generations": info["generations_requested"],
           "real_data": info["real_data_fingerprint"]}
    assert P.track_of(info) == (_digest(key)[:12], "gaussian/smoke")


def test_plot_user_mistakes_and_malformed_runs(vector_runs, tmp_path):
    with pytest.raises(BenchError, match="does not exist"):
        P.plot([tmp_path / "nope"], tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BenchError, match="no run folders"):
        P.plot([tmp_path / "empty"], tmp_path / "out")
    with pytest.raises(BenchError, match="no metric rows named no-such-metric"):
        P.plot([vector_runs], tmp_path / "out", metrics=["no-such-metric"])
    with pytest.warns(UserWarning, match="no run has a metric named 'typo'"):
        assert len(P.plot([vector_runs], tmp_path / "out", metrics=["gaussian-w2sq", "typo"])) == 1
    with pytest.raises(BenchError, match="use 'run'"):
        RP.report([vector_runs], tmp_path / "out", per="entry")
    runs = tmp_path / "runs"
    src = R.find_runs([vector_runs])
    good = copy_run(src[0], runs)
    bad_json = copy_run(src[1], runs)
    (bad_json / R.RUN_JSON).write_text("{not json")
    bad_metrics = copy_run(src[2], runs)
    (bad_metrics / R.METRICS_FILE).write_bytes(b"not parquet")
    with pytest.warns(UserWarning) as caught:
        files = P.plot([runs], tmp_path / "out", metrics=["gaussian-w2sq"])
    named = " ".join(str(w.message) for w in caught)
    assert bad_json.name in named and bad_metrics.name in named and good.name not in named
    assert len(files) == 1


@pytest.mark.slow
def test_plot_and_report_survive_inf_nan_and_math_in_names(vector_runs, tmp_path):
    run = copy_run(R.find_runs([vector_runs])[0], tmp_path / "runs")
    edit_json(run / R.RUN_JSON, lambda i: i["identity"].update(policy="cost $^$ {"))

    def poison(df):
        df.loc[(df.metric == "test-perplexity") & (df.generation == 3), "value"] = math.inf
        df.loc[(df.metric == "gaussian-w2sq") & (df.generation == 3), "value"] = math.nan
        return df

    edit_metrics(run, poison)
    files = P.plot([run], tmp_path / "plots", metrics=["test-perplexity", "gaussian-w2sq"])
    assert len(files) == 2
    (page,) = RP.report([run], tmp_path / "rep", metrics=["test-perplexity"])
    text = DomText(page.read_text()).text
    assert "test-perplexity lower" in text and " inf " in text and " nan " in text


@pytest.mark.slow
def test_lm_run_gets_figure1_and_hides_throughput(lm_run, tmp_path):
    files = P.plot([lm_run], tmp_path, metrics=["test-perplexity", "reference-nll"])
    names = sorted(f.name for f in files)
    assert names == ["figure1.png", "reference-nll-q10.png", "reference-nll-q50.png", "reference-nll-q90.png",
                     "test-perplexity.png"]
    fmt_, (w, h) = _png_size(tmp_path / files[0].parent.name / "figure1.png")
    assert fmt_ == "PNG" and w > h > 300
    (run,) = P.load_runs([lm_run])
    assert P.is_lm_run(run)
    # the histogram's values: exp(-loglik_reference / units), computed here with pandas
    for k in (0, 1):
        df = generation_frame(lm_run, k)
        expected = [math.exp(-ll / u) for ll, u in zip(df.loglik_reference, df.units)]
        assert P.reference_perplexities(run, k) == pytest.approx(expected)
    default = P.metric_names([run])
    assert "test-perplexity" in default and not any(n.startswith("throughput/") for n in default)
    assert any(n.startswith("throughput/") for n in run.metrics.metric)
    asked = {f.name for f in P.plot([lm_run], tmp_path / "tp", metrics=["throughput"])}
    assert asked and all(n.startswith("throughput") or n == "figure1.png" for n in asked)


@pytest.mark.slow
def test_figure1_says_which_way_sampled_text_moves(lm_run, tmp_path):
    """The smoke preset samples (the paper used beam search): the figure and the report's caption
    say that its histograms move to higher perplexity, not pile up at low perplexity."""
    runs = P.load_runs([lm_run])
    assert P.decoding(runs[0].spec) == "sampling" and runs[0].references == ()  # smoke: no paper figures
    fig = P.draw_figure1(runs)
    assert fig.get_supxlabel().startswith("Decoded by sampling, unlike the paper")
    hist = fig.axes[0]
    assert hist.get_xscale() == "log"
    labelled = [t for t in hist.get_xticklabels(which="both") if t.get_text()]
    assert 0 < len(labelled) <= P.LOG_TICKS and not any("times" in t.get_text() for t in labelled)
    (page,) = RP.report([lm_run], tmp_path, metrics=["test-perplexity"])
    assert "Decoded by sampling, unlike the paper" in DomText(page.read_text()).text


def test_image_grid_hook(tmp_path, vector_runs):
    rng = np.random.default_rng(0)
    for shape in ((5, 8, 8), (4, 8, 8, 3), (4, 3, 8, 8), (3, 1, 6, 6)):
        png = RP.image_grid_png(rng.random(shape))
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(BenchError, match="cannot draw images"):
        RP.image_grid_png(rng.random((4, 5)))
    from PIL import Image  # the report's grids stretch each grid's values to its own min and max

    x = np.full((2, 4, 4, 3), 0.25)
    x[0, 0, 0], x[1, 3, 3] = 0.5, np.nan
    img = np.asarray(Image.open(io.BytesIO(RP.image_grid_png(x))))
    scale = 14  # 4-pixel images enlarged to about 56 pixels; 2-pixel gaps
    assert img.shape == (4 * scale + 4, 2 * (4 * scale + 2) + 2, 3)
    assert (img[2, 2] == 255).all() and (img[2 + scale, 2 + scale] == 0).all()  # 0.5 max -> 255, 0.25 -> 0
    assert (img[2 + 3 * scale, 2 + 4 * scale + 2 + 3 * scale] == 0).all()  # NaN drawn as the minimum
    run = copy_run(R.find_runs([vector_runs])[0], tmp_path)
    for first, last, folder in R.units(run):
        tables = [R.samples_table(Samples("images", rng.random((6, 4, 4))), {}) for _ in range(first, last + 1)]
        if first < last:  # a chunk's file: a generation column first, the generations one after another
            tables = [t.add_column(0, "generation", pa.array(np.full(6, k, dtype=np.int64)))
                      for k, t in zip(range(first, last + 1), tables)]
        R.write_parquet(folder / "samples.parquet", pa.concat_tables(tables))
    (page,) = RP.report([run], tmp_path / "rep", metrics=["gaussian-w2sq"])
    assert "images drawn by M_0" in page.read_text() and "images drawn by M_3" in page.read_text()


def test_report_of_an_unfinished_run(vector_runs, tmp_path):
    run = copy_run(R.find_runs([vector_runs])[0], tmp_path / "runs")
    shutil.rmtree(run / "gens")
    (run / R.METRICS_FILE).unlink()
    edit_json(run / R.RUN_JSON, lambda i: i.update(status="running", generations_done=0))
    assert P.plot([run], tmp_path / "plots") == []
    (page,) = RP.report([run], tmp_path / "rep")
    text = DomText(page.read_text()).text
    assert "running" in text and "No finished generation yet" in text


# -- pages in a real browser --------------------------------------------------------------------


def _assert_self_contained(page_html):
    dom = DomText(page_html)
    for tag, attrs in dom.tags:
        assert tag not in ("script", "link", "iframe", "object", "embed"), tag
        if tag == "img":
            assert attrs["src"].startswith("data:image/png;base64,")
    assert "http://" not in page_html and "https://" not in page_html
    return dom


def _assert_real_render(png):
    from PIL import Image

    with Image.open(png) as im:
        assert im.format == "PNG" and im.size == (1200, 2000)
        px = np.asarray(im.convert("RGB"), dtype=np.float64)
    assert px.std() > 10
    non_white = (px.min(axis=2) < 235).mean()
    assert 0.02 < non_white < 0.9, non_white


@pytest.mark.slow
def test_run_page_in_chromium_escapes_markup(vector_runs, chromium, tmp_path):
    run = copy_run(R.find_runs([vector_runs])[0], tmp_path / "runs", "crafted")

    def craft(info):
        info["spec"]["plugin"] = INJECT
        info["spec"]["params"]["note"] = "<b>bold</b> & \"quoted\""
        info["identity"]["policy"] = INJECT_POLICY
        info["track"]["name"] = f"{INJECT}/smoke"

    edit_json(run / R.RUN_JSON, craft)
    edit_metrics(run, lambda df: df.assign(metric=df.metric.replace("gaussian-var", "<i>var</i>")))
    (page,) = RP.report([run], tmp_path / "rep", metrics=["gaussian-w2sq", "<i>var</i>"])
    _assert_self_contained(page.read_text())
    _assert_real_render(screenshot(chromium, page, tmp_path))
    dom = DomText(dump_dom(chromium, page, tmp_path))
    assert not [a for t, a in dom.tags if t == "img" and a.get("src") == "x"]
    assert not [t for t, _ in dom.tags if t in ("script", "b", "i")]
    for text in (INJECT, INJECT_POLICY, "<b>bold</b> & \"quoted\"", "<i>var</i>"):
        assert text in dom.text, text
    df = pq.read_table(run / R.METRICS_FILE).to_pandas()
    value = df[(df.metric == "gaussian-w2sq") & (df.generation == 3)].value.iloc[0]
    assert f"gaussian-w2sq lower {P.fmt(df[(df.metric == 'gaussian-w2sq') & (df.generation == 0)].value.iloc[0])} " \
           f"{P.fmt(value)}" in dom.text
    assert "samples drawn by M_0 and by M_3" in dom.text  # the vector scatter
    imgs = [a for t, a in dom.tags if t == "img"]
    assert len(imgs) == 3  # two metric plots and the scatter


@pytest.mark.slow
def test_lm_run_page_in_chromium_shows_prompts_and_figure1(lm_run, chromium, tmp_path):
    (page,) = RP.report([lm_run], tmp_path, metrics=["test-perplexity"])
    _assert_self_contained(page.read_text())
    _assert_real_render(screenshot(chromium, page, tmp_path))
    dom = DomText(dump_dom(chromium, page, tmp_path))
    assert "opt125m" in dom.text and "replace" in dom.text
    assert "Figure 1" in dom.text
    df = pq.read_table(lm_run / R.METRICS_FILE).to_pandas()
    v = df[(df.metric == "test-perplexity") & (df.generation == 1)].value.iloc[0]
    assert P.fmt(v) in dom.text
    for k in (0, 1):
        row = generation_frame(lm_run, k).iloc[0]
        assert " ".join(row["column.prompt"].split()) in dom.text
        assert " ".join(row["column.text"].split()) in dom.text
        assert P.fmt(-row.loglik_reference / row.units) in dom.text


def test_track_page_tables_show_seed_bands(vector_runs, tmp_path):
    (page,) = RP.report([vector_runs], tmp_path, per="track", metrics=["gaussian-w2sq"])
    html_text = page.read_text()
    dom = _assert_self_contained(html_text)
    text = dom.text
    df = metric_df(vector_runs)
    for policy in ("replace", "mix:0.2"):
        values = df[(df.policy == policy) & (df.metric == "gaussian-w2sq") & (df.generation == 3)].value.to_numpy()
        lo, hi = stats.t.interval(0.95, 2, loc=values.mean(), scale=stats.sem(values))
        lo = max(lo, 0.0)  # a squared distance is never negative: the band stops at 0
        cell = f"{P.fmt(values.mean())} [{P.fmt(lo)}, {P.fmt(hi)}]"
        assert f"gaussian-w2sq lower {policy} 3 " in text and cell in text, (policy, cell)
    assert "0, 1, 2" in text  # the seeds of each entry
    assert text.count("samples drawn by M_0 and by M_3") == 2
