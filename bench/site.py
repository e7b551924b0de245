"""The index page of a folder of leaderboards: the suite table and its heatmap, then every track's
table with the trajectories of its headline and main metrics, in one self-contained HTML file
(inline style and script, images as data URIs, nothing fetched), publishable as it is.

``bench leaderboard RESULTS --suite --out DIR`` writes it as ``DIR/index.html``;
``leaderboards/make.sh`` publishes the project's own.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

from bench import leaderboard as L
from bench import plots as P
from bench import suite as S
from bench.report import png_uri

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


def _plots(track_runs: Sequence[P.RunData], board: Any) -> str:
    if not track_runs:
        return ""
    names = P.metric_names(track_runs)
    figures = []
    with tempfile.TemporaryDirectory(prefix="bench-site-") as tmp:
        for i, metric in enumerate(_metrics_to_plot(board, names)):
            path = P.plot_metric(track_runs, metric, Path(tmp) / f"{i}.png")
            cap = f"{board.track['name']}: {metric} per generation, mean over seeds with 95% t bands"
            figures.append(f'<figure><img alt="{L.html_escape(cap)}" src="{png_uri(path.read_bytes())}" width="560">'
                           f"<figcaption>{L.html_escape(cap)}</figcaption></figure>")
    return f'<div class="plots">{"".join(figures)}</div>'


_CSS = """.plots{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0}nav a{margin-right:1em}
section{margin-top:2.5em;border-top:1px solid #ddd}"""


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
    esc = L.html_escape
    nav = " ".join(f'<a href="#{esc(b.slug)}">{esc(b.track["name"])}</a>' for b in boards)
    sections = []
    for b in boards:
        sections.append(f'<section id="{esc(b.slug)}"><h2>{esc(b.track["name"])}</h2>\n'
                        f"{L.board_section_html(b)}\n{_plots(_track_runs(runs, b), b)}</section>")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>collapse-bench leaderboards</title>
<style>{L._CSS}
{S._CSS}
{_CSS}</style></head><body>
<h1>collapse-bench leaderboards</h1>
<p>Mitigations of model collapse ranked across tracks (the suite table), then each track's own table
and trajectories. Made by <code>bench leaderboard RESULTS --suite</code>; the rules are in
docs/leaderboards.md and docs/mitigations.md of the collapse-bench repository.</p>
<nav>Tracks: {nav}</nav>
<section id="suite"><h2>Suite table</h2>
{S.suite_section_html(result, png)}
</section>
{chr(10).join(sections)}
<script>
{L._JS}
</script>
</body></html>
"""
    path = out / INDEX
    L._write_text(path, page)
    return path
