"""The README's Python code blocks run, in order, in a fresh interpreter."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_python_blocks_run(tmp_path: Path) -> None:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 3
    script = tmp_path / "readme.py"
    script.write_text("\n\n".join(blocks))
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr


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
