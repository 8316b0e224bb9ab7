"""The embedded photos: ten real colour photographs bundled with scikit-image and scikit-learn.

Each has hand-drawn object boxes (:mod:`vpt_env.data.photo_boxes`); its label is the class of its
first (main) object, and ``classes`` lists every object category. ``source="photos"`` (the
default source) and the scene backgrounds read them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from vpt_env.data.annotations import Annotation
from vpt_env.data.photo_boxes import PHOTO_BOXES

__all__ = ["PHOTO_NAMES", "PhotoSource"]


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        out = getattr(skimage.data, name)()
        return out[0] if isinstance(out, tuple) else out

    return load


def _sklearn(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(name)

    return load


_LOADERS: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": _skimage("astronaut"),
    "coffee": _skimage("coffee"),
    "chelsea": _skimage("chelsea"),
    "rocket": _skimage("rocket"),
    "hubble_deep_field": _skimage("hubble_deep_field"),
    "retina": _skimage("retina"),
    "immunohistochemistry": _skimage("immunohistochemistry"),
    "motorcycle": _skimage("stereo_motorcycle"),
    "china": _sklearn("china.jpg"),
    "flower": _sklearn("flower.jpg"),
}
#: Names of the embedded photos, in source order.
PHOTO_NAMES: tuple[str, ...] = tuple(_LOADERS)


class PhotoSource:
    """The ten embedded colour photos with their object boxes.

    ``classes`` are the object categories in order of first appearance;
    ``annotation(i).label`` is the category of photo ``i``'s main object.
    """

    def __init__(self) -> None:
        classes: list[str] = []
        for name in PHOTO_NAMES:
            for cat, _ in PHOTO_BOXES[name]:
                if cat not in classes:
                    classes.append(cat)
        self.classes = classes
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(PHOTO_NAMES)

    def image(self, index: int) -> np.ndarray:
        if index not in self._cache:
            self._cache[index] = _LOADERS[PHOTO_NAMES[index]]()
        return self._cache[index]

    def annotation(self, index: int) -> Annotation:
        name = PHOTO_NAMES[index]
        h, w = self.image(index).shape[:2]
        objs = PHOTO_BOXES[name]
        boxes = np.array(
            [[x0 / w, y0 / h, x1 / w, y1 / h] for _, (x0, y0, x1, y1) in objs], dtype=np.float32
        ).reshape(-1, 4)
        labels = np.array([self.classes.index(c) for c, _ in objs], dtype=np.int64)
        label = int(labels[0]) if len(labels) else None
        return Annotation(label=label, boxes=np.clip(boxes, 0, 1), box_labels=labels)

    def name(self, index: int) -> str:
        return f"embedded photo {PHOTO_NAMES[index]!r}"

    def __getstate__(self) -> dict[str, Any]:
        # The decoded photos are reloaded from the installed packages, not pickled.
        return {**self.__dict__, "_cache": {}}
