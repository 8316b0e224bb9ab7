"""vpt_env.progress: a bar on a terminal, a plain line now and then elsewhere, nothing when off;
and the long loops that use it (training, the env demo) write only to stderr."""

from __future__ import annotations

import io
import json

import pytest

import vpt_env.progress as progress_module
from vpt_env.progress import Progress, format_seconds, track


class Clock:
    """A fake monotonic clock: each call returns the current time, advanced by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_lines_mode_writes_one_line_per_interval_then_a_last_line() -> None:
    log, clock = io.StringIO(), Clock()
    with Progress(100, "features", unit="views", stream=log, interval_s=10.0, clock=clock) as bar:
        assert bar.mode == "lines"
        for _ in range(100):
            clock.now += 0.5  # 50 s in all: a line at 10, 20, 30, 40 and 50 s
            bar.update()
            if bar.n == 60:
                bar.set_postfix(loss="0.4123")
    lines = log.getvalue().splitlines()
    assert lines[0] == "features: 20/100 views (20%), 10 s, about 40 s left"
    assert lines[1] == "features: 40/100 views (40%), 20 s, about 30 s left"
    assert lines[3] == "features: 80/100 views (80%), 40 s, about 10 s left, loss 0.4123"
    assert lines[4] == "features: 100/100 views (100%), 50 s, loss 0.4123"
    assert lines[5] == "features: done, 100/100 views in 50 s, loss 0.4123"
    assert len(lines) == 6


def test_lines_mode_says_stopped_when_the_work_ends_short_or_fails() -> None:
    log, clock = io.StringIO(), Clock()
    with Progress(100, "training", unit="steps", stream=log, interval_s=10.0, clock=clock) as bar:
        for _ in range(30):  # a time limit ends the run at 30 of 100 steps
            clock.now += 1.0
            bar.update()
    assert log.getvalue().splitlines()[-1] == "training: stopped at 30/100 steps in 30 s"
    log = io.StringIO()
    with pytest.raises(KeyboardInterrupt):
        with Progress(None, "reading", unit="images", stream=log, interval_s=10.0, clock=clock) as bar:
            for _ in range(20):
                clock.now += 1.0
                bar.update()
            raise KeyboardInterrupt
    assert log.getvalue().splitlines()[-1] == "reading: stopped at 20 images in 20 s"


def test_lines_mode_is_silent_for_work_shorter_than_the_interval() -> None:
    log, clock = io.StringIO(), Clock()
    with Progress(5, "probe", stream=log, interval_s=10.0, clock=clock) as bar:
        for _ in range(5):
            clock.now += 1.0
            bar.update()
    assert log.getvalue() == ""


def test_lines_mode_counts_from_a_resumed_step_and_without_a_total() -> None:
    log, clock = io.StringIO(), Clock()
    bar = Progress(300, "training", unit="steps", initial=200, stream=log, interval_s=5, clock=clock)
    clock.now = 10.0
    bar.update(50)  # 50 steps in 10 s: 50 left take 10 s more
    assert log.getvalue() == "training: 250/300 steps (83%), 10 s, about 10 s left\n"
    log2 = io.StringIO()
    bar2 = Progress(None, "reading", unit="images", stream=log2, interval_s=5, clock=clock)
    clock.now = 100.0
    bar2.update(7)
    assert log2.getvalue() == "reading: 7 images, 1 min 30 s\n"


def test_terminal_mode_draws_a_bar_and_off_writes_nothing() -> None:
    term = Terminal()
    with Progress(4, "linear probe", unit="epochs", stream=term) as bar:
        assert bar.mode == "bar"
        for _ in range(4):
            bar.update()
        bar.set_postfix(loss="0.1")
    text = term.getvalue()
    assert "linear probe" in text and "4/4" in text and "100%" in text and "\r" in text
    assert "█" in text or "#" in text  # the bar itself
    quiet = Terminal()
    with Progress(4, "x", stream=quiet, enabled=False) as bar:
        assert bar.mode == "off"
        bar.update(4)
    assert quiet.getvalue() == ""


def test_track_yields_every_item_and_takes_the_length() -> None:
    log, clock = io.StringIO(), Clock()

    def tick() -> float:
        clock.now += 6.0
        return clock.now

    items = list(track(range(3), "rollout", unit="steps", stream=log, interval_s=10, clock=tick))
    assert items == [0, 1, 2]
    assert log.getvalue().splitlines()[0].startswith("rollout: 2/3 steps (67%)")


def test_format_seconds_and_bad_interval() -> None:
    assert [format_seconds(s) for s in (0.4, 59, 61, 3725)] == ["0 s", "59 s", "1 min 01 s", "1 h 02 min"]
    with pytest.raises(ValueError, match="interval_s"):
        Progress(1, "x", interval_s=0)


@pytest.fixture
def every_update(monkeypatch):
    """Plain lines at every update (a tiny interval), so the loops' lines show in a short test."""
    monkeypatch.setattr(progress_module, "INTERVAL_S", 1e-9)


@pytest.mark.usefixtures("one_thread", "every_update")
def test_training_writes_progress_lines_to_stderr_only(tmp_path, capsys) -> None:
    from agents.cli import main

    tiny = ["--encoder-kwargs", '{"width": 8}', "--embed-dim", "16", "--hidden-dim", "16"]
    tiny += ["--source", "photos", "--view-size", "16", "--batch-size", "4", "--threads", "1"]
    run = tmp_path / "run"
    assert (
        main(
            [
                "pretrain",
                "--method",
                "simclr",
                "--steps",
                "3",
                "--log-every",
                "1",
                "--out-dir",
                str(run),
                *tiny,
            ]
        )
        == 0
    )
    out, err = capsys.readouterr()
    assert "training:" not in out
    lines = [line for line in err.splitlines() if line.startswith("training:")]
    assert lines[0].startswith("training: 1/3 steps (33%)")
    assert lines[-1].startswith("training: done, 3/3 steps in") and "loss" in lines[-1]
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 3
    assert (
        main(
            ["pretrain", "--method", "simclr", "--steps", "5", "--out-dir", str(run), "--no-progress", *tiny]
        )
        == 0
    )
    assert "training:" not in capsys.readouterr().err


@pytest.mark.usefixtures("every_update")
def test_env_demo_rollout_progress(tmp_path, capsys) -> None:
    from vpt_env.demo import main

    main(["--steps", "4", "--tiles", "1", "--out", str(tmp_path)])
    out, err = capsys.readouterr()
    assert "steps/s" in out and "rollout:" not in out
    assert "rollout: 4/4 steps (100%)" in err
    main(["--steps", "4", "--tiles", "1", "--out", str(tmp_path), "--no-progress"])
    assert "rollout" not in capsys.readouterr().err


@pytest.mark.usefixtures("one_thread", "every_update")
def test_ppo_training_counts_env_steps(capsys) -> None:
    from vpt_env.tools.reward_train import train_with_reward

    kw = {"target": "cat", "steps": 64, "num_envs": 4, "episode_steps": 4, "episodes": 1}
    out = train_with_reward("coverage", "photos", progress=True, **kw)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("PPO: ")]
    assert lines[0].startswith("PPO: 4/64 steps (6%)") and lines[-1].startswith("PPO: done, ")
    assert out["steps"] == 64
    train_with_reward("coverage", "photos", **kw)
    assert "PPO" not in capsys.readouterr().err
