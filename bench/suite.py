"""The suite table: mitigations (rows) against tracks (columns), each cell the mitigation's rank on
the track's headline metric and its difference to ``replace`` paired by seed; and "generations to
collapse", the first generation at which a run's headline metric has moved past the track's
threshold. docs/leaderboards.md ("The suite table", "Generations to collapse") states the rules.

Everything is computed from :func:`bench.leaderboard.build`'s boards: the runs are read, checked,
grouped into tracks and entries, and their curves kept there; this module adds the headline rule
(:func:`attach_headline`, which the leaderboard calls for its "gens to collapse" column) and the
table across tracks (:func:`build_suite`).
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from bench import leaderboard as L
from bench import pages
from bench import results as R
from bench.collapse import (  # noqa: F401 (re-exported: the headline rule lives in bench.collapse)
    COLLAPSE_MODES,
    Collapse,
    attach_headline,
    collapse_legend,
    generations_to_collapse,
    _rule_text,
    override_headline,
)
from bench.runfolder import parse_headline  # noqa: F401 (one reader of run.json headlines)
from bench.errors import BenchError
from bench.grouping import CONFIDENCE, entry_labels, summarize

FORMAT = "collapse-bench-suite/1"
BASELINE = "replace"
STEM = "suite"
CLIP = 3.0  # the heatmap's colour scale: standardised differences beyond +-3 get the end colours
COLOUR_RULE = ("colour: the paired difference to replace at the final generation divided by the standard "
               "deviation over seeds of replace's final values on that track (a standardised effect size, "
               "Glass's delta), signed so that blue is better than replace and red worse, clipped to "
               f"+-{CLIP:g}; grey: n/a or no runs; hatched: no scale (replace has fewer than 2 seeds or "
               "no spread); the number in a cell is the mitigation's rank on the track")


# -- the suite table ------------------------------------------------------------------------------


@dataclass
class Cell:
    """One mitigation on one track."""

    applies: bool = True
    reason: str = ""  # no entry: why the mitigation does not apply (applies False), or "no runs"
    entry: str | None = None  # the entry's label in the track's leaderboard
    baseline: bool = False
    rank: float = math.nan
    final_mean: float = math.nan
    diff_mean: float = math.nan
    diff_low: float = math.nan
    diff_high: float = math.nan
    n_paired: int = 0
    better: str = ""  # better, worse or equal (by the mean difference and the metric's direction)
    beyond: str = ""  # win or loss: the whole interval on that side of 0
    standardised: float = math.nan  # signed so that positive is better; the heatmap's colour
    collapse: Collapse | None = None

    @property
    def has_entry(self) -> bool:
        return self.entry is not None


@dataclass
class SuiteTrack:
    name: str
    id: str
    plugin: str
    preset: str
    slug: str
    generations: int
    headline: dict[str, Any]
    entries: int
    replace_seeds: int
    replace_sd: float


@dataclass
class SuiteRow:
    label: str
    mitigation: str
    cells: list[Cell]
    mean_rank: float = math.nan
    ranked: int = 0
    wins: int = 0
    losses: int = 0


@dataclass
class SuiteResult:
    """What :func:`build_suite` did: the table, notes on tracks left out, the files written, and
    the leaderboard build underneath (its warnings and per-track tables)."""

    tracks: list[SuiteTrack] = field(default_factory=list)
    rows: list[SuiteRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    leaderboard: Any = None

    @property
    def warnings(self) -> list[str]:
        return list(self.leaderboard.warnings) if self.leaderboard is not None else []

    def summary(self, top: int = 5) -> str:
        lines = [self.leaderboard.summary()] if self.leaderboard is not None else []
        if not self.files:
            lines.append("no suite table written: no complete, readable runs")
            return "\n".join(lines)
        stem = self.files[0].with_suffix("")
        lines.append(f"suite table: {len(self.rows)} mitigations x {len(self.tracks)} tracks "
                     f"-> {stem}.{{md,html,csv,json,png}}; everything on one page: {self.files[-1]}")
        for note in self.notes:
            lines.append(f"  note: {note}")
        for i, row in enumerate(self.rows[:top], 1):
            lines.append(f"  {i}. {row.label}: mean rank {_num(row.mean_rank)} over {row.ranked} track(s), "
                         f"{row.wins} win(s), {row.losses} loss(es) against {BASELINE}")
        if len(self.rows) > top:
            lines.append(f"  ... {len(self.rows) - top} more in {stem}.md")
        return "\n".join(lines)


def _num(x: float) -> str:
    return L._num(float(x))


def _better_side(direction: str) -> float:
    """The sign of a difference that is better: -1 for lower (and target distances), +1 for higher."""
    return 1.0 if direction == "higher" else -1.0


def _row_labels(board: Any) -> list[tuple[str, str]]:
    """Per entry (board order): (row label, mitigation). Entries of one track that share a
    mitigation get what else differs between them appended (``replace start=gen0``)."""
    groups: dict[str, list[int]] = {}
    for e, entry in enumerate(board.entries):
        groups.setdefault(entry.mitigation or entry.label, []).append(e)
    out: list[tuple[str, str]] = [("", "")] * len(board.entries)
    for mit, idx in groups.items():
        labels = [mit] if len(idx) == 1 else entry_labels([(mit, board.entries[e].spec) for e in idx])
        if len(set(labels)) < len(labels):
            labels = [f"{lab} #{board.entries[e].id}" for lab, e in zip(labels, idx)]
        for lab, e in zip(labels, idx):
            out[e] = (lab, mit)
    return out


class _Availability:
    """bench.mitigations.unavailable with one plugin registry, loaded when first needed."""

    def __init__(self, bench: Any, notes: list[str]) -> None:
        self._bench, self._notes, self._failed = bench, notes, False

    def reason(self, plugin: str, mitigation: str, preset: str | None) -> str | None:
        from bench import mitigations

        if self._bench is None and not self._failed:
            try:
                from bench.plugins import Bench

                self._bench = Bench()
            except Exception as exc:  # a broken third-party plugin: say so, show "no runs"
                self._failed = True
                self._notes.append(f"the plugin registry did not load ({L._reason(exc)}); cells without runs "
                                   "say 'no runs' without checking whether the mitigation applies")
        if self._bench is None:
            return None
        try:
            return mitigations.unavailable(self._bench, plugin, mitigation, preset)
        except BenchError:  # an unknown model or mitigation name: nothing to say but "no runs"
            return None
        except Exception as exc:  # a plugin's own `applies` check failed
            self._notes.append(f"checking whether {mitigation} applies to {plugin} failed ({L._reason(exc)})")
            return None


def suite_from_boards(boards: Sequence[Any], bench: Any = None) -> SuiteResult:
    """The suite table from leaderboard boards (with curves and headlines, as
    :func:`bench.leaderboard.build` makes them). ``bench`` is the plugin registry used to say why a
    mitigation does not apply (default: the installed plugins, loaded when needed)."""
    result = SuiteResult()
    columns: list[tuple[Any, int, list[tuple[str, str]], int]] = []
    for b in boards:
        name = f"{b.track['name']} ({b.track['id']})"
        h = b.headline
        if h is None:
            result.notes.append(f"{name}: no headline metric (run.json headline is null or missing); not a column")
            continue
        j = next((k for k, m in enumerate(b.rows) if m.name == h["metric"]), None)
        if j is None:
            result.notes.append(f"{name}: no rows of the headline metric {h['metric']}; not a column")
            continue
        labels = _row_labels(b)
        base = [e for e, (_, mit) in enumerate(labels) if mit == BASELINE]
        if not base:
            result.notes.append(f"{name}: no {BASELINE} entry to compare with; not a column (entries: "
                                f"{', '.join(lab for lab, _ in labels)})")
            continue
        if len(base) > 1:
            result.notes.append(f"{name}: {len(base)} {BASELINE} entries ({', '.join(labels[e][0] for e in base)}), "
                                "so no single baseline; not a column")
            continue
        columns.append((b, j, labels, base[0]))

    avail = _Availability(bench, result.notes)
    rows: dict[str, SuiteRow] = {}
    for c, (b, j, labels, r) in enumerate(columns):
        m = b.rows[j]
        direction = "lower" if m.direction == "target" else m.direction
        n_gen = b.generations

        def finals(e: int) -> dict[Any, float]:
            v = b.curves[b.members[e], j, n_gen]
            if m.direction == "target":
                v = np.abs(v - m.target)
            return dict(zip(b.entries[e].seeds, v.tolist()))

        means = b.stats["final_mean"][:, j]
        ranks = L.rank(means, m.direction, m.target)
        base = finals(r)
        base_values = np.array(list(base.values()), dtype=float)
        sd = float(np.std(base_values, ddof=1)) if len(base_values) > 1 else math.nan
        result.tracks.append(SuiteTrack(name=str(b.track["name"]), id=str(b.track["id"]),
                                        plugin=str(b.track.get("plugin")), preset=str(b.track.get("preset")),
                                        slug=b.slug, generations=n_gen, headline=dict(b.headline),
                                        entries=len(b.entries),
                                        replace_seeds=len(base_values), replace_sd=sd))
        for e, (label, mit) in enumerate(labels):
            row = rows.get(label)
            if row is None:
                row = rows[label] = SuiteRow(label, mit, [Cell(entry=None) for _ in columns])
            cell = row.cells[c]
            cell.entry, cell.rank, cell.final_mean = b.entries[e].label, float(ranks[e]), float(means[e])
            cell.collapse = b.collapse[e] if b.collapse is not None else None
            if e == r:
                cell.baseline, cell.standardised = True, 0.0
                continue
            mine = finals(e)
            shared = [s for s in mine if s in base]
            cell.n_paired = len(shared)
            if not shared:
                continue
            d = np.array([mine[s] - base[s] for s in shared], dtype=float)
            mean, lo, hi = summarize(d[:, None])
            cell.diff_mean, cell.diff_low, cell.diff_high = float(mean[0]), float(lo[0]), float(hi[0])
            side = _better_side(direction)
            signed = side * cell.diff_mean
            cell.better = "" if math.isnan(signed) else ("better" if signed > 0 else "worse" if signed < 0 else "equal")
            if np.isfinite([lo[0], hi[0]]).all():
                if side * lo[0] > 0 and side * hi[0] > 0:
                    cell.beyond = "win"
                elif side * lo[0] < 0 and side * hi[0] < 0:
                    cell.beyond = "loss"
            with np.errstate(divide="ignore", invalid="ignore"):
                z = np.float64(signed) / np.float64(sd) if sd > 0 else np.float64(np.nan)
            cell.standardised = float(z)

    for row in rows.values():
        for c, (b, _, _, _) in enumerate(columns):
            cell = row.cells[c]
            if cell.has_entry:
                continue
            reason = avail.reason(str(b.track.get("plugin")), row.mitigation, b.track.get("preset"))
            cell.applies = reason is None
            cell.reason = reason or "no runs"
        ranked = [cell.rank for cell in row.cells if math.isfinite(cell.rank)]
        row.ranked = len(ranked)
        row.mean_rank = float(np.mean(ranked)) if ranked else math.nan
        row.wins = sum(cell.beyond == "win" for cell in row.cells)
        row.losses = sum(cell.beyond == "loss" for cell in row.cells)
    result.rows = sorted(rows.values(), key=lambda r: (math.isnan(r.mean_rank), r.mean_rank if r.ranked else 0,
                                                      -r.wins, r.label))
    return result


# -- cell text --------------------------------------------------------------------------------------


def diff_text(cell: Cell) -> str:
    """``Δ -0.12 [-0.2, -0.04] better ✓``: the paired mean difference, its 95% t-interval, whether
    the mean is better or worse than replace, and ✓ / ✗ when the whole interval is on one side."""
    if cell.baseline:
        return "baseline"
    if cell.n_paired == 0:
        return "no shared seeds"
    text = f"Δ {_num(cell.diff_mean)}"
    if math.isfinite(cell.diff_low) and math.isfinite(cell.diff_high):
        text += f" [{_num(cell.diff_low)}, {_num(cell.diff_high)}]"
    if cell.better:
        text += f" {cell.better}"
    text += {"win": " ✓", "loss": " ✗"}.get(cell.beyond, "")
    return text + f" (n={cell.n_paired})"


def cell_parts(cell: Cell) -> list[str]:
    """A cell as short lines of plain text: rank, difference, generations to collapse."""
    if not cell.has_entry:
        return [cell.reason if cell.applies else f"n/a: {cell.reason}"]
    parts = [f"#{cell.rank:g}", diff_text(cell)]
    parts.append(f"gens {cell.collapse.text()}" if cell.collapse is not None else "gens n/a")
    return parts


def _track_head(t: SuiteTrack) -> str:
    return f"{t.name} ({t.headline['metric']} {_arrow(t.headline.get('direction'), t.headline.get('target'))})"


def _arrow(direction: str | None, target: float | None) -> str:
    return {"higher": "↑", "lower": "↓"}.get(direction or "", f"→{_num(target)}" if target is not None else "")


def _headline_line(t: SuiteTrack) -> str:
    h = t.headline
    src = "override" if h.get("source") == "override" else "run.json"
    sd = "n/a" if math.isnan(t.replace_sd) else _num(t.replace_sd)
    return (f"{t.name} (track {t.id}, generations 0..{t.generations}, {t.entries} entries): headline "
            f"{h['metric']} ({h.get('direction')}), collapse when {_rule_text(h)} ({src}); {h.get('why') or ''} "
            f"— replace: {t.replace_seeds} seeds, sd of final values {sd}")


EXPLAIN = [
    "Rows are mitigations (run.json identity.mitigation: the same label on every track), columns are tracks "
    "with a headline metric and a replace entry. Runs differing only in the mitigation share generation 0 "
    "(same seed, same M_0), so differences to replace are paired by seed.",
    "#r: the entry's rank on the track by the headline metric's mean over seeds at the final generation "
    "(1 = best by the metric's direction; ties share the average rank; every entry of the track is ranked).",
    "Δ: the paired difference mitigation − replace at the final generation, mean over the seeds both have, "
    "in the metric's units (for a target metric, of the distances to the target), with its 95% Student-t "
    "interval (none with fewer than 2 shared seeds); better / worse by the metric's direction; ✓ (a win): "
    "the whole interval is on the better side of 0, ✗ (a loss): on the worse side; n: shared seeds.",
    "gens: generations to collapse, the median over seeds of the first generation whose headline value has "
    "moved past the threshold relative to generation 0, then [min–max] over seeds (with 3-5 seeds an exact "
    "95% interval for a median does not exist, so the range is shown); >N: not within the run.",
    "n/a: the mitigation does not apply to the track's model (the reason follows); no runs: it applies but "
    "the results hold none. Mean rank: over the tracks where the row has a rank; wins, losses: tracks where "
    "it beats replace, or loses to it, beyond its interval. Rows are sorted by mean rank, then wins.",
]


# -- writing --------------------------------------------------------------------------------------


def write_markdown(s: SuiteResult, path: Path, png_name: str | None = None) -> None:
    esc = L.md_escape
    lines = ["# Suite table", "", *(esc(p) + "\n" for p in EXPLAIN)]
    if png_name:
        lines += [f"![suite heatmap]({png_name})", "", "Heatmap: " + esc(COLOUR_RULE) + ".", ""]
    if s.tracks:
        head = ["mitigation"] + [esc(_track_head(t)) for t in s.tracks] + ["mean rank", "wins", "losses"]
        lines += ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * (len(s.tracks) + 1) + ["---:"] * 3) + "|"]
        for row in s.rows:
            cells = [esc(row.label)] + [" · ".join(esc(p) for p in cell_parts(c)) for c in row.cells]
            cells += [_num(row.mean_rank), str(row.wins), str(row.losses)]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "## Headline metrics", ""] + [f"- {esc(_headline_line(t))}" for t in s.tracks]
    else:
        lines += ["No track has both a headline metric and a replace entry: no table.", ""]
    if s.notes:
        lines += ["", "## Notes", ""] + [f"- {esc(n)}" for n in s.notes]
    lines += ["", "Made by `bench leaderboard RESULTS --suite`; suite.json beside this file holds every number "
              "(docs/leaderboards.md, \"The suite table\").", ""]
    R.write_text(path, "\n".join(lines))


def suite_view(s: SuiteResult, png: bytes | None) -> dict[str, Any]:
    """What the template ``suite_section.html`` shows: plain text (the template escapes it)."""
    rows = []
    for row in s.rows:
        cells = [("na" if not c.has_entry else "base" if c.baseline else c.beyond, cell_parts(c)) for c in row.cells]
        rows.append({"label": row.label, "cells": cells, "mean_rank": _num(row.mean_rank), "wins": row.wins,
                     "losses": row.losses})
    return {
        "explain": EXPLAIN,
        "tracks": [_track_head(t) for t in s.tracks],
        "rows": rows,
        "png_uri": pages.png_uri(png) if png else "",
        "colour_rule": COLOUR_RULE,
        "headlines": [_headline_line(t) for t in s.tracks],
        "notes": s.notes,
    }


def suite_section_html(s: SuiteResult, png: bytes | None) -> str:
    """The suite table, its heatmap, the headline metrics and notes, as HTML to place in a page
    (:func:`write_html`, and the index page of :mod:`bench.site`)."""
    return pages.render("suite_section.html", suite=suite_view(s, png))


def write_html(s: SuiteResult, path: Path, png: bytes | None) -> None:
    """One self-contained page: the stylesheet inline, the heatmap as a data URI, no script, nothing
    fetched."""
    R.write_text(path, pages.render("suite.html", title="Suite table", suite=suite_view(s, png)))


CSV_COLUMNS = ["mitigation", "track", "track_id", "headline", "direction", "applies", "reason", "entry", "baseline",
               "rank", "final_mean", "diff_mean", "diff_low", "diff_high", "n_paired", "better", "beyond_interval",
               "standardised", "gens_median", "gens_min", "gens_max", "gens_censored", "gens_last",
               "mean_rank", "wins", "losses"]


def write_csv(s: SuiteResult, path: Path) -> None:
    """Tidy rows, one per mitigation and track (also n/a ones), built by
    :func:`bench.render.csv_row` as every CSV is: text from results through its formula guard,
    numbers as ``repr`` floats, ``inf`` for a censored generation count, ``nan`` or empty where
    there is none."""
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(L.csv_row(CSV_COLUMNS))
    for row in s.rows:
        for track, c in zip(s.tracks, row.cells):
            col = c.collapse
            gens = ([float(col.median), float(col.low), float(col.high), col.censored, col.last]
                    if col is not None else [None] * 5)
            numbers = [float(x) if c.has_entry else None for x in (c.rank, c.final_mean, c.diff_mean, c.diff_low,
                                                                    c.diff_high)]
            w.writerow(L.csv_row([row.label, track.name, track.id, track.headline["metric"],
                                  str(track.headline.get("direction")), int(c.applies), c.reason, c.entry,
                                  int(c.baseline), *numbers, c.n_paired if c.has_entry else None, c.better,
                                  c.beyond, float(c.standardised) if c.has_entry else None, *gens,
                                  float(row.mean_rank), row.wins, row.losses]))
    R.write_text(path, buf.getvalue())


def suite_json(s: SuiteResult) -> dict[str, Any]:
    num = L._json_num

    def cell(c: Cell) -> dict[str, Any]:
        return {"applies": c.applies, "reason": c.reason or None, "entry": c.entry, "baseline": c.baseline,
                "rank": num(c.rank), "final_mean": num(c.final_mean),
                "diff": {"mean": num(c.diff_mean), "low": num(c.diff_low), "high": num(c.diff_high),
                         "n_paired": c.n_paired, "better": c.better or None, "beyond_interval": c.beyond or None},
                "standardised": num(c.standardised),
                "gens_to_collapse": c.collapse.to_json() if c.collapse is not None else None}

    return {
        "format": FORMAT,
        "baseline": BASELINE,
        "confidence": CONFIDENCE,
        "explanation": EXPLAIN,
        "colour_rule": COLOUR_RULE,
        "tracks": [{"name": t.name, "id": t.id, "plugin": t.plugin, "preset": t.preset, "table": t.slug,
                    "generations": t.generations, "headline": t.headline, "entries": t.entries,
                    "replace_seeds": t.replace_seeds, "replace_sd": num(t.replace_sd)} for t in s.tracks],
        "rows": [{"label": r.label, "mitigation": r.mitigation, "mean_rank": num(r.mean_rank), "ranked": r.ranked,
                  "wins": r.wins, "losses": r.losses,
                  "cells": {t.id: cell(c) for t, c in zip(s.tracks, r.cells)}} for r in s.rows],
        "notes": s.notes,
        "warnings": s.warnings,
    }


def write_json(s: SuiteResult, path: Path) -> None:
    R.write_text(path, json.dumps(suite_json(s), indent=1, allow_nan=False, default=str) + "\n")


def heatmap_values(s: SuiteResult) -> tuple[np.ndarray, np.ndarray]:
    """(colour values clipped to +-CLIP, NaN for grey cells; a mask of hatched cells)."""
    z = np.full((len(s.rows), len(s.tracks)), np.nan)
    hatch = np.zeros(z.shape, dtype=bool)
    for i, row in enumerate(s.rows):
        for k, c in enumerate(row.cells):
            if not c.has_entry:
                continue
            if math.isnan(c.standardised):
                z[i, k], hatch[i, k] = 0.0, True
            else:
                z[i, k] = max(-CLIP, min(CLIP, c.standardised))
    return z, hatch


def write_png(s: SuiteResult, path: Path) -> None:
    from matplotlib import colormaps
    from matplotlib.patches import Rectangle

    from bench.plots import _figure, _save, mpl_text

    n_rows, n_cols = max(len(s.rows), 1), max(len(s.tracks), 1)
    fig, axes = _figure(width=min(3.0 + 1.6 * n_cols, 30), height=min(1.6 + 0.42 * n_rows, 40))
    ax = axes[0][0]
    if not s.tracks or not s.rows:
        ax.axis("off")
        ax.text(0.5, 0.5, "no track with a headline metric and a replace entry", ha="center", va="center")
        _save(fig, path)
        return
    z, hatch = heatmap_values(s)
    cmap = colormaps["RdBu"].with_extremes(bad="#bdbdbd")
    im = ax.imshow(np.ma.masked_invalid(z), cmap=cmap, vmin=-CLIP, vmax=CLIP, aspect="auto")
    for i, row in enumerate(s.rows):
        for k, c in enumerate(row.cells):
            if hatch[i, k]:
                ax.add_patch(Rectangle((k - 0.5, i - 0.5), 1, 1, fill=False, hatch="//", edgecolor="#999", lw=0))
            text = f"{c.rank:g}" if c.has_entry else "n/a"
            dark = c.has_entry and abs(z[i, k]) > 0.6 * CLIP
            ax.text(k, i, text, ha="center", va="center", fontsize=9, color="white" if dark else "black")
    ax.set_xticks(range(len(s.tracks)), [mpl_text(f"{t.name}\n{t.headline['metric']}") for t in s.tracks],
                  rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(s.rows)), [mpl_text(r.label) for r in s.rows], fontsize=8)
    ax.set_title("rank (number) and paired difference to replace (colour)", fontsize=9)
    bar = fig.colorbar(im, ax=ax, shrink=0.8)
    bar.set_label("Δ / sd(replace); + is better", fontsize=8)
    _save(fig, path)


# -- the whole build ------------------------------------------------------------------------------


def build_suite(paths: Iterable[str | Path], out: str | Path | None = None, headline_override: Any = None, *,
                track: str | None = None, workers: int | None = None, bench: Any = None) -> SuiteResult:
    """Build the per-track leaderboards (:func:`bench.leaderboard.build`, written to ``out`` as
    always; None: :func:`bench.leaderboard.default_out`, ``leaderboards/`` in the first path) and
    the suite table across their tracks: ``suite.md``, ``.html``, ``.csv``, ``.json`` and ``.png``
    in ``out``, and ``index.html``, one page with the suite table and every track's
    table and trajectories (:mod:`bench.site`). ``headline_override`` (a :class:`bench.components.Headline` or a dict
    with metric, threshold and mode) replaces every track's headline. ``bench`` is the plugin
    registry that says where a mitigation does not apply (default: the installed plugins)."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    override = override_headline(headline_override) if headline_override is not None else None
    out = L.default_out(paths) if out is None else out
    lb = L.build(paths, track=track, out=out, workers=workers, headline=override, bench=bench)
    result = suite_from_boards(lb.boards, bench=bench)
    result.leaderboard = lb
    if not lb.boards:
        return result
    out = Path(out)
    files = [out / f"{STEM}.{ext}" for ext in ("md", "html", "csv", "json", "png")]
    write_png(result, files[4])
    write_markdown(result, files[0], png_name=files[4].name)
    write_html(result, files[1], files[4].read_bytes())
    write_csv(result, files[2])
    write_json(result, files[3])
    from bench.site import write_index

    files.append(write_index(result, paths, out))
    result.files = files
    return result
