"""Batched rendering: crop + resize every view of a batch in one gather, then augment.

Convention:
    Boxes are normalised ``(x0, y0, x1, y1)`` (see :mod:`vpt_env.core.boxes`).
    Output pixel ``(i, j)`` of a view of side ``S`` samples the image at the
    continuous point ``x = x0 + (j + 0.5) / S * (x1 - x0)`` (mirrored,
    ``x = x1 - ...``, when the view is flipped), ``y = y0 + (i + 0.5) / S * (y1 - y0)``,
    in the frame where pixel ``k`` spans ``[k, k + 1)`` and its value sits at
    ``k + 0.5``, the same convention as PIL's ``Image.resize(box=...)``.
    Samples outside the image take the nearest edge pixel.

Bilinear rendering is trilinear mipmapping with two-sample anisotropic
filtering: each view blends bilinear samples of the two pyramid levels
around its smaller reduction, and averages two such samples spread along its
longer axis, so downscaling is antialiased on both axes. Nearest reads uint8
from one level, without antialiasing.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vpt_env.core.augment import FLIP, apply_augmentation
from vpt_env.core.state import EnvParams, ViewState
from vpt_env.data.pool import ImagePool

__all__ = ["render", "render_crops"]


#: Offset added to ``log2`` of the reduction before choosing pyramid levels,
#: and the spread of the two samples along an elongated view's long axis (in
#: output pixels, times ``1 - r_short / r_long``). The pyramid's box prefilter
#: differs from PIL's triangle filter; these values minimised the mean absolute
#: error against PIL's BILINEAR resize on the embedded photos over reductions
#: of 0.2-10x and pixel aspects of 1/3-3 (see tests/test_render.py).
LEVEL_SHIFT = -0.15
ANISO_SPREAD = 0.5


def _reductions(pool: ImagePool, image: Tensor, box: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Crop pixels per output pixel along x and y: ``(B,)`` each."""
    hw = pool.image_hw[image]
    return (box[:, 2] - box[:, 0]) * hw[:, 1] / size, (box[:, 3] - box[:, 1]) * hw[:, 0] / size


def _level(pool: ImagePool, image: Tensor, red_x: Tensor, red_y: Tensor) -> Tensor:
    """Fractional pyramid level of every view (0 = full resolution).

    Chosen from the smaller of the two reductions, so no axis is blurred more
    than PIL would; the longer axis is antialiased by two samples instead
    (:func:`render_crops`).
    """
    lf = torch.log2(torch.minimum(red_x, red_y).clamp_min(1e-12)) + LEVEL_SHIFT
    return lf.clamp(min=0.0).minimum((pool.num_levels[image] - 1).to(lf.dtype))


def _coords(
    pool: ImagePool, image: Tensor, box: Tensor, flip: Tensor, size: int, level: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Sample coordinates of every output column/row in the pixels of ``level``.

    Returns ``px (B, S)``, ``py (B, S)``, the level's ``(B, 2)`` sizes and ``(B,)`` offsets.
    """
    hw = pool.image_hw[image]  # (B, 2) full-res H, W
    lhw = pool.level_hw[image, level]  # (B, 2) int64
    offset = pool.level_offset[image, level]
    t = (torch.arange(size, device=box.device, dtype=box.dtype) + 0.5) / size  # (S,)
    w = (box[:, 2] - box[:, 0])[:, None]
    xs = torch.where(flip[:, None] > 0.5, box[:, 2:3] - t * w, box[:, 0:1] + t * w)
    ys = box[:, 1:2] + t * (box[:, 3] - box[:, 1])[:, None]
    # Level L pixel k averages full-resolution pixels [k 2^L, (k + 1) 2^L) (odd
    # sizes are padded by replication), so coordinates scale by W / 2^L, not by
    # the level's own width.
    inv = torch.exp2(-level.to(xs.dtype))[:, None]
    px = xs * (hw[:, 1:2] * inv) - 0.5
    py = ys * (hw[:, 0:1] * inv) - 0.5
    return px, py, lhw, offset


def _bilinear(pool: ImagePool, image: Tensor, box: Tensor, flip: Tensor, size: int, level: Tensor) -> Tensor:
    """Bilinear samples of one pyramid level per view: ``(B, S, S, 3)`` float."""
    px, py, lhw, offset = _coords(pool, image, box, flip, size, level)
    px = torch.minimum(px.clamp_min(0), (lhw[:, 1:2] - 1).to(px.dtype))
    py = torch.minimum(py.clamp_min(0), (lhw[:, 0:1] - 1).to(py.dtype))
    x0 = px.floor()
    y0 = py.floor()
    fx = (px - x0)[:, None, :, None]  # (B, 1, S, 1)
    fy = (py - y0)[:, :, None, None]  # (B, S, 1, 1)
    y1 = torch.minimum(y0 + 1, (lhw[:, 0:1] - 1).to(py.dtype))
    width = lhw[:, 1:2]
    col = x0.long()[:, None, :]
    row0 = (offset[:, None] + y0.long() * width)[:, :, None]
    row1 = (offset[:, None] + y1.long() * width)[:, :, None]
    # One gather fetches a pixel and its right neighbour (pixel_pairs rows are
    # overlapping 6-float windows). At the right edge px is clamped to W - 1,
    # so fx is 0 and the neighbour, from the next row, gets no weight.
    pairs = pool.pixel_pairs
    top = pairs[row0 + col]
    bottom = pairs[row1 + col]
    top = torch.lerp(top[..., :3], top[..., 3:], fx)
    bottom = torch.lerp(bottom[..., :3], bottom[..., 3:], fx)
    return torch.lerp(top, bottom, fy)


def render_crops(
    pool: ImagePool,
    image: Tensor,
    box: Tensor,
    size: int,
    flip: Tensor | None = None,
    interpolation: str = "bilinear",
) -> Tensor:
    """Crop and resize a batch of boxes, without colour augmentation.

    Bilinear rendering is trilinear in the pyramid (mipmapping): it blends
    bilinear samples of the two levels around the view's fractional level
    (:func:`_level`) and averages two of them spread along the longer axis,
    which antialiases downscaling. Nearest takes the nearest pixel of the
    level below the fractional one.

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
    if interpolation not in ("bilinear", "nearest"):
        raise ValueError(f"interpolation must be 'bilinear' or 'nearest', got {interpolation!r}")
    if flip is None:
        flip = torch.zeros(image.shape[0], device=box.device)
    red_x, red_y = _reductions(pool, image, box, size)
    lf = _level(pool, image, red_x, red_y)
    l0 = lf.floor().long()
    if interpolation == "nearest":
        px, py, lhw, offset = _coords(pool, image, box, flip, size, l0)
        xi = torch.minimum(torch.floor(px + 0.5).clamp_min(0), (lhw[:, 1:2] - 1).to(px.dtype)).long()
        yi = torch.minimum(torch.floor(py + 0.5).clamp_min(0), (lhw[:, 0:1] - 1).to(py.dtype)).long()
        idx = (offset[:, None] + yi * lhw[:, 1:2])[:, :, None] + xi[:, None, :]
        return pool.pixels[idx]
    if pool.pixel_pairs is None:
        raise ValueError("bilinear rendering needs an ImagePool built with keep_float=True")
    frac = lf - l0
    l1 = torch.minimum(l0 + 1, pool.num_levels[image] - 1)
    r_long = torch.maximum(red_x, red_y)
    spread = ANISO_SPREAD * (1 - torch.minimum(red_x, red_y) / r_long.clamp_min(1e-12))
    # Every sample set (box +- the anisotropic shift, at levels l0 and l1) goes
    # through one batched gather. On the CPU host checks drop the sets no view
    # needs (a second level when every view sits exactly on one, the second
    # shift when every reduction is square); on accelerators all four run,
    # with no sync.
    cpu = box.device.type == "cpu"
    two_levels = not cpu or bool((frac > 0).any())
    two_shifts = not cpu or bool((spread > 0).any())
    along_x = red_x > red_y
    dx = torch.where(along_x, spread * (box[:, 2] - box[:, 0]) / size, torch.zeros_like(spread))
    dy = torch.where(along_x, torch.zeros_like(spread), spread * (box[:, 3] - box[:, 1]) / size)
    shift = torch.stack((dx, dy, dx, dy), dim=-1)
    boxes = [box + shift, box - shift] if two_shifts else [box]
    levels = [l0, l1] if two_levels else [l0]
    k = len(boxes) * len(levels)
    samples = _bilinear(
        pool,
        image.repeat(k),
        torch.cat(boxes * len(levels)),
        flip.repeat(k),
        size,
        torch.cat([lv for lv in levels for _ in boxes]),
    ).view(len(levels), len(boxes), *box.shape[:1], size, size, 3)
    out = samples.mean(dim=1)  # average the shifted samples
    if two_levels:
        out = torch.lerp(out[0], out[1], frac[:, None, None, None])
    else:
        out = out[0]
    return out


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
    if not params.has_pixel_augmentation:
        return crops
    return apply_augmentation(crops, state.aug, params.max_blur_sigma)


def to_uint8(views: Tensor) -> Tensor:
    """Float views in ``[0, 1]`` to uint8, rounding to nearest."""
    return (views * 255.0).round_().clamp_(0, 255).to(torch.uint8)
