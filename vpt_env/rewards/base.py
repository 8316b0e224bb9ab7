"""The reward protocol, the registry of named rewards, and resolution of ``reward=``."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from vpt_env.core.state import ViewState
from vpt_env.data.annotations import Annotations

__all__ = ["REWARDS", "RewardFn", "check_reward_output", "make_reward", "register_reward"]


@runtime_checkable
class RewardFn(Protocol):
    """A batched reward: one float per view.

    Called as ``reward(views, state, annotations)`` with

    * ``views``: ``(B, 3, S, S)`` float32 in ``[0, 1]``, the rendered next views
      (augmented), on the env's device;
    * ``state``: the next :class:`~vpt_env.core.state.ViewState` (image index,
      box, augmentation);
    * ``annotations``: the pool's :class:`~vpt_env.data.annotations.Annotations`
      (index it with ``state.image``);

    and returns a ``(B,)`` float tensor on the same device. Any callable with
    this signature works; an object may also set ``needs_annotations = True``
    so that the env refuses sources without annotations up front, and
    ``needs_views = False`` when it never reads ``views`` (the vector env then
    skips building float views on its fastest path, and passes None).

    A reward may also expose a vector-valued cumulant, a distribution over an
    annotation space for value-function learning: a method
    ``cumulant(views, state, annotations) -> (B, K)`` with non-negative rows
    summing to 1 (or all zeros when the view meets nothing), on the views'
    device. Consumers test for it with ``hasattr(reward, "cumulant")``. The
    library's ``teacher_prob`` gives its full softmax over the teacher's ``K``
    classes, and ``caption_match`` with ``contrastive=True`` its softmax over
    the source's class prompts; the reward is then one column of it.
    """

    def __call__(self, views: Tensor, state: ViewState, annotations: Annotations) -> Tensor:
        """The reward of each view: a ``(B,)`` float tensor on the views' device."""
        ...


#: Named reward factories: ``name -> factory(annotations, **kwargs) -> RewardFn``.
REWARDS: dict[str, Callable[..., RewardFn]] = {}


def register_reward(name: str) -> Callable[[Callable[..., RewardFn]], Callable[..., RewardFn]]:
    """Decorator registering a reward factory under ``name``.

    The factory is called as ``factory(annotations, **kwargs)`` when an env is
    made with ``reward=name`` and must return a :class:`RewardFn`.
    """

    def deco(factory: Callable[..., RewardFn]) -> Callable[..., RewardFn]:
        if name in REWARDS:
            raise ValueError(f"a reward named {name!r} is already registered")
        REWARDS[name] = factory
        return factory

    return deco


def _load(spec: str) -> Any:
    module, _, attr = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"reward {spec!r} could not be loaded: {err}") from err
    return obj


def make_reward(reward: str | Callable[..., Tensor], annotations: Annotations, **kwargs: Any) -> RewardFn:
    """Resolve the ``reward=`` argument of an env.

    Args:
        reward: a registered name (see :data:`REWARDS`), a ``"package.module:function"``
            string, or a callable. Loaded factories and names receive
            ``annotations`` and ``kwargs``; a plain callable is used as is
            (``kwargs`` must then be empty).
        annotations: the pool's annotations, for factories that check them.
        **kwargs: reward parameters (e.g. ``target``); None values are dropped.

    Raises:
        ValueError: unknown name, unloadable string, or bad parameters.
        TypeError: ``reward`` of the wrong type.
    """
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if isinstance(reward, str):
        if reward in REWARDS:
            factory = REWARDS[reward]
            try:
                return factory(annotations, **kwargs)
            except TypeError as err:
                raise TypeError(f"reward {reward!r}: {err}") from err
        if ":" not in reward:
            raise ValueError(
                f"reward must be one of {sorted(REWARDS)}, a 'module:function' string, "
                f"or a callable; got {reward!r}"
            )
        reward = _load(reward)
        if isinstance(reward, type) or getattr(reward, "is_reward_factory", False):
            return reward(annotations, **kwargs)
    if not callable(reward):
        raise TypeError(
            f"reward must be a name, a 'module:function' string or a callable, got {type(reward).__name__}"
        )
    if kwargs:
        raise TypeError(
            f"reward parameters {sorted(kwargs)} only apply to named rewards; "
            "bind them into your callable instead (e.g. functools.partial)"
        )
    if (
        getattr(reward, "needs_annotations", False)
        and len(annotations)
        and not ((annotations.labels >= 0).any() or annotations.has_boxes)
    ):
        raise ValueError(f"reward {_name(reward)} needs annotations, but the source has none")
    return reward


def _name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__qualname__


def same_device(a: torch.device, b: torch.device | str) -> bool:
    """Whether two devices are the same, with ``"cuda"`` meaning the current CUDA device."""
    a, b = torch.device(a), torch.device(b)
    if a.type != b.type:
        return False
    if a.type != "cuda" or (a.index is not None and b.index is not None):
        return a.index == b.index
    current = torch.cuda.current_device()
    return (current if a.index is None else a.index) == (current if b.index is None else b.index)


def check_reward_output(fn: Any, out: Any, batch: int, device: torch.device) -> Tensor:
    """Validate a reward's output: a finite ``(batch,)`` float tensor on ``device``.

    Raises:
        ValueError / TypeError naming the reward and the violated property.
    """
    name = _name(fn)
    if not isinstance(out, Tensor):
        raise TypeError(f"reward {name} returned {type(out).__name__}, expected a torch.Tensor")
    if out.shape != (batch,):
        raise ValueError(f"reward {name} returned shape {tuple(out.shape)}, expected ({batch},)")
    if out.is_complex():
        raise TypeError(f"reward {name} returned complex dtype {out.dtype}, expected a real float tensor")
    if not out.is_floating_point():
        out = out.float()
    if not same_device(out.device, device):
        raise ValueError(f"reward {name} returned a tensor on {out.device}, expected {device}")
    if not bool(torch.isfinite(out).all()):
        raise ValueError(f"reward {name} returned a non-finite value (NaN or infinity): {out.tolist()}")
    return out
