"""CLIP and ABCLIP: image-caption contrast, and AB over the annotation batch's captions.

The base loss contrasts one view of every captioned image with its caption
(images with caption -1 are left out): ``TransitionBatch.base_views``, a view of
most of the image (``DataConfig.caption_view_scale``), or view 0 without it.
ABCLIP's annotation space ``L`` is the captions of the first
``round(B * annotation_fraction)`` captioned images: ``p(l | x) = clip_probs``
of the EMA image and text towers, and ``psi_AB(l)`` is an MLP head on the text
tower's embedding of caption ``l``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from agents.distributed import all_gather_with_grad, is_distributed
from agents.encoders import EncoderOutput
from agents.heads import MLPHead
from agents.losses import clip_loss, clip_probs
from agents.systems.base import Annotations, BaseOut, BaseSystem, pooled_views, zero_touching
from agents.text import SentenceEncoder, TextTower
from vpt_env import TransitionBatch

__all__ = ["CLIPSystem", "LogitScale"]

MAX_LOGIT_SCALE = 100.0
"""CLIP's clamp of the learned logit scale."""


class LogitScale(nn.Module):
    """A learned CLIP logit scale ``exp(log_scale)``, kept at most :data:`MAX_LOGIT_SCALE`.

    As in open_clip, the *parameter* is clipped after each optimizer step (:meth:`clip_`, which
    :meth:`CLIPSystem.after_step` calls), not the forward value: clamping in the forward pass zeroes
    the gradient above the cap while AdamW's momentum carries the parameter further past it, and
    with no weight decay on it nothing brings it back (the scale sticks at the cap).

    Args:
        init_temperature: the initial temperature (scale ``1 / init_temperature``).
    """

    def __init__(self, init_temperature: float) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))

    def forward(self) -> Tensor:
        return self.log_scale.exp()

    @torch.no_grad()
    def clip_(self) -> None:
        """Clip the parameter to ``[0, log(MAX_LOGIT_SCALE)]`` (open_clip's range), in place."""
        self.log_scale.clamp_(0.0, math.log(MAX_LOGIT_SCALE))


@dataclass
class CLIPBaseOut(BaseOut):
    """CLIP's base output: the batch's captions and their embeddings, which AB's annotations reuse."""

    texts: list[str] = field(default_factory=list)
    """The captions of the captioned images, in batch order (empty: no caption this batch)."""
    text_input: Any = None
    """The text tower's input for ``texts`` (None when empty)."""
    text_emb: Tensor | None = None
    """``(len(texts), D)`` online text embeddings (None when empty)."""


class CLIPSystem(BaseSystem):
    """CLIP (``method="clip"``) and ABCLIP (``"abclip"``).

    Modules: ``encoder``, ``image_proj`` (pooled -> E), ``text`` (a byte-level
    :class:`~agents.text.TextTower` to E, or with ``text_encoder="sentence"`` an MLP
    head on a frozen :class:`~agents.text.SentenceEncoder` kept in ``sentence``),
    ``logit_scale``; AB adds ``decoder`` and ``psi_head`` (text embedding -> E).
    """

    def _build_base(self) -> None:
        c = self.config
        self.image_proj = MLPHead(self.encoder.dim, c.hidden_dim, c.embed_dim)
        self.sentence: SentenceEncoder | None = None
        if c.text_encoder == "sentence":
            self.sentence = SentenceEncoder(c.sentence_model)
            self.text: nn.Module = MLPHead(self.sentence.out_dim, c.hidden_dim, c.embed_dim)
        else:
            self.text = TextTower(
                out_dim=c.embed_dim, dim=c.text_dim, depth=c.text_depth, heads=c.text_heads,
                max_len=c.text_max_len,
            )  # fmt: skip
        self.logit_scale = LogitScale(c.clip_init_temperature)

    def _build_ab(self) -> None:
        c = self.config
        self.psi_head = MLPHead(c.embed_dim, c.hidden_dim, c.embed_dim)

    def _ab_modules(self) -> list[Any]:
        return [self.decoder, self.psi_head]

    def _base_input(self, batch: TransitionBatch) -> Tensor:
        # The contrast reads one view per image: the sampler's caption view (DataConfig.caption_view_scale)
        # where the batch has one, else view 0. AB encodes the views it moves between itself.
        return (batch.views if batch.base_views is None else batch.base_views)[:, :1]

    def after_step(self) -> None:
        """Clip the logit scale's parameter, then move the EMA copies (see :class:`LogitScale`)."""
        self.logit_scale.clip_()
        super().after_step()

    def _text_input(self, texts: list[str], device: torch.device) -> Any:
        # The frozen sentence model runs once per step; online and EMA heads share its output.
        return texts if self.sentence is None else self.sentence(texts, device=device)

    def _embed_text(self, tower: nn.Module, text_input: Any, device: torch.device) -> Tensor:
        if self.sentence is not None:
            return tower(text_input)
        ids, mask = tower.tokenizer(text_input, device=device)
        # Cut the padding after the longest caption: a text's embedding does not depend on its
        # padding, and attention over max_len (256) tokens would dominate the step.
        n = int(mask.sum(dim=1).max())
        return tower.transformer(ids[:, :n], mask[:, :n])

    def _base_loss(
        self, batch: TransitionBatch, captions: list[str], online: list[EncoderOutput]
    ) -> CLIPBaseOut:
        pooled = pooled_views(online)
        device = pooled.device
        cap = batch.caption.tolist()
        rows = [i for i, c in enumerate(cap) if c >= 0]
        texts = [captions[cap[i]] for i in rows]
        scale = self.logit_scale()
        metrics = {"logit_scale": scale.detach(), "captioned": torch.tensor(float(len(rows)))}
        if not texts:
            zero = zero_touching(self.image_proj, self.text, self.logit_scale) + pooled.sum() * 0.0
            return CLIPBaseOut(zero, metrics, texts=texts)
        index = torch.tensor(rows, device=device)
        image_emb = self.image_proj(pooled[index, 0])
        text_input = self._text_input(texts, device)
        text_emb = self._embed_text(self.text, text_input, device)
        if is_distributed():
            image_all, text_all = _gather_rows(image_emb, text_emb, index, pooled.shape[0])
            loss = clip_loss(image_all, text_all, scale)
        else:
            loss = clip_loss(image_emb, text_emb, scale)
        return CLIPBaseOut(loss, metrics, texts=texts, text_input=text_input, text_emb=text_emb)

    def _annotations(
        self,
        batch: TransitionBatch,
        captions: list[str],
        base: CLIPBaseOut,
        target_boot: list[EncoderOutput],
        nb: int,
    ) -> Annotations | None:
        texts = base.texts
        if not texts:
            return None
        na = min(len(texts), self.num_annotation(batch.views.shape[0]))
        assert base.text_emb is not None
        psi = self.psi_head(base.text_emb[:na])
        targets = self.target_modules()
        with torch.no_grad():
            boot = pooled_views(target_boot)
            if self.config.ab_ema_target:
                text_ema = self._embed_text(targets["text"], base.text_input[:na], boot.device)
            else:  # online targets: the base loss already embedded the captions
                text_ema = base.text_emb[:na]
            psi_ema = targets["psi_head"](text_ema)
            image_ema = targets["image_proj"](boot)
            p_next = clip_probs(image_ema.flatten(0, 1), text_ema, targets["logit_scale"]()).unflatten(
                0, boot.shape[:2]
            )
        return Annotations(psi, psi_ema, p_next)


def _gather_rows(image: Tensor, text: Tensor, index: Tensor, batch: int) -> tuple[Tensor, Tensor]:
    """The captioned rows of every rank, for a CLIP loss over the global batch (DDP).

    Ranks hold different numbers of captioned images, and a gather needs one
    shape: each rank pads its rows into ``batch`` slots, gathers slots and
    mask, and keeps the filled slots (rank order, then image order, as a
    single process with the concatenated batch would). Every rank then
    computes the same global loss; the gather's backward routes each rank
    the gradient of its own rows.
    """
    filled = torch.zeros(batch, dtype=torch.bool, device=image.device).index_fill(0, index, True)
    keep = all_gather_with_grad(filled.float()).bool()
    pad_image = image.new_zeros(batch, image.shape[1]).index_copy(0, index, image)
    pad_text = text.new_zeros(batch, text.shape[1]).index_copy(0, index, text)
    return all_gather_with_grad(pad_image)[keep], all_gather_with_grad(pad_text)[keep]
