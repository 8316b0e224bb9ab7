"""The agents' examples run end to end as subprocesses, with tiny budgets."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str) -> str:
    cmd = [sys.executable, str(ROOT / "examples" / script), "--threads", "1", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_pretrain_then_evaluate(tmp_path):
    run = tmp_path / "run"
    text = _run(
        "pretrain.py",
        "--method",
        "absimclr",
        "--steps",
        "3",
        "--batch-size",
        "8",
        "--max-images",
        "40",
        "--width",
        "8",
        "--out-dir",
        str(run),
    )
    assert "absimclr: loss" in text and (run / "latest.pt").is_file()
    table = _run(
        "evaluate.py",
        "--ckpt",
        str(run),
        "--max-images",
        "40",
        "--linear-epochs",
        "2",
        "--attentive-epochs",
        "1",
    )
    assert "| pre-trained |" in table and "| random init |" in table


def test_pretrained_encoder_in_sb3(tmp_path):
    text = _run(
        "pretrained_encoder_in_sb3.py",
        "--pretrain-steps",
        "2",
        "--ppo-steps",
        "128",
        "--episodes",
        "2",
        "--scenes",
        "30",
        "--out",
        str(tmp_path),
    )
    assert (tmp_path / "encoder.safetensors").is_file()
    assert "| pre-trained |" in text and "| random init |" in text
