"""The core's import layers: the import-linter contracts of pyproject.toml hold, and no module of
``bench`` takes part in an import cycle at module level (CONTRIBUTING.md, "Layers")."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONTRACTS = ("core-without-plugins", "core-layers", "core-acyclic")


def _lint_imports() -> str:
    pytest.importorskip("importlinter", reason="import-linter is in the test extra: pip install -e '.[test]'")
    here = Path(sys.executable).parent / "lint-imports"
    found = str(here) if here.exists() else shutil.which("lint-imports")
    if found is None:
        pytest.skip("the lint-imports command of import-linter is not on PATH")
    return found


def _run(config: Path, *contracts: str) -> subprocess.CompletedProcess:
    args = [_lint_imports(), "--no-cache", "--no-logo", str(config)]
    for contract in contracts:
        args += ["--contract", contract]
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("contract", CONTRACTS)
def test_import_contract_holds(contract):
    done = _run(ROOT / "pyproject.toml", contract)
    assert done.returncode == 0, f"import-linter contract {contract!r} is broken:\n{done.stdout}{done.stderr}"
    assert "1 kept, 0 broken" in done.stdout, done.stdout


def test_a_broken_layer_is_reported(tmp_path):
    """The check can fail: a contract claiming the loop sits below the types breaks on loop.py's imports."""
    config = tmp_path / ".importlinter"
    config.write_text("[importlinter]\nroot_packages =\n    bench\n\n[importlinter:contract:upside-down]\n"
                      "name = upside down\ntype = layers\ncontainers = bench\nlayers =\n    types\n    loop\n")
    done = _run(config)
    assert done.returncode != 0
    assert "bench.loop -> bench.types" in done.stdout, done.stdout


def _module_level_imports(path: Path, modules: set[str]) -> set[str]:
    """The ``bench`` modules a file imports when it is imported: statements at the top level, in
    ``try`` and in ``if`` blocks other than ``if TYPE_CHECKING:``; not inside functions."""
    found: set[str] = set()

    def visit(nodes):
        for node in nodes:
            if isinstance(node, ast.If):
                if ast.unparse(node.test) not in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)

    visit(ast.parse(path.read_text()).body)
    return found & modules


def _module_graph() -> dict[str, set[str]]:
    files = {("bench" if p.stem == "__init__" else f"bench.{p.stem}"): p for p in (ROOT / "bench").glob("*.py")}
    return {name: _module_level_imports(path, set(files)) - {name} for name, path in files.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    path: list[str] = []

    def walk(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := walk(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := walk(node)):
            return found
    return None


def test_no_import_cycle_at_module_level():
    graph = _module_graph()
    assert {"bench.types", "bench.loop", "bench.plugins"} <= set(graph)
    assert "bench.types" in graph["bench.loop"]
    cycle = _cycle(graph)
    assert cycle is None, "bench modules import each other at module level: " + " -> ".join(cycle)


def test_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
