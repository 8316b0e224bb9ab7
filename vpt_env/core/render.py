"""Batched rendering: crop + resize every view of a batch in one gather, then augment.

Convention:
    Boxes are normalised ``(x0, y0, x1, y1)`` (see :mod:`vpt_env.core.boxes`).
    Output pixel ``(i, j)`` of a view of side ``S`` samples the image at the
    continuous point ``x = x0 + (j + 0.5) / S * (x1 - x0)`` (mirrored,
    ``x = x1 - ...``, when the view is flipped), ``y = y0 + (i + 0.5) / S * (y1 - y0)``,
    in the frame where pixel ``k`` spans ``[k, k + 1)`` and its value sits at
    ``k + 0.5``, the same convention as PIL's ``Image.resize(box=...)``.
    Samples outside the image take the nearest edge pixel.

Bilinear rendering reads the pyramid level whose resolution is the largest
power-of-two reduction still at least the view's (so downscaling by ``r``
samples a level reduced by ``2^floor(log2 r)``), which bounds the residual
reduction below 2 and keeps aliasing close to PIL's antialiased filter at the
cost of one gather. Nearest reads uint8 from the same level.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vpt_env.core.augment import FLIP, apply_augmentation
from vpt_env.core.state import EnvParams, ViewState
from vpt_env.data.pool import ImagePool

__all__ = ["render", "render_crops"]


def _sample_coords(
    pool: ImagePool, image: Tensor, box: Tensor, flip: Tensor, size: int
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Continuous pixel coordinates of every output row/column, at the chosen level."""
    hw = pool.image_hw[image]  # (B, 2) full-res H, W
    crop_w = (box[:, 2] - box[:, 0]) * hw[:, 1]
    crop_h = (box[:, 3] - box[:, 1]) * hw[:, 0]
    reduction = torch.minimum(crop_w, crop_h).clamp_min(1.0) / size
    level = torch.floor(torch.log2(reduction.clamp_min(1.0))).long()
    level = torch.minimum(level, pool.num_levels[image] - 1)
    lhw = pool.level_hw[image, level]  # (B, 2) int64
    offset = pool.level_offset[image, level]
    t = (torch.arange(size, device=box.device, dtype=box.dtype) + 0.5) / size  # (S,)
    w = (box[:, 2] - box[:, 0])[:, None]
    xs_fwd = box[:, 0:1] + t * w
    xs_rev = box[:, 2:3] - t * w
    xs = torch.where(flip[:, None] > 0.5, xs_rev, xs_fwd)
    ys = box[:, 1:2] + t * (box[:, 3] - box[:, 1])[:, None]
    px = xs * lhw[:, 1:2].to(xs.dtype) - 0.5  # (B, S)
    py = ys * lhw[:, 0:1].to(ys.dtype) - 0.5
    return px, py, lhw, offset, level


def render_crops(
    pool: ImagePool,
    image: Tensor,
    box: Tensor,
    size: int,
    flip: Tensor | None = None,
    interpolation: str = "bilinear",
) -> Tensor:
    """Crop and resize a batch of boxes, without colour augmentation.

    Args:
        pool: the images.
        image: ``(B,)`` int64 image indices.
        box: ``(B, 4)`` normalised boxes.
        size: output side ``S``.
        flip: ``(B,)`` 1 mirrors a view left-right; None for none.
        interpolation: ``"bilinear"`` (float output) or ``"nearest"`` (uint8 output).

    Returns:
        ``(B, S, S, 3)`` channels-last views: float32 in ``[0, 1]`` for bilinear,
        uint8 for nearest.
    """
    if flip is None:
        flip = torch.zeros(image.shape[0], device=box.device)
    px, py, lhw, offset, _ = _sample_coords(pool, image, box, flip, size)
    wmax = (lhw[:, 1:2] - 1).to(px.dtype)
    hmax = (lhw[:, 0:1] - 1).to(py.dtype)
    width = lhw[:, 1:2]
    if interpolation == "nearest":
        xi = torch.minimum(torch.floor(px + 0.5).clamp_min(0), wmax).long()
        yi = torch.minimum(torch.floor(py + 0.5).clamp_min(0), hmax).long()
        idx = (offset[:, None] + yi * width)[:, :, None] + xi[:, None, :]
        return pool.pixels[idx]
    if interpolation != "bilinear":
        raise ValueError(f"interpolation must be 'bilinear' or 'nearest', got {interpolation!r}")
    if pool.pixels_float is None:
        raise ValueError("bilinear rendering needs an ImagePool built with keep_float=True")
    px = torch.minimum(px.clamp_min(0), wmax)
    py = torch.minimum(py.clamp_min(0), hmax)
    x0 = px.floor()
    y0 = py.floor()
    fx = (px - x0)[:, None, :, None]  # (B, 1, S, 1)
    fy = (py - y0)[:, :, None, None]  # (B, S, 1, 1)
    x0l = x0.long()
    y0l = y0.long()
    x1l = torch.minimum(x0 + 1, wmax).long()
    y1l = torch.minimum(y0 + 1, hmax).long()
    row0 = (offset[:, None] + y0l * width)[:, :, None]
    row1 = (offset[:, None] + y1l * width)[:, :, None]
    src = pool.pixels_float
    top = torch.lerp(src[row0 + x0l[:, None, :]], src[row0 + x1l[:, None, :]], fx)
    bottom = torch.lerp(src[row1 + x0l[:, None, :]], src[row1 + x1l[:, None, :]], fx)
    return torch.lerp(top, bottom, fy)


def render(pool: ImagePool, state: ViewState, params: EnvParams) -> Tensor:
    """Render the views of a batch of states: crop, resize, flip, colour, blur.

    Args:
        pool: the images (on the state's device).
        state: the batch of states.
        params: the environment parameters (view size, interpolation, blur range).

    Returns:
        ``(B, S, S, 3)`` float32 views in ``[0, 1]``, channels last.
    """
    crops = render_crops(
        pool, state.image, state.box, params.view_size, state.aug[:, FLIP], params.interpolation
    )
    if crops.dtype == torch.uint8:
        crops = crops.float() / 255.0
    return apply_augmentation(crops, state.aug, params.max_blur_sigma)


def to_uint8(views: Tensor) -> Tensor:
    """Float views in ``[0, 1]`` to uint8, rounding to nearest."""
    return (views * 255.0).round_().clamp_(0, 255).to(torch.uint8)
