"""The Python API: what ``bench run`` does, for notebooks and scripts.

>>> import bench.api as cb
>>> runs = cb.run("gmm", preset="smoke", seeds="0-1", policy="mix:0.1")   # doctest: +SKIP
>>> cb.metrics(runs).query("metric == 'gmm-l2'")                          # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

from bench import results as R
from bench.loop import Run, RunOutcome, batchable, run_group
from bench.plugins import Bench
from bench.progress import GroupProgress, Progress
from bench.spec import Spec, load_config, parse_assignments, parse_seeds, resolve

DEFAULT_OUT = "results"


def specs(
    plugin: str | None = None,
    preset: str | None = None,
    *,
    seeds: str | int | Iterable[int] | None = None,
    generations: int | None = None,
    policy: str | None = None,
    start: str | None = None,
    set: Mapping[str, Any] | Iterable[str] | None = None,
    metrics: Iterable[str] | None = None,
    config: str | Path | None = None,
    mitigation: str | Iterable[str] | None = None,
    bench: Bench | None = None,
) -> list[Spec]:
    """The resolved specs, one per seed, of what :func:`run` would run. Explicit arguments win
    over the config file's values."""
    b = bench or Bench()
    cfg = load_config(config) if config else {}
    overrides = dict(cfg.get("set") or {})
    if set is not None:
        overrides.update(set if isinstance(set, Mapping) else parse_assignments(set))
    plugin = plugin or cfg.get("plugin") or "gaussian"
    seeds_value = seeds if seeds is not None else cfg.get("seeds", cfg.get("seed", 0))
    return [
        resolve(
            b,
            plugin,
            preset or cfg.get("preset"),
            seed=seed,
            generations=generations if generations is not None else cfg.get("generations"),
            policy=policy or cfg.get("policy"),
            start=start or cfg.get("start"),
            overrides=overrides,
            metrics=metrics if metrics is not None else cfg.get("metrics"),
            trainer=cfg.get("trainer"),
            generator=cfg.get("generator"),
            scorer=cfg.get("scorer"),
            mitigation=mitigation if mitigation is not None else cfg.get("mitigation"),
        )
        for seed in parse_seeds(seeds_value)
    ]


def run(
    plugin: str | None = None,
    preset: str | None = None,
    *,
    out: str | Path | None = None,
    progress: bool = False,
    keep_states: str = "first-last",
    bench: Bench | None = None,
    **options: Any,
) -> list[RunOutcome]:
    """Run (or resume, or extend) one chain per seed; return where each run lives and its status.

    Options are those of :func:`specs`. Runs already complete return at once.
    """
    b = bench or Bench()
    return execute(b, specs(plugin, preset, bench=b, **options), Path(out or DEFAULT_OUT),
                   keep_states=keep_states, progress=progress)


def execute(b: Bench, run_specs: Iterable[Spec], out: Path, keep_states: str = "first-last",
            progress: bool = False) -> list[RunOutcome]:
    """Run resolved specs: chains of a batch-capable trainer (``fit_batch``) together in lockstep,
    the others one after another. The first failure is raised once its group has stopped."""
    run_specs = list(run_specs)
    outcomes = []
    groups: dict[str, list[Spec]] = {}
    for spec in run_specs:
        key = spec.trainer if len(run_specs) > 1 and batchable(b, spec) else f"#{len(groups)}"
        groups.setdefault(key, []).append(spec)
    for group in groups.values():
        if len(group) > 1:
            shared = GroupProgress(f"{group[0].plugin} x{len(group)}", group, out) if progress else None
            outcomes += run_group(b, group, out, keep_states=keep_states,
                                  progress=shared.member if shared else None)
        else:
            p = Progress(group[0].folder_name) if progress else None
            outcomes.append(Run(b, group[0], out, keep_states=keep_states).execute(p))
    return outcomes


def metrics(runs: Iterable[RunOutcome | str | Path] | RunOutcome | str | Path):
    """The metrics of runs (outcomes or folders; a folder of runs works too) as one pandas table."""
    import pyarrow as pa

    if isinstance(runs, (RunOutcome, str, Path)):
        runs = [runs]
    paths = [r.path if isinstance(r, RunOutcome) else Path(r) for r in runs]
    tables = [R.read_metrics(p) for p in R.find_runs(paths)]
    table = pa.concat_tables(tables) if tables else R.METRICS_SCHEMA.empty_table()
    return table.to_pandas()
