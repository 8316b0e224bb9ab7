"""Pixels of the embedded scenes: background bank, object sprites and compositing.

Everything here is a deterministic function of a :class:`SceneLayout` (drawn
by :mod:`vpt_env.data.scenes`): no random draws happen while rendering, so a
scene renders to the same bytes alone or in any batch.

Convention: pixel boxes are integer ``(x0, y0, x1, y1)`` with exclusive ends;
pixel ``k`` covers ``[k, k + 1)``. Colours are float RGB in ``[0, 1]``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
from PIL import Image

from vpt_env.data.photos import PhotoSource

__all__ = ["BG_FLAT", "BG_KINDS", "BG_LEVELS", "GlyphPool", "SceneLayout", "luminance", "render_scenes"]

#: Background kinds, in the order of their codes in :attr:`SceneLayout.bg_kind`.
BG_KINDS: tuple[str, ...] = ("flat", "texture", "photo")
BG_FLAT = 0
#: Background crops span ``1 / f`` of a source's shorter side, ``f`` one of these.
BG_LEVELS: tuple[float, ...] = (1.0, 1.5, 2.25, 3.0)
#: scikit-image textures used as texture backgrounds.
TEXTURES: tuple[str, ...] = ("brick", "grass", "gravel")
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Rec. 601 luma of ``(..., 3)`` RGB in [0, 1]."""
    return rgb @ _LUMA


class GlyphPool(NamedTuple):
    """Object instances of one split, padded into a common grey canvas.

    Attributes:
        images: ``(N, G, G)`` uint8, each instance at the top left, zeros elsewhere.
        boxes: ``(N, 4)`` int64 tight pixel boxes of the object in its canvas.
        labels: ``(N,)`` int64 class index in the scene class space.
        alpha_lo: ``(N,)`` float32: grey level (0..1) below which a pixel is transparent.
        alpha_hi: ``(N,)`` float32: grey level above which it is opaque.
        peak: ``(N,)`` float32 brightest grey level of each instance (0..1).
    """

    images: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    alpha_lo: np.ndarray
    alpha_hi: np.ndarray
    peak: np.ndarray


class SceneLayout(NamedTuple):
    """Everything that decides a batch of scenes' pixels (``B`` scenes, ``O`` object slots, ``C`` clutter).

    Object slots past an image's count have ``instance == -1``. Object pixel
    boxes are integer ``(x0, y0, x1, y1)``, exclusive ends, inside the scene.
    """

    count: np.ndarray  # (B,) objects in each scene
    instance: np.ndarray  # (B, O) index into the GlyphPool, -1 for none
    box: np.ndarray  # (B, O, 4) int64 pixel boxes
    colour: np.ndarray  # (B, O, 3) float32 object colours
    bg_kind: np.ndarray  # (B,) code into BG_KINDS
    bg_source: np.ndarray  # (B,) index of the texture or photo
    bg_level: np.ndarray  # (B,) index into BG_LEVELS
    bg_offset: np.ndarray  # (B, 2) float crop position (x, y) in [0, 1)
    bg_flip: np.ndarray  # (B,) bool horizontal flip
    bg_luma: np.ndarray  # (B,) mean luminance the background is set to
    bg_contrast: np.ndarray  # (B,) factor on the background's deviations from its mean
    bg_tint: np.ndarray  # (B, 3) multiplier (textures) or colour (flat backgrounds)
    grey: np.ndarray  # (B,) bool: render the whole scene grey
    clutter_kind: np.ndarray  # (B, C) 0 stroke, 1 blob, -1 none
    clutter_geom: np.ndarray  # (B, C, 5) float: x, y, length or semi-axis a, angle, width or semi-axis b
    clutter_colour: np.ndarray  # (B, C, 3)

    def take(self, index: np.ndarray) -> SceneLayout:
        """The layouts of the scenes at ``index``."""
        return SceneLayout(*(a[index] for a in self))


@functools.lru_cache(maxsize=4)
def background_bank(size: int) -> dict[str, list[list[np.ndarray]]]:
    """Backgrounds resized for ``size``-pixel scenes: ``bank[kind][source][level]``, uint8 ``(H, W, 3)``.

    Level ``j`` is the source resized so that its shorter side is
    ``ceil(size * BG_LEVELS[j])``: a ``size`` crop of it spans ``1 / f`` of the source.
    """
    import skimage.data

    photos = PhotoSource()
    sources = {
        "texture": [np.asarray(getattr(skimage.data, n)()) for n in TEXTURES],
        "photo": [np.asarray(photos.image(i)) for i in range(len(photos))],
    }
    bank: dict[str, list[list[np.ndarray]]] = {}
    for kind, images in sources.items():
        bank[kind] = []
        for im in images:
            pil = Image.fromarray(im).convert("RGB")
            levels = []
            for f in BG_LEVELS:
                short = int(np.ceil(size * f))
                scale = short / min(pil.size)
                wh = (max(size, round(pil.width * scale)), max(size, round(pil.height * scale)))
                levels.append(np.asarray(pil.resize(wh, Image.Resampling.LANCZOS)))
            bank[kind].append(levels)
    return bank


def _backgrounds(lay: SceneLayout, size: int) -> np.ndarray:
    """Backgrounds as float32 ``(B, size, size, 3)`` in 0..255, plus 0.5 (so that truncation rounds)."""
    b = len(lay.count)
    crops = np.zeros((b, size, size, 3), np.uint8)
    bank = background_bank(size)
    for i in np.nonzero(lay.bg_kind != BG_FLAT)[0].tolist():
        src = bank[BG_KINDS[int(lay.bg_kind[i])]][int(lay.bg_source[i])][int(lay.bg_level[i])]
        h, w = src.shape[:2]
        x0 = int(lay.bg_offset[i, 0] * (w - size + 1))
        y0 = int(lay.bg_offset[i, 1] * (h - size + 1))
        crop = src[y0 : y0 + size, x0 : x0 + size]
        crops[i] = crop[:, ::-1] if lay.bg_flip[i] else crop
    # One affine map per scene and channel: scale the deviations from the mean
    # luminance (estimated on every 4th pixel) by bg_contrast, move the mean to
    # bg_luma, then (grey textures) multiply by the tint, whose luminance is 1.
    # Flat backgrounds are the tint itself.
    mean = crops[:, ::4, ::4].reshape(b, -1, 3).mean(axis=1) @ _LUMA
    texture = lay.bg_kind == BG_KINDS.index("texture")
    tint = np.where(texture[:, None], lay.bg_tint, 1.0)
    scale = tint * lay.bg_contrast[:, None]
    shift = tint * (255.0 * lay.bg_luma - lay.bg_contrast * mean)[:, None] + 0.5
    flat = lay.bg_kind == BG_FLAT
    scale[flat] = 0.0
    shift[flat] = lay.bg_tint[flat] * 255.0 + 0.5
    out = crops.astype(np.float32)
    out *= scale.astype(np.float32)[:, None, None]
    out += shift.astype(np.float32)[:, None, None]
    return out


def _paint(region: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> None:
    region += alpha[..., None] * (colour - region)


def _clutter(out: np.ndarray, lay: SceneLayout) -> None:
    size = out.shape[1]
    for i, c in zip(*np.nonzero(lay.clutter_kind >= 0), strict=True):
        x, y, a, angle, b = (float(v) for v in lay.clutter_geom[i, c])
        ca, sa = np.cos(angle), np.sin(angle)
        if lay.clutter_kind[i, c] == 0:  # stroke: a segment of length a and width b centred at (x, y)
            dx, dy = ca * a / 2, sa * a / 2
            reach = b / 2 + 1
            xs = (min(x - dx, x + dx) - reach, max(x - dx, x + dx) + reach)
            ys = (min(y - dy, y + dy) - reach, max(y - dy, y + dy) + reach)
        else:  # blob: an ellipse with semi-axes a, b
            reach = max(a, b) + 1
            xs, ys = (x - reach, x + reach), (y - reach, y + reach)
        x0, x1 = max(0, int(xs[0])), min(size, int(np.ceil(xs[1])))
        y0, y1 = max(0, int(ys[0])), min(size, int(np.ceil(ys[1])))
        if x1 <= x0 or y1 <= y0:
            continue
        px = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - x
        py = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - y
        u, v = px * ca + py * sa, -px * sa + py * ca  # coordinates along / across the shape
        if lay.clutter_kind[i, c] == 0:
            d = np.hypot(np.maximum(np.abs(u) - a / 2, 0), v)
            alpha = np.clip(b / 2 - d + 0.5, 0, 1)
        else:
            r = np.sqrt((u / a) ** 2 + (v / b) ** 2)
            alpha = np.clip((1 - r) * min(a, b) + 0.5, 0, 1)
        _paint(out[i, y0:y1, x0:x1], alpha, lay.clutter_colour[i, c] * 255.0 + 0.5)


def _resample_weights(lo: np.ndarray, hi: np.ndarray, n_out: np.ndarray, m: int, g: int) -> np.ndarray:
    """``(n, m, g)`` cubic resampling weights from source span ``[lo, hi)`` onto ``n_out`` pixels.

    Output pixel ``k`` is centred on source coordinate ``lo + (k + 0.5) * r``
    with ``r = (hi - lo) / n_out``; the kernel (Keys, a = -0.5) is widened by
    ``max(r, 1)``, so that shrinking averages instead of aliasing (as PIL's
    BICUBIC resize). Rows ``k >= n_out`` are junk and must not be used.
    """
    r = ((hi - lo) / n_out).astype(np.float32)
    k = np.arange(m, dtype=np.float32) + 0.5
    centre = lo[:, None] + k[None] * r[:, None]  # (n, m)
    width = np.maximum(r, 1.0)[:, None, None]
    x = np.abs((np.arange(g, dtype=np.float32) + 0.5)[None, None] - centre[..., None]) / width
    w = np.where(x < 1, (1.5 * x - 2.5) * x * x + 1, np.where(x < 2, ((-0.5 * x + 2.5) * x - 4) * x + 2, 0))
    total = w.sum(axis=2, keepdims=True)
    return (w / np.where(total == 0, 1, total)).astype(np.float32)


def _sprites(glyphs: GlyphPool, inst: np.ndarray, wh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Alpha and shading (0..255) of objects resized to ``wh``, top-left in ``(n, M, M)`` canvases."""
    m = int(wh.max())
    g = glyphs.images.shape[1]
    box = glyphs.boxes[inst].astype(np.float32)
    # Separable resize of each object's tight box: rows, then columns, as two batched matmuls.
    wy = _resample_weights(box[:, 1], box[:, 3], wh[:, 1], m, g)
    wx = _resample_weights(box[:, 0], box[:, 2], wh[:, 0], m, g)
    src = glyphs.images[inst].astype(np.float32)
    src *= 1.0 / 255.0
    grey = np.matmul(np.matmul(wy, src), wx.transpose(0, 2, 1))
    np.clip(grey, 0, 1, out=grey)
    lo = glyphs.alpha_lo[inst][:, None, None]
    hi = glyphs.alpha_hi[inst][:, None, None]
    peak = glyphs.peak[inst][:, None, None]
    # Keep the object's inner detail (folds, prints) as shading between 0.5 and 1.
    shade = grey / peak
    np.clip(shade, 0, 1, out=shade)
    shade *= 0.5 * 255.0
    shade += 0.5 * 255.0
    grey -= lo
    grey /= hi - lo
    alpha = np.clip(grey, 0, 1, out=grey)
    return alpha, shade


def render_scenes(lay: SceneLayout, glyphs: GlyphPool, size: int) -> np.ndarray:
    """Render a batch of scenes.

    Args:
        lay: the scenes' layout.
        glyphs: the object instances ``lay.instance`` indexes.
        size: scene side in pixels.

    Returns:
        ``(B, size, size, 3)`` uint8 RGB scenes.
    """
    # Work in 0..255 plus 0.5: painting is an affine blend, so the offset
    # survives it and the final truncation to uint8 rounds.
    out = _backgrounds(lay, size)
    _clutter(out, lay)
    rows, slots = np.nonzero(lay.instance >= 0)  # row-major: scene by scene, in drawing order
    if len(rows):
        box = lay.box[rows, slots]
        wh = box[:, 2:] - box[:, :2]
        alpha, shade = _sprites(glyphs, lay.instance[rows, slots], wh)
        colour = lay.colour[rows, slots]
        for j, (i, (x0, y0, x1, y1)) in enumerate(zip(rows.tolist(), box.tolist(), strict=True)):
            w, h = x1 - x0, y1 - y0
            region = out[i, y0:y1, x0:x1]
            ink = shade[j, :h, :w, None] * colour[j]
            ink += 0.5
            ink -= region
            ink *= alpha[j, :h, :w, None]
            region += ink
    for i in np.nonzero(lay.grey)[0].tolist():
        out[i] = (out[i] @ _LUMA)[..., None]
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)
