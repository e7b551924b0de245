"""collapse-bench: a benchmark suite for model collapse."""

from bench.components import (
    FitRequest,
    Generator,
    Headline,
    Metric,
    MetricContext,
    Mitigation,
    ModelBundle,
    Policy,
    PolicyContext,
    RealData,
    Samples,
    Scorer,
    Scores,
    Trainer,
    Verifier,
    VerifyContext,
)
from bench.errors import BenchError
from bench.executors import Executor
from bench.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = [
    "BenchError",
    "Executor",
    "FitRequest",
    "Generator",
    "Headline",
    "Metric",
    "MetricContext",
    "Mitigation",
    "ModelBundle",
    "Policy",
    "PolicyContext",
    "RealData",
    "Samples",
    "Scorer",
    "Scores",
    "Trainer",
    "Verifier",
    "VerifyContext",
    "hookimpl",
]
