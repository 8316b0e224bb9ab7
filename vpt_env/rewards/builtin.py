"""Built-in rewards: ``zero``, ``label``, ``coverage`` and ``novelty``.

=========  ========  ====================================================================
name       range     value of a view
=========  ========  ====================================================================
zero       ``{0}``   always 0 (pure exploration / pre-training)
label      ``{0,1}`` 1 when the view's image label equals ``target``
coverage   ``[0,1]`` fraction of the total area of the image's ``target`` boxes inside
                     the view (0 when the image has none)
novelty    ``[0,1]`` 1 minus the largest IoU between the view and the boxes this episode
                     has left (the ``memory`` most recent; no annotations needed)
=========  ========  ====================================================================
"""

from __future__ import annotations

import torch
from torch import Tensor

from vpt_env.core.boxes import area, intersection, iou
from vpt_env.core.state import ViewState
from vpt_env.data.annotations import Annotations
from vpt_env.rewards.base import register_reward

__all__ = ["DEFAULT_NOVELTY_MEMORY", "CoverageReward", "LabelReward", "NoveltyReward", "ZeroReward"]

#: Past boxes ``novelty`` compares a view with, by default.
DEFAULT_NOVELTY_MEMORY = 32


class ZeroReward:
    """Always 0."""

    needs_annotations = False
    needs_views = False

    def __call__(self, views: Tensor, state: ViewState, annotations: Annotations) -> Tensor:
        return torch.zeros(state.image.shape[0], device=state.box.device)


class LabelReward:
    """1 when the view's image label equals ``target``, else 0.

    Args:
        target: class index.
    """

    needs_annotations = True
    needs_views = False

    def __init__(self, target: int) -> None:
        self.target = target

    def __call__(self, views: Tensor, state: ViewState, annotations: Annotations) -> Tensor:
        return (annotations.labels[state.image] == self.target).float()


class CoverageReward:
    """Fraction of the ``target`` class's annotated boxes inside the view.

    The sum over the image's ``target`` boxes of their area inside the view,
    over their total area; 0 for images without such boxes.

    Args:
        target: class index.
    """

    needs_annotations = True
    needs_views = False

    def __init__(self, target: int) -> None:
        self.target = target

    def __call__(self, views: Tensor, state: ViewState, annotations: Annotations) -> Tensor:
        boxes = annotations.boxes[state.image]  # (B, M, 4)
        match = annotations.box_labels[state.image] == self.target  # (B, M)
        inside = (intersection(boxes, state.box[:, None, :]) * match).sum(1)
        total = (area(boxes) * match).sum(1)
        return torch.where(total > 0, inside / torch.where(total > 0, total, 1.0), torch.zeros_like(total))


class NoveltyReward:
    """1 minus the largest IoU between the view and the boxes already visited in the episode.

    Reads :attr:`~vpt_env.core.state.ViewState.visited`, the ring of the
    episode's ``memory`` most recent boxes that the env keeps once a reward
    declares ``memory`` (the env raises ``EnvParams.memory`` to it). A view
    that returns to a box it has seen earns 0; one that overlaps nothing seen
    earns 1. Boxes only: on video sources, the same box in another frame
    counts as visited.

    Args:
        memory: how many past boxes to compare with (1..1024).

    Example:
        >>> import gymnasium as gym, vpt_env
        >>> env = gym.make("ImageViewDiscrete-v0", reward="novelty")
        >>> _ = env.reset(seed=0)
        >>> first = env.step(1)[1]   # pan left: a new box
        >>> back = env.step(2)[1]    # pan right: back onto the first box
        >>> 0 < first <= 1, back < 1e-6
        (True, True)
    """

    needs_annotations = False
    needs_views = False

    def __init__(self, memory: int = DEFAULT_NOVELTY_MEMORY) -> None:
        if isinstance(memory, bool) or not isinstance(memory, int) or not 1 <= memory <= 1024:
            raise ValueError(f"memory must be an int in [1, 1024], got {memory!r}")
        self.memory = memory

    def __call__(self, views: Tensor, state: ViewState, annotations: Annotations) -> Tensor:
        if state.visited is None or state.visited.shape[1] == 0:
            raise ValueError(
                "reward 'novelty' needs the state's visited boxes: make the env with memory >= 1 "
                "(envs do this themselves for reward='novelty')"
            )
        seen = iou(state.visited, state.box[:, None, :]).amax(dim=1)
        return 1.0 - seen


def _target(annotations: Annotations, target: int | str | None, reward: str, boxes: bool) -> int:
    if target is None:
        raise TypeError(f"reward {reward!r} needs target= (a class index or name)")
    index = annotations.class_index(target)
    if boxes and not annotations.has_boxes:
        raise ValueError(f"reward {reward!r} needs object boxes, but the source has none")
    if not boxes and not bool((annotations.labels >= 0).any()):
        raise ValueError(f"reward {reward!r} needs image labels, but the source has none")
    return index


@register_reward("zero")
def _zero(annotations: Annotations) -> ZeroReward:
    return ZeroReward()


@register_reward("label")
def _label(annotations: Annotations, target: int | str | None = None) -> LabelReward:
    return LabelReward(_target(annotations, target, "label", boxes=False))


@register_reward("coverage")
def _coverage(annotations: Annotations, target: int | str | None = None) -> CoverageReward:
    return CoverageReward(_target(annotations, target, "coverage", boxes=True))


@register_reward("novelty")
def _novelty(annotations: Annotations, memory: int = DEFAULT_NOVELTY_MEMORY) -> NoveltyReward:
    return NoveltyReward(memory)
