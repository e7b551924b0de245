"""The conformance kit: checks that a model plugin or a policy honours the plugin contract on a
small preset.

Third parties run it in their own test suite, either by subclassing :class:`PluginContract` or
:class:`PolicyContract` (one test per check) or through the ``bench_conformance`` and
``bench_policy_conformance`` pytest fixtures (see bench/pytest_plugin.py), or from a script with
:func:`check_plugin` and :func:`check_policy`. Every check runs the real harness
(``bench.api.run``) and reads what it wrote with ``bench.results``; a model's contract costs five
short runs (a run, an identical repeat, a run cut one generation short and then extended, and one
generation with another seed), three more for each warm start (``--start previous``, ``gen0``),
plus direct calls of the trainer, generator and scorer on generation 0. A policy's costs three runs
of a host model bundle with the policy and direct calls of its ``build``.

Contract breaches never raise: they come back as :class:`Finding` values whose messages say what
is wrong, how to fix it, and which sentence of CONTRIBUTING.md it breaks. docs/conformance.md
describes every check. At the top this module imports only the standard library, NumPy and
bench.components (itself NumPy only), because the pytest plugin may load it in every session
where collapse-bench is installed.
"""

from __future__ import annotations

import math
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from bench.components import GenerateRequest, RealRequest, ScoreRequest

# The checks, in the order they run; PluginContract has one test method per check.
CHECKS = ("bundle", "samples", "determinism", "nll-units", "metric-directions", "resume", "state", "batch",
          "warm-start")
# The checks of a policy (check_policy, PolicyContract), run on a host model bundle.
POLICY_CHECKS = ("policy-samples", "policy-rng", "policy-resume")
# The starts of generations >= 1 besides `pretrained` that the warm-start check runs (`--start`).
WARM_STARTS = ("previous", "gen0")
# The model bundle a policy is checked on unless another is named: first-party, CPU, seconds.
POLICY_HOST = "gaussian"

# Sentences of CONTRIBUTING.md ("Writing a plugin" and the hook reference) that the checks enforce;
# tests/test_conformance.py keeps them word for word in sync with the file.
CONTRACT = {
    "samples": "Samples are `bench.Samples(kind, array)`, first axis = samples; kinds are `vectors`, "
               "`tokens`, `images`, `categorical`.",
    "generate": "`generate(request: bench.GenerateRequest) -> bench.Samples`: `request.n` samples from the model.",
    "state": "Model state is a flat `dict[str, np.ndarray]`, saved with safetensors. No Python objects.",
    "randomness": "All randomness comes from the `rng` you are given (and `load_real` from the seed): a run "
                  "must be deterministic for a seed, and a resumed run must end as an uninterrupted one.",
    "nats": "Log-likelihoods are in nats; `units` counts what they are over (dimensions, tokens, pixels).",
    "names": "Names are global: prefix protocol-specific metric names with your model's name.",
    "batch": "Each state must equal, bit for bit, what `fit` returns for that request alone (resume and "
             "determinism rely on it)",
    "presets": "Every model should have `smoke` (CPU, offline, seconds to minutes) and `paper`.",
    "direction": "`direction`: `higher`, `lower`, or `target` with `target` the value to be near.",
}

# Kinds whose samples are discrete outcomes: their log-likelihoods are log-probabilities, <= 0.
DISCRETE_KINDS = ("tokens", "categorical")
# Rounding allowed above 0 for the log-probability of a discrete outcome, per unit (float32 sums).
DISCRETE_SLACK = 1e-5
# The normalisation checks: a categorical model's probabilities are summed exactly (float64
# rounding), a 1-D density is integrated by the trapezoid rule on a fine grid (discretisation and
# the mass beyond the grid are far below 1%, so 2% separates "sums to 1" from "does not").
CATEGORICAL_MASS_TOL = 1e-6
DENSITY_MASS_TOL = 0.02
DENSITY_GRID = 4001
DENSITY_GRID_2D = 401  # points per axis for 2-D vectors (160,801 scored points)
MAX_CATEGORICAL_STATES = 100_000
# How many differences a message lists before it says "and N more".
SHOWN = 5


def _contract(key: str) -> str:
    return f' The contract (CONTRIBUTING.md): "{CONTRACT[key]}"'


@dataclass(frozen=True)
class Finding:
    """The outcome of one check: ``ok`` False is a contract breach; ``note`` marks advice that does
    not fail the check (``ok`` is then True)."""

    check: str
    ok: bool
    message: str
    note: bool = False

    def __str__(self) -> str:
        status = "note" if self.note else ("ok" if self.ok else "FAIL")
        return f"[{self.check}] {status}: {self.message}"


class ConformanceNote(UserWarning):
    """Advice from the conformance kit that does not fail a check (shown in pytest's warning summary)."""


def fail_on_breaches(findings: list[Finding], who: str, headline: str) -> list[Finding]:
    """In a pytest test: notes become ConformanceNote warnings, breaches fail the test (listing
    each under ``headline``); returns the findings when nothing failed."""
    import pytest

    for finding in findings:
        if finding.note:
            warnings.warn(ConformanceNote(f"{who} [{finding.check}]: {finding.message}"), stacklevel=3)
    failed = [f for f in findings if not f.ok]
    if failed:
        pytest.fail(headline.replace("{checks}", str(len({f.check for f in failed}))) + ":\n"
                    + "\n".join(str(f) for f in failed), pytrace=False)
    return findings


def format_findings(findings: Iterable[Finding]) -> str:
    """The failed findings first, then the notes, one per paragraph."""
    findings = list(findings)
    failed = [f for f in findings if not f.ok]
    notes = [f for f in findings if f.note]
    return "\n\n".join(str(f) for f in failed + notes)


class _Unavailable(Exception):
    """Something a check needs could not be made (the bundle does not resolve, a run failed)."""


def _err(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _listed(problems: list[str]) -> str:
    shown = "; ".join(problems[:SHOWN])
    return shown + (f"; and {len(problems) - SHOWN} more" if len(problems) > SHOWN else "")


# --------------------------------------------------------------------------------------------------
# Comparing arrays and runs
# --------------------------------------------------------------------------------------------------


def _same(a: Any, b: Any) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind in "fc":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def _difference(a: Any, b: Any) -> str:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return f"shapes {a.shape} and {b.shape}"
    if a.dtype != b.dtype:
        return f"dtypes {a.dtype} and {b.dtype}"
    if a.dtype.kind in "fiub" and a.size:
        with np.errstate(invalid="ignore", over="ignore"):
            diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
        both_nan = np.isnan(a.astype(np.float64)) & np.isnan(b.astype(np.float64))
        differ = ~both_nan & ~(diff == 0)
        largest = np.nanmax(np.where(differ, diff, np.nan)) if differ.any() else 0.0
        return f"{int(differ.sum())} of {a.size} values differ, by up to {largest:.3g}"
    return "values differ"


def _samples_dir(run: Path, k: int) -> Path:
    """The folder holding generation k (its own, or its chunk)."""
    from bench import runfolder as RF

    return RF.generation_unit(run, k)[2]


def _gen_samples(run: Path, k: int):
    """Generation k's samples and score columns, whether committed alone or in a chunk."""
    from bench import runfolder as RF

    return RF.generation_samples(run, k)


def _metric_values(run: Path) -> dict[tuple[int, str], float]:
    """(generation, metric) -> value, without the rows that measure the machine (throughput/*)."""
    from bench import results as R

    rows = R.read_metrics(run, validate=False).select(["generation", "metric", "value"]).to_pylist()
    return {(r["generation"], r["metric"]): r["value"] for r in rows if not r["metric"].startswith("throughput/")}


def _resume_problems(main: Path, resumed: Path, generations: int) -> list[str]:
    """How a run extended to ``generations`` in ``resumed`` differs from the uninterrupted ``main``."""
    from bench import results as R

    info = R.read_json(resumed / R.RUN_JSON)
    problems = []
    if info.get("status") != "complete" or info.get("generations_done") != generations + 1:
        problems.append(f"the extended run ended {info.get('status')!r} with {info.get('generations_done')} "
                        f"generation(s) done")
    return problems + _compare_runs(main, resumed, generations)


def _compare_runs(a: Path, b: Path, generations: int, states: bool = False) -> list[str]:
    """What differs between two runs' samples, scores and metrics (and states when asked)."""

    problems = []
    for k in range(generations + 1):
        sa, ca = _gen_samples(a, k)
        sb, cb = _gen_samples(b, k)
        if not _same(sa.data, sb.data):
            problems.append(f"generation {k}: samples differ ({_difference(sa.data, sb.data)})")
        for name in sorted(set(ca) | set(cb)):
            if name not in ca or name not in cb or not _same(ca[name], cb[name]):
                problems.append(f"generation {k}: score column {name!r} differs")
        for name in sorted(set(sa.columns) | set(sb.columns)):
            if list(sa.columns.get(name, [])) != list(sb.columns.get(name, [])):
                problems.append(f"generation {k}: sample column {name!r} differs")
        if states:
            from bench import runfolder as RF

            xa, xb = RF.generation_state(a, k), RF.generation_state(b, k)
            if xa is not None and xb is not None:
                for key in sorted(set(xa) | set(xb)):
                    if key not in xa or key not in xb or not _same(xa[key], xb[key]):
                        what = _difference(xa[key], xb[key]) if key in xa and key in xb else "missing in one"
                        problems.append(f"generation {k}: state array {key!r} differs ({what})")
    ma, mb = _metric_values(a), _metric_values(b)
    for key in sorted(set(ma) ^ set(mb)):
        problems.append(f"metric {key[1]!r} at generation {key[0]} is written by only one run")
    for key in sorted(set(ma) & set(mb)):
        va, vb = ma[key], mb[key]
        if not (va == vb or (va is not None and vb is not None and math.isnan(va) and math.isnan(vb))):
            problems.append(f"metric {key[1]!r} at generation {key[0]}: {va!r} vs {vb!r}")
    return problems


# --------------------------------------------------------------------------------------------------
# What samples and scores must look like
# --------------------------------------------------------------------------------------------------


def _layout_problems(data: np.ndarray, kind: str) -> list[str]:
    """The array layout of a sample kind (bench/components.py): vectors (n, d) numbers, tokens
    (n, L) integers, images (n, H, W[, ...]) numbers, categorical (n,) integers."""
    numeric = data.dtype.kind in "fiu"
    integer = data.dtype.kind in "iu"
    if kind == "vectors" and not (data.ndim == 2 and numeric):
        return [f"vectors must be a 2-D (n, d) array of numbers; got {data.dtype} {data.shape}"]
    if kind == "tokens" and not (data.ndim == 2 and integer):
        return [f"tokens must be a 2-D (n, L) array of integer ids; got {data.dtype} {data.shape}"]
    if kind == "images" and not (data.ndim >= 3 and numeric):
        return [f"images must be an (n, H, W) array of numbers; got {data.dtype} {data.shape}"]
    if kind == "categorical" and not (data.ndim == 1 and integer):
        return [f"categorical samples must be a 1-D (n,) array of integer states; got {data.dtype} {data.shape}"]
    return []


def _score_problems(scores: Any, samples: Any, kind: str, what: str) -> list[str]:
    """Shapes, dtypes, finiteness, the sign of discrete log-probabilities and the unit counts."""
    from bench.components import Scores

    if not isinstance(scores, Scores):
        return [f"{what}: the scorer returned {type(scores).__name__}; return bench.Scores(loglik, units)"]
    n = len(samples)
    loglik, units = np.asarray(scores.loglik), np.asarray(scores.units)
    problems = []
    if loglik.shape != (n,):
        problems.append(f"{what}: loglik has shape {loglik.shape}; it must be ({n},), one value per sample")
    if units.shape != (n,):
        problems.append(f"{what}: units has shape {units.shape}; it must be ({n},), one count per sample")
    if problems:
        return problems
    if loglik.dtype.kind != "f":
        problems.append(f"{what}: loglik has dtype {loglik.dtype}; it must be floating point")
    else:
        if np.isnan(loglik).any():
            problems.append(f"{what}: {int(np.isnan(loglik).sum())} of {n} log-likelihoods are NaN; "
                            "use -inf for samples the model cannot produce, and fix the NaN")
        if np.isposinf(loglik).any():
            problems.append(f"{what}: {int(np.isposinf(loglik).sum())} of {n} log-likelihoods are +inf")
    if units.dtype.kind not in "fiu":
        problems.append(f"{what}: units has dtype {units.dtype}; it must hold numbers")
        return problems
    u = units.astype(np.float64)
    if not (np.isfinite(u).all() and (u > 0).all()):
        problems.append(f"{what}: units must be finite and > 0 (each sample counts its dimensions, tokens "
                        f"or pixels); got values from {np.nanmin(u)!r} to {np.nanmax(u)!r}")
        return problems
    if kind in DISCRETE_KINDS and loglik.dtype.kind == "f":
        finite = np.where(np.isfinite(loglik), loglik, -np.inf)
        above = finite > DISCRETE_SLACK * np.maximum(u, 1.0)
        if above.any():
            problems.append(
                f"{what}: {int(above.sum())} of {n} log-likelihoods are positive (largest {finite.max():.4g}); "
                f"the log-probability of a discrete outcome ({kind}) is at most 0. Return log p in nats, "
                "not -log p or a loss")
    data = np.asarray(samples.data)
    if kind == "vectors" and data.ndim == 2 and not (u == data.shape[1]).all():
        problems.append(f"{what}: units must equal the dimension d = {data.shape[1]} of each vector; "
                        f"got {_values(u)}")
    if kind == "images" and data.ndim >= 3:
        pixels = int(np.prod(data.shape[1:]))
        if not (u == pixels).all():
            problems.append(f"{what}: units must equal the pixels per image, {' x '.join(map(str, data.shape[1:]))}"
                            f" = {pixels}; got {_values(u)}")
    if kind == "tokens" and data.ndim == 2 and (u > data.shape[1]).any():
        problems.append(f"{what}: units count the scored tokens, at most the sequence length {data.shape[1]}; "
                        f"got up to {u.max():g}")
    if kind == "categorical" and not (u == 1).all():
        problems.append(f"{what}: a categorical sample is one outcome, so units must be 1; got {_values(u)}")
    return problems


def _values(u: np.ndarray) -> str:
    distinct = np.unique(u)
    shown = ", ".join(f"{v:g}" for v in distinct[:SHOWN])
    return shown + (", ..." if distinct.size > SHOWN else "")


# --------------------------------------------------------------------------------------------------
# The shared runs
# --------------------------------------------------------------------------------------------------


class Conformance:
    """The runs and direct calls the checks share, made lazily and once; ``check(name)`` runs one
    check. :func:`check_plugin` and :class:`PluginContract` are built on it."""

    names = CHECKS  # the checks this kit runs, in order
    # The generations of the seed + 1 run between the two parts of the resumed run: generation 0
    # calls every component of a model; a policy is first called for generation 1.
    interlude_generations = 0

    def __init__(self, plugin: str, preset: str = "smoke", *, generations: int = 2, seed: int = 0,
                 set: Mapping[str, Any] | None = None, extra_plugins: Iterable[Any] = (),
                 workdir: str | Path | None = None, starts: Iterable[str] = WARM_STARTS,
                 policy: str | None = None, start: str | None = None) -> None:
        from bench.components import STARTS
        from bench.errors import BenchError

        starts = (starts,) if isinstance(starts, str) else tuple(starts)
        wrong = [s for s in starts if s not in WARM_STARTS]
        if wrong:
            raise BenchError(f"starts names {', '.join(map(repr, wrong))}; the warm starts are "
                             f"{', '.join(WARM_STARTS)} (starts=() leaves the warm-start check out)")
        if start is not None and start not in STARTS:
            raise BenchError(f"start must be one of {', '.join(STARTS)}; got {start!r}")
        if policy is not None and (not isinstance(policy, str) or not policy):
            raise BenchError(f"name the policy to run (what --policy selects); got {policy!r}")
        if not isinstance(plugin, str) or not plugin:
            raise BenchError(f"name the model bundle to check (what --plugin selects); got {plugin!r}")
        if isinstance(generations, bool) or not isinstance(generations, int) or generations < 1:
            raise BenchError(f"generations must be an integer >= 1 (the resume check stops one generation "
                             f"early); got {generations!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise BenchError(f"seed must be a non-negative integer; got {seed!r}")
        if set is not None and not isinstance(set, Mapping):
            raise BenchError(f"set must be a mapping of parameter overrides, e.g. {{'n_samples': 20}}; got {set!r}")
        self.plugin = plugin
        self.preset = preset
        self.generations = generations
        self.seed = seed
        self.overrides = dict(set or {})
        self.extra_plugins = tuple(extra_plugins)
        self.starts = starts
        self.policy = policy
        self.start = start
        self._derived: dict[str, Conformance] = {}
        self._tmp = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="bench-conformance-")
            self.root = Path(self._tmp.name)
        else:
            Path(workdir).mkdir(parents=True, exist_ok=True)
            # A fresh folder each time: runs left by an earlier check must not stand in for new ones.
            self.root = Path(tempfile.mkdtemp(prefix="conformance-", dir=workdir))
        self._memo: dict[str, tuple[bool, Any]] = {}

    def validate(self) -> None:
        """Raise BenchError when ``set`` holds what ``bench run --set`` would refuse (a parameter
        that neither the bundle nor its components have, a value of the wrong type): a mistake of
        the caller, said once, not per check. The spec is resolved as ``bench run`` resolves it, so
        the kit accepts exactly what ``--set`` accepts; a bundle that does not resolve even without
        ``set`` is the plugin's fault, which the checks report."""
        from bench.errors import BenchError

        if not self.overrides or self.plugin not in self.bench.models:  # the bundle check reports it
            return
        try:
            self._specs({})
        except Exception:
            return
        try:
            self._specs(self.overrides)
        except BenchError as exc:
            raise BenchError(f"conformance check of {self.plugin!r}, set={self.overrides!r}: {exc}") from None

    def _specs(self, overrides: Mapping[str, Any]):
        from bench import api

        return api.specs(self.plugin, self.preset, seeds=self.seed, generations=self.generations, set=overrides,
                         policy=self.policy, start=self.start, bench=self.bench)

    def close(self) -> None:
        """Remove the temporary folder (when the kit made it)."""
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # -- running checks -----------------------------------------------------------------------------

    def check(self, name: str) -> list[Finding]:
        """The findings of one check (at least one); a prerequisite that fails is a failed finding."""
        from bench.errors import BenchError

        if name not in self.names:
            raise BenchError(f"unknown conformance check {name!r}; the checks are {', '.join(self.names)}")
        method = getattr(self, "check_" + name.replace("-", "_"))
        try:
            findings = method()
        except _Unavailable as exc:
            findings = [Finding(name, False, f"not checked: {exc}")]
        except Exception as exc:  # the plugin raised where the check called it directly
            import traceback

            frame = traceback.extract_tb(exc.__traceback__)[-1]
            findings = [Finding(name, False, f"the check stopped on an error raised at {frame.filename}:"
                                f"{frame.lineno} ({frame.name}): {_err(exc)}")]
        return findings

    def run_all(self, checks: Iterable[str] | None = None) -> list[Finding]:
        return [f for name in (self.names if checks is None else checks) for f in self.check(name)]

    # -- lazily made things ---------------------------------------------------------------------------

    @property
    def bench(self):
        def load():
            from bench.plugins import Bench

            return Bench(extra_plugins=self.extra_plugins)

        return self._once("bench", load, "the plugins did not load (if your plugin is installed through its "
                          "entry point, do not also pass it in extra_plugins)")

    @property
    def bundle(self):
        return self._once("bundle", lambda: self.bench.models.get(self.plugin),
                          f"no model bundle {self.plugin!r}")

    @property
    def spec(self):
        def resolve():
            return self._specs(self.overrides)[0]

        return self._once("spec", resolve, f"the spec of {self.plugin!r} with preset {self.preset!r} does not resolve")

    @property
    def real(self):
        def load():
            return self.bundle.load_real(RealRequest(self.spec.params, self.seed))

        return self._once("real", load, f"load_real of {self.plugin!r} raised")

    def command(self, generations: int | None = None, seed: int | None = None) -> str:
        """The ``bench run`` command of one of the kit's runs, to reproduce it by hand."""
        parts = [f"bench run --plugin {self.plugin} --preset {self.preset}",
                 f"--seeds {self.seed if seed is None else seed}",
                 f"--generations {self.generations if generations is None else generations}"]
        parts += [f"--{option} {value}" for option, value in (("policy", self.policy), ("start", self.start))
                  if value is not None]
        parts += [f"--set {k}={v}" for k, v in self.overrides.items()]
        return " ".join(parts)

    def _run(self, folder: str, generations: int, seed: int) -> Path:
        from bench import api

        _ = self.spec  # a spec that does not resolve is the reason, not the run
        outcomes = api.run(self.plugin, self.preset, out=self.root / folder, bench=self.bench, seeds=seed,
                           generations=generations, set=self.overrides, policy=self.policy, start=self.start,
                           keep_states="all")
        return outcomes[0].path

    def run(self, folder: str) -> Path:
        """The run folder of "main" or "repeat" (the same spec, in two folders)."""
        return self._once(folder, lambda: self._run(folder, self.generations, self.seed),
                          f"the run `{self.command()}` failed")

    def _once(self, key: str, compute: Callable[[], Any], failure: str) -> Any:
        if key not in self._memo:
            try:
                self._memo[key] = (True, compute())
            except _Unavailable as exc:
                self._memo[key] = (False, str(exc))
            except Exception as exc:
                # A message pointing into a temporary folder: say how to keep that folder.
                kept = self._tmp is not None and str(self.root) in str(exc)
                self._memo[key] = (False, f"{failure}: {_err(exc)}" + (
                    " (the kit removes its folder afterwards; pass workdir= to keep it)" if kept else ""))
        return self._made(key)

    def _sequence(self) -> None:
        """The resumed run and the other-seed run, in this order: the first generations of the
        resumed run, one generation with seed + 1 (it overwrites whatever a plugin keeps in memory,
        as a new process would), then the resumed run extended to the full count."""
        if "sequence" in self._memo:
            return
        self._memo["sequence"] = (True, None)
        g, s = self.generations, self.seed
        try:
            self._once("resumed-part", lambda: self._run("resumed", g - 1, s),
                       f"the first part of the resumed run, `{self.command(g - 1)}`, failed")
        except _Unavailable:
            pass
        try:
            between = self.interlude_generations
            self._once("other-seed", lambda: self._run("other-seed", between, s + 1),
                       f"the run `{self.command(between, s + 1)}` failed")
        except _Unavailable:
            pass

        def extend() -> Path:
            self._made("resumed-part")  # the first part's failure is the reason
            return self._run("resumed", g, s)

        try:
            self._once("resumed", extend, f"extending the run to `{self.command()}` in the same folder failed")
        except _Unavailable:
            pass

    def _made(self, key: str) -> Any:
        ok, value = self._memo[key]
        if not ok:
            raise _Unavailable(value)
        return value

    def resumed(self) -> Path:
        self._sequence()
        return self._made("resumed")

    def other_seed(self) -> Path:
        self._sequence()
        return self._made("other-seed")

    def components(self):
        b, spec = self.bench, self.spec
        return b.trainers.get(spec.trainer), b.generators.get(spec.generator), b.scorers.get(spec.scorer)

    def _fit0(self):
        """The trainer's own return value for generation 0, fitted exactly as the loop fits M_0."""
        from bench.components import FitRequest
        from bench.loop import INIT, TRAIN, rng

        trainer = self.components()[0]
        spec, real = self.spec, self.real
        init = trainer.initial_state(spec.params, rng(spec.seed, 0, INIT)) if trainer.initial_state else None
        request = FitRequest(data=real.train, validation=real.validation, start="pretrained", init=init,
                             params=spec.params, rng=rng(spec.seed, 0, TRAIN), generation=0)
        return trainer.fit(request)

    def raw_state0(self):
        return self._once("raw-state0", self._fit0, f"the trainer {self.spec.trainer!r} raised fitting generation 0")

    def state0(self) -> dict[str, np.ndarray]:
        """M_0's state as the loop hands it on: each value passed through np.asarray."""
        def convert():
            raw = self.raw_state0()
            if not isinstance(raw, Mapping):
                raise _Unavailable(f"the trainer returned {type(raw).__name__}, not a dict of arrays")
            return {k: np.asarray(v) for k, v in raw.items()}

        return self._once("state0", convert, "the trainer's state is not a dict of arrays")

    def samples0(self, stream_seed: int | None = None):
        """S_1 drawn directly by the generator from M_0, with the loop's random stream (or another)."""
        from bench.loop import GENERATE, rng

        _, generator, _ = self.components()
        spec, real = self.spec, self.real
        if stream_seed is None:
            return self._once("samples0", lambda: generator.generate(
                GenerateRequest(self.state0(), len(real.train), real.train, spec.params,
                                rng(spec.seed, 0, GENERATE), 0)),
                f"the generator {spec.generator!r} raised on generation 0's state")
        return generator.generate(GenerateRequest(self.state0(), len(real.train), real.train, spec.params,
                                                  np.random.default_rng([stream_seed, 0xC0FFEE]), 0))

    # -- the checks ---------------------------------------------------------------------------------

    def check_bundle(self) -> list[Finding]:
        """The bundle resolves with the preset; its components exist and accept its kind; presets."""
        from bench.components import SAMPLE_KINDS
        from bench.spec import DEFAULT_POLICY, PRESET_KEYS, split_policy

        name = "bundle"
        b = self.bench
        if self.plugin not in b.models:
            known = ", ".join(b.models.names())
            return [Finding(name, False, f"no model bundle named {self.plugin!r} is registered (known: {known}). "
                            "Register it with `bench.ModelBundle(name=...)` in `bench_register_models`, and "
                            "install your package so its `collapse_bench` entry point is found, or pass the "
                            "plugin object in extra_plugins.")]
        bundle = b.models.get(self.plugin)
        out: list[Finding] = []

        def fail(msg: str) -> None:
            out.append(Finding(name, False, msg))

        if bundle.kind not in SAMPLE_KINDS:
            fail(f"the bundle's kind {bundle.kind!r} is not a sample kind; use one of {', '.join(SAMPLE_KINDS)}."
                 + _contract("samples"))
        for role, registry, comp_name in (("trainer", b.trainers, bundle.trainer),
                                          ("generator", b.generators, bundle.generator),
                                          ("scorer", b.scorers, bundle.scorer)):
            if comp_name not in registry:
                fail(f"the bundle's {role} {comp_name!r} is not registered. Register a bench.{role.title()} "
                     f"named {comp_name!r} in `bench_register_{role}s`, or fix the name in the ModelBundle.")
            elif bundle.kind not in registry.get(comp_name).kinds:
                kinds = ", ".join(registry.get(comp_name).kinds)
                fail(f"the {role} {comp_name!r} accepts {kinds} samples, not the bundle's {bundle.kind}. "
                     f"Add {bundle.kind!r} to its `kinds`, or pick a {role} for {bundle.kind}.")
        for metric in bundle.metrics:
            if metric not in b.metrics:
                fail(f"the bundle's metric {metric!r} is not registered. Register a bench.Metric named "
                     f"{metric!r} in `bench_register_metrics`, or remove it from the bundle's metrics.")
            elif bundle.kind not in b.metrics.get(metric).kinds:
                fail(f"the metric {metric!r} accepts {', '.join(b.metrics.get(metric).kinds)} samples, not the "
                     f"bundle's {bundle.kind}; drop it from the bundle's metrics or widen its `kinds`.")
        params = {}
        for registry, comp_name in ((b.trainers, bundle.trainer), (b.generators, bundle.generator),
                                    (b.scorers, bundle.scorer)):
            if comp_name in registry:
                params.update(registry.get(comp_name).params)
        params.update(bundle.params)
        for preset, values in bundle.presets.items():
            unknown = sorted(k for k in values if k not in params and k not in PRESET_KEYS)
            if unknown:
                fail(f"preset {preset!r} sets {', '.join(map(repr, unknown))}, which the bundle and its components "
                     "do not declare; add them to the bundle's `params` with a default, or fix the preset.")
            policy = values.get("policy", DEFAULT_POLICY)
            if isinstance(policy, str) and split_policy(policy)[0] not in b.policies:
                fail(f"preset {preset!r} names the policy {policy!r}, which is not registered "
                     f"(known: {', '.join(b.policies.names())}).")
        if "smoke" not in bundle.presets:
            fail("the bundle has no `smoke` preset: add presets={'smoke': {...}} with settings that run on a CPU, "
                 "offline, in seconds to minutes." + _contract("presets"))
        if bundle.default_preset not in bundle.presets:
            fail(f"the bundle's default_preset {bundle.default_preset!r} is not one of its presets "
                 f"({', '.join(bundle.presets) or 'none'}), so `bench run --plugin {self.plugin}` fails; "
                 "add that preset or change default_preset.")
        if not out:
            try:
                spec = self.spec
            except _Unavailable as exc:
                fail(f"{exc}")
            else:
                out.append(Finding(name, True, f"{self.plugin!r} ({bundle.kind}) resolves with preset {self.preset!r}: "
                                   f"trainer {spec.trainer}, generator {spec.generator}, scorer {spec.scorer}, "
                                   f"policy {spec.policy_label}, {len(spec.metrics)} metric(s)."))
        if "paper" not in bundle.presets:
            out.append(Finding(name, True, "the bundle has no `paper` preset: add one holding the published "
                               "protocol's settings, so others can reproduce it." + _contract("presets"), note=True))
        return out

    def check_samples(self) -> list[Finding]:
        """Real data of the bundle's kind; the generator makes n samples of that kind, and every
        generation of the run holds len(real train) samples."""
        from bench.components import RealData, Samples

        name, kind = "samples", self.bundle.kind
        real = self.real
        problems = []
        if not isinstance(real, RealData):
            return [Finding(name, False, f"load_real returned {type(real).__name__}; return "
                            "bench.RealData(train=bench.Samples(...), test=bench.Samples(...)).")]
        for split in ("train", "test", "validation"):
            part = getattr(real, split)
            if part is None and split == "validation":
                continue
            if not isinstance(part, Samples):
                problems.append(f"load_real's {split} split is {type(part).__name__}, not bench.Samples")
            elif part.kind != kind:
                problems.append(f"load_real's {split} split holds {part.kind} samples; the bundle makes {kind}")
            else:
                problems += [f"load_real's {split} split: {p}" for p in _layout_problems(np.asarray(part.data), kind)]
        if isinstance(real.train, Samples) and len(real.train) == 0:
            problems.append("load_real's train split is empty")
        if problems:
            return [Finding(name, False, _listed(problems) + "." + _contract("samples"))]
        n = len(real.train)
        samples = self.samples0()
        if not isinstance(samples, Samples):
            problems.append(f"the generator {self.spec.generator!r} returned {type(samples).__name__}; return "
                            f"bench.Samples({kind!r}, array)")
        else:
            if samples.kind != kind:
                problems.append(f"the generator returned {samples.kind} samples; the bundle makes {kind}")
            if len(samples) != n:
                problems.append(f"asked for n = {n} samples (the size of the real training set), the generator "
                                f"returned {len(samples)}; return exactly n samples along the first axis")
            data = np.asarray(samples.data)
            problems += [f"the generator's samples: {p}" for p in _layout_problems(data, kind)]
            want = np.asarray(real.train.data).shape[1:]
            if samples.kind == kind and data.shape[1:] != want:
                problems.append(f"each generated sample has shape {data.shape[1:]}, a real training sample "
                                f"{want}; they must match, since policies mix real and synthetic samples")
        try:
            run = self.run("main")
        except _Unavailable as exc:
            problems.append(f"{exc}")
        else:
            for k in range(self.generations + 1):
                written, _ = _gen_samples(run, k)
                if len(written) != n or written.kind != kind:
                    problems.append(f"generation {k} of the run wrote {len(written)} {written.kind} samples; "
                                    f"expected {n} {kind} samples (len(real.train))")
        if problems:
            return [Finding(name, False, _listed(problems) + "." + _contract("generate") + _contract("samples"))]
        shape = f"of shape {want}" if want else "of one value each"
        return [Finding(name, True, f"the generator makes {n} {kind} samples {shape} when asked for {n}, "
                                    f"and every generation 0..{self.generations} of the run holds {n}.")]

    def check_determinism(self) -> list[Finding]:
        """Same seed, two folders: identical samples, scores, states and metrics; another seed:
        different samples; the components reproduce generation 0 when called directly."""
        from bench import results as R

        name = "determinism"
        out: list[Finding] = []
        fix = (" Draw every random number from the rng you are given (FitRequest.rng, generate's rng, "
               "MetricContext.rng, PolicyContext.rng), seed other libraries from it (e.g. "
               "torch.manual_seed(int(rng.integers(2**31)))), and keep nothing between calls in globals."
               + _contract("randomness"))
        main, repeat = self.run("main"), self.run("repeat")
        problems = _compare_runs(main, repeat, self.generations, states=True)
        if problems:
            out.append(Finding(name, False, f"two runs of `{self.command()}` in different folders differ: "
                               f"{_listed(problems)}." + fix))
        saved0, _ = _gen_samples(main, 0)
        direct = self.samples0()
        if not _same(np.asarray(direct.data), saved0.data):
            out.append(Finding(name, False, "calling the trainer and the generator directly with the loop's random "
                               "streams for generation 0 does not reproduce the run's generation-0 samples "
                               f"({_difference(direct.data, saved0.data)})." + fix))
        state_file = _samples_dir(main, 0) / "state.safetensors"
        if state_file.exists():
            saved = R.read_state(state_file)
            state0 = self.state0()
            differ = [k for k in sorted(set(saved) | set(state0))
                      if k not in saved or k not in state0 or not _same(saved[k], state0[k])]
            if differ:
                out.append(Finding(name, False, "fitting generation 0 again with the same random stream gives a "
                                   f"different state (arrays {', '.join(map(repr, differ[:SHOWN]))})." + fix))
        other = self.other_seed()
        other0, _ = _gen_samples(other, 0)
        if _same(other0.data, saved0.data):
            out.append(Finding(name, False, f"seeds {self.seed} and {self.seed + 1} give the same generation-0 "
                               "samples: the seed does not reach load_real or the generator. Draw the real data "
                               "from the seed load_real is given and samples from the rng generate is given."
                               + _contract("randomness")))
        if not out:
            out.append(Finding(name, True, f"two runs of seed {self.seed} are identical in samples, scores, states "
                               f"and metrics (throughput/* rows aside); seed {self.seed + 1} differs."))
            again = self.samples0(stream_seed=1)
            if _same(np.asarray(again.data), np.asarray(direct.data)):
                out.append(Finding(name, True, "the generator returned the same samples for two different rngs. "
                                   "That is right for deterministic decoding (greedy or beam search); a random "
                                   "generator that does this ignores its rng (a fixed seed inside?).", note=True))
        return out

    def check_nll_units(self) -> list[Finding]:
        """Scores in nats with one value and one unit count per sample; units match the kind."""
        name, kind = "nll-units", self.bundle.kind
        _, _, scorer = self.components()
        state, samples, real, params = self.state0(), self.samples0(), self.real, self.spec.params
        problems = []
        for what, data in (("generated samples", samples), ("real test set", real.test)):
            scores = scorer.score(ScoreRequest(state, data, params))
            problems += _score_problems(scores, data, kind, f"scores of the {what} under M_0")
        fix = (" Return bench.Scores(loglik=<natural-log likelihood per sample, shape (n,)>, "
               "units=<units per sample, shape (n,)>)." + _contract("nats"))
        if problems:
            return [Finding(name, False, _listed(problems) + "." + fix)]
        mass = self._normalisation(scorer, state, samples)
        out = []
        if mass is None:
            detail = ("the normalisation check needs a categorical model or 1-D or 2-D vectors; "
                      f"for this {kind} model only the shapes, signs and units were checked")
            out.append(Finding(name, True, "nats versus bits was not checked: " + detail
                               + ". Test your scorer against a reference density in your own tests.", note=True))
        else:
            where, nats, bits = mass
            tol = CATEGORICAL_MASS_TOL if kind == "categorical" else DENSITY_MASS_TOL
            if abs(nats - 1) <= tol:
                detail = f"exp(loglik) sums to {nats:.6f} over {where}"
            elif abs(bits - 1) <= tol:
                return [Finding(name, False, f"the scorer returns log-likelihoods in bits: 2**loglik sums to "
                                f"{bits:.6f} over {where}, exp(loglik) to {nats:.6f}. Multiply log2 values by "
                                "ln 2 (or use np.log / torch.log_softmax)." + fix)]
            elif nats > 1 + tol:
                return [Finding(name, False, f"exp(loglik) sums to {nats:.6g} over {where}, more than 1: these are "
                                "not normalised log-probabilities in nats (a log in another base, or a missing "
                                "normalising constant)." + fix)]
            else:
                detail = (f"exp(loglik) sums to {nats:.6f} over {where}; the model may put the rest of its mass "
                          "elsewhere, so nats versus bits was not decided")
                out.append(Finding(name, True, detail + ".", note=True))
        out.insert(0, Finding(name, True, f"loglik and units have one finite value per sample with the right units "
                              f"for {kind}; {detail}."))
        return out

    def _normalisation(self, scorer, state, samples):
        """(where, sum of exp(loglik), sum of 2**loglik) over all outcomes of a categorical model
        seen in the data, or the trapezoid integral over a grid for 1-D vectors; None otherwise."""
        from bench.components import Samples

        kind, real, params = self.bundle.kind, self.real, self.spec.params
        if kind == "categorical":
            seen = np.concatenate([np.asarray(s.data).ravel() for s in (real.train, real.test, samples)])
            k = int(seen.max()) + 1 if seen.size else 0
            if not 0 < k <= MAX_CATEGORICAL_STATES or seen.min() < 0:
                return None
            states = Samples("categorical", np.arange(k, dtype=seen.dtype))
            loglik = np.asarray(scorer.score(ScoreRequest(state, states, params)).loglik, dtype=np.float64)
            return f"the states 0..{k - 1}", float(np.exp(loglik).sum()), float(np.exp2(loglik).sum())
        if kind == "vectors":
            parts = [np.asarray(s.data, dtype=np.float64) for s in (real.test, samples)]
            if all(p.ndim == 2 and p.shape[1] == 2 for p in parts):
                return self._normalisation_2d(scorer, state, np.concatenate(parts))
            if any(p.ndim != 2 or p.shape[1] != 1 for p in parts):
                return None
            x = np.concatenate([p[:, 0] for p in parts])
            x = x[np.isfinite(x)]
            if not x.size:
                return None
            lo, hi = float(x.min()), float(x.max())
            width = (hi - lo) or 1.0
            grid = np.linspace(lo - width, hi + width, DENSITY_GRID)
            dtype = np.asarray(real.test.data).dtype
            grid_samples = Samples("vectors", grid[:, None].astype(dtype))
            loglik = np.asarray(scorer.score(ScoreRequest(state, grid_samples, params)).loglik, dtype=np.float64)
            return (f"a grid on [{grid[0]:.3g}, {grid[-1]:.3g}]", float(np.trapezoid(np.exp(loglik), grid)),
                    float(np.trapezoid(np.exp2(loglik), grid)))
        return None

    def _normalisation_2d(self, scorer, state, x):
        """The trapezoid integral of exp(loglik) and 2**loglik on a grid over 2-D vectors."""
        from bench.components import Samples

        x = x[np.isfinite(x).all(axis=1)]
        if not x.size:
            return None
        axes = []
        for j in range(2):
            lo, hi = float(x[:, j].min()), float(x[:, j].max())
            width = (hi - lo) or 1.0
            axes.append(np.linspace(lo - width, hi + width, DENSITY_GRID_2D))
        gx, gy = np.meshgrid(*axes, indexing="ij")
        points = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.asarray(self.real.test.data).dtype)
        loglik = np.asarray(scorer.score(ScoreRequest(state, Samples("vectors", points), self.spec.params)).loglik,
                            dtype=np.float64).reshape(gx.shape)

        def integral(values):
            return float(np.trapezoid(np.trapezoid(values, axes[1], axis=1), axes[0]))

        where = (f"a {DENSITY_GRID_2D}x{DENSITY_GRID_2D} grid on [{axes[0][0]:.3g}, {axes[0][-1]:.3g}] x "
                 f"[{axes[1][0]:.3g}, {axes[1][-1]:.3g}]")
        return where, integral(np.exp(loglik)), integral(np.exp2(loglik))

    def check_metric_directions(self) -> list[Finding]:
        """Every metric has a direction (and a target exactly for 'target'); every row carries it."""
        from bench import results as R
        from bench.components import DIRECTIONS

        name = "metric-directions"
        b, spec = self.bench, self.spec
        problems, out = [], []
        registered = {}
        for metric_name in spec.metrics:
            metric = b.metrics.get(metric_name)
            registered[metric_name] = metric
            if metric.direction not in DIRECTIONS:
                problems.append(f"metric {metric_name!r} has direction {metric.direction!r}; use one of "
                                f"{', '.join(DIRECTIONS)}")
            elif (metric.direction == "target") != (metric.target is not None):
                problems.append(f"metric {metric_name!r}: give target=<the value to be near> exactly when "
                                f"direction='target' (direction {metric.direction!r}, target {metric.target!r})")
            elif metric.target is not None and not math.isfinite(float(metric.target)):
                problems.append(f"metric {metric_name!r} has target {metric.target!r}; it must be a finite number")
        run = self.run("main")
        table = R.read_metrics(run, validate=False)
        problems += R.validate_metrics(table, "the run's metrics.parquet")
        rows = table.select(["generation", "metric", "value", "direction", "target"]).to_pylist()
        seen = {(r["generation"], r["metric"].split("/", 1)[0]) for r in rows}
        for r in rows:
            if r["metric"].startswith("throughput/"):
                continue
            base = r["metric"].split("/", 1)[0]
            metric = registered.get(base)
            if metric is None:
                problems.append(f"row {r['metric']!r} belongs to no metric of the spec")
            elif r["direction"] != metric.direction or r["target"] != metric.target:
                problems.append(f"row {r['metric']!r} at generation {r['generation']} carries direction "
                                f"{r['direction']!r}, target {r['target']!r}; the metric declares "
                                f"{metric.direction!r}, {metric.target!r}")
        for metric_name in spec.metrics:
            missing = [k for k in range(self.generations + 1) if (k, metric_name) not in seen]
            if missing:
                problems.append(f"metric {metric_name!r} wrote no row at generation(s) {missing}; return a float or "
                                "a non-empty dict of floats")
        if problems:
            return [Finding(name, False, _listed(problems) + "." + _contract("direction"))]
        out.append(Finding(name, True, f"{len(spec.metrics)} metric(s) declare a direction, and all {len(rows)} "
                           "rows of the run carry it."))
        odd = sorted({r["metric"] for r in rows if not (isinstance(r["value"], float) and math.isfinite(r["value"]))})
        if odd:
            out.append(Finding(name, True, f"metric rows with non-finite values: {', '.join(odd[:SHOWN])}; fine if "
                               "the metric is undefined there, otherwise a bug.", note=True))
        owner = b.owner("models", self.plugin)
        models = owner.registers.get("models", [])
        prefixes = tuple(f"{model}{sep}" for model in models for sep in ("-", "/", "_"))
        unprefixed = [m for m in owner.registers.get("metrics", []) if not m.startswith(prefixes)]
        if unprefixed:
            out.append(Finding(name, True, f"plugin {owner.name!r} registers metric(s) {', '.join(unprefixed)} "
                               f"without a model name prefix ({' or '.join(f'{m}-...' for m in models)}). "
                               "Fine for a generic metric any model can use; a metric of your protocol should be "
                               "prefixed." + _contract("names"), note=True))
        return out

    def check_resume(self) -> list[Finding]:
        """generations-1, then extended to generations in the same folder, ends as the uninterrupted run."""
        name = "resume"
        main, resumed = self.run("main"), self.resumed()
        problems = _resume_problems(main, resumed, self.generations)
        if problems:
            return [Finding(name, False, f"running `{self.command(self.generations - 1)}`, then one generation of "
                            f"another seed, then `{self.command()}` in the first folder does not end as the "
                            f"uninterrupted run: {_listed(problems)}. A resumed run starts in a new process from "
                            "the saved state alone: take the previous model from FitRequest.init, not from memory, "
                            "keep no counters or caches in module globals, and draw randomness from the rng."
                            + _contract("randomness"))]
        return [Finding(name, True, f"stopping after generation {self.generations - 1} and extending to "
                        f"{self.generations} gives the uninterrupted run's samples and metrics.")]

    def check_batch(self) -> list[Finding]:
        """A trainer with ``fit_batch`` gives each request the state ``fit`` gives it alone, bit for
        bit, in batches of any order (real data of two seeds and generation 0's samples)."""
        from bench.components import FitRequest
        from bench.loop import TRAIN, rng

        name = "batch"
        trainer = self.components()[0]
        if trainer.fit_batch is None:
            return [Finding(name, True, f"not applicable: trainer {trainer.name!r} has no fit_batch")]
        spec, real = self.spec, self.real
        state0 = self.state0()
        synthetic = self.samples0()

        def request(data, seed, k, init):
            return FitRequest(data=data, validation=real.validation, start="pretrained" if k == 0 else spec.start,
                              init=init, params=spec.params, rng=rng(seed, k, TRAIN), generation=k)

        # Fresh requests for every call: a request's rng is consumed by the fit.
        def requests():
            return [request(real.train, spec.seed, 0, None), request(real.train, spec.seed + 1, 0, None),
                    request(synthetic, spec.seed, 1, state0)]

        alone = [trainer.fit(r) for r in requests()]
        problems = []
        for order in ((0, 1, 2), (2, 0, 1)):
            batch = requests()
            states = trainer.fit_batch([batch[i] for i in order])
            if not isinstance(states, (list, tuple)) or len(states) != 3:
                problems.append(f"fit_batch returned {type(states).__name__} of length "
                                f"{len(states) if hasattr(states, '__len__') else '?'} for 3 requests")
                break
            for pos, i in enumerate(order):
                got, want = states[pos], alone[i]
                if not isinstance(got, Mapping) or set(got) != set(want):
                    problems.append(f"request {i} in batch order {order}: keys "
                                    f"{sorted(got) if isinstance(got, Mapping) else type(got).__name__} "
                                    f"differ from fit's {sorted(want)}")
                    continue
                for key in want:
                    if not _same(got[key], want[key]):
                        problems.append(f"request {i} in batch order {order}: {key!r}: "
                                        f"{_difference(got[key], want[key])}")
        if problems:
            return [Finding(name, False, f"fit_batch of {trainer.name!r} does not give the states fit gives "
                            f"alone: {_listed(problems)}.{_contract('batch')}")]
        return [Finding(name, True, f"fit_batch of {trainer.name!r} equals fit bit for bit on 3 requests in 2 orders")]

    def check_state(self) -> list[Finding]:
        """The trainer returns a flat dict of arrays; every saved state loads as one."""
        from bench import results as R

        name = "state"
        problems, notes = [], []
        raw = self.raw_state0()
        if not isinstance(raw, Mapping):
            problems.append(f"the trainer {self.spec.trainer!r} returned {type(raw).__name__}, not a dict")
        else:
            for key, value in raw.items():
                if not isinstance(key, str):
                    problems.append(f"state key {key!r} is a {type(key).__name__}; keys must be strings")
                elif isinstance(value, Mapping):
                    inner = next(iter(value), "name")
                    problems.append(f"state[{key!r}] is a nested dict; flatten it into keys like '{key}.{inner}'")
                else:
                    try:
                        array = np.asarray(value)
                    except Exception as exc:
                        problems.append(f"state[{key!r}] does not convert to an array ({_err(exc)})")
                        continue
                    if array.dtype.kind not in "biuf":
                        problems.append(f"state[{key!r}] becomes a {array.dtype} array; safetensors holds only "
                                        "numbers and booleans")
                    elif not isinstance(value, np.ndarray):
                        notes.append(key)
        try:
            self.run("main")
        except _Unavailable:
            if not problems:  # the trainer's own output looked right: the run's error is the news
                raise
        files = []
        for folder in ("main", "repeat", "resumed", "other-seed"):
            made, run = self._memo.get(folder, (False, None))
            if made:
                files += sorted((run / R.GENS_DIR).glob("*/state.safetensors"))
        if not files and not problems:
            problems.append("the run saved no state.safetensors")
        for path in files:
            try:
                state = R.read_state(path)
            except Exception as exc:
                problems.append(f"{path} does not load with safetensors ({_err(exc)})")
                continue
            bad = [k for k, v in state.items() if not (isinstance(k, str) and isinstance(v, np.ndarray))]
            if bad:
                problems.append(f"{path} holds non-array entries {bad[:SHOWN]}")
        if not problems and isinstance(raw, Mapping):
            saved = R.read_state(_samples_dir(self.run("main"), 0) / "state.safetensors")
            for key, value in raw.items():
                array = np.asarray(value)
                if key not in saved or saved[key].dtype != array.dtype or saved[key].shape != array.shape:
                    got = f"{saved[key].dtype} {saved[key].shape}" if key in saved else "missing"
                    problems.append(f"state[{key!r}] ({array.dtype} {array.shape}) comes back from "
                                    f"state.safetensors as {got}")
        if problems:
            return [Finding(name, False, _listed(problems) + "." + _contract("state"))]
        out = [Finding(name, True, f"the trainer returns a flat dict of {len(raw)} array(s), and all {len(files)} "
                       "saved state.safetensors load as flat dicts of NumPy arrays.")]
        if notes:
            out.append(Finding(name, True, f"state values {', '.join(map(repr, notes[:SHOWN]))} are not NumPy arrays "
                               "(the harness converts them with np.asarray); return arrays to be explicit.", note=True))
        return out

    # -- warm starts ----------------------------------------------------------------------------------

    def derived(self, folder: str, **changes: Any) -> "Conformance":
        """The same kit with other run options (``start``, ``policy``), its runs in ``folder`` under
        this kit's root and its plugins shared; made once per folder."""
        import copy

        if folder not in self._derived:
            _ = self.bench  # load the plugins once, for both kits
            other = copy.copy(self)
            other.__dict__.update(changes)
            other._tmp = None  # the folder belongs to this kit
            other.root = self.root / folder
            other._memo = {"bench": self._memo["bench"]}
            other._derived = {}
            self._derived[folder] = other
        return self._derived[folder]

    def check_warm_start(self) -> list[Finding]:
        """With ``--start previous`` and ``--start gen0``: the runs hold n samples a generation, a
        run resumed after generation ``generations - 1`` ends as the uninterrupted one, and the
        trainer leaves the ``init`` state it is given as it found it."""
        from bench import results as R
        from bench.components import FitRequest
        from bench.loop import TRAIN, rng

        name = "warm-start"
        if not self.starts:
            return [Finding(name, True, "not applicable: starts=() leaves the warm starts out")]
        trainer = self.components()[0]
        n = len(self.real.train)
        problems = []
        for start in self.starts:
            kit = self.derived(f"start-{start}", start=start)
            where = f"with `--start {start}`"
            try:
                main, resumed = kit.run("main"), kit.resumed()
            except _Unavailable as exc:
                problems.append(f"{where}: {exc}")
                continue
            for k in range(self.generations + 1):
                written, _ = _gen_samples(main, k)
                if len(written) != n:
                    problems.append(f"{where}: generation {k} wrote {len(written)} samples; expected {n}")
            info = R.read_json(resumed / R.RUN_JSON)
            if info.get("status") != "complete" or info.get("generations_done") != self.generations + 1:
                problems.append(f"{where}: the extended run ended {info.get('status')!r} with "
                                f"{info.get('generations_done')} generation(s) done")
            differ = _compare_runs(main, resumed, self.generations, states=True)
            if differ:
                problems.append(f"{where}: running `{kit.command(self.generations - 1)}`, then one generation of "
                                f"another seed, then `{kit.command()}` in the first folder does not end as the "
                                f"uninterrupted run: {_listed(differ)}")
            # The harness hands the same arrays on (M_0 to every generation with gen0): a trainer
            # that writes into them changes the reference model and the next generations' start.
            init = {key: np.array(value, copy=True) for key, value in self.state0().items()}
            before = {key: value.copy() for key, value in init.items()}
            trainer.fit(FitRequest(data=self.samples0(), validation=self.real.validation, start=start, init=init,
                                   params=self.spec.params, rng=rng(self.seed, 1, TRAIN), generation=1))
            changed = [key for key in before if not _same(init[key], before[key])]
            if changed:
                problems.append(f"{where}: fitting generation 1 changed the init state it was given (arrays "
                                f"{', '.join(map(repr, changed[:SHOWN]))}); copy init before training on it")
        if problems:
            return [Finding(name, False, f"trainer {trainer.name!r} of {self.plugin!r} breaks the contract when "
                            f"warm-started: {_listed(problems)}. A warm-started trainer continues from "
                            "FitRequest.init alone: keep optimiser moments and counters in the state, not in "
                            "memory, draw randomness from the rng, and do not write into init."
                            + _contract("randomness"))]
        return [Finding(name, True, f"with --start {' and '.join(self.starts)}, every generation holds {n} samples, "
                        "a resumed run ends as the uninterrupted one, and the trainer leaves init untouched.")]



# --------------------------------------------------------------------------------------------------
# Policies
# --------------------------------------------------------------------------------------------------


class PolicyConformance(Conformance):
    """The checks of one policy (:data:`POLICY_CHECKS`), on a host model bundle run with
    ``--policy``: its runs, and direct calls of ``build`` with generation 1's context."""

    names = POLICY_CHECKS
    interlude_generations = 1

    def __init__(self, policy: str, plugin: str = POLICY_HOST, preset: str = "smoke", **options: Any) -> None:
        from bench.errors import BenchError

        if not isinstance(policy, str) or not policy:
            raise BenchError(f"name the policy to check (what --policy selects, e.g. 'mix:0.1'); got {policy!r}")
        super().__init__(plugin, preset, policy=policy, starts=(), **options)

    @property
    def registered(self):
        """The Policy object, or _Unavailable saying which policies there are."""
        from bench.spec import split_policy

        def find():
            name = split_policy(self.policy)[0]
            if name not in self.bench.policies:
                raise _Unavailable(f"no policy named {name!r} is registered (known: "
                                   f"{', '.join(self.bench.policies.names())}). Register a bench.Policy in "
                                   "`bench_register_policies`, and install your package so its `collapse_bench` "
                                   "entry point is found, or pass the plugin object in extra_plugins.")
            return self.bench.policies.get(name)

        return self._once("policy", find, f"the policy {self.policy!r} is not available")

    def _who(self) -> str:
        return f"policy {self.registered.name!r} (on {self.plugin!r})"

    def context(self, policy_rng: np.random.Generator | None = None):
        """Generation 1's PolicyContext as the loop builds it, from M_0 and S_1 made by calling the
        host's trainer and generator as the loop does (with the loop's random streams, or
        ``policy_rng`` for ``ctx.rng``). Made afresh for each call: a policy may change it."""
        from bench.components import PolicyContext, Samples, SampleScores, VerifyContext
        from bench.loop import CANDIDATES, POLICY, rng

        policy, spec, real = self.registered, self.spec, self.real
        state0 = {key: value.copy() for key, value in self.state0().items()}
        latest = self.samples0()
        latest = Samples(latest.kind, np.array(latest.data, copy=True), {k: list(v) for k, v in latest.columns.items()})
        # S_1 was drawn by M_0, so its scores under the model and under the reference are the same.
        own = self._score(state0, latest)
        scores = SampleScores(latest, own, own)
        n = len(real.train)
        candidates = verify = None
        if policy.candidates is not None:
            drawn = int(policy.candidates(spec.policy_params, n))
            candidates = latest
            if drawn > n:
                prompts = real.train.take(np.arange(drawn - n) % n)
                extra = self._draw(state0, drawn - n, prompts, rng(spec.seed, 1, CANDIDATES), 1)
                candidates = Samples.concat([latest, extra])
            verifier_name = spec.policy_params.get("verifier")
            if verifier_name is not None:
                verifier = self.bench.verifiers.get(verifier_name)
                vctx = VerifyContext(generation=1, real=real, state=state0, reference_state=state0,
                                     score=self._score, params=spec.params, latest=scores)

                def verify(samples):
                    return np.asarray(verifier.score(vctx, samples), dtype=np.float64)

        return PolicyContext(generation=1, real=real, synthetic=[latest], params=dict(spec.policy_params),
                             rng=rng(spec.seed, 1, POLICY) if policy_rng is None else policy_rng,
                             score=lambda samples: self._score(state0, samples), candidates=candidates,
                             verify=verify, state=state0, model_params=spec.params, record={}, latest=scores)

    def _score(self, state, samples):
        _, _, scorer = self.components()
        return scorer.score(ScoreRequest(state, samples, self.spec.params))

    def _draw(self, state, n, prompts, stream, generation):
        _, generator, _ = self.components()
        return generator.generate(GenerateRequest(state, n, prompts, self.spec.params, stream, generation))

    def build(self, policy_rng: np.random.Generator | None = None):
        """(what build returned, the context it got) for generation 1."""
        ctx = self.context(policy_rng)
        return self.registered.build(ctx), ctx

    def check_policy_samples(self) -> list[Finding]:
        """build returns non-empty bench.Samples of the host's kind, each sample shaped as a real
        one, and leaves the data it is given unchanged; every generation of the run trained on it."""
        from bench.components import Samples

        name, kind, who = "policy-samples", self.bundle.kind, self._who()
        ctx = self.context()
        given = [np.array(s.data, copy=True) for s in (ctx.real.train, *ctx.synthetic)]
        data = self.registered.build(ctx)
        problems = []
        if not isinstance(data, Samples):
            return [Finding(name, False, f"{who}: build returned {type(data).__name__}; return the training set "
                            "D_{k+1} as bench.Samples (e.g. bench.Samples.concat([...]) or samples.take(index))."
                            + _contract("samples"))]
        if data.kind != kind:
            problems.append(f"build returned {data.kind} samples; the model makes {kind}")
        if len(data) == 0:
            problems.append("build returned no samples; the next model has nothing to train on")
        array = np.asarray(data.data)
        problems += _layout_problems(array, kind)
        want = np.asarray(ctx.real.train.data).shape[1:]
        if data.kind == kind and array.shape[1:] != want:
            problems.append(f"each sample has shape {array.shape[1:]}, a real training sample {want}")
        changed = [what for what, before, after in zip(["the real training set"] + [f"S_{i + 1}" for i in
                                                                                  range(len(ctx.synthetic))],
                                                     given, (ctx.real.train, *ctx.synthetic))
                   if not _same(before, np.asarray(after.data))]
        if changed:
            problems.append(f"build wrote into {', '.join(changed)}; the harness keeps them for later generations, "
                            "so take copies (samples.take(index) copies)")
        try:
            run = self.run("main")
        except _Unavailable as exc:
            problems.append(f"{exc}")
        else:
            for k in range(1, self.generations + 1):
                from bench import runfolder as RF

                trained = RF.generation_info(run, k).get("training_samples")
                if not trained:
                    problems.append(f"generation {k} of the run trained on {trained!r} samples")
        if problems:
            return [Finding(name, False, f"{who}: {_listed(problems)}." + _contract("samples"))]
        return [Finding(name, True, f"{who} returns {len(data)} {kind} samples of shape {want or 'one value'} for "
                        f"generation 1 (the real training set has {len(ctx.real.train)}), and leaves its inputs as "
                        "they were.")]

    def check_policy_rng(self) -> list[Finding]:
        """Two calls with ctx.rng from the same seed give the same samples; the global NumPy and
        Python random states are left as they were."""
        import random

        name, who = "policy-rng", self._who()
        np_before, py_before = np.random.get_state(), random.getstate()
        first, _ = self.build(np.random.default_rng([self.seed, 0xBEEF]))
        np_after, py_after = np.random.get_state(), random.getstate()
        second, _ = self.build(np.random.default_rng([self.seed, 0xBEEF]))
        problems = []
        if not (np_before[0] == np_after[0] and np.array_equal(np_before[1], np_after[1])
                and np_before[2:] == np_after[2:]):
            problems.append("build drew from NumPy's global random state (np.random.*)")
        if py_before != py_after:
            problems.append("build drew from Python's global random state (the random module)")
        for what, value in (("first", first), ("second", second)):
            if not hasattr(value, "data"):
                problems.append(f"the {what} call returned {type(value).__name__}, not bench.Samples")
        if not problems and not _same(np.asarray(first.data), np.asarray(second.data)):
            problems.append("two calls with ctx.rng seeded alike returned different samples "
                            f"({_difference(first.data, second.data)}): randomness comes from elsewhere (an "
                            "unseeded generator, the clock, a counter kept between calls)")
        if problems:
            return [Finding(name, False, f"{who}: {_listed(problems)}. Draw every random number from ctx.rng."
                            + _contract("randomness"))]
        return [Finding(name, True, f"{who} gives the same samples for the same ctx.rng and leaves the global "
                        "NumPy and Python random states alone.")]

    def check_policy_resume(self) -> list[Finding]:
        """A run with the policy, stopped after generation ``generations - 1`` and extended, ends as
        the uninterrupted run (the model's resume check, with the policy)."""
        name, who = "policy-resume", self._who()
        main, resumed = self.run("main"), self.resumed()
        problems = _resume_problems(main, resumed, self.generations)
        if problems:
            return [Finding(name, False, f"{who}: running `{self.command(self.generations - 1)}`, then "
                            f"`{self.command(1, self.seed + 1)}` in another folder, then `{self.command()}` in the "
                            f"first folder does not end as the uninterrupted run: {_listed(problems)}. A resumed run "
                            "starts in a new process: read earlier generations from ctx.synthetic, keep nothing "
                            "between calls in globals, and draw randomness from ctx.rng." + _contract("randomness"))]
        return [Finding(name, True, f"{who}: stopping after generation {self.generations - 1} and extending to "
                        f"{self.generations} gives the uninterrupted run's samples and metrics.")]


# --------------------------------------------------------------------------------------------------
# The public entry points
# --------------------------------------------------------------------------------------------------


def check_plugin(plugin: str, preset: str = "smoke", *, generations: int = 2, seed: int = 0,
                 set: Mapping[str, Any] | None = None, extra_plugins: Iterable[Any] = (),
                 workdir: str | Path | None = None, checks: Iterable[str] | None = None,
                 starts: Iterable[str] = WARM_STARTS) -> list[Finding]:
    """Run every check (or those named in ``checks``) on model bundle ``plugin`` with ``preset``.

    Returns the findings: at least one per check, ``ok`` False for each breach, ``note`` True for
    advice. Contract breaches never raise; BenchError is raised only for bad arguments.
    ``set`` overrides parameters as ``bench run --set`` does (to shrink the preset further; the
    bundle's and its components' parameters), ``extra_plugins`` are plugin objects or modules
    registered by hand, ``workdir`` keeps the runs (a temporary folder that is removed afterwards
    by default), ``starts`` the warm starts the ``warm-start`` check runs (``()`` for none).
    """
    conformance = Conformance(plugin, preset, generations=generations, seed=seed, set=set,
                              extra_plugins=extra_plugins, workdir=workdir, starts=starts)
    try:
        conformance.validate()
        return conformance.run_all(checks)
    finally:
        conformance.close()


class _SharedRuns:
    """What PluginContract and PolicyContract share: the class's kit, made once, and a check as a test."""

    plugin: str = ""
    preset: str = "smoke"
    generations: int = 2
    seed: int = 0
    set: Mapping[str, Any] = {}
    extra_plugins: Iterable[Any] = ()
    workdir: str | Path | None = None  # keep the runs there (default: a temporary folder)

    @classmethod
    def _make(cls) -> Conformance:
        raise NotImplementedError

    @classmethod
    def conformance(cls) -> Conformance:
        """The class's shared runs (made once per class, not shared with subclasses)."""
        shared = cls.__dict__.get("_conformance")
        if shared is None:
            shared = cls._make()
            try:
                shared.validate()
            except Exception:
                shared.close()
                raise
            cls._conformance = shared
        return shared

    @classmethod
    def teardown_class(cls) -> None:
        shared = cls.__dict__.get("_conformance")
        if shared is not None:
            shared.close()
            del cls._conformance

    def _subject(self) -> str:
        return f"{self.plugin!r}, preset {self.preset!r}"

    def _assert_check(self, check: str) -> list[Finding]:
        import pytest

        from bench.errors import BenchError

        try:
            findings, setup_error = type(self).conformance().check(check), None
        except BenchError as exc:  # the class is set up wrongly, e.g. no plugin name or a wrong `set`
            findings, setup_error = [], f"{type(self).__name__}: {exc}"
        if setup_error is not None:  # failed outside the except block: no chained traceback
            pytest.fail(setup_error, pytrace=False)
        return fail_on_breaches(findings, type(self).__name__,
                                f"{type(self).__name__} ({self._subject()}) breaks the plugin contract")


class PluginContract(_SharedRuns):
    """Subclass in your tests (the name must start with Test for pytest to collect it)::

        class TestMyModel(PluginContract):
            plugin = "my-model"          # the bundle name (what --plugin selects)
            preset = "smoke"             # default
            generations = 2              # generations run by the checks (kept small)
            seed = 0
            set = {}                     # parameter overrides (e.g. to shrink the smoke preset further)
            extra_plugins = ()           # plugin objects/modules registered by hand (besides entry points)
            workdir = None               # a folder to keep the runs in (default: a temporary one)
            starts = ("previous", "gen0")  # the warm starts checked; () leaves them out

    Each check is one test method. The runs are shared by all methods of the class (made on first
    use, in a temporary folder removed by ``teardown_class``): five short runs, and three more for
    each warm start. Notes (advice that does not fail) are issued as :class:`ConformanceNote` warnings.
    """

    starts: Iterable[str] = WARM_STARTS

    @classmethod
    def _make(cls) -> Conformance:
        return Conformance(cls.plugin, cls.preset, generations=cls.generations, seed=cls.seed, set=cls.set,
                           extra_plugins=cls.extra_plugins, workdir=cls.workdir, starts=cls.starts)

    def test_bundle_is_complete(self):
        self._assert_check("bundle")

    def test_sample_counts_and_kinds(self):
        self._assert_check("samples")

    def test_deterministic_for_a_seed(self):
        self._assert_check("determinism")

    def test_scores_are_nats_per_unit(self):
        self._assert_check("nll-units")

    def test_metric_directions_declared(self):
        self._assert_check("metric-directions")

    def test_resume_after_a_generation(self):
        self._assert_check("resume")

    def test_state_is_flat_arrays(self):
        self._assert_check("state")

    def test_fit_batch_equals_fit(self):
        self._assert_check("batch")

    def test_warm_starts_resume(self):
        self._assert_check("warm-start")


def check_policy(policy: str, plugin: str = POLICY_HOST, preset: str = "smoke", *, generations: int = 2,
                 seed: int = 0, set: Mapping[str, Any] | None = None, extra_plugins: Iterable[Any] = (),
                 workdir: str | Path | None = None, checks: Iterable[str] | None = None) -> list[Finding]:
    """Run every policy check (:data:`POLICY_CHECKS`, or those named in ``checks``) on ``policy``
    (what ``--policy`` takes: ``"mix:0.1"``), run on the model bundle ``plugin`` with ``preset``.

    The other arguments are those of :func:`check_plugin` (``set`` may set the policy's
    parameters as ``policy.NAME``). Returns the findings; breaches never raise.
    """
    conformance = PolicyConformance(policy, plugin, preset, generations=generations, seed=seed, set=set,
                                    extra_plugins=extra_plugins, workdir=workdir)
    try:
        conformance.validate()
        return conformance.run_all(checks)
    finally:
        conformance.close()


class PolicyContract(_SharedRuns):
    """Subclass in your tests to check a policy, one test per policy check::

        class TestMyPolicy(PolicyContract):
            policy = "my-policy:0.5"     # what --policy takes
            plugin = "gaussian"          # the model bundle it runs on (default: the first-party gaussian)
            set = {}                     # parameter overrides, policy parameters as "policy.NAME"

    ``preset``, ``generations``, ``seed``, ``extra_plugins`` and ``workdir`` are as in
    :class:`PluginContract`. The runs (three: a run, one stopped early then extended, and two
    generations of another seed in between) are shared by the methods of the class.
    """

    policy: str = ""
    plugin: str = POLICY_HOST

    @classmethod
    def _make(cls) -> Conformance:
        return PolicyConformance(cls.policy, cls.plugin, cls.preset, generations=cls.generations, seed=cls.seed,
                                 set=cls.set, extra_plugins=cls.extra_plugins, workdir=cls.workdir)

    def _subject(self) -> str:
        return f"policy {self.policy!r} on {self.plugin!r}, preset {self.preset!r}"

    def test_policy_returns_samples_of_the_kind(self):
        self._assert_check("policy-samples")

    def test_policy_uses_only_ctx_rng(self):
        self._assert_check("policy-rng")

    def test_policy_resume_after_a_generation(self):
        self._assert_check("policy-resume")
