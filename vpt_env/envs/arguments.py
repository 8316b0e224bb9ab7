"""The image-view envs' arguments: keyword checks, reset options, the pool and reward, spaces.

The shells (:mod:`vpt_env.envs.vector`, :mod:`vpt_env.envs.image_view`) build themselves with
these, so an argument is checked, and its error worded, in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from vpt_env.core.augment import AUG_DIM, AUG_NAMES
from vpt_env.core.state import EnvParams
from vpt_env.data.pool import ImagePool, check_device, fork_safe_threads
from vpt_env.data.sources import MAX_IMAGE_SIDE
from vpt_env.rewards.base import RewardFn, make_reward

__all__ = [
    "COMMON_KWARGS",
    "OBS_MODES",
    "build_pool",
    "make_observation_space",
    "params_for_reward",
    "refuse_unknown",
    "reset_options",
    "resolve_params",
]

OBS_MODES = ("view", "dict")
#: Keyword arguments every image-view env takes besides the EnvParams fields.
COMMON_KWARGS = (
    "source",
    "reward",
    "target",
    "reward_kwargs",
    "obs_mode",
    "render_mode",
    "params",
    "max_image_side",
    "strict",
    "device",
    "max_pool_bytes",
)


def resolve_params(
    params: EnvParams | None, param_kwargs: dict[str, Any], extra: tuple[str, ...] = (), owner: str = "env"
) -> EnvParams:
    """The env's :class:`EnvParams` from ``params=`` or its fields given as keywords.

    Args:
        params: an :class:`EnvParams`, or None.
        param_kwargs: the keywords the env's ``__init__`` did not name.
        extra: the env's own keywords beyond :data:`COMMON_KWARGS` (listed in the error).
        owner: the env's class name, for the error message.

    Raises:
        TypeError: unknown keywords, or both forms given. The message starts as
            Python's own (``"ImageViewEnv.__init__() got an unexpected keyword
            argument 'frameskip'"``), which clients match on (TorchRL's
            ``GymEnv`` retries without ``frameskip`` when it reads it), then
            lists the accepted keywords.
    """
    refuse_unknown(list(param_kwargs), extra, owner)
    if params is not None and param_kwargs:
        raise TypeError("pass either params= or EnvParams fields as keywords, not both")
    if params is not None and not isinstance(params, EnvParams):
        raise TypeError(f"params must be an EnvParams, got {type(params).__name__}")
    return params if params is not None else EnvParams(**param_kwargs)


def refuse_unknown(names: list[str], extra: tuple[str, ...] = (), owner: str = "env") -> None:
    """Refuse keywords that are not :data:`COMMON_KWARGS`, ``extra`` or EnvParams fields.

    ``names`` are the keywords left after the env took its own; see :func:`resolve_params` for
    the message.
    """
    unknown = [k for k in names if k not in EnvParams.field_names()]
    if unknown:
        accepted = sorted({*COMMON_KWARGS, *extra, *EnvParams.field_names()})
        more = "".join(f", and an unexpected keyword argument {k!r}" for k in unknown[1:])
        raise TypeError(
            f"{owner}.__init__() got an unexpected keyword argument {unknown[0]!r}{more}; "
            f"accepted: {accepted}"
        )


def reset_options(options: Any, accepted: tuple[str, ...]) -> dict[str, Any]:
    """The ``options`` of ``reset()`` as a new dict, checked against the ``accepted`` keys.

    Raises:
        TypeError: ``options`` is neither None nor a mapping.
        ValueError: unknown keys (listing the accepted ones).
    """
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise TypeError(
            f"options must be a dict (e.g. {{{accepted[0]!r}: 0}}) or None, "
            f"got {type(options).__name__} {options!r}"
        )
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"unknown reset option(s) {unknown}; accepted: {sorted(accepted)}")
    return dict(options)


def build_pool(
    source: Any,
    params: EnvParams,
    *,
    reward: Any,
    target: int | str | None,
    reward_kwargs: dict[str, Any] | None,
    obs_mode: str,
    max_image_side: int = MAX_IMAGE_SIDE,
    strict: bool = False,
    device: str | torch.device = "cpu",
    max_pool_bytes: int | None = None,
) -> tuple[ImagePool, RewardFn, EnvParams]:
    """Check the common arguments, load the images and resolve the reward.

    Returns ``(pool, reward_fn, params)``: ``params`` with ``memory`` raised to
    what the reward declares (:func:`params_for_reward`).

    ``source`` may also be a ready :class:`ImagePool`, which is shared as is
    (many envs over one copy of the images; it must be on ``device``).
    ``max_pool_bytes`` caps the pool's memory: a larger source is read lazily,
    a random part of it that fits (:meth:`ImagePool.from_source`).
    """
    fork_safe_threads()  # before any torch call: a shared pool skips ImagePool.__init__
    if obs_mode not in OBS_MODES:
        raise ValueError(f"obs_mode must be one of {OBS_MODES}, got {obs_mode!r}")
    if not isinstance(strict, bool):
        raise TypeError(f"strict must be a bool, got {type(strict).__name__}")
    if reward_kwargs is not None and not isinstance(reward_kwargs, dict):
        raise TypeError(f"reward_kwargs must be a dict, got {type(reward_kwargs).__name__}")
    device = check_device(device)
    if isinstance(source, ImagePool):
        pool = source
        if pool.device.type != device.type:
            raise ValueError(f"source pool is on {pool.device}, but device={device}")
        if params.interpolation != "nearest" and pool.atlas is None:
            raise ValueError(
                f"interpolation={params.interpolation!r} needs a pool built with keep_float=True"
            )
    else:
        pool = ImagePool.from_source(
            source,
            min_side=params.view_size,
            max_side=max_image_side,
            strict=strict,
            device=device,
            keep_float=params.interpolation != "nearest",
            max_bytes=max_pool_bytes,
        )
    reward_fn = make_reward(reward, pool.annotations, target=target, **(reward_kwargs or {}))
    return pool, reward_fn, params_for_reward(params, reward_fn)


def params_for_reward(params: EnvParams, reward_fn: Any) -> EnvParams:
    """``params`` with ``memory`` raised to what the reward declares (``reward.memory``)."""
    need = getattr(reward_fn, "memory", 0)
    if isinstance(need, bool) or not isinstance(need, int) or need < 0:
        raise TypeError(f"reward {reward_fn!r}: memory must be an int >= 0, got {need!r}")
    return params.replace(memory=need) if need > params.memory else params


def make_observation_space(
    params: EnvParams, obs_mode: str, channels_first_float: bool = False
) -> spaces.Space:
    """One env's observation space: the view, or a Dict adding box and augmentation.

    The view is ``uint8 (S, S, 3)``, or ``float32 (3, S, S)`` in ``[0, 1]`` when
    ``channels_first_float``.
    """
    s = params.view_size
    if channels_first_float:
        view: spaces.Space = spaces.Box(0.0, 1.0, (3, s, s), np.float32)
    else:
        view = spaces.Box(0, 255, (s, s, 3), np.uint8)
    if obs_mode == "view":
        return view
    ranges = params.ranges
    lo = np.array([ranges[n][0] for n in AUG_NAMES], np.float32)
    hi = np.array([ranges[n][1] for n in AUG_NAMES], np.float32)
    return spaces.Dict(
        {
            "view": view,
            "box": spaces.Box(0.0, 1.0, (4,), np.float32),
            "aug": spaces.Box(lo, hi, (AUG_DIM,), np.float32),
        }
    )
