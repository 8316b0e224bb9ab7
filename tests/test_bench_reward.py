"""``vpt_env.tools.reward_bench`` and ``vpt bench-reward``: the checks name the reward and the property."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from agents.cli import main
from vpt_env.data.pool import ImagePool
from vpt_env.tools.reward_bench import (
    PROPERTIES,
    RewardCheckError,
    bench_reward,
    check_reward,
    load_reward,
    measure_throughput,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pool(device: torch.device) -> ImagePool:
    return ImagePool.from_source("photos", device=device)


def brightness(views, state, annotations):
    return views.mean(dim=(1, 2, 3))


def wrong_shape(views, state, annotations):
    return views.mean(dim=(2, 3))  # (B, 3)


def integer_dtype(views, state, annotations):
    return (views.mean(dim=(1, 2, 3)) > 0.5).long()


def returns_nan(views, state, annotations):
    out = views.mean(dim=(1, 2, 3))
    out[-1] = float("nan")
    return out


def nondeterministic(views, state, annotations):
    return torch.rand(views.shape[0], device=views.device)


def batch_mean_normalised(views, state, annotations):
    x = views.mean(dim=(1, 2, 3))
    return x / x.mean()


def wrong_device(views, state, annotations):
    return torch.zeros(views.shape[0], device="meta")


def not_a_tensor(views, state, annotations):
    return [0.0] * views.shape[0]


def raises(views, state, annotations):
    raise KeyError("no such annotation")


@pytest.mark.parametrize(
    ("fn", "prop"),
    [
        (wrong_shape, "shape"),
        (integer_dtype, "dtype"),
        (returns_nan, "finiteness"),
        (nondeterministic, "determinism"),
        (batch_mean_normalised, "batch invariance"),
        (wrong_device, "device"),
        (not_a_tensor, "type"),
        (raises, "call"),
    ],
)
def test_each_violation_is_named(pool: ImagePool, fn, prop: str) -> None:
    with pytest.raises(RewardCheckError) as info:
        check_reward(fn, pool, batch=16)
    assert info.value.prop == prop and info.value.reward == fn.__qualname__
    assert f"reward {fn.__qualname__!r} fails the {prop} check" in str(info.value)


def test_a_valid_reward_passes(pool: ImagePool) -> None:
    assert check_reward(brightness, pool, batch=16) == dict.fromkeys(PROPERTIES, True)
    coverage = load_reward("coverage", pool, target="cat")
    assert all(check_reward(coverage, pool, name="coverage").values())


def test_target_goes_only_to_factories_that_take_it(pool: ImagePool) -> None:
    assert load_reward(brightness, pool, target="cat") is brightness
    assert load_reward("tests.test_bench_reward:brightness", pool, target="cat").__qualname__ == "brightness"
    assert load_reward("zero", pool, target="cat") is not None
    with pytest.raises(ValueError, match="cat"):
        load_reward("coverage", pool, target="no such class")


def test_throughput_covers_every_batch_size(pool: ImagePool) -> None:
    rates = measure_throughput({"b": brightness}, pool, batch_sizes=(1, 300), seconds=0.02)
    assert set(rates["b"]) == {1, 300} and all(r > 0 for r in rates["b"].values())


def test_bench_reward_names_the_broken_reward(pool: ImagePool) -> None:
    with pytest.raises(RewardCheckError, match=r"batch_mean_normalised.*batch invariance"):
        bench_reward(batch_mean_normalised, "photos", pool=pool, seconds=0.01)


def test_cli_writes_json_and_markdown(tmp_path: Path, capsys) -> None:
    out = tmp_path / "tmp"
    assert main(["bench-reward", "coverage", "--target", "cat", "--out", str(out), "--seconds", "0.02"]) == 0
    printed = capsys.readouterr().out
    assert "batch invariance" in printed and "4096" in printed
    result = json.loads((out / "bench_reward.json").read_text())
    assert result["reward"] == "coverage" and result["target"] == "cat"
    assert all(result["checks"][p] for p in PROPERTIES)
    rows = [r for r in result["throughput"] if r["device"] == "cpu"]
    assert [r["batch"] for r in rows] == [1, 256, 4096]
    assert all(r["rewards_per_s"] > 0 and r["coverage_per_s"] > 0 for r in rows)
    assert "| cpu | 4096 |" in (out / "bench_reward.md").read_text()


def test_cli_trains_a_short_agent(tmp_path: Path) -> None:
    argv = ["bench-reward", "coverage", "--target", "cat", "--out", str(tmp_path), "--seconds", "0.01"]
    assert main([*argv, "--threads", "1", "--train-steps", "64"]) == 0
    train = json.loads((tmp_path / "bench_reward.json").read_text())["train"]
    assert train["steps"] == 64 and train["episodes"] == 16
    assert train["trained_mean"] >= 0 and train["random_mean"] >= 0
    assert "random policy" in (tmp_path / "bench_reward.md").read_text()


def test_cli_fails_with_status_2_naming_reward_and_property(tmp_path: Path, capsys) -> None:
    spec = "tests.test_bench_reward:returns_nan"
    assert main(["bench-reward", spec, "--out", str(tmp_path), "--seconds", "0.01"]) == 2
    err = capsys.readouterr().err
    assert spec in err and "finiteness" in err
    assert main(["bench-reward", "no_such_reward", "--out", str(tmp_path)]) == 2


def test_example_runs_quick(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "custom_reward.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert "passed" in proc.stdout and "rewards/s" in proc.stdout and "random policy" in proc.stdout
