"""Probe metrics: top-1 accuracy and mean average precision, pure torch.

Example:
    >>> import torch
    >>> top1_accuracy(torch.tensor([[2.0, 1.0], [0.0, 3.0]]), torch.tensor([0, 0]))
    0.5
    >>> scores = torch.tensor([[0.9], [0.8], [0.1]])
    >>> round(mean_average_precision(scores, torch.tensor([[1.0], [0.0], [1.0]])), 4)
    0.8333
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["average_precision", "mean_average_precision", "top1_accuracy"]


def top1_accuracy(logits_or_pred: Tensor, labels: Tensor) -> float:
    """Fraction of predictions equal to the label, over labels ``>= 0`` (-1 means unknown).

    Args:
        logits_or_pred: ``(N, K)`` scores (argmax taken) or ``(N,)`` predicted classes.
        labels: ``(N,)`` int class indices, -1 for unknown (ignored).

    Returns:
        Accuracy in ``[0, 1]``.
    """
    if logits_or_pred.dim() not in (1, 2):
        raise ValueError(f"logits_or_pred must be (N,) or (N, K), got shape {tuple(logits_or_pred.shape)}")
    if labels.dim() != 1 or labels.shape[0] != logits_or_pred.shape[0]:
        raise ValueError(
            f"labels must be (N,) with N = {logits_or_pred.shape[0]}, got shape {tuple(labels.shape)}"
        )
    pred = logits_or_pred.argmax(dim=1) if logits_or_pred.dim() == 2 else logits_or_pred
    known = labels >= 0
    if not bool(known.any()):
        raise ValueError("labels holds no known label (all -1)")
    return float((pred[known].long() == labels[known].long().to(pred.device)).float().mean())


def average_precision(scores: Tensor, targets: Tensor) -> Tensor:
    """Average precision of every column, as ``sklearn.metrics.average_precision_score``.

    ``AP = sum_k (R_k - R_{k-1}) P_k`` over the distinct score thresholds (tied
    scores enter together), which equals the mean, over positives, of the
    precision at the end of each positive's group of tied scores.

    Args:
        scores: ``(N, K)`` scores, higher means more likely positive.
        targets: ``(N, K)`` in ``{0, 1}``.

    Returns:
        ``(K,)`` float64 AP per class; NaN for a class with no positive.
    """
    if scores.dim() != 2 or scores.shape != targets.shape:
        raise ValueError(
            f"scores and targets must both be (N, K), got {tuple(scores.shape)} and {tuple(targets.shape)}"
        )
    s = scores.detach().double().T  # (K, N)
    t = (targets.detach().to(s.device) > 0.5).double().T
    s_sorted, order = torch.sort(s, dim=1, descending=True, stable=True)
    t_sorted = torch.gather(t, 1, order)
    tp = torch.cumsum(t_sorted, dim=1)
    # Last index of each item's tie group: searchsorted on the ascending negated scores.
    neg = -s_sorted.contiguous()
    end = torch.searchsorted(neg, neg, right=True) - 1
    precision_at_end = torch.gather(tp, 1, end) / (end + 1).double()
    npos = t.sum(dim=1)
    ap = (t_sorted * precision_at_end).sum(dim=1) / npos
    return torch.where(npos > 0, ap, torch.full_like(ap, float("nan")))


def mean_average_precision(scores: Tensor, targets: Tensor) -> float:
    """Mean over classes with at least one positive of their average precision.

    Args:
        scores: ``(N, K)`` scores (logits or probabilities).
        targets: ``(N, K)`` multi-hot targets in ``{0, 1}``.

    Returns:
        mAP in ``[0, 1]``. Constant scores give the mean positive rate (chance).
    """
    ap = average_precision(scores, targets)
    valid = ~torch.isnan(ap)
    if not bool(valid.any()):
        raise ValueError("targets holds no positive in any class: mAP is undefined")
    return float(ap[valid].mean())
