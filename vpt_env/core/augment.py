"""Augmentation parameters: layout, ranges, sampling, and batched application.

Every view carries an augmentation vector ``aug`` of :data:`AUG_DIM` floats in
the fixed order of :data:`AUG_NAMES`:

============  ===================  ==========  =========================================
entry         default range        identity    meaning
============  ===================  ==========  =========================================
brightness    ``[0.6, 1.4]``        1.0        multiply RGB by the factor
contrast      ``[0.6, 1.4]``        1.0        blend with the view's mean grey level
saturation    ``[0.6, 1.4]``        1.0        blend with the view's grey image
hue           ``[-0.1, 0.1]``       0.0        rotate chroma (YIQ I/Q plane) by ``hue`` turns
grayscale     ``{0, 1}``            0          1 replaces the view by its grey image
flip          ``{0, 1}``            0          1 mirrors the view left-right
blur          ``[0.0, 2.0]``        0.0        Gaussian blur sigma, in output pixels
============  ===================  ==========  =========================================

Ranges are set by :class:`~vpt_env.core.state.EnvParams`. Parameters are
sampled only by our code from an explicit ``torch.Generator`` and stored in
the state, so any view can be replayed exactly from ``(image, box, aug)``.

The colour operations are applied in the order brightness, contrast,
saturation, hue, grayscale, composed exactly (each is affine in RGB, so the
chain is one per-view 3x3 matrix plus an offset) and clipped to ``[0, 1]`` once
at the end, not after every step as torchvision does; for factors in the
default ranges the difference is confined to pixels that saturate. The grey
level is ITU-R 601 luma ``0.299 R + 0.587 G + 0.114 B`` (Kornia's and
torchvision's). Flip is applied by the renderer (it mirrors the sampling
grid, which costs nothing) and blur last, with reflect padding.
"""

from __future__ import annotations

import functools
import math

import torch
from kornia.filters import filter2d_separable, gaussian_blur2d, get_gaussian_kernel1d
from torch import Tensor

__all__ = [
    "AUG_DIM",
    "AUG_NAMES",
    "BINARY_AUGS",
    "action_to_aug",
    "apply_augmentation",
    "aug_to_action",
    "colour_transform",
    "identity_aug",
]

#: The augmentation entries, in the order of a view's ``aug`` vector.
AUG_NAMES: tuple[str, ...] = (
    "brightness",
    "contrast",
    "saturation",
    "hue",
    "grayscale",
    "flip",
    "blur",
)
#: Length of the ``aug`` vector.
AUG_DIM = len(AUG_NAMES)
#: The augmentations that are on or off (their entry is 0 or 1), the others continuous.
BINARY_AUGS: frozenset[str] = frozenset({"grayscale", "flip"})
IDENTITY: tuple[float, ...] = (1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0)
BRIGHTNESS, CONTRAST, SATURATION, HUE, GRAYSCALE, FLIP, BLUR = range(AUG_DIM)

_LUMA = (0.299, 0.587, 0.114)
_EYE = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
# RGB -> YIQ (FCC NTSC); hue rotation turns the (I, Q) plane and keeps luma.
_YIQ = (
    (0.299, 0.587, 0.114),
    (0.5959, -0.2746, -0.3213),
    (0.2115, -0.5227, 0.3112),
)


@functools.lru_cache(maxsize=64)
def _constant(values: tuple, device: torch.device, dtype: torch.dtype) -> Tensor:
    """A constant tensor made once per device: the step path copies nothing from the host."""
    return torch.tensor(values, dtype=dtype, device=device)


def identity_aug(n: int, device: torch.device | str = "cpu") -> Tensor:
    """``(n, AUG_DIM)`` augmentation vectors that leave views unchanged."""
    return _constant(IDENTITY, torch.device(device), torch.float32).expand(n, AUG_DIM).clone()


def _ranges(aug_ranges: dict[str, tuple[float, float]], device: torch.device) -> tuple[Tensor, Tensor]:
    lo = tuple(float(aug_ranges[n][0]) for n in AUG_NAMES)
    hi = tuple(float(aug_ranges[n][1]) for n in AUG_NAMES)
    return _constant(lo, device, torch.float32), _constant(hi, device, torch.float32)


def _binary_mask(device: torch.device) -> Tensor:
    return _constant(tuple(n in BINARY_AUGS for n in AUG_NAMES), device, torch.bool)


def action_to_aug(
    action: Tensor,
    current: Tensor,
    enabled: Tensor,
    aug_ranges: dict[str, tuple[float, float]],
) -> Tensor:
    """Map action entries in ``[-1, 1]`` affinely onto augmentation ranges.

    Continuous entries map ``-1 -> low`` and ``1 -> high``; binary entries
    (grayscale, flip) are 1 where the action is positive. Entries that are not
    enabled keep their ``current`` value.

    Args:
        action: ``(B, AUG_DIM)`` values in ``[-1, 1]`` (disabled entries ignored).
        current: ``(B, AUG_DIM)`` the current augmentation vectors.
        enabled: ``(AUG_DIM,)`` bool, which entries the action controls.
        aug_ranges: ``name -> (low, high)`` for every name in :data:`AUG_NAMES`.

    Returns:
        ``(B, AUG_DIM)`` the next augmentation vectors.
    """
    lo, hi = _ranges(aug_ranges, action.device)
    cont = lo + (action + 1) * 0.5 * (hi - lo)
    binary = (action > 0).to(action.dtype)
    value = torch.where(_binary_mask(action.device), binary, cont)
    return torch.where(enabled, value, current)


def aug_to_action(aug: Tensor, aug_ranges: dict[str, tuple[float, float]]) -> Tensor:
    """Inverse of :func:`action_to_aug`: action values that reproduce ``aug``.

    Binary entries map to ``+1`` (on) or ``-1`` (off). Degenerate ranges
    (``low == high``) map to 0.

    Shape:
        aug: ``(B, AUG_DIM)``; returns ``(B, AUG_DIM)`` in ``[-1, 1]``.
    """
    lo, hi = _ranges(aug_ranges, aug.device)
    span = hi - lo
    cont = torch.where(span > 0, 2 * (aug - lo) / span.clamp_min(1e-12) - 1, torch.zeros_like(aug))
    binary = torch.where(aug > 0.5, 1.0, -1.0)
    return torch.where(_binary_mask(aug.device), binary, cont).clamp(-1, 1)


@functools.lru_cache(maxsize=16)
def _yiq_matrices(device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    yiq = torch.tensor(_YIQ, dtype=torch.float64)
    return yiq.to(device, dtype), torch.linalg.inv(yiq).to(device, dtype)


def colour_transform(aug: Tensor) -> Tensor:
    """Per-view 3x3 matrix of saturation, then hue, then grayscale.

    Brightness and contrast are scalars handled in :func:`apply_augmentation`.

    Shape:
        aug: ``(B, AUG_DIM)``; returns ``(B, 3, 3)`` acting on column RGB vectors.
    """
    dev, dt = aug.device, aug.dtype
    b = aug.shape[0]
    eye = _constant(_EYE, dev, dt)  # broadcast over the batch, as (B, 3, 3) would be
    luma = _constant(_LUMA, dev, dt)
    grey = luma.expand(3, 3)  # every output channel = luma . rgb
    s = aug[:, SATURATION].view(b, 1, 1)
    m = s * eye + (1 - s) * grey
    theta = aug[:, HUE] * (2 * math.pi)
    cos, sin = torch.cos(theta), torch.sin(theta)
    one, zero = torch.ones_like(cos), torch.zeros_like(cos)
    rot = torch.stack((one, zero, zero, zero, cos, -sin, zero, sin, cos), -1).view(b, 3, 3)
    yiq, yiq_inv = _yiq_matrices(dev, dt)
    m = yiq_inv @ rot @ yiq @ m
    g = aug[:, GRAYSCALE].view(b, 1, 1)
    m = (g * grey + (1 - g) * eye) @ m
    return m


def apply_augmentation(views: Tensor, aug: Tensor, max_blur_sigma: float = 2.0) -> Tensor:
    """Apply colour augmentations and blur to a batch of float views.

    Flip is not applied here: the renderer mirrors the sampling grid.

    Args:
        views: ``(B, 3, S, S)`` float in ``[0, 1]``.
        aug: ``(B, AUG_DIM)`` augmentation vectors.
        max_blur_sigma: the largest blur sigma the vectors may hold; it fixes
            the kernel size (``2 * ceil(3 * max_blur_sigma) + 1``) without
            reading the tensor back to the host. 0 skips the blur entirely.

    Returns:
        ``(B, 3, S, S)`` float in ``[0, 1]`` (a new tensor).
    """
    b, c, h, w = views.shape
    flat = views.reshape(b, c, h * w)
    luma = _constant(_LUMA, views.device, views.dtype)
    mean_grey = (luma @ flat).mean(dim=1)  # (B,)
    bright, contrast = aug[:, BRIGHTNESS], aug[:, CONTRAST]
    m = colour_transform(aug) * (bright * contrast)[:, None, None]
    offset = ((1 - contrast) * bright * mean_grey)[:, None, None]
    out = torch.baddbmm(offset, m, flat).clamp_(0, 1).view(b, c, h, w)
    # On the CPU a host check is free and skips the convolution when no view
    # is blurred; on accelerators the kernel always runs, to avoid a sync.
    skip = views.device.type == "cpu" and not bool((aug[:, BLUR] > 1e-3).any())
    if max_blur_sigma > 0 and not skip:
        # sigma -> 0 gives a delta kernel, so unblurred views pass through unchanged.
        sigma = aug[:, BLUR].clamp(1e-3, max_blur_sigma)
        radius = max(1, min(math.ceil(3 * max_blur_sigma), h - 1, w - 1))
        k = 2 * radius + 1
        if h * w < 256 * 256:
            # gaussian_blur2d's separable path (kornia filters views under 256 x 256 by two 1-D
            # convolutions), with the one kernel of the square sigma made once, unchecked (sigma
            # is clamped positive above): the same kernel and filter, in fewer calls.
            kernel = get_gaussian_kernel1d(k, sigma[:, None])
            out = filter2d_separable(out, kernel, kernel, "reflect")
        else:  # kornia may take another route for large images: leave it the choice
            out = gaussian_blur2d(out, (k, k), torch.stack((sigma, sigma), -1))
    return out
