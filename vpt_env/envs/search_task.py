"""The search task: :class:`SearchTask` and the pure batched functions it is made of.

A batch of ``B`` views (``B = 1`` under :class:`~vpt_env.envs.search.ImageSearchEnv`, ``N`` under
:class:`~vpt_env.envs.search.ImageSearchVectorEnv`): which scene an episode searches, which object
is its goal, the view's IoU with the goal, and the reward.

Example:
    >>> import torch
    >>> reward, found = search_reward(torch.tensor([0.3, 0.8]), torch.tensor([0.1, 0.5]), found_iou=0.7)
    >>> [round(r, 2) for r in reward.tolist()], found.tolist()
    ([0.2, 1.3], [False, True])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

from vpt_env.core.boxes import iou
from vpt_env.core.random import RESET_STEP, uniform
from vpt_env.core.state import EnvParams, ViewState
from vpt_env.data.annotations import Annotations
from vpt_env.data.pool import ImagePool
from vpt_env.data.scene_text import position_name
from vpt_env.envs.task import Views, ViewTask, where_state
from vpt_env.rewards.base import RewardFn

__all__ = [
    "CAPTION_BYTES",
    "DEFAULT_SCENES",
    "GOAL_MODES",
    "SEARCH_KWARGS",
    "SUCCESS_BONUS",
    "SearchMemo",
    "SearchTask",
    "encode_caption",
    "goal_iou",
    "goal_phrase",
    "goal_score",
    "sample_goal_boxes",
    "sample_goals",
    "search_images",
    "search_reward",
]

#: ``goal_mode`` values: a class index, or a caption of the goal object as UTF-8 bytes.
GOAL_MODES = ("class", "caption")
#: Bytes of a caption goal (longer captions are cut, shorter ones padded with 0).
CAPTION_BYTES = 64

#: Reward for finding the object (the episode then terminates).
SUCCESS_BONUS = 1.0
#: Default source of the search envs: 2,000 embedded scenes (quick to build).
DEFAULT_SCENES = {"n_images": 2000, "seed": 0}
#: The search task's own keywords.
SEARCH_KWARGS = ("found_iou", "goal_mode", "text_info")


def search_images(searchable: Tensor, key: Tensor, episode: Tensor) -> Tensor:
    """The scene of each new episode: uniform over the images that have an object.

    Args:
        searchable: ``(M,)`` indices of the pool's images with at least one box.
        key, episode: ``(B,)`` random streams of the envs (see :mod:`vpt_env.core.random`).

    Returns:
        ``(B,)`` int64 image indices.
    """
    u = uniform(key, episode, RESET_STEP, 8)[:, 6]
    pick = (u * len(searchable)).long().clamp_max(len(searchable) - 1)
    return searchable[pick]


def sample_goal_boxes(annotations: Annotations, image: Tensor, u: Tensor) -> Tensor:
    """One goal object per view: a uniformly drawn object box of its image.

    Args:
        annotations: the pool's annotations.
        image: ``(B,)`` image indices (each image must have at least one box).
        u: ``(B,)`` uniform numbers in ``[0, 1)``.

    Returns:
        ``(B,)`` int64 indices into the image's boxes (valid boxes come first
        in each row of ``annotations.boxes``; padding is at the end).
    """
    count = (annotations.box_labels[image] >= 0).sum(dim=1)
    return (u * count).long().clamp_max(count - 1)


def sample_goals(annotations: Annotations, image: Tensor, u: Tensor) -> Tensor:
    """One goal class per view: the class of :func:`sample_goal_boxes`' object.

    Shape:
        image, u: ``(B,)``; returns ``(B,)`` int64 class indices.
    """
    pick = sample_goal_boxes(annotations, image, u)
    return annotations.box_labels[image].gather(1, pick[:, None])[:, 0]


def goal_phrase(annotations: Annotations, image: int, box_index: int) -> str:
    """A caption of one object: the matching part of its image's caption, else a template.

    Scene captions list their objects in box order (``"a red sneaker at the
    top left, a small blue digit 3 in the centre and ..."``): when the first
    caption splits into one phrase per box and the phrase names the box's
    class, that phrase is the goal. Otherwise the goal is ``"a <class>
    <position>"`` from the box (for example ``"a dog on the right"``).
    """
    labels = annotations.box_labels[image]
    count = int((labels >= 0).sum())
    name = annotations.classes[int(labels[box_index])]
    if annotations.captions[image]:
        first = annotations.captions[image][0]
        head, _, last = first.rpartition(" and ")
        parts = [*head.split(", "), last] if head else [first]
        if len(parts) == count and name in parts[box_index]:
            return parts[box_index]
    x0, y0, x1, y1 = (float(v) for v in annotations.boxes[image, box_index])
    return f"a {name} {position_name((x0 + x1) / 2, (y0 + y1) / 2)}"


def encode_caption(text: str, length: int = CAPTION_BYTES) -> np.ndarray:
    """A caption as a ``(length,)`` uint8 array: its UTF-8 bytes, cut or padded with 0."""
    raw = text.encode("utf-8")[:length]
    out = np.zeros(length, np.uint8)
    out[: len(raw)] = np.frombuffer(raw, np.uint8)
    return out


def goal_iou(annotations: Annotations, image: Tensor, box: Tensor, goal: Tensor) -> Tensor:
    """Best IoU between each view and the boxes of its goal class in its image (0 if none).

    Shape:
        image, goal: ``(B,)``; box: ``(B, 4)``; returns ``(B,)`` in ``[0, 1]``.
    """
    boxes = annotations.boxes[image]
    match = annotations.box_labels[image] == goal[:, None]
    scores = torch.where(match, iou(boxes, box[:, None, :]), torch.zeros_like(match, dtype=box.dtype))
    return scores.amax(dim=1) if scores.shape[1] else torch.zeros_like(goal, dtype=box.dtype)


def search_reward(score: Tensor, last: Tensor, found_iou: float) -> tuple[Tensor, Tensor]:
    """The search reward and termination from the goal IoU before and after a step.

    Returns:
        ``(reward, found)``: ``score - last`` plus :data:`SUCCESS_BONUS` where
        ``score >= found_iou``, and that condition (which ends the episode).
    """
    found = score >= found_iou
    return score - last + SUCCESS_BONUS * found.to(score.dtype), found


def goal_score(annotations: Annotations, state: Any, goal: Tensor, goal_box: Tensor, mode: str) -> Tensor:
    """IoU with the goal: any box of the goal class, or the described box in caption mode."""
    if mode == "class":
        return goal_iou(annotations, state.image, state.box, goal)
    boxes = annotations.boxes[state.image].gather(1, goal_box.view(-1, 1, 1).expand(-1, 1, 4))[:, 0]
    return iou(boxes, state.box)


class SearchMemo(NamedTuple):
    """What the search task keeps per env beside the view state."""

    goal: Tensor
    """``(B,)`` int64: the goal class."""
    goal_box: Tensor
    """``(B,)`` int64: the goal object's index among its image's boxes."""
    score: Tensor
    """``(B,)`` float: the view's IoU with the goal after the last reset or step."""
    caption_bytes: Tensor | None
    """``(B, 64)`` uint8: the goal's caption as bytes (caption mode or ``text_info``; else None)."""
    caption: np.ndarray | None
    """``(B,)`` object array of the goal captions (caption mode or ``text_info``; else None)."""


class SearchTask(ViewTask):
    """``ImageSearch-v0``'s task: move the view onto an object of the goal class.

    Episodes start on a scene with at least one object, with a goal drawn among its objects; the
    reward is the change in the view's IoU with the goal plus :data:`SUCCESS_BONUS` when it reaches
    ``found_iou``, which terminates the episode. The observation is ``{"view", "goal", "box"}``;
    ``info`` adds ``goal``, ``iou`` and ``is_success`` (and ``goal_name``, ``goal_caption`` with
    ``text_info``). See :class:`~vpt_env.envs.search.ImageSearchEnv` for the whole contract.

    Args:
        pool, params, reward_fn, obs_mode, discrete: as :class:`ViewTask` (the shells fix
            ``reward="zero"`` and ``obs_mode="view"``).
        found_iou: IoU with the goal at which it is found, in ``(0, 1]``.
        goal_mode: ``"class"`` or ``"caption"``.
        text_info: add the goal's class name and caption to ``info``.
    """

    max_episode_steps: ClassVar[int] = 50
    own_kwargs: ClassVar[tuple[str, ...]] = SEARCH_KWARGS

    def __init__(
        self,
        pool: ImagePool,
        params: EnvParams,
        reward_fn: RewardFn,
        obs_mode: str,
        discrete: bool,
        found_iou: float = 0.5,
        goal_mode: str = "class",
        text_info: bool = False,
    ) -> None:
        super().__init__(pool, params, reward_fn, obs_mode, discrete)
        self.found_iou = float(found_iou)
        self.goal_mode = goal_mode
        self.text_info = text_info
        ann = pool.annotations
        if not ann.has_boxes or ann.num_classes == 0:
            raise ValueError("ImageSearch needs a source with object boxes (e.g. SceneSource)")
        self.searchable = torch.nonzero((ann.box_labels >= 0).any(dim=1)).flatten()

    @staticmethod
    def prepare(source: Any, found_iou: Any, goal_mode: Any, text_info: Any, kwargs: dict[str, Any]) -> Any:
        """Check the search envs' keywords before anything is built, and set their defaults.

        ``kwargs`` are the env's other keywords: ``reward`` and ``obs_mode`` are refused (the task
        fixes them); without ``params``, ``augmentations=()`` and ``init_scale=(0.02, 0.1)`` are
        set unless given. Returns the source (2,000 embedded scenes when None).
        """
        for name in ("reward", "obs_mode"):
            if name in kwargs:
                raise TypeError(f"ImageSearch envs fix {name!r}; it cannot be passed")
        if isinstance(found_iou, bool) or not isinstance(found_iou, int | float) or not 0 < found_iou <= 1:
            raise ValueError(f"found_iou must be in (0, 1], got {found_iou!r}")
        if goal_mode not in GOAL_MODES:
            raise ValueError(f"goal_mode must be one of {GOAL_MODES}, got {goal_mode!r}")
        if not isinstance(text_info, bool):
            raise TypeError(f"text_info must be a bool, got {type(text_info).__name__}")
        if "params" not in kwargs:
            kwargs.setdefault("augmentations", ())
            kwargs.setdefault("init_scale", (0.02, 0.1))
        if source is None:
            from vpt_env.data.scenes import SceneSource

            source = SceneSource(**DEFAULT_SCENES)
        return source

    def observation_space(self, view_space: spaces.Space) -> spaces.Space:
        """``Dict(view, goal, box)``: the goal a class index or a caption's bytes."""
        goal: spaces.Space = (
            spaces.Discrete(self.pool.annotations.num_classes)
            if self.goal_mode == "class"
            else spaces.Box(0, 255, (CAPTION_BYTES,), np.uint8)
        )
        return spaces.Dict({"view": view_space, "goal": goal, "box": spaces.Box(0.0, 1.0, (4,), np.float32)})

    def check_options(self, options: Any) -> None:
        """Refuse ``options["image_index"]`` naming an image without objects.

        Images drawn by the task itself come from the searchable ones, so the step path needs no
        such check (and no host synchronisation).
        """
        if not isinstance(options, Mapping) or options.get("image_index") is None:
            return  # no image asked for, or not a dict: reset() says so
        index = np.atleast_1d(np.asarray(options["image_index"]))
        searchable = set(self.searchable.tolist())
        n = len(self.pool)
        bad = [int(i) for i in index if 0 <= int(i) < n and int(i) not in searchable]
        if bad:
            raise ValueError(
                f"options['image_index'] must name images with at least one object; {bad[:5]} have none"
            )

    def reset_images(self, key: Tensor, episode: Tensor) -> Tensor | None:
        return search_images(self.searchable, key, episode)

    def start(self, state: ViewState, views: Views, mask: Tensor, memo: SearchMemo | None) -> SearchMemo:
        ann = self.pool.annotations
        goal_box = sample_goal_boxes(ann, state.image, uniform(state.key, state.episode, RESET_STEP, 8)[:, 7])
        goal = ann.box_labels[state.image].gather(1, goal_box[:, None])[:, 0]
        score = goal_score(ann, state, goal, goal_box, self.goal_mode)
        caption_bytes, caption = None, None
        if self.goal_mode == "caption" or self.text_info:
            n = state.batch_size
            caption = np.full(n, "", dtype=object) if memo is None else memo.caption.copy()
            caption_bytes = (
                torch.zeros(n, CAPTION_BYTES, dtype=torch.uint8, device=state.box.device)
                if memo is None
                else memo.caption_bytes.clone()
            )
            for i in torch.nonzero(mask).flatten().tolist():
                caption[i] = goal_phrase(ann, int(state.image[i]), int(goal_box[i]))
                caption_bytes[i] = torch.from_numpy(encode_caption(caption[i]))
        return where_state(mask, SearchMemo(goal, goal_box, score, caption_bytes, caption), memo)

    def reward(
        self, state: ViewState, views: Views, memo: SearchMemo, validate: bool = True
    ) -> tuple[Tensor, Tensor, SearchMemo]:
        score = goal_score(self.pool.annotations, state, memo.goal, memo.goal_box, self.goal_mode)
        reward, found = search_reward(score, memo.score, self.found_iou)
        return reward, found, memo._replace(score=score)

    def observation(self, view: Tensor, state: ViewState, memo: SearchMemo) -> dict[str, Tensor]:
        goal = memo.goal if self.goal_mode == "class" else memo.caption_bytes
        return {"view": view, "goal": goal, "box": state.box}

    def info(self, state: ViewState, views: Views, memo: SearchMemo) -> dict[str, Tensor | np.ndarray]:
        values = super().info(state, views, memo)
        values.update(goal=memo.goal, iou=memo.score, is_success=memo.score >= self.found_iou)
        if self.text_info:
            classes = self.pool.annotations.classes
            values["goal_name"] = np.array([classes[g] for g in memo.goal.tolist()], dtype=object)
            values["goal_caption"] = memo.caption
        return values
