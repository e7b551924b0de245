"""Self-contained HTML reports of run folders, one page per run or per track (docs/reports.md).

A page holds the spec and status, a metric table (generation 0 and the last generation, with
each metric's direction), every plot of :mod:`bench.plots` as a base64 PNG, and samples: text
continuations of a few prompts across generations, a scatter of generation-0 against
last-generation vectors, or an image grid. It loads nothing from outside (no scripts, fonts or
CDN; a Content-Security-Policy forbids them) and every string from results or plugins passes
through :func:`html.escape`, so a plugin name like ``<script>`` shows as text.
"""

from __future__ import annotations

import base64
import html
import io
import math
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

import bench
from bench import plots as P
from bench import results as R
from bench.errors import BenchError

PROMPTS = 3          # text samples followed across generations, per run
TRACK_PROMPTS = 2    # per entry on a track page
SCATTER_POINTS = 2000
GRID_IMAGES = 32

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1150px; color: #222; background: #fff; }
h1 { font-size: 1.5em; border-bottom: 2px solid #3a6ea5; padding-bottom: .2em; }
h2 { font-size: 1.2em; margin-top: 1.6em; color: #3a6ea5; }
table { border-collapse: collapse; margin: .5em 0; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #eef2f7; }
td.num { text-align: right; font-family: monospace; }
.status-complete { color: #1a7f37; font-weight: bold; }
.status-failed, .status-interrupted, .status-running { color: #b35900; font-weight: bold; }
.plots { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; }
figure.wide img { max-width: 100%; }
figcaption { font-size: .85em; color: #555; }
pre, .text { white-space: pre-wrap; font-family: monospace; font-size: .85em; }
.note { color: #666; font-size: .85em; }
footer { margin-top: 3em; color: #888; font-size: .8em; }
"""


def esc(value: Any) -> str:
    """Text from results or plugins, escaped for HTML text and attribute values."""
    return html.escape(str(value), quote=True)


def png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


# -- page pieces --------------------------------------------------------------------------------


def _direction(direction: str, target: float | None) -> str:
    return f"target {P.fmt(target)}" if direction == "target" and target is not None else direction


def _table(header: Sequence[str] | None, rows: Iterable[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    """An HTML table (no header row when ``header`` is None); cells are already-escaped HTML."""
    head = f"<thead><tr>{''.join(f'<th>{h}</th>' for h in header)}</tr></thead>" if header else ""
    body = []
    for row in rows:
        cells = "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    return f"<table>{head}<tbody>{''.join(body)}</tbody></table>"


def _spec_rows(spec: dict[str, Any], keys: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """(name, value) of every spec entry, parameters flattened as ``params.NAME``."""
    rows = []
    for key in ("plugin", "preset", "policy", "policy_params", "seed", "start", "generations",
                "trainer", "generator", "scorer", "metrics"):
        if key in spec:
            rows.append((key, spec[key]))
    for key, value in spec.items():
        if key not in dict(rows) and key != "params":
            rows.append((key, value))
    for key, value in sorted((spec.get("params") or {}).items()):
        rows.append((f"params.{key}", value))
    if keys is not None:
        rows = [r for r in rows if r[0] in keys]
    return [(k, ", ".join(map(str, v)) if isinstance(v, list) else ("-" if v is None else str(v))) for k, v in rows]


def _spec_table(rows: list[tuple[str, str]]) -> str:
    return _table(["spec", "value"], [(esc(k), esc(v)) for k, v in rows])


def _status(info: dict[str, Any]) -> str:
    status = str(info.get("status", "unknown"))
    cls = "status-" + P.slug(status)
    return f'<span class="{esc(cls)}">{esc(status)}</span>'


def _plots_html(track_runs: Sequence[P.RunData], metrics: Sequence[str] | None) -> str:
    """Every plot of the runs, drawn into a temporary folder and embedded as data URIs."""
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        files = P.plot_track(track_runs, Path(tmp), metrics)
        captions = {name: m for m, name in P.metric_files(P.metric_names(track_runs, metrics)).items()}
        figures = []
        for f in files:
            data = f.read_bytes()
            if f.stem == "figure1":
                cap = ("Figure 1: left, per-block perplexity under M_0 of the data each generation drew "
                       "(log x, one outline per generation); right, test perplexity per generation")
                figures.insert(0, f'<figure class="wide"><img alt="{esc(cap)}" src="{png_uri(data)}">'
                                  f"<figcaption>{esc(cap)}</figcaption></figure>")
            else:
                cap = captions.get(f.name, f.stem)
                figures.append(f'<figure><img alt="{esc(cap)}" src="{png_uri(data)}" width="640">'
                               f"<figcaption>{esc(cap)}</figcaption></figure>")
    if not figures:
        return '<p class="note">No metric rows to plot.</p>'
    return f'<div class="plots">{"".join(figures)}</div>'


def _run_metric_table(run: P.RunData) -> str:
    df = run.metrics
    if not len(df):
        return '<p class="note">No finished generation yet.</p>'
    last = int(df["generation"].max())
    rows = []
    for metric in dict.fromkeys(df["metric"].tolist()):
        m = df[df["metric"] == metric]
        direction, target = P.metric_info([run], metric)
        v0 = m[m["generation"] == 0]["value"]
        vn = m[m["generation"] == last]["value"]
        rows.append((esc(metric), esc(_direction(direction, target)),
                     esc(P.fmt(v0.iloc[0]) if len(v0) else "-"), esc(P.fmt(vn.iloc[0]) if len(vn) else "-")))
    return _table(["metric", "direction", "generation 0", f"generation {last}"], rows, numeric=(2, 3))


def _band_cell(band: P.Band) -> str:
    if band.n == 0:
        text = "nan" if not band.dropped else f"none finite ({band.dropped})"
    elif band.n == 1:
        text = P.fmt(band.mean)
    else:
        text = f"{P.fmt(band.mean)} [{P.fmt(band.lo)}, {P.fmt(band.hi)}]"
    if band.dropped and band.n:
        text += f" ({band.dropped} non-finite left out)"
    return esc(text)


def _track_metric_table(track_runs: Sequence[P.RunData], metrics: Sequence[str] | None) -> str:
    entries = P.by_entry(track_runs)
    last = max(r.done for r in track_runs) - 1
    if last < 0:
        return '<p class="note">No finished generation yet.</p>'
    rows = []
    for metric in P.metric_names(track_runs, metrics):
        direction, target = P.metric_info(track_runs, metric)
        for runs in entries.values():
            gens, bands = P.trajectory(runs, metric)
            at = dict(zip(gens, bands))
            first = at.get(0)
            final = at.get(last)
            rows.append((esc(metric), esc(_direction(direction, target)), esc(runs[0].label), str(len(runs)),
                         _band_cell(first) if first else "-", _band_cell(final) if final else "-"))
    return _table(["metric", "direction", "entry", "seeds", "generation 0: mean [95% t band]",
                   f"generation {last}: mean [95% t band]"], rows, numeric=(3, 4, 5))


# -- samples ------------------------------------------------------------------------------------


def _read_rows(path: Path, columns: Sequence[str], n: int) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    names = pq.read_schema(path).names
    return pq.read_table(path, columns=[c for c in columns if c in names]).slice(0, n).to_pylist()


def _text_samples(run: P.RunData, n: int) -> str:
    """A few prompts and the continuation each generation wrote for them, with its per-token
    NLL under M_0."""
    done = R.finished_generations(run.path)
    per_gen = []
    for k in range(done):
        try:
            per_gen.append(_read_rows(P.samples_path(run, k),
                                      ["column.prompt", "column.text", "loglik_reference", "units"], n))
        except Exception as exc:
            warnings.warn(f"skipping samples of {run.path} generation {k}: {exc}", stacklevel=2)
            per_gen.append([])
    count = max((len(rows) for rows in per_gen), default=0)
    parts = []
    for i in range(count):
        prompt = next((rows[i].get("column.prompt") for rows in per_gen if len(rows) > i), None)
        body = []
        for k, rows in enumerate(per_gen):
            if len(rows) <= i:
                continue
            row = rows[i]
            nll = "-"
            if row.get("loglik_reference") is not None and (row.get("units") or 0) > 0:
                nll = P.fmt(-row["loglik_reference"] / row["units"])
            text = row.get("column.text")
            own = row.get("column.prompt")
            cell = esc("" if text is None else text)
            if own is not None and own != prompt:
                cell = f'<span class="note">prompt: {esc(own)}</span><br>{cell}'
            body.append((str(k), f'<span class="text">{cell}</span>', esc(nll)))
        head = (f"<p><b>Prompt {i}</b> (real block): <span class=\"text\">{esc(prompt)}</span></p>"
                if prompt is not None else f"<p><b>Sample {i}</b></p>")
        parts.append(head + _table(["generation", "continuation (drawn by M_k)", "NLL per token under M_0"],
                                   body, numeric=(0, 2)))
    return "".join(parts) or '<p class="note">No text samples.</p>'


def _fig_png(draw, width: float = 6.4, height: float = 4.0) -> bytes:
    fig, axes = P._figure(width, height)
    draw(fig, axes[0, 0])
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=P.DPI)
    return buf.getvalue()


def vector_scatter_png(first: np.ndarray, last: np.ndarray, last_k: int, title: str = "") -> bytes:
    """Generation-0 samples against the last generation's: a scatter of the first two
    dimensions, or overlaid histograms for one-dimensional samples."""
    a = np.asarray(first, dtype=np.float64).reshape(len(first), -1)[:SCATTER_POINTS]
    b = np.asarray(last, dtype=np.float64).reshape(len(last), -1)[:SCATTER_POINTS]

    def draw(fig, ax):
        if a.shape[1] >= 2 and b.shape[1] >= 2:
            ax.scatter(a[:, 0], a[:, 1], s=8, alpha=0.5, label="generation 0 (drawn by M_0)")
            ax.scatter(b[:, 0], b[:, 1], s=8, alpha=0.5, label=f"generation {last_k} (drawn by M_{last_k})")
            ax.set_xlabel("dimension 0")
            ax.set_ylabel("dimension 1")
        else:
            both = np.concatenate([a[:, 0], b[:, 0]])
            edges = np.histogram_bin_edges(both[np.isfinite(both)], bins=30)
            ax.hist(a[:, 0], bins=edges, histtype="step", label="generation 0")
            ax.hist(b[:, 0], bins=edges, histtype="step", label=f"generation {last_k}")
            ax.set_xlabel("value")
        ax.set_title(P.mpl_text(title), fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)

    return _fig_png(draw)


def category_png(first: np.ndarray, last: np.ndarray, last_k: int, title: str = "") -> bytes:
    """Category frequencies of generation 0 against the last generation."""
    cats = sorted(set(np.asarray(first).tolist()) | set(np.asarray(last).tolist()), key=str)[:60]

    def draw(fig, ax):
        x = np.arange(len(cats))
        for off, data, label in ((-0.2, first, "generation 0"), (0.2, last, f"generation {last_k}")):
            values = np.asarray(data).tolist()
            share = [values.count(c) / max(len(values), 1) for c in cats]
            ax.bar(x + off, share, width=0.4, label=label)
        ax.set_xticks(x, [P.mpl_text(c) for c in cats], fontsize=7, rotation=90 if len(cats) > 12 else 0)
        ax.set_ylabel("share of samples")
        ax.set_title(P.mpl_text(title), fontsize=10)
        ax.legend(fontsize=8)

    return _fig_png(draw)


def image_grid_png(images: np.ndarray, columns: int = 8, limit: int = GRID_IMAGES) -> bytes:
    """A grid of the first ``limit`` images, the hook for samples of kind ``images``. Accepts
    (n, H, W), (n, H, W, C) and (n, C, H, W) with C in 1, 3, 4; values are scaled to [0, 1]
    per grid (min-max) for display."""
    x = np.asarray(images, dtype=np.float64)[:limit]
    if x.ndim == 4 and x.shape[1] in (1, 3, 4) and x.shape[-1] not in (1, 3, 4):
        x = np.moveaxis(x, 1, -1)
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim not in (3, 4) or len(x) == 0:
        raise BenchError(f"cannot draw images of shape {tuple(np.shape(images))}: expected (n, H, W), "
                         "(n, H, W, C) or (n, C, H, W)")
    finite = x[np.isfinite(x)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    x = np.clip((np.nan_to_num(x, nan=lo) - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    n = len(x)
    cols = min(columns, n)
    rows = math.ceil(n / cols)
    fig, axes = P._figure(1.2 * cols, 1.2 * rows, cols, rows)
    for i, ax in enumerate(axes.ravel()):
        ax.set_axis_off()
        if i < n:
            ax.imshow(x[i], cmap="gray" if x.ndim == 3 else None, vmin=0, vmax=1, interpolation="nearest")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=P.DPI)
    return buf.getvalue()


def _samples_html(run: P.RunData, prompts: int = PROMPTS) -> str:
    """The samples section of one run, by sample kind."""
    done = R.finished_generations(run.path)
    if done == 0:
        return '<p class="note">No finished generation yet.</p>'
    kind, names = P.samples_kind(P.samples_path(run, 0))
    if kind is None:
        return '<p class="note">No readable samples.</p>'
    if "column.text" in names:
        return _text_samples(run, prompts)
    last = done - 1
    try:
        first, _ = R.read_samples(P.samples_path(run, 0))
        final, _ = R.read_samples(P.samples_path(run, last))
    except Exception as exc:
        warnings.warn(f"skipping samples of {run.path}: {exc}", stacklevel=2)
        return '<p class="note">Samples could not be read.</p>'
    title = f"{run.label}, seed {run.seed}"
    if kind == "vectors":
        png = vector_scatter_png(first.data, final.data, last, title)
        cap = f"samples drawn by M_0 and by M_{last}"
    elif kind == "categorical":
        png = category_png(first.data, final.data, last, title)
        cap = f"category shares of the samples drawn by M_0 and by M_{last}"
    elif kind == "images":
        grids = []
        for k, s in ((0, first), (last, final)):
            cap = f"images drawn by M_{k}"
            grids.append(f'<figure><img alt="{esc(cap)}" src="{png_uri(image_grid_png(s.data))}">'
                         f"<figcaption>{esc(cap)}</figcaption></figure>")
        return f'<div class="plots">{"".join(grids)}</div>'
    else:
        return f'<p class="note">No view for samples of kind {esc(kind)}.</p>'
    return (f'<figure><img alt="{esc(cap)}" src="{png_uri(png)}" width="640">'
            f"<figcaption>{esc(cap)}</figcaption></figure>")


# -- pages --------------------------------------------------------------------------------------


def _page(title: str, body: str, sources: Sequence[Path]) -> str:
    src = ", ".join(str(p) for p in sources)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{esc(title)}</title><style>{STYLE}</style></head>\n<body>\n"
        f"<h1>{esc(title)}</h1>\n{body}\n"
        f"<footer>Made by collapse-bench {esc(bench.__version__)} from {esc(src)}.</footer>\n</body></html>\n"
    )


def run_page(run: P.RunData, metrics: Sequence[str] | None = None) -> str:
    """The HTML page of one run."""
    info, spec = run.info, run.spec
    meta = _table(None, [
        ("run folder", esc(run.path.name)),
        ("status", _status(info)),
        ("generations", esc(f"{R.finished_generations(run.path)} finished of 0..{info.get('generations_requested', '?')}")),
        ("track", esc(f"{run.track_name} ({run.track_id})")),
        ("policy", esc(run.policy)),
        ("run id", esc(info.get("run_id", "-"))),
    ] + ([("error", f"<pre>{esc(info['error'])}</pre>")] if info.get("error") else []))
    body = [
        f"<p>{esc(spec.get('plugin'))} / {esc(spec.get('preset'))}, policy {esc(run.policy)}, seed {esc(run.seed)}</p>",
        meta,
        "<h2>Spec</h2>", _spec_table(_spec_rows(spec)),
        "<h2>Metrics</h2>", _run_metric_table(run),
        "<h2>Plots</h2>", _plots_html([run], metrics) if run.done else '<p class="note">Nothing to plot yet.</p>',
        "<h2>Samples</h2>", _samples_html(run),
    ]
    return _page(f"collapse-bench run {run.path.name}", "\n".join(body), [run.path])


def track_page(track_runs: Sequence[P.RunData], metrics: Sequence[str] | None = None) -> str:
    """The HTML page of one track: its entries, their seed-averaged metrics, plots and samples."""
    entries = P.by_entry(track_runs)
    first = track_runs[0]
    flat = [dict(_spec_rows(rs[0].spec)) for rs in entries.values()]
    common = [k for k in flat[0] if all(f.get(k) == flat[0][k] for f in flat) and k != "seed"]
    entry_rows = []
    for runs in entries.values():
        entry_rows.append((esc(runs[0].label), esc(", ".join(str(r.seed) for r in runs)),
                           "<br>".join(f"{esc(r.path.name)}: {_status(r.info)}" for r in runs)))
    body = [
        f"<p>track {esc(first.track_name)} ({esc(first.track_id)}): {len(entries)} entr"
        f"{'y' if len(entries) == 1 else 'ies'}, {len(track_runs)} run(s)</p>",
        "<h2>Entries</h2>", _table(["entry", "seeds", "runs"], entry_rows),
        "<h2>Spec shared by the entries</h2>", _spec_table(_spec_rows(first.spec, common)),
        "<h2>Metrics</h2>",
        '<p class="note">Mean over seeds with a 95% Student-t band; non-finite values are left out '
        "and counted.</p>", _track_metric_table(track_runs, metrics),
        "<h2>Plots</h2>", _plots_html(track_runs, metrics),
        "<h2>Samples</h2>",
    ]
    for runs in entries.values():
        r = runs[0]
        body.append(f"<h3>{esc(r.label)}, seed {esc(r.seed)}</h3>{_samples_html(r, TRACK_PROMPTS)}")
    return _page(f"collapse-bench track {first.track_name}", "\n".join(body), sorted({r.path.parent for r in track_runs}))


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def report(paths: Iterable[str | Path] | str | Path, out: str | Path = "reports", per: str = "run",
           metrics: Sequence[str] | None = None) -> list[Path]:
    """Write one self-contained HTML page per run (``per="run"``, named after the run folder) or
    per track (``per="track"``, ``<track>-<id>.html``) under ``out``; return the files.
    ``metrics`` limits the plots and the track tables as in :func:`bench.plots.plot`."""
    if per not in ("run", "track"):
        raise BenchError(f"per={per!r}: use 'run' (one page per run folder) or 'track' (one per track)")
    runs = P.load_runs(paths)
    if not runs:
        raise BenchError("no readable runs (see the warnings above)")
    metrics = P.check_metrics(runs, metrics)
    out = Path(out)
    written = []
    used: set[str] = set()
    if per == "run":
        for run in runs:
            written.append(_write(out / f"{P.slug(run.path.name, used)}.html", run_page(run, metrics)))
    else:
        for track_runs in P.by_track(runs).values():
            written.append(_write(out / f"{P.slug(P.track_folder(track_runs), used)}.html",
                                  track_page(track_runs, metrics)))
    return written
