"""The API reference stays complete: every public name has a docstring and a page entry built by the
command docs/api.md gives, and CONTRIBUTING.md's reference names every field of every public type."""

import dataclasses
import importlib
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import bench

ROOT = Path(__file__).resolve().parent.parent


def build_command() -> list[str]:
    """The command docs/api.md gives for building the reference, without its output folder."""
    docs = (ROOT / "docs" / "api.md").read_text()
    lines = [line.split("#")[0].strip() for line in docs.splitlines() if line.startswith("python -m pdoc ")]
    assert len(lines) == 1, f"docs/api.md should give one `python -m pdoc` command, found {lines}"
    words = shlex.split(lines[0])
    assert words[-2] == "-o", "the command should end with `-o FOLDER`"
    return words[:-2]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("api")
    pytest.importorskip("pdoc")
    words = build_command()
    result = subprocess.run([sys.executable, *words[1:], "-o", str(out)], capture_output=True, text=True,
                            cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr
    return out


def public_names():
    return list(bench.__all__)


def docstring(name: str) -> str:
    """The docstring pdoc shows for ``bench.<name>``; a variable's (``hookimpl``) from the bench
    module that assigns it, where pdoc shows it on that module's page."""
    import pdoc.doc

    doc = pdoc.doc.Module(bench).get(name)
    assert doc is not None, f"pdoc does not see bench.{name}"
    if isinstance(doc, pdoc.doc.Variable) and not doc.docstring:
        obj = getattr(bench, name)
        for module in sorted(m for m in sys.modules if m.startswith("bench.")):
            if getattr(sys.modules[module], name, None) is obj:
                text = pdoc.doc.Module(importlib.import_module(module)).get(name).docstring
                if text:
                    return text.strip()
    return (doc.docstring or "").strip()


@pytest.mark.parametrize("name", public_names())
def test_every_public_name_has_a_docstring_of_its_own(name):
    pytest.importorskip("pdoc")
    text = docstring(name)
    assert text, f"bench.{name} has no docstring: write one (the API reference is built from it)"
    # dataclasses without a docstring get their signature as one
    assert not text.startswith(f"{name}("), f"bench.{name} has only the generated dataclass docstring"


@pytest.mark.slow
def test_the_reference_built_as_docs_api_md_says_has_every_public_name(reference):
    page = (reference / "bench.html").read_text()
    missing = [name for name in public_names() if f'id="{name}"' not in page]
    assert not missing, f"the API reference lacks {missing}"
    for module in build_command()[3:]:
        assert (reference / (module.replace(".", "/") + ".html")).is_file(), f"no page for {module}"


def signature(text: str, call: str) -> list[str] | None:
    """The parameter names of the first ``call(...)`` in text (``bench.Trainer(name, fit, params={})``
    -> ["name", "fit", "params"]), or None when text has no such call."""
    start = text.find(call + "(")
    if start < 0:
        return None
    depth, i, part, names = 0, start + len(call), "", []
    for ch in text[i:]:
        if ch in "([{":
            depth += 1
            if depth == 1:
                continue
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                break
        if ch == "," and depth == 1:
            names.append(part)
            part = ""
        else:
            part += ch
    names.append(part)
    return [n.split("=")[0].strip() for n in names if n.strip()]


def hook_reference() -> str:
    docs = (ROOT / "CONTRIBUTING.md").read_text()
    return docs.split("\n## Hook reference\n", 1)[1].split("\n## ", 1)[0]


@pytest.mark.parametrize("name", [n for n in public_names() if dataclasses.is_dataclass(getattr(bench, n))])
def test_contributing_gives_every_public_type_with_all_its_fields(name):
    fields = [f.name for f in dataclasses.fields(getattr(bench, name))]
    text = " ".join(hook_reference().split())
    given = signature(text, f"bench.{name}")
    assert given is not None, f"CONTRIBUTING.md's hook reference should give `bench.{name}({', '.join(fields)})`"
    assert given == fields, (f"CONTRIBUTING.md gives bench.{name}({', '.join(given)}); the code has "
                             f"bench.{name}({', '.join(fields)})")


def test_the_signature_parser_reads_defaults_and_nested_brackets():
    text = 'register(bench.X(name, fit, params={}, kinds=("a", "b"), f=g(1, 2), version="1")). bench.Y('
    assert signature(text, "bench.X") == ["name", "fit", "params", "kinds", "f", "version"]
    assert signature(text, "bench.Z") is None


def test_contributing_links_the_api_reference():
    docs = (ROOT / "CONTRIBUTING.md").read_text()
    assert "docs/api.md" in docs
    assert re.search(r"pdoc", (ROOT / "pyproject.toml").read_text()), "pdoc belongs in the test extra"
