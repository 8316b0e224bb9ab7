"""A toy system and a subprocess entry point for tests/test_agents_trainer.py.

Run as a script (``python tests/_ddp_worker.py OUT_DIR RESULT --steps 20 ...``)
it trains :class:`ToySystem` with :class:`agents.trainer.Trainer`, under
``torchrun``-style environment variables when they are set, and saves the
final ``state_dict``, the fit result and the image indices each step saw.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents import distributed
from agents.trainer import TrainConfig, Trainer
from vpt_env import TransitionBatch, TransitionSampler
from vpt_env.data.sources import ArraySource


def make_sampler(seed: int = 0, device: str | torch.device = "cpu") -> TransitionSampler:
    """12 random 24x24 images, 16x16 views."""
    images = np.random.default_rng(0).integers(0, 256, (12, 24, 24, 3), dtype=np.uint8)
    return TransitionSampler(ArraySource(images), view_size=16, seed=seed, device=device)


class ToySystem(nn.Module):
    """A small conv encoder with a multi-view NT-Xent over gathered keys and an EMA target term.

    Each rank's anchors are its local views; the keys are every rank's views
    (``all_gather_with_grad``), so the DDP run must match one process with the
    global batch. The EMA copy feeds a small regression term, so its state
    matters for exact resumption.
    """

    def __init__(self, dropout: float = 0.0, slow: float = 0.0) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.GroupNorm(2, 8),
            nn.GELU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.GELU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(16, 16),
        )
        self.ema = copy.deepcopy(self.encoder).requires_grad_(False)
        self.temperature = 0.5
        self.slow = slow
        self.seen: list[list[int]] = []
        self.on_step: Callable[[], None] | None = None
        self.steps_done = 0

    def training_loss(self, batch: TransitionBatch, captions: list[str]) -> tuple[Tensor, dict[str, float]]:
        self.seen.append(batch.image.tolist())
        b, v = batch.views.shape[:2]
        z = F.normalize(self.encoder(batch.views.flatten(0, 1)), dim=-1)
        keys = distributed.all_gather_with_grad(z)
        n = keys.shape[0]
        anchor = torch.arange(b * v, device=z.device) + distributed.rank() * b * v
        key = torch.arange(n, device=z.device)
        is_self = anchor[:, None] == key[None, :]
        positive = (anchor[:, None] // v == key[None, :] // v) & ~is_self
        log_prob = (z @ keys.T / self.temperature).float().masked_fill(is_self, float("-inf")).log_softmax(-1)
        nt = -(log_prob.masked_fill(~positive, 0.0).sum(-1) / positive.sum(-1)).mean()
        with torch.no_grad():
            target = F.normalize(self.ema(batch.views.flatten(0, 1)), dim=-1)
        reg = (z.float() - target.float()).pow(2).sum(-1).mean()
        return nt + 0.1 * reg, {"nt_xent": nt.item(), "reg": reg.item()}

    def after_step(self) -> None:
        with torch.no_grad():
            for e, o in zip(self.ema.parameters(), self.encoder.parameters(), strict=True):
                e.lerp_(o, 0.1)
        self.steps_done += 1
        if self.on_step is not None:
            self.on_step()
        if self.slow:
            time.sleep(self.slow)


def make_config(out_dir: str | Path, **kw: object) -> TrainConfig:
    """The tests' default config (tiny batches, no progress bar)."""
    base: dict[str, object] = {
        "steps": 6,
        "batch_size": 4,
        "views_per_image": 2,
        "lr": 1e-2,
        "warmup_steps": 2,
        "log_every": 1,
        "checkpoint_every": 0,
        "out_dir": str(out_dir),
        "progress": False,
    }
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def build(
    out_dir: str | Path, dropout: float = 0.0, slow: float = 0.0, system: str | None = None, **kw: object
) -> Trainer:
    """Fresh objects (same seeds) as a new process would make them.

    ``system``: a method of :func:`agents.systems.make_system` (tiny, on captioned scenes)
    instead of :class:`ToySystem`.
    """
    torch.manual_seed(1234)
    if system is None:
        return Trainer(ToySystem(dropout=dropout, slow=slow), make_sampler(), make_config(out_dir, **kw))
    from agents.systems import SystemConfig, make_system
    from vpt_env.data.scenes import SceneSource

    sampler = TransitionSampler(SceneSource(n_images=16, caption_fraction=0.9), view_size=16, seed=0)
    small = {
        "encoder_kwargs": {"width": 8},
        "embed_dim": 16,
        "hidden_dim": 16,
        "decoder_dim": 16,
        "text_dim": 16,
        "dino_prototypes": 32,
    }
    model = make_system(SystemConfig(system, **small), num_classes=sampler.pool.annotations.num_classes)
    return Trainer(model, sampler, make_config(out_dir, **kw))


def main() -> None:
    torch.set_num_threads(1)
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir")
    parser.add_argument("result")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--checkpoint-every", type=int, default=0)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--slow", type=float, default=0.0)
    parser.add_argument("--system", default=None, help="a make_system method instead of the toy")
    args = parser.parse_args()
    distributed.init_from_env()
    trainer = build(
        args.out_dir,
        dropout=args.dropout,
        slow=args.slow,
        system=args.system,
        steps=args.steps,
        batch_size=args.batch,
        checkpoint_every=args.checkpoint_every,
    )
    result = trainer.fit(resume=True)
    system = trainer.system
    out = {"state": system.state_dict(), "result": result, "seen": getattr(system, "seen", [])}
    torch.save(out, f"{args.result}.rank{distributed.rank()}")
    distributed.barrier()
    if distributed.is_distributed():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
