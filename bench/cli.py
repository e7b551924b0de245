"""The ``bench`` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

import bench
from bench.errors import BenchError

from bench.options import DEFAULT_PLUGIN


def _bench(ctx: click.Context):
    """The plugins of this command line, loaded once per invocation (the commands that run
    something, and those whose options plugins add)."""
    if "bench" not in ctx.meta:
        from bench.plugins import Bench

        ctx.meta["bench"] = Bench()
    return ctx.meta["bench"]


class PluginOptionsCommand(click.Command):
    """A command that also takes the options plugins add through ``bench_cli_options``: they are
    read from the plugins when the command parses its arguments or shows its help."""

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        params = super().get_params(ctx)  # the command's own, then --help
        return params[:len(self.params)] + self.plugin_params(ctx) + params[len(self.params):]

    def plugin_options(self, ctx: click.Context):
        """The plugins' :class:`bench.CliOption` records for this command."""
        self.plugin_params(ctx)
        return ctx.meta[("plugin-options", self.name)][0]

    def plugin_params(self, ctx: click.Context) -> list[click.Parameter]:
        key = ("plugin-options", self.name)
        if key not in ctx.meta:
            from bench.options import cli_options
            from bench.plugins import PluginError

            b = _bench(ctx)
            taken = {name for p in self.params for name in (p.name, *p.opts, *p.secondary_opts)}
            options, params = cli_options(b, self.name), []
            for option in options:
                if option.flag in taken or option.name in taken:
                    raise PluginError(f"a plugin adds option {option.flag} to bench {self.name}, which has an "
                                      "option of that name already")
                params.append(click.Option([option.flag, option.name], type=option.type, metavar=option.metavar,
                                           help=option.help))
            ctx.meta[key] = (options, params)
        return ctx.meta[key][1]


def _plugin_choices(ctx: click.Context, values: dict):
    """(CliOption, value) for each plugin option given on the command line."""
    return [(o, values[o.name]) for o in ctx.command.plugin_options(ctx) if values.get(o.name) is not None]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(bench.__version__, prog_name="collapse-bench")
def cli() -> None:
    """collapse-bench: train models generation after generation on their own output, and measure
    the collapse."""


@cli.command(cls=PluginOptionsCommand)
@click.option("--plugin", "-p", help=f"Model plugin (default {DEFAULT_PLUGIN}; `bench plugins` lists them).")
@click.option("--preset", help="Preset of the plugin (default: its smoke preset).")
@click.option("--generations", "-g", type=int, help="Generations after generation 0 (default: the preset's).")
@click.option("--seeds", "--seed", "seeds", help="Seeds: 3, 0-4 or 0,2,7 (one run each; default 0).")
@click.option("--policy", help="Data policy: replace, mix:P, accumulate, accumulate-subsample[:SIZE], fresh:P.")
@click.option("--mitigation", "-m", "mitigation", metavar="NAME[:VALUE]",
              help="A mitigation: a policy (best-of:4, filter:0.5,oracle, ...), a trainer option (tce:0.9) or "
                   "decoding (temperature:0.7); join several with '+'. `bench plugins` lists them.")
@click.option("--start", type=click.Choice(["pretrained", "gen0", "previous"]),
              help="Where generations after the first start training from.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a parameter (repeatable); policy parameters as policy.KEY=VALUE.")
@click.option("--metric", "metrics", multiple=True, help="Metrics to compute instead of the plugin's defaults (repeatable).")
@click.option("--config", type=click.Path(dir_okay=False), help="A YAML or TOML file holding a whole spec.")
@click.option("--out", "-o", default=None, help="Folder for the run folders (default results/).")
@click.option("--keep-states", default=None, help="Model states to keep: first-last (default), all, or every:N.")
@click.option("--threads", type=int, help="Thread limit of torch, BLAS and OpenMP during the runs (default: "
              "OMP_NUM_THREADS if set, else the cores up to 8). Not part of the spec: run ids stay the same.")
@click.option("--on-nonfinite", type=click.Choice(["stop", "record"]), default=None,
              help="When a state, samples or scores hold NaN or inf: stop (default; the run fails, naming the "
                   "generation) or record (go on; run.json and the generations mark it). Not part of the spec.")
@click.option("--dry-run", is_flag=True, help="Print the resolved spec and run folder; run nothing.")
def run(plugin, preset, generations, seeds, policy, mitigation, start, sets, metrics, config, out, keep_states,
        threads, on_nonfinite, dry_run, **plugin_values):
    """Run, resume or extend collapse chains (one run per seed).

    \b
    Examples:
      bench run --plugin gmm --preset smoke
      bench run --plugin gmm --preset paper --seeds 0-4 --policy mix:0.1
      bench run --plugin gaussian --set n_samples=50 --generations 200
    """
    from contextlib import ExitStack

    from bench import api, summary
    from bench.options import RunOptions, load_config
    from bench.progress import count_and_names
    from bench.spec import parse_assignments

    ctx = click.get_current_context()
    values = {"plugin": plugin, "preset": preset, "generations": generations, "seeds": seeds, "policy": policy,
              "mitigation": mitigation, "start": start, "set": parse_assignments(sets),
              "metrics": list(metrics) or None, "out": out, "keep_states": keep_states, "threads": threads,
              "on_nonfinite": on_nonfinite}
    plugin_choices = _plugin_choices(ctx, plugin_values)
    options = RunOptions.parse(values, config=config, plugin_options=plugin_choices)
    b = _bench(ctx)
    if dry_run:  # resolved and checked by the model as the run would be; warnings on stderr
        for spec in options.specs(b, warn=lambda message: click.echo(f"Warning: {message}", err=True)):
            click.echo(json.dumps({"run_folder": str(options.out / spec.folder_name), "run_id": spec.run_id,
                                   "spec": spec.to_dict()}, indent=2))
        return
    specs = options.specs(b)
    # Said at once, before any model or data loads: what runs, and which choices were defaults.
    given = {key for key, value in values.items() if value not in (None, {}, [])}
    given |= {"seeds" if key == "seed" else key for key in (load_config(config) if config else {})}
    click.echo(summary.start_line(options, specs, given))
    before = summary.on_disk(options.out, specs)
    after: list[str] = []
    with ExitStack() as stack:  # what plugins' options do around the runs (--tensorboard: log them)
        finishers = [stack.enter_context(option.around(value))
                     for option, value in options.plugin_options if option.around is not None]
        outcomes = api.execute(b, specs, options.out, keep_states=options.keep_states, progress=True,
                               threads=options.thread_limit(), on_nonfinite=options.on_nonfinite)
        for finish in finishers:
            if finish is not None:
                after += finish(outcomes)
    for line in summary.end_lines(b, [(o.path, o.status, o.error) for o in outcomes], before):
        click.echo(line)
    click.echo(f"Results: {options.out}/ ({count_and_names([s.folder_name for s in specs], 'run')})")
    for line in after:
        click.echo(line)
    for line in summary.next_steps(options.out, [options.out / o.path.name for o in outcomes]):
        click.echo(line)


@cli.command(cls=PluginOptionsCommand)
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--executor", "-e", help="Executor: local (default), dask, slurm; `bench plugins` lists them.")
@click.option("--workers", "-w", type=int, help="Runs at once (local: processes, default the CPU count; 1 runs "
              "in-process. dask: LocalCluster workers. slurm: the array's concurrency cap).")
@click.option("--threads", type=int, help="Thread limit of each worker (default 1; local with --workers 1: as bench run).")
@click.option("--threads-per-worker", type=int, help="The same as --threads.")
@click.option("--out", "-o", default=None, help="Folder for the run folders (default: the file's out, else results/).")
@click.option("--keep-states", default=None, help="Model states to keep: first-last (default), all, or every:N.")
@click.option("--on-nonfinite", type=click.Choice(["stop", "record"]), default=None,
              help="When a state, samples or scores hold NaN or inf: stop (default; the run fails, naming the "
                   "generation) or record (go on; run.json and the generations mark it). Not part of the spec.")
@click.option("--summary", "summary_file", type=click.Path(dir_okay=False),
              help="Write the JSON summary here (default OUT/.sweeps/<time>-<file>-<pid>.json).")
@click.option("--no-batch", is_flag=True, help="Never run seeds of one setting in lockstep; one run per task.")
@click.option("--dry-run", is_flag=True, help="List the runs and which are finished; run nothing.")
def sweep(file, executor, workers, threads, threads_per_worker, out, keep_states, on_nonfinite, summary_file, no_batch,
          dry_run, **plugin_values):
    """Run a grid of runs from a YAML or TOML FILE; finished runs are skipped, so the same command
    finishes what a crash left. Exits 1 if any run failed, or was busy (another process held it):
    the summary says which and why.

    \b
    Example file:
      plugin: gmm
      generations: 15
      grid:
        policy: [replace, "mix:0.1"]
        seed: [0, 1]
    See docs/sweeps.md for every key, the executors and their options.
    """
    from bench import sweep as S

    ctx = click.get_current_context()
    if threads is not None and threads_per_worker is not None and threads != threads_per_worker:
        raise BenchError(f"--threads {threads} and --threads-per-worker {threads_per_worker} are the same "
                         "setting; give one")
    b = _bench(ctx)
    chosen = executor or S.read_file(file).get("executor") or S.DEFAULT_EXECUTOR
    flags = {}
    for option, value in _plugin_choices(ctx, plugin_values):
        if option.executor is not None and option.executor != chosen:
            raise BenchError(f"{option.flag} is an option of --executor {option.executor}, but this sweep uses "
                             f"{chosen!r}")
        if option.executor_option is not None:
            flags[option.executor_option] = value
    sw = S.load(b, file, out=out, executor=executor, workers=workers,
                threads_per_worker=threads if threads is not None else threads_per_worker,
                keep_states=keep_states, on_nonfinite=on_nonfinite, batch=False if no_batch else None,
                summary=summary_file,
                executor_flags=flags)
    if dry_run:
        for line in S.dry_run_lines(b, sw):
            click.echo(line)
        return
    import signal

    def on_sigterm(signum, frame):  # a scheduler's or `kill`'s stop: as Ctrl-C, with a summary
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        result = S.run_sweep(b, sw, log=lambda message: click.echo(message, err=True))
    finally:
        signal.signal(signal.SIGTERM, previous)
    for line in result.lines():
        click.echo(line)
    if not result.ok:
        sys.exit(1)


# `bench show` of a numeric run lists every generation up to this many, else every 2nd, 5th, 10th, ...
SHOW_ROWS = 61


def _results_or_default(paths: tuple[str, ...], example: str) -> list[str]:
    """The paths given, or results/ when none were: a missing results/ is a message, not a traceback."""
    if paths:
        return list(paths)
    from bench.options import DEFAULT_OUT

    if not Path(DEFAULT_OUT).is_dir():
        raise BenchError(f"no RUN given and no {DEFAULT_OUT}/ folder here: give run folders or a folder of runs "
                         f"(`{example}`), or run `bench run` first (it writes {DEFAULT_OUT}/)")
    return [str(DEFAULT_OUT)]


def _newest_run() -> Path:
    """The run folder under results/ whose run.json changed last (`bench show` without RUN)."""
    from bench import results as R
    from bench.options import DEFAULT_OUT
    from bench.runfolder import find_runs

    folders = find_runs([DEFAULT_OUT])
    if not folders:
        raise BenchError(f"no RUN given and no run folder under {DEFAULT_OUT}/: give a run folder "
                         f"(`bench show results/<run>`), or run `bench run` first")
    return max(folders, key=lambda f: ((f / R.RUN_JSON).stat().st_mtime_ns, f.name))


def _numbers(values, limit: int = 4) -> str:
    shown = ", ".join(f"{v:.3g}" for v in values[:limit])
    return f"[{shown}{', ...' if len(values) > limit else ''}]"


def _sample_summary(samples, scores) -> tuple[str, ...]:
    """One generation's samples in a few numbers: (what they hold, their spread, the mean per-unit
    NLL under M_0). Vectors: mean and std of each dimension (the first four); categories: the
    distinct values and the most frequent one's share; images: mean and std of the pixels."""
    import numpy as np

    data = np.asarray(samples.data)
    if samples.kind == "categorical":
        values, counts = np.unique(data.reshape(-1), return_counts=True)
        top = int(np.argmax(counts))
        described = (str(len(values)), f"{values[top]} ({counts[top] / counts.sum():.0%})")
    elif samples.kind == "images":
        described = (f"pixel mean {data.mean():.3g}", f"std {data.std():.3g}")
    else:
        flat = data.reshape(len(data), -1).astype(float)
        described = (_numbers(flat.mean(axis=0)), _numbers(flat.std(axis=0)))
    nll = ""
    if "loglik_reference" in scores and "units" in scores:
        per_unit = -np.asarray(scores["loglik_reference"], dtype=float) / np.asarray(scores["units"], dtype=float)
        nll = f"{np.mean(per_unit):.3f}"
    return (*described, nll)


def _show_numeric(run_dir: Path, done: int, index: int | None) -> None:
    """`bench show` of vectors, categories and images: what each generation drew, summarised. The
    samples of two generations are independent draws, so no one sample is followed across them."""
    from bench.runfolder import generation_sample_row, generation_samples

    step = next(s for s in (m * 10 ** e for e in range(12) for m in (1, 2, 5)) if (done - 1) // s < SHOW_ROWS)
    shown = sorted({*range(0, done, step), done - 1})
    samples, _ = generation_samples(run_dir, 0)
    what = {"categorical": ("distinct values", "most frequent (share)"), "images": ("pixels", "")}.get(
        samples.kind, ("mean per dimension", "std per dimension"))
    every = f" (generations 0, {step}, {2 * step}, ... of {done})" if step > 1 else ""
    click.echo(f"The {len(samples)} samples each generation drew (S_{{k+1}}, drawn by M_k): {what[0]}"
               f"{', ' + what[1] if what[1] else ''}, and their mean per-unit NLL under M_0{every}.")
    if samples.kind == "images":
        click.echo(f"Each generation's images: {run_dir / 'grids'}/gen-<k>.png, where the plugin draws them.")
    rows = [("generation", *(("distinct", "most frequent") if samples.kind == "categorical" else
                             ("mean", "std")), "NLL under M_0")]
    for k in shown:
        rows.append((str(k), *_sample_summary(*generation_samples(run_dir, k))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    click.echo("")
    for r in rows:
        click.echo("  ".join(c.rjust(widths[0]) if i == 0 else c.ljust(widths[i]) for i, c in enumerate(r)).rstrip())
    if index is None:
        click.echo("\nSamples of different generations are independent draws: --prompt N prints sample N of each.")
        return
    click.echo(f"\nsample {index} of each generation (independent draws, not one sample followed):")
    for k in shown:
        row = generation_sample_row(run_dir, k, index)
        score, units = row.get("loglik_reference"), row.get("units") or 1
        numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (score, units))
        extra = f"  [per-unit NLL under M_0: {-score / units:.3f}]" if numbers else ""
        click.echo(f"generation {k} (drawn by M_{k}){extra}: {row['sample']}")


@cli.command()
@click.argument("run_folder", metavar="[RUN]", required=False, type=click.Path(file_okay=False))
@click.option("--prompt", "-n", "index", type=int, default=None,
              help="Text: which prompt to follow across generations (default 0). Vectors, categories, "
                   "images: also print sample N of each generation.")
def show(run_folder, index):
    """Print what a run drew, generation by generation: for text, one prompt's continuation as the
    model drifts; for vectors, categories and images, each generation's samples summarised (mean
    and std per dimension, distinct values, pixel mean and std).

    Without RUN, the most recently modified run under results/."""
    from bench import results as R
    from bench.runfolder import generation_sample_row, generation_samples, read_run_json

    if run_folder is None:
        run_dir = _newest_run()
        click.echo(f"(no RUN given: {run_dir}, the most recently modified run under {run_dir.parent}/)")
    else:
        run_dir = Path(run_folder)
    if not (run_dir / R.RUN_JSON).is_file():
        raise BenchError(f"{run_dir} is not a run folder (it has no run.json); `bench runs` lists runs")
    info = read_run_json(run_dir)
    done = R.finished_generations(run_dir)
    if done == 0:
        raise BenchError(f"run {run_dir.name} has no finished generation yet")
    spec = info.spec
    click.echo(f"{run_dir.name}: {spec['plugin']} {spec['preset']}, policy {info.policy_label}, "
               f"seed {spec['seed']}, {done} generation(s)")
    if generation_samples(run_dir, 0)[0].kind != "tokens":
        _show_numeric(run_dir, done, index)
        return
    index = 0 if index is None else index
    for k in range(done):
        row = generation_sample_row(run_dir, k, index)
        if k == 0 and row.get("column.prompt") is not None:
            click.echo(f"\nprompt {index} (real training block):\n  {row['column.prompt']}")
        body = row.get("column.text")
        if body is None:
            body = row["sample"]
        score, units = row.get("loglik_reference"), row.get("units") or 1
        numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (score, units))
        extra = f"  [per-unit NLL under M_0: {-score / units:.3f}]" if numbers else ""
        click.echo(f"\ngeneration {k} (drawn by M_{k}){extra}:\n  {body}")


@cli.command()
@click.argument("results", nargs=-1, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def runs(results, as_json):
    """List runs with their state (complete, running, partial, failed with its reason) and
    generations done."""
    from bench.manage import list_runs
    from bench.runfolder import find_run_dirs

    find_run_dirs(results or ["results"])  # a path that does not exist is a mistake, not "no runs"
    states = list_runs(results or ["results"])
    if as_json:
        click.echo(json.dumps([{**s.__dict__, "path": str(s.path)} for s in states], indent=2))
        return
    if not states:
        click.echo(f"No runs under {', '.join(results or ['results'])}.")
        return
    width = max(len(s.path.name) for s in states)
    for s in states:
        # the last finished generation over the last asked for, as the progress line counts
        last = str(s.done - 1) if s.done > 0 else "-"
        gens = f"{last}/{s.requested}" if s.requested is not None else last
        reason = f"  {s.reason}" if s.reason else ""
        click.echo(f"{s.path.name:<{width}}  {s.state:<9} generation {gens:>11}{reason}")
    counts = {}
    for s in states:
        counts[s.state] = counts.get(s.state, 0) + 1
    click.echo(", ".join(f"{n} {state}" for state, n in sorted(counts.items())))


@cli.command()
@click.argument("runs_", metavar="RUN...", nargs=-1, required=True, type=click.Path())
@click.option("--metric", "metrics", multiple=True, required=True, help="Metric to compute (repeatable).")
def rescore(runs_, metrics):
    """Compute a new or updated metric for finished runs from their saved samples and model states,
    without retraining."""
    from bench import results as R
    from bench.manage import rescore as do_rescore
    from bench.plugins import Bench

    folders = R.find_runs(runs_)
    if not folders:
        raise BenchError(f"no run folders under {', '.join(runs_)}")
    b = Bench()
    for folder in folders:
        result = do_rescore(b, folder, list(metrics))
        note = (f"; generations {result.skipped} skipped: their model state was not kept "
                "(see --keep-states)") if result.skipped else ""
        click.echo(f"{folder.name}: {result.rows} row(s) over {result.generations} generation(s){note}")


@cli.command()
@click.argument("runs_", metavar="[RUN]...", nargs=-1, type=click.Path())
@click.option("--out", "-o", default="plots", show_default=True, help="Folder for the PNG files.")
@click.option("--metric", "metrics", multiple=True, help="Only these metrics (repeatable; 'throughput' adds those rows).")
def plot(runs_, out, metrics):
    """Draw metric trajectories over generations with seed bands, and for language models the
    paper's Figure 1 (histograms of generated-data perplexity under M_0, test perplexity per setting).

    RUN: run folders or folders of runs (default results/)."""
    from bench.plots import plot as do_plot

    from bench.progress import count_and_names

    runs_ = _results_or_default(runs_, "bench plot results/gmm-*")
    files = do_plot(runs_, out, metrics=list(metrics) or None)
    folders = sorted({f.parent.name for f in files})
    click.echo(f"Wrote {len(files)} plot(s) under {out}/ in {count_and_names(folders, 'folder')}")


@cli.command()
@click.argument("runs_", metavar="[RUN]...", nargs=-1, type=click.Path())
@click.option("--out", "-o", default="reports", show_default=True, help="Folder for the HTML pages.")
@click.option("--per", type=click.Choice(["run", "track"]), default="run", show_default=True,
              help="One page per run, or per track (all its entries and seeds).")
@click.option("--metric", "metrics", multiple=True, help="Only these metrics (repeatable).")
def report(runs_, out, per, metrics):
    """Write self-contained HTML pages: spec, metric tables, plots, and sample text or images.

    RUN: run folders or folders of runs (default results/)."""
    from bench.report import report as do_report

    from bench.progress import count_and_names

    runs_ = _results_or_default(runs_, "bench report results/gmm-*")
    files = do_report(runs_, out, per=per, metrics=list(metrics) or None)
    if len(files) <= 5:
        click.echo(f"Wrote {len(files)} report(s):")
        for f in files:
            click.echo(f"  {f}")
    else:  # a long list prints short: the folder, the count and the first few pages
        click.echo(f"Wrote under {out}/ {count_and_names([f.name for f in files], 'report')}")


@cli.command()
@click.argument("results", nargs=-1, type=click.Path())
@click.option("--track", help="Only this track: its name (gmm/smoke) or id.")
@click.option("--out", "-o", help="Folder for the tables (default: leaderboards/ inside the first RESULTS folder, "
              "e.g. results/leaderboards/).")
@click.option("--suite", is_flag=True,
              help="Also write the suite table (mitigations x tracks): suite.md, .html, .csv, .json, .png.")
@click.option("--headline", "headline_metric", metavar="METRIC",
              help="Headline metric row for every track (replaces run.json's), e.g. test-nll; needs --threshold.")
@click.option("--threshold", type=float, help="Collapse threshold of --headline.")
@click.option("--mode", type=click.Choice(["diff", "ratio"]), help="How --threshold compares with generation 0 "
              "(default diff).")
def leaderboard(results, track, out, suite, headline_metric, threshold, mode):
    """Rank entries (runs differing only in seed) within each track; write Markdown, HTML, CSV, JSON.

    With --suite, also the suite table: mitigations against tracks, each cell the rank on the track's
    headline metric and the paired difference to replace (docs/leaderboards.md)."""
    import math

    from bench.leaderboard import build

    headline = None
    if headline_metric is not None:
        if threshold is None:
            raise click.UsageError("--headline needs --threshold (the collapse threshold), e.g. --threshold 0.5")
        if not math.isfinite(threshold):
            raise click.UsageError(f"--threshold must be a finite number, got {threshold}")
        headline = {"metric": headline_metric, "threshold": threshold, "mode": mode or "diff"}
    elif threshold is not None or mode is not None:
        raise click.UsageError("--threshold and --mode go with --headline METRIC")
    if suite:
        from bench.suite import build_suite

        result = build_suite(results or ["results"], out, headline, track=track)
    else:
        result = build(results or ["results"], track=track, out=out, headline=headline)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(result.summary())


@cli.command()
@click.argument("results", nargs=-1, required=True, type=click.Path())
def validate(results):
    """Check result folders against the schema; exit non-zero on any problem."""
    from bench.validate import check

    report = check(results)
    for problem in report.problems:
        click.echo(problem)
    click.echo(report.summary())
    if not report.ok:
        sys.exit(1)


# Hooks every plugin may implement to register components or options; `bench plugins` lists the
# others a plugin implements (the run events), which are what a plugin like tensorboard adds.
_REGISTRATION_HOOKS = ("bench_register_", "bench_cli_options")


def _plugin_additions(b, name: str) -> dict:
    """What plugin ``name`` adds besides its registrations: the presets of its models (and the
    default), the options it adds to bench commands, and the run events it hooks into."""
    from bench import CliOption
    from bench.plugins import PluginError

    added: dict = {}
    models = b.infos[name].registers.get("models", [])
    presets = {}
    for model in sorted(models):
        bundle = b.models.get(model)
        presets[model] = {"presets": list(bundle.presets), "default": bundle.default_preset}
    if presets:
        added["presets"] = presets
    options: dict[str, list[str]] = {}
    hook = "bench_cli_options"
    if any(impl.plugin_name == name for impl in getattr(b.pm.hook, hook).get_hookimpls()):
        for command in sorted(cli.commands):
            found: list = []
            try:
                b._caller(hook, name)(command=command, register=found.append)
            except Exception as exc:
                raise PluginError(f"plugin {name!r} raised in {hook}: {type(exc).__name__}: {exc}") from exc
            flags = [f"{o.flag} {o.metavar}" if o.metavar else o.flag for o in found if isinstance(o, CliOption)]
            if flags:
                options[command] = flags
    if options:
        added["cli_options"] = options
    plugin = b.pm.get_plugin(name)
    events = sorted(c.name for c in (b.pm.get_hookcallers(plugin) or []) if not c.name.startswith(_REGISTRATION_HOOKS))
    if events:
        added["hooks"] = events
    return added


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def plugins(as_json):
    """List installed plugins, their versions and what each adds: components, the presets of its
    models (the default marked), options of bench commands, and the run events it hooks into."""
    from bench.plugins import Bench

    b = Bench()
    infos = [{**info.as_dict(), **_plugin_additions(b, name)} for name, info in b.infos.items()]
    if as_json:
        click.echo(json.dumps(infos, indent=2))
        return
    for info in infos:
        origin = "first-party" if info["first_party"] else info["distribution"] or "local"
        click.echo(f"{info['name']} {info['version']} ({origin})")
        for kind, names in info["registers"].items():
            click.echo(f"  {kind}: {', '.join(names)}")
        for model, p in info.get("presets", {}).items():
            listed = ", ".join(f"{n} (default)" if n == p["default"] else n for n in p["presets"])
            click.echo(f"  presets of {model}: {listed}")
        for command, flags in info.get("cli_options", {}).items():
            click.echo(f"  options of bench {command}: {', '.join(flags)}")
        if info.get("hooks"):
            click.echo(f"  run events: {', '.join(info['hooks'])}")
        if not (info["registers"] or info.get("cli_options") or info.get("hooks")):
            click.echo("  (loaded; adds nothing yet)")


@cli.command()
@click.option("--plugin", "-p", "models", multiple=True, help="Only these models (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def mitigations(models, as_json):
    """List the mitigations (policies, trainer and decoding options), their papers, and on which
    models each applies (with the reason where it does not)."""
    from bench import mitigations as M
    from bench.plugins import Bench

    b = Bench()
    for m in models:
        b.models.get(m)  # an unknown model: a message with suggestions
    rows = M.table(b, models or None)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        where = row["where"]
        yes = [p for p, r in where.items() if r == "applies"]
        click.echo(f"{row['name']} ({row['kind']}{', ' + row['param'] if row['param'] else ''}): {row['description']}")
        if row["citation"]:
            click.echo(f"  after: {row['citation']}")
        click.echo(f"  applies to: {', '.join(yes) or 'none'}")
        for p, reason in where.items():
            if reason != "applies":
                click.echo(f"  n/a on {p}: {reason}")


@cli.command("new-plugin")
@click.argument("name")
@click.option("--dir", "parent", default=".", show_default=True, type=click.Path(file_okay=False),
              help="Folder to create the package NAME/ in.")
@click.option("--description", help="One line saying what the model is (pyproject.toml, README, the bundle).")
def new_plugin(name, parent, description):
    """Create a plugin package NAME/ that works as generated: a placeholder model registered as
    NAME, smoke and paper presets, a metric of its own, and passing tests (the conformance kit).

    \b
    NAME is what users pass to --plugin: lowercase letters, digits and hyphens.
    Example:
      bench new-plugin my-model --description "My model, refitted on its own samples"
    """
    from bench.scaffold import next_steps, scaffold

    target = scaffold(name, parent, description)
    click.echo(next_steps(target, name))


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    click.echo(f"Warning: {message}", err=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point: user mistakes end with a message and a non-zero exit, never a traceback."""
    import warnings

    warnings.showwarning = _show_warning
    try:
        cli.main(args=argv, prog_name="bench", standalone_mode=False)
    except click.exceptions.Abort as exc:  # click turns Ctrl-C into Abort
        if isinstance(exc.__cause__, KeyboardInterrupt):
            click.echo("Interrupted. Finished generations are kept: run the same command again to resume.",
                       err=True)
        else:
            click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("\nInterrupted. Finished generations are kept: run the same command again to resume.",
                   err=True)
        sys.exit(130)
    except BenchError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    except OSError as exc:
        from bench.loop import _os_message

        click.echo(f"Error: {_os_message(exc, Path(exc.filename or '.'))}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
