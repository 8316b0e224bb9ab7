"""Layouts of the embedded scenes: which objects, where, in which colours, on which background.

Every random draw of a scene happens here, vectorised over blocks of
``BLOCK`` scenes, each block from its own seed sequence (seed, split, block
index, version), with one stream per aspect (objects, placement, colours,
background, clutter, captions), so that changing one knob leaves the other
aspects' draws alone. Rendering (:mod:`vpt_env.data.scene_render`) is then a
deterministic function of the layout.
"""

from __future__ import annotations

import functools
import zlib
from typing import TYPE_CHECKING

import numpy as np

from vpt_env.data.objects import load_object_set, tight_boxes
from vpt_env.data.scene_render import BG_KINDS, BG_LEVELS, TEXTURES, GlyphPool, SceneLayout

if TYPE_CHECKING:
    from vpt_env.data.scenes import SceneConfig

__all__ = ["BLOCK", "SCENES_VERSION", "glyph_pool", "layout_block", "object_colours"]

#: Bumped whenever the same parameters would give different scenes (part of the cache key).
SCENES_VERSION = 1
BLOCK = 1024  # scenes per layout block (each block has its own seed sequence)
_TRIES = 32  # candidate positions per object
_GLYPH = 28  # glyph canvas side (the largest object set's image side)
# Grey level (0..1, after resizing) where an object set's pixels turn from transparent to opaque.
_ALPHA = {"digits": (0.3, 0.45), "fashion": (0.02, 0.10), "animals": (0.2, 0.5)}
_PHOTOS = 10  # embedded photos (vpt_env.data.embedded.PHOTO_NAMES)


@functools.lru_cache(maxsize=8)
def glyph_pool(sets: tuple[str, ...], split: str) -> tuple[GlyphPool, tuple[str, ...], tuple[str, ...]]:
    """Instances of ``sets`` in one split, their class names and a fingerprint per set (cached, read-only)."""
    images, boxes, labels, lo, hi, classes, prints = [], [], [], [], [], [], []
    for name in sets:
        x, y, names = load_object_set(name, split)
        canvas = np.zeros((len(x), _GLYPH, _GLYPH), np.uint8)
        canvas[:, : x.shape[1], : x.shape[2]] = x
        images.append(canvas)
        boxes.append(tight_boxes(x))
        labels.append(y + len(classes))
        lo.append(np.full(len(x), _ALPHA[name][0], np.float32))
        hi.append(np.full(len(x), _ALPHA[name][1], np.float32))
        classes.extend(names)
        prints.append(f"{name}:{len(x)}:{zlib.crc32(x.tobytes()) ^ zlib.crc32(y.tobytes())}")
    imgs = np.concatenate(images)
    peak = np.maximum(imgs.reshape(len(imgs), -1).max(axis=1).astype(np.float32) / 255.0, 1e-3)
    pool = GlyphPool(imgs, np.concatenate(boxes), np.concatenate(labels), np.concatenate(lo),
                     np.concatenate(hi), peak)
    for a in pool:
        a.setflags(write=False)
    return pool, tuple(classes), tuple(prints)


def object_colours(rng: np.random.Generator, shape: tuple[int, ...], mode: str, bg_luma: np.ndarray,
                    labels: np.ndarray | None = None, n_classes: int = 1) -> np.ndarray:
    """Colours for objects (or clutter) on backgrounds of mean luminance ``bg_luma`` (broadcast to ``shape``).

    Hue uniform (``"random"``), one hue per class (``"class"``) or none
    (``"grayscale"``); luminance 0.3-0.45 above or below the background's,
    on either side at random where both fit in [0.08, 0.92], so that objects
    stand out whether the background is dark or light, and the mean
    brightness of a box does not tell how much of it the object fills.
    """
    hue = rng.random(shape)
    sat = rng.uniform(0.6, 1.0, shape)
    step = rng.uniform(0.3, 0.45, shape)
    up = rng.random(shape) < 0.5
    bg = np.broadcast_to(bg_luma, shape)
    up = np.where(bg + step > 0.92, False, np.where(bg - step < 0.08, True, up))
    target = np.clip(np.where(up, bg + step, bg - step), 0.08, 0.92)
    if mode == "class":
        hue = (labels.clip(0) / n_classes) % 1.0  # type: ignore[union-attr]
        sat = np.ones(shape)
    rgb = np.clip(np.abs((hue[..., None] * 6 + np.array([0.0, 4.0, 2.0])) % 6 - 3) - 1, 0, 1)
    rgb = 1 - sat[..., None] * (1 - rgb)  # HSV with value 1
    luma = rgb @ np.array([0.299, 0.587, 0.114])
    # Bring every colour to its target luminance: darken bright ones, mix dark ones (blue) with white.
    dark = (target - luma) / (1 - luma)
    rgb = np.where((luma > target)[..., None], rgb * (target / luma)[..., None],
                   rgb + (1 - rgb) * dark[..., None])
    if mode == "grayscale":
        rgb = np.repeat(target[..., None], 3, axis=-1)
    return rgb.astype(np.float32)


def _overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection of pixel boxes over the smaller one's area (broadcast over leading dims)."""
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return iw * ih / np.minimum(area_a, area_b)


def layout_block(cfg: SceneConfig, glyphs: GlyphPool, n_classes: int, block: int
                  ) -> tuple[SceneLayout, np.ndarray, np.ndarray]:
    """Draw the layouts of the ``BLOCK`` scenes of one block; also return captioned flags and labels.

    Whole blocks are always drawn (and cut to ``n_images`` by the caller), so
    that a scene does not depend on how many scenes there are.
    """
    n = BLOCK
    split_code = ("train", "test").index(cfg.split)
    seq = np.random.SeedSequence([cfg.seed, split_code, block, SCENES_VERSION, 0x5CE7E5])
    # One stream per aspect, so that changing one knob leaves the others' draws alone.
    r_obj, r_place, r_col, r_bg, r_clutter, r_cap = (np.random.default_rng(s) for s in seq.spawn(6))
    size, (lo, hi), omax = cfg.size, cfg.objects, cfg.objects[1]
    count = r_obj.integers(lo, hi + 1, n)
    present = np.arange(omax)[None] < count[:, None]
    # Class uniform over the class space, then an instance uniform within the class.
    label = r_obj.integers(0, n_classes, (n, omax))
    order = np.argsort(glyphs.labels, kind="stable")
    start = np.searchsorted(glyphs.labels[order], np.arange(n_classes))
    per_class = np.bincount(glyphs.labels, minlength=n_classes)
    inst = order[start[label] + (r_obj.random((n, omax)) * per_class[label]).astype(np.int64)]
    # Longer side independent of the class; the shorter follows the instance's own aspect.
    longer = np.round(r_obj.uniform(*cfg.object_size, (n, omax)) * size).astype(np.int64)
    gw = glyphs.boxes[inst, 2] - glyphs.boxes[inst, 0]
    gh = glyphs.boxes[inst, 3] - glyphs.boxes[inst, 1]
    w = np.where(gw >= gh, longer, np.maximum(1, np.round(longer * gw / gh))).astype(np.int64)
    h = np.where(gh > gw, longer, np.maximum(1, np.round(longer * gh / gw))).astype(np.int64)
    # Place objects one slot at a time: the first of _TRIES candidates whose overlap with every
    # object placed before is within max_overlap, else the least overlapping candidate.
    box = np.zeros((n, omax, 4), np.int64)
    for k in range(omax):
        cx = (r_place.random((n, _TRIES)) * (size - w[:, k, None] + 1)).astype(np.int64)
        cy = (r_place.random((n, _TRIES)) * (size - h[:, k, None] + 1)).astype(np.int64)
        cand = np.stack((cx, cy, cx + w[:, k, None], cy + h[:, k, None]), axis=-1)  # (n, T, 4)
        worst = np.zeros((n, _TRIES))
        if k:
            ov = _overlap(cand[:, :, None], box[:, None, :k])  # (n, T, k)
            worst = np.where(present[:, None, :k], ov, 0).max(axis=2)
        ok = worst <= cfg.max_overlap + 1e-9
        pick = np.where(ok.any(axis=1), ok.argmax(axis=1), worst.argmin(axis=1))
        box[:, k] = cand[np.arange(n), pick]
    inst_all = inst
    inst = np.where(present, inst, -1)
    # Backgrounds: kind, source and crop, then luminance, contrast and tint.
    kinds = np.array([BG_KINDS.index(k) for k in cfg.background])
    bg_kind = kinds[r_bg.integers(0, len(kinds), n)]
    n_src = np.where(bg_kind == BG_KINDS.index("photo"), _PHOTOS, len(TEXTURES))
    bg_source = (r_bg.random(n) * n_src).astype(np.int64)
    bg_level = r_bg.integers(0, len(BG_LEVELS), n)
    bg_offset = r_bg.random((n, 2))
    bg_flip = r_bg.random(n) < 0.5
    bg_luma = r_bg.uniform(0.15, 0.85, n).astype(np.float32)
    bg_contrast = r_bg.uniform(0.4, 0.8, n).astype(np.float32)
    colour = object_colours(r_col, (n, omax), cfg.colour_mode, bg_luma[:, None],
                             glyphs.labels[inst_all], n_classes)
    # Texture tint: a pale colour of luminance 1 (multiplies the grey texture);
    # flat backgrounds: a muted colour at the background luminance.
    tint_hue = r_bg.random(n)
    tint_sat = r_bg.uniform(0.0, 0.5, n)
    base = np.clip(np.abs((tint_hue[:, None] * 6 + np.array([0.0, 4.0, 2.0])) % 6 - 3) - 1, 0, 1)
    tint = 1 - tint_sat[:, None] * (1 - base)
    tint = tint / (tint @ np.array([0.299, 0.587, 0.114]))[:, None]
    bg_tint = np.where((bg_kind == 0)[:, None], tint * bg_luma[:, None], tint).astype(np.float32)
    grey = np.full(n, cfg.colour_mode == "grayscale")
    # Clutter: strokes and blobs with object-like colours, anywhere.
    c = cfg.clutter
    clutter_kind = r_clutter.integers(0, 2, (n, c))
    geom = np.stack((
        r_clutter.random((n, c)) * size,
        r_clutter.random((n, c)) * size,
        np.where(clutter_kind == 0, r_clutter.uniform(0.1, 0.35, (n, c)),
                 r_clutter.uniform(0.03, 0.1, (n, c))) * size,
        r_clutter.random((n, c)) * np.pi,
        np.where(clutter_kind == 0, r_clutter.uniform(1.0, 3.0, (n, c)),
                 r_clutter.uniform(0.03, 0.1, (n, c)) * size),
    ), axis=-1).astype(np.float32)
    clutter_colour = object_colours(r_clutter, (n, c), "grayscale" if cfg.colour_mode == "grayscale"
                                     else "random", bg_luma[:, None])
    captioned = r_cap.random(n) < cfg.caption_fraction
    lay = SceneLayout(count, inst, box, colour, bg_kind, bg_source, bg_level, bg_offset, bg_flip, bg_luma,
                      bg_contrast, bg_tint, grey, clutter_kind, geom, clutter_colour)
    return lay, captioned, np.where(present, label, -1)
