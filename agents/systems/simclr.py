"""SimCLR and ABSimCLR: instance discrimination, and AB over the batch's views as annotations.

ABSimCLR's annotation space ``L`` is the annotation batch's view-0 embeddings
(instance identities): ``p(l | x) = instance_probs(EMA projection of x, EMA
projections of the annotation views)``, in which a view is never scored against
itself (view 0 of an image meets its own image through view 1), and ``psi_AB(l)``
is an MLP head on the image tower's pooled output of annotation view ``l``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from agents.distributed import all_gather_with_grad
from agents.encoders import EncoderOutput
from agents.heads import MLPHead
from agents.losses import instance_probs, nt_xent
from agents.systems.base import Annotations, BaseOut, BaseSystem, pooled_views
from vpt_env import TransitionBatch

__all__ = ["SimCLRSystem"]


@dataclass
class SimCLRBaseOut(BaseOut):
    """SimCLR's base output: the pooled online views, AB's annotation keys."""

    pooled: Tensor | None = None
    """``(B, V, D)`` pooled online encoder outputs."""


class SimCLRSystem(BaseSystem):
    """SimCLR (``method="simclr"``) and ABSimCLR (``"absimclr"``).

    Modules: ``encoder``, ``projector`` (pooled -> E); AB adds ``decoder`` and ``psi_head``
    (pooled -> E); ``ema`` holds a copy of each.
    """

    def _build_base(self) -> None:
        c = self.config
        self.projector = MLPHead(self.encoder.dim, c.hidden_dim, c.embed_dim)

    def _build_ab(self) -> None:
        c = self.config
        self.psi_head = MLPHead(self.encoder.dim, c.hidden_dim, c.embed_dim)

    def _ab_modules(self) -> list[Any]:
        return [self.decoder, self.psi_head]

    def _base_loss(
        self, batch: TransitionBatch, captions: list[str], online: list[EncoderOutput]
    ) -> SimCLRBaseOut:
        pooled = pooled_views(online)
        z = self.projector(pooled)
        # Negatives from every rank; the gradient through the gather matches one big process.
        loss = nt_xent(all_gather_with_grad(z), self.config.simclr_temperature)
        return SimCLRBaseOut(loss, pooled=pooled)

    def _annotations(
        self,
        batch: TransitionBatch,
        captions: list[str],
        base: SimCLRBaseOut,
        target_boot: list[EncoderOutput],
        nb: int,
    ) -> Annotations:
        na = self.num_annotation(batch.views.shape[0])
        psi = self.psi_head(base.pooled[:na, 0])
        targets = self.target_modules()
        with torch.no_grad():
            boot = pooled_views(target_boot)  # (nb, V, D)
            nb = boot.shape[0]
            own = min(nb, na)  # bootstrap images that are also annotations (the first ones)
            if not self.config.ab_ema_target:
                # Online targets: the base loss already encoded every view of every image.
                keys = base.pooled[:na, 0]
                alt = base.pooled[:own, 1]
            elif batch.crop_views is None:
                # The bootstrap images are the first annotation images: reuse their EMA views.
                keys = boot[:na, 0]
                if na > nb:
                    keys = torch.cat([keys, targets["encoder"](batch.views[nb:na, 0]).pooled])
                alt = boot[:own, 1]
            else:  # AB's views are crop-only copies; the annotations are the base's views
                keys = targets["encoder"](batch.views[:na, 0]).pooled
                alt = targets["encoder"](batch.views[:own, 1]).pooled
            psi_ema = targets["psi_head"](keys)
            p_next = instance_probs(
                targets["projector"](boot), targets["projector"](keys), targets["projector"](alt),
                self.config.simclr_temperature,
            )  # fmt: skip
        return Annotations(psi, psi_ema, p_next)
