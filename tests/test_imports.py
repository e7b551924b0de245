"""The CLI starts without the heavy libraries it does not use (issue 14: `import sklearn.mixture`
alone costs about 3 s): `bench --help` and `bench plugins` import none of them, a gmm run none
but scikit-learn's stack. Each check is a fresh interpreter, as a user's `bench` command is."""

import json
import subprocess
import sys

HEAVY = ("sklearn", "torch", "transformers", "datasets", "matplotlib", "pandas", "scipy", "tokenizers")

# Runs the console script's entry point (pyproject: bench = "bench.cli:main") with the given
# arguments, then prints which heavy libraries ended up in sys.modules.
PROBE = """
import json, sys
from bench.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    assert exc.code in (0, None), exc.code
heavy = json.loads({heavy!r})
print(json.dumps(sorted(name for name in heavy if name in sys.modules)))
"""


def imported_by(*args, cwd=None):
    """The heavy libraries a fresh `bench ARGS` process imported (its last stdout line)."""
    code = PROBE.format(heavy=json.dumps(HEAVY))
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_help_imports_no_heavy_library():
    assert imported_by("--help") == set()


def test_listing_the_plugins_imports_no_heavy_library():
    assert imported_by("plugins") == set()


def test_a_gmm_run_imports_neither_torch_nor_the_language_model_stack(tmp_path):
    found = imported_by("run", "--plugin", "gmm", "--preset", "smoke", "--generations", "1", "--out",
                        str(tmp_path), cwd=tmp_path)
    assert "sklearn" in found  # the probe sees what a run imports (the gmm fit is scikit-learn's), so
    # the checks above can fail
    assert found & {"torch", "transformers", "datasets", "tokenizers", "matplotlib"} == set()

