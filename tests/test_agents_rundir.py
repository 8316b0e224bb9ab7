"""A run directory has one writer and holds one run (agents.rundir, agents.pretrain, agents.trainer):
the lock, the resume check, seeded initialisation, starting over, temporary files, a full disk."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _ddp_worker import build

from agents import checkpoint as ckpt_mod
from agents.checkpoint import load_checkpoint, save_checkpoint
from agents.pretrain import DataConfig, pretrain
from agents.rundir import LOCK_FILE, RunDirectoryLocked, config_differences, hold, holder
from agents.systems import SystemConfig
from agents.trainer import TrainConfig

WORKER = Path(__file__).with_name("_ddp_worker.py")
ROOT = Path(__file__).resolve().parents[1]
SMALL = {"encoder_kwargs": {"width": 8}, "embed_dim": 16, "hidden_dim": 16, "decoder_dim": 16}

pytestmark = pytest.mark.usefixtures("one_thread")


def _configs(out: Path, **train: object) -> tuple[DataConfig, SystemConfig, TrainConfig]:
    kw: dict[str, object] = {"steps": 2, "batch_size": 4, "out_dir": str(out), "progress": False}
    kw.update(train)
    data = DataConfig(source="photos", view_size=16, max_images=8)
    return data, SystemConfig("absimclr", **SMALL), TrainConfig(**kw)  # type: ignore[arg-type]


def _worker(out: Path, res: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    args = [sys.executable, str(WORKER), str(out), str(res), "--steps", "400", "--slow", "0.05", *extra]
    return subprocess.Popen(args, env=env, stderr=subprocess.PIPE)


def _wait_for(path: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120  # a start-up guard, not a speed requirement
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


# -- 1. one writer ----------------------------------------------------------------------------------


def test_a_second_writer_is_refused_naming_the_holder_until_it_exits(tmp_path):
    out = tmp_path / "run"
    proc = _worker(out, tmp_path / "res", "--checkpoint-every", "5")
    try:
        _wait_for(out / "latest.pt", proc)
        second = build(out, steps=400)
        with pytest.raises(OSError, match=f"in use by another run \\(pid {proc.pid} on host") as info:
            second.fit()
        assert isinstance(info.value, RunDirectoryLocked) and "--out-dir" in str(info.value)
        assert second.system.steps_done == 0  # refused before a step
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    stopped = load_checkpoint(out / "latest.pt")["step"]
    assert not (out / LOCK_FILE).exists()  # released on exit
    # The first writer gone, the same run resumes where it stopped.
    again = build(out, steps=400)
    assert again.fit(stop_at=stopped + 1)["step"] == stopped + 1


def test_a_lock_left_by_a_killed_process_is_stale(tmp_path):
    out = tmp_path / "run"
    proc = _worker(out, tmp_path / "res", "--checkpoint-every", "1")
    _wait_for(out / "latest.pt", proc)
    assert holder(out)["pid"] == proc.pid
    proc.kill()  # SIGKILL: no clean-up runs
    proc.communicate(timeout=60)
    assert holder(out)["pid"] == proc.pid  # the file stays, naming a dead process
    step = load_checkpoint(out / "latest.pt")["step"]
    assert build(out, steps=400).fit(stop_at=step + 1)["step"] == step + 1


def test_the_lock_is_reentrant_in_a_thread_and_refuses_another(tmp_path):
    import threading

    errors: list[BaseException] = []

    def other() -> None:
        try:
            with hold(tmp_path):
                pass
        except RunDirectoryLocked as err:
            errors.append(err)

    with hold(tmp_path), hold(tmp_path):
        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert len(errors) == 1 and "another thread" in str(errors[0])
    with hold(tmp_path):  # released
        pass


# -- 2. the same run or refused ---------------------------------------------------------------------


def test_resume_with_settings_that_change_the_numbers_is_refused_naming_them(tmp_path):
    out = tmp_path / "run"
    data, system, train = _configs(out)
    pretrain(data, system, train)
    record = (out / "run.json").read_text()
    changes = [
        (DataConfig(source="photos", view_size=32, max_images=8), train, ["data.view_size"]),
        (DataConfig(source="photos", view_size=16, max_images=6), train, ["data.max_images"]),
        (data, _configs(out, lr=2e-3, batch_size=8)[2], ["train.batch_size", "train.lr"]),
        (data, _configs(out, seed=1)[2], ["train.seed"]),
    ]
    for d, t, fields in changes:
        with pytest.raises(ValueError, match="holds a run with other settings") as info:
            pretrain(d, system, t)
        for field in fields:
            assert field in str(info.value)
        assert (out / "run.json").read_text() == record  # the record does not change
    with pytest.raises(ValueError, match=r"run.init_seed=0 \(given 5\)"):
        pretrain(data, system, train, init_seed=5)
    # What changes no number may differ: another log interval, checkpoint interval, progress.
    t = _configs(out, log_every=1, checkpoint_every=1, steps=3)[2]
    assert pretrain(data, system, t)["step"] == 3
    stored = json.loads((out / "run.json").read_text())
    assert stored["train"]["log_every"] == 1 and stored["history"] == [{"step": 2, "steps": [2, 3]}]


def test_a_checkpoint_trained_with_other_settings_is_refused_without_run_json(tmp_path):
    build(tmp_path, steps=4).fit(stop_at=2)
    with pytest.raises(ValueError, match=r"other settings \(train.lr=0.01 \(given 0.02\)\)"):
        build(tmp_path, steps=4, lr=2e-2).fit()
    assert build(tmp_path, steps=6).fit()["step"] == 6  # steps may change: the run is extended


def test_run_json_is_written_only_after_the_checkpoint_loads(tmp_path):
    out = tmp_path / "run"
    data, system, train = _configs(out)
    pretrain(data, system, train)
    record = (out / "run.json").read_text()
    (out / "latest.pt").write_bytes(b"truncated")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        pretrain(data, system, _configs(out, steps=4)[2])
    assert (out / "run.json").read_text() == record


# -- 3. a seed is a run ----------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_run_whatever_the_global_rng_state(tmp_path):
    runs = []
    for k in range(2):
        torch.manual_seed(100 + k)  # what came before in the process must not matter
        data, system, train = _configs(tmp_path / str(k), log_every=1)
        pretrain(data, system, train)
        runs.append((tmp_path / str(k) / "metrics.jsonl").read_text().splitlines())
    losses = [[json.loads(line)["loss"] for line in lines] for lines in runs]
    assert losses[0] == losses[1]
    a, b = (load_checkpoint(tmp_path / str(k) / "latest.pt")["system"] for k in range(2))
    assert all(torch.equal(a[key], b[key]) for key in a)


# -- 4. starting over ----------------------------------------------------------------------------


def test_starting_over_leaves_nothing_of_the_old_run(tmp_path):
    build(tmp_path, steps=6, checkpoint_every=1, keep_checkpoints=2).fit()
    assert {p.name for p in tmp_path.glob("step_*")} == {"step_00000005.pt", "step_00000006.pt"}
    build(tmp_path, steps=3, checkpoint_every=1, keep_checkpoints=2).fit(resume=False)
    assert {p.name for p in tmp_path.glob("step_*")} == {"step_00000002.pt", "step_00000003.pt"}
    assert load_checkpoint(tmp_path / "step_00000003.pt")["step"] == 3
    assert [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_step_checkpoints_without_latest_are_not_silently_overwritten(tmp_path):
    build(tmp_path, steps=4, checkpoint_every=1, keep_checkpoints=2).fit()
    (tmp_path / "latest.pt").unlink()
    with pytest.raises(ValueError, match=r"step_00000004\.pt.*no latest\.pt.*--no-resume"):
        build(tmp_path, steps=4, checkpoint_every=1, keep_checkpoints=2).fit()
    assert {p.name for p in tmp_path.glob("step_*")} == {"step_00000003.pt", "step_00000004.pt"}


def test_a_step_copy_lost_to_a_kill_is_made_again_on_resume(tmp_path):
    build(tmp_path, steps=6, checkpoint_every=3, keep_checkpoints=2).fit(stop_at=3)
    (tmp_path / "step_00000003.pt").unlink()  # killed after latest.pt was written, before its copy
    build(tmp_path, steps=6, checkpoint_every=3, keep_checkpoints=2).fit()
    assert {p.name for p in tmp_path.glob("step_*")} == {"step_00000003.pt", "step_00000006.pt"}
    assert load_checkpoint(tmp_path / "step_00000003.pt")["step"] == 3


def test_the_same_command_after_the_run_ended_is_a_no_op(tmp_path, capsys):
    from agents.cli import main

    args = ["pretrain", "--method", "simclr", "--source", "photos", "--view-size", "16", "--batch-size", "4"]
    args += ["--encoder-kwargs", '{"width": 8}', "--embed-dim", "16", "--hidden-dim", "16", "--steps", "1"]
    args += ["--no-progress", "--threads", "1", "--out-dir", str(tmp_path)]
    assert main(args) == 0
    before = load_checkpoint(tmp_path / "latest.pt")
    assert main(args) == 0
    assert "1 steps on 10 images (done); no step left to run" in capsys.readouterr().out
    after = load_checkpoint(tmp_path / "latest.pt")
    assert after["step"] == 1 and all(torch.equal(before["system"][k], v) for k, v in after["system"].items())


# -- 5. temporary files, a full disk ------------------------------------------------------------


def test_temporary_files_of_a_killed_writer_are_removed(tmp_path):
    left = [".latest.pt.k2j3h4.tmp", ".step_00000002.pt.link", ".run.json.abc.tmp", ".metrics.jsonl.x.tmp"]
    tmp_path.mkdir(exist_ok=True)
    for name in left:
        (tmp_path / name).write_bytes(b"x" * 100)
    (tmp_path / "notes.tmp").write_text("the user's")
    build(tmp_path, steps=2).fit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt", "metrics.jsonl", "notes.tmp"]


class _FullDisk:
    """A file whose writes fail with ENOSPC after ``room`` bytes, as on a full disk."""

    def __init__(self, f, room: int) -> None:
        self.f, self.room = f, room

    def write(self, data) -> int:
        n = len(memoryview(data))
        if n > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= n
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.f.close()


def test_a_full_disk_says_so_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "latest.pt"
    save_checkpoint(path, {"step": 1, "w": torch.ones(3)})
    real = os.fdopen
    monkeypatch.setattr(ckpt_mod.os, "fdopen", lambda fd, mode: _FullDisk(real(fd, mode), 600))
    with pytest.raises(OSError, match=f"writing {path}: No space left on device") as info:
        save_checkpoint(path, {"step": 2, "w": torch.zeros(10_000)})
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt"]


def test_config_differences_compare_shared_fields_only():
    old = {"train": {"lr": 0.1, "steps": 2, "gone": 1}, "data": {"scale": [0.1, 1.0]}}
    new = {"train": {"lr": 0.1, "steps": 3, "new": 2}, "data": {"scale": (0.1, 1.0)}, "run": {"x": 1}}
    assert config_differences(old, new) == [("train.steps", 2, 3)]
    assert config_differences(old, new, ignore={"steps"}) == []


def test_a_record_from_before_the_bases_own_crops_reads_as_without_them(tmp_path):
    """Runs written before issue 19 have no caption_view_scale / dino_global_scale: they drew no
    base crops, so they compare (and read back) as None, not as today's defaults."""
    import json

    from agents.pretrain import DataConfig, read_run
    from agents.rundir import config_differences

    old = {"data": {"source": "photos"}}
    now = {"data": {"source": "photos", "caption_view_scale": [0.9, 1.0], "dino_global_scale": None}}
    assert config_differences(old, now) == [("data.caption_view_scale", None, [0.9, 1.0])]
    assert config_differences(old, {"data": {"source": "photos", "caption_view_scale": None}}) == []
    record = {"data": {"source": "photos"}, "system": {"method": "clip"}, "train": {"steps": 2}}
    (tmp_path / "run.json").write_text(json.dumps(record))
    data, _, _ = read_run(tmp_path)
    assert data.caption_view_scale is None and data.dino_global_scale is None
    assert DataConfig().caption_view_scale == (0.9, 1.0)
