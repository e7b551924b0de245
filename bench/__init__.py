"""collapse-bench: a benchmark suite for model collapse."""

from bench.components import (
    CliOption,
    FitRequest,
    GenerateRequest,
    Generator,
    Headline,
    Metric,
    MetricContext,
    Mitigation,
    ModelBundle,
    Policy,
    PolicyContext,
    RealData,
    RealRequest,
    Reference,
    SampleScores,
    Samples,
    ScoreRequest,
    Scorer,
    Scores,
    Trainer,
    Verifier,
    VerifyContext,
)
from bench.errors import BenchError
from bench.types import Executor
from bench.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = [
    "BenchError",
    "CliOption",
    "Executor",
    "FitRequest",
    "GenerateRequest",
    "Generator",
    "Headline",
    "Metric",
    "MetricContext",
    "Mitigation",
    "ModelBundle",
    "Policy",
    "PolicyContext",
    "RealData",
    "RealRequest",
    "Reference",
    "SampleScores",
    "Samples",
    "ScoreRequest",
    "Scorer",
    "Scores",
    "Trainer",
    "Verifier",
    "VerifyContext",
    "hookimpl",
]
