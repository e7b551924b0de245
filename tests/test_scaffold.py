"""`bench new-plugin`: the package it writes installs, registers, runs and passes its own tests."""

import ast
import json
import os
import subprocess
import sys

import pytest

import bench
from bench.plugins import Bench
from bench.scaffold import check_name, name_clashes, render, suggest_name
from tests.helpers import bench_cli

NAME = "scaffold-probe"
MODULE = "collapse_bench_scaffold_probe"
EXPECTED_FILES = {
    "pyproject.toml", "README.md", ".gitignore", f"{MODULE}/__init__.py", f"{MODULE}/plugin.py",
    "tests/test_scaffold_probe_contract.py", "tests/test_scaffold_probe_model.py",
}


def files_under(folder):
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def run_python(args, env, cwd, timeout=120):
    proc = subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          check=False)
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.slow
def test_generated_package_works_as_installed(capsys, tmp_path):
    code, out, err = bench_cli(capsys, "new-plugin", NAME, "--dir", str(tmp_path / "src"),
                               "--description", "A probe model")
    assert code == 0, err
    pkg = tmp_path / "src" / NAME
    assert files_under(pkg) == EXPECTED_FILES
    for step in (f"cd {pkg}", 'pip install -e ".[test]"', f"bench run --plugin {NAME} --preset smoke", "pytest"):
        assert step in out

    target = tmp_path / "site"
    run_python(["-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                "--disable-pip-version-check", "--target", str(target), str(pkg)], os.environ.copy(), tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("BENCH_PLUGINS", "PYTEST_ADDOPTS")}
    env.update(PYTHONPATH=str(target), OMP_NUM_THREADS="1")

    listed = json.loads(run_python(["-m", "bench.cli", "plugins", "--json"], env, tmp_path).stdout)
    mine = [p for p in listed if p["name"] == NAME]
    assert len(mine) == 1 and mine[0]["distribution"] == f"collapse-bench-{NAME}"
    assert not mine[0]["first_party"]
    assert mine[0]["registers"] == {
        "models": [NAME], "trainers": [f"{NAME}-fit"], "generators": [f"{NAME}-sample"],
        "scorers": [f"{NAME}-loglik"], "metrics": [f"{NAME}-mean-shift"],
    }

    results = tmp_path / "results"
    run_python(["-m", "bench.cli", "run", "--plugin", NAME, "--preset", "smoke", "-g", "2", "--out", str(results)],
               env, tmp_path)
    import bench.api as cb

    df = cb.metrics(results)
    assert sorted(df.generation.unique()) == [0, 1, 2]
    assert {f"{NAME}-mean-shift", "cov-trace-ratio", "logdet-diff", "perplexity-drift"} <= set(df.metric)
    # M_0 against itself: no shift at generation 0.
    assert df[(df.metric == f"{NAME}-mean-shift") & (df.generation == 0)].value.tolist() == [0.0]

    proc = run_python(["-m", "pytest", "-q", "-rA", str(pkg / "tests"), "-p", "no:cacheprovider"], env, tmp_path,
                      timeout=300)
    # Both generated files ran, and nothing was skipped or failed.
    passed = [line for line in proc.stdout.splitlines() if line.startswith("PASSED ")]
    assert sum("test_scaffold_probe_contract.py::TestContract::" in line for line in passed) >= 7
    assert sum("test_scaffold_probe_model.py::" in line for line in passed) >= 5
    summary = proc.stdout.strip().splitlines()[-1]
    assert " passed" in summary and not any(word in summary for word in ("failed", "skipped", "error"))


def test_rendered_files_fit_together():
    tomllib = pytest.importorskip("tomllib")
    description = 'Quotes " and a backslash \\ and __NAME__ kept as written'
    files = render(NAME, description)
    assert set(files) == EXPECTED_FILES
    meta = tomllib.loads(files["pyproject.toml"])
    project = meta["project"]
    assert project["name"] == f"collapse-bench-{NAME}"
    assert project["description"] == description
    assert project["requires-python"] == ">=3.10"
    assert "collapse-bench" in project["dependencies"]
    assert project["entry-points"]["collapse_bench"] == {NAME: f"{MODULE}.plugin"}
    assert "pytest>=8" in project["optional-dependencies"]["test"]
    assert meta["tool"]["pytest"]["ini_options"]["testpaths"] == ["tests"]
    assert meta["tool"]["setuptools"]["packages"] == [MODULE]
    assert meta["build-system"]["build-backend"] == "setuptools.build_meta"
    for path, text in files.items():
        if path.endswith(".py"):
            compile(text, path, "exec")  # valid Python
    plugin = ast.parse(files[f"{MODULE}/plugin.py"])
    constants = {node.targets[0].id: node.value for node in plugin.body
                 if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)}
    assert ast.literal_eval(constants["NAME"]) == NAME
    assert ast.literal_eval(constants["DESCRIPTION"]) == description
    assert set(ast.literal_eval(constants["PRESETS"])) == {"smoke", "paper"}
    assert "PLACEHOLDER" in files[f"{MODULE}/plugin.py"] and "REPLACE" in files[f"{MODULE}/plugin.py"]
    assert f'plugin = "{NAME}"' in files["tests/test_scaffold_probe_contract.py"]
    assert "results/" in files[".gitignore"].splitlines() and "__pycache__/" in files[".gitignore"].splitlines()
    readme = files["README.md"]
    for command in ('pip install -e ".[test]"', "bench plugins", f"bench run --plugin {NAME} --preset smoke", "pytest",
                    "bench.conformance"):
        assert command in readme
    # collapse-bench may not be on the author's index: the README installs it from source first.
    install = readme.index("pip install -e /path/to/collapse-bench")
    assert "No matching distribution found" in readme and install < readme.index('pip install -e ".[test]"')


def test_generated_plugin_registers_in_process():
    """The plugin module as written registers with a Bench (without installing anything)."""
    import types

    module = types.ModuleType(f"{MODULE}.plugin")
    exec(compile(render(NAME)[f"{MODULE}/plugin.py"], "plugin.py", "exec"), module.__dict__)
    b = Bench(extra_plugins=[module])
    bundle = b.models.get(NAME)
    assert (bundle.trainer, bundle.generator, bundle.scorer) == (f"{NAME}-fit", f"{NAME}-sample", f"{NAME}-loglik")
    assert bundle.metrics[0] == f"{NAME}-mean-shift"
    for metric in bundle.metrics:
        assert bundle.kind in b.metrics.get(metric).kinds
    assert b.metrics.get(f"{NAME}-mean-shift").direction in ("lower", "target")
    assert bundle.presets["smoke"]["generations"] <= 20


@pytest.mark.parametrize("bad, suggestion", [
    ("My_Model", "my-model"), ("3d gauss", "model-3d-gauss"), ("walk-", "walk"), ("a--b", "a-b"),
    ("x" * 41, "x" * 40), ("", "my-model"), ("ünï", "n"),
])
def test_invalid_names_are_refused_with_a_valid_suggestion(capsys, tmp_path, bad, suggestion):
    assert suggest_name(bad) == suggestion
    check_name(suggestion)  # the suggestion itself is valid
    code, out, err = bench_cli(capsys, "new-plugin", bad, "--dir", str(tmp_path))
    assert code != 0
    assert "invalid plugin name" in err and f"Try: bench new-plugin {suggestion}" in err
    assert "Traceback" not in err
    assert not any(tmp_path.iterdir())


def test_existing_folder_is_refused_and_left_alone(capsys, tmp_path):
    (tmp_path / NAME).mkdir()
    (tmp_path / NAME / "notes.txt").write_text("mine")
    code, out, err = bench_cli(capsys, "new-plugin", NAME, "--dir", str(tmp_path))
    assert code != 0 and "already exists and is not empty" in err
    assert files_under(tmp_path / NAME) == {"notes.txt"}
    (tmp_path / "other").write_text("a file")
    code, out, err = bench_cli(capsys, "new-plugin", "other", "--dir", str(tmp_path))
    assert code != 0 and "is not a folder" in err


def test_an_empty_existing_folder_is_used(capsys, tmp_path):
    (tmp_path / NAME).mkdir()
    code, out, err = bench_cli(capsys, "new-plugin", NAME, "--dir", str(tmp_path))
    assert code == 0, err
    assert files_under(tmp_path / NAME) == EXPECTED_FILES


@pytest.mark.parametrize("taken, reason", [
    ("gmm", "model 'gmm' is registered by plugin 'gmm'"),
    ("categorical", "model 'categorical' is registered by plugin 'gaussian'"),
    ("plugins", "a Python module collapse_bench_plugins already exists"),
    ("metrics", "an installed plugin is named 'metrics' (from collapse-bench)"),
])
def test_names_in_use_are_refused_before_writing(capsys, tmp_path, taken, reason):
    code, out, err = bench_cli(capsys, "new-plugin", taken, "--dir", str(tmp_path))
    assert code != 0
    assert f"the plugin name {taken!r} is taken" in err and reason in err
    assert "Traceback" not in err
    assert not any(tmp_path.iterdir())


def test_a_taken_component_name_is_a_clash():
    """A free model name whose trainer name another plugin holds would fail at load time: refused."""

    class Parts:
        __name__ = "parts"

        @bench.hookimpl
        def bench_register_trainers(self, register):
            register(bench.Trainer("lonely-fit", lambda request: {}))

    reasons = name_clashes("lonely", Bench(extra_plugins=[Parts()]))
    assert reasons == ["trainer 'lonely-fit' is registered by plugin 'parts'"]
    assert name_clashes("lonely", Bench()) == []
