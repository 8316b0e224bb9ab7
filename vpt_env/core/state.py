"""The batched view state and the frozen environment parameters."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor

from vpt_env.core.augment import AUG_DIM, AUG_NAMES, _constant

__all__ = ["DEFAULT_AUG_RANGES", "EnvParams", "ViewState"]

#: ``name -> (low, high)`` of every augmentation entry, unless ``EnvParams.aug_ranges`` overrides it
#: (grayscale and flip: off or on).
DEFAULT_AUG_RANGES: dict[str, tuple[float, float]] = {
    "brightness": (0.6, 1.4),
    "contrast": (0.6, 1.4),
    "saturation": (0.6, 1.4),
    "hue": (-0.1, 0.1),
    "grayscale": (0.0, 1.0),
    "flip": (0.0, 1.0),
    "blur": (0.0, 2.0),
}

INTERPOLATIONS = ("antialias", "bilinear", "nearest")


class ViewState(NamedTuple):
    """A batch of views: which image, where, and how it is augmented.

    Attributes:
        image: ``(B,)`` int64 index of each view's image in the pool.
        box: ``(B, 4)`` float32 normalised box ``(x0, y0, x1, y1)`` (see
            :mod:`vpt_env.core.boxes` for the convention).
        aug: ``(B, AUG_DIM)`` float32 augmentation vector (see
            :mod:`vpt_env.core.augment`).
        t: ``(B,)`` int64 steps taken since reset.
        key: ``(B,)`` int64 random stream key of each view's env (its seed).
        episode: ``(B,)`` int64 episodes started on that stream before this one.
            Random draws are a pure function of ``(key, episode, t)`` (see
            :mod:`vpt_env.core.random`).
        visited: ``(B, H, 4)`` the boxes this episode left, most recent ``H =
            EnvParams.memory`` of them (step ``t`` writes slot ``t % H``; empty
            slots are all-zero boxes, which overlap nothing), or None when
            ``memory`` is 0. Rewards that depend on the path (``novelty``) read it.
    """

    image: Tensor
    box: Tensor
    aug: Tensor
    t: Tensor
    key: Tensor
    episode: Tensor
    visited: Tensor | None = None

    @property
    def batch_size(self) -> int:
        """Number of views in the batch."""
        return int(self.image.shape[0])

    def to(self, device: torch.device | str) -> ViewState:
        """The same state on another device."""
        return self.map(lambda x: x.to(device))

    def map(self, fn: Callable[[Tensor], Tensor]) -> ViewState:
        """Apply ``fn`` to every tensor field (None fields stay None)."""
        return ViewState(*(None if x is None else fn(x) for x in self))

    def index(self, idx: Tensor | slice | int) -> ViewState:
        """Select a sub-batch (``idx`` as in tensor indexing; an int keeps the batch dim)."""
        if isinstance(idx, int):
            idx = slice(idx, idx + 1)
        return self.map(lambda x: x[idx])


def check_range(name: str, value: tuple[float, float], lo: float, hi: float) -> None:
    if (
        not isinstance(value, tuple | list)
        or len(value) != 2
        or not all(isinstance(v, int | float) and math.isfinite(v) for v in value)
    ):
        raise TypeError(f"{name} must be a (low, high) pair of finite numbers, got {value!r}")
    if not lo <= value[0] <= value[1] <= hi:
        raise ValueError(f"{name} must satisfy {lo} <= low <= high <= {hi}, got {tuple(value)!r}")


@dataclass(frozen=True)
class EnvParams:
    """Static parameters of the image-view MDP (frozen; pass a new one to change them).

    Args:
        view_size: side ``S`` of the square observation, in pixels (8..1024).
        max_pan: largest pan per step, in units of the current box's width
            (x) or height (y); action ``+-1`` pans by this much (0..2).
        max_log_zoom: largest change of ``log(box side)`` per step; action
            ``+1`` zooms in (the box shrinks by ``exp(max_log_zoom)``) and
            ``-1`` zooms out (0..3).
        max_log_aspect: largest change of ``log(pixel aspect w / h)`` per step (0..3).
        min_box_size: smallest box side, as a fraction of the image side (0..1].
        max_aspect: the box's pixel aspect ``w / h`` stays in
            ``[1 / max_aspect, max_aspect]`` (>= 1).
        init_scale: area fraction range of the box at reset (RandomResizedCrop's ``scale``).
        init_ratio: pixel aspect range of the box at reset (RandomResizedCrop's ``ratio``).
        augmentations: which augmentation entries the action controls, a
            subset of :data:`~vpt_env.core.augment.AUG_NAMES`; the others stay
            at identity. The action has ``4 + len(augmentations)`` entries.
        aug_ranges: ``name -> (low, high)`` for the continuous augmentations,
            overriding :data:`DEFAULT_AUG_RANGES`.
        random_initial_aug: sample the augmentation at reset (uniform action
            values) instead of starting from identity.
        interpolation: ``"antialias"`` (trilinear, anisotropic mipmapping;
            matches PIL's bilinear resize), ``"bilinear"`` (one pyramid level,
            about 3x faster, some aliasing) or ``"nearest"`` (fastest, aliased);
            see :mod:`vpt_env.core.render`.
        max_time_step: on video sources, the largest move in time per step, in
            frames within the clip (the continuous action gains a last entry;
            the discrete one ids 9 "earlier" and 10 "later", one frame each).
            None: 4 on video sources, off elsewhere; 0: off.
        memory: how many of the episode's past boxes the state keeps
            (:attr:`ViewState.visited`), for path-dependent rewards such as
            ``novelty``; 0 (default) keeps none. An env raises it to what its
            reward declares (``reward.memory``).
    """

    view_size: int = 64
    max_pan: float = 0.25
    max_log_zoom: float = 0.25
    max_log_aspect: float = 0.1
    min_box_size: float = 0.05
    max_aspect: float = 3.0
    init_scale: tuple[float, float] = (0.1, 1.0)
    init_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    augmentations: tuple[str, ...] = AUG_NAMES
    aug_ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    random_initial_aug: bool = False
    interpolation: str = "antialias"
    max_time_step: int | None = None
    memory: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.view_size, bool) or not isinstance(self.view_size, int):
            raise TypeError(f"view_size must be an int, got {type(self.view_size).__name__}")
        if not 8 <= self.view_size <= 1024:
            raise ValueError(f"view_size must be in [8, 1024], got {self.view_size}")
        for name, lo, hi in (
            ("max_pan", 0.0, 2.0),
            ("max_log_zoom", 0.0, 3.0),
            ("max_log_aspect", 0.0, 3.0),
            ("min_box_size", 1e-4, 1.0),
            ("max_aspect", 1.0, 100.0),
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise TypeError(f"{name} must be a number, got {type(v).__name__}")
            if not (math.isfinite(v) and lo <= v <= hi):
                raise ValueError(f"{name} must be in [{lo}, {hi}], got {v}")
        check_range("init_scale", self.init_scale, 1e-6, 1.0)
        check_range("init_ratio", self.init_ratio, 1e-3, 1e3)
        augs = tuple(self.augmentations)
        unknown = [a for a in augs if a not in AUG_NAMES]
        if unknown or len(set(augs)) != len(augs):
            raise ValueError(
                f"augmentations must be distinct names from {AUG_NAMES}, got {self.augmentations!r}"
            )
        # Keep the canonical order so that action entries follow AUG_NAMES.
        object.__setattr__(self, "augmentations", tuple(a for a in AUG_NAMES if a in augs))
        if not isinstance(self.aug_ranges, dict):
            raise TypeError(f"aug_ranges must be a dict, got {type(self.aug_ranges).__name__}")
        limits = {"brightness": (0, 10), "contrast": (0, 10), "saturation": (0, 10),
                  "hue": (-0.5, 0.5), "blur": (0, 10)}
        for name, rng in self.aug_ranges.items():
            if name not in limits:
                raise ValueError(
                    f"aug_ranges keys must be among {tuple(limits)}, got {name!r}"
                )
            check_range(f"aug_ranges[{name!r}]", rng, *limits[name])
        if self.max_time_step is not None and (
            isinstance(self.max_time_step, bool)
            or not isinstance(self.max_time_step, int)
            or not 0 <= self.max_time_step <= 10_000
        ):
            raise ValueError(f"max_time_step must be None or an int in [0, 10000], got {self.max_time_step}")
        if isinstance(self.memory, bool) or not isinstance(self.memory, int) or not 0 <= self.memory <= 1024:
            raise ValueError(f"memory must be an int in [0, 1024], got {self.memory!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}"
            )

    @property
    def ranges(self) -> dict[str, tuple[float, float]]:
        """Every augmentation's ``(low, high)``, defaults overridden by ``aug_ranges``."""
        return {**DEFAULT_AUG_RANGES, **{k: tuple(v) for k, v in self.aug_ranges.items()}}

    @property
    def action_dim(self) -> int:
        """Pan x, pan y, log-zoom, log-aspect and augmentation entries (video adds a time entry)."""
        return 4 + len(self.augmentations)

    @property
    def has_pixel_augmentation(self) -> bool:
        """Whether any augmentation other than flip (applied by the renderer) is enabled."""
        return any(a != "flip" for a in self.augmentations)

    @property
    def max_blur_sigma(self) -> float:
        """The largest blur sigma a view can have (0 when blur is disabled)."""
        return float(self.ranges["blur"][1]) if "blur" in self.augmentations else 0.0

    def enabled_mask(self, device: torch.device | str = "cpu") -> Tensor:
        """``(AUG_DIM,)`` bool: which augmentation entries the action controls."""
        return _constant(tuple(n in self.augmentations for n in AUG_NAMES), torch.device(device), torch.bool)

    def replace(self, **changes: object) -> EnvParams:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Names of every field, for keyword validation."""
        return tuple(f.name for f in dataclasses.fields(cls))


assert AUG_DIM == len(DEFAULT_AUG_RANGES)
