"""Weighted k-nearest-neighbour classification on frozen features, as in DINO's kNN evaluation.

Each query takes its ``k`` most cosine-similar train points; neighbour ``j``
votes for its class with weight ``exp(s_j / T)``. The multi-label variant
scores each class by the weighted average of the neighbours' target vectors.

Example:
    >>> import torch
    >>> train = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> knn_predict(train, torch.tensor([0, 1]), torch.tensor([[2.0, 0.1]]), k=1).argmax(1).tolist()
    [0]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from agents.eval.linear import check_targets, metric_name, score

__all__ = ["knn_eval", "knn_predict", "knn_predict_multilabel"]

#: Queries per similarity matrix (bounds memory at CHUNK x N).
CHUNK = 1024


def _neighbours(train_x: Tensor, test_x: Tensor, k: int, temperature: float) -> tuple[Tensor, Tensor]:
    """Indices ``(M, k')`` of the nearest train points and their weights ``exp(s / T)``."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if train_x.dim() != 2 or test_x.dim() != 2 or train_x.shape[1] != test_x.shape[1]:
        raise ValueError(
            "train_x and test_x must be (N, D) and (M, D), got "
            f"{tuple(train_x.shape)} and {tuple(test_x.shape)}"
        )
    if train_x.shape[0] == 0:
        raise ValueError("train_x holds no point")
    k = min(k, train_x.shape[0])  # small train sets: every point votes
    train_n = F.normalize(train_x.float(), dim=1)
    idx, weight = [], []
    for q in F.normalize(test_x.float(), dim=1).split(CHUNK):
        sim, i = (q @ train_n.T).topk(k, dim=1)
        idx.append(i)
        weight.append(torch.exp(sim / temperature))
    if not idx:
        return torch.zeros(0, k, dtype=torch.int64), torch.zeros(0, k)
    return torch.cat(idx), torch.cat(weight)


def knn_predict(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
) -> Tensor:
    """Class scores of every query: the summed weights of its neighbours of each class.

    Args:
        train_x: ``(N, D)`` features.
        train_y: ``(N,)`` int labels (-1: unknown, casts no vote).
        test_x: ``(M, D)`` query features.
        k: neighbours per query (capped at ``N``).
        temperature: ``T`` of the vote weights ``exp(cos / T)``.
        num_classes: ``K``; None for ``max(train_y) + 1``.

    Returns:
        ``(M, K)`` float32 scores ``sum_{j in top-k} exp(s_j / T) [y_j = c]``.
    """
    if train_y.dim() != 1 or train_y.shape[0] != train_x.shape[0]:
        raise ValueError(f"train_y must be (N,) with N = {train_x.shape[0]}, got {tuple(train_y.shape)}")
    known = train_y >= 0
    train_x, train_y = train_x[known], train_y[known].long()
    if not train_y.numel():
        raise ValueError("train_y holds no known label (all -1)")
    top = int(train_y.max())
    if num_classes is None:
        num_classes = top + 1
    elif isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes <= top:
        raise ValueError(f"num_classes must be an int > every label in train_y ({top}), got {num_classes!r}")
    idx, weight = _neighbours(train_x, test_x, k, temperature)
    scores = torch.zeros(idx.shape[0], num_classes)
    return scores.scatter_add_(1, train_y.to(idx.device)[idx].cpu(), weight.cpu())


def knn_predict_multilabel(
    train_x: Tensor, train_targets: Tensor, test_x: Tensor, k: int = 20, temperature: float = 0.07
) -> Tensor:
    """Class scores of every query: the weighted average of its neighbours' target vectors.

    Args:
        train_x: ``(N, D)`` features.
        train_targets: ``(N, K)`` multi-hot (or soft) targets.
        test_x: ``(M, D)`` query features.
        k, temperature: as for :func:`knn_predict`.

    Returns:
        ``(M, K)`` float32 scores ``sum_j w_j t_j / sum_j w_j`` over the top-k.
    """
    if train_targets.dim() != 2 or train_targets.shape[0] != train_x.shape[0]:
        raise ValueError(
            f"train_targets must be (N, K) with N = {train_x.shape[0]}, got {tuple(train_targets.shape)}"
        )
    idx, weight = _neighbours(train_x, test_x, k, temperature)
    t = train_targets.float().to(idx.device)[idx]  # (M, k, K)
    return ((weight[..., None] * t).sum(1) / weight.sum(1, keepdim=True)).cpu()


def knn_eval(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    multilabel: bool = False,
    k: int = 20,
    temperature: float = 0.07,
) -> dict[str, float]:
    """Score the weighted kNN classifier on the test set.

    Args:
        train_x, test_x: ``(N, D)`` and ``(M, D)`` features.
        train_y, test_y: int labels (-1 unknown), or multi-hot targets when ``multilabel``.
        multilabel: mAP of :func:`knn_predict_multilabel` instead of top-1 of :func:`knn_predict`.
        k, temperature: as for :func:`knn_predict`.

    Returns:
        ``{"top1": ...}`` or ``{"map": ...}``.
    """
    train_x, train_y, num_classes = check_targets(train_x, train_y, test_x, test_y, multilabel)
    if multilabel:
        scores = knn_predict_multilabel(train_x, train_y, test_x, k, temperature)
    else:
        scores = knn_predict(train_x, train_y, test_x, k, temperature, num_classes)
    return {metric_name(multilabel): score(scores, test_y.cpu(), multilabel)}
