"""Annotation bootstrapping (AB): the TD target of the general value function and its loss.

The action-conditioned head ``Q(l | x_i, a_{i->j})`` predicts a distribution over
annotations ``l`` for the view reached from view ``i`` by the move to view ``j``
(docs/method.md). Its temporal-difference target, computed by the EMA
copy of the model, is

    Q(l | x_i, a_{i->j})  ~  (1 - gamma) * p_ema(l | x_j)  +  gamma * max_{k} Q_ema(l | x_j, a_{j->k})

where the max is taken per annotation ``l`` over the moves from ``x_j`` to the
*other* sampled views ``k`` of the same image. The right-hand side sums to at
least 1 (a per-annotation max of distributions dominates each of them), so it
is renormalised to a distribution *(ours)*. With ``gamma = 0`` the target is
``p_ema(l | x_j)`` and the loss is the preprint's
``KL(p_ema(l | x_j) || Q(l | x_i, a_{i->j}))`` up to the target's entropy, a
constant for ``Q``.

Three pure functions: :func:`ab_logits` scores ``phi_AB(x, a)`` against the
annotation embeddings ``psi_AB``; :func:`ab_target` builds the (gradient-free)
target; :func:`ab_loss` is the masked cross-entropy.

Example:
    >>> import torch
    >>> B, V, L = 2, 3, 5
    >>> p_next = torch.softmax(torch.randn(B, V, L), -1)        # p_ema(l | x_j)
    >>> q_next = torch.softmax(torch.randn(B, V, V, L), -1)     # Q_ema(l | x_j, a_{j->k})
    >>> valid = ~torch.eye(V, dtype=torch.bool).expand(B, V, V)  # every ordered pair i != j
    >>> target = ab_target(p_next, q_next, valid, gamma=0.5)
    >>> tuple(target.shape), bool(torch.allclose(target.sum(-1), torch.ones(B, V, V)))
    ((2, 3, 3, 5), True)
    >>> q_logits = torch.randn(B, V, V, L, requires_grad=True)
    >>> loss = ab_loss(q_logits, target, valid)
    >>> loss.backward()
    >>> loss.ndim, q_logits.grad.shape == q_logits.shape
    (0, True)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ab_logits", "ab_loss", "ab_target"]


def _check_valid(valid: Tensor, shape: tuple[int, int, int]) -> None:
    if not isinstance(valid, Tensor) or valid.dtype != torch.bool:
        raise TypeError(f"valid must be a bool tensor of shape (B, V, V), got {_describe(valid)}")
    if tuple(valid.shape) != shape:
        raise ValueError(f"valid must have shape (B, V, V) = {shape}, got {tuple(valid.shape)}")


def _describe(x: object) -> str:
    if isinstance(x, Tensor):
        return f"tensor of dtype {x.dtype} and shape {tuple(x.shape)}"
    return type(x).__name__


def ab_target(p_next: Tensor, q_next: Tensor, valid: Tensor, gamma: float) -> Tensor:
    """The AB temporal-difference target for every ordered pair of views (no gradient).

    For each image ``b`` and pair ``(i, j)``::

        boot[b, j, l]      = max_{k != j, valid[b, j, k]} q_next[b, j, k, l]   (per annotation l)
                           = p_next[b, j, l]   if view j has no valid k (fallback)
        mixed[b, j, l]     = (1 - gamma) * p_next[b, j, l] + gamma * boot[b, j, l]
        target[b, i, j, l] = mixed[b, j, l] / sum_l' mixed[b, j, l']

    The target of transition ``i -> j`` depends on ``j`` only (the value of the view
    reached); it is repeated over ``i`` so that it lines up with ``Q(l | x_i, a_{i->j})``.
    ``valid[b, j, k]`` selects the moves available from view ``j``; the diagonal
    ``k = j`` is always excluded, since the max runs over moves to the *other* views.
    The fallback for a view without valid moves makes its target the local term
    ``p_next[b, j]`` alone (``boot = p_next`` turns the mix into ``p_next``). With
    ``gamma == 0`` the target is ``p_next[b, j]`` exactly: no bootstrap term and no
    renormalisation, so ``q_next`` is not read. Entries with invalid ``(i, j)`` are
    defined as well (the same formula); :func:`ab_loss` masks them out.

    Args:
        p_next: base annotation probabilities of the EMA model, ``p_ema(l | x_j)``; each
            ``p_next[b, j]`` should be a distribution over the ``L`` annotations.
        q_next: action-conditioned probabilities of the EMA model,
            ``q_next[b, j, k] = Q_ema(l | x_j, a_{j->k})`` (probabilities, not logits).
        valid: which moves are transitions of the MDP (``TransitionBatch.pair_valid``).
        gamma: discount in ``[0, 1)``.

    Returns:
        The detached target distributions, ``(B, V, V, L)``, contiguous.

    Shape:
        p_next: ``(B, V, L)``; q_next: ``(B, V, V, L)``; valid: ``(B, V, V)`` bool;
        returns ``(B, V, V, L)``.

    Raises:
        ValueError: a shape does not match or ``gamma`` is not a finite number in ``[0, 1)``.
        TypeError: ``valid`` is not a bool tensor or ``gamma`` is not a real number.
    """
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)):
        raise TypeError(f"gamma must be a float in [0, 1), got {type(gamma).__name__}")
    if not (math.isfinite(gamma) and 0.0 <= gamma < 1.0):
        raise ValueError(f"gamma must be in [0, 1), got {gamma}")
    if p_next.ndim != 3:
        raise ValueError(f"p_next must have shape (B, V, L), got {tuple(p_next.shape)}")
    B, V, L = p_next.shape
    if tuple(q_next.shape) != (B, V, V, L):
        raise ValueError(
            f"q_next must have shape (B, V, V, L) = {(B, V, V, L)} to match p_next, got {tuple(q_next.shape)}"
        )
    _check_valid(valid, (B, V, V))

    with torch.no_grad():
        p_next = p_next.detach()
        if gamma == 0:
            mixed = p_next
        else:
            q_next = q_next.detach().to(p_next.dtype)
            eye = torch.eye(V, dtype=torch.bool, device=valid.device)
            moves = (valid & ~eye).to(q_next.device)  # (B, j, k)
            # Invalid moves get -inf so they never win the max; a view with no valid
            # move leaves -inf everywhere and takes the fallback below.
            masked = q_next.masked_fill(~moves.unsqueeze(-1), float("-inf"))
            boot = masked.amax(dim=2)  # (B, j, L)
            has_move = moves.any(dim=2, keepdim=True)  # (B, j, 1)
            boot = torch.where(has_move, boot, p_next)
            mixed = (1.0 - gamma) * p_next + gamma * boot
            # The mix of probabilities is >= 0 with mass >= (1 - gamma) * sum(p_next);
            # the clamp only guards against an all-zero row.
            mixed = mixed / mixed.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(mixed.dtype).tiny)
        return mixed.unsqueeze(1).expand(B, V, V, L).contiguous()


def ab_loss(q_logits: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """Cross-entropy between the AB target and ``Q``, averaged over the valid pairs.

    ``loss = (1 / N) * sum_{(b, i, j) valid} -sum_l target[b, i, j, l] * log_softmax(q_logits[b, i, j])_l``
    with ``N`` the number of valid pairs in the whole batch (a pair-weighted mean, not a
    mean of per-image means). The target is detached (it is a fixed TD target), and
    invalid pairs contribute neither loss nor gradient, whatever their target holds.
    When no pair is valid the loss is a zero that stays attached to ``q_logits``'s graph
    (its gradient is zero), so a training step can still call ``backward`` (and DDP
    sees every parameter used).

    Args:
        q_logits: logits of ``Q(l | x_i, a_{i->j})``, e.g. from :func:`ab_logits`.
        target: target distributions, e.g. from :func:`ab_target`.
        valid: which pairs ``(i, j)`` are transitions (``TransitionBatch.pair_valid``).

    Returns:
        A scalar tensor.

    Shape:
        q_logits, target: ``(B, V, V, L)``; valid: ``(B, V, V)`` bool; returns ``()``.

    Raises:
        ValueError: a shape does not match.
        TypeError: ``valid`` is not a bool tensor.
    """
    if q_logits.ndim != 4 or q_logits.shape[1] != q_logits.shape[2]:
        raise ValueError(f"q_logits must have shape (B, V, V, L), got {tuple(q_logits.shape)}")
    if target.shape != q_logits.shape:
        raise ValueError(
            f"target must have the shape of q_logits {tuple(q_logits.shape)}, got {tuple(target.shape)}"
        )
    _check_valid(valid, tuple(q_logits.shape[:3]))
    valid = valid.to(q_logits.device)
    # Zeroing the target of invalid pairs (rather than multiplying the loss by 0) keeps a
    # NaN or inf stored there from leaking into the loss or the gradient.
    target = torch.where(valid.unsqueeze(-1), target.detach().to(q_logits.dtype), 0.0)
    ce = -(target * F.log_softmax(q_logits, dim=-1)).sum(dim=-1)  # (B, V, V)
    ce = torch.where(valid, ce, 0.0)
    return ce.sum() / valid.sum().clamp_min(1).to(ce.dtype)


def ab_logits(phi: Tensor, psi: Tensor, temperature: float | Tensor) -> Tensor:
    """Logits of ``Q(l | x, a) = softmax_l(phi_AB(x, a) . psi_AB(l) / temperature)`` (cosine scores).

    Both embeddings are L2-normalised, so each logit is a cosine similarity divided by
    ``temperature`` (the method's ``t_AB`` is ``1 / temperature``).

    Args:
        phi: action-conditioned embeddings ``phi_AB(x, a)`` (e.g. :class:`agents.heads.ABDecoder`).
        psi: annotation embeddings ``psi_AB(l)`` (text head, image head or prototypes).
        temperature: a positive float, or a tensor (e.g. a learnable one; not checked).

    Returns:
        ``(normalize(phi) @ normalize(psi).T) / temperature``.

    Shape:
        phi: ``(..., E)``; psi: ``(L, E)``; returns ``(..., L)``.

    Raises:
        ValueError: ``psi`` is not 2-D, the embedding sizes differ or a float
            ``temperature`` is not positive.
    """
    if psi.ndim != 2:
        raise ValueError(f"psi must have shape (L, E), got {tuple(psi.shape)}")
    if phi.ndim < 1 or phi.shape[-1] != psi.shape[-1]:
        raise ValueError(
            f"phi must have shape (..., E) with E = {psi.shape[-1]} (psi's), got {tuple(phi.shape)}"
        )
    if not isinstance(temperature, Tensor) and (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not (math.isfinite(temperature) and temperature > 0)
    ):
        raise ValueError(f"temperature must be a positive float or a tensor, got {temperature!r}")
    return (F.normalize(phi, dim=-1) @ F.normalize(psi, dim=-1).T) / temperature
