"""What ``bench run`` says before and after its runs: a start line with the resolved choices (and
which were defaults), and an end summary with each run's main metrics at generation 0 and at its
last generation, beside the paper's figures where the run reproduces a paper experiment.

The main metrics of a run are its model's headline metric, then the rows the paper reports for
this preset, then the model's leaderboard metrics: at most :data:`SHOWN_ROWS` rows. Past
:data:`SHOWN_RUNS` runs, runs of one setting (all but the seed the same) show as one block, the
mean over their seeds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SHOWN_RUNS = 5
SHOWN_ROWS = 4


# -- the start line -------------------------------------------------------------------------------


def seeds_text(seeds: Sequence[int]) -> str:
    """``seed 0``, ``seeds 0-4``, ``seeds 0, 2, 7`` (past five: the first three and the count)."""
    seeds = list(seeds)
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    if seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"seeds {seeds[0]}-{seeds[-1]}"
    shown = seeds if len(seeds) <= 5 else [*seeds[:3], f"... ({len(seeds)} in all)"]
    return "seeds " + ", ".join(str(s) for s in shown)


def start_line(options: Any, specs: Sequence[Any], given: Iterable[str]) -> str:
    """One line naming what is about to run: model, preset, generations, policy, seeds and out
    folder, each marked ``(default)`` when no flag or config file chose it, then the mitigation,
    start and overrides when given. ``options`` is the :class:`bench.options.RunOptions`,
    ``specs`` its resolved specs (one per seed), ``given`` the option names the user set."""
    given = set(given)
    spec = specs[0]

    def chosen(text: str, *keys: str) -> str:
        return text if given & set(keys) else f"{text} (default)"

    parts = [chosen(f"preset {spec.preset}", "preset"),
             chosen(f"{spec.generations} generations", "generations"),
             chosen(f"policy {spec.policy_label}", "policy", "mitigation")]
    if options.mitigation:
        mitigation = options.mitigation
        parts.append("mitigation " + (mitigation if isinstance(mitigation, str) else "+".join(mitigation)))
    if "start" in given:
        parts.append(f"start {spec.start}")
    if options.set:
        items = [f"{k}={v}" for k, v in options.set.items()]
        parts.append("set " + ", ".join(items if len(items) <= 3 else [*items[:3], f"... ({len(items)} in all)"]))
    runs = f" ({len(specs)} runs)" if len(specs) > 1 else ""
    parts.append(chosen(seeds_text([s.seed for s in specs]), "seeds") + runs)
    return (f"Running {chosen(spec.plugin, 'plugin')}: " + ", ".join(parts)
            + f"; run folders in {chosen(f'{options.out}/', 'out')}")


# -- what each run folder held before the command -------------------------------------------------


@dataclass(frozen=True)
class OnDisk:
    """What a run folder held before the command ran it: its finished generations, the
    generations its run.json asked for and whether that run was complete."""

    done: int = 0
    requested: int | None = None
    complete: bool = False


def on_disk(out: Path | str, specs: Iterable[Any]) -> dict[str, OnDisk]:
    """:class:`OnDisk` of each spec's run folder under ``out``, by folder name (read before the
    runs go, so that the summary can say which were new, resumed, extended or already done)."""
    from bench import results as R
    from bench import runfolder as RF
    from bench.errors import BenchError

    found = {}
    for spec in specs:
        path = Path(out) / spec.folder_name
        if not path.is_dir():
            found[spec.folder_name] = OnDisk()
            continue
        requested, complete = None, False
        try:
            old = RF.read_run_json(path)
            requested, complete = old.generations_requested, old.complete
        except (BenchError, OSError):  # no run.json yet, or one the run itself will refuse
            pass
        found[spec.folder_name] = OnDisk(R.finished_generations(path), requested, complete)
    return found


def what_happened(generations: int, before: OnDisk) -> tuple[str, str]:
    """(kind, words) for a run asked for ``generations`` whose folder held ``before``: kind is
    ``new``, ``resumed``, ``extended`` or ``already complete``."""
    if before.done == 0:
        return "new", "new run"
    if before.done > generations + 1:
        return "already complete", (f"holds generations 0..{before.done - 1}, more than the {generations} "
                                    "asked for: nothing to do")
    if before.done == generations + 1:
        return "already complete", "already complete: nothing to do"
    if before.complete and before.requested is not None and before.requested < generations:
        return "extended", f"extended from generation {before.requested}"
    return "resumed", f"resumed after generation {before.done - 1}"


# -- the end summary ------------------------------------------------------------------------------


def number(value: float | None) -> str:
    """A metric value in a few characters: 3 significant digits, whole numbers up to a million."""
    if value is None or math.isnan(value):
        return "n/a"
    if math.isinf(value) or value == 0:
        return f"{value:g}"
    size = abs(value)
    if 1000 <= size < 1e6:
        return f"{value:.0f}"
    return f"{value:.3g}" if size >= 1e-3 else f"{value:.2e}"


def paper_text(refs: Sequence[Any]) -> str:
    """``paper: 0.9 at generation 0, 0.01 at generation 2050`` for the references of one row."""
    def one(ref: Any) -> str:
        value = f"{ref.value:g}" if ref.high is None else f"{ref.value:g}-{ref.high:g}"
        return value + (f" at generation {ref.generation}" if ref.generation is not None else "")

    return "paper: " + ", ".join(one(r) for r in sorted(refs, key=lambda r: (r.generation is None, r.generation or 0)))


@dataclass
class _Run:
    """One run folder as the summary reads it."""

    path: Path
    spec: dict[str, Any]
    status: str
    error: str | None
    main: list[str]  # the metric names to show, most important first
    refs: tuple[Any, ...]  # the paper's figures for this run (bench.references.for_spec)
    curves: dict[str, dict[int, float]]  # metric row -> generation -> value
    problem: str | None = None  # why its metrics could not be read


def _read(b: Any, path: Path, status: str | None = None, error: str | None = None) -> _Run:
    from bench import references
    from bench import runfolder as RF

    run = RF.read_run_json(path)
    headline, _ = RF.parse_headline(run.headline)
    refs = references.for_spec(b, run.spec) if b is not None else ()
    main = ([headline["metric"]] if headline else []) + [r.metric for r in refs] + list(run.leaderboard_metrics)
    curves: dict[str, dict[int, float]] = {}
    table = RF.load_metric_columns(path, ["generation", "metric", "value"])
    problem = table if isinstance(table, str) else None
    if problem is None:
        for g, m, v in zip(*(table.column(c).to_pylist() for c in ("generation", "metric", "value"))):
            curves.setdefault(m, {})[g] = math.nan if v is None else v
    return _Run(path, run.spec, status or run.status, error if status else run.error, main, refs, curves, problem)


def _rows(run: _Run) -> list[str]:
    """The metric rows to show: the main metrics' rows in that order, at most SHOWN_ROWS."""
    from bench.grouping import main_rows

    names = list(run.curves)
    chosen: list[str] = []
    for name in run.main:
        for i in main_rows(names, [name]).get(name, []):
            if names[i] not in chosen:
                chosen.append(names[i])
    return (chosen or names)[:SHOWN_ROWS]


def _block(title: str, runs: Sequence[_Run]) -> list[str]:
    """A title line, then per main row: the value at generation 0 and at the last generation
    (the mean over ``runs`` when several), and the paper's figures for it."""
    from bench import references

    first = runs[0]
    rows = _rows(first)
    lasts = [max(r.curves[row]) for r in runs for row in rows if r.curves.get(row)]
    if not rows or not lasts:
        why = first.problem or "no metric rows"
        return [f"{title}: {why}"]
    last = max(lasts)

    def mean(row: str, generation: int) -> float | None:
        values = [r.curves.get(row, {}).get(generation) for r in runs]
        values = [v for v in values if v is not None]
        return math.fsum(values) / len(values) if values else None

    cells = [(row, number(mean(row, 0)), number(mean(row, last))) for row in rows]
    widths = [max(len(cell[i]) for cell in cells) for i in range(3)]
    lines = [f"{title}: generation 0 -> {last}"]
    for row, start, end in cells:
        line = f"  {row:<{widths[0]}}  {start:>{widths[1]}} -> {end:<{widths[2]}}"
        refs = references.for_row(first.refs, row)
        lines.append((line + (f"  ({paper_text(refs)})" if refs else "")).rstrip())
    return lines


def _seeds(specs: Sequence[Mapping[str, Any]]) -> str:
    try:
        return seeds_text(sorted(int(s["seed"]) for s in specs))
    except (TypeError, ValueError, KeyError):
        return "seeds " + ", ".join(str(s.get("seed")) for s in specs)


def end_lines(b: Any, runs: Sequence[tuple[Path, str | None, str | None]],
              before: Mapping[str, OnDisk] | None = None) -> list[str]:
    """The summary of ``runs`` (path, status, error; status None: as run.json says): a block per
    run, or past :data:`SHOWN_RUNS` runs a block per setting with the mean over its seeds. Each
    title says how the run went when ``before`` (:func:`on_disk`) says what its folder held."""
    from bench.errors import BenchError
    from bench.grouping import entry_key
    from bench.types import Spec

    lines: list[str] = []
    read: list[_Run] = []
    for path, status, error in runs:
        try:
            read.append(_read(b, Path(path), status, error))
        except (BenchError, OSError) as exc:
            lines.append(f"{Path(path).name}: unreadable ({exc})")

    def how(run: _Run) -> tuple[str, str]:
        if run.status != "complete":
            return run.status, f"{run.status}" + (f": {run.error}" if run.error else "")
        if before is None or run.path.name not in before:
            return "", ""
        return what_happened(int(run.spec.get("generations", 0)), before[run.path.name])

    if len(read) <= SHOWN_RUNS:
        for run in read:
            _, words = how(run)
            lines += _block(run.path.name + (f" ({words})" if words else ""), [run])
        return lines
    settings: dict[str, list[_Run]] = {}
    for run in read:
        settings.setdefault(entry_key(run.spec), []).append(run)
    for group in list(settings.values())[:SHOWN_RUNS]:
        spec = group[0].spec
        kinds: dict[str, int] = {}
        for run in group:
            kind = how(run)[0]
            if kind:
                kinds[kind] = kinds.get(kind, 0) + 1
        counted = "".join(f", {n} {kind}" for kind, n in kinds.items())
        try:
            policy = Spec.from_dict(spec).policy_label
        except (KeyError, TypeError):
            policy = str(spec.get("policy"))
        name = f"{spec.get('plugin')} {spec.get('preset')} {policy}"
        lines += _block(f"{name} ({len(group)} runs, {_seeds([r.spec for r in group])}, mean over seeds{counted})",
                        group)
    if len(settings) > SHOWN_RUNS:
        lines.append(f"... and {len(settings) - SHOWN_RUNS} more settings")
    return lines


def next_steps(out: Path | str, paths: Sequence[Path | str]) -> list[str]:
    """Where to look next: the commands that draw and report the runs (one run: its folder;
    several: the out folder, which holds them)."""
    where = str(paths[0]) if len(paths) == 1 else f"{out}"
    return [f"Next: bench report {where}  (HTML pages under reports/: the spec, metric tables, plots, samples)",
            f"      bench plot {where}    (PNG figures under plots/: each metric over generations)"]
