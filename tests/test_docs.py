"""The docs stay true to the code: every hook documented, README commands real."""

import inspect
from pathlib import Path

import pytest

from bench import hookspecs

ROOT = Path(__file__).resolve().parent.parent


def hook_names():
    return [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("bench_")]


@pytest.mark.parametrize("name", hook_names())
def test_every_hook_is_documented_with_its_signature(name):
    docs = (ROOT / "CONTRIBUTING.md").read_text()
    params = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
    assert f"### {name}({params})" in docs, f"document {name}({params}) in CONTRIBUTING.md"
    assert getattr(hookspecs, name).__doc__, f"{name} needs a docstring"


def readme_test_command() -> str:
    """The README's test command: the first-screen line that ends in `&& pytest` (comment cut off)."""
    first_screen = (ROOT / "README.md").read_text().splitlines()[:40]
    lines = [line.split("#")[0].strip() for line in first_screen if "&& pytest" in line]
    assert len(lines) == 1, f"expected one test command on the README's first screen, found {lines}"
    return lines[0]


def test_readme_first_screen_has_install_and_test_commands():
    first_screen = "\n".join((ROOT / "README.md").read_text().splitlines()[:40])
    assert "pip install -e . && bench run" in first_screen
    command = readme_test_command()
    assert command.startswith('pip install -e ".[test]"') and command.endswith("&& pytest")


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert readme_test_command() in ci.splitlines()
    assert "venv" in ci and "HF_HUB_OFFLINE=1" in ci


def test_the_contributing_example_plugin_runs(tmp_path):
    """The plugin written out in CONTRIBUTING.md works as printed."""
    import types

    import bench.api as cb
    from bench.plugins import Bench

    docs = (ROOT / "CONTRIBUTING.md").read_text()
    code = docs.split("# my_package/my_plugin.py\n", 1)[1].split("```", 1)[0]
    module = types.ModuleType("my_plugin")
    exec(compile(code, "CONTRIBUTING.md", "exec"), module.__dict__)
    b = Bench(extra_plugins=[module])
    runs = cb.run("my-model", "smoke", generations=3, out=tmp_path, bench=b)
    df = cb.metrics(runs)
    assert sorted(df.generation.unique()) == [0, 1, 2, 3]
    assert set(df.metric) == {"cov-trace-ratio", "logdet-diff"}


def run_figures():
    """{preset: {(metric, generation): quoted value}} of the README's run-figures table, the one
    source of the seed-0 GMM figures (tests/test_readme_figures.py checks it against fresh runs)."""
    import re

    from tests.test_readme_figures import figure_rows

    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- run-figures: begin -->")[1].split("<!-- run-figures: end -->")[0]
    quoted = {}  # the value as the table writes it, so that docs quote the same digits
    for line in block.strip().splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        quoted[(cells[0].strip("`"), cells[1], int(cells[2]))] = cells[3]
    figures: dict[str, dict] = {}
    for command, metric, generation, _, _ in figure_rows("run-figures"):
        preset = re.search(r"--preset (\S+)", command).group(1)
        figures.setdefault(preset, {})[(metric, generation)] = quoted[(command, metric, generation)]
    return figures


def test_the_docs_quote_the_seed_figures_from_one_source():
    figures = run_figures()
    assert set(figures) == {"paper", "two-gaussians", "smoke"}
    gmm_page = (ROOT / "docs" / "gmm.md").read_text()
    gmm_page = " ".join(gmm_page.split())  # a quote may wrap over lines
    for preset, v in figures.items():
        last = max(g for _, g in v)
        quote = (f"`{preset}`, seed 0: std {v['gmm-std/0', 0]}/{v['gmm-std/1', 0]} at generation 0, "
                 f"{v['gmm-std/0', last]}/{v['gmm-std/1', last]} after {last} generations, L2 {v['gmm-l2', last]}")
        assert quote in gmm_page, f"docs/gmm.md should quote the README's run-figures: {quote}"
    readme = " ".join((ROOT / "README.md").read_text().split())
    v = figures["paper"]
    assert (f"standard deviation {v['gmm-std/0', 0]} / {v['gmm-std/1', 0]} at generation 0 and "
            f"{v['gmm-std/0', 2050]} / {v['gmm-std/1', 2050]} after 2,050 generations") in readme
    assert f"reaches {v['gmm-l2', 2050]} " in readme


def test_metrics_page_does_not_call_an_implemented_metric_missing():
    from bench.plugins import Bench

    page = (ROOT / "docs" / "metrics.md").read_text()
    assert "vendi-score" in Bench().metrics.names()
    assert "not implemented" not in " ".join(page.split())
