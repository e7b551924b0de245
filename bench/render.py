"""Writing leaderboards: one track's :class:`bench.ranking.Board` as Markdown, HTML (through the
templates of :mod:`bench.pages`), CSV and JSON, and ``index.md`` of a folder of them.

Strings from results and plugins are escaped for each format: Markdown by :func:`md_escape`,
HTML by the templates' autoescape, CSV rows by :func:`csv_row` (no spreadsheet formulas).
Every file is written atomically (:func:`bench.results.write_text`). Each entry carries the
``bench run`` command that reproduces its runs (:func:`bench.reproduce.run_command`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import quote

import numpy as np

from bench import pages
from bench import results as R
from bench.grouping import CONFIDENCE
from bench.ranking import RULE, Board, Entry, MetricRow
from bench.reproduce import format_seeds, run_command

FORMAT = "collapse-bench-leaderboard/1"
INDEX_FILE = "index.md"
EXTENSIONS = ("md", "html", "csv", "json")


# -- escaping -------------------------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|&~#!])")


def md_escape(value: Any) -> str:
    """Text safe inside Markdown (and a table cell): markup characters backslash-escaped, line
    breaks as spaces. Strings from results and plugins go through this."""
    text = re.sub(r"[\r\n\t\v\f]+", " ", str(value))
    return _MD_SPECIAL.sub(r"\\\1", text)


html_escape = pages.html_text  # HTML text as the templates escape it (kept for callers of the old name)

_CSV_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def csv_text(value: Any) -> str:
    """Text from results or plugins for a CSV cell: one starting with ``=``, ``+``, ``-``, ``@``, a
    tab or a carriage return (a spreadsheet would run it as a formula) gets a leading apostrophe."""
    text = str(value)
    return "'" + text if text.startswith(_CSV_FORMULA) else text


def csv_cell(value: Any) -> str:
    """One CSV cell: numbers as Python writes them (floats with ``repr``: ``-0.5``, ``inf``,
    ``nan``), None as empty, everything else as text through :func:`csv_text`. Every CSV the
    project writes builds its rows with :func:`csv_row`, so no text reaches a cell unguarded."""
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    return csv_text(value)


def csv_row(values: Iterable[Any]) -> list[str]:
    """A CSV row of :func:`csv_cell` cells, for ``csv.writer.writerow``."""
    return [csv_cell(v) for v in values]


def slugify(name: str) -> str:
    """A file-name stem from a track name: ``gmm/smoke`` -> ``gmm-smoke``."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", name).strip("-.") or "track"


# -- numbers and cells ----------------------------------------------------------------------------


def _num(x: float) -> str:
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.4g}"


def _json_num(x: float) -> float | str | None:
    x = float(x)
    if math.isnan(x):
        return None
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def _rank_text(r: float) -> str:
    return f"{r:g}"


def _cell(b: Board, e: int, j: int, w: str) -> str:
    mean, lo, hi = (b.stats[f"{w}_{s}"][e, j] for s in ("mean", "low", "high"))
    text = _num(mean)
    if np.isfinite(lo) and np.isfinite(hi):
        text += f" ± {_num((hi - lo) / 2)}"
    return f"{text} ({_rank_text(b.stats[f'{w}_rank'][e, j])})"


def _arrow(m: MetricRow, w: str) -> str:
    if m.direction == "higher":
        return "↑"
    if m.direction == "lower" or w == "auc":
        return "↓"
    return f"→{_num(m.target)}"


def _track_line(b: Board, esc: Callable[[Any], str]) -> str:
    t = b.track
    return (f"Track {esc(t['name'])} (id {esc(t['id'])}): model {esc(t.get('plugin', '?'))}, preset "
            f"{esc(t.get('preset', '?'))}, generations 0..{b.generations}, real data {esc(t.get('real_data'))}. "
            f"{b.runs} complete runs in {len(b.entries)} entries (an entry: runs whose specs differ only in "
            "the seed).")


_LEGEND = ("Cells: the mean over seeds ± the half-width of its 95% t-interval (no interval for one seed), "
           "then the entry's rank on that column. Final: the value at the last generation; AUC: the "
           "area under the curve over generations 0..N divided by N (of |value − target| for target "
           "metrics). ↑ higher is better, ↓ lower is better, →t nearest t is best. Score: ")


def _collapse_legend(b: Board) -> str:
    from bench.collapse import collapse_legend

    return collapse_legend(b.headline, b.generations)


def _collapse_cell(b: Board, e: int) -> tuple[str, str]:
    """The entry's "gens to collapse" text and its sort key (data-v) for the HTML table."""
    c = b.collapse[e] if b.collapse is not None else None
    if c is None:
        return "n/a", ""
    key = "" if math.isnan(c.median) else ("Infinity" if math.isinf(c.median) else f"{c.median:g}")
    return c.text(), key


def _collapse_numbers(b: Board, e: int) -> list[float]:
    c = b.collapse[e] if b.collapse is not None else None
    if c is None:
        return [math.nan] * 3
    return [float(x) for x in (c.median, c.low, c.high)]


def reference_lines(b: Board) -> tuple[str, list[str]]:
    """The "Paper's figures" beside a track's table: a sentence naming the entries that reproduce
    the paper's experiment, and one line per reference (``metric: paper: value at generation g
    (label)``, :func:`bench.references.describe`). Empty when no entry reproduces one."""
    from bench.references import describe

    if not b.references:
        return "", []
    intro = (f"Paper's figures, for the entries that reproduce the paper's experiment "
             f"({', '.join(b.reproducing)}: the preset's parameters, policy, start and components):")
    lines = []
    for ref in b.references:
        line = f"{ref.metric}: {describe(ref)}"
        if ref.generation is not None and ref.generation > b.generations:
            line += f"; beyond this track's generations 0..{b.generations}"
        lines.append(line)
    return intro, lines


def entry_command(entry: Entry) -> str:
    """The ``bench run`` command that makes the entry's runs (all its seeds)."""
    return run_command(entry.spec, entry.seeds)


# -- Markdown -------------------------------------------------------------------------------------


_CODE_SAFE = re.compile(r"[^`<>&\\\r\n]*")


def _md_command(command: str) -> list[str]:
    """A command as Markdown lines: a code block, or escaped text when it holds characters that
    are markup elsewhere (a crafted parameter name)."""
    if _CODE_SAFE.fullmatch(command):
        return ["  ```sh", f"  {command}", "  ```"]
    return [f"  {md_escape(command)}"]


def write_markdown(b: Board, path: Path) -> None:
    esc = md_escape
    main = [j for j, m in enumerate(b.rows) if m.main]
    other = [j for j, m in enumerate(b.rows) if not m.main]
    gens = b.collapse is not None
    lines = [f"# Leaderboard: {esc(b.track['name'])}", "", _track_line(b, esc), "",
             f"Main metrics: {', '.join(esc(m) for m in b.main)}.", "",
             _LEGEND + RULE + " (docs/leaderboards.md).", ""]
    if gens:
        lines += [esc(_collapse_legend(b)), ""]
    intro, refs = reference_lines(b)
    if refs:
        lines += [esc(intro), "", *(f"- {esc(r)}" for r in refs), ""]
    head = ["rank", "entry", "seeds", "score"] + (["gens to collapse"] if gens else [])
    for j in main:
        m = b.rows[j]
        head += [f"{esc(m.name)} {_arrow(m, 'final')}", f"{esc(m.name)} AUC {_arrow(m, 'auc')}"]
    align = ["---:", "---", "---:", "---:"] + ["---:"] * (2 * len(main) + gens)
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    for e, entry in enumerate(b.entries):
        cells = [_rank_text(entry.rank), esc(entry.label), str(len(entry.seeds)), f"{entry.score:.3g}"]
        if gens:
            cells.append(esc(_collapse_cell(b, e)[0]))
        for j in main:
            cells += [_cell(b, e, j, "final"), _cell(b, e, j, "auc")]
        lines.append("| " + " | ".join(cells) + " |")
    if other:
        lines += ["", f"## Other metrics at generation {b.generations}", "",
                  "Not part of the overall rank; their AUC is in the HTML, CSV and JSON tables.", ""]
        head = ["rank", "entry"] + [f"{esc(b.rows[j].name)} {_arrow(b.rows[j], 'final')}" for j in other]
        lines += ["| " + " | ".join(head) + " |", "|" + "|".join(["---:", "---"] + ["---:"] * len(other)) + "|"]
        for e, entry in enumerate(b.entries):
            cells = [_rank_text(entry.rank), esc(entry.label)] + [_cell(b, e, j, "final") for j in other]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Entries", "", "| entry | id | seeds |", "|---|---|---|"]
    for entry in b.entries:
        lines.append(f"| {esc(entry.label)} | {esc(entry.id)} | {', '.join(str(s) for s in entry.seeds)} |")
    lines += ["", "## Reproduce", "", "The command that makes each entry's runs (every choice spelled out, so it "
              "names the same run ids; `--dry-run` lists them without running):", ""]
    for entry in b.entries:
        lines += [f"- {esc(entry.label)} (id {esc(entry.id)}, seeds {format_seeds(entry.seeds)}):", "",
                  *_md_command(entry_command(entry)), ""]
    lines += [f"Made by `bench leaderboard RESULTS --track {_safe_id(b.track['id'])}`; the JSON file beside "
              "this one holds every spec.", ""]
    R.write_text(path, "\n".join(lines))


def _safe_id(text: str) -> str:
    """A track id for a code span: hex digits only, as the harness makes them (else escaped text
    outside the span would be needed, so anything else becomes '...')."""
    return text if re.fullmatch(r"[A-Za-z0-9]+", text) else "..."


# -- HTML -----------------------------------------------------------------------------------------


def board_view(b: Board) -> dict[str, Any]:
    """What the template ``board_section.html`` shows of a board: plain text and numbers (the
    template escapes them)."""
    order = [j for j, m in enumerate(b.rows) if m.main] + [j for j, m in enumerate(b.rows) if not m.main]
    head: list[tuple[str, bool]] = [(h, False) for h in ("rank", "entry", "id", "seeds", "score")]
    if b.collapse is not None:
        head.append(("gens to collapse", False))
    for j in order:
        m = b.rows[j]
        for w in ("final", "auc"):
            suffix = "" if w == "final" else " AUC"
            head.append((f"{m.name}{suffix} {_arrow(m, w)}" + (" ★" if m.main else ""), m.main))
    body = []
    for e, entry in enumerate(b.entries):
        cells: list[tuple[str, str | None]] = [
            (_rank_text(entry.rank), f"{entry.rank:g}"), (entry.label, None), (entry.id, None),
            (str(len(entry.seeds)), str(len(entry.seeds))), (f"{entry.score:.3g}", f"{entry.score:.6g}")]
        if b.collapse is not None:
            cells.append(_collapse_cell(b, e))
        for j in order:
            for w in ("final", "auc"):
                cells.append((_cell(b, e, j, w), f"{b.stats[f'{w}_rank'][e, j]:g}"))
        body.append(cells)
    return {
        "track_line": _track_line(b, str),
        "main": b.main,
        "legend": _LEGEND + RULE,
        "collapse_legend": _collapse_legend(b) if b.collapse is not None else "",
        "references": dict(zip(("intro", "lines"), reference_lines(b))),
        "head": head,
        "body": body,
        "commands": [{"label": e.label, "id": e.id, "seeds": format_seeds(e.seeds), "command": entry_command(e)}
                     for e in b.entries],
    }


def board_section_html(b: Board) -> str:
    """The track's table with its legend and reproduce commands, as HTML to place in a page
    (:func:`write_html`, and the index page of :mod:`bench.site`)."""
    return pages.render("board_section.html", board=board_view(b))


def write_html(b: Board, path: Path) -> None:
    """One self-contained page: a table sortable by clicking a header (a few lines of inline JS;
    metric columns sort by rank), nothing fetched from the network."""
    page = pages.render("leaderboard.html", title=f"Leaderboard: {b.track['name']}", board=board_view(b),
                        script=True)
    R.write_text(path, page)


# -- CSV and JSON ---------------------------------------------------------------------------------


CSV_COLUMNS = ["track", "track_id", "rank", "score", "entry", "entry_id", "seeds", "metric", "main", "measure",
               "direction", "target", "mean", "ci_low", "ci_high", "metric_rank"]
# added when the track has a headline: the entry's generations to collapse, median, min and max over
# seeds (inf: not within generations 0..N; nan: undefined)
CSV_COLLAPSE_COLUMNS = ["gens_to_collapse", "gens_to_collapse_min", "gens_to_collapse_max"]


def write_csv(b: Board, path: Path) -> None:
    """Tidy rows: one per entry, metric row and measure (final or auc)."""
    gens = b.collapse is not None
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(csv_row(CSV_COLUMNS + (CSV_COLLAPSE_COLUMNS if gens else [])))
    for e, entry in enumerate(b.entries):
        extra = _collapse_numbers(b, e) if gens else []
        for j, m in enumerate(b.rows):
            for measure in ("final", "auc"):
                direction = m.direction if measure == "final" or m.direction != "target" else "lower"
                target = None if m.target is None or measure == "auc" else m.target
                numbers = [float(b.stats[f"{measure}_{s}"][e, j]) for s in ("mean", "low", "high", "rank")]
                w.writerow(csv_row([b.track["name"], b.track["id"], f"{entry.rank:g}", entry.score, entry.label,
                                    entry.id, len(entry.seeds), m.name, int(m.main), measure, direction, target,
                                    *numbers, *extra]))
    R.write_text(path, buf.getvalue())


def board_json(b: Board) -> dict[str, Any]:
    """The machine-readable table: track, rule, metric rows, entries with every statistic and the
    command that reproduces them."""
    entries = []
    for e, entry in enumerate(b.entries):
        metrics = {}
        for j, m in enumerate(b.rows):
            metrics[m.name] = {
                measure: {"mean": _json_num(b.stats[f"{measure}_mean"][e, j]),
                          "ci95": [_json_num(b.stats[f"{measure}_{end}"][e, j]) for end in ("low", "high")],
                          "n": len(entry.seeds), "rank": _json_num(b.stats[f"{measure}_rank"][e, j])}
                for measure in ("final", "auc")}
        entries.append({"rank": entry.rank, "score": _json_num(entry.score), "label": entry.label, "id": entry.id,
                        "seeds": entry.seeds, "runs": entry.runs, "spec": entry.spec,
                        "command": entry_command(entry), "metrics": metrics})
        if b.collapse is not None:
            c = b.collapse[e]
            entries[-1]["gens_to_collapse"] = c.to_json() if c is not None else None
    extra = {"headline": b.headline} if b.headline is not None else {}
    if b.references:
        from bench.references import describe

        extra["references"] = [{**r.to_dict(), "text": describe(r)} for r in b.references]
        extra["reproducing_entries"] = list(b.reproducing)
    return {
        "format": FORMAT,
        "track": b.track,
        "generations": b.generations,
        "main_metrics": b.main,
        "rule": RULE,
        "confidence": CONFIDENCE,
        "runs": b.runs,
        "metrics": [{"name": m.name, "direction": m.direction, "target": m.target, "main": m.main} for m in b.rows],
        "entries": entries,
        **extra,
    }


def write_json(b: Board, path: Path) -> None:
    R.write_text(path, json.dumps(board_json(b), indent=1, allow_nan=False, default=str) + "\n")


WRITERS = (write_markdown, write_html, write_csv, write_json)  # in the order of EXTENSIONS


# -- the index of a folder ------------------------------------------------------------------------


def tables_in(out: Path) -> dict[str, str]:
    """The leaderboards already in ``out``: file stem -> track id (files this module wrote)."""
    found = {}
    for f in out.glob("*.json"):
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
            if isinstance(data, dict) and data.get("format") == FORMAT:
                found[f.stem] = str(data["track"]["id"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return found


def write_index(out: Path) -> Path:
    """index.md: every leaderboard JSON in ``out`` (not only this build's), with links."""
    rows = []
    for f in sorted(out.glob("*.json")):
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or data.get("format") != FORMAT:
                continue
            t, entries = data["track"], data["entries"]
            leader = entries[0]["label"] if entries else ""
            rows.append((str(t["name"]), str(t["id"]), data.get("generations"), len(entries), data.get("runs"),
                         leader, f.stem))
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            continue
    lines = ["# Leaderboards", "", "One table per track (a fixed protocol); runs of different tracks are never "
             "ranked together. Rules: docs/leaderboards.md.", "",
             "| track | id | generations | entries | runs | first | tables |", "|---|---|---:|---:|---:|---|---|"]
    for name, tid, gens, n_entries, runs, leader, stem in sorted(rows, key=lambda r: (r[0], r[1], r[6])):
        link = quote(stem)
        files = " · ".join(f"[{kind}]({link}.{ext})" for kind, ext in
                           (("Markdown", "md"), ("HTML", "html"), ("CSV", "csv"), ("JSON", "json")))
        lines.append(f"| {md_escape(name)} | {md_escape(tid)} | {md_escape(gens)} | {md_escape(n_entries)} | "
                     f"{md_escape(runs)} | {md_escape(leader)} | {files} |")
    path = out / INDEX_FILE
    R.write_text(path, "\n".join(lines) + "\n")
    return path
