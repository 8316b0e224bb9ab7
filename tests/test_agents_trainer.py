"""Tests of agents.trainer, agents.checkpoint and agents.distributed: exact resume, DDP, kills."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from _ddp_worker import ToySystem, build, make_config, make_sampler
from torch import nn

from agents import checkpoint as ckpt_mod
from agents.checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint
from agents.trainer import TrainConfig, Trainer, default_param_groups, lr_factor

WORKER = Path(__file__).with_name("_ddp_worker.py")
ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


def _assert_states_equal(a: dict, b: dict, atol: float | None = None) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if atol is None:
            assert torch.equal(a[k], b[k]), k
        else:
            torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0, msg=k)


def _metric_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _worker_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), **extra)
    return env


# -- config and schedule -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("steps", 0),
        ("batch_size", -1),
        ("amp", "fp8"),
        ("lr", 0.0),
        ("min_lr_ratio", 2.0),
        ("grad_clip", -1.0),
        ("log_every", 0),
    ],
)
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


def test_lr_schedule_warmup_then_cosine_to_floor(tmp_path):
    steps, warmup, floor, peak = 8, 3, 0.1, 1e-2
    trainer = build(tmp_path, steps=steps, warmup_steps=warmup, min_lr_ratio=floor, lr=peak)
    trainer.fit()
    logged = [m["lr"] for m in _metric_lines(tmp_path)]
    expected = []
    for s in range(steps):
        if s < warmup:
            expected.append(peak * (s + 1) / warmup)
        else:
            t = (s - warmup) / (steps - warmup)
            expected.append(peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))))
    np.testing.assert_allclose(logged, expected, rtol=1e-12)
    assert lr_factor(warmup, steps=steps, warmup_steps=warmup) == 1.0


def test_resume_follows_the_current_configs_schedule(tmp_path):
    build(tmp_path, steps=4, warmup_steps=0).fit(stop_at=2)
    build(tmp_path, steps=8, warmup_steps=0).fit()
    lrs = {m["step"]: m["lr"] for m in _metric_lines(tmp_path)}
    # Step 3 (0-based step 2) of a cosine over 8 steps, not over the first run's 4.
    assert lrs[3] == pytest.approx(1e-2 * 0.5 * (1 + math.cos(math.pi * 2 / 8)), rel=1e-12)


def test_default_param_groups_decay_only_matrices():
    system = ToySystem()
    decay, no_decay = default_param_groups(system, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim < 2 for p in no_decay["params"])
    ema = {id(p) for p in system.ema.parameters()}
    grouped = [id(p) for p in decay["params"] + no_decay["params"]]
    assert len(grouped) == len(list(system.encoder.parameters())) and not ema & set(grouped)


def test_system_param_groups_are_used(tmp_path):
    class Grouped(ToySystem):
        def param_groups(self):
            return [{"params": list(self.encoder.parameters()), "weight_decay": 0.3}]

    trainer = Trainer(Grouped(), make_sampler(), make_config(tmp_path))
    assert [g["weight_decay"] for g in trainer.optimizer.param_groups] == [0.3]


def test_trainer_rejects_non_system(tmp_path):
    with pytest.raises(TypeError, match="system"):
        Trainer(nn.Linear(2, 2), make_sampler(), make_config(tmp_path))


# -- checkpoints ----------------------------------------------------------------------------------


def test_rng_round_trip_through_safe_load(tmp_path):
    g = torch.Generator().manual_seed(7)
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    random.gauss(0, 1)  # leaves a cached gaussian in python's state
    path = save_checkpoint(tmp_path / "latest.pt", {"rng": capture_rng({"sampler": g})})

    def draw():
        py = (random.random(), random.gauss(0, 1), np.random.rand())
        return (*py, torch.rand(3), torch.rand(3, generator=g))

    first = draw()
    restore_rng(load_checkpoint(path)["rng"], {"sampler": g})
    second = draw()
    assert first[:3] == second[:3]
    assert torch.equal(first[3], second[3]) and torch.equal(first[4], second[4])
    with pytest.raises(KeyError, match="other"):
        restore_rng(load_checkpoint(path)["rng"], {"other": g})


def test_crash_mid_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "latest.pt"
    save_checkpoint(path, {"step": 1, "w": torch.ones(3)})
    real_save = torch.save

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"partial garbage")
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(path, {"step": 2, "w": torch.zeros(3)})
    monkeypatch.setattr(torch, "save", real_save)
    state = load_checkpoint(path)
    assert state["step"] == 1 and torch.equal(state["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt"]  # no temp file left behind
    assert ckpt_mod.latest_checkpoint(tmp_path) == path


def test_keep_last_step_checkpoints(tmp_path):
    for step in range(1, 6):
        save_checkpoint(tmp_path / "latest.pt", {"step": step}, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt", "step_00000004.pt", "step_00000005.pt"]
    assert load_checkpoint(tmp_path / "step_00000004.pt")["step"] == 4
    with pytest.raises(ValueError, match="keep"):
        save_checkpoint(tmp_path / "latest.pt", {}, keep=-1)


# -- exact resume -------------------------------------------------------------------------------


def test_resume_is_bit_exact(tmp_path):
    n = 4
    straight = build(tmp_path / "a", dropout=0.2, steps=2 * n)
    res_a = straight.fit()

    first = build(tmp_path / "b", dropout=0.2, steps=2 * n)
    assert first.fit(stop_at=n)["stopped"] == "stop_at"
    state = load_checkpoint(tmp_path / "b" / "latest.pt")
    assert state["step"] == n and state["world_size"] == 1 and state["config"]["steps"] == 2 * n
    with (tmp_path / "b" / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"step": n + 1, "loss": 0.0}) + "\n" + '{"step": 9')  # lost + torn lines
    second = build(tmp_path / "b", dropout=0.2, steps=2 * n)  # fresh objects, as in a new process
    res_b = second.fit()

    assert res_a["step"] == res_b["step"] == 2 * n and res_a["loss"] == res_b["loss"]
    _assert_states_equal(straight.system.state_dict(), second.system.state_dict())
    opt_a, opt_b = straight.optimizer.state_dict()["state"], second.optimizer.state_dict()["state"]
    for k in opt_a:
        _assert_states_equal(opt_a[k], opt_b[k])
    lines_a, lines_b = _metric_lines(tmp_path / "a"), _metric_lines(tmp_path / "b")
    assert [m["step"] for m in lines_b] == list(range(1, 2 * n + 1))
    for ma, mb in zip(lines_a, lines_b, strict=True):
        assert {k: v for k, v in ma.items() if k != "images_per_s"} == {
            k: v for k, v in mb.items() if k != "images_per_s"
        }


def test_fit_on_finished_run_is_a_no_op(tmp_path):
    build(tmp_path, steps=2).fit()
    again = build(tmp_path, steps=2)
    assert again.fit()["step"] == 2 and again.system.steps_done == 0


def test_max_time_checkpoints_and_stops(tmp_path):
    trainer = build(tmp_path, slow=0.05, steps=1000, max_time_s=0.2)
    res = trainer.fit()
    assert res["stopped"] == "time" and 1 <= res["step"] < 1000
    assert load_checkpoint(tmp_path / "latest.pt")["step"] == res["step"]


@pytest.mark.parametrize(
    ("signum", "exc"), [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, SystemExit)]
)
def test_signal_finishes_the_step_then_checkpoints(tmp_path, signum, exc):
    trainer = build(tmp_path, steps=10)
    system = trainer.system

    def on_step():
        if system.steps_done == 3:
            os.kill(os.getpid(), signum)

    system.on_step = on_step
    with pytest.raises(exc) as info:
        trainer.fit()
    if exc is SystemExit:
        assert info.value.code == 128 + signal.SIGTERM
    assert load_checkpoint(tmp_path / "latest.pt")["step"] == 3
    assert signal.getsignal(signum) is not None  # handlers restored


# -- processes ----------------------------------------------------------------------------------


def test_sigterm_in_subprocess_then_resume_is_bit_exact(tmp_path):
    steps, out = 16, tmp_path / "run"
    args = [sys.executable, str(WORKER), str(out), str(tmp_path / "res"), "--steps", str(steps)]
    args += ["--checkpoint-every", "4", "--dropout", "0.2"]
    proc = subprocess.Popen([*args, "--slow", "0.1"], env=_worker_env(), stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not (out / "latest.pt").exists():
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err.decode()
    stopped_at = load_checkpoint(out / "latest.pt")["step"]
    assert 4 <= stopped_at < steps

    subprocess.run(args, env=_worker_env(), check=True, timeout=60)
    resumed = torch.load(f"{tmp_path / 'res'}.rank0", weights_only=False)
    assert len(resumed["seen"]) == steps - stopped_at

    reference = build(tmp_path / "ref", dropout=0.2, steps=steps, checkpoint_every=4)
    res = reference.fit()
    assert resumed["result"]["loss"] == res["loss"]
    _assert_states_equal(reference.system.state_dict(), resumed["state"])
    assert [m["step"] for m in _metric_lines(out)] == list(range(1, steps + 1))


def _drop_key_bias(state: dict) -> dict:
    """Attention key biases removed: softmax ignores them, so their true gradient is exactly 0.

    What they receive is rounding noise, which AdamW divides by its own square root into
    lr-sized steps, so they drift apart between any two runs that round differently (here:
    2e-3 against 5e-8 for the query and value biases); nothing downstream depends on them.
    """
    out = {}
    for k, v in state.items():
        if k.endswith("in_proj_bias"):
            n = v.numel() // 3
            v = torch.cat((v[:n], v[2 * n :]))
        out[k] = v
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("system", [None, "simclr", "clip", "dino"])
def test_ddp_two_ranks_match_one_process_with_double_batch(tmp_path, system):
    """The toy system, and the bases whose negatives (SimCLR, CLIP) or centre (DINO) span ranks."""
    steps, b = 3, 4
    port = str(_free_port())
    args = [sys.executable, str(WORKER), str(tmp_path / "ddp"), str(tmp_path / "res"), "--steps", str(steps)]
    if system is not None:
        args += ["--system", system]
    procs = [
        subprocess.Popen(
            [*args, "--batch", str(b)],
            env=_worker_env(
                RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=port
            ),
            stderr=subprocess.PIPE,
        )
        for r in range(2)
    ]
    try:
        for p in procs:
            _, err = p.communicate(timeout=90)
            assert p.returncode == 0, err.decode()
    finally:
        for p in procs:  # a failed rank leaves its peer waiting in a collective
            if p.poll() is None:
                p.kill()
                p.wait()
    ranks = [torch.load(f"{tmp_path / 'res'}.rank{r}", weights_only=False) for r in range(2)]

    single = build(tmp_path / "single", steps=steps, batch_size=2 * b, system=system)
    res = single.fit()
    # Each rank saw its own half of the global batch a single process draws.
    for step in range(steps if system is None else 0):
        assert ranks[0]["seen"][step] + ranks[1]["seen"][step] == single.system.seen[step]
    single_state = _drop_key_bias(single.system.state_dict())
    _assert_states_equal(single_state, _drop_key_bias(ranks[0]["state"]), atol=1e-5)
    _assert_states_equal(ranks[0]["state"], ranks[1]["state"])
    ddp_lines = _metric_lines(tmp_path / "ddp")
    assert [m["step"] for m in ddp_lines] == list(range(1, steps + 1))
    assert ddp_lines[-1]["loss"] == pytest.approx(_metric_lines(tmp_path / "single")[-1]["loss"], abs=1e-5)
    assert load_checkpoint(tmp_path / "ddp" / "latest.pt")["world_size"] == 2
    assert res["step"] == steps


def test_fit_and_resume_on_device(tmp_path, device):
    """The loop on the --device (bf16 autocast on CUDA with amp="auto"); exactness is pinned on CPU above."""

    def make(steps):
        torch.manual_seed(1234)
        system = ToySystem().to(device)
        return Trainer(system, make_sampler(device=device), make_config(tmp_path, steps=steps))

    res = make(3).fit()
    assert res["step"] == 3 and math.isfinite(res["loss"])
    state = load_checkpoint(tmp_path / "latest.pt")
    assert all(t.device.type == "cpu" for t in state["system"].values())
    resumed = make(5)
    assert resumed.fit()["step"] == 5 and resumed.system.steps_done == 2
    assert all(p.device.type == torch.device(device).type for p in resumed.system.parameters())
