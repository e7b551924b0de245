"""The core's plain types, at the bottom of the layers: what a run is and what runs it.

Everything here is data that every layer passes around (the spec of a run, what event hooks get,
how a run ended, an executor's tasks and results), so it imports only the standard library. The
modules that use these types import them from here; their historic homes (:mod:`bench.spec`,
:mod:`bench.loop`, :mod:`bench.executors`) re-export them under the old names.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # typing only: executors sits above the loop, these types below it
    from bench.executors import ExecutorSettings

DEFAULT_GENERATIONS = 10


def digest(data: Any) -> str:
    """The 16-hex-digit SHA-256 of ``data`` as canonical JSON: run ids, track ids, entry ids."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


_digest = digest  # the historic private name, still imported by callers


# -- a run --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """Everything that changes a run's results; :func:`bench.spec.resolve` builds one."""

    plugin: str
    preset: str
    params: dict[str, Any]
    trainer: str
    generator: str
    scorer: str
    metrics: list[str]
    policy: str
    policy_params: dict[str, Any]
    start: str
    seed: int
    generations: int = DEFAULT_GENERATIONS

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Spec":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})

    def identity(self) -> dict[str, Any]:
        """The spec without the generation count: what the run id hashes."""
        data = self.to_dict()
        del data["generations"]
        return data

    @property
    def run_id(self) -> str:
        return digest(self.identity())

    @property
    def gen0_id(self) -> str:
        data = self.identity()
        for key in ("policy", "policy_params", "start"):
            del data[key]
        return digest(data)

    @property
    def policy_label(self) -> str:
        """``mix:0.1`` style: the policy with its positional value, for names and tables."""
        if not self.policy_params:
            return self.policy
        values = ",".join(f"{v}" for v in self.policy_params.values() if v is not None)
        return f"{self.policy}:{values}" if values else self.policy

    @property
    def folder_name(self) -> str:
        """``gmm-paper-mix-0.1-s0-1a2b3c4d``: readable, and unique through the run id."""
        slug = re.sub(r"[^A-Za-z0-9.]+", "-", f"{self.plugin}-{self.preset}-{self.policy_label}").strip("-")
        return f"{slug}-s{self.seed}-{self.run_id[:8]}"


@dataclass
class RunInfo:
    """What event hooks get: where a run lives and what it is (``done``: generations finished
    before this start)."""

    path: Path
    spec: Spec
    run_id: str
    done: int = 0


@dataclass
class RunOutcome:
    """How a run ended: ``status`` is ``complete``, ``interrupted``, ``failed`` or ``busy``."""

    path: Path
    spec: Spec
    status: str
    generations_done: int
    error: str | None = None


# -- what runs the runs of a sweep --------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """One unit of work for an executor: run (or resume) these specs into ``out``.

    ``specs`` are :meth:`Spec.to_dict` dicts (plain data, so any engine can ship them); more than
    one only when they differ in seed alone and their trainer batches. ``threads`` is the thread
    limit of the worker that runs the task.
    """

    specs: tuple[dict[str, Any], ...]
    out: str
    keep_states: str = "first-last"
    threads: int = 1
    on_nonfinite: str = "stop"  # bench.options.ON_NONFINITE

    @property
    def folders(self) -> list[str]:
        return [str(Path(self.out) / Spec.from_dict(d).folder_name) for d in self.specs]


@dataclass(frozen=True)
class TaskResult:
    """How one run of a task ended: ``complete``, ``failed`` (``error`` says why, one line),
    ``busy`` (another process holds the run folder's lock: not a failure, that process runs it) or
    ``finished`` (already complete when the worker got to it: another process finished it first)."""

    folder: str
    run_id: str
    status: str
    generations_done: int = 0
    error: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"folder": self.folder, "run_id": self.run_id, "status": self.status,
                "generations_done": self.generations_done, "error": self.error,
                "seconds": round(self.seconds, 3)}


@dataclass(frozen=True)
class Executor:
    """Runs many runs: ``run(tasks, settings)`` yields one :class:`TaskResult` per spec of every
    task, as they finish, by calling :func:`bench.executors.execute_task` in its workers.

    ``settings`` is a :class:`bench.executors.ExecutorSettings`. ``options`` names the executor's
    own options with their defaults; a sweep refuses any other key. ``check(settings)``, called
    before anything runs, raises :class:`bench.BenchError` when the engine is missing (naming the
    extra to install) or an option is wrong.
    """

    name: str
    run: Callable[[Sequence[Task], ExecutorSettings], Iterable[TaskResult]]
    options: Mapping[str, Any] = field(default_factory=dict)
    check: Callable[[ExecutorSettings], None] | None = None
    description: str = ""
    version: str = "1"


_EXPONENT_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)[eE][-+]?\d+")


def parse_scalar(text: str) -> Any:
    """A value typed by the user (``--set``, a policy value) read as a YAML scalar, except that
    numbers with an exponent are floats, as one would expect of ``1e-2``."""
    if _EXPONENT_NUMBER.fullmatch(text.strip()):
        return float(text)
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text
