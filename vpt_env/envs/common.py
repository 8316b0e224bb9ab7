"""What the single and the vector env share: argument checks, the pool, spaces, actions.

Both envs are shells over :mod:`vpt_env.core`; this module keeps their
construction and their action checks in one place too.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from vpt_env.core.augment import AUG_DIM, AUG_NAMES
from vpt_env.core.dynamics import DISCRETE_ACTIONS
from vpt_env.core.state import EnvParams
from vpt_env.data.pool import ImagePool
from vpt_env.data.sources import MAX_IMAGE_SIDE, load_images
from vpt_env.rewards.base import RewardFn, make_reward

__all__ = [
    "COMMON_KWARGS",
    "OBS_MODES",
    "build_pool",
    "continuous_actions",
    "discrete_actions",
    "make_action_space",
    "make_observation_space",
    "resolve_params",
]

OBS_MODES = ("view", "dict")
#: Keyword arguments every image-view env takes besides the EnvParams fields.
COMMON_KWARGS = (
    "source", "reward", "target", "reward_kwargs", "obs_mode", "render_mode",
    "params", "max_image_side", "strict", "device",
)


def resolve_params(
    params: EnvParams | None, param_kwargs: dict[str, Any], extra: tuple[str, ...] = ()
) -> EnvParams:
    """The env's :class:`EnvParams` from ``params=`` or its fields given as keywords.

    Raises:
        TypeError: unknown keywords (listing the accepted ones), or both forms given.
    """
    unknown = sorted(set(param_kwargs) - set(EnvParams.field_names()))
    if unknown:
        accepted = sorted({*COMMON_KWARGS, *extra, *EnvParams.field_names()})
        raise TypeError(f"unknown keyword argument(s) {unknown}; accepted: {accepted}")
    if params is not None and param_kwargs:
        raise TypeError("pass either params= or EnvParams fields as keywords, not both")
    if params is not None and not isinstance(params, EnvParams):
        raise TypeError(f"params must be an EnvParams, got {type(params).__name__}")
    return params if params is not None else EnvParams(**param_kwargs)


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
) -> tuple[ImagePool, RewardFn]:
    """Check the common arguments, load the images and resolve the reward.

    ``source`` may also be a ready :class:`ImagePool`, which is shared as is
    (many envs over one copy of the images; it must be on ``device``).
    """
    if obs_mode not in OBS_MODES:
        raise ValueError(f"obs_mode must be one of {OBS_MODES}, got {obs_mode!r}")
    if not isinstance(strict, bool):
        raise TypeError(f"strict must be a bool, got {type(strict).__name__}")
    if reward_kwargs is not None and not isinstance(reward_kwargs, dict):
        raise TypeError(f"reward_kwargs must be a dict, got {type(reward_kwargs).__name__}")
    device = torch.device(device)
    if isinstance(source, ImagePool):
        pool = source
        if pool.device.type != device.type:
            raise ValueError(f"source pool is on {pool.device}, but device={device}")
        if params.interpolation != "nearest" and pool.atlas is None:
            raise ValueError(
                f"interpolation={params.interpolation!r} needs a pool built with keep_float=True"
            )
    else:
        images, annotations = load_images(
            source, min_side=params.view_size, max_side=max_image_side, strict=strict
        )
        pool = ImagePool(images, annotations, device=device, keep_float=params.interpolation != "nearest")
    reward_fn = make_reward(reward, pool.annotations, target=target, **(reward_kwargs or {}))
    return pool, reward_fn


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


def make_action_space(params: EnvParams, discrete: bool) -> spaces.Space:
    """One env's action space: ``Box(-1, 1, (4 + A,))`` or ``Discrete(9)``."""
    if discrete:
        return spaces.Discrete(len(DISCRETE_ACTIONS))
    return spaces.Box(-1.0, 1.0, (params.action_dim,), np.float32)


def continuous_actions(
    actions: Any, n: int, dim: int, device: torch.device, validate: bool = True
) -> torch.Tensor:
    """Check and clip a batch of continuous actions: ``(n, dim)`` float32 on ``device``.

    Finite values outside ``[-1, 1]`` are clipped; NaN or infinity raises
    ``ValueError`` (on an accelerator the check reads one flag back to the host;
    ``validate=False`` skips it).
    """
    if isinstance(actions, torch.Tensor):
        a = actions.to(device=device, dtype=torch.float32)
    else:
        a = torch.as_tensor(np.asarray(actions, dtype=np.float32), device=device)
    if a.shape != (n, dim):
        raise ValueError(f"actions must have shape {(n, dim)}, got {tuple(a.shape)}")
    if validate and not bool(torch.isfinite(a).all()):
        bad = (~torch.isfinite(a)).any(dim=1).nonzero().flatten().tolist()
        raise ValueError(f"actions must be finite; NaN or infinity in env(s) {bad}")
    return a.clamp(-1.0, 1.0)


def discrete_actions(actions: Any, n: int, device: torch.device, validate: bool = True) -> torch.Tensor:
    """Check a batch of discrete action ids: ``(n,)`` int64 on ``device``."""
    k = len(DISCRETE_ACTIONS)
    if isinstance(actions, torch.Tensor):
        if actions.is_floating_point() or actions.dtype == torch.bool:
            raise ValueError(f"actions must be integer ids in [0, {k}), got dtype {actions.dtype}")
        a = actions.to(device=device, dtype=torch.int64)
    else:
        arr = np.asarray(actions)
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"actions must be integer ids in [0, {k}), got {actions!r}")
        a = torch.as_tensor(arr.astype(np.int64), device=device)
    if a.shape != (n,):
        raise ValueError(f"actions must have shape {(n,)}, got {tuple(a.shape)}")
    if validate and not bool(((a >= 0) & (a < k)).all()):
        raise ValueError(f"actions must be in [0, {k}), got {a.tolist()}")
    return a
