"""Helpers shared by the test modules."""

import numpy as np

from bench import results as R
from bench.cli import main


def bench_cli(capsys, *args):
    """Run `bench ARGS` in-process; return (exit code, stdout, stderr)."""
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    out, err = capsys.readouterr()
    return code, out, err


def metric_values(folder):
    """A run's metric rows (generation, metric, value) in a fixed order."""
    table = R.read_metrics(folder).to_pandas().sort_values(["generation", "metric"])
    return table[["generation", "metric", "value"]].reset_index(drop=True)


def assert_same_results(folder, reference):
    """Two runs wrote the same metric rows with exactly the same values."""
    a, b = metric_values(folder), metric_values(reference)
    assert list(a.metric) == list(b.metric) and list(a.generation) == list(b.generation)
    np.testing.assert_array_equal(a.value.to_numpy(), b.value.to_numpy())
