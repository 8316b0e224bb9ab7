"""Supervised and ABSupervised: a classifier on the pooled vector, and AB over the classes.

Single-label: cross-entropy of every view against its image's label (``-1``
ignored); ``p(l | x)`` is the EMA classifier's softmax. Multi-label (scenes):
BCE of every view against ``cumulants > 0`` (the classes visible in the view);
``p(l | x)`` is the EMA classifier's sigmoid normalised to sum to one.
``psi_AB`` is a learned ``(K, E)`` class-embedding matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from agents.encoders import EncoderOutput
from agents.losses import multilabel_loss, supervised_loss
from agents.systems.base import Annotations, BaseOut, BaseSystem, pooled_views
from vpt_env import TransitionBatch

__all__ = ["SupervisedSystem"]


@dataclass
class SupervisedBaseOut(BaseOut):
    """The supervised base output: which targets the loss read."""

    kind: str = "label"
    """``"label"`` (image labels, softmax) or ``"cumulant"`` (multi-label, sigmoid)."""


class SupervisedSystem(BaseSystem):
    """Supervised (``method="supervised"``) and ABSupervised (``"absupervised"``).

    Modules: ``encoder``, ``classifier`` (pooled -> K logits); AB adds ``decoder`` and
    ``class_embed`` (an ``nn.Embedding(K, E)`` whose weight is ``psi_AB``).
    """

    def _build_base(self) -> None:
        c = self.config
        if c.num_classes is None:
            raise ValueError(f"num_classes must be set for method={c.method!r} (the source's class count)")
        self.classifier = nn.Linear(self.encoder.dim, c.num_classes)

    def _build_ab(self) -> None:
        c = self.config
        assert c.num_classes is not None
        self.class_embed = nn.Embedding(c.num_classes, c.embed_dim)

    def _ab_modules(self) -> list[Any]:
        return [self.decoder, self.class_embed]

    def target_kind(self, batch: TransitionBatch) -> str:
        """``"label"`` or ``"multilabel"``: which supervised loss this batch gets."""
        kind = self.config.supervised_target
        if kind == "auto":
            kind = "label" if bool((batch.labels >= 0).any()) else "multilabel"
        if kind == "multilabel":
            k = self.config.num_classes
            if batch.cumulants is None or batch.cumulants.shape[-1] != k:
                got = None if batch.cumulants is None else tuple(batch.cumulants.shape)
                raise ValueError(
                    f"the multi-label supervised loss needs batch.cumulants (B, V, {k}) "
                    f"(num_classes={k}), got {got}"
                )
        return kind

    def _base_loss(
        self, batch: TransitionBatch, captions: list[str], online: list[EncoderOutput]
    ) -> SupervisedBaseOut:
        pooled = pooled_views(online)
        b, v = pooled.shape[:2]
        logits = self.classifier(pooled).flatten(0, 1)
        kind = self.target_kind(batch)
        if kind == "label":
            loss = supervised_loss(logits, batch.labels.to(logits.device).repeat_interleave(v))
        else:
            targets = (batch.cumulants > 0).to(logits.dtype).flatten(0, 1)
            loss = multilabel_loss(logits, targets)
        return SupervisedBaseOut(loss, kind=kind)

    def _annotations(
        self,
        batch: TransitionBatch,
        captions: list[str],
        base: SupervisedBaseOut,
        target_boot: list[EncoderOutput],
        nb: int,
    ) -> Annotations:
        targets = self.target_modules()
        with torch.no_grad():
            logits = targets["classifier"](pooled_views(target_boot))
            if base.kind == "label":
                p_next = logits.softmax(dim=-1)
            else:
                sig = logits.sigmoid()
                p_next = sig / sig.sum(dim=-1, keepdim=True)
            psi_ema = targets["class_embed"].weight.detach()
        return Annotations(self.class_embed.weight, psi_ema, p_next)
