"""Counter-based random numbers: a pure function of (key, episode, step, index).

Every random draw of the core (reset images, boxes and augmentations; the
discrete "change augmentation" action) comes from :func:`uniform`, which hashes
a per-view stream key with the view's episode number and step. Nothing is
carried between calls and nothing depends on the batch: a batch of ``N``
views draws exactly what ``N`` batches of one draw, so a vector env of ``N``
envs reproduces ``N`` single envs bit for bit, on any device, with no host
synchronisation. (A ``torch.Generator`` cannot do this: its stream depends on
how many draws other views made before.)

The hash is SplitMix64's finaliser on int64 tensors (wrap-around
multiplication, logical shifts), which passes BigCrush as a counter-based
generator; the top 24 bits become a float32 in ``[0, 1)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["RESET_STEP", "seed_key", "uniform"]


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_M1 = _signed(0xBF58476D1CE4E5B9)
_M2 = _signed(0x94D049BB133111EB)
_STEP = _signed(0xD1B54A32D192ED03)
_EPISODE = _signed(0xABC98388FB8FAC03)

#: The step value used for draws made at reset (steps themselves are >= 0).
RESET_STEP = -1


def _srl(x: Tensor, k: int) -> Tensor:
    """Logical right shift of int64 values."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def _mix(x: Tensor) -> Tensor:
    x = (x ^ _srl(x, 30)) * _M1
    x = (x ^ _srl(x, 27)) * _M2
    return x ^ _srl(x, 31)


def seed_key(seed: int) -> int:
    """Stream key for an integer seed (any Python int; reduced to 64 bits)."""
    return _signed(int(seed) & ((1 << 64) - 1))


def uniform(key: Tensor, episode: Tensor, step: Tensor | int, n: int) -> Tensor:
    """``n`` independent uniform floats in ``[0, 1)`` per view.

    Args:
        key: ``(B,)`` int64 stream keys (one per env).
        episode: ``(B,)`` int64 episode numbers.
        step: ``(B,)`` int64 steps, or an int for all views (:data:`RESET_STEP` at reset).
        n: draws per view.

    Returns:
        ``(B, n)`` float32, a pure function of ``(key, episode, step)``.
    """
    if isinstance(step, int):  # a Python int, wrapped to int64 here: no host-to-device copy
        step_term: Tensor | int = _signed(((step + 2) * _STEP) & ((1 << 64) - 1))
    else:
        step_term = (step + 2) * _STEP
    base = _mix(_mix(key + _GOLDEN) + episode * _EPISODE + step_term)
    j = torch.arange(1, n + 1, device=key.device, dtype=torch.int64)
    bits = _mix(base[:, None] + j * _GOLDEN)
    return _srl(bits, 40).to(torch.float32) * (1.0 / (1 << 24))
