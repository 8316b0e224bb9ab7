"""The EMA target network (AB's targets, DINO's teacher) and global seeding.

The AB target (docs/method.md) and DINO's teacher are computed by an
exponential moving average of the online model's weights, rate 0.004
(momentum 0.996): after each optimiser step, ``target <- target + rate * (online - target)``.

Example:
    >>> import torch
    >>> from torch import nn
    >>> online = nn.Linear(2, 1)
    >>> target = copy_for_ema(online)
    >>> with torch.no_grad():
    ...     _ = online.weight.add_(1.0)
    >>> ema_update(target, online, rate=0.5)
    >>> bool(torch.allclose(target.weight, online.weight - 0.5)), target.weight.requires_grad
    (True, False)
"""

from __future__ import annotations

import copy
import math
import random

import numpy as np
import torch
from torch import nn

__all__ = ["copy_for_ema", "ema_update", "set_seed"]


def _unwrap(module: nn.Module) -> nn.Module:
    # A DDP wrapper prefixes every name with "module."; the EMA copy is made of the bare model.
    if isinstance(module, nn.parallel.DistributedDataParallel):
        return module.module
    return module


def _paired(kind: str, target: dict[str, torch.Tensor], online: dict[str, torch.Tensor]) -> None:
    if target.keys() != online.keys():
        missing = sorted(online.keys() - target.keys())[:5]
        extra = sorted(target.keys() - online.keys())[:5]
        raise ValueError(
            f"target and online must have the same {kind} names; missing in target: {missing}, "
            f"only in target: {extra}"
        )
    for name, t in target.items():
        if t.shape != online[name].shape:
            raise ValueError(
                f"{kind} {name!r} has shape {tuple(t.shape)} in target and "
                f"{tuple(online[name].shape)} in online"
            )


def ema_update(target: nn.Module, online: nn.Module, rate: float = 0.004) -> None:
    """Move ``target``'s weights towards ``online``'s, in place and without gradient.

    Every floating-point parameter becomes ``t + rate * (o - t)`` (``Tensor.lerp_``:
    ``rate = 0`` leaves ``target`` unchanged, ``rate = 1`` copies ``online`` exactly);
    integer parameters and every buffer are copied, since an average of counters or
    running statistics is not what the online model holds. Parameters and buffers are
    matched by name; a ``DistributedDataParallel`` wrapper on either side is looked
    through. Train/eval modes are not touched.

    Args:
        target: the EMA model (e.g. from :func:`copy_for_ema`), updated in place.
        online: the model being trained.
        rate: the EMA rate in ``[0, 1]`` (``1 - momentum``; docs/method.md uses 0.004).

    Raises:
        ValueError: ``rate`` is outside ``[0, 1]``, or the two modules' parameter or
            buffer names or shapes differ.
    """
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate):
        raise ValueError(f"rate must be a float in [0, 1], got {rate!r}")
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be in [0, 1], got {rate}")
    target, online = _unwrap(target), _unwrap(online)
    t_params, o_params = dict(target.named_parameters()), dict(online.named_parameters())
    t_buffers, o_buffers = dict(target.named_buffers()), dict(online.named_buffers())
    _paired("parameter", t_params, o_params)
    _paired("buffer", t_buffers, o_buffers)
    # One fused ``_foreach_lerp_`` per (device, dtype) group instead of one kernel per tensor: on a
    # GPU, AB's steps of a few milliseconds are bound by kernel launches. Same arithmetic as
    # ``Tensor.lerp_`` element by element (a test checks bitwise equality).
    groups: dict[tuple[torch.device, torch.dtype], tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
    with torch.no_grad():
        for name, t in t_params.items():
            o = o_params[name].detach()
            if t.is_floating_point() and o.is_floating_point():
                ts, os_ = groups.setdefault((t.device, t.dtype), ([], []))
                ts.append(t)
                os_.append(o.to(device=t.device, dtype=t.dtype))
            else:
                t.copy_(o)
        for ts, os_ in groups.values():
            torch._foreach_lerp_(ts, os_, float(rate))
        for name, t in t_buffers.items():
            t.copy_(o_buffers[name])


def copy_for_ema(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` to serve as its EMA target network.

    The copy's parameters have ``requires_grad = False`` (the optimiser must not see
    them, and targets computed with it carry no graph). Its train/eval mode is the
    source's; nothing here depends on it, so set it as the caller needs (the models in
    ``agents`` avoid BatchNorm outside the ResNet, so the mode changes dropout only).
    A ``DistributedDataParallel`` wrapper is unwrapped first.

    Args:
        module: the online model.

    Returns:
        The copy, on the same device(s) and with the same dtypes.
    """
    ema = copy.deepcopy(_unwrap(module))
    ema.requires_grad_(False)
    return ema


def set_seed(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every CUDA device).

    Args:
        seed: an integer in ``[0, 2**32 - 1]`` (NumPy's range).

    Raises:
        ValueError: ``seed`` is not an integer in that range.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32 - 1], got {seed!r}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
