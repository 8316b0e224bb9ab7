"""Linear probe on frozen pooled features (standardised with train statistics, AdamW on the CPU).

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> y = torch.arange(40) % 2
    >>> x = torch.randn(40, 3, generator=g) + 4.0 * y[:, None]
    >>> fit_linear_probe(x[:30], y[:30], x[30:], y[30:])["top1"]
    1.0
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from agents.eval.metrics import mean_average_precision, top1_accuracy
from vpt_env.progress import Progress

__all__ = ["fit_linear_probe", "metric_name", "standardise"]


def metric_name(multilabel: bool) -> str:
    """The headline metric of a probe: ``"map"`` for multi-label tasks, else ``"top1"``."""
    return "map" if multilabel else "top1"


def standardise(train_x: Tensor, *others: Tensor, eps: float = 1e-6) -> tuple[Tensor, ...]:
    """Subtract the train mean and divide by the train std (per feature) from every tensor."""
    mean = train_x.mean(dim=0, keepdim=True)
    std = train_x.std(dim=0, keepdim=True, unbiased=False).clamp_min(eps)
    return tuple((x - mean) / std for x in (train_x, *others))


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def check_targets(
    train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, multilabel: bool
) -> tuple[Tensor, Tensor, int]:
    """Validate probe inputs; drop unknown (-1) train labels.

    Returns:
        ``(train_x, train_y, num_classes)`` with only known train rows.
    """
    if train_x.shape[0] != train_y.shape[0]:
        raise ValueError(f"train_y must have {train_x.shape[0]} rows like train_x, got {train_y.shape[0]}")
    if test_x.shape[0] != test_y.shape[0]:
        raise ValueError(f"test_y must have {test_x.shape[0]} rows like test_x, got {test_y.shape[0]}")
    if multilabel:
        if train_y.dim() != 2 or test_y.dim() != 2 or train_y.shape[1] != test_y.shape[1]:
            raise ValueError(
                "multilabel=True needs train_y and test_y as (N, K) multi-hot targets, got shapes "
                f"{tuple(train_y.shape)} and {tuple(test_y.shape)}"
            )
        return train_x, train_y.float(), int(train_y.shape[1])
    if train_y.dim() != 1 or test_y.dim() != 1:
        raise ValueError(
            "multilabel=False needs train_y and test_y as (N,) int labels, got shapes "
            f"{tuple(train_y.shape)} and {tuple(test_y.shape)}"
        )
    known = train_y >= 0
    if not bool(known.any()):
        raise ValueError("train_y holds no known label (all -1)")
    num_classes = int(max(int(train_y.max()), int(test_y.max()))) + 1
    return train_x[known], train_y[known].long(), num_classes


def train_probe(
    model: nn.Module,
    train_x: Tensor,
    train_y: Tensor,
    multilabel: bool,
    epochs: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    seed: int,
    progress: Progress | None = None,
) -> nn.Module:
    """Minibatch AdamW on cross-entropy (or BCE when ``multilabel``); shuffles from ``seed``;
    ``progress`` counts the epochs."""
    _check_positive_int("epochs", epochs)
    _check_positive_int("batch_size", batch_size)
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if not weight_decay >= 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    gen = torch.Generator().manual_seed(int(seed))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    n = train_x.shape[0]
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(n, generator=gen).split(batch_size):
            logits = model(train_x[idx])
            y = train_y[idx]
            loss = F.binary_cross_entropy_with_logits(logits, y) if multilabel else F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if progress is not None:
            progress.update()
    model.eval()
    return model


def score(logits: Tensor, y: Tensor, multilabel: bool) -> float:
    """The headline metric of ``logits`` against labels (top-1) or multi-hot targets (mAP)."""
    return mean_average_precision(logits, y) if multilabel else top1_accuracy(logits, y)


def fit_linear_probe(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    multilabel: bool = False,
    epochs: int = 100,
    lr: float = 1e-2,
    weight_decay: float = 1e-4,
    batch_size: int = 256,
    seed: int = 0,
    progress: Progress | None = None,
) -> dict[str, float]:
    """Fit a linear classifier on frozen features and score it on the test features.

    Args:
        train_x, test_x: ``(N, D)`` and ``(M, D)`` features (standardised here with train statistics).
        train_y, test_y: ``(N,)`` / ``(M,)`` int labels (-1: unknown, dropped from
            training and scoring), or ``(N, K)`` / ``(M, K)`` multi-hot targets when ``multilabel``.
        multilabel: BCE and mAP instead of cross-entropy and top-1.
        epochs, lr, weight_decay, batch_size: AdamW schedule (constant learning rate).
        seed: initialisation and shuffling seed (the global RNG is untouched).
        progress: counts the epochs (:class:`~vpt_env.progress.Progress`).

    Returns:
        ``{"top1": test, "train_top1": train}`` or ``{"map": ..., "train_map": ...}``, in ``[0, 1]``.
    """
    if train_x.dim() != 2 or test_x.dim() != 2 or train_x.shape[1] != test_x.shape[1]:
        raise ValueError(
            "train_x and test_x must be (N, D) and (M, D), got "
            f"{tuple(train_x.shape)} and {tuple(test_x.shape)}"
        )
    train_x, train_y, k = check_targets(train_x.float().cpu(), train_y.cpu(), test_x, test_y, multilabel)
    train_x, test_x = standardise(train_x, test_x.float().cpu())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = nn.Linear(train_x.shape[1], k)
    train_probe(model, train_x, train_y, multilabel, epochs, lr, weight_decay, batch_size, seed, progress)
    name = metric_name(multilabel)
    with torch.no_grad():
        return {
            name: score(model(test_x), test_y.cpu(), multilabel),
            f"train_{name}": score(model(train_x), train_y, multilabel),
        }
