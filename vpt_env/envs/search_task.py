"""The maths of the search task: pure batched functions both search envs call.

A batch of ``B`` views (``B = 1`` for :class:`~vpt_env.envs.search.ImageSearchEnv`, ``N`` for
:class:`~vpt_env.envs.search.ImageSearchVectorEnv`): which scene an episode searches, which object
is its goal, the view's IoU with the goal, and the reward.

Example:
    >>> import torch
    >>> reward, found = search_reward(torch.tensor([0.3, 0.8]), torch.tensor([0.1, 0.5]), found_iou=0.7)
    >>> [round(r, 2) for r in reward.tolist()], found.tolist()
    ([0.2, 1.3], [False, True])
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from vpt_env.core.boxes import iou
from vpt_env.core.random import RESET_STEP, uniform
from vpt_env.data.annotations import Annotations
from vpt_env.data.scene_text import position_name

__all__ = [
    "CAPTION_BYTES",
    "GOAL_MODES",
    "SUCCESS_BONUS",
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
