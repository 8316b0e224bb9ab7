"""Actions of the image-view envs: the action space and the map from raw actions to the next state."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from vpt_env.core.dynamics import DISCRETE_ACTIONS, discrete_to_action, step_state
from vpt_env.core.state import EnvParams, ViewState
from vpt_env.core.video import VideoIndex, move_in_time
from vpt_env.data.pool import ImagePool

__all__ = ["TIME_ACTIONS", "ActionMap", "continuous_actions", "discrete_actions"]

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
    if not isinstance(actions, torch.Tensor):  # host data: checked and clipped on the host, in float64
        arr = np.asarray(actions, dtype=np.float64)
        if arr.shape != (n, dim):
            raise ValueError(f"actions must have shape {(n, dim)}, got {tuple(arr.shape)}")
        finite = np.isfinite(arr)
        if validate and not finite.all():
            bad = np.flatnonzero(~finite.all(axis=1)).tolist()
            raise ValueError(f"actions must be finite; NaN or infinity in env(s) {bad}")
        if not validate:
            arr = np.nan_to_num(arr, nan=0.0, posinf=1.0, neginf=-1.0)
        return torch.from_numpy(np.clip(arr, -1.0, 1.0).astype(np.float32)).to(device)
    a = actions if actions.is_floating_point() else actions.to(torch.float32)  # checked where it lies
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
