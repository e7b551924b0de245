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
