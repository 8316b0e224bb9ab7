"""The task protocol: what an image-view environment is, as batched functions of its state.

A :class:`Task` says everything that makes one environment differ from another (its starting
images, its transition, observation, reward, termination and info), for a batch of ``B`` envs at
once. The shells hold the state and speak Gymnasium: :class:`~vpt_env.envs.vector.ImageViewVectorEnv`
is the one stateful shell (random streams, reset masks, autoreset, output arrays), and
:class:`~vpt_env.envs.image_view.ImageViewEnv` is that shell at a batch of one. So a new task is
one class, and the single env equals the vector env by construction.

The state of a batch is a :class:`~vpt_env.core.state.ViewState` (image, box, augmentation, time,
random stream) and, for tasks that need more (the search goal), the task's own *memo*: a
``NamedTuple`` of ``(B, ...)`` tensors that the shell keeps beside the view state and hands back
to the task. Every method is a function of its arguments; a task holds only its configuration.

Example (a task that pays 1 while the view is wider than tall), with its two shells::

    class WideTask(ViewTask):
        def reward(self, state, views, memo, validate=True):
            w = state.box[:, 2] - state.box[:, 0]
            h = state.box[:, 3] - state.box[:, 1]
            return (w > h).float(), torch.zeros_like(w, dtype=torch.bool), memo

    class WideVectorEnv(ImageViewVectorEnv):
        task_class = WideTask

    class WideEnv(ImageViewEnv):
        vector_class = WideVectorEnv
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

from vpt_env.core.state import EnvParams, ViewState
from vpt_env.data.annotations import view_cumulant
from vpt_env.data.pool import ImagePool
from vpt_env.envs.actions import ActionMap
from vpt_env.envs.arguments import make_observation_space
from vpt_env.rewards.base import RewardFn, check_reward_output

__all__ = ["Task", "ViewTask", "Views", "where_state"]


class Views:
    """One batch of rendered views, as float ``(B, 3, S, S)`` in ``[0, 1]`` or uint8 ``(B, S, S, 3)``.

    Either form is converted from the other on first use and kept (a renderer may produce only
    one: the nearest-neighbour fast path gives uint8).
    """

    __slots__ = ("_float", "_uint8")

    def __init__(self, float_views: Tensor | None = None, uint8_views: Tensor | None = None) -> None:
        if float_views is None and uint8_views is None:
            raise ValueError("Views needs float_views or uint8_views")
        self._float = float_views
        self._uint8 = uint8_views

    @property
    def float(self) -> Tensor:
        """``(B, 3, S, S)`` float32 in ``[0, 1]``."""
        if self._float is None:
            assert self._uint8 is not None
            self._float = self._uint8.permute(0, 3, 1, 2).float() / 255.0
        return self._float

    @property
    def uint8(self) -> Tensor:
        """``(B, S, S, 3)`` uint8, rounded to nearest."""
        if self._uint8 is None:
            from vpt_env.core.render import to_uint8

            assert self._float is not None
            self._uint8 = to_uint8(self._float)
        return self._uint8

    @property
    def float_if_rendered(self) -> Tensor | None:
        """The float views if the renderer made them, else None (for rewards that never read views)."""
        return self._float


class Task:
    """A batched image-view task: the functions a shell calls, for ``B`` envs at once.

    Subclass :class:`ViewTask` (which this base documents) to make a new task. The shell calls:

    * :meth:`reset_images` for the images of new episodes (None: uniform over the pool),
    * :meth:`start` after resetting the envs in a mask (the task's memo of new episodes),
    * :meth:`transition` with the raw actions, then :meth:`reward` on the rendered next views,
    * :meth:`observation` and :meth:`info` for what the agent sees.

    Attributes:
        pool: the images and annotations.
        params: the env parameters.
        actions: the action space and the map from raw actions to the next state.
        max_episode_steps: the task's episode length at registration (truncation).
        own_kwargs: the task's keyword arguments beyond the common ones (the shell passes them to
            the task's constructor).
    """

    max_episode_steps: ClassVar[int] = 100
    own_kwargs: ClassVar[tuple[str, ...]] = ()

    pool: ImagePool
    params: EnvParams
    actions: ActionMap


class ViewTask(Task):
    """``ImageView-v0``'s task: move and augment a view; the reward is any :class:`RewardFn`.

    Never terminates (episodes are truncated by the shell). The observation is the view, or with
    ``obs_mode="dict"`` the view, its box and its augmentation vector; ``info`` holds the image
    index, box and augmentation, the view's class cumulant on annotated sources and the reward's
    vector cumulant when it has one.

    Args:
        pool: the images.
        params: the env parameters (``memory`` already raised to what the reward declares).
        reward_fn: the reward.
        obs_mode: ``"view"`` or ``"dict"``.
        discrete: discrete or continuous actions.
    """

    def __init__(
        self, pool: ImagePool, params: EnvParams, reward_fn: RewardFn, obs_mode: str, discrete: bool
    ) -> None:
        self.pool = pool
        self.params = params
        self.reward_fn = reward_fn
        self.obs_mode = obs_mode
        self.actions = ActionMap(params, pool, discrete)
        self.needs_views = getattr(reward_fn, "needs_views", True)

    def observation_space(self, view_space: spaces.Space) -> spaces.Space:
        """One env's observation space, given the view's."""
        if self.obs_mode == "view":
            return view_space
        dict_space = make_observation_space(self.params, "dict")
        assert isinstance(dict_space, spaces.Dict)
        return spaces.Dict({**dict_space.spaces, "view": view_space})

    def check_options(self, options: Any) -> None:
        """Refuse reset options this task cannot start from, before any state changes."""

    def reset_images(self, key: Tensor, episode: Tensor) -> Tensor | None:
        """``(B,)`` images of new episodes of these random streams, or None to draw uniformly."""
        return None

    def start(self, state: ViewState, views: Views, mask: Tensor, memo: Any) -> Any:
        """The memo after the envs in ``mask`` started new episodes (``memo`` None: the first reset)."""
        return None

    def transition(self, state: ViewState, actions: Any, validate: bool = True) -> ViewState:
        """Check a batch of raw actions and apply them: the next state."""
        return self.actions.next_state(state, actions, self.pool.image_hw, validate)

    def reward(
        self, state: ViewState, views: Views, memo: Any, validate: bool = True
    ) -> tuple[Tensor, Tensor, Any]:
        """``(reward (B,) float32, terminated (B,) bool, memo)`` on arriving in ``state``."""
        out = self.reward_fn(
            views.float if self.needs_views else views.float_if_rendered, state, self.pool.annotations
        )
        n = state.batch_size
        reward = check_reward_output(self.reward_fn, out, n, state.box.device) if validate else out.float()
        return reward, torch.zeros(n, dtype=torch.bool, device=state.box.device), memo

    def observation(self, view: Tensor, state: ViewState, memo: Any) -> Tensor | dict[str, Tensor]:
        """The batch's observation, given its views in the shell's format."""
        if self.obs_mode == "view":
            return view
        return {"view": view, "box": state.box, "aug": state.aug}

    def info(self, state: ViewState, views: Views, memo: Any) -> dict[str, Tensor | np.ndarray]:
        """The batch's info values (``(B, ...)`` tensors, or numpy arrays for text)."""
        values: dict[str, Tensor | np.ndarray] = {
            "image_index": state.image,
            "box": state.box,
            "aug": state.aug,
        }
        ann = self.pool.annotations
        if ann.num_classes:
            values["cumulant"] = view_cumulant(ann, state.image, state.box)
        if hasattr(self.reward_fn, "cumulant"):
            values["reward_cumulant"] = self.reward_fn.cumulant(views.float, state, ann).detach()
        return values


def where_state(mask: Tensor, new: Any, old: Any) -> Any:
    """Per-env select between two batches (a ``ViewState`` or a task's memo): ``new`` where ``mask``.

    Fields are ``(B, ...)`` tensors, numpy arrays (e.g. text) or None (absent in both).
    """
    if old is None or new is None:
        return new
    out = []
    for x, y in zip(new, old, strict=True):
        if x is None or y is None:
            out.append(None)
        elif isinstance(x, np.ndarray):
            out.append(np.where(mask.cpu().numpy().reshape(-1, *([1] * (x.ndim - 1))), x, y))
        else:
            out.append(torch.where(mask.view(-1, *([1] * (x.dim() - 1))), x, y))
    return type(new)(*out)
