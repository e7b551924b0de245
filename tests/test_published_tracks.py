"""The published tables (leaderboards/*.json) stay joinable: a fresh smoke run of each published
track lands on its track id and on its `replace` entry, and leaderboards/make.sh makes every one.

When a test here fails, the code has moved the track (its real-data source or generations) or the
preset's spec away from the published runs: regenerate the tables with `bash leaderboards/make.sh`
(leaderboards/README.md) and commit them.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest

import bench.api as cb
from bench import runfolder as RF
from bench import sweep as S
from bench.loop import Run
from bench.plugins import Bench
from bench.render import FORMAT

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "leaderboards"
MAKE = FOLDER / "make.sh"
REGENERATE = "regenerate the published tables: bash leaderboards/make.sh (leaderboards/README.md)"


def published() -> dict[str, dict]:
    """Every published per-track table: file stem -> its JSON."""
    tables = {}
    for f in sorted(FOLDER.glob("*.json")):
        data = json.loads(f.read_text(encoding="utf-8"))
        if data.get("format") == FORMAT:
            tables[f.stem] = data
    return tables


TABLES = published()
# loading the real data of these takes seconds (a tokenizer and corpus, MNIST and torch)
SLOW_DATA = {"opt125m", "vae"}
SLOW_SPEC = {"opt125m"}  # resolving its spec imports the language-model stack


def _tracks(slow: set[str]) -> list:
    return [pytest.param(stem, marks=[pytest.mark.slow] if t["track"]["plugin"] in slow else [], id=stem)
            for stem, t in TABLES.items()]


@pytest.fixture(scope="module")
def b() -> Bench:
    return Bench()


def test_there_are_published_tables():
    assert {"gaussian-smoke", "categorical-smoke", "gmm-smoke", "opt125m-smoke", "vae-smoke"} <= set(TABLES)


def fresh_spec(table: dict, seed: int = 0):
    """The spec of `bench run --plugin P --preset Q -m replace --seeds SEED` with today's code."""
    t = table["track"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cb.specs(t["plugin"], t["preset"], seeds=str(seed), mitigation="replace")[0]


@pytest.mark.parametrize("stem", _tracks(SLOW_DATA))
def test_a_fresh_smoke_run_lands_on_the_published_track(stem, b, tmp_path):
    """The track id as the loop makes it (bench.loop.Run: the bundle's real data, then the track of
    plugin, preset, generations and the data's source), without training anything."""
    table = TABLES[stem]
    spec = fresh_spec(table)
    run = Run(b, spec, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run._load_real()
    track = run._track(run.real_data_source)
    assert not (tmp_path / spec.folder_name).exists()  # nothing was run
    assert track == table["track"], f"{stem}: a fresh run lands on {track}; {REGENERATE}"


@pytest.mark.parametrize("stem", _tracks(SLOW_SPEC))
def test_a_fresh_replace_run_is_a_run_of_the_published_replace_entry(stem):
    """Same run id: the fresh run joins the published entry (the Submitting-results procedure)."""
    table = TABLES[stem]
    runs = {r for e in table["entries"] for r in e["runs"]}
    spec = fresh_spec(table, seed=0)
    assert spec.folder_name in runs, (f"{stem}: today's `bench run --plugin {spec.plugin} --preset {spec.preset}` "
                                      f"makes run {spec.folder_name}, which the table does not hold; {REGENERATE}")


def make_sh_runs(b: Bench) -> dict[str, set[str]]:
    """The run folders leaderboards/make.sh makes, by track name: its sweep file, expanded by the
    sweep's own code, and its `bench run` loop."""
    text = MAKE.read_text()
    sweep = re.search(r"bench sweep (\S+)", text).group(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pairs, _ = S.expand(b, S.read_file(ROOT / sweep))
        specs = [spec for _, spec in pairs]
        loop = re.search(r'for policy in ([^;]+); do\s+bench run --plugin (\S+) --preset (\S+) --seeds (\S+) '
                         r'--policy "\$policy"', text)
        assert loop, "make.sh's bench run loop changed: update this test's reading of it"
        policies, plugin, preset, seeds = loop.groups()
        for policy in policies.split():
            specs += cb.specs(plugin, preset, seeds=seeds, policy=policy)
    found: dict[str, set[str]] = {}
    for spec in specs:
        found.setdefault(f"{spec.plugin}/{spec.preset}", set()).add(spec.folder_name)
    return found


@pytest.mark.slow  # expanding the sweep resolves the language model's specs (seconds)
def test_make_sh_makes_every_published_table(b):
    planned = make_sh_runs(b)
    assert {t["track"]["name"] for t in TABLES.values()} == set(planned)
    for stem, table in TABLES.items():
        runs = {r for e in table["entries"] for r in e["runs"]}
        stale = sorted(runs - planned[table["track"]["name"]])
        assert not stale, f"{stem}: runs make.sh no longer makes: {stale[:5]}; {REGENERATE}"


def test_make_sh_writes_the_published_tables_in_place():
    """The published tables stay where they are: make.sh names the folder (bench leaderboard's
    default is a folder inside the results, not leaderboards/), and replaces the old tables."""
    text = MAKE.read_text()
    assert re.search(r"^bench leaderboard .*--suite .*--out ", text, re.MULTILINE)
    copied = re.search(r"^(cp|mv) .* leaderboards/?$", text, re.MULTILINE)
    assert copied, "make.sh must copy the new tables into leaderboards/"


@pytest.mark.slow
def test_real_smoke_runs_land_on_the_published_tracks(tmp_path):
    """The cheap tracks end to end (seconds each): the run.json track of a real run of generation
    0..N equals the published one."""
    for stem, table in TABLES.items():
        t = table["track"]
        if t["plugin"] in SLOW_DATA:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cb.run(t["plugin"], t["preset"], seeds="0", mitigation="replace", out=tmp_path / stem)
        (folder,) = RF.find_runs([tmp_path / stem])
        written = json.loads((folder / "run.json").read_text())
        assert written["status"] == "complete"
        assert written["track"] == t, f"{stem}: {REGENERATE}"
