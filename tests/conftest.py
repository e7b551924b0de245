import os

# Tests never reach the Hugging Face hub (a miss costs ~20 s of retries).
for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(var, "1")

import pytest


@pytest.fixture(scope="session")
def bench_plugins():
    """The installed plugins (entry points), loaded once for the session."""
    from bench.plugins import Bench

    return Bench()
