"""Per-image annotations, packed as padded tensors for batched rewards and cumulants."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vpt_env.core.boxes import area, intersection

__all__ = ["MAX_CLASSES", "Annotation", "Annotations", "view_cumulant"]

#: The most classes an annotation space may have: a label is an index into it, and cumulants and
#: class tables take memory in proportion (a stray label of 999999999 would ask for gigabytes).
MAX_CLASSES = 100_000


@dataclass
class Annotation:
    """What is known about one image (every field optional).

    Attributes:
        label: class index of the whole image, or None.
        captions: free-text captions.
        boxes: ``(M, 4)`` normalised object boxes ``(x0, y0, x1, y1)``.
        box_labels: ``(M,)`` class index of each box.
        clip: for video frames, the index of the frame's clip, else None.
        frame: for video frames, the frame's time index within its clip, else None.
    """

    label: int | None = None
    captions: list[str] = field(default_factory=list)
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    box_labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    clip: int | None = None
    frame: int | None = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.box_labels = np.asarray(self.box_labels, dtype=np.int64).reshape(-1)
        if len(self.boxes) != len(self.box_labels):
            raise ValueError(
                f"boxes ({len(self.boxes)}) and box_labels ({len(self.box_labels)}) differ in length"
            )
        if len(self.boxes) and not (
            np.all(self.boxes[:, 2] > self.boxes[:, 0]) and np.all(self.boxes[:, 3] > self.boxes[:, 1])
        ):
            raise ValueError("boxes must satisfy x1 > x0 and y1 > y0 (normalised x0, y0, x1, y1)")


class Annotations:
    """Annotations of every image of a pool as padded tensors.

    Args:
        items: one :class:`Annotation` per image.
        classes: names of the annotation space (indices of ``label`` and
            ``box_labels``); empty when the source has none.

    Attributes:
        labels: ``(N,)`` int64 image labels, -1 where unknown.
        boxes: ``(N, M, 4)`` float32 boxes, padded with zeros.
        box_labels: ``(N, M)`` int64 box labels, -1 for padding.
        captions: ``list[list[str]]`` per image.
        clips: ``(N,)`` int64 clip index of video frames, -1 elsewhere.
        frames: ``(N,)`` int64 time index of video frames, -1 elsewhere.
        classes: ``list[str]``.
    """

    def __init__(self, items: Sequence[Annotation], classes: Sequence[str] = ()) -> None:
        n = len(items)
        m = max((len(a.boxes) for a in items), default=0)
        self.classes = list(classes)
        self.labels = torch.tensor(
            [-1 if a.label is None else int(a.label) for a in items], dtype=torch.int64
        )
        self.boxes = torch.zeros(n, m, 4)
        self.box_labels = torch.full((n, m), -1, dtype=torch.int64)
        for i, a in enumerate(items):
            k = len(a.boxes)
            self.boxes[i, :k] = torch.from_numpy(a.boxes)
            self.box_labels[i, :k] = torch.from_numpy(a.box_labels)
        self.captions = [list(a.captions) for a in items]
        self.clips = torch.tensor([-1 if a.clip is None else int(a.clip) for a in items], dtype=torch.int64)
        self.frames = torch.tensor(
            [-1 if a.frame is None else int(a.frame) for a in items], dtype=torch.int64
        )
        k = len(self.classes)
        if k > MAX_CLASSES:
            raise ValueError(f"classes names {k} classes; at most {MAX_CLASSES} are supported (MAX_CLASSES)")
        used = torch.cat((self.labels[self.labels >= 0], self.box_labels[self.box_labels >= 0]))
        if used.numel() and (k == 0 or int(used.max()) >= k):
            raise ValueError(
                f"labels reach {int(used.max())} but classes names {k}: pass classes= naming every index"
            )

    @classmethod
    def empty(cls, n: int) -> Annotations:
        """``n`` images with no annotations."""
        return cls([Annotation() for _ in range(n)])

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        """Size of the annotation space."""
        return len(self.classes)

    @property
    def has_boxes(self) -> bool:
        """Whether any image has object boxes."""
        return bool((self.box_labels >= 0).any())

    def to(self, device: torch.device | str) -> Annotations:
        """A copy with the tensors on ``device`` (``self`` is unchanged, as with ``Tensor.to``).

        Pools on different devices can share one ``Annotations`` this way; the captions and
        class names are shared, not copied.
        """
        out = copy.copy(self)
        out.labels = self.labels.to(device)
        out.boxes = self.boxes.to(device)
        out.box_labels = self.box_labels.to(device)
        out.clips = self.clips.to(device)
        out.frames = self.frames.to(device)
        return out

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_cumulant_cache"}

    def cumulant_tables(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Per-image constants of :func:`view_cumulant`, made once (again if a tensor is replaced).

        Returns ``(N, M)`` the boxes that count (a class and a positive area), ``(N, M)`` their
        areas (1 where they do not count), ``(N, M)`` their class columns, ``(N, 1)`` the column
        of each image's label and ``(N, 1)`` its weight (1 for a labelled image with no boxes).
        """
        key = (self.boxes, self.box_labels, self.labels)
        cached = self.__dict__.get("_cumulant_cache")
        if cached is not None and all(a is b for a, b in zip(cached[0], key, strict=True)):
            return cached[1]
        box_area = area(self.boxes)
        counts = (self.box_labels >= 0) & (box_area > 0)
        safe_area = torch.where(box_area > 0, box_area, 1.0)
        no_boxes = (self.box_labels < 0).all(dim=1)  # True for every image when M == 0
        label_weight = (no_boxes & (self.labels >= 0))[:, None].float()
        columns = self.box_labels.clamp_min(0)
        tables = (counts, safe_area, columns, self.labels.clamp_min(0)[:, None], label_weight)
        self._cumulant_cache = (key, tables)
        return tables

    def class_index(self, target: int | str, name: str = "target") -> int:
        """Resolve a class given by index or name; raises ValueError naming ``name``."""
        if isinstance(target, str):
            if target not in self.classes:
                raise ValueError(f"{name} {target!r} is not a class; classes: {self.classes}")
            return self.classes.index(target)
        if isinstance(target, bool) or not isinstance(target, int | np.integer):
            raise TypeError(f"{name} must be a class index or name, got {type(target).__name__}")
        if not 0 <= int(target) < max(self.num_classes, 1) or self.num_classes == 0:
            raise ValueError(
                f"{name} must be in [0, {self.num_classes}) (classes: {self.classes}), got {target}"
            )
        return int(target)


def view_cumulant(annotations: Annotations, image: Tensor, box: Tensor) -> Tensor:
    """Per-view distribution over the annotation space.

    Object boxes contribute their class weighted by the fraction of the box
    inside the view; an image with no boxes but a label contributes that
    label with weight 1. The weights are normalised to sum to 1; a view that
    meets no annotation gets all zeros.

    Args:
        annotations: the pool's annotations.
        image: ``(B,)`` int64 image indices.
        box: ``(B, 4)`` normalised view boxes.

    Returns:
        ``(B, K)`` float32 with ``K = annotations.num_classes``.
    """
    k = annotations.num_classes
    b = image.shape[0]
    out = torch.zeros(b, max(k, 1), device=box.device)
    if k == 0:
        return out[:, :0]
    # intersection_fraction, restricted to the boxes that count, with the per-image constants
    # (areas, masks, columns) made once: the same arithmetic in fewer calls per step.
    counts, safe_area, column, label_column, label_weight = annotations.cumulant_tables()
    if counts.shape[1]:
        inter = intersection(annotations.boxes[image], box[:, None, :])
        frac = torch.where(counts[image], inter / safe_area[image], 0.0)
        out.scatter_add_(1, column[image], frac)
    out.scatter_add_(1, label_column[image], label_weight[image])
    total = out.sum(dim=1, keepdim=True)
    return torch.where(total > 0, out / torch.where(total > 0, total, 1.0), out)
