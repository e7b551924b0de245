"""Plots of run folders: metric trajectories over generations with seed bands, and the paper's
Figure 1 for language-model runs (see docs/reports.md).

Runs are grouped as a leaderboard groups them (:mod:`bench.grouping`): by track (run.json
``track``), then into entries, the runs whose specs differ only in seed. Each entry is drawn as
the mean over its seeds with a 95% Student-t band (:func:`seed_band`). matplotlib is imported inside the functions and drawn
through the Agg canvas, so importing this module costs nothing and never touches a display.
"""

from __future__ import annotations

import hashlib
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from bench import results as R
from bench import runfolder as RF
from bench.errors import BenchError
from bench.grouping import CONFIDENCE, entry_key, entry_labels, join_tracks, seed_order, summarize

THROUGHPUT = "throughput/"
TEST_PERPLEXITY = "test-perplexity"
HIST_BINS = 40
DPI = 100


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
    """One readable run folder: run.json, its metrics (pandas) and its place in a track."""

    path: Path
    info: dict[str, Any]
    metrics: Any
    track_id: str
    track_name: str
    entry: str
    label: str = ""
    extras: dict[str, Any] = field(default_factory=dict)

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


def load_runs(paths: Iterable[str | Path]) -> list[RunData]:
    """Readable runs at or below ``paths`` with entry labels set; a run whose run.json or
    metrics cannot be read is named in a warning and skipped. No run folder at all is an error."""
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
    return runs


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
    covers ``name`` and ``name/<key>``); without it every row but ``throughput/...``."""
    names: dict[str, None] = {}
    for r in runs:
        names.update(dict.fromkeys(r.metrics["metric"].tolist()))
    if metrics is None:
        return [n for n in names if not n.startswith(THROUGHPUT)]
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


def _draw_trajectories(ax, entries: dict[str, list[RunData]], metric: str) -> int:
    """Mean line and band per entry; returns how many non-finite values were left out."""
    dropped = 0
    for color, runs in zip(_colors(len(entries)), entries.values()):
        gens, bands = trajectory(runs, metric)
        if not gens:
            continue
        mean = np.array([b.mean for b in bands])
        lo = np.array([b.lo for b in bands])
        hi = np.array([b.hi for b in bands])
        dropped += sum(b.dropped for b in bands)
        seeds = len(runs)
        ax.plot(gens, mean, marker="o", ms=3, color=color,
                label=mpl_text(f"{runs[0].label} (n={seeds})"))
        if np.isfinite(lo).any():
            ax.fill_between(gens, lo, hi, color=color, alpha=0.2, linewidth=0)
    ax.set_xlabel("generation k (model M_k)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    return dropped


def _save(fig, path: Path) -> Path:
    import io

    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    R.write_bytes(path, buf.getvalue())
    return path


def plot_metric(track_runs: Sequence[RunData], metric: str, path: Path) -> Path:
    """One metric's trajectory for every entry of a track, with 95% t seed bands."""
    direction, target = metric_info(track_runs, metric)
    fig, axes = _figure()
    ax = axes[0, 0]
    dropped = _draw_trajectories(ax, by_entry(track_runs), metric)
    if target is not None:
        ax.axhline(target, color="0.3", linestyle="--", linewidth=1, label=f"target {fmt(target)}")
    note = {"higher": "higher is better", "lower": "lower is better",
            "target": "nearer the target is better"}.get(direction, direction)
    title = f"{track_runs[0].track_name}: {metric} ({note})"
    ax.set_title(mpl_text(title), fontsize=10)
    ax.set_ylabel(mpl_text(metric))
    if dropped:
        ax.annotate(f"{dropped} non-finite value(s) left out", (0.01, 0.01), xycoords="axes fraction",
                    fontsize=8, color="0.4")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_figure1(track_runs: Sequence[RunData], path: Path) -> Path | None:
    """The paper's Figure 1 for a language-model track: per entry, histograms (log x) of the
    per-block perplexity under M_0 of the data each generation drew, one outline per generation
    coloured by generation; last panel, test perplexity per generation for every entry with 95%
    t seed bands. None when no run of the track has such samples."""
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
    fig, axes = _figure(5.0 * ncols, 3.8 * nrows, ncols, nrows)
    flat = axes.ravel()
    for ax, (e, gens) in zip(flat, pooled.items()):
        label = entries[e][0].label
        for k, values in gens.items():
            ax.stairs(proportions(values, edges), edges, color=cmap(norm(k)), linewidth=1.2,
                      label=f"generation {k}")
        ax.set_xscale("log")
        ax.set_xlabel("perplexity of a generated block under M_0 (log scale)")
        ax.set_ylabel("share of blocks")
        ax.set_title(mpl_text(f"{label}, {len(entries[e])} seed(s)"), fontsize=10)
        ax.grid(alpha=0.3)
        if len(gens) <= 10:
            ax.legend(fontsize=7)
        else:
            fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="generation")
    ax = flat[len(pooled)]
    dropped = _draw_trajectories(ax, entries, TEST_PERPLEXITY)
    ax.set_ylabel("test perplexity (real test set)")
    ax.set_title(mpl_text(f"{track_runs[0].track_name}: test perplexity, mean and 95% t band"), fontsize=10)
    means = [b.mean for rs in entries.values() for b in trajectory(rs, TEST_PERPLEXITY)[1]]
    finite = [m for m in means if np.isfinite(m)]
    if finite and min(finite) > 0 and max(finite) / min(finite) > 50:
        ax.set_yscale("log")
    if dropped:
        ax.annotate(f"{dropped} non-finite value(s) left out", (0.01, 0.01), xycoords="axes fraction",
                    fontsize=8, color="0.4")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    for extra in flat[panels:]:
        extra.set_visible(False)
    fig.suptitle(mpl_text(f"{track_runs[0].track_name}: generated-data perplexity under M_0 and test perplexity"),
                 fontsize=11)
    return _save(fig, path)


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
         metrics: Sequence[str] | None = None) -> list[Path]:
    """Plot runs (run folders or folders of runs) into ``out/<track>-<id>/``: a PNG per metric
    row name (throughput rows only when ``metrics`` names them) with one line per entry, the
    mean over seeds with a 95% t band, and ``figure1.png`` for language-model tracks. Returns
    the files written."""
    runs = load_runs(paths)
    if not runs:
        raise BenchError("no readable runs (see the warnings above)")
    metrics = check_metrics(runs, metrics)
    out = Path(out)
    written = []
    for track_runs in by_track(runs).values():
        written += plot_track(track_runs, out / track_folder(track_runs), metrics)
    return written
