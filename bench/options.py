"""The options of a run, in one place: what ``bench run``, :mod:`bench.api` and sweep files accept.

:data:`KEYS` lists every option once; the keys a config file may hold, the grid axes of a sweep
file and the keyword names of :func:`bench.api.run` derive from it. :class:`RunOptions` holds one
set of choices, parsed and checked once (``keep_states``, ``threads``, seeds), whether they came
from flags, a config file or Python. :func:`resolve_checked` turns one seed's choices into a spec
and runs the model's own ``check``, so a dry run refuses what the real run would refuse.

Plugins add command-line options through the ``bench_cli_options`` hook with :class:`CliOption`
records (:func:`cli_options` collects them); the CLI itself names no plugin's flag.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.components import CliOption  # noqa: F401 (re-exported: plugins built against bench.options)
from bench.errors import BenchError

DEFAULT_PLUGIN = "gmm"  # the model of the README's first command; CLI and API share it
DEFAULT_OUT = "results"
DEFAULT_KEEP_STATES = "first-last"
ON_NONFINITE = ("stop", "record")  # what a run does when a state, samples or scores hold NaN or inf
DEFAULT_ON_NONFINITE = "stop"
MAX_DEFAULT_THREADS = 8


@dataclass(frozen=True)
class Key:
    """One option of a run: its name in config files, sweep files and the Python API.

    ``spec``: the option changes the resolved spec, so a sweep grid may sweep it."""

    name: str
    what: str
    spec: bool = False


KEYS: tuple[Key, ...] = (
    Key("plugin", f"the model (default {DEFAULT_PLUGIN})", spec=True),
    Key("preset", "the model's preset (default: its smoke preset)", spec=True),
    Key("generations", "generations after generation 0 (default: the preset's)", spec=True),
    Key("seeds", "one run per seed: 3, 0-4 or 0,2,7 (also `seed`)"),
    Key("policy", "the data policy: replace, mix:P, accumulate, ...", spec=True),
    Key("mitigation", "a mitigation label, or several joined with '+'", spec=True),
    Key("start", "where generations after the first start training", spec=True),
    Key("set", "parameter overrides; policy parameters as policy.KEY"),
    Key("metrics", "metrics instead of the model's defaults", spec=True),
    Key("trainer", "another trainer than the model's", spec=True),
    Key("generator", "another generator than the model's", spec=True),
    Key("scorer", "another scorer than the model's", spec=True),
    Key("out", f"the folder for run folders (default {DEFAULT_OUT}/)"),
    Key("keep_states", "model states kept: first-last (default), all or every:N"),
    Key("threads", "thread limit of numeric libraries during the runs (not part of the spec)"),
    Key("on_nonfinite", "on NaN or inf in a state, samples or scores: stop (default) fails the run, record "
        "goes on and marks the generations (not part of the spec)"),
)
OPTION_KEYS: tuple[str, ...] = tuple(k.name for k in KEYS)
SEEDS_KEY = "seeds"
SEED_ALIAS = "seed"  # `seed: 3` reads as `seeds: 3` in files
CONFIG_KEYS: tuple[str, ...] = (*OPTION_KEYS, SEED_ALIAS)
SPEC_KEYS: tuple[str, ...] = tuple(k.name for k in KEYS if k.spec)


# -- single values --------------------------------------------------------------------------------


def parse_keep_states(value: Any) -> str:
    """``first-last``, ``all`` or ``every:N`` (N >= 1), else a BenchError saying so."""
    if value in ("first-last", "all"):
        return value
    if isinstance(value, str) and value.startswith("every:") and value[6:].isdigit() and int(value[6:]) > 0:
        return value
    raise BenchError(f"keep_states (--keep-states) {value!r}: use first-last, all, or every:N with N >= 1")


def parse_on_nonfinite(value: Any) -> str:
    """``stop`` (None: the default) or ``record``, else a BenchError saying so."""
    if value is None:
        return DEFAULT_ON_NONFINITE
    if value not in ON_NONFINITE:
        raise BenchError(f"on_nonfinite (--on-nonfinite) {value!r}: use {' or '.join(ON_NONFINITE)}")
    return value


def parse_threads(value: Any, what: str = "threads (--threads)") -> int | None:
    """None (the default), or a whole number >= 1."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BenchError(f"{what} must be a whole number >= 1, got {value!r}")
    return value


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system says, else the count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_threads(workers: int = 1) -> int:
    """The thread limit when none is given: 1 per worker when several workers run; otherwise
    ``OMP_NUM_THREADS`` when it is set, else the available cores up to 8."""
    if workers > 1:
        return 1
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return min(available_cores(), MAX_DEFAULT_THREADS)


def metric_names(value: Any) -> tuple[str, ...] | None:
    """None, or the metric names: a string is one metric (never read letter by letter)."""
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Mapping) or not isinstance(value, Iterable) or not all(isinstance(m, str) for m in value):
        raise BenchError(f"metrics must be a metric name or a list of metric names, got {short(value)}")
    return tuple(value)


# -- the type and shape of each option's value ----------------------------------------------------


def short(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters: messages quote what a file held, briefly."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _is_text(value: Any) -> bool:
    return isinstance(value, str)


def _is_names(value: Any) -> bool:
    return isinstance(value, str) or isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)


def _is_whole(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _is_seeds(value: Any) -> bool:
    def one(v: Any) -> bool:
        return isinstance(v, str) or isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 0

    return one(value) or isinstance(value, (list, tuple, range)) and all(one(v) for v in value)


def _is_set(value: Any) -> bool:
    if isinstance(value, Mapping):
        return all(isinstance(k, str) for k in value)
    return _is_names(value)  # "key=value" items, as --set takes them


def is_path(value: Any) -> bool:
    """A file or folder name a file may give: text (or a path), not empty, without a NUL byte."""
    return isinstance(value, (str, os.PathLike)) and str(value) != "" and "\0" not in str(value)


# What each option's value must be (checked before anything resolves): a test and its description
# for messages. An option missing here (a plugin-independent one added later) is not type-checked.
EXPECTS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "plugin": (_is_text, "a model name such as gmm"),
    "preset": (_is_text, "a preset name such as smoke"),
    "generations": (lambda v: _is_whole(v, 0), "a non-negative whole number"),
    "seeds": (_is_seeds, "a seed >= 0 (3), a range (\"0-4\") or a list (\"0,2,7\" or [0, 2, 7])"),
    "policy": (_is_text, "a policy such as replace or mix:0.1"),
    "mitigation": (_is_names, "a mitigation such as best-of:4, or a list of them"),
    "start": (_is_text, "one of pretrained, gen0, previous"),
    "set": (_is_set, "a mapping of parameter name (text): value"),
    "metrics": (_is_names, "a metric name or a list of metric names"),
    "trainer": (_is_text, "a trainer name"),
    "generator": (_is_text, "a generator name"),
    "scorer": (_is_text, "a scorer name"),
    "out": (is_path, "a folder name"),
    "keep_states": (_is_text, "first-last, all or every:N"),
    "threads": (lambda v: _is_whole(v, 1), "a whole number >= 1"),
    "on_nonfinite": (_is_text, "stop or record"),
}


def check_value(key: str, value: Any, where: str = "", name: str | None = None) -> Any:
    """``value`` unchanged when its type and shape suit option ``key`` (``seed`` as ``seeds``; None
    means not given), else a BenchError naming ``where``, the key (or ``name``) and what it takes."""
    test = EXPECTS.get(SEEDS_KEY if key == SEED_ALIAS else key)
    if value is None or test is None or test[0](value):
        return value
    raise BenchError(f"{where + ': ' if where else ''}{name or key} must be {test[1]}, got {short(value)}")


def _overrides(value: Any, where: str) -> dict[str, Any]:
    from bench.spec import parse_assignments

    if value is None:
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, str):
        return parse_assignments([value])
    if isinstance(value, Iterable):
        return parse_assignments(value)
    raise BenchError(f"{where}: 'set' must be a mapping of parameter: value, got {value!r}")


# -- config files ---------------------------------------------------------------------------------


def load_config(path: str | Path) -> dict[str, Any]:
    """A whole run from a YAML or TOML file (keys as the ``bench run`` options)."""
    from bench.plugins import suggest
    from bench.spec import read_mapping

    path = Path(path)
    data = read_mapping(path)
    unknown = [k for k in data if k not in CONFIG_KEYS]
    if unknown:
        key = unknown[0]
        raise BenchError(
            f"config file {path}: unknown key {key!r}.{suggest(str(key), CONFIG_KEYS)} "
            f"Known keys: {', '.join(CONFIG_KEYS)}."
        )
    if "set" in data and not isinstance(data["set"], dict):
        raise BenchError(f"config file {path}: set must be a mapping of parameter: value, got {short(data['set'])}")
    if "seeds" in data and "seed" in data:
        raise BenchError(f"config file {path}: give either 'seeds' or 'seed', not both")
    for key, value in data.items():
        check_value(key, value, f"config file {path}")
    return data


# -- plugins' command-line options ----------------------------------------------------------------


def cli_options(bench: Any, command: str) -> list[CliOption]:
    """The options plugins add to ``bench COMMAND``, plugin by plugin; a flag registered twice is
    a PluginError naming both plugins."""
    from bench.plugins import PluginError

    hook = "bench_cli_options"
    found: list[CliOption] = []
    owners: dict[str, str] = {}
    plugins = dict.fromkeys(impl.plugin_name for impl in getattr(bench.pm.hook, hook).get_hookimpls())
    for plugin in plugins:
        def register(option: Any, _plugin: str = plugin) -> None:
            if not isinstance(option, CliOption):
                raise PluginError(f"plugin {_plugin!r} registered {type(option).__name__} through {hook}; "
                                  "expected bench.CliOption")
            if not option.flag.startswith("--") or len(option.flag) < 3:
                raise PluginError(f"plugin {_plugin!r}: option {option.flag!r} must be a long flag like --name")
            if option.flag in owners:
                raise PluginError(f"option {option.flag} of bench {command} is registered twice: by plugin "
                                  f"{owners[option.flag]!r} and by plugin {_plugin!r}")
            owners[option.flag] = _plugin
            found.append(option)

        try:
            bench._caller(hook, plugin)(command=command, register=register)
        except PluginError:
            raise
        except Exception as exc:
            raise PluginError(f"plugin {plugin!r} raised in {hook}: {type(exc).__name__}: {exc}") from exc
    return found


# -- one run's options ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RunOptions:
    """Every choice of a ``bench run``, checked. :meth:`parse` builds one from flags, a config
    file or Python keywords; :meth:`specs` resolves one spec per seed.

    ``threads``, ``keep_states`` and ``on_nonfinite`` shape how runs execute, never what a
    generation holds: none enters the spec, so none changes a run id."""

    plugin: str = DEFAULT_PLUGIN
    preset: str | None = None
    generations: int | None = None
    seeds: tuple[int, ...] = (0,)
    policy: str | None = None
    mitigation: str | tuple[str, ...] | None = None
    start: str | None = None
    set: Mapping[str, Any] = field(default_factory=dict)
    metrics: tuple[str, ...] | None = None
    trainer: str | None = None
    generator: str | None = None
    scorer: str | None = None
    out: Path = Path(DEFAULT_OUT)
    keep_states: str = DEFAULT_KEEP_STATES
    threads: int | None = None
    on_nonfinite: str = DEFAULT_ON_NONFINITE
    # values of plugins' command-line options (CliOption, value), in the order given
    plugin_options: tuple[tuple[CliOption, Any], ...] = ()

    @classmethod
    def parse(cls, values: Mapping[str, Any] | None = None, *, config: str | Path | None = None,
              plugin_options: Sequence[tuple[CliOption, Any]] = ()) -> RunOptions:
        """Options from ``values`` (keys of :data:`KEYS`; None means not given) over the values of
        the ``config`` file, over the defaults. ``set`` merges: the file's, then ``values``'."""
        from bench.plugins import suggest
        from bench.spec import parse_seeds

        values = {k: v for k, v in (values or {}).items() if v is not None}
        for key, value in values.items():
            if key not in OPTION_KEYS:
                raise BenchError(f"unknown option {key!r}.{suggest(key, OPTION_KEYS)} "
                                 f"Known options: {', '.join(OPTION_KEYS)}.")
            flag = "--metric" if key == "metrics" else "--" + key.replace("_", "-")
            check_value(key, value, name=f"{key} ({flag})")
        cfg = load_config(config) if config else {}
        where = f"config file {config}" if config else "options"

        def pick(key: str) -> Any:
            return values[key] if key in values else cfg.get(key)

        overrides = _overrides(cfg.get("set"), where)
        overrides.update(_overrides(values.get("set"), where))
        for option, value in plugin_options:
            if option.param is not None and value is not None:
                overrides[option.param] = value
        if "seeds" in values:
            seeds_value = values["seeds"]
        else:
            seeds_value = cfg.get("seeds", cfg.get(SEED_ALIAS, 0))
        try:
            seeds = parse_seeds(seeds_value)
        except BenchError as exc:
            raise BenchError(f"{where}: {exc}" if config and "seeds" not in values else str(exc)) from None
        plugin = pick("plugin") or DEFAULT_PLUGIN
        if not isinstance(plugin, str):
            raise BenchError(f"plugin must be a model name, got {plugin!r}")
        generations = pick("generations")
        if generations is not None and (isinstance(generations, bool) or not isinstance(generations, int)
                                        or generations < 0):
            raise BenchError(f"generations must be a non-negative integer, got {generations!r}")
        mitigation = pick("mitigation")
        if mitigation is not None and not isinstance(mitigation, str):
            mitigation = tuple(mitigation)
        return cls(
            plugin=plugin,
            preset=pick("preset"),
            generations=generations,
            seeds=tuple(seeds),
            policy=pick("policy"),
            mitigation=mitigation,
            start=pick("start"),
            set=overrides,
            metrics=metric_names(pick("metrics")),
            trainer=pick("trainer"),
            generator=pick("generator"),
            scorer=pick("scorer"),
            out=Path(pick("out") or DEFAULT_OUT),
            keep_states=parse_keep_states(DEFAULT_KEEP_STATES if pick("keep_states") is None
                                          else pick("keep_states")),
            threads=parse_threads(pick("threads")),
            on_nonfinite=parse_on_nonfinite(pick("on_nonfinite")),
            plugin_options=tuple((o, v) for o, v in plugin_options if v is not None),
        )

    def thread_limit(self, workers: int = 1) -> int:
        """The thread limit to run under: ``threads``, else :func:`default_threads`."""
        return self.threads if self.threads is not None else default_threads(workers)

    def specs(self, bench: Any, warn: Callable[[str], None] | None = None) -> list:
        """One resolved and checked spec per seed; ``warn`` gets the model check's warnings."""
        return [resolve_checked(bench, self.plugin, self.preset, seed=seed, generations=self.generations,
                                policy=self.policy, start=self.start, overrides=self.set,
                                metrics=None if self.metrics is None else list(self.metrics),
                                trainer=self.trainer, generator=self.generator, scorer=self.scorer,
                                mitigation=self.mitigation, warn=warn)
                for seed in self.seeds]


def resolve_checked(bench: Any, plugin: str, preset: str | None = None, *,
                    warn: Callable[[str], None] | None = None, **choices: Any):
    """:func:`bench.spec.resolve`, then the model bundle's own ``check`` of the parameters: what
    the run itself checks before it makes a folder, so ``--dry-run`` and sweeps refuse it too.
    ``warn`` gets the check's warnings (the run writes them to its log)."""
    from bench.spec import resolve

    spec = resolve(bench, plugin, preset, **choices)
    bundle = bench.models.get(spec.plugin)
    if bundle.check is not None:
        for message in bundle.check(spec.params) or ():
            if warn is not None:
                warn(message)
    return spec
