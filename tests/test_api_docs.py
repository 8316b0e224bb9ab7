"""The API reference (``docs/api/``, written by ``docs/make_api.py``) matches the docstrings, every
public name it lists has a docstring, and its links land on headings that exist."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
API = ROOT / "docs" / "api"


@pytest.fixture(scope="module")
def make_api() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_api", ROOT / "docs" / "make_api.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_api"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_committed_reference_is_what_the_docstrings_give() -> None:
    # A fresh interpreter: registries that other tests fill (rewards) stay as imported.
    proc = subprocess.run(
        [sys.executable, "docs/make_api.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


#: Names whose docs are owed by a module being rewritten elsewhere (remove each once documented).
OWED = {"agents.eval.PROBES"}


def test_every_listed_name_has_a_docstring(make_api: ModuleType) -> None:
    missing = {name for name, doc in make_api.iter_documented() if not doc.strip()}
    assert not missing - OWED, (
        "public names without a docstring (a constant takes a `#:` comment above it): "
        + ", ".join(sorted(missing - OWED))
    )
    assert not OWED - missing, f"documented now, drop from OWED: {sorted(OWED - missing)}"


def _headings(text: str) -> list[str]:
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return re.findall(r"(?m)^#{1,6} (.+)$", text)


def test_links_land_on_existing_headings(make_api: ModuleType) -> None:
    pages = {p.name: p.read_text() for p in API.glob("*.md")}
    anchors = {}
    for name, text in pages.items():
        used: dict[str, int] = {}
        anchors[name] = {make_api.github_anchor(h, used) for h in _headings(text)}
    broken = []
    for name, text in pages.items():
        for target in re.findall(r"\]\(([^)\s]+)\)", re.sub(r"```.*?```", "", text, flags=re.S)):
            page, _, anchor = target.partition("#")
            if page.startswith("../"):
                if not (API / page).resolve().exists():
                    broken.append(f"{name}: {target}")
                continue
            page = page or name
            if page not in pages or (anchor and anchor not in anchors[page]):
                broken.append(f"{name}: {target}")
    assert not broken, broken


def test_no_page_has_a_python_block() -> None:
    # tests/test_readme.py runs every python block of the docs as a script: signatures and
    # doctests are `text` and `pycon` blocks instead.
    assert API.is_dir()
    assert not [p.name for p in API.glob("*.md") if "```python" in p.read_text()]


def test_the_index_links_every_module_page(make_api: ModuleType) -> None:
    index = (API / make_api.INDEX).read_text()
    for module in make_api.MODULES:
        assert f"]({module}.md)" in index, module


def test_docstrings_become_markdown(make_api: ModuleType) -> None:
    targets = {"pkg.mod.Thing": make_api.Target("pkg.mod.md", "thing")}
    ctx = make_api.Context(targets, "other.md", "pkg.other")
    doc = (
        "Make a :class:`~pkg.mod.Thing` from ``x`` (*not* ``y``).\n\n"
        "Args:\n"
        "    x: the input,\n"
        "        over two lines.\n"
        "    **kwargs: passed on.\n\n"
        "Returns:\n"
        "    The thing.\n\n"
        "Formula::\n\n"
        "    y = x * 2\n\n"
        "Example:\n"
        "    >>> 1 + 1\n"
        "    2\n"
    )
    md = make_api.render_doc(doc, ctx)
    assert md.startswith("Make a [`Thing`](pkg.mod.md#thing) from `x` (*not* `y`).")
    assert "**Args:**\n\n- `x`: the input,\n  over two lines.\n- `**kwargs`: passed on." in md
    assert "**Returns:**\n\nThe thing." in md
    assert "Formula:\n\n```text\ny = x * 2\n```" in md
    assert "```pycon\n>>> 1 + 1\n2\n```" in md


def test_values_are_shown_without_addresses(make_api: ModuleType) -> None:
    class Thing:
        pass

    shown = make_api.show_value({"a": Thing, "b": Thing(), "c": len, "d": (1,)})
    assert shown.startswith("{'a': test_values_are_shown_without_addresses.<locals>.Thing, 'b': <")
    assert " at 0x" not in shown
    assert shown.endswith("'c': len, 'd': (1,)}")
