"""DINO and ABDINO: self-distillation, and AB over the K prototypes as annotations.

The global crops are the batch's two ``base_views`` (DINO's own crops,
``DataConfig.dino_global_scale``), or views 0 and 1 without them; the local
crops are the other views, downsampled to ``dino_local_size``. The student
sees every crop, the teacher (the EMA encoder and head) the global ones. The
teacher's centre is a buffer of the system, so checkpoints hold it. ABDINO's
``p(l | x)`` is the centred, sharpened EMA teacher distribution over the
prototypes, and ``psi_AB`` is the prototype matrix itself (``phi_AB`` lives in
the head's bottleneck space).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from agents.encoders import EncoderOutput
from agents.heads import DINOHead
from agents.losses import dino_loss, teacher_probs, update_center
from agents.systems.base import Annotations, BaseOut, BaseSystem, encode_groups, pooled_views
from vpt_env import TransitionBatch

__all__ = ["DINOSystem"]


@dataclass
class DINOBaseOut(BaseOut):
    """DINO's base output: the teacher's outputs (reused by AB's targets) and the next centre."""

    teacher_out: EncoderOutput | None = None
    """The EMA encoder's outputs of the global crops."""
    new_center: Tensor | None = None
    """The centre after this step (applied by ``_end_of_loss``, after the AB target)."""


class DINOSystem(BaseSystem):
    """DINO (``method="dino"``) and ABDINO (``"abdino"``).

    Modules: ``encoder``, ``head`` (a :class:`~agents.heads.DINOHead` with ``dino_prototypes``
    prototypes in an ``embed_dim`` bottleneck); AB adds ``decoder``. Buffer: ``center`` ``(K,)``.
    """

    center: Tensor

    def _build_base(self) -> None:
        c = self.config
        self.head = DINOHead(
            self.encoder.dim, c.dino_prototypes, hidden_dim=c.hidden_dim, bottleneck_dim=c.embed_dim
        )
        self.register_buffer("center", torch.zeros(c.dino_prototypes))

    def local_size(self, view_size: int) -> int:
        """Side of the local crops for views of side ``view_size``."""
        size = self.config.dino_local_size
        return max(1, view_size // 2) if size is None else min(size, view_size)

    def _view_groups(self, views: Tensor) -> list[Tensor]:
        b, v, _, s, _ = views.shape
        if v <= 2:
            return [views]
        local = views[:, 2:]
        size = self.local_size(s)
        if size < s:
            local = F.interpolate(
                local.flatten(0, 1), size=(size, size), mode="bilinear", align_corners=False, antialias=True
            ).unflatten(0, (b, v - 2))
        return [views[:, :2], local]

    def _base_input(self, batch: TransitionBatch) -> Tensor:
        # Global crops first (the sampler's base views where drawn), then the local crops.
        return batch.views if batch.base_views is None else torch.cat([batch.base_views, batch.views], dim=1)

    def _ab_groups(self, batch: TransitionBatch, views: Tensor) -> list[Tensor]:
        # With DINO's own global crops, AB's V views are plain crops: all at the view size, one token
        # grid (without them, views 0-1 are the global crops and the rest local, as the base sees them).
        return [views] if batch.base_views is not None else self._view_groups(views)

    def _base_loss(
        self, batch: TransitionBatch, captions: list[str], online: list[EncoderOutput]
    ) -> DINOBaseOut:
        c = self.config
        student = self.head(pooled_views(online))
        with torch.no_grad():
            globals_ = batch.views[:, :2] if batch.base_views is None else batch.base_views
            (teacher_out,) = encode_groups(self.ema["encoder"], [globals_])
            teacher = self.ema["head"](teacher_out.pooled)
        loss = dino_loss(student, teacher, self.center, c.dino_student_temp, c.dino_teacher_temp)
        new_center = update_center(self.center, teacher, c.dino_center_momentum)
        return DINOBaseOut(loss, teacher_out=teacher_out, new_center=new_center)

    def _end_of_loss(self, base: DINOBaseOut) -> None:  # type: ignore[override]
        # After the AB target, which uses the same centre as this step's DINO loss.
        with torch.no_grad():
            self.center.copy_(base.new_center)

    def _ema_bootstrap(self, batch: TransitionBatch, nb: int, base: DINOBaseOut) -> list[EncoderOutput]:  # type: ignore[override]
        groups = self._ab_groups(batch, batch.views[:nb])
        if batch.base_views is not None:  # the teacher saw the base's own global crops, not these
            return encode_groups(self.ema["encoder"], groups)
        teacher = base.teacher_out
        # The teacher already encoded the global views of every image: reuse the first nb.
        first = EncoderOutput(teacher.pooled[:nb], teacher.tokens[:nb])
        if groups[0].shape[1] == 2:
            return [first, *encode_groups(self.ema["encoder"], groups[1:])]
        return encode_groups(self.ema["encoder"], groups)

    def _annotations(
        self,
        batch: TransitionBatch,
        captions: list[str],
        base: BaseOut,
        target_boot: list[EncoderOutput],
        nb: int,
    ) -> Annotations:
        c = self.config
        with torch.no_grad():
            head = self.target_modules()["head"]
            p_next = teacher_probs(head(pooled_views(target_boot)), self.center, c.dino_teacher_temp)
            psi_ema = head.prototypes
        psi = self.head.prototypes if c.ab_psi_grad else self.head.prototypes.detach()
        return Annotations(psi, psi_ema, p_next)
