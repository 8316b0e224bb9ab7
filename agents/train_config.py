"""What a :class:`~agents.trainer.Trainer` run is configured by: :class:`TrainConfig`, the learning-rate
schedule and the AdamW parameter groups.

:mod:`agents.trainer` re-exports all three (``from agents.trainer import TrainConfig`` keeps working).

Example:
    >>> cfg = TrainConfig(steps=100, warmup_steps=10, lr=3e-4)
    >>> lr_factor(0, steps=cfg.steps, warmup_steps=cfg.warmup_steps)
    0.1
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from torch import nn

__all__ = ["AMP_MODES", "TrainConfig", "default_param_groups", "lr_factor"]

AMP_MODES = ("auto", "bf16", "off")


@dataclass
class TrainConfig:
    """Hyper-parameters and bookkeeping of a :class:`~agents.trainer.Trainer` run."""

    steps: int = 1000
    """Total optimizer steps of the run (a resumed run continues up to this)."""
    batch_size: int = 64
    """Images per step *per rank*; the global batch is ``batch_size * world_size``."""
    views_per_image: int = 4
    """Views ``V`` per image (every ordered pair is a transition)."""
    lr: float = 1e-3
    """Peak learning rate (reached at the end of warm-up)."""
    min_lr_ratio: float = 0.0
    """Floor of the cosine decay as a fraction of ``lr`` (0: decay to zero)."""
    weight_decay: float = 0.05
    """AdamW weight decay of the decayed group (default: parameters with ``ndim >= 2``)."""
    warmup_steps: int = 0
    """Steps of linear warm-up from ``lr / warmup_steps`` to ``lr``."""
    grad_clip: float | None = 1.0
    """Max global gradient norm; None or 0 disables clipping."""
    amp: str = "auto"
    """Mixed precision: ``"auto"`` (bf16 autocast on CUDA, off on CPU), ``"bf16"`` or ``"off"``."""
    log_every: int = 10
    """Steps between lines of ``metrics.jsonl`` (and progress-bar updates)."""
    checkpoint_every: int = 100
    """Steps between checkpoints (one is also written at the end); 0 disables the periodic ones."""
    keep_checkpoints: int = 0
    """Also keep the last N step-numbered checkpoints ``step_XXXXXXXX.pt`` (0: only ``latest.pt``)."""
    out_dir: str = "runs/train"
    """Directory of ``latest.pt`` and ``metrics.jsonl``."""
    seed: int = 0
    """Seed of python ``random``, numpy and torch at the start of a fresh (not resumed) run."""
    max_time_s: float | None = None
    """Wall-clock budget of one :meth:`~agents.trainer.Trainer.fit` call; when spent, checkpoint and stop."""
    progress: bool = True
    """Show progress on stderr (rank 0 only): a bar on a terminal, else a plain line every 10 s."""

    def __post_init__(self) -> None:
        self.out_dir = str(self.out_dir)
        for name in ("steps", "batch_size"):
            check_int(name, getattr(self, name), 1)
        check_int("views_per_image", self.views_per_image, 2)  # every method pairs views of an image
        for name in ("warmup_steps", "checkpoint_every", "keep_checkpoints", "seed"):
            check_int(name, getattr(self, name), 0)
        check_int("log_every", self.log_every, 1)
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.grad_clip is not None and not self.grad_clip >= 0:
            raise ValueError(f"grad_clip must be None or >= 0, got {self.grad_clip!r}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        if self.max_time_s is not None and not self.max_time_s > 0:
            raise ValueError(f"max_time_s must be None or > 0, got {self.max_time_s!r}")


def check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


def lr_factor(step: int, *, steps: int, warmup_steps: int, min_lr_ratio: float = 0.0) -> float:
    """The learning-rate multiplier of optimizer step ``step`` (0-based): linear warm-up, then cosine.

    ``(step + 1) / warmup_steps`` during warm-up (so the first step does not
    waste itself at lr 0), then ``min + (1 - min) * (1 + cos(pi * t)) / 2`` with
    ``t = (step - warmup_steps) / (steps - warmup_steps)``.

    Example:
        >>> [round(lr_factor(s, steps=6, warmup_steps=2), 3) for s in range(6)]
        [0.5, 1.0, 1.0, 0.854, 0.5, 0.146]
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    t = min(1.0, (step - warmup_steps) / max(1, steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


def default_param_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on matrices and kernels (``ndim >= 2``), none on norms and biases.

    Args:
        module: the model; parameters with ``requires_grad=False`` (EMA copies) are left out.
        weight_decay: decay of the first group.
    """
    params = [p for p in module.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]
