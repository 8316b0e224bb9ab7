"""Check a reward: its output's type, shape, dtype, device, finiteness, determinism and batch invariance.

:func:`check_reward` calls the reward on random states and rendered views of
a pool at batch sizes 1 and 64 and raises :class:`RewardCheckError` naming the
reward and the violated property: ``"call"`` (it raised), ``"type"``,
``"shape"`` (``(B,)``), ``"dtype"`` (floating), ``"device"`` (the views'),
``"finiteness"``, ``"determinism"`` (same input, same output) and
``"batch invariance"`` (each row of a batch equals the row computed alone,
within ``atol``). ``vpt bench-reward`` runs it first (:mod:`vpt_env.tools.reward_bench`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from vpt_env.core.dynamics import reset_state
from vpt_env.core.render import render
from vpt_env.core.state import EnvParams, ViewState
from vpt_env.data.pool import ImagePool
from vpt_env.rewards.base import REWARDS, RewardFn, _load, make_reward

__all__ = [
    "PROPERTIES",
    "RewardCheckError",
    "accepts_target",
    "check_reward",
    "load_reward",
    "random_views",
    "reward_name",
]

#: Properties :func:`check_reward` verifies, in the order it checks them.
PROPERTIES = ("call", "type", "shape", "dtype", "device", "finiteness", "determinism", "batch invariance")


class RewardCheckError(ValueError):
    """A reward violates a property of the :class:`~vpt_env.rewards.base.RewardFn` contract.

    Attributes:
        reward: the reward's name.
        prop: the violated property (one of :data:`PROPERTIES`).
    """

    def __init__(self, reward: str, prop: str, detail: str) -> None:
        super().__init__(f"reward {reward!r} fails the {prop} check: {detail}")
        self.reward = reward
        self.prop = prop


def reward_name(reward: Any) -> str:
    """A readable name: the string given, else the callable's qualified name."""
    if isinstance(reward, str):
        return reward
    return getattr(reward, "__qualname__", None) or type(reward).__qualname__


def accepts_target(reward: str | Callable[..., Any]) -> bool:
    """Whether resolving ``reward`` goes through a factory taking ``target=``."""
    if not isinstance(reward, str):
        return False
    if reward in REWARDS:
        factory: Any = REWARDS[reward]
    elif ":" in reward:
        factory = _load(reward)
        if not (isinstance(factory, type) or getattr(factory, "is_reward_factory", False)):
            return False
    else:
        return False
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "target" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def load_reward(
    reward: str | Callable[..., Tensor], pool: ImagePool, target: int | str | None = None
) -> RewardFn:
    """Resolve ``reward`` as an env would, passing ``target`` only to factories that take it.

    Args:
        reward: a registered name, a ``"module:function"`` string or a callable.
        pool: the pool whose annotations factories receive.
        target: class index or name for rewards that take one.
    """
    kwargs = {"target": target} if target is not None and accepts_target(reward) else {}
    return make_reward(reward, pool.annotations, **kwargs)


def random_views(
    pool: ImagePool, batch: int, params: EnvParams | None = None, seed: int = 0
) -> tuple[Tensor, ViewState]:
    """Random initial states (:func:`reset_state`, stream keys ``seed..seed+batch-1``) and their views.

    Returns:
        ``(views, state)``: ``(B, 3, S, S)`` float32 views on the pool's device and the states.
    """
    params = params or EnvParams(random_initial_aug=True)
    key = torch.arange(seed, seed + batch, dtype=torch.int64, device=pool.device)
    state = reset_state(params, pool.image_hw, key, torch.zeros_like(key))
    return render(pool, state, params), state


def _call(fn: Any, name: str, views: Tensor, state: ViewState, pool: ImagePool) -> Tensor:
    try:
        out = fn(views, state, pool.annotations)
    except Exception as err:  # any failure of user code is reported, with the reward's name
        raise RewardCheckError(name, "call", f"raised {type(err).__name__}: {err}") from err
    batch = views.shape[0]
    if not isinstance(out, Tensor):
        raise RewardCheckError(name, "type", f"returned {type(out).__name__}, expected a torch.Tensor")
    if tuple(out.shape) != (batch,):
        raise RewardCheckError(name, "shape", f"returned shape {tuple(out.shape)} for a batch of {batch}, "
                                              f"expected ({batch},)")
    if not out.is_floating_point():
        raise RewardCheckError(name, "dtype", f"returned dtype {out.dtype}, expected a floating dtype")
    if out.device != views.device:
        raise RewardCheckError(name, "device", f"returned a tensor on {out.device}, the views are on "
                                               f"{views.device}")
    bad = ~torch.isfinite(out)
    if bool(bad.any()):
        rows = bad.nonzero().flatten()[:5].tolist()
        raise RewardCheckError(name, "finiteness", f"returned NaN or infinity at rows {rows} of {batch}: "
                                                   f"{out[bad][:5].tolist()}")
    return out


def check_reward(
    reward: Any,
    pool: ImagePool,
    *,
    name: str | None = None,
    params: EnvParams | None = None,
    batch: int = 64,
    seed: int = 0,
    atol: float = 1e-5,
) -> dict[str, bool]:
    """Check a resolved reward against the :class:`RewardFn` contract.

    Calls it on random views at batch sizes 1 and ``batch`` (the batch of 1 is
    the batch's first row), twice on the same input, and once per row alone.

    Args:
        reward: the reward callable (resolve names with :func:`load_reward`).
        pool: images and annotations; views are rendered on its device.
        name: the name used in errors (default: the callable's).
        params: render parameters (default: 64x64 views, random augmentation).
        batch: the larger batch size.
        seed: stream key of the first view.
        atol: absolute tolerance of the determinism and batch-invariance checks.

    Returns:
        ``{property: True}`` for every property of :data:`PROPERTIES`.

    Raises:
        RewardCheckError: naming the reward and the first violated property.
    """
    name = name or reward_name(reward)
    views, state = random_views(pool, batch, params, seed)
    first = _call(reward, name, views[:1], state.index(0), pool)
    out = _call(reward, name, views, state, pool)
    again = _call(reward, name, views, state, pool)
    if not torch.allclose(out, again, rtol=0.0, atol=atol):
        diff = float((out - again).abs().max())
        raise RewardCheckError(name, "determinism", f"two calls on the same {batch} views differ by up to "
                                                    f"{diff:.3g} (tolerance {atol:g})")
    alone = torch.cat([first] + [_call(reward, name, views[i : i + 1], state.index(i), pool)
                                 for i in range(1, batch)])
    if not torch.allclose(out, alone, rtol=0.0, atol=atol):
        diff = (out - alone).abs()
        row = int(diff.argmax())
        raise RewardCheckError(
            name,
            "batch invariance",
            f"row {row} of a batch of {batch} is {float(out[row]):.6g} but {float(alone[row]):.6g} when "
            f"computed alone (tolerance {atol:g}); a reward must not depend on the other views of its batch",
        )
    return dict.fromkeys(PROPERTIES, True)


