"""A generic, resumable training loop over a :class:`System` and a :class:`~vpt_env.TransitionSampler`.

Each step draws a :class:`~vpt_env.TransitionBatch`, asks the system for its
loss, and takes an AdamW step under a linear warm-up + cosine schedule, then
calls ``system.after_step()`` (EMA updates). Checkpoints hold every state the
next step depends on (weights, optimizer, scheduler, step, all RNG states
including the sampler's generator), so ``N`` steps + resume + ``N`` steps
equals ``2N`` steps bit for bit on CPU.

Under ``torchrun`` (see :mod:`agents.distributed`) the system is wrapped in
``DistributedDataParallel``. Every rank draws the *global* batch
``sampler.sample(batch_size * world, V)`` from the same seed and keeps its own
``batch_size`` images, so the data equals a single process's with
``batch_size * world``. The trade-off: each rank renders the whole global batch
(``world`` times the rendering work), which is cheap next to the model at the
view sizes used here; a sharded sampler would have to reproduce the same draw.

Example:
    >>> import tempfile, numpy as np, torch
    >>> from torch import nn
    >>> from vpt_env import TransitionSampler
    >>> from vpt_env.data.sources import ArraySource
    >>> from agents.trainer import TrainConfig, Trainer
    >>> class Tiny(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.w = nn.Linear(3, 1)
    ...     def training_loss(self, batch, captions):
    ...         loss = self.w(batch.views.mean((3, 4))).pow(2).mean()
    ...         return loss, {}
    ...     def after_step(self):
    ...         pass
    >>> images = np.random.default_rng(0).integers(0, 256, (4, 24, 24, 3), dtype=np.uint8)
    >>> sampler = TransitionSampler(ArraySource(images), view_size=8)
    >>> cfg = TrainConfig(steps=3, batch_size=2, out_dir=tempfile.mkdtemp(), progress=False)
    >>> Trainer(Tiny(), sampler, cfg).fit()["step"]
    3
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from agents import distributed as dist_utils
from agents import rundir
from agents.checkpoint import (
    LATEST,
    atomic_write,
    capture_rng,
    keep_step_copy,
    latest_checkpoint,
    load_checkpoint,
    remove_checkpoints,
    remove_temporaries,
    restore_rng,
    save_checkpoint,
    step_checkpoints,
)
from agents.train_config import TrainConfig, check_int, default_param_groups, lr_factor
from vpt_env import TransitionBatch, TransitionSampler
from vpt_env.progress import Progress

__all__ = ["METRICS", "System", "TrainConfig", "Trainer", "default_param_groups", "lr_factor"]

#: File name of the metric lines in a run directory.
METRICS = "metrics.jsonl"


@runtime_checkable
class System(Protocol):
    """What the trainer trains: an ``nn.Module`` with a loss on a batch and a post-step hook.

    A system may also define ``param_groups() -> list[dict]`` (AdamW groups,
    e.g. to exclude norms and biases from weight decay); without it the trainer
    uses :func:`default_param_groups`.
    """

    def training_loss(self, batch: TransitionBatch, captions: list[str]) -> tuple[Tensor, dict[str, float]]:
        """The scalar loss on ``batch`` and named float metrics to log.

        Args:
            batch: this rank's slice of the global batch.
            captions: the sampler's caption table (``sampler.captions``),
                which ``batch.caption`` indexes (-1: no caption).
        """
        ...

    def after_step(self) -> None:
        """Called after each optimizer step (EMA updates, schedules)."""
        ...


class _LossModule(nn.Module):
    """Routes ``forward`` to ``training_loss``: DDP only hooks ``forward``."""

    def __init__(self, system: nn.Module) -> None:
        super().__init__()
        self.system = system

    def forward(self, batch: TransitionBatch, captions: list[str]) -> tuple[Tensor, dict[str, float]]:
        return self.system.training_loss(batch, captions)


def _slice_batch(batch: TransitionBatch, start: int, stop: int, device: torch.device) -> TransitionBatch:
    return TransitionBatch(*(None if t is None else t[start:stop].to(device) for t in batch))


class Trainer:
    """Trains a :class:`System` on batches from a :class:`~vpt_env.TransitionSampler`.

    Args:
        system: the model (an ``nn.Module`` following :class:`System`); it stays
            on its device, batches are moved there.
        sampler: the data; its ``generator`` is checkpointed and restored.
        config: a :class:`TrainConfig`.

    Files in ``config.out_dir`` (written by rank 0 only): ``latest.pt`` (see
    :meth:`checkpoint_state`), optional ``step_XXXXXXXX.pt``, and
    ``metrics.jsonl`` with one JSON object per logged step (``step``,
    ``loss`` (mean over ranks), ``lr``, ``images_per_s``, ``grad_norm`` and rank 0's system metrics).
    """

    def __init__(self, system: nn.Module, sampler: TransitionSampler, config: TrainConfig) -> None:
        if not isinstance(system, nn.Module) or not isinstance(system, System):
            raise TypeError(
                "system must be an nn.Module with training_loss(batch, captions) and after_step(), "
                f"got {type(system).__name__}"
            )
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        self.system = system
        self.sampler = sampler
        self.config = config
        self.step = 0
        first = next(system.parameters(), None)
        if first is None:
            raise ValueError("system has no parameters to train")
        self.device = first.device
        groups = system.param_groups() if hasattr(system, "param_groups") else None
        if groups is None:
            groups = default_param_groups(system, config.weight_decay)
        self.optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
        cfg = config

        # A plain function (not an object) so the scheduler's state_dict stores no schedule:
        # a resumed run follows the schedule of its *current* config.
        def schedule(step: int) -> float:
            return lr_factor(
                step, steps=cfg.steps, warmup_steps=cfg.warmup_steps, min_lr_ratio=cfg.min_lr_ratio
            )

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        self._model: nn.Module | None = None
        self._stop_signal: int | None = None

    # -- state ---------------------------------------------------------------------------------

    def _generators(self) -> dict[str, torch.Generator]:
        return {"sampler": self.sampler.generator}

    def checkpoint_state(self) -> dict[str, Any]:
        """The checkpoint dict: ``system``, ``optimizer``, ``scheduler``, ``step``, ``rng``, ``config``,
        ``world_size`` (all loadable with ``weights_only=True``)."""
        return {
            "system": self.system.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "rng": capture_rng(self._generators()),
            "config": asdict(self.config),
            "world_size": dist_utils.world_size(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`checkpoint_state` dict (weights, optimizer, scheduler, step, RNG).

        Raises:
            ValueError: the checkpoint's config differs from this trainer's in a field that changes
                the numbers (:data:`agents.rundir.NON_NUMERIC_FIELDS` and ``steps`` may differ),
                naming the fields.
        """
        if isinstance(state.get("config"), dict):
            ignore = rundir.NON_NUMERIC_FIELDS | rundir.RESUMABLE_FIELDS
            diffs = rundir.config_differences(
                {"train": state["config"]}, {"train": asdict(self.config)}, ignore
            )
            if diffs:
                raise ValueError(
                    f"the checkpoint in {self.config.out_dir} was trained with other settings "
                    f"({rundir.describe(diffs)}); resume it with its own settings, or start over"
                )
        if state.get("world_size", 1) != dist_utils.world_size():
            warnings.warn(
                f"checkpoint was written with world_size={state.get('world_size')}, resuming with "
                f"{dist_utils.world_size()}: the data stream differs from an uninterrupted run",
                stacklevel=2,
            )
        self.system.load_state_dict(state["system"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        # The optimizer stored the lr of the old config; follow the current config's schedule
        # (the same number when the config is unchanged).
        sched = self.scheduler
        groups = self.optimizer.param_groups
        for group, base, fn in zip(groups, sched.base_lrs, sched.lr_lambdas, strict=True):
            group["lr"] = base * fn(sched.last_epoch)
        self.step = int(state["step"])
        restore_rng(state["rng"], self._generators())

    def save(self) -> Path | None:
        """Write ``latest.pt`` now (rank 0 only; returns its path, None on other ranks)."""
        if not dist_utils.is_main_process():
            return None
        out = Path(self.config.out_dir)
        return save_checkpoint(out / LATEST, self.checkpoint_state(), keep=self.config.keep_checkpoints)

    # -- the loop --------------------------------------------------------------------------------

    def _sample(self) -> TransitionBatch:
        b, v = self.config.batch_size, self.config.views_per_image
        world, r = dist_utils.world_size(), dist_utils.rank()
        batch = self.sampler.sample(b * world, v)
        if world == 1 and batch.views.device == self.device:
            return batch
        return _slice_batch(batch, r * b, (r + 1) * b, self.device)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        amp = self.config.amp
        on = amp == "bf16" or (amp == "auto" and self.device.type == "cuda")
        if not on:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def _wrap(self) -> nn.Module:
        if self._model is None:
            module = _LossModule(self.system)
            if dist_utils.is_distributed():
                ids = [self.device.index] if self.device.type == "cuda" else None
                module = DistributedDataParallel(module, device_ids=ids, find_unused_parameters=False)
            self._model = module
        return self._model

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGINT/SIGTERM set a flag that the loop checks after each step; a second one acts at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous: dict[int, Any] = {}

        def handler(signum: int, frame: Any) -> None:
            if self._stop_signal is not None:
                # Second signal: give up on a clean stop.
                signal.signal(signum, previous[signum])
                raise KeyboardInterrupt if signum == signal.SIGINT else SystemExit(128 + signum)
            self._stop_signal = signum

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
        try:
            yield
        finally:
            for sig, h in previous.items():
                signal.signal(sig, h)

    def _should_stop(self, start: float) -> str | None:
        reason = 0
        if self._stop_signal is not None:
            reason = 2
        elif self.config.max_time_s is not None and time.monotonic() - start > self.config.max_time_s:
            reason = 1
        if dist_utils.is_distributed():
            # All ranks must stop at the same step, or the next collective hangs.
            flag = torch.tensor([float(reason)], device=self.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            reason = int(flag.item())
        return {0: None, 1: "time", 2: "signal"}[reason]

    def _prepare_metrics(self) -> Path:
        """Drop metric lines past the current step (and a torn last line) before appending."""
        path = Path(self.config.out_dir) / METRICS
        if path.exists():
            keep = []
            for line in path.read_text().splitlines():
                try:
                    if int(json.loads(line)["step"]) <= self.step:
                        keep.append(line + "\n")
                except (ValueError, KeyError, TypeError):
                    continue
            atomic_write(path, lambda f: f.write("".join(keep).encode()))
        return path

    def _start(self, resume: bool) -> None:
        """Load the latest checkpoint (``resume`` and one exists), else start a fresh run: the old
        run's checkpoints and metrics deleted (rank 0), the global RNGs seeded."""
        cfg = self.config
        out = Path(cfg.out_dir)
        ckpt = latest_checkpoint(out) if resume else None
        if ckpt is not None:
            self.load_state(load_checkpoint(ckpt))
            keep = cfg.keep_checkpoints
            if dist_utils.is_main_process() and keep and not (out / f"step_{self.step:08d}.pt").is_file():
                keep_step_copy(ckpt, self.step, keep)  # killed between latest.pt and its copy
            return
        if resume and out.is_dir() and step_checkpoints(out):
            # A fresh run would take their step numbers for its own, and delete its newer files first.
            raise ValueError(
                f"{out} holds step checkpoints ({step_checkpoints(out)[-1].name}, ...) but no {LATEST}: "
                f"copy the one to resume to {LATEST}, or start over (--no-resume deletes them)"
            )
        if dist_utils.is_main_process() and out.is_dir():
            remove_checkpoints(out)
            (out / METRICS).unlink(missing_ok=True)
        self.step = 0
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)

    def _progress(self) -> Progress:
        enabled = self.config.progress and dist_utils.is_main_process()
        return Progress(self.config.steps, "training", unit="steps", initial=self.step, enabled=enabled)

    def fit(
        self,
        resume: bool = True,
        *,
        stop_at: int | None = None,
        on_start: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """Train from the latest checkpoint in ``out_dir`` (if ``resume`` and one exists) to ``config.steps``.

        Rank 0 holds the lock of ``out_dir`` throughout (:func:`agents.rundir.hold`): a second
        process training into it is refused. Temporary files of a killed writer are deleted.
        A fresh run (``resume=False``, or no ``latest.pt``) deletes the old run's checkpoints and
        metrics, then seeds python ``random``, numpy and torch with ``config.seed`` (the sampler
        keeps its own seed). On SIGINT or SIGTERM the current step
        finishes, a checkpoint is written, and ``KeyboardInterrupt`` or
        ``SystemExit(128 + SIGTERM)`` is raised; when ``max_time_s`` is spent
        the run checkpoints and returns.

        Args:
            resume: continue from ``out_dir/latest.pt`` if it exists (else start fresh).
            stop_at: checkpoint and return after this step instead of ``config.steps``
                (the schedule still spans ``config.steps``; for interleaved evaluation).
            on_start: called (on every rank) once the checkpoint is loaded or the fresh run set up,
                before the first step (``pretrain`` writes ``run.json`` there).

        Returns:
            ``{"step", "loss" (last step's loss, this rank; None if no step ran),
            "metrics" (last logged line), "stopped" ("done", "time" or "stop_at")}``.

        Raises:
            RunDirectoryLocked: another process trains into ``out_dir``.
            ValueError: the checkpoint was trained with other settings (see :meth:`load_state`), or
                ``out_dir`` holds step checkpoints but no ``latest.pt`` (with ``resume``).
        """
        if stop_at is not None:
            check_int("stop_at", stop_at, 0)
        main = dist_utils.is_main_process()
        with rundir.hold(self.config.out_dir) if main else contextlib.nullcontext():
            if main:
                remove_temporaries(self.config.out_dir)
            self._start(resume)
            if on_start is not None:
                on_start()
            return self._loop(stop_at)

    def _loop(self, stop_at: int | None) -> dict[str, Any]:
        cfg = self.config
        metrics_path = None
        if dist_utils.is_main_process():
            metrics_path = self._prepare_metrics()
        model = self._wrap()
        model.train()
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        start = tick = time.monotonic()
        tick_step = self.step
        last_loss: Tensor | None = None
        logged: dict[str, Any] = {}
        stopped = "done"
        self._stop_signal = None
        with self._signals(), self._progress() as bar:
            end = cfg.steps if stop_at is None else min(stop_at, cfg.steps)
            if end < cfg.steps:
                stopped = "stop_at"
            while self.step < end:
                batch = self._sample()
                with self._autocast():
                    loss, metrics = model(batch, self.sampler.captions)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = None
                if cfg.grad_clip:
                    grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                lr = self.optimizer.param_groups[0]["lr"]
                self.optimizer.step()
                self.scheduler.step()
                self.system.after_step()
                self.step += 1
                last_loss = loss.detach()
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    now = time.monotonic()
                    mean_loss = float(dist_utils.all_reduce_mean(last_loss.float()))
                    images = (self.step - tick_step) * cfg.batch_size * dist_utils.world_size()
                    ips = images / max(now - tick, 1e-9)
                    tick, tick_step = now, self.step
                    logged = {"step": self.step, "loss": mean_loss, "lr": lr, "images_per_s": ips}
                    if grad_norm is not None:
                        logged["grad_norm"] = float(grad_norm)
                    logged.update({k: float(v) for k, v in metrics.items()})
                    if metrics_path is not None:
                        with metrics_path.open("a") as f:
                            f.write(json.dumps(logged) + "\n")
                        bar.set_postfix(**{"loss": f"{mean_loss:.4f}", "images/s": f"{ips:.0f}"})
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.step < cfg.steps:
                    self.save()
                reason = self._should_stop(start)
                if reason is not None:
                    stopped = reason
                    break
            self.save()
            dist_utils.barrier()
        if stopped == "signal":
            signum = self._stop_signal or signal.SIGTERM
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + signum)
        return {
            "step": self.step,
            "loss": None if last_loss is None else float(last_loss),
            "metrics": logged,
            "stopped": stopped,
        }
