"""The torchvision ``ImageFolder`` layout: one sub-folder per class."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from vpt_env.data.annotations import Annotation
from vpt_env.data.image_convert import IMAGE_EXTENSIONS
from vpt_env.data.readers._base import Reader, open_image

__all__ = ["ImageFolderSource"]

_EMPTY_CLASS = "empty class folder"
_STRAY = "image outside the class folders (ignored)"


def _visible(name: str) -> bool:
    return not name.startswith(".")


class ImageFolderSource(Reader):
    """Images in ``root/<class>/**/<file>``, labelled by class folder.

    As torchvision's ``ImageFolder``: ``classes`` are the sub-folders of
    ``root`` in sorted order, an image's label is the index of the class
    folder it lies in (at any depth below it), and images are ordered by
    class, then by ``os.walk`` order with sorted names. Unlike torchvision,
    hidden files and folders (``.ipynb_checkpoints``) are skipped; the
    extensions read are :data:`~vpt_env.data.sources.IMAGE_EXTENSIONS`.

    Bad input: a class folder with no image keeps its index (so labels match
    torchvision's) and is counted (raises when strict, as torchvision does);
    image files directly in ``root`` are ignored and counted; a ``root``
    with no image in any class folder raises ``ValueError``.

    Args:
        root: the folder holding one sub-folder per class.
        strict: raise on an empty class folder; unreadable images raise in
            ``load_images``.

    Example:
        >>> import tempfile, pathlib
        >>> from PIL import Image
        >>> with tempfile.TemporaryDirectory() as d:
        ...     for cls in ("cat", "dog"):
        ...         (pathlib.Path(d) / cls).mkdir()
        ...         Image.new("RGB", (8, 8)).save(f"{d}/{cls}/0.png")
        ...     src = ImageFolderSource(d)
        ...     (len(src), src.classes, src.annotation(1).label)
        (2, ['cat', 'dog'], 1)
    """

    def __init__(self, root: str | os.PathLike[str], strict: bool = False) -> None:
        super().__init__(strict)
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"ImageFolder root {str(self.root)!r} does not exist or is not a folder")
        self.classes = sorted(e.name for e in os.scandir(self.root) if e.is_dir() and _visible(e.name))
        self.samples: list[tuple[Path, int]] = []
        for label, cls in enumerate(self.classes):
            found = 0
            # sorted(os.walk(...)) is torchvision's order; it lists the whole tree
            # first, so hidden folders are filtered by path rather than pruned.
            for dirpath, _, filenames in sorted(os.walk(self.root / cls, followlinks=True)):
                if not all(_visible(part) for part in Path(dirpath).relative_to(self.root).parts):
                    continue
                for fname in sorted(filenames):
                    if _visible(fname) and Path(fname).suffix.lower() in IMAGE_EXTENSIONS:
                        self.samples.append((Path(dirpath) / fname, label))
                        found += 1
            if not found:
                self._problem(_EMPTY_CLASS, f"class folder {str(self.root / cls)!r} holds no image files")
        for entry in sorted(os.scandir(self.root), key=lambda e: e.name):
            is_image = Path(entry.name).suffix.lower() in IMAGE_EXTENSIONS
            if entry.is_file() and _visible(entry.name) and is_image:
                self._problem(_STRAY, f"{entry.path} is not inside a class folder", always_count=True)
        if not self.samples:
            raise ValueError(
                f"ImageFolder root {str(self.root)!r} holds no image files in class sub-folders "
                f"({len(self.classes)} class folders; extensions {', '.join(IMAGE_EXTENSIONS)})"
            )

    def __repr__(self) -> str:
        return f"ImageFolderSource({str(self.root)!r})"

    def _size_text(self) -> str:
        return f"{len(self)} images in {len(self.classes)} classes"

    def __len__(self) -> int:
        return len(self.samples)

    def image(self, index: int) -> Image.Image:
        """Image ``index``, decoded."""
        return open_image(self.samples[index][0])

    def annotation(self, index: int) -> Annotation:
        """The class-folder label of image ``index``."""
        return Annotation(label=self.samples[index][1])

    def name(self, index: int) -> str:
        """The image's path."""
        return str(self.samples[index][0])
