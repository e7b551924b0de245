"""The things a plugin registers, and the values the loop hands them.

Every concept of the design card has one class here: a model bundle (what ``--plugin NAME``
selects), a trainer, a generator, a scorer, a metric and a policy. Plugins build instances of these
and pass them to the ``register`` callback of the matching hook (see :mod:`bench.hookspecs`).

Samples travel as :class:`Samples`: a sample kind and one NumPy array whose first axis indexes the
samples (vectors: ``(n, d)`` floats; tokens: ``(n, L)`` integer ids; images: ``(n, H, W)`` floats;
categorical: ``(n,)`` integer states). Policies mix data by indexing that axis, so they work for
every kind. Model state is a flat ``dict[str, np.ndarray]``: saved as safetensors, never pickled.

Every component call takes one request object: ``fit(FitRequest)``, ``generate(GenerateRequest)``,
``score(ScoreRequest)``, ``load_real(RealRequest)``; metrics, policies and verifiers get a context.
A component that checks parameters (``ModelBundle.check``) follows one convention: it returns the
warnings to show and raises :class:`bench.BenchError` for impossible settings.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass, field
from contextlib import AbstractContextManager
from typing import Any, Callable, Collection, Mapping, Sequence

import numpy as np

SAMPLE_KINDS = ("vectors", "tokens", "images", "categorical")
DIRECTIONS = ("higher", "lower", "target")
STARTS = ("pretrained", "gen0", "previous")

State = dict[str, np.ndarray]
Params = Mapping[str, Any]


@dataclass(frozen=True)
class Samples:
    """A set of samples of one kind; ``data``'s first axis indexes the samples.

    ``columns`` holds optional per-sample extras kept with the samples (for example ``text``, the
    decoded continuation, and ``prompt``, the text it continues), each a sequence of length n.
    """

    kind: str
    data: np.ndarray
    columns: Mapping[str, Sequence[Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in SAMPLE_KINDS:
            raise ValueError(f"unknown sample kind {self.kind!r}; expected one of {SAMPLE_KINDS}")
        for name, values in self.columns.items():
            if len(values) != len(self):
                raise ValueError(f"column {name!r} has {len(values)} values for {len(self)} samples")

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def take(self, index: np.ndarray | Sequence[int]) -> "Samples":
        index = np.asarray(index, dtype=np.int64)
        columns = {name: [values[i] for i in index] for name, values in self.columns.items()}
        return Samples(self.kind, self.data[index], columns)

    @staticmethod
    def concat(parts: Sequence["Samples"]) -> "Samples":
        """Samples one after another; only the columns every part has are kept."""
        if not parts:
            raise ValueError("cannot concatenate zero sample sets")
        kinds = {p.kind for p in parts}
        if len(kinds) != 1:
            raise ValueError(f"cannot concatenate samples of kinds {sorted(kinds)}")
        shared = set.intersection(*(set(p.columns) for p in parts))
        columns = {name: [v for p in parts for v in p.columns[name]] for name in sorted(shared)}
        return Samples(parts[0].kind, np.concatenate([p.data for p in parts], axis=0), columns)


@dataclass(frozen=True)
class Scores:
    """Per-sample log-likelihood in nats and the number of units (dimensions, tokens, pixels)."""

    loglik: np.ndarray
    units: np.ndarray

    @property
    def nll_per_unit(self) -> float:
        """Mean negative log-likelihood per unit over all units (a pooled mean, not a mean of means)."""
        return float(-self.loglik.sum() / self.units.sum())


@dataclass
class RealData:
    """The real data of a model bundle for one seed.

    ``fresh`` draws new, unseen real samples (for the ``fresh`` policy) where the source can;
    ``true_loglik`` scores samples under the true density where the plugin knows it;
    ``fingerprint`` identifies the data drawn, and ``provenance`` holds what else run.json should
    record (model revision or folder fingerprint, tokenizer hash, ...). ``source`` names the data
    source independently of the seed (a distribution and sample sizes, a dataset), so that runs of
    one protocol with different seeds share a leaderboard track; empty means ``fingerprint``.
    ``true_token_loglik`` (token sources only) gives, for (n, L) token samples, the true
    log-probability of every token given the tokens before it in its block, an (n, L) array.
    """

    train: Samples
    test: Samples
    validation: Samples | None = None
    fresh: Callable[[int, np.random.Generator], Samples] | None = None
    true_loglik: Callable[[Samples], np.ndarray] | None = None
    fingerprint: str = ""
    provenance: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""
    true_token_loglik: Callable[[Samples], np.ndarray] | None = None


def no_report(what: str, done: int, total: int | None) -> None:
    """The default ``report`` of a request: shows nothing (a component called outside a run)."""


@dataclass(frozen=True)
class FitRequest:
    """What a trainer gets: the data D_k, the real validation split, where to start, its params.

    ``report(what, done, total)`` tells the run's display where a long fit is: call it once per
    training step (``report("step", steps_done, steps_in_all)``; ``total`` None when unknown). It
    returns at once (the display and log.txt throttle themselves) and shows nothing by default."""

    data: Samples
    validation: Samples | None
    start: str
    init: State | None
    params: Params
    rng: np.random.Generator
    generation: int
    report: Callable[[str, int, int | None], None] = no_report


@dataclass(frozen=True)
class GenerateRequest:
    """What a generator gets: M_k's state, how many samples, the prompts (the real training set,
    repeated when n exceeds it; unconditional models ignore them), its params, the random stream
    of this draw and the generation k of the model that draws. ``report(what, done, total)`` is
    :class:`FitRequest`'s: a batched draw calls ``report("batch", batches_done, batches_in_all)``."""

    state: State
    n: int
    prompts: Samples | None
    params: Params
    rng: np.random.Generator
    generation: int
    report: Callable[[str, int, int | None], None] = no_report


@dataclass(frozen=True)
class ScoreRequest:
    """What a scorer gets: the model state to score under, the samples, the run's model params."""

    state: State
    samples: Samples
    params: Params


@dataclass(frozen=True)
class RealRequest:
    """What a bundle's ``load_real`` gets: the run's model params and its seed."""

    params: Params
    seed: int


def _required_positional(fn: Callable) -> int:
    """How many positional parameters ``fn`` needs; 0 where Python cannot tell (a builtin)."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return 0
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(1 for p in signature.parameters.values() if p.kind in kinds and p.default is p.empty)


def _one_request(fn: Callable, role: str, name: str, old: str, new: str, unpack: Callable) -> Callable:
    """``fn`` itself when it takes one request object; else (the positional form of collapse-bench
    0.1) a function that takes the request and unpacks it for ``fn``, with a DeprecationWarning."""
    if _required_positional(fn) <= 1:
        return fn
    where = f"{getattr(fn, '__module__', None) or '?'}.{getattr(fn, '__qualname__', repr(fn))}"
    warnings.warn(
        f"{role} {name!r} ({where}) takes the old positional arguments {old}; take one request "
        f"instead: {new}. The old form is adapted for now and stops working in collapse-bench 1.0.",
        DeprecationWarning, stacklevel=4,
    )

    def adapted(request):
        return fn(*unpack(request))

    adapted.legacy = fn  # the plugin's own function, for introspection
    return adapted


# What a model bundle's data source may offer (``ModelBundle.provides``), and what policies,
# verifiers and mitigations may need (their ``needs``):
FEATURES = {
    "exact-loglik": "the true density of the real data is known (RealData.true_loglik)",
    "fresh-data": "the source draws new, unseen real samples (RealData.fresh)",
    "reference-classifier": "a classifier trained on the real data scores samples (images)",
    "token-probs": "the model gives per-token predictive distributions (token tracks)",
}
COLLAPSE_MODES = ("diff", "ratio")


@dataclass(frozen=True)
class Headline:
    """A track's headline metric: finite by construction, ranked in the suite table, and the rule
    behind "generations to collapse": the first generation g at which the metric row ``metric``
    moves the wrong way (by its direction) past ``threshold`` relative to generation 0:
    ``value_g - value_0`` (``mode="diff"``) or ``value_g / value_0`` (``mode="ratio"``).
    For a ``lower`` metric collapse is ``diff >= threshold`` (or ``ratio >= threshold``); for a
    ``higher`` one ``diff <= -threshold`` (or ``ratio <= threshold``); for a ``target`` metric the
    distance to the target is what must not grow: ``|v_g - t| - |v_0 - t| >= threshold`` (diff
    mode). ``why`` says in a sentence why this metric and threshold.
    """

    metric: str
    threshold: float
    mode: str = "diff"
    why: str = ""

    def __post_init__(self) -> None:
        if self.mode not in COLLAPSE_MODES:
            raise ValueError(f"headline {self.metric!r}: mode must be one of {COLLAPSE_MODES}")

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "threshold": self.threshold, "mode": self.mode, "why": self.why}


@dataclass(frozen=True)
class Reference:
    """A figure a paper reports for a metric under a preset, drawn as a labelled mark on plots,
    reports and leaderboard pages of runs that reproduce that experiment.

    ``metric`` is a metric row (``vae-latent-spread/all``) or a metric name covering all its rows
    (``gmm-std``). ``generation`` is where the paper reports it (None: a level for every
    generation); ``high`` makes it a range ``value``..``high``. ``label`` says what it is and
    where it comes from, in a few words ("paper: notebook, std at start").
    """

    metric: str
    value: float
    generation: int | None = None
    high: float | None = None
    label: str = ""

    def __post_init__(self) -> None:
        import math

        if not math.isfinite(self.value) or (self.high is not None and not self.high >= self.value):
            raise ValueError(f"reference {self.metric!r}: value must be finite and high >= value")

    def covers(self, row: str) -> bool:
        """Whether this reference belongs on the plot of metric row ``row``."""
        return row == self.metric or row.split("/", 1)[0] == self.metric

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "value": self.value, "generation": self.generation,
                "high": self.high, "label": self.label}


@dataclass(frozen=True)
class ModelBundle:
    """What ``--plugin NAME`` selects: the real-data source, default components, metrics, presets.

    ``params`` holds the bundle's own parameters with their defaults; presets override any of
    them (and may set ``generations``, ``policy``, ``start``). ``load_real(request)`` gets a
    :class:`RealRequest` (params, seed) and returns :class:`RealData`. ``check(params)`` runs before
    a run starts and follows the convention of every component check: it returns warnings to show
    (for example a time estimate when a GPU-sized preset starts on a CPU) and raises BenchError for
    impossible settings. ``throughput=True`` adds rows
    ``throughput/generate-units-per-s`` and ``throughput/fit-samples-per-s``: measurements of the
    machine, not of the model, so they differ between otherwise equal runs.
    ``leaderboard_metrics`` names the track's main metrics, those the overall rank is built from
    (metric rows, e.g. ``gmm-std/0``, or metric names covering all their rows); empty means every
    metric with a direction. ``provides`` lists what the data source offers (see
    :data:`FEATURES`), or is a function of the params giving it (a preset may change the source).
    ``headline`` declares the track's headline metric and collapse threshold (:class:`Headline`).
    ``files`` declares the entries the plugin writes into a run folder besides the harness's
    own, name -> what it is (``{"grids": "a PNG grid of samples per generation"}``);
    ``bench validate`` accepts these and fails any other.
    ``references`` maps a preset name to the paper's figures for it (:class:`Reference`); they
    are drawn on plots, reports and leaderboard pages of runs of that preset whose parameters and
    policy are the preset's own (:func:`bench.references.for_spec`).
    ``preflight(params)`` runs only when a run is about to execute (not for ``--dry-run`` or a
    sweep's plan), after ``check`` and before the run folder is made: for checks of what this
    machine has (a GPU, a model in the local cache when the hub is offline). It raises BenchError
    to refuse, so that no failed run folder is left behind.
    """

    name: str
    kind: str
    load_real: Callable[[RealRequest], RealData]
    trainer: str
    generator: str
    scorer: str
    metrics: tuple[str, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    default_preset: str = "smoke"
    description: str = ""
    version: str = "1"
    check: Callable[[Params], Sequence[str]] | None = None
    throughput: bool = False
    leaderboard_metrics: tuple[str, ...] = ()
    provides: "Callable[[Params], Collection[str]] | Collection[str]" = ()
    headline: "Headline | None" = None
    files: Mapping[str, str] = field(default_factory=dict)
    references: Mapping[str, Sequence[Reference]] = field(default_factory=dict)
    preflight: Callable[[Params], None] | None = None

    def features(self, params: Params) -> frozenset[str]:
        """What this bundle's data source offers for these params (see :data:`FEATURES`)."""
        given = self.provides(params) if callable(self.provides) else self.provides
        return frozenset(given)

    def __post_init__(self) -> None:
        object.__setattr__(self, "load_real", _one_request(
            self.load_real, "model bundle", self.name, "load_real(params, seed)",
            "load_real(request: bench.RealRequest)", lambda r: (r.params, r.seed)))


@dataclass(frozen=True)
class Trainer:
    """Fits a model to ``request.data``; returns its state.

    ``initial_state(params, rng)`` gives the 'pretrained' start where the model has one; a trainer
    without it treats 'pretrained' as 'from scratch'.

    ``fit_batch(requests) -> [state, ...]`` fits several chains at once (runs that differ only in
    seed, driven in lockstep by :func:`bench.loop.run_group`). Each state must equal what ``fit``
    returns for that request alone, bit for bit, whatever else is in the batch.
    """

    name: str
    fit: Callable[[FitRequest], State]
    params: Mapping[str, Any] = field(default_factory=dict)
    initial_state: Callable[[Params, np.random.Generator], State] | None = None
    kinds: tuple[str, ...] = SAMPLE_KINDS
    version: str = "1"
    fit_batch: Callable[[Sequence[FitRequest]], list[State]] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Generator:
    """Draws samples from a fitted model: ``generate(request: GenerateRequest) -> Samples`` with
    exactly ``request.n`` samples.

    ``request.prompts`` is the real training set for conditional models (each sample continues one
    prompt), and may be ignored by unconditional ones; when more samples than prompts are asked for,
    the harness repeats the prompts. Decoding settings live in ``request.params``; ``options`` are
    optional decoding parameters with their neutral values (as :class:`Trainer`'s).
    """

    name: str
    generate: Callable[[GenerateRequest], Samples]
    params: Mapping[str, Any] = field(default_factory=dict)
    kinds: tuple[str, ...] = SAMPLE_KINDS
    version: str = "1"
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "generate", _one_request(
            self.generate, "generator", self.name, "generate(state, n, prompts, params, rng)",
            "generate(request: bench.GenerateRequest)", lambda r: (r.state, r.n, r.prompts, r.params, r.rng)))


@dataclass(frozen=True)
class Scorer:
    """Scores samples under a fitted model: ``score(request: ScoreRequest) -> Scores``."""

    name: str
    score: Callable[[ScoreRequest], Scores]
    params: Mapping[str, Any] = field(default_factory=dict)
    kinds: tuple[str, ...] = SAMPLE_KINDS
    version: str = "1"

    def __post_init__(self) -> None:
        object.__setattr__(self, "score", _one_request(
            self.score, "scorer", self.name, "score(state, samples, params)",
            "score(request: bench.ScoreRequest)", lambda r: (r.state, r.samples, r.params)))


@dataclass(frozen=True)
class SampleScores:
    """Scores the harness already computed for one sample set: ``model`` under the model that drew
    it (M_k for S_{k+1}) and ``reference`` under M_0. They are the values of the set's
    ``samples.parquet`` columns ``loglik_model``, ``loglik_reference`` and ``units``."""

    samples: Samples
    model: Scores
    reference: Scores


@dataclass
class MetricContext:
    """What a metric sees for generation k (row k describes model M_k).

    ``samples`` is S_{k+1}, drawn from M_k; ``state`` is M_k's state and ``reference_state`` M_0's.
    ``score(state, samples)`` runs the bundle's scorer. The scores every likelihood metric needs
    come from typed accessors, each computed at most once per generation (the harness fills in
    those it already has): :meth:`model_scores_samples`, :meth:`reference_scores_samples`,
    :meth:`model_scores_real_test`, :meth:`reference_scores_real_test`. ``cache`` is for the
    metrics' own intermediate values, shared by all metrics of one generation: use
    ``cached(key, compute)`` with a key prefixed by the plugin's name.
    """

    generation: int
    bundle: ModelBundle
    params: Params
    real: RealData
    state: State
    reference_state: State
    samples: Samples
    score: Callable[[State, Samples], Scores]
    rng: np.random.Generator
    cache: dict = field(default_factory=dict)
    model_scores: Scores | None = None  # S_{k+1} under M_k
    reference_scores: Scores | None = None  # S_{k+1} under M_0
    model_test_scores: Scores | None = None  # the real test set under M_k
    reference_test_scores: Scores | None = None  # the real test set under M_0

    def cached(self, key: str, compute: Callable[[], Any]) -> Any:
        """``compute()``'s value, computed once per generation and shared by the metrics."""
        if key not in self.cache:
            self.cache[key] = compute()
        return self.cache[key]

    def model_scores_samples(self) -> Scores:
        if self.model_scores is None:
            self.model_scores = self.score(self.state, self.samples)
        return self.model_scores

    def reference_scores_samples(self) -> Scores:
        if self.reference_scores is None:
            self.reference_scores = self.score(self.reference_state, self.samples)
        return self.reference_scores

    def model_scores_real_test(self) -> Scores:
        if self.model_test_scores is None:
            self.model_test_scores = self.score(self.state, self.real.test)
        return self.model_test_scores

    def reference_scores_real_test(self) -> Scores:
        if self.reference_test_scores is None:
            self.reference_test_scores = self.score(self.reference_state, self.real.test)
        return self.reference_test_scores


@dataclass(frozen=True)
class Metric:
    """A metric computed once per generation.

    ``compute(ctx)`` returns a float, or a dict of floats whose keys become ``name/key`` rows.
    ``direction`` is ``higher``, ``lower`` or ``target`` (then ``target`` is the value to be near,
    e.g. 1.0 for ratios to real data). ``kinds`` lists the sample kinds it accepts; ``needs_scorer``
    marks metrics built on per-sample likelihoods.
    """

    name: str
    compute: Callable[[MetricContext], "float | dict[str, float]"]
    direction: str
    version: str = "1"
    target: float | None = None
    kinds: tuple[str, ...] = SAMPLE_KINDS
    needs_scorer: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"metric {self.name!r}: direction must be one of {DIRECTIONS}")
        if (self.direction == "target") != (self.target is not None):
            raise ValueError(f"metric {self.name!r}: give a target exactly when direction='target'")


@dataclass(frozen=True)
class PolicyContext:
    """What a policy sees when it builds D_{k+1} (``generation`` is k+1).

    ``synthetic`` is [S_1, ..., S_{k+1}]; ``score(samples)`` scores under the current model M_k
    (for curation); ``real.fresh`` draws unseen real data where the source has it. ``params`` are
    the policy's own parameters.

    For policies that select (``Policy.candidates``): ``candidates`` is S_{k+1} followed by the
    extra samples the harness drew from M_k for it (as many in all as the policy asked for), and
    ``verify(samples)`` gives each sample's score under the verifier the policy's ``verifier``
    parameter names (higher = more plausible). ``state`` is M_k's state and ``model_params`` the
    run's model parameters, for policies that query the model themselves (token-edit).
    ``latest`` holds S_{k+1} (``synthetic[-1]``) with the scores the harness already computed for
    it under M_k and M_0 (:class:`SampleScores`): use them instead of scoring those samples again.
    ``record`` collects counts for the generation's info.json (``record["synthetic_kept"] = m``).
    """

    generation: int
    real: RealData
    synthetic: Sequence[Samples]
    params: Params
    rng: np.random.Generator
    score: Callable[[Samples], Scores]
    candidates: Samples | None = None
    verify: Callable[[Samples], np.ndarray] | None = None
    state: State | None = None
    model_params: Params = field(default_factory=dict)
    record: dict = field(default_factory=dict)
    latest: SampleScores | None = None


@dataclass(frozen=True)
class Policy:
    """Builds the training data D_{k+1} of the next generation: ``build(ctx) -> Samples``.

    ``params`` are the defaults; ``positional`` names the parameter that ``name:VALUE`` sets on the
    command line (``mix:0.1`` sets ``p``), or several (``("k", "verifier")``: ``best-of:4,m0``).
    ``check(params)`` follows the harness's one convention (as :attr:`ModelBundle.check`): it
    raises BenchError for impossible values and returns warnings to show. ``validate(params)``
    (raising ValueError) is the older form, still honoured.

    ``candidates(params, n)`` is how many samples of M_k the policy needs in all (at least n, the
    real training set's size); the harness draws the extra ones and passes them in
    ``ctx.candidates``. ``needs`` lists bundle features (:data:`FEATURES`) without which the
    policy does not apply; ``kinds`` the sample kinds it handles. ``citation`` names the paper.
    """

    name: str
    build: Callable[[PolicyContext], Samples]
    params: Mapping[str, Any] = field(default_factory=dict)
    positional: "str | tuple[str, ...] | None" = None
    validate: Callable[[Params], None] | None = None
    description: str = ""
    version: str = "1"
    candidates: Callable[[Params, int], int] | None = None
    needs: tuple[str, ...] = ()
    kinds: tuple[str, ...] = SAMPLE_KINDS
    citation: str = ""
    check: Callable[[Params], Sequence[str]] | None = None


@dataclass(frozen=True)
class VerifyContext:
    """What a verifier sees: the real data, M_k (the model that drew the candidates), M_0, the
    bundle's scorer (``score(state, samples) -> Scores``) and the run's model parameters.
    ``latest`` is the newest synthetic set with its scores under M_k and M_0 (as the policy's):
    a verifier asked to score exactly ``latest.samples`` may return those instead of scoring."""

    generation: int
    real: RealData
    state: State
    reference_state: State
    score: Callable[[State, Samples], Scores]
    params: Params
    cache: dict = field(default_factory=dict)
    latest: SampleScores | None = None


@dataclass(frozen=True)
class Verifier:
    """Scores candidate samples for policies that select: ``score(ctx, samples) -> np.ndarray``,
    one float per sample, higher = more plausible (a log-likelihood in nats, a log-probability).

    ``needs`` lists bundle features (:data:`FEATURES`) it requires (``oracle`` needs
    ``exact-loglik``); ``kinds`` the sample kinds it handles.
    """

    name: str
    score: Callable[[VerifyContext, Samples], np.ndarray]
    kinds: tuple[str, ...] = SAMPLE_KINDS
    needs: tuple[str, ...] = ()
    description: str = ""
    version: str = "1"


MITIGATION_KINDS = ("policy", "trainer", "generator")


@dataclass(frozen=True)
class Mitigation:
    """A remedy for collapse as a comparable entry: a data policy, a trainer option or a decoding
    option, with its citation. ``--mitigation NAME[:VALUE]`` (and a sweep's ``mitigation`` axis)
    applies it: a ``policy`` mitigation selects the policy of the same name; a ``trainer`` or
    ``generator`` one sets the parameter ``param`` (an option or parameter of the bundle's trainer
    or generator) to VALUE. ``neutral`` is the parameter's value that means "off".

    Where it applies: ``kinds`` (sample kinds), ``needs`` (bundle features), and for trainer and
    generator options the bundle's component must know ``param``; ``applies(bundle, params)`` may
    add a reason of its own (return a sentence when it does not apply, else None). Tables show
    "n/a" with that reason; sweeps skip such runs instead of failing mid-sweep.
    """

    name: str
    kind: str
    citation: str
    description: str = ""
    param: str | None = None
    neutral: Any = None
    kinds: tuple[str, ...] = SAMPLE_KINDS
    needs: tuple[str, ...] = ()
    applies: Callable[[ModelBundle, Params], str | None] | None = None
    example: str = ""

    def __post_init__(self) -> None:
        if self.kind not in MITIGATION_KINDS:
            raise ValueError(f"mitigation {self.name!r}: kind must be one of {MITIGATION_KINDS}")
        if (self.kind == "policy") != (self.param is None):
            raise ValueError(f"mitigation {self.name!r}: give param exactly for trainer and generator options")


@dataclass(frozen=True)
class CliOption:
    """A command-line option a plugin adds to a ``bench`` command (``bench_cli_options`` hook).

    ``flag`` is the long flag (``--model``) and ``help`` its help line. What the value does:

    - ``param`` (``bench run``): sets that model parameter, as ``--set PARAM=VALUE`` does;
    - ``executor`` and ``executor_option`` (``bench sweep``): the value is that option of that
      executor, and giving the flag to a sweep of another executor is an error;
    - ``around`` (``bench run``): ``around(value)`` is a context manager the command enters around
      the runs; it yields ``None`` or a function that gets the run outcomes once they ended and
      returns lines to print after the results.
    """

    flag: str
    help: str
    metavar: str | None = None
    type: type = str
    param: str | None = None
    executor: str | None = None
    executor_option: str | None = None
    around: Callable[[Any], AbstractContextManager[Callable[[list], list[str]] | None]] | None = None

    @property
    def name(self) -> str:
        """The option's name as a Python identifier: ``--slurm-time`` -> ``slurm_time``."""
        return self.flag.lstrip("-").replace("-", "_")
