"""The example plugin package (examples/kde) used as a user uses it: installed, listed, run from
the command line with its own policy, validated and ranked on a leaderboard."""

import json

import pytest

import bench.api as cb
from tests.helpers import bench_cli

INSTALL = "the example plugin collapse-bench-kde is not installed; install it: pip install -e examples/kde"


@pytest.fixture(autouse=True)
def all_plugins(monkeypatch):
    monkeypatch.delenv("BENCH_PLUGINS", raising=False)
    monkeypatch.delenv("BENCH_TRACE", raising=False)


def kde_info(capsys):
    code, out, err = bench_cli(capsys, "plugins", "--json")
    assert code == 0, err
    found = [p for p in json.loads(out) if p["name"] == "kde"]
    if not found:
        pytest.fail(INSTALL)
    return found[0]


def test_bench_plugins_lists_the_example_from_its_own_distribution(capsys):
    info = kde_info(capsys)
    assert info["distribution"] == "collapse-bench-kde" and not info["first_party"]
    assert info["registers"] == {
        "models": ["kde"], "trainers": ["kde-fit"], "generators": ["kde-sample"], "scorers": ["kde-loglik"],
        "metrics": ["kde-variance-ratio"], "policies": ["curate"],
    }


def test_run_validate_and_rank_both_policies(capsys, tmp_path):
    kde_info(capsys)
    results, boards = tmp_path / "results", tmp_path / "leaderboards"
    for policy in ("replace", "curate:0.5"):
        code, out, err = bench_cli(capsys, "run", "--plugin", "kde", "--preset", "smoke", "--seeds", "0-1",
                                   "--policy", policy, "-g", "3", "--out", str(results))
        assert code == 0, err
        assert "2 runs" in out

    df = cb.metrics(results)
    assert sorted(df.policy.unique()) == ["curate:0.5", "replace"]
    assert sorted(df.generation.unique()) == [0, 1, 2, 3]
    assert set(df[df.metric == "kde-variance-ratio"].metric_plugin) == {"kde"}
    assert set(df[df.metric == "logdet-diff"].metric_plugin) == {"metrics"}
    # Runs differing only in policy share generation 0, so the comparison is paired.
    gen0 = df[df.generation == 0].pivot_table(index=["seed", "metric"], columns="policy", values="value")
    assert (gen0["replace"] == gen0["curate:0.5"]).all()

    code, out, err = bench_cli(capsys, "validate", str(results))
    assert code == 0, out + err
    assert "4 run folder(s) checked: no problems" in out

    code, out, err = bench_cli(capsys, "leaderboard", str(results), "--out", str(boards))
    assert code == 0, err
    assert "kde/smoke" in out and "2 entries from 4 runs" in out
    table = json.loads((boards / "kde-smoke.json").read_text())
    assert table["track"]["plugin"] == "kde" and table["track"]["generations"] == 3
    assert table["main_metrics"] == ["kde-variance-ratio", "perplexity-drift", "oos-mass"]
    assert table["runs"] == 4
    entries = {e["label"]: e for e in table["entries"]}
    assert set(entries) == {"replace", "curate:0.5"}
    assert sorted(e["rank"] for e in entries.values()) == [1, 2]
    for entry in entries.values():
        assert entry["seeds"] == [0, 1]
        assert entry["metrics"]["kde-variance-ratio"]["final"]["n"] == 2
    assert "curate:0.5" in (boards / "kde-smoke.md").read_text()


def test_a_bad_curate_fraction_is_a_message(capsys, tmp_path):
    kde_info(capsys)
    code, _, err = bench_cli(capsys, "run", "--plugin", "kde", "--policy", "curate:1.5", "--out", str(tmp_path))
    assert code == 2
    assert "policy 'curate': the kept fraction Q must be a number in (0, 1], got 1.5" in err
    assert "Traceback" not in err and not list(tmp_path.iterdir())


def test_a_bad_model_setting_leaves_no_run_folder(capsys, tmp_path):
    """The bundle's check() runs before the run folder exists: a typo costs nothing to clean up."""
    kde_info(capsys)
    code, _, err = bench_cli(capsys, "run", "--plugin", "kde", "--set", "bandwidth=sgott", "--out", str(tmp_path))
    assert code == 2
    assert "bandwidth" in err and "Traceback" not in err
    assert not [p for p in tmp_path.iterdir() if not p.name.startswith(".")]


def _walkthrough_excerpts():
    """(file, excerpt) for each code block of CONTRIBUTING.md's "Writing a plugin" that quotes the
    example: blocks headed by a comment naming a file under examples/, and every block of the
    step-by-step part (plugin.py for Python, the package's pyproject.toml for TOML)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    docs = (root / "CONTRIBUTING.md").read_text()
    section = docs.split("## Writing a plugin\n", 1)[1].split("\n## ", 1)[0]
    step_by_step = section.split("### Step by step", 1)[1].split("\n### ", 1)[0]
    defaults = {"python": "examples/kde/collapse_bench_kde/plugin.py", "toml": "examples/kde/pyproject.toml"}
    out = []
    for lang, body in re.findall(r"```(\w+)\n(.*?)```", section, flags=re.DOTALL):
        first, _, rest = body.partition("\n")
        if first.startswith("# examples/") and (root / first[2:].strip()).is_file():
            out.append((root / first[2:].strip(), rest))
        elif body in step_by_step:
            out.append((root / defaults[lang], body))
    return out


def test_the_contributing_walkthrough_quotes_the_example_as_it_is():
    """Every excerpt (split at its `...` lines) appears word for word in the file it quotes."""
    excerpts = _walkthrough_excerpts()
    assert len(excerpts) >= 8, "the walkthrough should quote the example package"
    for path, body in excerpts:
        text = path.read_text()
        segments, current = [], []
        for line in body.splitlines():
            if line.strip() == "...":
                segments.append(current)
                current = []
            else:
                current.append(line)
        segments.append(current)
        for segment in segments:
            chunk = "\n".join(segment).strip("\n")
            assert chunk in text, f"CONTRIBUTING.md quotes {path.name}, but this is not in it:\n{chunk}"
