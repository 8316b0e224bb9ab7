"""Built-in rewards: ``zero``, ``label`` and ``coverage``.

=========  ========  ====================================================================
name       range     value of a view
=========  ========  ====================================================================
zero       ``{0}``   always 0 (pure exploration / pre-training)
label      ``{0,1}`` 1 when the view's image label equals ``target``
coverage   ``[0,1]`` fraction of the total area of the image's ``target`` boxes inside
                     the view (0 when the image has none)
=========  ========  ====================================================================
"""

from __future__ import annotations

import torch
from torch import Tensor

from vpt_env.core.boxes import area, intersection
from vpt_env.core.state import ViewState
from vpt_env.data.annotations import Annotations
from vpt_env.rewards.base import register_reward

__all__ = ["CoverageReward", "LabelReward", "ZeroReward"]


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
