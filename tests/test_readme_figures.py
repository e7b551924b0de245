"""The README's smoke-preset figures hold: each command's mean over its seeds is within tolerance."""

import re
import shlex
from pathlib import Path

import pytest

import bench.api as cb
from bench.cli import main
from bench.spec import parse_seeds

README = Path(__file__).resolve().parent.parent / "README.md"


def figure_rows():
    text = README.read_text()
    block = text.split("<!-- smoke-figures: begin -->")[1].split("<!-- smoke-figures: end -->")[0]
    rows = []
    for line in block.strip().splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        command, metric, generation, expected, tolerance = cells[:5]
        rows.append((command.strip("`"), metric, int(generation), float(expected), float(tolerance)))
    return rows


def test_the_readme_states_figures_for_every_smoke_model(bench_plugins):
    covered = {re.search(r"--plugin (\S+)", row[0]).group(1) for row in figure_rows()}
    assert covered == set(bench_plugins.models.names())


@pytest.mark.parametrize("command, metric, generation, expected, tolerance", figure_rows())
def test_smoke_figure(tmp_path, command, metric, generation, expected, tolerance):
    args = shlex.split(command)
    assert args[:2] == ["bench", "run"]
    try:
        main(args[1:] + ["--out", str(tmp_path)])
    except SystemExit as exc:
        assert exc.code in (0, None)
    df = cb.metrics(tmp_path)
    values = df[(df.metric == metric) & (df.generation == generation)].value
    seeds = parse_seeds(args[args.index("--seeds") + 1]) if "--seeds" in args else [0]
    assert len(values) == len(seeds), "a README figure is the mean over the command's seeds"
    assert abs(values.mean() - expected) <= tolerance, f"{command}: {metric} mean {values.mean():.3f}"
