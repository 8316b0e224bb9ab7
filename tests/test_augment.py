"""Augmentation parameters and their application (:mod:`vpt_env.core.augment`)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from kornia.enhance import adjust_saturation_with_gray_subtraction
from scipy.ndimage import gaussian_filter

from vpt_env.core.augment import (
    AUG_DIM,
    AUG_NAMES,
    BINARY_AUGS,
    BLUR,
    BRIGHTNESS,
    CONTRAST,
    GRAYSCALE,
    HUE,
    SATURATION,
    action_to_aug,
    aug_to_action,
    identity_aug,
)
from vpt_env.core.augment import (
    apply_augmentation as _apply_augmentation,
)
from vpt_env.core.state import DEFAULT_AUG_RANGES


def apply_augmentation(x: torch.Tensor, aug: torch.Tensor, max_blur_sigma: float = 2.0) -> torch.Tensor:
    """The library function on channels-last views (the formulas below are written per pixel)."""
    return _apply_augmentation(x.permute(0, 3, 1, 2), aug, max_blur_sigma).permute(0, 2, 3, 1)


LUMA = (0.299, 0.587, 0.114)
SIZE = 24


def views(n: int, device: torch.device, seed: int = 0, size: int = SIZE) -> torch.Tensor:
    """``(n, S, S, 3)`` colourful test views in [0, 1]: smooth colour gradients plus noise.

    Drawn on the CPU so that every device sees the same values.
    """
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 1, size)
    base = torch.rand(n, 1, 1, 3, generator=g)
    slope_x = torch.rand(n, 1, 1, 3, generator=g) - 0.5
    slope_y = torch.rand(n, 1, 1, 3, generator=g) - 0.5
    noise = 0.3 * (torch.rand(n, size, size, 3, generator=g) - 0.5)
    x = base + slope_x * t[None, None, :, None] + slope_y * t[None, :, None, None] + noise
    return x.clamp(0, 1).to(device)


def luma(x: torch.Tensor) -> torch.Tensor:
    return x @ torch.tensor(LUMA, device=x.device, dtype=x.dtype)


def with_entry(n: int, device: torch.device, index: int, values: list[float]) -> torch.Tensor:
    aug = identity_aug(n, device)
    aug[:, index] = torch.tensor(values, device=device)
    return aug


def test_identity_aug_leaves_views_unchanged(device: torch.device) -> None:
    x = views(6, device)
    aug = identity_aug(6, device)
    assert aug.shape == (6, AUG_DIM) and aug.dtype == torch.float32
    out = apply_augmentation(x, aug)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.data_ptr() != x.data_ptr()
    torch.testing.assert_close(out, x, atol=1e-6, rtol=0)


def test_brightness_alone(device: torch.device) -> None:
    factors = [0.6, 0.8, 1.0, 1.25, 1.4]
    x = views(len(factors), device, seed=1)
    out = apply_augmentation(x, with_entry(len(factors), device, BRIGHTNESS, factors))
    f = torch.tensor(factors, device=device)[:, None, None, None]
    expected = (x * f).clamp(0, 1)
    assert bool((x * f > 1).any())  # the clip is exercised
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_contrast_alone(device: torch.device) -> None:
    factors = [0.0, 0.6, 1.0, 1.4, 2.0]
    x = views(len(factors), device, seed=2)
    out = apply_augmentation(x, with_entry(len(factors), device, CONTRAST, factors))
    c = torch.tensor(factors, device=device)[:, None, None, None]
    mean = luma(x).mean(dim=(1, 2))[:, None, None, None]  # one grey level per view
    expected = (c * x + (1 - c) * mean).clamp(0, 1)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    # Contrast 0 is the flat mean grey of each view.
    torch.testing.assert_close(out[0], mean[0].expand_as(out[0]), atol=1e-6, rtol=0)


def test_saturation_alone(device: torch.device) -> None:
    # kornia.enhance.adjust_saturation scales HSV saturation (factor 0 gives max(R, G, B), not
    # luma); the library blends with luma as PIL and torchvision do, which is Kornia's
    # adjust_saturation_with_gray_subtraction: clip(s * x + (1 - s) * luma(x)).
    factors = [0.0, 0.6, 1.0, 1.4, 2.5]
    x = views(len(factors), device, seed=3)
    out = apply_augmentation(x, with_entry(len(factors), device, SATURATION, factors))
    s = torch.tensor(factors, device=device)[:, None, None, None]
    expected = (s * x + (1 - s) * luma(x)[..., None]).clamp(0, 1)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    kornia_out = adjust_saturation_with_gray_subtraction(x.permute(0, 3, 1, 2), s.view(-1)).permute(
        0, 2, 3, 1
    )
    torch.testing.assert_close(out, kornia_out, atol=1e-5, rtol=0)


def test_hue_preserves_luma(device: torch.device) -> None:
    hues = [-0.5, -0.1, -0.03, 0.05, 0.1, 0.25]
    x = 0.25 + 0.5 * views(len(hues), device, seed=4)  # away from 0 and 1, so few pixels clip
    out = apply_augmentation(x, with_entry(len(hues), device, HUE, hues))
    unclipped = ((out > 0) & (out < 1)).all(dim=-1)
    assert float(unclipped.float().mean()) > 0.9
    torch.testing.assert_close(luma(out)[unclipped], luma(x)[unclipped], atol=1e-5, rtol=0)
    # ... while the colours do change.
    changed = (out - x).abs().mean(dim=(1, 2, 3))
    assert bool((changed > 0.005).all()), changed


def test_hue_zero_and_half_turns(device: torch.device) -> None:
    x = views(4, device, seed=5)
    out0 = apply_augmentation(x, with_entry(4, device, HUE, [0.0] * 4))
    torch.testing.assert_close(out0, x, atol=1e-6, rtol=0)
    # EnvParams allows hue in [-0.5, 0.5], so a full turn is out of range; both ends of the
    # range are the same half turn.
    plus = apply_augmentation(x, with_entry(4, device, HUE, [0.5] * 4))
    minus = apply_augmentation(x, with_entry(4, device, HUE, [-0.5] * 4))
    torch.testing.assert_close(plus, minus, atol=1e-5, rtol=0)
    assert float((plus - x).abs().mean()) > 0.01
    # Small opposite rotations are each other's inverse where nothing clips.
    y = 0.3 + 0.4 * x
    a = apply_augmentation(y, with_entry(4, device, HUE, [0.07] * 4))
    back = apply_augmentation(a, with_entry(4, device, HUE, [-0.07] * 4))
    ok = ((a > 0) & (a < 1)).all(dim=-1)
    torch.testing.assert_close(back[ok], y[ok], atol=1e-5, rtol=0)


def test_grayscale(device: torch.device) -> None:
    x = views(3, device, seed=6)
    out = apply_augmentation(x, with_entry(3, device, GRAYSCALE, [1.0, 1.0, 0.0]))
    grey = luma(x[:2])[..., None].expand(-1, -1, -1, 3)
    torch.testing.assert_close(out[:2], grey, atol=1e-6, rtol=0)
    torch.testing.assert_close(out[:2, ..., 0], out[:2, ..., 1], atol=1e-6, rtol=0)
    torch.testing.assert_close(out[:2, ..., 0], out[:2, ..., 2], atol=1e-6, rtol=0)
    torch.testing.assert_close(out[2], x[2], atol=1e-6, rtol=0)
    assert float((x[:2, ..., 0] - x[:2, ..., 1]).abs().mean()) > 0.05  # the input was not grey


def test_colour_chain_clipped_once(device: torch.device) -> None:
    # brightness, then contrast (around the brightened view's mean grey), then saturation,
    # composed without intermediate clipping and clipped at the end.
    b, c, s = 1.3, 0.7, 1.2
    x = views(2, device, seed=7)
    aug = identity_aug(2, device)
    aug[:, BRIGHTNESS], aug[:, CONTRAST], aug[:, SATURATION] = b, c, s
    y = b * x
    y = c * y + (1 - c) * luma(y).mean(dim=(1, 2))[:, None, None, None]
    y = s * y + (1 - s) * luma(y)[..., None]
    torch.testing.assert_close(apply_augmentation(x, aug), y.clamp(0, 1), atol=1e-5, rtol=0)


def test_blur_sigma_zero_is_identity(device: torch.device) -> None:
    x = views(3, device, seed=8)
    # Alone (the CPU skips the convolution) and next to blurred views (the kernel runs).
    out = apply_augmentation(x, identity_aug(3, device), max_blur_sigma=2.0)
    torch.testing.assert_close(out, x, atol=1e-6, rtol=0)
    aug = with_entry(3, device, BLUR, [0.0, 1.5, 0.0])
    out = apply_augmentation(x, aug, max_blur_sigma=2.0)
    torch.testing.assert_close(out[[0, 2]], x[[0, 2]], atol=1e-6, rtol=0)
    assert float((out[1] - x[1]).abs().mean()) > 0.01


def test_blur_matches_reference_and_smooths(device: torch.device) -> None:
    sigmas = [0.5, 1.0, 2.0]
    max_sigma = 2.0
    x = views(len(sigmas), device, seed=9, size=32)
    out = apply_augmentation(x, with_entry(len(sigmas), device, BLUR, sigmas), max_blur_sigma=max_sigma)
    # The mean is kept up to border effects, the variance drops, and more with a larger sigma.
    torch.testing.assert_close(out.mean(dim=(1, 2)), x.mean(dim=(1, 2)), atol=5e-3, rtol=0)
    var_in = x.var(dim=(1, 2)).mean(-1)
    var_out = out.var(dim=(1, 2)).mean(-1)
    assert bool((var_out < 0.9 * var_in).all()), (var_in, var_out)
    ratio = (var_out / var_in).tolist()
    assert ratio[0] > ratio[1] > ratio[2], ratio
    # Independent reference: scipy's sampled, normalised Gaussian with the same radius
    # (2 * ceil(3 * max_sigma) + 1 taps) and reflect-without-edge-repeat borders ("mirror").
    radius = math.ceil(3 * max_sigma)
    x_np = x.cpu().numpy().astype(np.float64)
    for i, sigma in enumerate(sigmas):
        ref = gaussian_filter(x_np[i], sigma=(sigma, sigma, 0), mode="mirror", truncate=radius / sigma)
        np.testing.assert_allclose(out[i].cpu().numpy(), ref, atol=1e-5)


def test_aug_names_and_identity() -> None:
    assert len(AUG_NAMES) == AUG_DIM == len(DEFAULT_AUG_RANGES)
    assert set(DEFAULT_AUG_RANGES) == set(AUG_NAMES)
    assert BINARY_AUGS == {"grayscale", "flip"}
    ident = identity_aug(2)
    assert ident[0].tolist() == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    ident[0, 0] = 5.0  # a fresh tensor, not a view of a shared one
    assert identity_aug(1)[0, 0] == 1.0


def _continuous_mask(device: torch.device) -> torch.Tensor:
    return torch.tensor([n not in BINARY_AUGS for n in AUG_NAMES], device=device)


def test_action_to_aug_endpoints(device: torch.device) -> None:
    enabled = torch.ones(AUG_DIM, dtype=torch.bool, device=device)
    current = identity_aug(3, device)
    action = torch.tensor([-1.0, 0.0, 1.0], device=device)[:, None].expand(3, AUG_DIM)
    aug = action_to_aug(action, current, enabled, DEFAULT_AUG_RANGES)
    for k, name in enumerate(AUG_NAMES):
        lo, hi = DEFAULT_AUG_RANGES[name]
        if name in BINARY_AUGS:
            # On only where the action is strictly positive.
            assert aug[:, k].tolist() == [0.0, 0.0, 1.0], name
        else:
            expected = torch.tensor([lo, (lo + hi) / 2, hi], device=device)
            torch.testing.assert_close(aug[:, k], expected, atol=1e-6, rtol=0)


def test_action_aug_round_trip_continuous(device: torch.device) -> None:
    g = torch.Generator().manual_seed(10)
    action = (torch.rand(64, AUG_DIM, generator=g) * 2 - 1).to(device)
    enabled = torch.ones(AUG_DIM, dtype=torch.bool, device=device)
    aug = action_to_aug(action, identity_aug(64, device), enabled, DEFAULT_AUG_RANGES)
    back = aug_to_action(aug, DEFAULT_AUG_RANGES)
    cont = _continuous_mask(device)
    torch.testing.assert_close(back[:, cont], action[:, cont], atol=1e-5, rtol=0)
    # Binary entries come back as +-1 with the action's sign.
    assert torch.equal(back[:, ~cont], torch.where(action[:, ~cont] > 0, 1.0, -1.0))
    # And aug -> action -> aug is exact up to rounding for every entry.
    again = action_to_aug(back, identity_aug(64, device), enabled, DEFAULT_AUG_RANGES)
    torch.testing.assert_close(again, aug, atol=1e-5, rtol=0)


def test_action_aug_round_trip_binary(device: torch.device) -> None:
    enabled = torch.ones(AUG_DIM, dtype=torch.bool, device=device)
    aug = identity_aug(4, device)
    gi, fi = AUG_NAMES.index("grayscale"), AUG_NAMES.index("flip")
    aug[:, gi] = torch.tensor([0.0, 1.0, 0.0, 1.0], device=device)
    aug[:, fi] = torch.tensor([0.0, 0.0, 1.0, 1.0], device=device)
    action = aug_to_action(aug, DEFAULT_AUG_RANGES)
    assert action[:, gi].tolist() == [-1.0, 1.0, -1.0, 1.0]
    assert action[:, fi].tolist() == [-1.0, -1.0, 1.0, 1.0]
    assert bool((action.abs() <= 1).all())
    back = action_to_aug(action, identity_aug(4, device), enabled, DEFAULT_AUG_RANGES)
    torch.testing.assert_close(back, aug, atol=1e-6, rtol=0)


def test_aug_to_action_degenerate_and_custom_ranges(device: torch.device) -> None:
    ranges = {**DEFAULT_AUG_RANGES, "brightness": (0.9, 0.9), "blur": (0.5, 3.0)}
    aug = identity_aug(2, device)
    aug[:, BRIGHTNESS] = 0.9
    aug[:, BLUR] = torch.tensor([0.5, 1.75], device=device)
    action = aug_to_action(aug, ranges)
    assert action[:, BRIGHTNESS].tolist() == [0.0, 0.0]
    torch.testing.assert_close(action[:, BLUR], torch.tensor([-1.0, 0.0], device=device))
    enabled = torch.ones(AUG_DIM, dtype=torch.bool, device=device)
    torch.testing.assert_close(
        action_to_aug(action, identity_aug(2, device), enabled, ranges), aug, atol=1e-6, rtol=0
    )


def test_disabled_entries_keep_current_values(device: torch.device) -> None:
    g = torch.Generator().manual_seed(11)
    current = (torch.rand(8, AUG_DIM, generator=g) * 0.5 + 0.25).to(device)
    action = (torch.rand(8, AUG_DIM, generator=g) * 2 - 1).to(device)
    enabled = torch.tensor([n in ("contrast", "hue", "flip") for n in AUG_NAMES], device=device)
    out = action_to_aug(action, current, enabled, DEFAULT_AUG_RANGES)
    assert torch.equal(out[:, ~enabled], current[:, ~enabled])
    full = action_to_aug(action, current, torch.ones_like(enabled), DEFAULT_AUG_RANGES)
    assert torch.equal(out[:, enabled], full[:, enabled])
    assert not torch.allclose(out[:, enabled], current[:, enabled])
    # Nothing enabled: nothing changes.
    none = action_to_aug(action, current, torch.zeros_like(enabled), DEFAULT_AUG_RANGES)
    assert torch.equal(none, current)


def random_augs(n: int, device: torch.device, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    action = (torch.rand(n, AUG_DIM, generator=g) * 2 - 1).to(device)
    enabled = torch.ones(AUG_DIM, dtype=torch.bool, device=device)
    return action_to_aug(action, identity_aug(n, device), enabled, DEFAULT_AUG_RANGES)


def test_replay_is_identical(device: torch.device) -> None:
    x = views(8, device, seed=12)
    aug = random_augs(8, device, seed=13)
    a = apply_augmentation(x, aug)
    b = apply_augmentation(x.clone(), aug.clone())
    assert torch.equal(a, b)
    assert float((a - x).abs().mean()) > 0.01


@pytest.mark.parametrize("max_blur_sigma", [2.0, 0.0])
def test_per_view_independence(device: torch.device, max_blur_sigma: float) -> None:
    n = 10
    x = views(n, device, seed=14)
    aug = random_augs(n, device, seed=15)
    if max_blur_sigma == 0.0:
        aug[:, BLUR] = 0.0
    aug[0] = identity_aug(1, device)[0]
    batched = apply_augmentation(x, aug, max_blur_sigma=max_blur_sigma)
    for i in range(n):
        alone = apply_augmentation(x[i : i + 1], aug[i : i + 1], max_blur_sigma=max_blur_sigma)
        torch.testing.assert_close(batched[i : i + 1], alone, atol=1e-6, rtol=0)
    # Views differ from one another (the vectors really differ).
    assert float((batched[1] - apply_augmentation(x[1:2], aug[2:3], max_blur_sigma)[0]).abs().mean()) > 1e-3
