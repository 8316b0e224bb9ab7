"""COCO-format JSON: instances (boxes and categories) and captions files."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vpt_env.data.annotations import Annotation
from vpt_env.data.readers._base import (
    CLIPPED,
    DEGENERATE,
    MALFORMED,
    MISSING,
    Reader,
    open_image,
    parse_json,
)

__all__ = ["CocoSource", "coco_kind"]


def coco_kind(data: Any) -> str:
    """``"instances"`` or ``"captions"``: which COCO file a parsed JSON is.

    A file with ``categories`` or with ``bbox`` in its first annotation is an
    instances file; one whose first annotation has a ``caption`` is a captions
    file.

    Raises:
        ValueError: if it is neither (no ``images`` list, or no way to tell).
    """
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError("not a COCO file: expected a JSON object with an 'images' list")
    anns = data.get("annotations")
    first = anns[0] if isinstance(anns, list) and anns and isinstance(anns[0], dict) else {}
    if "categories" in data or "bbox" in first:
        return "instances"
    if "caption" in first:
        return "captions"
    raise ValueError("a COCO file needs 'categories' (instances) or annotations with 'caption' (captions)")


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


class _Image:
    """One COCO image entry and what the files say about it."""

    __slots__ = ("boxes", "captions", "file_name", "height", "id", "labels", "path", "where", "width")

    def __init__(self, image_id: int, file_name: str, width: float, height: float, where: str) -> None:
        self.id, self.file_name, self.width, self.height = image_id, file_name, width, height
        self.where = where  # the file and entry that list it, for messages
        self.boxes: list[tuple[float, float, float, float]] = []
        self.labels: list[int] = []
        self.captions: list[str] = []
        self.path = Path(file_name)


class CocoSource(Reader):
    """Images of a COCO instances file and/or captions file.

    * Instances: each ``bbox`` ``[x, y, w, h]`` (pixels) becomes the
      normalised box ``(x / W, y / H, (x + w) / W, (y + h) / H)`` with the
      image's ``width`` and ``height`` from the JSON; ``category_id`` maps to
      contiguous class indices in category-id order, and ``classes`` are the
      category names in that order. Crowd annotations are kept as boxes.
    * Captions: each image gets every caption annotated for it.
    * Both: annotations are merged by image id; the images are the
      instances file's, then any that only the captions file lists.

    Images without annotations are kept (unlabelled). Image labels are None:
    COCO annotates objects, not images.

    Image files are looked up under ``image_root`` when given, else the first
    of these folders where the first images exist: the JSON's folder, its
    ``images/`` sub-folder, then folders named after the JSON's split (``annotations/instances_val2017.json``
    -> ``val2017``) inside the JSON's folder, beside it (``../val2017``), or in
    ``../images/``.

    Bad input: a JSON file that does not parse always raises ``ValueError``
    naming the file, line and column. A malformed entry (an image without a
    usable ``id``, ``file_name``, ``width`` or ``height``; an annotation
    with an unknown image or category, or a ``bbox`` that is not four finite
    numbers; a caption that is not text), a missing image file and non-UTF-8
    bytes raise ``ValueError`` naming the file and the entry
    (``annotations[17]``) when ``strict``, else are skipped and counted; so
    does an image id listed twice in one file (the first entry is kept), and
    an image file whose size is not the JSON's ``width`` x ``height`` (when
    the image is read: the boxes would be misplaced).
    In both modes, boxes overhanging the image are clipped to it and counted,
    and boxes with no area (after clipping) are dropped and counted. No
    usable image raises ``ValueError`` at construction.

    Args:
        instances_json: a COCO instances file (``instances_val2017.json``).
        captions_json: a COCO captions file (``captions_val2017.json``).
        image_root: folder holding the images (see above for the default).
        strict: raise on the first malformed entry or missing file.
    """

    def __init__(
        self,
        instances_json: str | os.PathLike[str] | None = None,
        captions_json: str | os.PathLike[str] | None = None,
        image_root: str | os.PathLike[str] | None = None,
        strict: bool = False,
    ) -> None:
        super().__init__(strict)
        if instances_json is None and captions_json is None:
            raise ValueError("CocoSource needs instances_json, captions_json or both")
        files: dict[str, tuple[Path, Any]] = {}
        for kind, path in (("instances", instances_json), ("captions", captions_json)):
            if path is not None:
                files[kind] = (Path(path), self._read_json(Path(path)))
        self._build(files, image_root)

    @classmethod
    def from_json(
        cls,
        path: str | os.PathLike[str],
        image_root: str | os.PathLike[str] | None = None,
        strict: bool = False,
    ) -> CocoSource:
        """Read one COCO file, deciding instances or captions by its keys (:func:`coco_kind`)."""
        self = cls.__new__(cls)
        Reader.__init__(self, strict)
        data = self._read_json(Path(path))
        try:
            kind = coco_kind(data)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
        self._build({kind: (Path(path), data)}, image_root)
        return self

    # -- parsing ------------------------------------------------------------------------

    def _read_json(self, path: Path) -> Any:
        if not path.is_file():
            raise ValueError(f"COCO file {str(path)!r} does not exist or is not a file")
        text = self._decode(path.read_bytes(), str(path), multiline=True)
        try:
            return parse_json(text)
        except json.JSONDecodeError as err:
            # Nothing after a syntax error can be trusted: raise even when not strict.
            where = f"{path}, line {err.lineno}, column {err.colno}"
            raise ValueError(f"{where}: invalid JSON ({err.msg})") from None
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None

    def _malformed(self, path: Path, where: str, what: str) -> None:
        self._problem(MALFORMED, f"{path}, {where}: {what}")

    def _build(self, files: dict[str, tuple[Path, Any]], image_root: str | os.PathLike[str] | None) -> None:
        self.files = {kind: p for kind, (p, _) in files.items()}
        images: dict[int, _Image] = {}
        for path, data in files.values():
            if not isinstance(data, dict) or not isinstance(data.get("images"), list):
                raise ValueError(f"{path}: not a COCO file (expected a JSON object with an 'images' list)")
            if not isinstance(data.get("annotations", []), list):
                raise ValueError(f"{path}: 'annotations' must be a list")
            listed: dict[int, int] = {}  # id -> its entry in this file
            for k, e in enumerate(data["images"]):
                ok = (
                    isinstance(e, dict)
                    and isinstance(e.get("id"), int)
                    and isinstance(e.get("file_name"), str)
                    and bool(e["file_name"])
                    and _number(e.get("width"))
                    and _number(e.get("height"))
                    and e["width"] > 0
                    and e["height"] > 0
                )
                if not ok:
                    what = f"needs an int id, a file_name and width/height > 0: {e!r}"
                    self._malformed(path, f"images[{k}]", what)
                elif e["id"] in listed:
                    first = f"images[{listed[e['id']]}]"
                    self._malformed(path, f"images[{k}]", f"duplicate image id {e['id']} (first: {first})")
                else:
                    listed[e["id"]] = k
                    if e["id"] not in images:  # listed by the other file too: one image
                        w, h = float(e["width"]), float(e["height"])
                        images[e["id"]] = _Image(e["id"], e["file_name"], w, h, f"{path}, images[{k}]")
        self.classes = []
        self.category_ids: list[int] = []
        if "instances" in files:
            self._read_instances(*files["instances"], images)
        if "captions" in files:
            self._read_captions(*files["captions"], images)
        first = next(iter(files.values()))[0]
        self.image_root = self._find_root(first, list(images.values()), image_root)
        self._images: list[_Image] = []
        for im in images.values():
            im.path = self.image_root / im.file_name
            if im.path.is_file():
                self._images.append(im)
            else:
                hint = "" if image_root is not None else "; pass image_root= naming the folder of the images"
                self._problem(MISSING, f"{im.where} (id {im.id}): file {str(im.path)!r} not found{hint}")
        if not self._images:
            problems = ", ".join(f"{n} {r}" for r, n in self.skipped.items()) or "no images listed"
            first = f"; first missing: {self._first[MISSING]}" if MISSING in self._first else ""
            raise ValueError(f"COCO source {self!r} holds no usable image ({problems}){first}")

    def _read_instances(self, path: Path, data: dict[str, Any], images: dict[int, _Image]) -> None:
        cats = data.get("categories", [])
        if not isinstance(cats, list):
            raise ValueError(f"{path}: 'categories' must be a list")
        names: dict[int, str] = {}
        for k, c in enumerate(cats):
            if not (isinstance(c, dict) and isinstance(c.get("id"), int) and isinstance(c.get("name"), str)):
                self._malformed(path, f"categories[{k}]", f"needs an int id and a name: {c!r}")
            elif c["id"] in names:
                self._malformed(path, f"categories[{k}]", f"duplicate category id {c['id']}")
            else:
                names[c["id"]] = c["name"]
        self.category_ids = sorted(names)
        self.classes = [names[i] for i in self.category_ids]
        index = {cid: k for k, cid in enumerate(self.category_ids)}
        for k, a in enumerate(data.get("annotations", [])):
            where = f"annotations[{k}]"
            if not isinstance(a, dict):
                self._malformed(path, where, f"expected an object, got {a!r}")
                continue
            im = images.get(a["image_id"]) if isinstance(a.get("image_id"), int) else None
            cat = a.get("category_id")
            bbox = a.get("bbox")
            if im is None:
                self._malformed(path, where, f"image_id {a.get('image_id')!r} is not in 'images'")
            elif not isinstance(cat, int) or cat not in index:
                self._malformed(path, where, f"category_id {a.get('category_id')!r} is not in 'categories'")
            elif not (isinstance(bbox, list) and len(bbox) == 4 and all(_number(v) for v in bbox)):
                self._malformed(path, where, f"bbox must be [x, y, w, h] (4 finite numbers), got {bbox!r}")
            else:
                box = self._normalise(bbox, im, f"{path}, {where}")
                if box is not None:
                    im.boxes.append(box)
                    im.labels.append(index[cat])

    def _normalise(
        self, bbox: list[float], im: _Image, where: str
    ) -> tuple[float, float, float, float] | None:
        x, y, w, h = bbox
        raw = np.array([x / im.width, y / im.height, (x + w) / im.width, (y + h) / im.height], np.float64)
        box = np.clip(raw, 0.0, 1.0).astype(np.float32)
        if w <= 0 or h <= 0 or not (box[2] > box[0] and box[3] > box[1]):
            self._problem(
                DEGENERATE,
                f"{where}: bbox {bbox} has no area inside the {im.width:g}x{im.height:g} image",
                always_count=True,
            )
            return None
        if np.abs(raw - box).max() > 1e-6:
            self._problem(
                CLIPPED,
                f"{where}: bbox {bbox} overhangs the {im.width:g}x{im.height:g} image",
                always_count=True,
            )
        return (float(box[0]), float(box[1]), float(box[2]), float(box[3]))

    def _read_captions(self, path: Path, data: dict[str, Any], images: dict[int, _Image]) -> None:
        for k, a in enumerate(data.get("annotations", [])):
            where = f"annotations[{k}]"
            iid = a.get("image_id") if isinstance(a, dict) else None
            im = images.get(iid) if isinstance(iid, int) else None
            if im is None:
                self._malformed(path, where, f"needs the image_id of a listed image: {a!r}")
            elif not isinstance(a.get("caption"), str):
                self._malformed(path, where, f"caption must be text, got {a.get('caption')!r}")
            elif a["caption"].strip():
                im.captions.append(a["caption"].strip())

    @staticmethod
    def _find_root(json_path: Path, images: list[_Image], image_root: str | os.PathLike[str] | None) -> Path:
        if image_root is not None:
            return Path(image_root)
        here = json_path.parent
        candidates = [here, here / "images"]
        split = json_path.stem.rsplit("_", 1)[-1] if "_" in json_path.stem else None
        if split:
            candidates += [here / split, here.parent / split, here.parent / "images" / split]
        probe = images[:20]
        for root in candidates:
            if any((root / im.file_name).is_file() for im in probe):
                return root
        return here

    # -- the ImageSource protocol -------------------------------------------------------

    def __repr__(self) -> str:
        files = ", ".join(f"{kind}_json={str(p)!r}" for kind, p in self.files.items())
        return f"CocoSource({files})"

    def _size_text(self) -> str:
        boxes = sum(len(im.boxes) for im in self._images)
        caps = sum(bool(im.captions) for im in self._images)
        return f"{len(self)} images, {boxes} boxes in {len(self.classes)} classes, {caps} captioned"

    def __len__(self) -> int:
        return len(self._images)

    def image(self, index: int) -> Image.Image:
        """Image ``index``, decoded.

        Raises:
            ValueError: the file's size differs from the JSON's ``width`` and ``height``, which the
                boxes are normalised by (they would land elsewhere in the file).
        """
        im = self._images[index]
        img = open_image(im.path)
        if img.size != (im.width, im.height):
            raise ValueError(
                f"{im.where}: the file is {img.size[0]}x{img.size[1]} but the JSON says "
                f"{im.width:g}x{im.height:g}; its boxes would be misplaced"
            )
        return img

    def annotation(self, index: int) -> Annotation:
        """Normalised boxes, their class indices and the captions of image ``index``."""
        im = self._images[index]
        return Annotation(
            captions=list(im.captions),
            boxes=np.array(im.boxes, np.float32).reshape(-1, 4),
            box_labels=np.array(im.labels, np.int64),
        )

    def image_id(self, index: int) -> int:
        """The COCO image id of image ``index``."""
        return self._images[index].id

    def name(self, index: int) -> str:
        """The image's path and COCO id."""
        im = self._images[index]
        return f"{im.path} (COCO image id {im.id})"
