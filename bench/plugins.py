"""Finding plugins and keeping what they register.

Plugins come from the ``collapse_bench`` entry-point group. The first-party plugins (those shipped
by the ``collapse-bench`` distribution) always load; ``BENCH_PLUGINS`` restricts the third-party
ones: unset loads all of them, a comma-separated list loads only those entry-point names, an empty
value loads none. ``BENCH_TRACE=1`` prints every hook call to stderr.
"""

from __future__ import annotations

import difflib
import os
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Generic, Iterable, Protocol, TypeVar

import pluggy

from bench import hookspecs
from bench.components import Generator, Metric, Mitigation, ModelBundle, Policy, Scorer, Trainer, Verifier
from bench.errors import BenchError
from bench.types import Executor

ENTRY_POINT_GROUP = "collapse_bench"
ENV_PLUGINS = "BENCH_PLUGINS"
ENV_TRACE = "BENCH_TRACE"
FIRST_PARTY_DIST = "collapse-bench"

# registry kind -> (hook that fills it, class of what it holds)
KINDS: dict[str, tuple[str, type]] = {
    "models": ("bench_register_models", ModelBundle),
    "trainers": ("bench_register_trainers", Trainer),
    "generators": ("bench_register_generators", Generator),
    "scorers": ("bench_register_scorers", Scorer),
    "metrics": ("bench_register_metrics", Metric),
    "policies": ("bench_register_policies", Policy),
    "verifiers": ("bench_register_verifiers", Verifier),
    "mitigations": ("bench_register_mitigations", Mitigation),
    "executors": ("bench_register_executors", Executor),
}


SINGULAR = {"models": "model", "trainers": "trainer", "generators": "generator", "scorers": "scorer",
            "metrics": "metric", "policies": "policy", "executors": "executor",
            "verifiers": "verifier", "mitigations": "mitigation"}


class PluginError(BenchError):
    """A plugin misbehaved: a duplicate name, a wrong registration, an exception in a hook."""


@dataclass
class PluginInfo:
    name: str
    version: str
    dist: str
    first_party: bool
    registers: dict[str, list[str]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "distribution": self.dist,
            "first_party": self.first_party,
            "registers": {k: sorted(v) for k, v in self.registers.items() if v},
        }


def suggest(name: str, choices: Iterable[str]) -> str:
    """' Did you mean ...?' for near names, or ''."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


class Named(Protocol):
    """What a registry holds: anything with a ``name`` (the component dataclasses)."""

    @property
    def name(self) -> str: ...


T = TypeVar("T", bound=Named)


class Registry(Generic[T]):
    """Things of one kind by unique name, each remembering the plugin that registered it."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, tuple[T, str]] = {}

    def add(self, item: T, plugin: str) -> None:
        name = item.name
        if name in self._items:
            other = self._items[name][1]
            raise PluginError(
                f"{SINGULAR[self.kind]} {name!r} is registered twice: by plugin {other!r} and by plugin "
                f"{plugin!r}. Uninstall one of them, or limit third-party plugins with "
                f"{ENV_PLUGINS}=name,name."
            )
        self._items[name] = (item, plugin)

    def get(self, name: str) -> T:
        try:
            return self._items[name][0]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise BenchError(
                f"unknown {SINGULAR[self.kind]} {name!r}.{suggest(name, self._items)} "
                f"Known {self.kind}: {known}. `bench plugins` lists what is installed."
            ) from None

    def plugin_of(self, name: str) -> str:
        return self._items[name][1]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items


class Bench:
    """A loaded set of plugins and their registries. Make one per process; there is no global."""

    def __init__(self, extra_plugins: Iterable[Any] = (), entry_points: bool = True) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self.registries: dict[str, Registry[Any]] = {kind: Registry(kind) for kind in KINDS}
        self._callers: dict[tuple[str, str], Any] = {}
        if os.environ.get(ENV_TRACE, "") not in ("", "0"):
            self._enable_tracing()
        if entry_points:
            self._load_entry_points()
        for plugin in extra_plugins:
            name = getattr(plugin, "__name__", None) or type(plugin).__name__
            self._register(plugin, PluginInfo(name, getattr(plugin, "__version__", "0"), "", False))
        self._collect()

    # -- loading ----------------------------------------------------------------------------------

    def _load_entry_points(self) -> None:
        allowed_env = os.environ.get(ENV_PLUGINS)
        allowed = None if allowed_env is None else {s.strip() for s in allowed_env.split(",") if s.strip()}
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = ep.dist.name if ep.dist is not None else ""
            first_party = _normalise(dist) == FIRST_PARTY_DIST
            if not first_party and allowed is not None and ep.name not in allowed:
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken third-party package must not hide the others' names
                raise PluginError(
                    f"plugin {ep.name!r} (from {dist or 'unknown distribution'}) failed to import: "
                    f"{type(exc).__name__}: {exc}. Fix or uninstall it, or skip it with "
                    f"{ENV_PLUGINS}=<the plugins you want>."
                ) from exc
            version = ep.dist.version if ep.dist is not None else "0"
            self._register(plugin, PluginInfo(ep.name, version, dist, first_party))

    def _register(self, plugin: Any, info: PluginInfo) -> None:
        if info.name in self.infos:
            other = self.infos[info.name]
            raise PluginError(
                f"two plugins are named {info.name!r}: from {other.dist or 'code'} and from "
                f"{info.dist or 'code'}. Uninstall one of them."
            )
        try:
            self.pm.register(plugin, name=info.name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {info.name!r} does not fit the hook specs: {exc}") from exc
        self.infos[info.name] = info

    def _collect(self) -> None:
        for kind, (hook, cls) in KINDS.items():
            # once per plugin: its caller runs every implementation it has of this hook
            plugins = dict.fromkeys(impl.plugin_name for impl in getattr(self.pm.hook, hook).get_hookimpls())
            for plugin in plugins:
                registry = self.registries[kind]
                names = self.infos[plugin].registers.setdefault(kind, [])

                def register(item: Any, _plugin=plugin, _registry=registry, _cls=cls, _names=names) -> None:
                    if not isinstance(item, _cls):
                        raise PluginError(
                            f"plugin {_plugin!r} registered {type(item).__name__} through {hook}; "
                            f"expected bench.{_cls.__name__}"
                        )
                    _registry.add(item, _plugin)
                    _names.append(item.name)

                caller = self._caller(hook, plugin)
                try:
                    caller(register=register)
                except PluginError:
                    raise
                except Exception as exc:
                    raise PluginError(
                        f"plugin {plugin!r} raised in {hook}: {type(exc).__name__}: {exc}"
                        + ("" if self.infos[plugin].first_party else
                           " (to run without it: BENCH_PLUGINS=" + ",".join(
                               n for n, i in self.infos.items() if not i.first_party and n != plugin)
                           + " loads only the other third-party plugins)")
                    ) from exc

    def _caller(self, hook: str, plugin: str):
        """A caller of ``hook`` limited to one plugin, so that its errors can be attributed."""
        key = (hook, plugin)
        if key not in self._callers:
            others = [p for name, p in self.pm.list_name_plugin() if name != plugin]
            self._callers[key] = self.pm.subset_hook_caller(hook, remove_plugins=others)
        return self._callers[key]

    def _enable_tracing(self) -> None:
        import time

        started: dict[int, float] = {}

        def before(hook_name, hook_impls, kwargs):
            names = ", ".join(impl.plugin_name for impl in hook_impls)
            args = ", ".join(f"{k}={_short(v)}" for k, v in kwargs.items())
            print(f"[bench trace] {hook_name}({args}) -> [{names}]", file=sys.stderr)
            started[id(kwargs)] = time.perf_counter()

        def after(outcome, hook_name, hook_impls, kwargs):
            ms = (time.perf_counter() - started.pop(id(kwargs), time.perf_counter())) * 1e3
            exc = outcome.exception
            if exc is not None:
                print(f"[bench trace] {hook_name} raised {type(exc).__name__}: {exc} ({ms:.1f} ms)", file=sys.stderr)
            elif not hook_name.startswith("bench_register_"):
                print(f"[bench trace] {hook_name} done in {ms:.1f} ms", file=sys.stderr)

        self.pm.add_hookcall_monitoring(before, after)

    # -- access -----------------------------------------------------------------------------------

    @property
    def models(self) -> Registry[ModelBundle]:
        return self.registries["models"]

    @property
    def trainers(self) -> Registry[Trainer]:
        return self.registries["trainers"]

    @property
    def generators(self) -> Registry[Generator]:
        return self.registries["generators"]

    @property
    def scorers(self) -> Registry[Scorer]:
        return self.registries["scorers"]

    @property
    def metrics(self) -> Registry[Metric]:
        return self.registries["metrics"]

    @property
    def policies(self) -> Registry[Policy]:
        return self.registries["policies"]

    @property
    def verifiers(self) -> Registry[Verifier]:
        return self.registries["verifiers"]

    @property
    def mitigations(self) -> Registry[Mitigation]:
        return self.registries["mitigations"]

    @property
    def executors(self) -> Registry[Executor]:
        return self.registries["executors"]

    def plugin_info(self, name: str) -> PluginInfo:
        return self.infos[name]

    def owner(self, kind: str, name: str) -> PluginInfo:
        """The plugin that registered ``name`` in registry ``kind``."""
        return self.infos[self.registries[kind].plugin_of(name)]

    def emit(self, hook: str, **kwargs: Any) -> None:
        """Call an event hook plugin by plugin, naming the plugin that raises."""
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            try:
                self._caller(hook, impl.plugin_name)(**kwargs)
            except Exception as exc:
                raise PluginError(
                    f"plugin {impl.plugin_name!r} raised in {hook}: {type(exc).__name__}: {exc}"
                ) from exc


def _normalise(dist: str) -> str:
    return dist.lower().replace("_", "-").replace(".", "-")


def _short(value: Any) -> str:
    """A hook argument as the trace shows it: what it is, not its repr's noise."""
    if callable(value) and getattr(value, "__name__", "") == "register":
        return "register"
    if hasattr(value, "run_id") and hasattr(value, "path"):  # a RunInfo
        return f"<run {Path(value.path).name}, {getattr(value, 'done', 0)} done>"
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return f"<{len(value)} metric rows>"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
