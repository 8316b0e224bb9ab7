"""Supervised base losses: single-label cross-entropy and multi-label BCE.

Example:
    >>> import torch
    >>> from agents.losses import multilabel_loss, supervised_loss
    >>> logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    >>> round(supervised_loss(logits, torch.tensor([0, -1])).item(), 4)  # the -1 row is ignored
    0.1269
    >>> supervised_loss(logits, torch.tensor([-1, -1])).item()
    0.0
    >>> round(multilabel_loss(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]])).item(), 4)
    0.6931
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["IGNORE_LABEL", "multilabel_loss", "supervised_loss"]

IGNORE_LABEL = -1
"""The label of an unlabelled example (``TransitionBatch.labels`` uses it)."""


def supervised_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy over the labelled rows; rows labelled ``-1`` are ignored.

    The mean is over labelled rows only. When no row is labelled the loss is a
    zero that still depends on ``logits`` (so ``backward`` works and gives zero
    gradients), rather than the NaN that ``F.cross_entropy`` returns. Costs one
    host sync, for the label-range check.

    Args:
        logits: unnormalised class scores.
        labels: integer class indices in ``[0, K)``, or ``-1`` for unknown.

    Returns:
        Scalar loss.

    Shape:
        logits: ``(N, K)``; labels: ``(N,)``; returns ``()``.
    """
    if logits.ndim != 2:
        raise ValueError(f"logits must be (N, K), got shape {tuple(logits.shape)}")
    if labels.ndim != 1 or labels.shape[0] != logits.shape[0]:
        raise ValueError(
            f"labels must be (N,) with N = {logits.shape[0]} (the rows of logits), got {tuple(labels.shape)}"
        )
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor (int64), got {labels.dtype}")
    k = logits.shape[1]
    if labels.numel() and bool(((labels < IGNORE_LABEL) | (labels >= k)).any()):
        raise ValueError(
            f"labels must lie in [0, {k}) or be {IGNORE_LABEL} (ignored), got values in "
            f"[{int(labels.min())}, {int(labels.max())}]"
        )
    per_row = F.cross_entropy(logits, labels.long(), ignore_index=IGNORE_LABEL, reduction="none")
    count = (labels != IGNORE_LABEL).sum().clamp(min=1)
    # Ignored rows are 0 in per_row; dividing by max(count, 1) keeps the all-ignored case at 0, not NaN.
    return per_row.sum() / count


def multilabel_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Binary cross-entropy with logits, averaged over every entry.

    Args:
        logits: unnormalised per-class scores.
        targets: per-class targets in ``[0, 1]`` (soft targets allowed).

    Returns:
        Scalar loss.

    Shape:
        logits: ``(N, K)``; targets: ``(N, K)``; returns ``()``.
    """
    if logits.ndim != 2:
        raise ValueError(f"logits must be (N, K), got shape {tuple(logits.shape)}")
    if targets.shape != logits.shape:
        raise ValueError(
            f"targets must have the shape of logits {tuple(logits.shape)}, got {tuple(targets.shape)}"
        )
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype))
