"""Self-contained HTML reports of run folders, one page per run or per track (docs/reports.md).

A page holds the spec and status, a metric table (generation 0 and the last generation, with
each metric's direction and, for a run reproducing a paper experiment, the paper's figures),
every plot of :mod:`bench.plots` as a base64 PNG, and samples: text
continuations of a few prompts across generations, a scatter of generation-0 against
last-generation vectors, or an image grid. It loads nothing from outside (no scripts, fonts or
CDN; a Content-Security-Policy forbids them). The pages are the templates ``report_run.html`` and
``report_track.html`` of :mod:`bench.pages` (the stylesheet every page shares; autoescape, so a
plugin name like ``<script>`` shows as text); this module gathers what they show.
"""

from __future__ import annotations

import io
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

import bench
from bench import pages
from bench import plots as P
from bench import references as REF
from bench import results as R
from bench import runfolder as RF
from bench.errors import BenchError
from bench.images import image_grid
from bench.pages import png_uri  # noqa: F401 (kept importable from here)

PROMPTS = 3          # text samples followed across generations, per run
TRACK_PROMPTS = 2    # per entry on a track page
SCATTER_POINTS = 2000
GRID_IMAGES = 32

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


# -- page pieces --------------------------------------------------------------------------------


def _direction(direction: str, target: float | None) -> str:
    return f"target {P.fmt(target)}" if direction == "target" and target is not None else direction


def _table(header: Sequence[str] | None, rows: Iterable[Sequence[str]], numeric: Sequence[int] = ()) -> dict[str, Any]:
    """A table for the template's ``table`` macro (no header row when ``header`` is None)."""
    return {"header": list(header or []), "rows": [list(r) for r in rows], "numeric": list(numeric)}


def _note(text: str) -> dict[str, str]:
    return {"note": text}


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


def _spec_table(rows: list[tuple[str, str]]) -> dict[str, Any]:
    return _table(["spec", "value"], rows)


def _status(info: dict[str, Any]) -> dict[str, str]:
    status = str(info.get("status", "unknown"))
    return {"text": status, "slug": P.slug(status)}


def _plots(track_runs: Sequence[P.RunData], metrics: Sequence[str] | None) -> dict[str, Any]:
    """Every plot of the runs, drawn into a temporary folder and embedded as data URIs."""
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        files = P.plot_track(track_runs, Path(tmp), metrics)
        captions = {name: m for m, name in P.metric_files(P.metric_names(track_runs, metrics)).items()}
        figures = []
        for f in files:
            data = f.read_bytes()
            if f.stem == "figure1":
                cap = ("Figure 1: left, per-block perplexity under M_0 of the data each generation drew "
                       "(log x, one outline per generation); right, test perplexity per generation. "
                       + P.figure1_note(track_runs))
                figures.insert(0, {"caption": cap, "uri": png_uri(data), "wide": True, "width": None})
            else:
                figures.append({"caption": captions.get(f.name, f.stem), "uri": png_uri(data), "wide": False,
                                "width": 640})
    if not figures:
        return _note("No metric rows to plot.")
    return {"figures": figures, "wrap": True}


PAPER_COLUMN = "paper's figures"


def _paper_cell(refs: Sequence[Any], row: str) -> str:
    """The paper's figures for metric row ``row``, one ``paper: ...`` each, or ``-``."""
    return "; ".join(REF.describe(r) for r in REF.for_row(refs, row)) or "-"


def _run_metric_table(run: P.RunData) -> dict[str, Any]:
    """Each metric row at generation 0 and the last, with the paper's figures beside them when
    the run reproduces a paper experiment."""
    df = run.metrics
    if not len(df):
        return _note("No finished generation yet.")
    last = int(df["generation"].max())
    rows = []
    for metric in dict.fromkeys(df["metric"].tolist()):
        m = df[df["metric"] == metric]
        direction, target = P.metric_info([run], metric)
        v0 = m[m["generation"] == 0]["value"]
        vn = m[m["generation"] == last]["value"]
        rows.append((metric, _direction(direction, target),
                     P.fmt(v0.iloc[0]) if len(v0) else "-", P.fmt(vn.iloc[0]) if len(vn) else "-")
                    + ((_paper_cell(run.references, metric),) if run.references else ()))
    header = ["metric", "direction", "generation 0", f"generation {last}"]
    return _table(header + ([PAPER_COLUMN] if run.references else []), rows, numeric=(2, 3))


def _band_cell(band: P.Band) -> str:
    if band.n == 0:
        text = "nan" if not band.dropped else f"none finite ({band.dropped})"
    elif band.n == 1:
        text = P.fmt(band.mean)
    else:
        text = f"{P.fmt(band.mean)} [{P.fmt(band.lo)}, {P.fmt(band.hi)}]"
    if band.dropped and band.n:
        text += f" ({band.dropped} non-finite left out)"
    return text


def _track_metric_table(track_runs: Sequence[P.RunData], metrics: Sequence[str] | None) -> dict[str, Any]:
    entries = P.by_entry(track_runs)
    last = max(r.done for r in track_runs) - 1
    if last < 0:
        return _note("No finished generation yet.")
    rows = []
    papers = any(r.references for r in track_runs)
    for metric in P.metric_names(track_runs, metrics):
        direction, target = P.metric_info(track_runs, metric)
        floor = P.never_negative(track_runs, metric)
        for runs in entries.values():
            gens, bands = P.trajectory(runs, metric)
            at = {g: P.floor_band(b) if floor else b for g, b in zip(gens, bands)}
            first = at.get(0)
            final = at.get(last)
            rows.append((metric, _direction(direction, target), runs[0].label, str(len(runs)),
                         _band_cell(first) if first else "-", _band_cell(final) if final else "-")
                        + ((_paper_cell(runs[0].references, metric),) if papers else ()))
    header = ["metric", "direction", "entry", "seeds", "generation 0: mean [95% t band]",
              f"generation {last}: mean [95% t band]"]
    return _table(header + ([PAPER_COLUMN] if papers else []), rows, numeric=(3, 4, 5))


# -- samples ------------------------------------------------------------------------------------


def _read_rows(run: P.RunData, k: int, columns: Sequence[str], n: int) -> list[dict[str, Any]]:
    return RF.generation_table(run.path, k, columns).slice(0, n).to_pylist()


def _text_samples(run: P.RunData, n: int) -> dict[str, Any]:
    """A few prompts and the continuation each generation wrote for them, with its per-token
    NLL under M_0."""
    done = R.finished_generations(run.path)
    per_gen = []
    for k in range(done):
        try:
            per_gen.append(_read_rows(run, k, ["column.prompt", "column.text", "loglik_reference", "units"], n))
        except Exception as exc:  # noqa: BLE001 - a damaged file: named, and the page goes on
            warnings.warn(f"skipping samples of generation {k}: {P.samples_path(run, k)}: {exc}", stacklevel=2)
            per_gen.append([])
    count = max((len(rows) for rows in per_gen), default=0)
    prompts = []
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
            body.append({"generation": k, "text": "" if text is None else text, "nll": nll,
                         "own_prompt": own if own is not None and own != prompt else None})
        prompts.append({"index": i, "prompt": prompt, "rows": body})
    return {"prompts": prompts}


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
    per grid (min-max) for display (:func:`bench.images.image_grid`)."""
    return image_grid(images, columns=columns, stretch=True, limit=limit)


def _samples(run: P.RunData, prompts: int = PROMPTS) -> dict[str, Any]:
    """The samples section of one run, by sample kind."""
    done = R.finished_generations(run.path)
    if done == 0:
        return _note("No finished generation yet.")
    kind, names = P.samples_kind(P.samples_path(run, 0))
    if kind is None:
        return _note("No readable samples.")
    if "column.text" in names:
        return _text_samples(run, prompts)
    last = done - 1
    try:
        first, _ = RF.generation_samples(run.path, 0)
        final, _ = RF.generation_samples(run.path, last)
    except BenchError as exc:  # names the damaged file
        warnings.warn(f"skipping the samples of {run.path.name}: {exc}", stacklevel=2)
        return _note("Samples could not be read.")
    title = f"{run.label}, seed {run.seed}"
    if kind == "vectors":
        png = vector_scatter_png(first.data, final.data, last, title)
        cap = f"samples drawn by M_0 and by M_{last}"
    elif kind == "categorical":
        png = category_png(first.data, final.data, last, title)
        cap = f"category shares of the samples drawn by M_0 and by M_{last}"
    elif kind == "images":
        grids = [{"caption": f"images drawn by M_{k}", "uri": png_uri(image_grid_png(s.data)), "wide": False,
                  "width": None} for k, s in ((0, first), (last, final))]
        return {"figures": grids, "wrap": True}
    else:
        return _note(f"No view for samples of kind {kind}.")
    return {"figures": [{"caption": cap, "uri": png_uri(png), "wide": False, "width": 640}], "wrap": False}


# -- pages --------------------------------------------------------------------------------------


def _sources(paths: Sequence[Path]) -> str:
    return ", ".join(str(p) for p in paths)


def run_page(run: P.RunData, metrics: Sequence[str] | None = None) -> str:
    """The HTML page of one run."""
    info, spec = run.info, run.spec
    return pages.render(
        "report_run.html", title=f"collapse-bench run {run.path.name}", csp=CSP, version=bench.__version__,
        sources=_sources([run.path]), plugin=spec.get("plugin"), preset=spec.get("preset"), policy=run.policy,
        seed=run.seed, folder=run.path.name, status=_status(info),
        generations=f"{R.finished_generations(run.path)} finished of 0..{info.get('generations_requested', '?')}",
        track=f"{run.track_name} ({run.track_id})", run_id=info.get("run_id", "-"), error=info.get("error") or "",
        spec=_spec_table(_spec_rows(spec)), metrics=_run_metric_table(run),
        plots=_plots([run], metrics) if run.done else _note("Nothing to plot yet."), samples=_samples(run))


def track_page(track_runs: Sequence[P.RunData], metrics: Sequence[str] | None = None) -> str:
    """The HTML page of one track: its entries, their seed-averaged metrics, plots and samples."""
    entries = P.by_entry(track_runs)
    first = track_runs[0]
    flat = [dict(_spec_rows(rs[0].spec)) for rs in entries.values()]
    common = [k for k in flat[0] if all(f.get(k) == flat[0][k] for f in flat) and k != "seed"]
    shown = [{"label": runs[0].label, "seed": runs[0].seed, "seeds": ", ".join(str(r.seed) for r in runs),
              "runs": [(r.path.name, _status(r.info)) for r in runs], "samples": _samples(runs[0], TRACK_PROMPTS)}
             for runs in entries.values()]
    return pages.render(
        "report_track.html", title=f"collapse-bench track {first.track_name}", csp=CSP, version=bench.__version__,
        sources=_sources(sorted({r.path.parent for r in track_runs})), track_name=first.track_name,
        track_id=first.track_id, entries=shown, n_runs=len(track_runs),
        spec=_spec_table(_spec_rows(first.spec, common)), metrics=_track_metric_table(track_runs, metrics),
        plots=_plots(track_runs, metrics))


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    R.write_text(path, text)
    return path


def report(paths: Iterable[str | Path] | str | Path, out: str | Path = "reports", per: str = "run",
           metrics: Sequence[str] | None = None, bench: Any = None) -> list[Path]:
    """Write one self-contained HTML page per run (``per="run"``, named after the run folder) or
    per track (``per="track"``, ``<track>-<id>.html``) under ``out``; return the files.
    ``metrics`` limits the plots and the track tables as in :func:`bench.plots.plot`; ``bench``
    declares the paper's references (default: the installed plugins)."""
    if per not in ("run", "track"):
        raise BenchError(f"per={per!r}: use 'run' (one page per run folder) or 'track' (one per track)")
    runs = P.load_runs(paths, bench)
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
