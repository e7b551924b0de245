"""Every hook of collapse-bench, in one place.

A plugin is a module (or object) with functions named like these specs and marked with
``@bench.hookimpl``; it is found through the ``collapse_bench`` entry-point group. The first-party
plugins in ``plugins/`` register through the same group. Registration hooks receive a ``register``
callback so one plugin can add several things; registering a second thing under a taken name is an
error that names both plugins. Hooks are documented for plugin authors in CONTRIBUTING.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import pluggy

from bench.components import Generator, Metric, Mitigation, ModelBundle, Policy, Scorer, Trainer, Verifier
from bench.types import Executor, RunInfo

if TYPE_CHECKING:  # typing only: bench.options sits above the plugin manager that loads this module
    from bench.components import CliOption

PROJECT = "collapse_bench"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)
"""Marks a plugin's function as the implementation of a hook: ``@bench.hookimpl`` above
``def bench_register_models(register): ...``. pluggy matches it to the hook of the same name."""


# --------------------------------------------------------------------------------------------------
# Registration: called once when the plugin manager starts.
# --------------------------------------------------------------------------------------------------


@hookspec
def bench_register_models(register: Callable[[ModelBundle], None]) -> None:
    """Register model bundles (what ``bench run --plugin NAME`` selects).

    :param register: call ``register(bench.ModelBundle(...))`` once per bundle.
    The harness adds each bundle to the model registry under its ``name``.
    """


@hookspec
def bench_register_trainers(register: Callable[[Trainer], None]) -> None:
    """Register trainers.

    :param register: call ``register(bench.Trainer(...))`` once per trainer.
    The loop calls the trainer's ``fit`` once per generation and saves the state it returns.
    """


@hookspec
def bench_register_generators(register: Callable[[Generator], None]) -> None:
    """Register generators.

    :param register: call ``register(bench.Generator(...))`` once per generator.
    The loop calls ``generate`` once per generation for as many samples as the real training set.
    """


@hookspec
def bench_register_scorers(register: Callable[[Scorer], None]) -> None:
    """Register scorers.

    :param register: call ``register(bench.Scorer(...))`` once per scorer.
    The loop scores each generation's samples under M_0 and M_k and stores the scores with them;
    the generic metrics are built on the scorer.
    """


@hookspec
def bench_register_metrics(register: Callable[[Metric], None]) -> None:
    """Register metrics.

    :param register: call ``register(bench.Metric(...))`` once per metric.
    The loop computes each metric a run asks for once per generation and writes one tidy row per
    value, with the metric's version and direction.
    """


@hookspec
def bench_register_policies(register: Callable[[Policy], None]) -> None:
    """Register data policies (what ``--policy NAME[:VALUE]`` selects).

    :param register: call ``register(bench.Policy(...))`` once per policy.
    The loop calls ``build`` to make the training data of every generation after the first.
    """


@hookspec
def bench_register_verifiers(register: Callable[[Verifier], None]) -> None:
    """Register verifiers (what a selecting policy's ``verifier`` parameter names).

    :param register: call ``register(bench.Verifier(...))`` once per verifier.
    Policies that select (``filter``, ``best-of``) score candidate samples with it.
    """


@hookspec
def bench_register_mitigations(register: Callable[[Mitigation], None]) -> None:
    """Register mitigations (what ``--mitigation NAME[:VALUE]`` selects and the suite table ranks).

    :param register: call ``register(bench.Mitigation(...))`` once per mitigation.
    A mitigation names a policy, or a trainer or generator parameter, with its citation and where
    it applies.
    """


@hookspec
def bench_register_executors(register: Callable[[Executor], None]) -> None:
    """Register executors (what ``bench sweep --executor NAME`` selects).

    :param register: call ``register(bench.Executor(...))`` once per executor.
    A sweep calls the executor's ``run(tasks, settings)`` with every run it did not skip and prints
    the :class:`bench.types.TaskResult` objects it yields as they arrive.
    """


# --------------------------------------------------------------------------------------------------
# Events: called while runs progress. Loggers hang here; their return values are ignored.
# --------------------------------------------------------------------------------------------------


@hookspec
def bench_run_started(run: RunInfo) -> None:
    """A run starts or resumes.

    :param run: the :class:`bench.types.RunInfo` (``run.path``, ``run.spec``, ``run.run_id``,
        ``run.done``: generations finished before this start).
    """


@hookspec
def bench_generation_finished(run: RunInfo, generation: int, metrics: list[dict[str, Any]]) -> None:
    """Generation ``generation`` has been written to disk (it survives a crash from here on).

    :param run: the :class:`bench.types.RunInfo`.
    :param generation: k, the generation whose row was written (model M_k).
    :param metrics: the metric rows written for it, as dicts (``metric``, ``value``, ...).
    """


@hookspec
def bench_run_finished(run: RunInfo, status: str, error: str | None) -> None:
    """A run stops.

    :param run: the :class:`bench.types.RunInfo`.
    :param status: ``complete``, ``interrupted`` or ``failed``.
    :param error: the reason when it failed, else None.
    """


# --------------------------------------------------------------------------------------------------
# Command line: called when ``bench run`` or ``bench sweep`` reads its options.
# --------------------------------------------------------------------------------------------------


@hookspec
def bench_cli_options(command: str, register: Callable[[CliOption], None]) -> None:
    """Add options to a ``bench`` command (the CLI itself names no plugin's flag).

    :param command: the command whose options are being read: ``run`` or ``sweep``.
    :param register: call ``register(bench.CliOption(...))`` once per option.
    The command shows each option in its help; a value given sets a model parameter
    (``param``), an executor option (``executor``, ``executor_option``), or is handed to the
    option's ``around`` context manager, entered around the runs. A flag registered by two plugins
    is an error naming both.
    """
