"""Pure, batched transition functions of the image-view MDP.

Nothing here holds state or touches global RNG: every random draw is a pure
function of the views' stream keys, episode numbers and steps
(:mod:`vpt_env.core.random`), so results do not depend on the batch.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from vpt_env.core.augment import (
    AUG_DIM,
    AUG_NAMES,
    FLIP,
    _constant,
    action_to_aug,
    aug_to_action,
    identity_aug,
)
from vpt_env.core.boxes import clamp_boxes, clamp_corners, cxcywh_to_box
from vpt_env.core.random import RESET_STEP, uniform
from vpt_env.core.state import EnvParams, ViewState

__all__ = [
    "DISCRETE_ACTIONS",
    "discrete_to_action",
    "random_boxes",
    "reset_state",
    "step_state",
]

#: Pan x, pan y, log-zoom and log-aspect of each discrete action.
_GEOMETRY = (
    (0.0, 0.0, 0.0, 0.0),
    (-1.0, 0.0, 0.0, 0.0),
    (1.0, 0.0, 0.0, 0.0),
    (0.0, -1.0, 0.0, 0.0),
    (0.0, 1.0, 0.0, 0.0),
    (0.0, 0.0, 1.0, 0.0),
    (0.0, 0.0, -1.0, 0.0),
    (0.0, 0.0, 0.0, 0.0),
    (0.0, 0.0, 0.0, 0.0),
)
#: Names of the discrete actions of ``ImageViewDiscrete-v0``, by id.
DISCRETE_ACTIONS: tuple[str, ...] = (
    "no-op",
    "pan left",
    "pan right",
    "pan up",
    "pan down",
    "zoom in",
    "zoom out",
    "flip",
    "change augmentation",
)


def random_boxes(
    image_hw: Tensor,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    u: Tensor,
) -> Tensor:
    """RandomResizedCrop boxes: area fraction in ``scale``, pixel aspect in ``ratio``.

    The aspect is drawn log-uniformly, as torchvision does; where the box would
    not fit, its sides are clamped to the image (torchvision retries instead,
    which needs a data-dependent loop). Positions are uniform over the boxes
    that fit.

    Args:
        image_hw: ``(B, 2)`` float image heights and widths in pixels.
        scale: ``(low, high)`` area fraction.
        ratio: ``(low, high)`` pixel aspect ``w / h``.
        u: ``(B, 4)`` uniform numbers in ``[0, 1)`` (area, aspect, x, y).

    Returns:
        ``(B, 4)`` normalised boxes.
    """
    s = scale[0] + (scale[1] - scale[0]) * u[:, 0]
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    r = torch.exp(lo + (hi - lo) * u[:, 1])
    aspect_img = image_hw[:, 0] / image_hw[:, 1]  # H / W
    w = torch.sqrt(s * r * aspect_img).clamp(max=1.0)
    h = torch.sqrt(s / r / aspect_img).clamp(max=1.0)
    cx = w / 2 + u[:, 2] * (1 - w)
    cy = h / 2 + u[:, 3] * (1 - h)
    return cxcywh_to_box(torch.stack((cx, cy, w, h), -1))


def reset_state(
    params: EnvParams,
    image_hw: Tensor,
    key: Tensor,
    episode: Tensor,
    image: Tensor | None = None,
) -> ViewState:
    """Initial states of new episodes.

    Args:
        params: the environment parameters.
        image_hw: ``(N, 2)`` float heights and widths of every image in the pool.
        key: ``(B,)`` int64 stream key of each view's env.
        episode: ``(B,)`` int64 episode number on that stream.
        image: ``(B,)`` int64 image of each new view, or None to draw it
            uniformly from the ``N`` images.

    Returns:
        A :class:`ViewState` of batch ``B`` with a RandomResizedCrop box
        (``params.init_scale``, ``params.init_ratio``), identity augmentation
        (or a random one if ``params.random_initial_aug``) and ``t = 0``.
    """
    u = uniform(key, episode, RESET_STEP, 5 + AUG_DIM)
    n = image_hw.shape[0]
    if image is None:
        image = (u[:, 0] * n).long().clamp_(max=n - 1)
    hw = image_hw[image]
    box = clamp_boxes(
        random_boxes(hw, params.init_scale, params.init_ratio, u[:, 1:5]),
        min_size=params.min_box_size,
    )
    aug = identity_aug(key.shape[0], device=key.device)
    if params.random_initial_aug:
        aug = action_to_aug(u[:, 5:] * 2 - 1, aug, params.enabled_mask(key.device), params.ranges)
    visited = None
    if params.memory:
        visited = torch.zeros(key.shape[0], params.memory, 4, dtype=box.dtype, device=box.device)
    return ViewState(
        image=image, box=box, aug=aug, t=torch.zeros_like(key), key=key, episode=episode, visited=visited
    )


def step_state(params: EnvParams, state: ViewState, action: Tensor, image_hw: Tensor) -> ViewState:
    """Apply a batch of continuous actions: the deterministic transition.

    Action layout (``params.action_dim`` entries, each in ``[-1, 1]``; callers
    clip): pan x, pan y (times ``max_pan`` box sides), log-zoom (times
    ``max_log_zoom``; positive zooms in), log-aspect (times ``max_log_aspect``;
    positive widens), then one entry per enabled augmentation, mapped onto its
    range by :func:`~vpt_env.core.augment.action_to_aug`.

    The new box keeps its pixel aspect within ``[1/max_aspect, max_aspect]``,
    its sides within ``[min_box_size, 1]``, and is shifted back inside the image.

    Args:
        params: the environment parameters.
        state: the current batch of states.
        action: ``(B, params.action_dim)`` float actions.
        image_hw: ``(N, 2)`` float heights and widths of every image in the pool.

    Returns:
        The next :class:`ViewState` (``t`` incremented; with memory, the box
        left behind recorded in ``visited``).
    """
    box = state.box
    hw = image_hw[state.image]
    # x and y go together through (B, 2) tensors: the same arithmetic as per axis, in fewer calls.
    lo, hi = box[:, :2], box[:, 2:]
    wh = hi - lo
    centre = (lo + hi) / 2 + action[:, :2] * params.max_pan * wh
    w, h = wh[:, 0], wh[:, 1]
    log_area = torch.log(w * h) - 2 * params.max_log_zoom * action[:, 2]
    # Pixel aspect (w * W) / (h * H), bounded in log space.
    bound = math.log(params.max_aspect)
    log_aspect = torch.log(w * hw[:, 1] / (h * hw[:, 0])) + params.max_log_aspect * action[:, 3]
    log_aspect = log_aspect.clamp(-bound, bound)
    # Back to normalised sides: w * h = area, w / h = aspect * H / W.
    log_norm_aspect = log_aspect + torch.log(hw[:, 0] / hw[:, 1])
    half = torch.exp(torch.stack((log_area + log_norm_aspect, log_area - log_norm_aspect), -1) / 2) / 2
    # clamp_boxes of the box (centre, new sides), from its corners.
    new_box = clamp_corners(centre - half, centre + half, min_size=params.min_box_size)
    aug = state.aug
    if params.augmentations:  # with none enabled every entry keeps its value: nothing to compute
        enabled = _enabled_index(params.augmentations, action.device)
        if enabled is None:  # every augmentation: the action's entries in AUG_NAMES order
            aug_action = action[:, 4:]
        else:
            aug_action = action.new_zeros(action.shape[0], AUG_DIM)
            aug_action[:, enabled] = action[:, 4:]
        aug = action_to_aug(aug_action, state.aug, params.enabled_mask(action.device), params.ranges)
    visited = state.visited
    if visited is not None and visited.shape[1]:
        # Record the box being left in slot t % H (a ring of the H most recent).
        slot = (state.t % visited.shape[1]).view(-1, 1, 1).expand(-1, 1, 4)
        visited = visited.scatter(1, slot, box[:, None, :])
    return state._replace(box=new_box, aug=aug, t=state.t + 1, visited=visited)


@functools.lru_cache(maxsize=64)
def _enabled_index(augmentations: tuple[str, ...], device: torch.device) -> Tensor | None:
    """Entries of :data:`AUG_NAMES` that the action controls, or None when it controls them all."""
    if len(augmentations) == AUG_DIM:
        return None
    index = [i for i, n in enumerate(AUG_NAMES) if n in augmentations]
    return torch.tensor(index, dtype=torch.int64, device=device)


def discrete_to_action(params: EnvParams, state: ViewState, action_id: Tensor) -> Tensor:
    """Map discrete action ids onto continuous actions of the same transition.

    Ids follow :data:`DISCRETE_ACTIONS`: 0 no-op; 1-4 pan left, right, up,
    down by ``max_pan`` box sides; 5/6 zoom in/out by ``exp(max_log_zoom)``;
    7 toggles the flip; 8 draws a new augmentation (uniform action values for
    every enabled entry, drawn from the view's random stream at its current
    step). Every other augmentation entry is set to the
    action value that keeps its current setting, so the continuous transition
    reproduces it. Flip toggles only when ``"flip"`` is enabled, and id 8 acts
    only when some augmentation is.

    Args:
        params: the environment parameters.
        state: the current batch of states.
        action_id: ``(B,)`` int64 ids in ``[0, len(DISCRETE_ACTIONS))``.

    Returns:
        ``(B, params.action_dim)`` continuous actions.
    """
    geo = _constant(_GEOMETRY, state.box.device, torch.float32)[action_id]
    if not params.augmentations:  # no augmentation entries: the geometry is the whole action
        return geo
    aug = state.aug.clone()
    flip_now = action_id == 7
    aug[:, FLIP] = torch.where(flip_now, 1.0 - aug[:, FLIP], aug[:, FLIP])
    aug_action = aug_to_action(aug, params.ranges)
    draw = action_id == 8
    # On the CPU a host check skips the draw when no view asks for one; accelerators never sync.
    if state.box.device.type != "cpu" or bool(draw.any()):
        fresh = uniform(state.key, state.episode, state.t, AUG_DIM) * 2 - 1
        aug_action = torch.where(draw[:, None], fresh, aug_action)
    enabled = _enabled_index(params.augmentations, state.box.device)
    return torch.cat((geo, aug_action if enabled is None else aug_action[:, enabled]), dim=-1)
