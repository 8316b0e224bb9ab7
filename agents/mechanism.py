"""Mechanism metrics of annotation bootstrapping: does the move tell anything, and does Q use it?

AB differs from crop invariance only where a move ``a_{i->j}`` tells something about
the annotations of the view it leads to (docs/method.md). These metrics measure
that, on the data and on a trained system, so a score can be read beside its cause:

(a) ``oracle_info``: the data's *action information* with the true per-view
    annotations (the cumulants) as ``p``::

        info = E_{image, i} [ mean_{j in M_i} KL( p(l | x_j) || mean_{k in M_i} p(l | x_k) ) ]

    with ``M_i`` the moves from view ``i`` (the other views of its image that form a
    valid pair). Zero: every move leads to the same expected annotations.
(b) ``target_info``: the same quantity for the learned TD target (``target[b, i, j]``
    depends on ``j`` only, so it plays ``p(l | x_j)``).
(c) ``q_gain``: how much of it ``Q`` uses, the cross-entropy of the target against
    ``Q`` averaged over the moves from the same view, minus that against ``Q`` given the
    true move::

        gain = E_{image, i} [ mean_{j in M_i} ( CE(t_ij, mean_{k in M_i} Q_ik) - CE(t_ij, Q_ij) ) ]

    A ``Q`` that ignores the move scores 0; a ``Q`` equal to its target on every move
    scores ``target_info`` exactly (``CE(p, q) = H(p) + KL(p || q)``). So ``q_gain /
    target_info`` (``q_gain_of_target``) is the part of its target's information ``Q`` uses,
    ``target_info / oracle_info`` how much of the data's the target carries, and their product
    ``q_gain / oracle_info`` (``q_gain_fraction``, issue 19's target: at least 0.5) both. The
    target lives in the system's annotation space (captions, prototypes, instances), the oracle
    in the source's classes, so the last two ratios compare different spaces: read them as
    "how much of what a move tells", not as a bound.
(d) ``target_entropy`` against ``p_ema_entropy``: whether bootstrapping sharpens or
    blurs the base's own annotations.
(e) ``grad_cosine``: the cosine between the AB loss's and the base loss's gradients on
    the encoder's parameters (and ``grad_ratio``, ``ab_weight * |g_AB| / |g_base|``): do
    the two losses pull the encoder the same way?

Every quantity is in nats and is a pure function of tensors, except :func:`mechanism_metrics`,
which runs a system on fixed batches without changing it.

Example:
    >>> import torch
    >>> p = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]])   # 1 image, 3 views, 2 annotations
    >>> valid = ~torch.eye(3, dtype=torch.bool)[None]
    >>> round(action_information(p, valid).item(), 4)   # from view 2 the moves lead to [1, 0] or [0, 1]
    0.3749
    >>> q = p[:, None].expand(1, 3, 3, 2).clamp_min(1e-9).log()     # Q equal to the target, every move
    >>> bool(torch.isclose(q_action_gain(q, p[:, None].expand(1, 3, 3, 2), valid),
    ...                    action_information(p, valid), atol=1e-6))
    True
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vpt_env import TransitionBatch, TransitionSampler

__all__ = [
    "MECHANISM_KEYS",
    "action_information",
    "fixed_batches",
    "gradient_cosine",
    "mechanism_metrics",
    "oracle_distributions",
    "q_action_gain",
]

#: The keys of :func:`mechanism_metrics`' result, in report order.
MECHANISM_KEYS: tuple[str, ...] = (
    "oracle_info", "target_info", "q_gain", "q_gain_of_target", "q_gain_fraction", "target_entropy",
    "p_ema_entropy", "grad_cosine", "grad_ratio",
)  # fmt: skip


def _moves(valid: Tensor) -> Tensor:
    """``valid`` without its diagonal (a move goes to *another* view)."""
    v = valid.shape[-1]
    return valid & ~torch.eye(v, dtype=torch.bool, device=valid.device)


def _check(p: Tensor, valid: Tensor, name: str) -> None:
    if p.ndim != 3:
        raise ValueError(f"{name} must have shape (B, V, L), got {tuple(p.shape)}")
    if valid.dtype != torch.bool or tuple(valid.shape) != (p.shape[0], p.shape[1], p.shape[1]):
        raise ValueError(
            f"valid must be a bool tensor of shape (B, V, V) = {(p.shape[0], p.shape[1], p.shape[1])}, "
            f"got {valid.dtype} {tuple(valid.shape)}"
        )


def action_information(p: Tensor, valid: Tensor) -> Tensor:
    """The action information of per-view annotation distributions (nats; see the module doc).

    ``mean_{(b, i)} mean_{j in M_i} KL(p[b, j] || mean_{k in M_i} p[b, k])`` over the start views
    ``(b, i)`` with at least one move; ``M_i = {j != i : valid[b, i, j]}``. With two views per image
    there is one move from each view and the quantity is 0: the move cannot tell anything then.

    Args:
        p: per-view distributions over ``L`` annotations (rows summing to 1).
        valid: which ordered pairs ``(i, j)`` are moves (the diagonal is ignored).

    Returns:
        A scalar tensor (0 when no view has a move).

    Shape:
        p: ``(B, V, L)``; valid: ``(B, V, V)`` bool; returns ``()``.
    """
    _check(p, valid, "p")
    p = p.double()
    moves = _moves(valid).to(p.device)
    w = moves.double()  # (B, i, j)
    count = w.sum(-1)  # (B, i)
    pbar = torch.einsum("bij,bjl->bil", w, p) / count.clamp_min(1)[..., None]  # (B, i, L)
    # KL(p_j || pbar_i) for every (i, j); 0 * log(0 / .) = 0 (xlogy), and pbar_i > 0 wherever p_j > 0.
    kl = (
        torch.special.xlogy(p[:, None], p[:, None]) - torch.special.xlogy(p[:, None], pbar[:, :, None])
    ).sum(-1)
    per_start = torch.where(moves, kl, 0.0).sum(-1) / count.clamp_min(1)  # (B, i); inf off the moves
    has = count > 0
    if not bool(has.any()):
        return p.new_zeros(())
    return per_start[has].mean()


def q_action_gain(q_logits: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """``Q``'s gain from the action (nats; see the module doc), over the valid pairs.

    ``mean_{(b, i)} mean_{j in M_i} [CE(t_bij, mean_{k in M_i} Q_bik) - CE(t_bij, Q_bij)]`` with
    ``Q = softmax(q_logits)`` and ``M_i`` the valid moves from ``i`` (start views without a move left
    out), weighted as :func:`action_information` weighs them.

    Shape:
        q_logits, target: ``(B, V, V, L)``; valid: ``(B, V, V)`` bool; returns ``()``.
    """
    if q_logits.ndim != 4 or target.shape != q_logits.shape:
        raise ValueError(
            f"q_logits and target must share a shape (B, V, V, L), got {tuple(q_logits.shape)} and "
            f"{tuple(target.shape)}"
        )
    _check(q_logits[:, :, 0], valid, "q_logits[:, :, 0]")
    moves = _moves(valid).to(q_logits.device)
    logq = F.log_softmax(q_logits.double(), dim=-1)
    w = moves.double()
    count = w.sum(-1, keepdim=True)  # (B, i, 1)
    qbar = torch.einsum("bij,bijl->bil", w, logq.exp()) / count.clamp_min(1)  # (B, i, L)
    t = target.double()
    ce_true = -(t * logq).sum(-1)  # (B, i, j)
    ce_blind = -torch.special.xlogy(t, qbar[:, :, None]).sum(-1)
    if not bool(moves.any()):
        return logq.new_zeros(())
    # Mean over the moves of each start view, then over the start views, as action_information
    # weighs them (so a Q equal to its target scores target_info whatever the moves per view).
    gain = torch.where(moves, ce_blind - ce_true, 0.0).sum(-1) / count[..., 0].clamp_min(1)
    return gain[count[..., 0] > 0].mean()


def mean_entropy(p: Tensor) -> Tensor:
    """Mean entropy (nats) of the distributions along the last dim."""
    return -torch.special.xlogy(p.double(), p.double()).sum(-1).mean()


def oracle_distributions(cumulants: Tensor) -> Tensor:
    """The true per-view annotations as distributions: the cumulants plus a "nothing" annotation.

    A view's cumulant is its distribution over the source's classes (each object weighted by
    the fraction of its box inside the view), all zeros when the view meets no object; the
    extra last entry gives such a view mass 1 on "nothing", so every row is a distribution.

    Shape:
        cumulants: ``(B, V, K)``; returns ``(B, V, K + 1)``.
    """
    total = cumulants.sum(-1, keepdim=True)
    return torch.cat([cumulants, (total <= 0).to(cumulants.dtype)], dim=-1)


def gradient_cosine(base_loss: Tensor, ab_loss: Tensor, params: Sequence[Tensor]) -> tuple[float, float]:
    """Cosine between the gradients of two losses on ``params``, and the ratio of their norms.

    Returns:
        ``(cosine, |grad ab_loss| / |grad base_loss|)``; NaN where a gradient is zero.
    """
    params = [p for p in params if p.requires_grad]
    g_base = torch.autograd.grad(base_loss, params, retain_graph=True, allow_unused=True)
    g_ab = torch.autograd.grad(ab_loss, params, retain_graph=True, allow_unused=True)
    a, b = (_flat(grads, params) for grads in (g_base, g_ab))
    na, nb = float(a.double().norm()), float(b.double().norm())
    if na == 0.0 or nb == 0.0:
        return math.nan, (math.nan if na == 0.0 else 0.0)
    return float((a.double() @ b.double()) / (na * nb)), nb / na


def _flat(grads: Sequence[Tensor | None], params: Sequence[Tensor]) -> Tensor:
    """One vector of every gradient (zeros for a parameter the loss does not reach)."""
    return torch.cat(
        [(torch.zeros_like(p) if g is None else g).flatten() for g, p in zip(grads, params, strict=True)]
    )


def fixed_batches(
    sampler: TransitionSampler, count: int, batch_size: int, views_per_image: int, seed: int = 12345
) -> list[TransitionBatch]:
    """``count`` batches drawn from ``sampler``'s pool with a generator of their own.

    The sampler's own generator is left where it was, so the training stream does not move,
    and the same ``seed`` gives the same batches for every system trained on that data.
    """
    state = sampler.generator.get_state()
    try:
        sampler.generator.manual_seed(seed)
        return [sampler.sample(batch_size, views_per_image) for _ in range(count)]
    finally:
        sampler.generator.set_state(state)


def _ratio(a: float, b: float) -> float:
    return a / b if b == b and b > 0 else math.nan


def mechanism_metrics(
    system: nn.Module | None,
    batches: Iterable[TransitionBatch],
    captions: list[str] | None = None,
    *,
    gradients: bool = True,
) -> dict[str, Any]:
    """The mechanism metrics (a)-(e) of the module doc, averaged over ``batches``.

    The system is run as in a training step (same views, bootstrap images, annotations,
    targets) but nothing in it changes: no optimizer step, no EMA update, no DINO centre
    update, and the gradients of (e) are computed with :func:`torch.autograd.grad`, not stored.

    Args:
        system: an AB system (:class:`agents.systems.BaseSystem` with a decoder), or None (or a
            base system) for the data's metric (a) alone.
        batches: :class:`~vpt_env.TransitionBatch` es with float views and cumulants (e.g.
            :func:`fixed_batches`); (a) uses every image of a batch, (b)-(e) its bootstrap images.
        captions: the sampler's caption table (the CLIP systems read it).
        gradients: compute (e) (two backward passes per batch).

    Returns:
        ``{key: float}`` for :data:`MECHANISM_KEYS` (NaN for what does not apply: everything but
        ``oracle_info`` without an AB system, ``oracle_info`` for a source without annotations) and
        ``batches``, the number averaged. ``q_gain_fraction`` is ``q_gain / oracle_info`` and
        ``q_gain_of_target`` is ``q_gain / target_info``.
    """
    sums: dict[str, list[float]] = {k: [] for k in MECHANISM_KEYS}
    n = 0
    # A forward pass in training mode moves BatchNorm's running statistics: put them back after.
    saved = {} if system is None else {name: b.clone() for name, b in system.named_buffers()}
    is_ab = system is not None and getattr(system, "decoder", None) is not None
    for batch in batches:
        n += 1
        if batch.cumulants is not None and batch.cumulants.shape[-1] > 0:
            sums["oracle_info"].append(
                float(action_information(oracle_distributions(batch.cumulants), batch.pair_valid))
            )
        if not is_ab:
            continue
        assert system is not None
        with torch.set_grad_enabled(gradients):
            terms = system.loss_terms(batch, captions)
            ab = terms.ab
            if ab is None or ab.num_labels == 0 or not bool(ab.valid.any()):
                continue
            sums["target_info"].append(float(action_information(ab.target[:, 0], ab.valid)))
            sums["q_gain"].append(float(q_action_gain(ab.q_logits.detach(), ab.target, ab.valid)))
            t = ab.target[_moves(ab.valid)]
            sums["target_entropy"].append(float(mean_entropy(t)))
            sums["p_ema_entropy"].append(float(mean_entropy(ab.p_next.flatten(0, 1))))
            if gradients:
                cos, ratio = gradient_cosine(terms.base_loss, ab.loss, list(system.encoder.parameters()))
                sums["grad_cosine"].append(cos)
                sums["grad_ratio"].append(ratio * float(system.config.ab_weight))
    if system is not None:
        with torch.no_grad():
            for name, b in system.named_buffers():
                b.copy_(saved[name])
    out: dict[str, Any] = {k: (sum(v) / len(v) if v else math.nan) for k, v in sums.items()}
    out["q_gain_fraction"] = _ratio(out["q_gain"], out["oracle_info"])
    out["q_gain_of_target"] = _ratio(out["q_gain"], out["target_info"])
    out["batches"] = n
    return out
