"""The geometry of frozen features: how many directions their variance uses, and whitening.

A cosine kNN probe sees the features' raw geometry; a linear probe does not
(it can rescale any direction). When a trained encoder puts most of its
features' variance in one or two directions that do not separate the classes
(dimensional collapse), kNN falls far below the linear probe. These
statistics tell that case apart, and :func:`pca_whiten` undoes it for a
diagnostic kNN.

* ``participation_ratio``: ``(sum l)^2 / sum l^2`` over the eigenvalues ``l``
  of the centred features' covariance: 1 when one direction holds all the
  variance, ``D`` when ``D`` directions hold equal shares.
* ``effective_rank``: RankMe (Garrido et al., 2023), ``exp`` of the entropy
  of the normalised singular values of the centred features.
* ``top_share``: the largest eigenvalue's share of the variance.
* ``mean_cosine``: mean cosine similarity of two different samples (raw
  features, not centred): near 1 when a common mean component dominates.

Example:
    >>> import torch
    >>> line = torch.tensor([[1.0, 2.0], [2.0, 4.0], [3.0, 6.0]])
    >>> stats = spectrum_stats(line)
    >>> round(stats["participation_ratio"], 3), round(stats["top_share"], 3)
    (1.0, 1.0)
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["pca_whiten", "spectrum_stats"]


def _check(x: Tensor, name: str, min_rows: int = 2, width: int | None = None) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    cols = "D" if width is None else str(width)
    if x.dim() != 2 or x.shape[0] < min_rows or (width is not None and x.shape[1] != width):
        raise ValueError(f"{name} must be an (N, {cols}) tensor with N >= {min_rows}, got {tuple(x.shape)}")
    x = x.detach().double()
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} holds NaN or infinite values")
    return x


def spectrum_stats(x: Tensor) -> dict[str, float]:
    """Participation ratio, effective rank, top eigenvalue share and mean cosine of ``(N, D)`` features.

    Raises:
        TypeError: ``x`` is not a tensor.
        ValueError: ``x`` is not ``(N, D)`` with ``N >= 2``, holds NaN or inf, or all its rows are equal.
    """
    x = _check(x, "x")
    s = torch.linalg.svdvals(x - x.mean(0))
    var = s**2
    if not float(var.sum()) > 0:
        raise ValueError("x has zero variance: every row is the same")
    p = s / s.sum()
    p = p[p > 0]
    unit = torch.nn.functional.normalize(x, dim=1)
    n = x.shape[0]
    # mean over i != j of <u_i, u_j> = (|sum u|^2 - sum |u_i|^2) / (n (n - 1))
    total = unit.sum(0)
    mean_cos = (float(total @ total) - float((unit * unit).sum())) / (n * (n - 1))
    return {
        "participation_ratio": float(var.sum() ** 2 / (var**2).sum()),
        "effective_rank": float(torch.exp(-(p * p.log()).sum())),
        "top_share": float(var.max() / var.sum()),
        "mean_cosine": mean_cos,
    }


def pca_whiten(train: Tensor, *others: Tensor, eps: float = 1e-3) -> tuple[Tensor, ...]:
    """Whiten ``train`` and ``others`` with ``train``'s mean and principal axes (float32 results).

    Each principal direction is divided by its standard deviation plus ``eps`` times the largest
    one (so near-empty directions are not blown up into noise).

    Raises:
        TypeError: an argument is not a tensor.
        ValueError: ``train`` is not ``(N, D)`` with ``N >= 2``, an ``others`` tensor is not
            ``(M, D)``, a tensor holds NaN or inf, or ``eps`` is not positive.
    """
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps!r}")
    x = _check(train, "train")
    rest = [_check(o, "others", min_rows=0, width=x.shape[1]) for o in others]
    mu = x.mean(0)
    _, s, vh = torch.linalg.svd(x - mu, full_matrices=False)
    std = s / (x.shape[0] - 1) ** 0.5
    w = vh.T / (std + eps * std[0])
    return tuple(((t - mu) @ w).float() for t in (x, *rest))
