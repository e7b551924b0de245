"""The Python API: what ``bench run`` does, for notebooks and scripts.

>>> import bench.api as cb
>>> runs = cb.run("gmm", preset="smoke", seeds="0-1", policy="mix:0.1")   # doctest: +SKIP
>>> print(cb.summary(runs))                                               # doctest: +SKIP
>>> cb.metrics(runs).query("metric == 'gmm-l2'")                          # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

from bench import results as R
from bench.executors import thread_limits
from bench.loop import Run, RunOutcome, batchable, run_group
from bench.options import (  # noqa: F401
    DEFAULT_KEEP_STATES,
    DEFAULT_ON_NONFINITE,
    DEFAULT_OUT,
    DEFAULT_PLUGIN,
    RunOptions,
)
from bench.plugins import Bench
from bench.progress import GroupProgress, Progress
from bench.spec import Spec


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
    trainer: str | None = None,
    generator: str | None = None,
    scorer: str | None = None,
    bench: Bench | None = None,
) -> list[Spec]:
    """The resolved specs, one per seed, of what :func:`run` would run, each checked by its model
    as the run would check it. Explicit arguments win over the config file's values; the plugin
    defaults to ``gmm``, as on the command line."""
    b = bench or Bench()
    options = RunOptions.parse(dict(plugin=plugin, preset=preset, seeds=seeds, generations=generations,
                                    policy=policy, start=start, set=set, metrics=metrics,
                                    mitigation=mitigation, trainer=trainer, generator=generator,
                                    scorer=scorer), config=config)
    return options.specs(b)


def run(
    plugin: str | None = None,
    preset: str | None = None,
    *,
    out: str | Path | None = None,
    progress: bool = False,
    keep_states: str | None = None,
    threads: int | None = None,
    on_nonfinite: str | None = None,
    bench: Bench | None = None,
    **options: Any,
) -> list[RunOutcome]:
    """Run (or resume, or extend) one chain per seed; return where each run lives and its status.

    Options are those of :func:`specs`, plus ``out``, ``keep_states`` (``first-last``, ``all`` or
    ``every:N``), ``threads`` (the thread limit of numeric libraries while the runs go; default
    :func:`bench.options.default_threads`) and ``on_nonfinite`` (``stop``, the default: a run whose
    state, samples or scores hold NaN or inf fails; ``record``: it goes on and marks them). Runs
    already complete return at once.
    """
    b = bench or Bench()
    config = options.pop("config", None)
    parsed = RunOptions.parse({**options, "plugin": plugin, "preset": preset, "out": out,
                               "keep_states": keep_states, "threads": threads, "on_nonfinite": on_nonfinite},
                              config=config)
    return execute(b, parsed.specs(b), parsed.out, keep_states=parsed.keep_states, progress=progress,
                   threads=parsed.thread_limit(), on_nonfinite=parsed.on_nonfinite)


def lockstep_groups(b: Bench, run_specs: Iterable[Spec], batch: bool = True) -> list[list[Spec]]:
    """The one rule for running seeds together: specs that differ only in seed, of a trainer that
    fits several chains at once (``fit_batch``), form a group run in lockstep; every other spec is
    a group of its own. Groups keep the order of their first spec; ``batch=False`` groups nothing."""
    import json

    groups: dict[str, list[Spec]] = {}
    for spec in run_specs:
        if batch and batchable(b, spec):
            key = json.dumps({k: v for k, v in spec.to_dict().items() if k != "seed"}, sort_keys=True, default=str)
        else:
            key = f"#{len(groups)}"
        groups.setdefault(key, []).append(spec)
    return list(groups.values())


def execute(b: Bench, run_specs: Iterable[Spec], out: Path, keep_states: str = DEFAULT_KEEP_STATES,
            progress: bool = False, threads: int | None = None,
            on_nonfinite: str = DEFAULT_ON_NONFINITE) -> list[RunOutcome]:
    """Run resolved specs: groups of :func:`lockstep_groups` together, the others one after
    another, under a thread limit of ``threads`` (default :func:`bench.options.default_threads`).
    The first failure is raised once its group has stopped."""
    from bench.options import default_threads, parse_keep_states, parse_on_nonfinite, parse_threads

    keep_states = parse_keep_states(keep_states)
    on_nonfinite = parse_on_nonfinite(on_nonfinite)
    limit = parse_threads(threads) or default_threads()
    outcomes: list[RunOutcome] = []
    with thread_limits(limit):
        for group in lockstep_groups(b, run_specs):
            if len(group) > 1:
                shared = GroupProgress(f"{group[0].plugin} x{len(group)}", group, out) if progress else None
                outcomes += run_group(b, group, out, keep_states=keep_states,
                                      progress=shared.member if shared else None, on_nonfinite=on_nonfinite)
            else:
                p = Progress(group[0].folder_name) if progress else None
                outcomes.append(Run(b, group[0], out, keep_states=keep_states,
                                    on_nonfinite=on_nonfinite).execute(p))
    return outcomes


def summary(runs: Iterable[RunOutcome | str | Path] | RunOutcome | str | Path, bench: Bench | None = None) -> str:
    """What ``bench run`` prints at its end, for outcomes or run folders (a folder of runs works
    too): per run (past five, per setting: the mean over seeds) the main metrics at generation 0
    and at the last generation, beside the paper's figures where the run reproduces a paper
    experiment. ``print(cb.summary(runs))``."""
    from bench import summary as S

    if isinstance(runs, (RunOutcome, str, Path)):
        runs = [runs]
    found: list[tuple[Path, str | None, str | None]] = []
    for r in runs:
        if isinstance(r, RunOutcome):
            found.append((r.path, r.status, r.error))
        else:
            found += [(p, None, None) for p in R.find_runs([Path(r)])]
    return "\n".join(S.end_lines(bench or Bench(), found))


def metrics(runs: Iterable[RunOutcome | str | Path] | RunOutcome | str | Path):
    """The metrics of runs (outcomes or folders; a folder of runs works too) as one pandas table."""
    import pyarrow as pa

    if isinstance(runs, (RunOutcome, str, Path)):
        runs = [runs]
    paths = [r.path if isinstance(r, RunOutcome) else Path(r) for r in runs]
    tables = [R.read_metrics(p) for p in R.find_runs(paths)]
    table = pa.concat_tables(tables) if tables else R.METRICS_SCHEMA.empty_table()
    return table.to_pandas()
