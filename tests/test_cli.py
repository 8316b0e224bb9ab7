"""The ``vpt`` command: ``vpt info``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from agents.cli import main


def test_vpt_info_on_the_embedded_photos(tmp_path: Path, capsys) -> None:
    assert main(["info", "photos", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "10 / 10 / 10" in out and "23 boxes" in out
    info = json.loads((tmp_path / "info.json").read_text())
    assert info["images_read"] == 10 and info["classes"] == 18 and info["with_boxes"] == 10
    assert info["height"]["max"] == 1411 and "cat" in info["class_names"]
    with Image.open(tmp_path / "contact_sheet.png") as im:
        assert im.width > 400


def test_vpt_info_counts_skipped_files(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for i, size in enumerate([(30, 40), (50, 20), (64, 64)]):
        Image.fromarray(np.full((*size, 3), 40 * i, np.uint8)).save(data / f"im{i}.png")
    (data / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    proc = subprocess.run(
        [sys.executable, "-m", "agents.cli", "info", str(data), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads((tmp_path / "o" / "info.json").read_text())
    assert info["images_listed"] == 4 and info["images_read"] == 3
    assert info["skipped"] == {"unreadable image": 1}
    assert info["height"] == {"min": 30.0, "median": 50.0, "max": 64.0}
    strict = subprocess.run(
        [sys.executable, "-m", "agents.cli", "info", str(data), "--strict", "--out", str(tmp_path / "s")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert strict.returncode == 2 and "broken.jpg" in strict.stderr


def test_vpt_info_bad_source(tmp_path: Path, capsys) -> None:
    assert main(["info", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    assert "nope" in capsys.readouterr().err


def test_vpt_info_reading_progress_on_stderr(tmp_path: Path, capsys, monkeypatch) -> None:
    import vpt_env.progress

    monkeypatch.setattr(vpt_env.progress, "INTERVAL_S", 1e-9)  # stderr is no terminal: a line per image
    assert main(["info", "photos", "--max-images", "4", "--out", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert [line.split(" (")[0] for line in lines[:4]] == [
        f"reading images: {i}/4 images" for i in range(1, 5)
    ]
    assert lines[-1].startswith("reading images: done, 4/4 images in") and "reading images" not in out
    assert main(["info", "photos", "--max-images", "4", "--out", str(tmp_path), "--no-progress"]) == 0
    assert capsys.readouterr().err == ""
