"""Box algebra on batched, normalised boxes.

Convention:
    A box is ``(x0, y0, x1, y1)`` in float32, normalised to its image: 0 is the
    left/top edge and 1 the right/bottom edge of the image, ``x1 > x0`` and
    ``y1 > y0``. Boxes are continuous: a box ``(0, 0, 1, 1)`` covers every pixel
    in full, and pixel ``i`` of an image of width ``W`` spans ``[i / W, (i + 1) / W)``.
    Every function takes boxes of shape ``(..., 4)`` and broadcasts over the
    leading dimensions.

    The *relative box* of ``b2`` in the frame of ``b1`` (the action of the
    image-view MDP) is ``((b2.x0 - b1.x0) / w1, (b2.y0 - b1.y0) / h1,
    (b2.x1 - b1.x0) / w1, (b2.y1 - b1.y0) / h1)``; ``b1`` itself is
    ``(0, 0, 1, 1)`` in its own frame.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "area",
    "box_to_cxcywh",
    "clamp_boxes",
    "clamp_corners",
    "compose",
    "cxcywh_to_box",
    "intersection",
    "intersection_fraction",
    "iou",
    "relative_box",
]


def box_to_cxcywh(boxes: Tensor) -> Tensor:
    """Convert ``(x0, y0, x1, y1)`` boxes to ``(cx, cy, w, h)``.

    Shape:
        boxes: ``(..., 4)``; returns ``(..., 4)``.
    """
    lo, hi = boxes[..., :2], boxes[..., 2:]  # x and y together: fewer, identical operations
    return torch.cat(((lo + hi) / 2, hi - lo), dim=-1)


def cxcywh_to_box(cxcywh: Tensor) -> Tensor:
    """Convert ``(cx, cy, w, h)`` to ``(x0, y0, x1, y1)`` boxes.

    Shape:
        cxcywh: ``(..., 4)``; returns ``(..., 4)``.
    """
    centre, half = cxcywh[..., :2], cxcywh[..., 2:] / 2
    return torch.cat((centre - half, centre + half), dim=-1)


def area(boxes: Tensor) -> Tensor:
    """Area of each box (0 for empty boxes).

    Shape:
        boxes: ``(..., 4)``; returns ``(...)``.
    """
    side = (boxes[..., 2:] - boxes[..., :2]).clamp_min(0)
    return side[..., 0] * side[..., 1]


def intersection(a: Tensor, b: Tensor) -> Tensor:
    """Area of the intersection of ``a`` and ``b`` (broadcast).

    Shape:
        a, b: ``(..., 4)`` broadcastable; returns the broadcast ``(...)``.
    """
    lo = torch.maximum(a[..., :2], b[..., :2])
    hi = torch.minimum(a[..., 2:], b[..., 2:])
    side = (hi - lo).clamp_min(0)
    return side[..., 0] * side[..., 1]


def iou(a: Tensor, b: Tensor) -> Tensor:
    """Intersection over union of ``a`` and ``b`` (broadcast), in ``[0, 1]``.

    Shape:
        a, b: ``(..., 4)`` broadcastable; returns the broadcast ``(...)``.
    """
    inter = intersection(a, b)
    union = area(a) + area(b) - inter
    return torch.where(union > 0, inter / torch.where(union > 0, union, 1.0), torch.zeros_like(inter))


def intersection_fraction(objects: Tensor, view: Tensor) -> Tensor:
    """Fraction of each ``objects`` box that lies inside ``view``, in ``[0, 1]``.

    Empty object boxes give 0.

    Shape:
        objects, view: ``(..., 4)`` broadcastable; returns the broadcast ``(...)``.
    """
    a = area(objects)
    inter = intersection(objects, view)
    return torch.where(a > 0, inter / torch.where(a > 0, a, 1.0), torch.zeros_like(inter))


def relative_box(b1: Tensor, b2: Tensor) -> Tensor:
    """Express ``b2`` in the frame of ``b1`` (the AB action ``bb_1->2``).

    Shape:
        b1, b2: ``(..., 4)`` broadcastable; returns the broadcast ``(..., 4)``.
    """
    w1 = (b1[..., 2] - b1[..., 0]).unsqueeze(-1)
    h1 = (b1[..., 3] - b1[..., 1]).unsqueeze(-1)
    origin = torch.stack((b1[..., 0], b1[..., 1], b1[..., 0], b1[..., 1]), dim=-1)
    scale = torch.cat((w1, h1, w1, h1), dim=-1)
    return (b2 - origin) / scale


def compose(b1: Tensor, rel: Tensor) -> Tensor:
    """Inverse of :func:`relative_box`: the box whose frame-``b1`` coordinates are ``rel``.

    ``compose(b1, relative_box(b1, b2)) == b2`` up to rounding.

    Shape:
        b1, rel: ``(..., 4)`` broadcastable; returns the broadcast ``(..., 4)``.
    """
    w1 = (b1[..., 2] - b1[..., 0]).unsqueeze(-1)
    h1 = (b1[..., 3] - b1[..., 1]).unsqueeze(-1)
    origin = torch.stack((b1[..., 0], b1[..., 1], b1[..., 0], b1[..., 1]), dim=-1)
    scale = torch.cat((w1, h1, w1, h1), dim=-1)
    return origin + rel * scale


def clamp_boxes(
    boxes: Tensor,
    min_size: float | Tensor = 0.0,
    max_size: float | Tensor = 1.0,
) -> Tensor:
    """Make boxes valid and inside the image, keeping their centres where possible.

    Each side length is clamped to ``[min_size, max_size]`` (``max_size <= 1``),
    then the box is shifted (not shrunk) so that it lies inside ``[0, 1]^2``.

    Args:
        boxes: ``(..., 4)`` boxes, possibly inverted, too large or outside the image.
        min_size: smallest side length, a float or a tensor broadcastable to
            ``(..., 2)`` (per-axis minimums).
        max_size: largest side length, like ``min_size``; at most 1.

    Returns:
        ``(..., 4)`` valid boxes inside the unit square.
    """
    return clamp_corners(boxes[..., :2], boxes[..., 2:], min_size, max_size)


def clamp_corners(
    lo: Tensor,
    hi: Tensor,
    min_size: float | Tensor = 0.0,
    max_size: float | Tensor = 1.0,
) -> Tensor:
    """:func:`clamp_boxes` of the boxes with corners ``lo = (x0, y0)`` and ``hi = (x1, y1)``.

    Shape:
        lo, hi: ``(..., 2)``; returns ``(..., 4)`` valid boxes inside the unit square.
    """
    wh = (hi - lo).abs()
    if isinstance(min_size, Tensor) or isinstance(max_size, Tensor):
        lo_size = torch.as_tensor(min_size, dtype=wh.dtype, device=wh.device)
        hi_size = torch.as_tensor(max_size, dtype=wh.dtype, device=wh.device).clamp_max(1.0)
        wh = torch.minimum(torch.maximum(wh, lo_size), hi_size)
    else:  # Python numbers: no host-to-device copy
        wh = wh.clamp(min=float(min_size), max=min(float(max_size), 1.0))
    half = wh / 2
    centre = torch.minimum(torch.maximum((lo + hi) / 2, half), 1.0 - half)
    return torch.cat((centre - half, centre + half), dim=-1)
