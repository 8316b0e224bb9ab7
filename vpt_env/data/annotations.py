"""Per-image annotations, packed as padded tensors for batched rewards and cumulants."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from vpt_env.core.boxes import intersection_fraction

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
    blabels = annotations.box_labels[image]  # (B, M)
    if blabels.shape[1]:
        frac = intersection_fraction(annotations.boxes[image], box[:, None, :])
        frac = torch.where(blabels >= 0, frac, torch.zeros_like(frac))
        out.scatter_add_(1, blabels.clamp_min(0), frac)
    labels = annotations.labels[image]
    no_boxes = (blabels < 0).all(dim=1) if blabels.shape[1] else torch.ones_like(labels, dtype=torch.bool)
    use_label = no_boxes & (labels >= 0)
    out.scatter_add_(1, labels.clamp_min(0)[:, None], use_label[:, None].float())
    total = out.sum(dim=1, keepdim=True)
    return torch.where(total > 0, out / torch.where(total > 0, total, 1.0), out)
