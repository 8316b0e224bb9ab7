"""The README's Python code blocks each run on their own, in a fresh interpreter, as a reader
would copy one (issue 23: a block that needs an import from an earlier block fails here)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _blocks() -> list[tuple[str, str]]:
    """``(file:line, code)`` of every Python block of the README and the docs pages."""
    out = []
    for path in DOCS:
        text = path.read_text()
        for m in re.finditer(r"^```python\n(.*?)^```[ \t]*$", text, flags=re.S | re.M):
            out.append((f"{path.relative_to(ROOT)}:{text[: m.start()].count(chr(10)) + 1}", m.group(1)))
    return out


BLOCKS = _blocks()


@pytest.mark.parametrize("path", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
def test_every_fence_is_closed(path: Path) -> None:
    """Fences alternate opening (with or without a language) and closing (a bare fence): a block
    left open swallows the rest of the page, and a fence that opens another language is no close."""
    open_at = None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.startswith("```"):
            continue
        if open_at is None:
            open_at = number
        else:
            assert line.strip() == "```", (
                f"{path.name}:{number}: {line!r} inside the block opened at line {open_at}"
            )
            open_at = None
    assert open_at is None, f"{path.name}: the block opened at line {open_at} is never closed"


def test_the_readme_has_python_blocks() -> None:
    assert sum(where.startswith("README.md") for where, _ in BLOCKS) >= 3


@pytest.mark.parametrize(("where", "code"), BLOCKS, ids=[where for where, _ in BLOCKS])
def test_block_runs_on_its_own(where: str, code: str, tmp_path: Path) -> None:
    script = tmp_path / "block.py"
    script.write_text(code)
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"{where}:\n{proc.stderr}"


def test_demo_writes_a_contact_sheet(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "vpt_env.demo", "--steps", "40", "--tiles", "4", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "steps/s" in proc.stdout
    from PIL import Image

    with Image.open(tmp_path / "contact_sheet.png") as im:
        assert im.width > 200 and im.height > 100
