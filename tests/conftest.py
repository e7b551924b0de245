import os
import sys

# Tests never reach the Hugging Face hub (a miss costs ~20 s of retries).
for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(var, "1")

# pytest-xdist's workers (`pytest -n 2`) share the cores: one thread each for OpenMP, BLAS and torch
# (set before torch's import, which reads OMP_NUM_THREADS), so that workers do not fight over them.
# The runs of a worker inherit it as their default thread limit. A plain `pytest` keeps its threads.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if XDIST_WORKER:
    os.environ["OMP_NUM_THREADS"] = "1"

import pytest


def pytest_configure(config):
    if XDIST_WORKER and "torch" in sys.modules:  # imported before this file (by another plugin)
        sys.modules["torch"].set_num_threads(1)


@pytest.fixture(scope="session")
def bench_plugins():
    """The installed plugins (entry points), loaded once for the session."""
    from bench.plugins import Bench

    return Bench()


@pytest.fixture(scope="session")
def chromium():
    """Headless Chromium's binary, for the tests that render HTML pages (Debian: apt-get install -y
    chromium); the tests that need it skip without it."""
    import shutil

    for name in ("chromium", "chromium-browser", "/usr/bin/chromium"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no chromium binary (Debian: apt-get install -y chromium); the browser checks need it")
