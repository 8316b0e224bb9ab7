"""Loss functions of the base methods and of annotation bootstrapping, one file each.

All are pure functions of tensors (no module state): the caller owns temperatures,
centres and EMA networks, and gathers across ranks where a loss needs the global batch.
"""

from __future__ import annotations

from agents.losses.ab import ab_logits, ab_loss, ab_target
from agents.losses.clip import clip_loss, clip_probs
from agents.losses.dino import dino_loss, teacher_probs, update_center
from agents.losses.simclr import instance_probs, nt_xent, simclr_probs
from agents.losses.supervised import IGNORE_LABEL, multilabel_loss, supervised_loss

__all__ = [
    "IGNORE_LABEL",
    "ab_logits",
    "ab_loss",
    "ab_target",
    "clip_loss",
    "clip_probs",
    "dino_loss",
    "instance_probs",
    "multilabel_loss",
    "nt_xent",
    "simclr_probs",
    "supervised_loss",
    "teacher_probs",
    "update_center",
]
