"""``ImageSearch-v0`` and ``ImageSearchDiscrete-v0``: find an object of a goal class in a scene."""

from __future__ import annotations

from typing import Any, ClassVar, SupportsFloat

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.error import ResetNeeded
from torch import Tensor

from vpt_env.core.boxes import iou
from vpt_env.core.random import RESET_STEP, uniform
from vpt_env.data.annotations import Annotations
from vpt_env.envs.image_view import ImageViewEnv

__all__ = ["ImageSearchDiscreteEnv", "ImageSearchEnv", "goal_iou", "sample_goals"]

#: Reward for finding the object (the episode then terminates).
SUCCESS_BONUS = 1.0
#: Default source of the search envs: 2,000 embedded scenes (quick to build).
DEFAULT_SCENES = {"n_images": 2000, "seed": 0}


def sample_goals(annotations: Annotations, image: Tensor, u: Tensor) -> Tensor:
    """One goal class per view: the class of a uniformly drawn object box of its image.

    Args:
        annotations: the pool's annotations.
        image: ``(B,)`` image indices (each image must have at least one box).
        u: ``(B,)`` uniform numbers in ``[0, 1)``.

    Returns:
        ``(B,)`` int64 class indices.
    """
    labels = annotations.box_labels[image]  # (B, M), -1 padding
    count = (labels >= 0).sum(dim=1)
    pick = (u * count).long().clamp_max(count - 1)
    # The k-th valid box: valid boxes come first in each row (padding is at the end).
    return labels.gather(1, pick[:, None])[:, 0]


def goal_iou(annotations: Annotations, image: Tensor, box: Tensor, goal: Tensor) -> Tensor:
    """Best IoU between each view and the boxes of its goal class in its image (0 if none).

    Shape:
        image, goal: ``(B,)``; box: ``(B, 4)``; returns ``(B,)`` in ``[0, 1]``.
    """
    boxes = annotations.boxes[image]
    match = annotations.box_labels[image] == goal[:, None]
    scores = torch.where(match, iou(boxes, box[:, None, :]), torch.zeros_like(match, dtype=box.dtype))
    return scores.amax(dim=1) if scores.shape[1] else torch.zeros_like(goal, dtype=box.dtype)


class ImageSearchEnv(ImageViewEnv):
    """Goal-conditioned visual search: move the view onto an object of the goal class.

    ## Description

    Each episode draws a scene and a goal class present in it (the class of
    a uniformly drawn object of the scene). The agent moves a view, starting
    from a small random crop, until the view frames an object of that class.

    ## Action Space

    As ``ImageView-v0`` (``ImageViewDiscrete-v0`` for the discrete variant),
    with no augmentation by default (``augmentations=()``): pan x/y, log-zoom,
    log-aspect.

    ## Observation Space

    ``Dict(view=Box(0, 255, (S, S, 3), uint8), goal=Discrete(K))``: the view
    and the goal class index (``K`` classes of the source).

    ## Rewards

    Built on the best IoU between the view and the goal class's boxes in the
    image (``info["iou"]``, in ``[0, 1]``): each step earns the change in that
    IoU (potential-based shaping, so it does not change which policies are
    optimal), and finding the object earns :data:`SUCCESS_BONUS` (1) and ends
    the episode; an episode's return is ``iou_end - iou_start`` plus the
    bonus. IoU rather than coverage alone: a view of the whole image covers
    every object, so coverage would reward zooming out; IoU is high only
    when the object fills the view. (A per-step IoU reward would pay the
    agent to hover near the object instead of finding it.)

    ## Starting State

    A random scene that has at least one object, a goal drawn from its
    objects, a RandomResizedCrop box with area in ``init_scale`` (default
    ``(0.02, 0.1)`` of the image) and identity augmentation.

    ## Episode End

    Terminates when the reward reaches ``found_iou`` (default 0.5: the
    object is found); truncated after ``max_episode_steps`` (50 at registration).

    ## Arguments

    ``source`` (default: 2,000 embedded scenes, ``SceneSource(n_images=2000)``;
    any source with object boxes works), ``found_iou``, and every argument of
    ``ImageView-v0`` except ``reward`` and ``obs_mode``.

    ``info`` adds ``goal``, ``goal_name``, ``iou`` and ``is_success``.

    ## Version History

    * v0: initial release.

    Example:
        >>> import gymnasium as gym
        >>> import vpt_env
        >>> from vpt_env.data.scenes import SceneSource
        >>> env = gym.make("ImageSearch-v0", source=SceneSource(n_images=50))
        >>> obs, info = env.reset(seed=0)
        >>> sorted(obs), obs["view"].shape
        (['goal', 'view'], (64, 64, 3))
        >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        >>> -1.0 <= reward <= 2.0
        True
    """

    def __init__(self, source: Any = None, *, found_iou: float = 0.5, **kwargs: Any) -> None:
        for name in ("reward", "obs_mode"):
            if name in kwargs:
                raise TypeError(f"ImageSearch envs fix {name!r}; it cannot be passed")
        if isinstance(found_iou, bool) or not isinstance(found_iou, int | float) or not 0 < found_iou <= 1:
            raise ValueError(f"found_iou must be in (0, 1], got {found_iou!r}")
        if source is None:
            from vpt_env.data.scenes import SceneSource

            source = SceneSource(**DEFAULT_SCENES)
        if "params" not in kwargs:
            kwargs.setdefault("augmentations", ())
            kwargs.setdefault("init_scale", (0.02, 0.1))
        super().__init__(source, reward="zero", obs_mode="view", **kwargs)
        ann = self.pool.annotations
        if not ann.has_boxes or ann.num_classes == 0:
            raise ValueError("ImageSearch needs a source with object boxes (e.g. SceneSource)")
        has_object = (ann.box_labels >= 0).any(dim=1)
        self._searchable = torch.nonzero(has_object).flatten()
        self.found_iou = float(found_iou)
        self.observation_space = spaces.Dict(
            {"view": self.observation_space, "goal": spaces.Discrete(ann.num_classes)}
        )
        self._goal: Tensor | None = None
        self._last_iou = 0.0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Start an episode on a random scene with a goal present in it."""
        options = dict(options or {})
        if "image_index" not in options:
            # Draw among the scenes with objects, from the env's own random stream.
            super().reset(seed=seed, options=options)  # sets the stream key and episode
            assert self._state is not None
            u = uniform(self._state.key, self._state.episode, RESET_STEP, 8)
            pick = (u[:, 6] * len(self._searchable)).long().clamp_max(len(self._searchable) - 1)
            options["image_index"] = int(self._searchable[pick][0])
            self._episode -= 1  # the same episode, now on the chosen scene
            seed = None
        obs, info = super().reset(seed=seed, options=options)
        assert self._state is not None
        u = uniform(self._state.key, self._state.episode, RESET_STEP, 8)[:, 7]
        if not bool((self.pool.annotations.box_labels[self._state.image] >= 0).any()):
            raise ValueError(f"image {int(self._state.image[0])} has no object to search for")
        self._goal = sample_goals(self.pool.annotations, self._state.image, u)
        info = self._search_info(info)
        self._last_iou = info["iou"]
        return self._search_obs(obs), info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """Move the view; reward is the change in IoU with the goal, plus 1 when found (which ends it)."""
        if self._goal is None:
            raise ResetNeeded("Cannot call env.step() before calling env.reset()")
        obs, _, _, truncated, info = super().step(action)
        info = self._search_info(info)
        found = bool(info["is_success"])
        reward = info["iou"] - self._last_iou + (SUCCESS_BONUS if found else 0.0)
        self._last_iou = info["iou"]
        return self._search_obs(obs), reward, found, truncated, info

    def _search_obs(self, view: np.ndarray) -> dict[str, Any]:
        assert self._goal is not None
        return {"view": view, "goal": int(self._goal[0])}

    def _search_info(self, info: dict[str, Any]) -> dict[str, Any]:
        assert self._state is not None and self._goal is not None
        score = float(goal_iou(self.pool.annotations, self._state.image, self._state.box, self._goal)[0])
        goal = int(self._goal[0])
        return {
            **info,
            "goal": goal,
            "goal_name": self.pool.annotations.classes[goal],
            "iou": score,
            "is_success": score >= self.found_iou,
        }


class ImageSearchDiscreteEnv(ImageSearchEnv):
    """``ImageSearchDiscrete-v0``: ``ImageSearch-v0`` with ``ImageViewDiscrete-v0``'s discrete actions."""

    discrete: ClassVar[bool] = True



