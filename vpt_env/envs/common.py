"""What the single and the vector env share: argument checks, the pool, spaces, actions.

Both envs are shells over :mod:`vpt_env.core`; this module keeps their
construction and their action checks in one place too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from gymnasium import spaces

from vpt_env.core.augment import AUG_DIM, AUG_NAMES
from vpt_env.core.dynamics import DISCRETE_ACTIONS, discrete_to_action, step_state
from vpt_env.core.state import EnvParams, ViewState
from vpt_env.core.video import VideoIndex, move_in_time
from vpt_env.data.pool import ImagePool, check_device, fork_safe_threads
from vpt_env.data.sources import MAX_IMAGE_SIDE
from vpt_env.rewards.base import RewardFn, make_reward

__all__ = [
    "COMMON_KWARGS",
    "OBS_MODES",
    "TIME_ACTIONS",
    "ActionMap",
    "ViewsFromState",
    "build_pool",
    "continuous_actions",
    "discrete_actions",
    "make_observation_space",
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


class ViewsFromState:
    """Pickling of an env whose rendered views are a cache of its state.

    The views are rendered again on unpickling (``_render_views``) instead of
    travelling with the env; with the pool pickled as its source
    (:meth:`~vpt_env.data.pool.ImagePool.__getstate__`), an env built from a
    name or a path pickles in kilobytes and continues its episode identically.
    """

    #: Attributes that hold rendered views.
    _view_caches: ClassVar[tuple[str, ...]] = ("_views",)
    _state: ViewState | None

    def _render_views(self) -> None:
        raise NotImplementedError

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, **dict.fromkeys(self._view_caches)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self._state is not None:
            self._render_views()


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
    unknown = [k for k in param_kwargs if k not in EnvParams.field_names()]
    if unknown:
        accepted = sorted({*COMMON_KWARGS, *extra, *EnvParams.field_names()})
        more = "".join(f", and an unexpected keyword argument {k!r}" for k in unknown[1:])
        raise TypeError(
            f"{owner}.__init__() got an unexpected keyword argument {unknown[0]!r}{more}; "
            f"accepted: {accepted}"
        )
    if params is not None and param_kwargs:
        raise TypeError("pass either params= or EnvParams fields as keywords, not both")
    if params is not None and not isinstance(params, EnvParams):
        raise TypeError(f"params must be an EnvParams, got {type(params).__name__}")
    return params if params is not None else EnvParams(**param_kwargs)


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


#: Discrete actions added on video sources (ids 9 and 10).
TIME_ACTIONS = ("earlier", "later")
#: ``max_time_step`` used on video sources when EnvParams leaves it None.
DEFAULT_TIME_STEP = 4


class ActionMap:
    """An env's action space and the map from raw actions to the next state.

    Continuous actions are ``Box(-1, 1, (4 + A [+ 1],))``: pan x/y, log-zoom,
    log-aspect, one entry per enabled augmentation, and on video sources a
    last entry that moves ``round(a * max_time_step)`` frames in time within
    the clip. Discrete actions are the ids of :data:`DISCRETE_ACTIONS`, plus
    ``9`` (one frame earlier) and ``10`` (one frame later) on video sources.
    Both go through the one transition :func:`~vpt_env.core.dynamics.step_state`.

    Args:
        params: the env parameters.
        pool: the images (its annotations tell whether it is a video source).
        discrete: discrete or continuous actions.
    """

    def __init__(self, params: EnvParams, pool: ImagePool, discrete: bool) -> None:
        self.params = params
        self.discrete = discrete
        ann = pool.annotations
        video = VideoIndex.from_clips(ann.clips, ann.frames)
        step = params.max_time_step
        self.time_step = (DEFAULT_TIME_STEP if video is not None else 0) if step is None else step
        if self.time_step and video is None:
            raise ValueError("max_time_step > 0 needs a video source (every image a frame of a clip)")
        self.video = video if self.time_step else None
        if discrete:
            self.names = DISCRETE_ACTIONS + (TIME_ACTIONS if self.video is not None else ())
            self.space: spaces.Space = spaces.Discrete(len(self.names))
        else:
            self.dim = params.action_dim + (1 if self.video is not None else 0)
            self.space = spaces.Box(-1.0, 1.0, (self.dim,), np.float32)

    def next_state(
        self, state: ViewState, actions: Any, image_hw: torch.Tensor, validate: bool = True
    ) -> ViewState:
        """Check a batch of raw actions and apply them: the next :class:`ViewState`."""
        n, device = state.batch_size, state.box.device
        if self.discrete:
            ids = discrete_actions(actions, n, device, validate, len(self.names))
            base = torch.where(ids < len(DISCRETE_ACTIONS), ids, torch.zeros_like(ids))
            cont = discrete_to_action(self.params, state, base)
            move = (ids == len(DISCRETE_ACTIONS) + 1).float() - (ids == len(DISCRETE_ACTIONS)).float()
        else:
            a = continuous_actions(actions, n, self.dim, device, validate)
            cont, move = a[:, : self.params.action_dim], a[:, -1]
        nxt = step_state(self.params, state, cont, image_hw)
        if self.video is not None:
            step = 1 if self.discrete else self.time_step
            nxt = nxt._replace(image=move_in_time(nxt.image, move, self.video, step))
        return nxt


def continuous_actions(
    actions: Any, n: int, dim: int, device: torch.device, validate: bool = True
) -> torch.Tensor:
    """Check and clip a batch of continuous actions: ``(n, dim)`` float32 on ``device``.

    Finite values outside ``[-1, 1]`` are clipped (in their own precision: a float64 ``1e308``
    clips to 1, it does not overflow to infinity); NaN or infinity raises ``ValueError`` (on an
    accelerator the check reads one flag back to the host). ``validate=False`` skips the check
    and reads NaN as 0 and infinities as -1 and 1, with no synchronisation.
    """
    if isinstance(actions, torch.Tensor):  # checked where it lies, then moved
        a = actions if actions.is_floating_point() else actions.to(torch.float32)
    else:  # host data: checked on the host, in float64
        a = torch.as_tensor(np.asarray(actions, dtype=np.float64))
    if a.shape != (n, dim):
        raise ValueError(f"actions must have shape {(n, dim)}, got {tuple(a.shape)}")
    if validate and not bool(torch.isfinite(a).all()):
        bad = (~torch.isfinite(a)).any(dim=1).nonzero().flatten().tolist()
        raise ValueError(f"actions must be finite; NaN or infinity in env(s) {bad}")
    if not validate:
        a = torch.nan_to_num(a, nan=0.0, posinf=1.0, neginf=-1.0)
    return a.clamp(-1.0, 1.0).to(device=device, dtype=torch.float32)


def discrete_actions(
    actions: Any, n: int, device: torch.device, validate: bool = True, k: int = len(DISCRETE_ACTIONS)
) -> torch.Tensor:
    """Check a batch of discrete action ids in ``[0, k)``: ``(n,)`` int64 on ``device``."""
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
