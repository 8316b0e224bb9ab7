"""CLIP's symmetric image-text InfoNCE: the base loss of ABCLIP.

Example:
    >>> import torch
    >>> from agents.losses import clip_loss, clip_probs
    >>> img, txt = torch.eye(3), torch.eye(3)
    >>> round(clip_loss(img, txt, logit_scale=10.0).item(), 4)
    0.0001
    >>> clip_probs(img, txt, 10.0).argmax(dim=1).tolist()
    [0, 1, 2]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["clip_loss", "clip_probs"]


def _check_scale(logit_scale: Tensor | float) -> None:
    if isinstance(logit_scale, Tensor):
        if logit_scale.numel() != 1:
            raise ValueError(
                f"logit_scale must be a float or a one-element tensor, got shape {tuple(logit_scale.shape)}"
            )
    elif isinstance(logit_scale, (int, float)):
        if not logit_scale > 0:
            raise ValueError(f"logit_scale must be > 0, got {logit_scale}")
    else:
        raise TypeError(f"logit_scale must be a float or a Tensor, got {type(logit_scale).__name__}")


def _check_pair(image_emb: Tensor, text_emb: Tensor, same_rows: bool) -> None:
    if image_emb.ndim != 2:
        raise ValueError(f"image_emb must be (N, E), got shape {tuple(image_emb.shape)}")
    if text_emb.ndim != 2:
        raise ValueError(f"text_emb must be (N, E), got shape {tuple(text_emb.shape)}")
    if image_emb.shape[1] != text_emb.shape[1]:
        raise ValueError(
            f"image_emb and text_emb must share the embedding size E, got image_emb "
            f"{tuple(image_emb.shape)} and text_emb {tuple(text_emb.shape)}"
        )
    if same_rows and image_emb.shape[0] != text_emb.shape[0]:
        raise ValueError(
            f"text_emb must have one row per image_emb row (row i is image i's caption), got image_emb "
            f"{tuple(image_emb.shape)} and text_emb {tuple(text_emb.shape)}"
        )
    if image_emb.shape[0] == 0:
        raise ValueError("image_emb must hold at least one row, got N = 0")


def _logits(image_emb: Tensor, text_emb: Tensor, logit_scale: Tensor | float) -> Tensor:
    return logit_scale * (F.normalize(image_emb, dim=-1) @ F.normalize(text_emb, dim=-1).T)


def clip_loss(image_emb: Tensor, text_emb: Tensor, logit_scale: Tensor | float) -> Tensor:
    """Symmetric InfoNCE between images and their captions (Radford et al., 2021).

    Both embeddings are L2-normalised here; ``logits = logit_scale * img @ txt.T``
    and the loss is the mean of the image->text and text->image cross-entropies
    with the diagonal as target. Row ``i`` of ``text_emb`` is the caption of image
    ``i``; every other row is a negative, *including* a duplicate of the same
    caption given to another image in the batch (the loss does not deduplicate;
    with a small caption vocabulary, sample distinct captions per batch or
    accept that noise). Under DDP the caller gathers both sides first
    (:func:`agents.distributed.all_gather_with_grad`).

    Args:
        image_emb: image embeddings.
        text_emb: text embeddings, aligned row by row with ``image_emb``.
        logit_scale: the multiplicative scale itself (``1 / temperature``), a float
            or a one-element tensor; a learned log-scale is passed as ``log_scale.exp()``.

    Returns:
        Scalar loss.

    Shape:
        image_emb: ``(N, E)``; text_emb: ``(N, E)``; returns ``()``.
    """
    _check_pair(image_emb, text_emb, same_rows=True)
    _check_scale(logit_scale)
    logits = _logits(image_emb, text_emb, logit_scale)
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def clip_probs(image_emb: Tensor, text_emb: Tensor, logit_scale: Tensor | float) -> Tensor:
    """CLIP's distribution over texts for each image: ``softmax_l(logit_scale * cos(img, txt_l))``.

    This is ABCLIP's base annotation model ``p(l | x)`` with the batch's captions
    as the annotation space.

    Args:
        image_emb: image embeddings (the queries).
        text_emb: text embeddings (the annotation space, any number of them).
        logit_scale: as in :func:`clip_loss`.

    Returns:
        Rows summing to one.

    Shape:
        image_emb: ``(M, E)``; text_emb: ``(L, E)``; returns ``(M, L)``.
    """
    _check_pair(image_emb, text_emb, same_rows=False)
    if text_emb.shape[0] == 0:
        raise ValueError("text_emb must hold at least one row, got L = 0")
    _check_scale(logit_scale)
    return _logits(image_emb, text_emb, logit_scale).softmax(dim=-1)
