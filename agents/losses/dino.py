"""DINO self-distillation (Caron et al., 2021): the base loss of ABDINO.

The teacher (an EMA copy of the student) scores ``K`` prototypes; its output is
centred (subtract a running mean, against collapse onto one prototype) and
sharpened (a low temperature, against collapse onto the uniform distribution).
The student is trained to match it across *different* views of the same image.

Example:
    >>> import torch
    >>> from agents.losses import dino_loss, teacher_probs, update_center
    >>> student, teacher, center = torch.zeros(2, 3, 5), torch.zeros(2, 2, 5), torch.zeros(5)
    >>> round(dino_loss(student, teacher, center).item(), 4)  # uniform vs uniform: log K
    1.6094
    >>> teacher_probs(teacher, center, 0.04).shape
    torch.Size([2, 2, 5])
    >>> update_center(center, torch.ones(2, 2, 5), momentum=0.9)
    tensor([0.1000, 0.1000, 0.1000, 0.1000, 0.1000])
"""

from __future__ import annotations

import torch
from torch import Tensor

from agents.distributed import all_reduce_mean

__all__ = ["dino_loss", "teacher_probs", "update_center"]


def _check_temperature(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a positive float, got {type(value).__name__}")
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")


def _check_center(center: Tensor, k: int, other: str) -> None:
    if center.ndim != 1 or center.shape[0] != k:
        raise ValueError(
            f"center must be (K,) with K = {k} (the last dim of {other}), got {tuple(center.shape)}"
        )


def teacher_probs(teacher: Tensor, center: Tensor, teacher_temp: float = 0.04) -> Tensor:
    """The centred, sharpened teacher distribution ``softmax((teacher - center) / teacher_temp)``.

    It is a target, so it carries no gradient (the input is detached). ABDINO
    uses it, from the EMA network, as the base annotation model ``p_ema(l | x)``.

    Args:
        teacher: teacher logits over ``K`` prototypes.
        center: running centre of the teacher logits.
        teacher_temp: sharpening temperature.

    Returns:
        Probabilities over the last dim.

    Shape:
        teacher: ``(..., K)``; center: ``(K,)``; returns ``(..., K)``.
    """
    if teacher.ndim < 1:
        raise ValueError("teacher must be (..., K), got a scalar")
    _check_center(center, teacher.shape[-1], "teacher")
    _check_temperature("teacher_temp", teacher_temp)
    return ((teacher.detach() - center) / teacher_temp).softmax(dim=-1)


def dino_loss(
    student: Tensor,
    teacher: Tensor,
    center: Tensor,
    student_temp: float = 0.1,
    teacher_temp: float = 0.04,
) -> Tensor:
    """Cross-entropy between teacher and student distributions over all pairs of different views.

    ``loss = mean_{b, t, s : t != s} -sum_k p_t[b, t, k] * log_softmax(student[b, s] / student_temp)[k]``
    with ``p_t = teacher_probs(teacher, center, teacher_temp)`` (no gradient).
    Teacher view ``t`` is the same crop as student view ``t`` (the teacher sees
    the first ``Vt`` views, usually the global crops; the student sees all
    ``Vs``), so the pairs with ``t == s`` are skipped.

    Args:
        student: student logits.
        teacher: teacher logits (detached here).
        center: running centre of the teacher logits (see :func:`update_center`).
        student_temp: student softmax temperature.
        teacher_temp: teacher sharpening temperature (lower than ``student_temp``).

    Returns:
        Scalar loss.

    Shape:
        student: ``(B, Vs, K)``; teacher: ``(B, Vt, K)`` with ``Vt <= Vs`` and
        ``Vs >= 2``; center: ``(K,)``; returns ``()``.
    """
    if student.ndim != 3:
        raise ValueError(f"student must be (B, Vs, K), got shape {tuple(student.shape)}")
    if teacher.ndim != 3:
        raise ValueError(f"teacher must be (B, Vt, K), got shape {tuple(teacher.shape)}")
    b, vs, k = student.shape
    vt = teacher.shape[1]
    if teacher.shape[0] != b or teacher.shape[2] != k:
        raise ValueError(
            f"teacher must match student in B and K, got teacher {tuple(teacher.shape)} "
            f"and student {tuple(student.shape)}"
        )
    if not 1 <= vt <= vs:
        raise ValueError(f"teacher must have 1 <= Vt <= Vs = {vs} views (the first Vt views), got {vt}")
    if vs < 2:
        raise ValueError(f"student must have Vs >= 2 views, so that two views differ, got {vs}")
    _check_temperature("student_temp", student_temp)
    p_t = teacher_probs(teacher, center, teacher_temp)
    log_s = (student / student_temp).log_softmax(dim=-1)
    cross = -torch.einsum("btk,bsk->bts", p_t, log_s)  # (B, Vt, Vs)
    # Teacher view t and student view t are the same crop: only t != s pairs count.
    different = ~torch.eye(vt, vs, dtype=torch.bool, device=student.device)
    return cross[:, different].mean()


@torch.no_grad()
def update_center(center: Tensor, teacher: Tensor, momentum: float = 0.9) -> Tensor:
    """The EMA of the teacher's mean logits: ``center * m + (1 - m) * mean(teacher)``.

    The batch mean is taken over every leading dim and then averaged over ranks
    with :func:`agents.distributed.all_reduce_mean`, so every process keeps the
    same centre. Returns a new tensor (the caller stores it, e.g. in a buffer).

    Args:
        center: the current centre.
        teacher: this step's teacher logits.
        momentum: the EMA momentum ``m`` in ``[0, 1]``.

    Returns:
        The new centre, ``(K,)``, without gradient.

    Shape:
        center: ``(K,)``; teacher: ``(..., K)``; returns ``(K,)``.
    """
    if teacher.ndim < 1 or teacher.numel() == 0:
        raise ValueError(f"teacher must be a non-empty (..., K) tensor, got shape {tuple(teacher.shape)}")
    _check_center(center, teacher.shape[-1], "teacher")
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must lie in [0, 1], got {momentum}")
    batch_center = all_reduce_mean(teacher.detach().reshape(-1, teacher.shape[-1]).mean(dim=0))
    return center * momentum + (1.0 - momentum) * batch_center
