"""Reading images: any image to RGB uint8 ``(H, W, 3)``, resizing to the pool's bounds, the read error.

Whatever its mode:

* ``L``, ``1``, ``P``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``: PIL's conversion to RGB;
* ``LA``, ``RGBA``, ``PA``, ``P`` with transparency: composited onto white;
* ``I;16`` and other 16-bit modes: scaled by ``255 / 65535``;
* ``I`` (32-bit) and ``F`` (float): scaled from their own min..max to 0..255.

EXIF orientation is applied.

Example:
    >>> import numpy as np
    >>> to_rgb_uint8(np.array([[0.0, 1.0]])).tolist()
    [[[0, 0, 0], [255, 255, 255]]]
    >>> fit_size(np.zeros((10, 40, 3), np.uint8), min_side=20, max_side=1024).shape
    (20, 80, 3)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

__all__ = ["IMAGE_EXTENSIONS", "ImageReadError", "fit_size", "to_rgb_uint8"]

#: File extensions a folder source reads (case-insensitive).
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


class ImageReadError(ValueError):
    """An image could not be read or converted (raised in strict mode)."""


def _alpha_on_white(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _scale_to_uint8(arr: np.ndarray) -> np.ndarray:
    arr = arr.astype(np.float64)
    lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
    if hi <= lo:
        return np.zeros(arr.shape, np.uint8)
    return np.round((arr - lo) / (hi - lo) * 255).astype(np.uint8)


def _pil_to_array(img: Image.Image) -> np.ndarray:
    img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode.startswith("I;16") or mode == "I;16B":
        arr = np.asarray(img).astype(np.float64)
        return np.round(arr * (255.0 / 65535.0)).astype(np.uint8)
    if mode in ("I", "F"):
        return _scale_to_uint8(np.asarray(img))
    if mode in ("LA", "RGBA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in img.info):
        return np.asarray(_alpha_on_white(img))
    return np.asarray(img.convert("RGB"))


def _float_to_uint8(arr: np.ndarray) -> np.ndarray:
    """A float image in ``[0, 1]`` as uint8; anything else is refused, not clipped (a ``[0, 255]``
    image would turn white, NaN black)."""
    nan = int(np.isnan(arr).sum())
    if nan:
        raise ValueError(f"a float image must hold values in [0, 1], got {nan} NaN of {arr.size}")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0.0 or hi > 1.0:
        hint = " (a [0, 255] image? scale it by 1/255)" if hi > 2.0 else ""
        raise ValueError(f"a float image must hold values in [0, 1], got [{lo:g}, {hi:g}]{hint}")
    return np.round(arr * 255).astype(np.uint8)


def to_rgb_uint8(image: Any) -> np.ndarray:
    """Convert a PIL image, numpy array or torch tensor to RGB uint8 ``(H, W, 3)``.

    Arrays may be ``(H, W)``, ``(H, W, 1|3|4)`` or, for torch tensors,
    ``(1|3|4, H, W)``; dtypes uint8, uint16 (scaled by ``255 / 65535``), bool,
    or float in ``[0, 1]``. Four channels are RGBA, composited onto white.

    Raises:
        TypeError: for an unsupported type or dtype.
        ValueError: for an unsupported shape, an empty image, or a float image with values outside
            ``[0, 1]`` or NaN (never clipped: the loaders skip and count it, or raise when strict).
    """
    if isinstance(image, Image.Image):
        arr = _pil_to_array(image)
        if arr.ndim == 2:  # 16-bit, 32-bit and float modes come back grey
            arr = np.repeat(arr[:, :, None], 3, axis=2)
    else:
        if isinstance(image, torch.Tensor):
            t = image.detach().cpu()
            if t.ndim == 3 and t.shape[0] in (1, 3, 4) and t.shape[-1] not in (1, 3, 4):
                t = t.permute(1, 2, 0)
            image = t.numpy()
        if not isinstance(image, np.ndarray):
            raise TypeError(
                f"an image must be a PIL image, numpy array or torch tensor, got {type(image).__name__}"
            )
        arr = image
        if arr.dtype == np.bool_:
            arr = arr.astype(np.uint8) * 255
        elif arr.dtype == np.uint16:
            arr = np.round(arr.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
        elif np.issubdtype(arr.dtype, np.floating):
            arr = _float_to_uint8(arr)
        elif arr.dtype != np.uint8:
            raise TypeError(
                f"image arrays must be uint8, uint16, bool or float in [0, 1], got dtype {arr.dtype}"
            )
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        elif arr.ndim == 3 and arr.shape[2] == 4:
            arr = np.asarray(_alpha_on_white(Image.fromarray(arr, "RGBA")))
        elif not (arr.ndim == 3 and arr.shape[2] == 3):
            raise ValueError(
                f"image arrays must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {arr.shape}"
            )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"image is empty: shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.uint8)


def fit_size(arr: np.ndarray, min_side: int, max_side: int) -> np.ndarray:
    """Resize so the shorter side is at least ``min_side`` (bicubic) and the longer at most ``max_side``
    (Lanczos); ``min_side`` wins where the two conflict. Unchanged when both already hold."""
    h, w = arr.shape[:2]
    scale = 1.0
    if max(h, w) > max_side:
        scale = max_side / max(h, w)
    if min(h, w) * scale < min_side:
        scale = min_side / min(h, w)
    if scale == 1.0:
        return arr
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC
    return np.asarray(Image.fromarray(arr).resize(size, resample))
