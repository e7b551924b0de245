"""Plots of run folders: metric trajectories over generations with seed bands, and the paper's
Figure 1 for language-model runs (see docs/reports.md).

Runs are grouped as a leaderboard groups them (:mod:`bench.grouping`): by track (run.json
``track``), then into entries, the runs whose specs differ only in seed. Each entry is drawn as
the mean over its seeds with a 95% Student-t band (:func:`seed_band`), clipped at 0 for metrics that
are never negative. Runs that reproduce a paper experiment (:func:`bench.references.for_spec`)
get the paper's figures as labelled reference marks. matplotlib is imported inside the functions
and drawn through the Agg canvas, so importing this module costs nothing and never touches a
display.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from bench import references as REF
from bench import results as R
from bench import runfolder as RF
from bench.components import Reference
from bench.errors import BenchError
from bench.grouping import CONFIDENCE, entry_key, entry_labels, join_tracks, seed_order, summarize

THROUGHPUT = "throughput/"
TEST_PERPLEXITY = "test-perplexity"
HIST_BINS = 40
DPI = 100
LOG_SPAN = 50        # plotted means all positive and spanning more than this factor: log y axis
MARKER_LIMIT = 50    # more generations than this: lines without markers
LOG_TICKS = 6        # at most this many labelled ticks on a log axis
REFERENCE_COLOR = "black"


# -- the numbers the plots show -------------------------------------------------------------------


def block_perplexity(loglik: Sequence[float], units: Sequence[float]) -> np.ndarray:
    """Per-sample perplexity exp(-loglik / units): for a generated block, its perplexity under
    the model that scored it (M_0 for ``loglik_reference``). NaN where units <= 0 or an input is
    missing; +inf where the log-likelihood is -inf."""
    ll = np.asarray(loglik, dtype=np.float64)
    u = np.asarray(units, dtype=np.float64)
    out = np.full(np.broadcast(ll, u).shape, np.nan)
    ok = (u > 0) & ~np.isnan(ll)
    with np.errstate(over="ignore", invalid="ignore"):
        out[ok] = np.exp(-ll[ok] / u[ok])
    return out


@dataclass(frozen=True)
class Band:
    """Mean over seeds with a 95% t interval; ``n`` counts the finite values used, ``dropped``
    the non-finite ones left out."""

    mean: float
    lo: float
    hi: float
    n: int
    dropped: int = 0


def seed_band(values: Iterable[float], level: float = CONFIDENCE) -> Band:
    """Mean of the finite values and its two-sided t interval, mean -/+ t_{(1+level)/2, n-1} *
    s / sqrt(n) with s the sample standard deviation (ddof 1), as the leaderboard computes it
    (:func:`bench.grouping.summarize`). One value: no interval (NaN bounds). Non-finite values (a
    collapsed model's inf perplexity, an undefined NaN) are left out and counted in ``dropped``;
    none finite gives a NaN mean (a gap in the line)."""
    v = np.asarray(list(values), dtype=np.float64)
    finite = v[np.isfinite(v)]
    mean, lo, hi = summarize(finite, level)
    return Band(float(mean), float(lo), float(hi), int(finite.size), int(v.size - finite.size))


def floor_band(band: Band, floor: float = 0.0) -> Band:
    """The band with its lower bound raised to ``floor``: a t interval is symmetric, so for a
    metric that cannot go below 0 (a distance, a perplexity, a share) it reaches below 0 when
    the seeds disagree; that part holds no possible value and is cut off."""
    if math.isnan(band.lo) or band.lo >= floor:
        return band
    return dataclasses.replace(band, lo=floor)


def wants_log(values: Iterable[float], span: float = LOG_SPAN) -> bool:
    """Whether values belong on a log axis: the finite ones all positive and the largest more
    than ``span`` times the smallest (a GMM's test perplexity runs from 4 to 1e307)."""
    v = np.asarray(list(values), dtype=np.float64)
    v = v[np.isfinite(v)]
    return bool(v.size) and bool((v > 0).all()) and float(v.max()) > span * float(v.min())


def proportions(values: Sequence[float], edges: Sequence[float]) -> np.ndarray:
    """Share of the finite values in each bin (a histogram normalised to sum 1 over the values
    that fall in the bins, so generations of different sizes compare)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    counts, _ = np.histogram(v, bins=np.asarray(edges, dtype=np.float64))
    total = counts.sum()
    return counts / total if total else counts.astype(np.float64)


def log_edges(values: Sequence[float], bins: int = HIST_BINS) -> np.ndarray:
    """Log-spaced bin edges over the finite positive values (one decade around a single value)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v) & (v > 0)]
    if v.size == 0:
        return np.logspace(0, 1, bins + 1)
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo * (1 + 1e-9):
        lo, hi = lo / math.sqrt(10), hi * math.sqrt(10)
    return np.logspace(math.log10(lo), math.log10(hi), bins + 1)


def fmt(value: Any) -> str:
    """A metric value as the tables print it: 4 significant digits; inf, -inf, nan spelled out."""
    if value is None:
        return "-"
    v = float(value)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.4g}"


def slug(text: str, used: set[str] | None = None) -> str:
    """A file-name-safe form of ``text`` (letters, digits, ``.``, ``_``, ``-``; at most 80 chars);
    a short hash of the original is appended where the slug is empty, was cut, or collides
    with one in ``used`` (which it joins)."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-.")
    tag = hashlib.sha256(str(text).encode()).hexdigest()[:8]
    if not s or len(s) > 80:
        s = f"{s[:70].strip('-.')}-{tag}".strip("-")
    if used is not None:
        if s in used:
            s = f"{s}-{tag}"
        used.add(s)
    return s


def mpl_text(text: Any) -> str:
    """A string from results made safe for matplotlib, which would read ``$...$`` as math (and
    fail to draw a bad expression): every ``$`` is escaped, so the text shows as written."""
    return str(text).replace("$", r"\$")


# -- reading runs -------------------------------------------------------------------------------


@dataclass
class RunData:
    """One readable run folder: run.json, its metrics (pandas), its place in a track, and the
    paper's figures for its experiment (empty unless it reproduces one)."""

    path: Path
    info: dict[str, Any]
    metrics: Any
    track_id: str
    track_name: str
    entry: str
    label: str = ""
    extras: dict[str, Any] = field(default_factory=dict)
    references: tuple[Reference, ...] = ()

    @property
    def spec(self) -> dict[str, Any]:
        return self.info["spec"]

    @property
    def policy(self) -> str:
        return str(self.info.get("identity", {}).get("policy", self.spec.get("policy")))

    @property
    def seed(self) -> Any:
        return self.spec.get("seed")

    @property
    def done(self) -> int:
        return int(self.metrics["generation"].max()) + 1 if len(self.metrics) else 0


def track_of(info: dict[str, Any]) -> tuple[str, str]:
    """(track id, track name) from run.json; older files without ``track`` get the harness's
    hash (:func:`bench.runfolder.track_of`, the one track-id formula)."""
    return RF.track_of(info)


def load_runs(paths: Iterable[str | Path], bench: Any = None) -> list[RunData]:
    """Readable runs at or below ``paths`` with entry labels and references set; a run whose
    run.json or metrics cannot be read is named in a warning and skipped. No run folder at all is
    an error. ``bench`` (a :class:`bench.plugins.Bench`) declares the references; without it the
    installed plugins are loaded."""
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    for p in paths:
        if not p.exists():
            raise BenchError(f"{p} does not exist: give run folders or folders of runs (e.g. results/)")
    folders = list({f.resolve(): f for f in RF.find_runs(paths)}.values())  # each run once
    if not folders:
        raise BenchError("no run folders (folders holding run.json) at or below "
                         + ", ".join(str(p) for p in paths) + "; `bench run` makes them under results/")
    runs = []
    for folder in folders:
        try:
            run = RF.read_run_json(folder)
            if not isinstance(run.identity, dict):
                raise ValueError("run.json's identity is not an object")
            table = RF.read_metrics(folder).to_pandas()
            track = run.resolved_track()
        except Exception as exc:  # malformed input: name it and go on
            warnings.warn(f"skipping {folder}: {exc}", stacklevel=2)
            continue
        runs.append(RunData(folder, run.to_dict(), table, track["id"], track["name"], entry_key(run.spec)))
    # One track per protocol, joined exactly as the leaderboard joins them.
    for first, members in join_tracks([(r.track_id, r.entry, r.seed) for r in runs]):
        joined = runs[first].track_id
        for i in members:
            runs[i].track_id = joined
    for track_runs in by_track(runs).values():
        for r, label in zip(track_runs, entry_labels([(x.policy, x.spec) for x in track_runs])):
            r.label = label
    if runs:
        _set_references(runs, bench)
    return runs


def _set_references(runs: Sequence[RunData], bench: Any) -> None:
    """Each run's references (:func:`bench.references.for_spec`); a plugin set that cannot load
    is named in a warning and the marks are left off, the plots drawn."""
    if bench is None:
        from bench.plugins import Bench

        try:
            bench = Bench()
        except Exception as exc:  # a broken plugin must not stop the plots
            warnings.warn(f"reference marks left out: the plugins could not be loaded: {exc}", stacklevel=3)
            return
    for r in runs:
        try:
            r.references = REF.for_spec(bench, r.spec)
        except Exception:  # a spec the preset check cannot read is no reproduction of the paper
            r.references = ()


def track_references(track_runs: Sequence[RunData], row: str) -> list[Reference]:
    """The references drawn on metric row ``row``'s plot of a track: those of every entry that
    reproduces a paper experiment, each once."""
    refs = dict.fromkeys(ref for r in track_runs for ref in REF.for_row(r.references, row))
    return list(refs)


def by_track(runs: Sequence[RunData]) -> dict[str, list[RunData]]:
    """Runs by track id, in first-seen order."""
    out: dict[str, list[RunData]] = {}
    for r in runs:
        out.setdefault(r.track_id, []).append(r)
    return out


def by_entry(runs: Sequence[RunData]) -> dict[str, list[RunData]]:
    """Runs by entry (spec without seed), each list sorted by seed."""
    out: dict[str, list[RunData]] = {}
    for r in runs:
        out.setdefault(r.entry, []).append(r)
    return {e: sorted(rs, key=lambda r: seed_order(r.seed)) for e, rs in out.items()}


def metric_names(runs: Sequence[RunData], metrics: Sequence[str] | None = None) -> list[str]:
    """The metric row names of the runs, in first-seen order. ``metrics`` selects names (each
    covers ``name`` and ``name/<key>``); without it every row but ``throughput/...`` and the rows
    with no finite value in any run (a metric the data cannot give, e.g. the ``true-*`` text
    metrics on real data, whose rows are NaN): asked for by name, those are drawn too."""
    names: dict[str, None] = {}
    for r in runs:
        names.update(dict.fromkeys(r.metrics["metric"].tolist()))
    if metrics is None:
        finite: set[str] = set()
        for r in runs:
            values = np.asarray(r.metrics["value"], dtype=float)
            finite.update(r.metrics["metric"][np.isfinite(values)].tolist())
        return [n for n in names if not n.startswith(THROUGHPUT) and n in finite]
    return [n for n in names if any(n == m or n.startswith(m.rstrip("/") + "/") for m in metrics)]


def check_metrics(runs: Sequence[RunData], metrics: Sequence[str] | None) -> list[str] | None:
    """The asked metric names as a list; names no run has are warned about, and an error when
    none of them matches (it lists the names the runs have)."""
    if metrics is None:
        return None
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    unknown = [m for m in metrics if not metric_names(runs, [m])]
    if len(unknown) == len(metrics):
        raise BenchError(f"no metric rows named {', '.join(metrics)}; these runs have: "
                         + ", ".join(metric_names(runs, None)))
    for m in unknown:
        warnings.warn(f"no run has a metric named {m!r}; skipped", stacklevel=3)
    return metrics


def metric_info(runs: Sequence[RunData], metric: str) -> tuple[str, float | None]:
    """(direction, target) of a metric row name, from the first run that has it."""
    for r in runs:
        rows = r.metrics[r.metrics["metric"] == metric]
        if len(rows):
            target = rows["target"].iloc[0]
            return str(rows["direction"].iloc[0]), (None if target is None or np.isnan(target) else float(target))
    return "", None


def trajectory(runs: Sequence[RunData], metric: str) -> tuple[list[int], list[Band]]:
    """Generations and the seed band of ``metric`` at each, over the runs of one entry."""
    values: dict[int, list[float]] = {}
    for r in runs:
        rows = r.metrics[r.metrics["metric"] == metric]
        for g, v in zip(rows["generation"].tolist(), rows["value"].tolist()):
            values.setdefault(int(g), []).append(np.nan if v is None else float(v))
    gens = sorted(values)
    return gens, [seed_band(values[g]) for g in gens]


# -- language-model samples ---------------------------------------------------------------------


def samples_path(run: RunData | Path, k: int) -> Path:
    """The samples file holding generation k's samples (its own, or its chunk's)."""
    base = run.path if isinstance(run, RunData) else Path(run)
    unit = R.unit_of(base, k)
    return (unit[2] if unit else base / R.GENS_DIR / R.gen_name(k)) / "samples.parquet"


def samples_kind(path: Path) -> tuple[str | None, list[str]]:
    """(kind, column names) of a samples.parquet file from its schema alone; (None, []) when it
    is missing or unreadable."""
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except Exception:
        return None, []
    meta = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}
    return meta.get("collapse_bench.kind"), list(schema.names)


def is_lm_run(run: RunData) -> bool:
    """A run whose samples are token blocks scored under M_0 (``loglik_reference``, ``units``)."""
    kind, names = samples_kind(samples_path(run, 0))
    return kind == "tokens" and "loglik_reference" in names and "units" in names


def reference_perplexities(run: RunData, k: int) -> np.ndarray:
    """Per-block perplexity under M_0 of the samples generation k drew (empty when unreadable)."""
    path = samples_path(run, k)
    try:
        t = RF.generation_table(run.path, k, ["loglik_reference", "units"])
    except Exception as exc:
        warnings.warn(f"skipping samples {path}: {exc}", stacklevel=2)
        return np.empty(0)
    ll = t.column("loglik_reference").to_numpy(zero_copy_only=False)
    units = t.column("units").to_numpy(zero_copy_only=False)
    return block_perplexity(np.asarray(ll, dtype=np.float64), np.asarray(units, dtype=np.float64))


# -- drawing ------------------------------------------------------------------------------------


def _figure(width: float = 6.4, height: float = 4.0, ncols: int = 1, nrows: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def never_negative(runs: Sequence[RunData], metric: str) -> bool:
    """Whether every finite value of ``metric`` in the runs is >= 0 (every seed, every
    generation): such a metric's seed bands are cut at 0 (:func:`floor_band`)."""
    values = np.concatenate([np.asarray(r.metrics[r.metrics["metric"] == metric]["value"], dtype=np.float64)
                             for r in runs] or [np.empty(0)])
    values = values[np.isfinite(values)]
    return bool(values.size) and bool((values >= 0).all())


@dataclass
class Drawn:
    """What :func:`_draw_trajectories` drew: non-finite values left out, the generations
    plotted, the plotted means (for the choice of axis scale) and every plotted value, bands
    included (for a log axis's limits)."""

    dropped: int = 0
    first: int | None = None
    last: int | None = None
    means: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)


def _draw_trajectories(ax, entries: dict[str, list[RunData]], metric: str) -> Drawn:
    """Mean line and band per entry. Lines carry markers only up to :data:`MARKER_LIMIT`
    generations (thousands of markers would thicken them into a bar); bands of a metric that is
    never negative are cut at 0."""
    drawn = Drawn()
    floor = never_negative([r for rs in entries.values() for r in rs], metric)
    for color, runs in zip(_colors(len(entries)), entries.values()):
        gens, bands = trajectory(runs, metric)
        if not gens:
            continue
        if floor:
            bands = [floor_band(b) for b in bands]
        mean = np.array([b.mean for b in bands])
        lo = np.array([b.lo for b in bands])
        hi = np.array([b.hi for b in bands])
        drawn.dropped += sum(b.dropped for b in bands)
        drawn.first = gens[0] if drawn.first is None else min(drawn.first, gens[0])
        drawn.last = gens[-1] if drawn.last is None else max(drawn.last, gens[-1])
        drawn.means += mean.tolist()
        drawn.values += mean.tolist() + lo.tolist() + hi.tolist()
        marker = {"marker": "o", "ms": 3} if len(gens) <= MARKER_LIMIT else {}
        ax.plot(gens, mean, color=color, label=mpl_text(f"{runs[0].label} (n={len(runs)})"), **marker)
        if np.isfinite(lo).any():
            ax.fill_between(gens, lo, hi, color=color, alpha=0.2, linewidth=0)
    ax.set_xlabel("generation k (model M_k)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    return drawn


def _draw_references(ax, refs: Sequence[Reference], first: int | None, last: int | None) -> None:
    """The paper's figures as labelled marks, legend ``paper: ...``: a star at the generation
    the paper reports (a vertical bar for a range), a dashed level line (a band for a range)
    when it names no generation. A figure at a generation outside the plotted ones is not drawn;
    its legend line says so, so a short run does not hide what the paper reports later."""
    for ref in refs:
        label = REF.describe(ref)
        if ref.generation is None:
            if ref.high is None:
                ax.axhline(ref.value, color=REFERENCE_COLOR, linestyle="--", linewidth=1, label=mpl_text(label))
            else:
                ax.axhspan(ref.value, ref.high, color=REFERENCE_COLOR, alpha=0.12, linewidth=0,
                           label=mpl_text(label))
        elif first is not None and first <= ref.generation <= last:
            if ref.high is None:
                ax.plot([ref.generation], [ref.value], linestyle="none", marker="*", ms=11,
                        color=REFERENCE_COLOR, label=mpl_text(label))
            else:
                mid, half = (ref.value + ref.high) / 2, (ref.high - ref.value) / 2
                ax.errorbar([ref.generation], [mid], yerr=[[half], [half]], fmt="none", capsize=5,
                            elinewidth=2, color=REFERENCE_COLOR, label=mpl_text(label))
        else:
            ax.plot([], [], linestyle="none", label=mpl_text(f"{label}; not reached here, not drawn"))


def _save(fig, path: Path) -> Path:
    import io

    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    R.write_bytes(path, buf.getvalue())
    return path


def _log_y(ax, values: Sequence[float]) -> None:
    """A log y axis with limits from the positive finite values (a margin of 5% of the decades
    spanned, at most half a decade, and at most 1e308) and the ticks of :func:`_log_ticks`:
    matplotlib's own margin and ticks above a value near 1e307 overflow to inf. The limits are
    set before the scale turns logarithmic, so matplotlib never computes its own."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v) & (v > 0)]
    lo, hi = math.log10(float(v.min())), math.log10(float(v.max()))
    pad = min(0.05 * max(hi - lo, 1e-3), 0.5)
    bottom, top = 10.0 ** (lo - pad), 10.0 ** min(hi + pad, 308.0)
    ax.set_ylim(bottom, top)
    ax.set_yscale("log")
    _log_ticks(ax, bottom, top, axis="y")


def _finish_axis(ax, drawn: Drawn, refs: Sequence[Reference]) -> None:
    """Reference marks, the y scale (log when the means span more than :data:`LOG_SPAN`), the
    note on left-out values and the legend."""
    _draw_references(ax, refs, drawn.first, drawn.last)
    if wants_log(drawn.means):
        _log_y(ax, drawn.values + [r.value for r in refs] + [r.high for r in refs if r.high is not None])
    if drawn.dropped:
        ax.annotate(f"{drawn.dropped} non-finite value(s) left out", (0.01, 0.01), xycoords="axes fraction",
                    fontsize=8, color="0.4")
    if refs:  # the paper's labels are long: the legend goes under the axes, one line each
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.2), borderaxespad=0.0)
    elif ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def draw_metric(track_runs: Sequence[RunData], metric: str):
    """The matplotlib Figure of :func:`plot_metric`."""
    direction, target = metric_info(track_runs, metric)
    entries = by_entry(track_runs)
    refs = track_references(track_runs, metric)
    lines = len(entries) + len(refs) + (target is not None)
    fig, axes = _figure(height=4.0 + (0.4 + 0.15 * lines if refs else 0.0))
    ax = axes[0, 0]
    drawn = _draw_trajectories(ax, entries, metric)
    if target is not None:
        ax.axhline(target, color="0.3", linestyle="--", linewidth=1, label=f"target {fmt(target)}")
    note = {"higher": "higher is better", "lower": "lower is better",
            "target": "nearer the target is better"}.get(direction, direction)
    title = f"{track_runs[0].track_name}: {metric} ({note})"
    ax.set_title(mpl_text(title), fontsize=10)
    ax.set_ylabel(mpl_text(metric) + (" (log scale)" if wants_log(drawn.means) else ""))
    _finish_axis(ax, drawn, refs)
    return fig


def plot_metric(track_runs: Sequence[RunData], metric: str, path: Path) -> Path:
    """One metric's trajectory for every entry of a track, with 95% t seed bands (cut at 0 for
    metrics that are never negative), a log y axis for values spanning more than a factor
    :data:`LOG_SPAN`, and the paper's figures where the runs reproduce its experiment."""
    return _save(draw_metric(track_runs, metric), path)


def decoding(spec: dict[str, Any]) -> str | None:
    """How a language-model run wrote its samples, from its ``do_sample`` and ``num_beams``
    parameters: ``"beam"`` (beam search or greedy: the paper's decoding), ``"sampling"``, or None
    when the spec does not say."""
    params = spec.get("params") or {}
    if "do_sample" not in params and "num_beams" not in params:
        return None
    return "sampling" if params.get("do_sample") else "beam"


FIGURE1_NOTES = {
    "beam": ("decoded by beam search, as in the paper: each model writes what it finds most likely, so "
             "collapse piles blocks up at low perplexity under M_0, with a growing tail of high-perplexity "
             "blocks"),
    "sampling": ("decoded by sampling, unlike the paper: each model draws from its whole distribution, errors "
                 "included, so as M_k drifts from M_0 the blocks move to higher perplexity; the paper's pile-up "
                 "at low perplexity comes from beam search (do_sample=false, num_beams=5)"),
    None: ("beam search (the paper's decoding) piles collapsed generations up at low perplexity under M_0; "
           "sampling moves them to higher perplexity"),
}


def figure1_note(track_runs: Sequence[RunData]) -> str:
    """What the histograms of Figure 1 should show for these runs' decoding (one clause per
    decoding among the entries, labelled when they differ)."""
    entries = by_entry(track_runs)
    kinds = {e: decoding(rs[0].spec) for e, rs in entries.items()}
    if len(set(kinds.values())) == 1:
        note = FIGURE1_NOTES[next(iter(kinds.values()))]
        return note[0].upper() + note[1:] + "."
    parts = []
    for kind in dict.fromkeys(kinds.values()):
        labels = ", ".join(entries[e][0].label for e, k in kinds.items() if k == kind)
        parts.append(f"{labels}: {FIGURE1_NOTES[kind]}")
    return "; ".join(parts) + "."


def _log_ticks(ax, lo: float, hi: float, most: int = LOG_TICKS, axis: str = "x") -> None:
    """Limits ``lo``..``hi`` and at most ``most`` labelled ticks on a log ``axis``, written as
    plain numbers (``50``, ``200``, ``1e+04``): matplotlib labels every minor tick of a span under
    a few decades (``2x10^1``, ``3x10^1``, ...), and those labels run into each other; over
    hundreds of decades its locator overflows."""
    from matplotlib.ticker import MaxNLocator, NullFormatter

    ticks: list[float] = []
    for mantissas in ((1, 2, 5), (1, 3), (1,)):
        ticks = [m * 10.0 ** e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
                 for m in mantissas if lo <= m * 10.0 ** e <= hi]
        if len(ticks) <= most:
            break
    while len(ticks) > most:  # many decades: every other power of ten
        ticks = ticks[::2]
    if len(ticks) < 3:  # under a decade or so: round numbers, evenly spaced
        ticks = [float(t) for t in MaxNLocator(nbins=most - 1, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi)
                 if lo <= t <= hi]
    getattr(ax, f"set_{axis}ticks")(ticks, [f"{t:g}" for t in ticks])
    getattr(ax, f"{axis}axis").set_minor_formatter(NullFormatter())
    getattr(ax, f"set_{axis}lim")(lo, hi)


def draw_figure1(track_runs: Sequence[RunData]):
    """The matplotlib Figure of :func:`plot_figure1`, or None."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    entries = {e: rs for e, rs in by_entry(track_runs).items() if is_lm_run(rs[0])}
    if not entries:
        return None
    pooled: dict[str, dict[int, np.ndarray]] = {}
    for e, runs in entries.items():
        per_gen: dict[int, list[np.ndarray]] = {}
        for r in runs:
            for k in range(R.finished_generations(r.path)):
                per_gen.setdefault(k, []).append(reference_perplexities(r, k))
        pooled[e] = {k: np.concatenate(v) for k, v in sorted(per_gen.items())}
    everything = np.concatenate([v for g in pooled.values() for v in g.values()] or [np.empty(0)])
    edges = log_edges(everything)
    gmax = max((max(g) for g in pooled.values() if g), default=0)
    cmap, norm = colormaps["viridis"], Normalize(0, max(gmax, 1))
    panels = len(entries) + 1
    ncols = min(panels, 3)
    nrows = math.ceil(panels / ncols)
    fig, axes = _figure(5.0 * ncols, 3.8 * nrows + 0.4, ncols, nrows)
    flat = axes.ravel()
    for ax, (e, gens) in zip(flat, pooled.items()):
        label = entries[e][0].label
        for k, values in gens.items():
            ax.stairs(proportions(values, edges), edges, color=cmap(norm(k)), linewidth=1.2,
                      label=f"generation {k}")
        ax.set_xscale("log")
        _log_ticks(ax, float(edges[0]), float(edges[-1]))
        ax.set_xlabel("perplexity of a generated block under M_0 (log scale)")
        ax.set_ylabel("share of blocks")
        ax.set_title(mpl_text(f"{label}, {len(entries[e])} seed(s)"), fontsize=10)
        ax.grid(alpha=0.3)
        if len(gens) <= 10:
            ax.legend(fontsize=7)
        else:
            fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="generation")
    ax = flat[len(pooled)]
    drawn = _draw_trajectories(ax, entries, TEST_PERPLEXITY)
    ax.set_ylabel("test perplexity (real test set)")
    ax.set_title(mpl_text(f"{track_runs[0].track_name}: test perplexity, mean and 95% t band"), fontsize=10)
    lm_runs = [r for rs in entries.values() for r in rs]
    _finish_axis(ax, drawn, track_references(lm_runs, TEST_PERPLEXITY))
    for extra in flat[panels:]:
        extra.set_visible(False)
    fig.suptitle(mpl_text(f"{track_runs[0].track_name}: generated-data perplexity under M_0 and test perplexity"),
                 fontsize=11)
    fig.supxlabel(mpl_text(figure1_note(lm_runs)), fontsize=8, wrap=True)
    return fig


def plot_figure1(track_runs: Sequence[RunData], path: Path) -> Path | None:
    """The paper's Figure 1 for a language-model track: per entry, histograms (log x) of the
    per-block perplexity under M_0 of the data each generation drew, one outline per generation
    coloured by generation; last panel, test perplexity per generation for every entry with 95%
    t seed bands and the paper's figures where the runs reproduce its experiment. A caption says
    which way the histograms move under the runs' decoding (:func:`figure1_note`). None when no
    run of the track has such samples."""
    fig = draw_figure1(track_runs)
    return None if fig is None else _save(fig, path)


def track_folder(track_runs: Sequence[RunData]) -> str:
    """``gaussian-smoke-e0caf4b0``: the track's name and id prefix, file-name safe."""
    return slug(f"{track_runs[0].track_name}-{track_runs[0].track_id[:8]}")


def metric_files(names: Sequence[str]) -> dict[str, str]:
    """The PNG file name of each metric row name: its slug, made unique (``figure1`` is taken)."""
    used: set[str] = {"figure1"}
    return {m: f"{slug(m, used)}.png" for m in names}


def plot_track(track_runs: Sequence[RunData], out: Path, metrics: Sequence[str] | None = None) -> list[Path]:
    """Every plot of one track under ``out``: one PNG per metric row name, and figure1.png
    for language-model runs."""
    written = []
    for metric, name in metric_files(metric_names(track_runs, metrics)).items():
        written.append(plot_metric(track_runs, metric, Path(out) / name))
    fig1 = plot_figure1(track_runs, Path(out) / "figure1.png")
    if fig1 is not None:
        written.append(fig1)
    return written


def plot(paths: Iterable[str | Path] | str | Path, out: str | Path = "plots",
         metrics: Sequence[str] | None = None, bench: Any = None) -> list[Path]:
    """Plot runs (run folders or folders of runs) into ``out/<track>-<id>/``: a PNG per metric
    row name (throughput rows only when ``metrics`` names them) with one line per entry, the
    mean over seeds with a 95% t band, the paper's figures as reference marks where a run
    reproduces its experiment, and ``figure1.png`` for language-model tracks. ``bench`` declares
    the references (default: the installed plugins). Returns the files written."""
    runs = load_runs(paths, bench)
    if not runs:
        raise BenchError("no readable runs (see the warnings above)")
    metrics = check_metrics(runs, metrics)
    out = Path(out)
    written = []
    for track_runs in by_track(runs).values():
        written += plot_track(track_runs, out / track_folder(track_runs), metrics)
    return written
