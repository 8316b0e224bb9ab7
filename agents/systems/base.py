"""The shared machinery of every system: encoder, EMA targets and the annotation-bootstrapping term.

A system is a base method (its loss gives the annotation model ``p(l | x)``)
plus, for the AB methods, the action-conditioned head of docs/method.md:

    Q(l | x_i, a_{i->j}) = softmax_l(phi_AB(x_i, a_{i->j}) . psi_AB(l) / t_AB)

trained by cross-entropy towards the TD target
``normalise((1 - gamma) * p_ema(l | x_j) + gamma * max_k Q_ema(l | x_j, a_{j->k}))``
on every valid ordered pair of views of the *bootstrap* images (the first
``max(1, round(B * bootstrap_fraction))`` images of the batch). AB's views get
their own online and EMA pass when they are crop-only copies
(``TransitionBatch.crop_views``, ``DataConfig.ab_views="crops"``, the default) or
when the base reads other views (its own crops, ``TransitionBatch.base_views``:
CLIP's caption view, DINO's global crops); otherwise the online ``phi_AB`` reuses
the tokens the base loss already computed. The
target uses the EMA copies of every module, which also serve as DINO's teacher
(``SystemConfig.ab_ema_target=False``, the "no EMA target" ablation, uses the online
modules instead and leaves the EMA to the base).
Subclasses (one per base) say how the base loss is computed and what the annotation
space ``L``, ``psi_AB`` and ``p_ema(l | x)`` are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor, nn

from agents.ema import copy_for_ema, ema_update
from agents.encoders import EncoderOutput, make_encoder
from agents.heads import ABDecoder
from agents.losses import ab_logits, ab_loss, ab_target
from agents.systems.config import SystemConfig
from vpt_env import TransitionBatch

__all__ = ["ABTerm", "Annotations", "BaseOut", "BaseSystem", "LossTerms"]


class Annotations(NamedTuple):
    """An AB annotation space for one batch.

    Attributes:
        psi: ``(L, E)`` online annotation embeddings ``psi_AB(l)`` (carry gradient).
        psi_ema: ``(L, E)`` the same from the EMA modules (targets).
        p_next: ``(nb, V, L)`` ``p_ema(l | x_j)`` of every view of the bootstrap images.
    """

    psi: Tensor
    psi_ema: Tensor
    p_next: Tensor


class ABTerm(NamedTuple):
    """The AB term of one batch (over its ``nb`` bootstrap images).

    Attributes:
        loss: the scalar AB loss (cross-entropy of ``Q`` against the target, valid pairs).
        q_logits: ``(nb, V, V, L)`` online logits of ``Q(l | x_i, a_{i->j})``.
        target: ``(nb, V, V, L)`` TD targets (no gradient); ``target[b, i, j]`` depends on ``j`` only.
        valid: ``(nb, V, V)`` bool, the pairs the loss uses.
        p_next: ``(nb, V, L)`` ``p_ema(l | x_j)``, the local term of the target.
        num_labels: ``L``, the size of this batch's annotation space (0: empty, the loss is a zero).
    """

    loss: Tensor
    q_logits: Tensor
    target: Tensor
    valid: Tensor
    p_next: Tensor
    num_labels: int


class LossTerms(NamedTuple):
    """The loss terms of one batch: the base loss and, for an AB system, the AB term."""

    base_loss: Tensor
    ab: ABTerm | None


@dataclass
class BaseOut:
    """What a base loss computed: the loss, its extra metrics, and what the AB term may reuse.

    Each system returns its own subclass with typed fields for :meth:`BaseSystem._annotations`
    (CLIP's caption embeddings, DINO's teacher outputs, SimCLR's pooled views, the supervised
    target kind), instead of a dict of string keys.
    """

    loss: Tensor
    """The base loss (a scalar)."""
    metrics: dict[str, Tensor] = field(default_factory=dict)
    """Extra metrics logged beside the losses (name to scalar tensor)."""
    base_is_views: bool = True
    """Whether the base encoded AB's own views (its online outputs can then be reused)."""


def zero_touching(*modules: nn.Module | None) -> Tensor:
    """A scalar zero that depends on every trainable parameter of ``modules``.

    A loss term that is empty this batch (no captions, no valid pair) still has
    to reach every parameter, so that ``backward`` works and DDP (which does not
    look for unused parameters) sees each one get a (zero) gradient.
    """
    params = [p for m in modules if m is not None for p in m.parameters() if p.requires_grad]
    if not params:
        return torch.zeros(())
    return sum((p.sum() for p in params), params[0].new_zeros(())) * 0.0


class BaseSystem(nn.Module):
    """Base class of the eight systems (built by :func:`agents.systems.make_system`).

    Subclasses implement :meth:`_build_base`, :meth:`_base_loss` and, for AB,
    :meth:`_build_ab` and :meth:`_annotations`; they may override
    :meth:`_view_groups` (how views reach the encoder), :meth:`_base_input` (the views the base
    reads), :meth:`_ab_groups` (how AB's views reach it) and :meth:`_ema_bootstrap`.

    Attributes:
        config: the :class:`SystemConfig`.
        encoder: the online image encoder (what evaluation and export use).
        decoder: the AB decoder ``phi_AB`` (None for a base system).
        ema: ``nn.ModuleDict`` with an EMA copy (no gradient) of every trainable child module,
            under the child's name (``ema["encoder"]`` is the EMA encoder / DINO teacher).
    """

    def __init__(self, config: SystemConfig) -> None:
        super().__init__()
        if not isinstance(config, SystemConfig):
            raise TypeError(f"config must be a SystemConfig, got {type(config).__name__}")
        self.config = config
        # Build order is fixed (encoder, base heads, then AB modules) so that a base system and
        # its AB version built from the same seed share the same initial base weights.
        self.encoder = make_encoder(config.encoder, **config.encoder_kwargs)
        self._build_base()
        self.decoder: ABDecoder | None = None
        if config.is_ab:
            self.decoder = ABDecoder(
                self.encoder.dim,
                config.decoder_dim,
                config.decoder_depth,
                config.decoder_heads,
                out_dim=config.embed_dim,
                num_box_tokens=config.num_box_tokens,
            )
            self._build_ab()
        names = [
            name for name, child in self.named_children() if any(p.requires_grad for p in child.parameters())
        ]
        self.ema = nn.ModuleDict({name: copy_for_ema(getattr(self, name)) for name in names})

    # -- hooks of the subclasses -----------------------------------------------------------------

    def _build_base(self) -> None:
        """Create the base method's heads (called once, after the encoder)."""
        raise NotImplementedError

    def _build_ab(self) -> None:
        """Create the AB annotation-embedding modules (``psi_AB``), after the decoder."""

    def _base_loss(self, batch: TransitionBatch, captions: list[str], online: list[EncoderOutput]) -> BaseOut:
        """The base loss, with what :meth:`_annotations` may reuse (the system's :class:`BaseOut`)."""
        raise NotImplementedError

    def _annotations(
        self,
        batch: TransitionBatch,
        captions: list[str],
        base: BaseOut,
        target_boot: list[EncoderOutput],
        nb: int,
    ) -> Annotations | None:
        """The annotation space of this batch, or None when it is empty (e.g. no captions).

        ``target_boot`` encodes the bootstrap images' AB views: the base's views when AB shares
        them (``batch.crop_views`` is None), their crop-only copies (``batch.crop_views``) otherwise. It
        comes from the encoder of :meth:`target_modules`, whose modules give the targets
        (``psi_ema``, ``p_next``).
        """
        raise NotImplementedError

    def target_modules(self) -> Mapping[str, nn.Module]:
        """The modules that compute AB's targets, by child name (as :attr:`ema`).

        The EMA copies, or the online modules themselves when ``config.ab_ema_target`` is False
        (the "no EMA target" ablation; callers use them under ``no_grad``).
        """
        if self.config.ab_ema_target:
            return self.ema
        return {name: getattr(self, name) for name in self.ema}

    def _end_of_loss(self, base: BaseOut) -> None:
        """State updates that belong to a training step (e.g. DINO's centre), after the loss."""

    def _view_groups(self, views: Tensor) -> list[Tensor]:
        """The views as the encoder sees them: consecutive groups of views, one size per group.

        Shape:
            views: ``(B, V, 3, S, S)``; returns tensors ``(B, V_g, 3, S_g, S_g)`` with ``sum V_g = V``.
        """
        return [views]

    def _ab_groups(self, batch: TransitionBatch, views: Tensor) -> list[Tensor]:
        """AB's views as the encoder sees them (default: as the base's, :meth:`_view_groups`).

        Shape:
            views: ``(nb, V, 3, S, S)``; returns tensors ``(nb, V_g, 3, S_g, S_g)`` with ``sum V_g = V``.
        """
        return self._view_groups(views)

    def _base_input(self, batch: TransitionBatch) -> Tensor:
        """The views the base loss reads, ``(B, V_b, 3, S, S)``; the online encoder encodes only these
        for the base (default: every view; CLIP reads one view per image)."""
        return batch.views

    def _ema_bootstrap(self, batch: TransitionBatch, nb: int, base: BaseOut) -> list[EncoderOutput]:
        """EMA encoder outputs of every view of the first ``nb`` images (called under no_grad).

        Used when AB shares the base's views (``batch.crop_views`` is None), so it may reuse what
        the base loss computed.
        """
        return encode_groups(self.ema["encoder"], self._ab_groups(batch, batch.views[:nb]))

    # -- the step ---------------------------------------------------------------------------------

    def num_bootstrap(self, batch_size: int) -> int:
        """Bootstrap images of a batch of ``batch_size``: ``max(1, round(B * bootstrap_fraction))``."""
        return min(batch_size, max(1, round(batch_size * self.config.bootstrap_fraction)))

    def num_annotation(self, batch_size: int) -> int:
        """Annotation batch size: ``max(1, round(B * annotation_fraction))``."""
        return min(batch_size, max(1, round(batch_size * self.config.annotation_fraction)))

    def training_loss(self, batch: TransitionBatch, captions: list[str]) -> tuple[Tensor, dict[str, float]]:
        """The loss of one step: base loss, plus ``ab_weight`` times the AB loss for AB systems.

        Args:
            batch: views ``(B, V, 3, S, S)`` with ``V >= 2`` and their transitions.
            captions: the caption table that ``batch.caption`` indexes.

        Returns:
            The scalar loss and float metrics: ``base_loss``; for AB systems also ``ab_loss``,
            ``target_entropy`` (mean entropy in nats of the targets of the valid pairs),
            ``ab_pairs`` (valid pairs) and ``ab_labels`` (size of the annotation space).
        """
        terms, out = self._loss_terms(batch, captions)
        base = terms.base_loss
        stats = [base.detach().float()]
        names = ["base_loss"]
        loss = base
        if terms.ab is not None:
            ab = terms.ab
            loss = base + self.config.ab_weight * ab.loss
            stats += [ab.loss.detach().float(), _mean_entropy(ab.target, ab.valid), ab.valid.sum().float()]
            names += ["ab_loss", "target_entropy", "ab_pairs"]
            stats.append(torch.tensor(float(ab.num_labels), device=base.device))
            names.append("ab_labels")
        stats += [v.detach().float() for v in out.metrics.values()]
        names += list(out.metrics)
        self._end_of_loss(out)
        # One host transfer for all metrics instead of one per float().
        values = torch.stack([s.to(base.device).reshape(()) for s in stats]).tolist()
        return loss, dict(zip(names, values, strict=True))

    def loss_terms(self, batch: TransitionBatch, captions: list[str] | None = None) -> LossTerms:
        """The base loss and the AB term of a batch, for diagnostics, without any state change.

        The same computation as :meth:`training_loss` (which adds the terms), but no state of the
        system moves (DINO's centre stays; nothing is stepped): :mod:`agents.mechanism` measures what
        the value function learned from these terms. Gradients flow as in training, so a caller can
        differentiate either term.

        Args:
            batch: as for :meth:`training_loss`.
            captions: the caption table (needed by the CLIP systems).
        """
        return self._loss_terms(batch, [] if captions is None else captions)[0]

    def _loss_terms(self, batch: TransitionBatch, captions: list[str]) -> tuple[LossTerms, BaseOut]:
        _check_batch(batch)
        base_input = self._base_input(batch)
        online = encode_groups(self.encoder, self._view_groups(base_input))
        out = self._base_loss(batch, captions, online)
        out.base_is_views = base_input is batch.views
        ab = self._ab_term(batch, captions, online, out) if self.decoder is not None else None
        return LossTerms(out.loss, ab), out

    def _ab_term(
        self, batch: TransitionBatch, captions: list[str], online: list[EncoderOutput], base: BaseOut
    ) -> ABTerm:
        """The AB term over the bootstrap images; the target reuses the base's outputs."""
        assert self.decoder is not None
        cfg = self.config
        nb = self.num_bootstrap(batch.views.shape[0])
        v = batch.views.shape[1]
        valid = batch.pair_valid[:nb]
        relative = batch.relative[:nb]
        if not cfg.ab_actions:
            # Ablation: every move looks the same (the identity box), so Q predicts the
            # average over the image's crops, i.e. crop invariance (docs/method.md: -2.2).
            relative = torch.tensor([0.0, 0.0, 1.0, 1.0], device=relative.device).expand_as(relative)
        ab_shared = batch.crop_views is None
        if ab_shared:
            if base.base_is_views:
                online_boot = [EncoderOutput(o.pooled[:nb], o.tokens[:nb]) for o in online]
            else:  # the base encoded other views than AB moves between: encode AB's here
                online_boot = encode_groups(self.encoder, self._ab_groups(batch, batch.views[:nb]))
        else:
            # Crop-only AB views (DataConfig.ab_views="crops"): one more online pass, over the
            # bootstrap images only (the targets then come from the same crops).
            groups = self._ab_groups(batch, batch.crop_views[:nb])
            online_boot = encode_groups(self.encoder, groups)
        with torch.no_grad():
            if not cfg.ab_ema_target:  # the online encoder's outputs, already computed
                target_boot = [EncoderOutput(o.pooled.detach(), o.tokens.detach()) for o in online_boot]
            elif ab_shared:
                target_boot = self._ema_bootstrap(batch, nb, base)
            else:
                target_boot = encode_groups(self.ema["encoder"], groups)
        ann = self._annotations(batch, captions, base, target_boot, nb)
        if ann is None:  # nothing to predict this batch: a zero that still reaches the AB modules
            empty = batch.views.new_zeros(nb, v, v, 0)
            return ABTerm(
                zero_touching(*self._ab_modules()), empty, empty, torch.zeros_like(valid), empty[:, 0], 0
            )
        with torch.no_grad():
            if cfg.gamma == 0:
                # The bootstrap term is unused: skip the EMA decoder (ab_target only checks the shape).
                q_next = ann.p_next.unsqueeze(2).expand(-1, -1, valid.shape[2], -1)
            else:
                phi_next = decode(self.target_modules()["decoder"], target_boot, relative)
                q_next = ab_logits(phi_next, ann.psi_ema, cfg.ab_temperature).softmax(dim=-1)
            target = ab_target(ann.p_next, q_next, valid, cfg.gamma)
        phi = decode(self.decoder, online_boot, relative)
        q_logits = ab_logits(phi, ann.psi, cfg.ab_temperature)
        return ABTerm(ab_loss(q_logits, target, valid), q_logits, target, valid, ann.p_next, ann.psi.shape[0])

    def _ab_modules(self) -> list[nn.Module | None]:
        """The modules only the AB term uses (touched when the annotation space is empty)."""
        return [self.decoder]

    @torch.no_grad()
    def ab_targets(self, batch: TransitionBatch, captions: list[str] | None = None) -> tuple[Tensor, Tensor]:
        """The AB targets of a batch, for diagnostics (no state changes, no gradient).

        Args:
            batch: as for :meth:`training_loss`.
            captions: the caption table (needed by ABCLIP).

        Returns:
            ``(target, valid)``: ``(nb, V, V, L)`` target distributions and ``(nb, V, V)`` the pairs
            the loss uses (``target[b, i, j]`` is the target of ``Q(l | x_i, a_{i->j})``).

        Raises:
            ValueError: the system is not an AB system.
        """
        if self.decoder is None:
            raise ValueError(f"ab_targets needs an AB method, got method={self.config.method!r}")
        ab = self.loss_terms(batch, captions).ab
        assert ab is not None
        return ab.target, ab.valid

    def after_step(self) -> None:
        """Move every EMA copy towards its online module at ``config.ema_rate``."""
        for name, target in self.ema.items():
            ema_update(target, getattr(self, name), self.config.ema_rate)


def encode_groups(encoder: nn.Module, groups: list[Tensor]) -> list[EncoderOutput]:
    """Encode each group of views; outputs keep the view dim.

    Shape:
        groups: ``(B, V_g, 3, S_g, S_g)``; returns ``pooled (B, V_g, D)``, ``tokens (B, V_g, T_g, D)``.
    """
    outs = []
    for views in groups:
        b, v = views.shape[:2]
        out = encoder(views.flatten(0, 1))
        outs.append(EncoderOutput(out.pooled.unflatten(0, (b, v)), out.tokens.unflatten(0, (b, v))))
    return outs


def pooled_views(outs: list[EncoderOutput]) -> Tensor:
    """The pooled vectors of every view, ``(B, V, D)``, in view order."""
    return outs[0].pooled if len(outs) == 1 else torch.cat([o.pooled for o in outs], dim=1)


def decode(decoder: nn.Module, outs: list[EncoderOutput], relative: Tensor) -> Tensor:
    """``phi_AB(x_i, a_{i->j})`` for every ordered pair: ``(nb, V, V, E)``.

    Views of one group share a token grid, so each group is one decoder call over its
    ``nb * V_g`` views with their ``V`` moves each.

    Shape:
        outs: tokens ``(nb, V_g, T_g, D)``; relative: ``(nb, V, V, 4)``; returns ``(nb, V, V, E)``.
    """
    parts, start = [], 0
    for out in outs:
        nb, vg = out.tokens.shape[:2]
        rel = relative[:, start : start + vg]
        parts.append(decoder(out.tokens.flatten(0, 1), rel.flatten(0, 1)).unflatten(0, (nb, vg)))
        start += vg
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def _mean_entropy(target: Tensor, valid: Tensor) -> Tensor:
    entropy = -torch.special.xlogy(target, target).sum(dim=-1)
    return torch.where(valid, entropy, 0.0).sum() / valid.sum().clamp_min(1)


def _check_batch(batch: TransitionBatch) -> None:
    views = batch.views
    if views.ndim != 5 or views.shape[2] != 3 or not views.is_floating_point():
        raise ValueError(
            f"batch.views must be float (B, V, 3, S, S) (sample with output='float'), got "
            f"{views.dtype} {tuple(views.shape)}"
        )
    if views.shape[1] < 2:
        raise ValueError(f"batch must hold views_per_image >= 2 views per image, got {views.shape[1]}")
