"""The index page of a folder of leaderboards: the suite table and its heatmap, then every track's
table with the trajectories of its headline and main metrics, in one self-contained HTML file
(inline style and script, images as data URIs, nothing fetched), publishable as it is. The page is
the template ``site_index.html`` of :mod:`bench.pages`.

``bench leaderboard RESULTS --suite --out DIR`` writes it as ``DIR/index.html``;
``leaderboards/make.sh`` publishes the project's own.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

from bench import pages
from bench import plots as P
from bench import results as R
from bench import suite as S
from bench.render import board_view

INDEX = "index.html"
PLOTTED_METRICS = 3  # the headline, then main metrics, per track


def _metrics_to_plot(board: Any, names: Sequence[str]) -> list[str]:
    """The headline first, then the track's main metrics (each a metric row of the runs)."""
    chosen: list[str] = []
    head = (board.headline or {}).get("metric") if isinstance(board.headline, dict) else None
    for name in ([head] if head else []) + list(board.main):
        if name in names and name not in chosen:
            chosen.append(name)
        if len(chosen) >= PLOTTED_METRICS:
            break
    return chosen


def _track_runs(runs: Sequence[P.RunData], board: Any) -> list[P.RunData]:
    """The runs the board ranked."""
    wanted = {str(Path(p).resolve()) for entry in board.entries for p in entry.paths}
    return [r for r in runs if str(r.path.resolve()) in wanted]


def _figures(track_runs: Sequence[P.RunData], board: Any) -> list[tuple[str, str]]:
    """(caption, data URI) of the track's trajectory plots."""
    if not track_runs:
        return []
    names = P.metric_names(track_runs)
    figures = []
    with tempfile.TemporaryDirectory(prefix="bench-site-") as tmp:
        for i, metric in enumerate(_metrics_to_plot(board, names)):
            path = P.plot_metric(track_runs, metric, Path(tmp) / f"{i}.png")
            cap = f"{board.track['name']}: {metric} per generation, mean over seeds with 95% t bands"
            figures.append((cap, pages.png_uri(path.read_bytes())))
    return figures


def write_index(result: S.SuiteResult, paths: Iterable[str | Path], out: str | Path) -> Path:
    """``out/index.html`` from a built suite (:func:`bench.suite.build_suite`) and the runs at
    ``paths`` (for the trajectories)."""
    out = Path(out)
    boards = result.leaderboard.boards if result.leaderboard is not None else []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unreadable runs were already named by the leaderboard
        # exactly the folders the tables ranked (the leaderboard searches nested folders too)
        folders = [p for b in boards for e in b.entries for p in e.paths]
        runs = P.load_runs(folders) if folders else []
    png = (out / f"{S.STEM}.png").read_bytes() if (out / f"{S.STEM}.png").is_file() else None
    sections = [{"slug": b.slug, "name": b.track["name"], "board": board_view(b),
                 "figures": _figures(_track_runs(runs, b), b)} for b in boards]
    page = pages.render("site_index.html", title="collapse-bench leaderboards", script=True,
                        nav=[(b.slug, b.track["name"]) for b in boards], suite=S.suite_view(result, png),
                        sections=sections)
    path = out / INDEX
    R.write_text(path, page)
    return path
