"""The README's figures hold: each smoke-figures command's mean over its seeds is within tolerance,
and each run-figures value (one seed, quoted by README and docs/gmm.md) is what a fresh run gives.

Each distinct command of the tables runs once; every row about it is checked on that run.
"""

import contextlib
import io
import json
import re
import shlex
from pathlib import Path

import pytest

import bench.api as cb
from bench.cli import main
from bench.spec import parse_seeds

# every README figure is a real run: about 14 minutes on 2 cores for the smoke figures, and 70 s of
# CPU time more for the run figures (two 2,051-generation GMM chains and a smoke chain)
pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parent.parent / "README.md"


def figure_rows(block_name="smoke-figures"):
    """(command, metric, generation, expected, tolerance) of a README figure table: smoke-figures
    (means over seeds) or run-figures (one seed, the single source of the figures the docs quote)."""
    text = README.read_text()
    block = text.split(f"<!-- {block_name}: begin -->")[1].split(f"<!-- {block_name}: end -->")[0]
    rows = []
    for line in block.strip().splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        command, metric, generation, expected, tolerance = cells[:5]
        rows.append((command.strip("`"), metric, int(generation), float(expected), float(tolerance)))
    return rows


@pytest.fixture(scope="session")
def command_results(tmp_path_factory):
    """Runs a README command once and returns its runs' metrics. Every command writes into one
    results folder, so commands differing only in policy share generation 0 (its .gen0 cache)."""
    out = tmp_path_factory.mktemp("readme")
    done = {}

    def folders(args):
        """The run folders a command names (its --dry-run), whether or not an earlier command of
        the table made them already (`--seeds 0` names the same run as no --seeds)."""
        text = io.StringIO()
        with contextlib.redirect_stdout(text):
            main(args + ["--out", str(out), "--dry-run"])
        decoder, rest, found = json.JSONDecoder(), text.getvalue().strip(), []
        while rest:
            obj, end = decoder.raw_decode(rest)
            found.append(Path(obj["run_folder"]))
            rest = rest[end:].strip()
        return found

    def get(command):
        if command not in done:
            args = shlex.split(command)
            assert args[:2] == ["bench", "run"]
            try:
                main(args[1:] + ["--out", str(out)])
            except SystemExit as exc:
                assert exc.code in (0, None), command
            runs = folders(args[1:])
            assert runs and all((r / "run.json").is_file() for r in runs), f"{command} made no run folder"
            done[command] = cb.metrics(runs)
        return done[command]

    return get


def test_the_readme_states_figures_for_every_smoke_model(bench_plugins):
    covered = {re.search(r"--plugin (\S+)", row[0]).group(1) for row in figure_rows()}
    # hf-causal-lm runs opt125m's smoke preset: the same code and figures. Third-party models
    # (examples/kde is installed beside the project) carry their figures in their own packages.
    first_party = {name for name in bench_plugins.models.names()
                   if bench_plugins.owner("models", name).first_party}
    assert covered == first_party - {"hf-causal-lm"}


@pytest.mark.parametrize("command, metric, generation, expected, tolerance", figure_rows())
def test_smoke_figure(command_results, command, metric, generation, expected, tolerance):
    df = command_results(command)
    values = df[(df.metric == metric) & (df.generation == generation)].value
    args = shlex.split(command)
    seeds = parse_seeds(args[args.index("--seeds") + 1]) if "--seeds" in args else [0]
    assert len(values) == len(seeds), "a README figure is the mean over the command's seeds"
    assert abs(values.mean() - expected) <= tolerance, f"{command}: {metric} mean {values.mean():.4f}"


@pytest.mark.parametrize("command, metric, generation, expected, tolerance", figure_rows("run-figures"))
def test_run_figure(command_results, command, metric, generation, expected, tolerance):
    df = command_results(command)
    values = df[(df.metric == metric) & (df.generation == generation)].value
    assert len(values) == 1, "a run-figures row is one seed's value"
    assert abs(values.iloc[0] - expected) <= tolerance, f"{command}: {metric} {values.iloc[0]:.6g}"
