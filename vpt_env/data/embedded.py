"""Embedded datasets that ship inside the installed dependencies (no download).

``"photos"`` (the default source): ten real colour photographs bundled with
scikit-image and scikit-learn, with hand-drawn object boxes
(:mod:`vpt_env.data.photo_boxes`). Each photo's label is the class of its
first (main) object; ``classes`` lists every object category.

``"scenes"``: 10,000 COCO-like 128x128 scenes of real objects on real
backgrounds, with boxes and (on 20%) captions
(:class:`vpt_env.data.scenes.SceneSource` with its defaults; make one
yourself for other parameters).

``"digits"``, ``"fashion"``, ``"animals"``: the training split of one
single-object set (:class:`vpt_env.data.objects.ObjectSource`); fashion and
animals only where installed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vpt_env.data.objects import ObjectSource
from vpt_env.data.photos import PHOTO_NAMES, PhotoSource
from vpt_env.data.scenes import SceneSource

__all__ = ["EMBEDDED", "PHOTO_NAMES", "PhotoSource", "embedded_source"]


def _objects(name: str) -> Callable[[], Any]:
    def make() -> Any:
        return ObjectSource(name)

    return make


#: Embedded dataset names accepted by ``source=``, each with a function that builds the source.
EMBEDDED: dict[str, Callable[[], Any]] = {
    "photos": PhotoSource,
    "scenes": SceneSource,
    "digits": _objects("digits"),
    "fashion": _objects("fashion"),
    "animals": _objects("animals"),
}


def embedded_source(name: str) -> Any:
    """The embedded dataset called ``name`` (one of :data:`EMBEDDED`)."""
    if name not in EMBEDDED:
        raise ValueError(f"unknown embedded dataset {name!r}; available: {sorted(EMBEDDED)}")
    return EMBEDDED[name]()
