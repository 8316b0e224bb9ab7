"""Image sources: the protocol, array and folder readers, and loading into a pool.

Every image becomes RGB uint8 on load (:func:`~vpt_env.data.image_convert.to_rgb_uint8`, re-exported
here; see :mod:`vpt_env.data.image_convert` for each mode's conversion). Images whose shorter side
is below the view size are upsampled (bicubic) so that it equals the view size; images whose longer
side exceeds ``max_side`` (default :data:`MAX_IMAGE_SIDE`) are downsampled (Lanczos) so that it
equals ``max_side``; where the two conflict (a very long, thin image), the view size wins. Object
boxes are normalised, so they survive both.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image

from vpt_env.data.annotations import MAX_CLASSES, Annotation, Annotations
from vpt_env.data.image_convert import IMAGE_EXTENSIONS, ImageReadError, fit_size, to_rgb_uint8
from vpt_env.progress import Progress

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_IMAGE_SIDE",
    "SOURCE_SUFFIXES",
    "ArraySource",
    "FilesSource",
    "FolderSource",
    "ImageReadError",
    "ImageSource",
    "SubsetSource",
    "load_images",
    "resolve_source",
    "to_rgb_uint8",
]

#: Longest image side kept on load, in pixels (larger images are downsampled).
MAX_IMAGE_SIDE = 1024


@runtime_checkable
class ImageSource(Protocol):
    """A sequence of images with optional annotations.

    Implement ``__len__``, ``image(i)`` (any array or PIL image; converted on
    load) and ``annotation(i)`` (an :class:`Annotation`, possibly empty), and
    set ``classes`` to the names of the annotation space (empty if none).
    ``name(i)`` is optional and names the image in warnings and errors.
    """

    classes: Sequence[str]

    def __len__(self) -> int: ...

    def image(self, index: int) -> Any:
        """Image ``index``: any array or PIL image (converted to RGB uint8 on load)."""
        ...

    def annotation(self, index: int) -> Annotation:
        """The :class:`Annotation` of image ``index`` (possibly empty)."""
        ...


class ArraySource:
    """Images given as arrays or tensors, with optional labels.

    Args:
        images: a sequence of images (anything :func:`to_rgb_uint8` takes), or
            one array/tensor: a batch if it has 4 dims (``(N, H, W, C)``, or
            ``(N, C, H, W)`` for tensors), else a single image (grey batches:
            pass ``(N, H, W, 1)``), or one PIL image.
        labels: optional ``(N,)`` class indices in ``[0, MAX_CLASSES)`` (-1: none).
        classes: names of the classes (default ``"0"``, ``"1"``, ...).
    """

    def __init__(
        self,
        images: Sequence[Any] | np.ndarray | torch.Tensor,
        labels: Sequence[int] | np.ndarray | None = None,
        classes: Sequence[str] | None = None,
    ) -> None:
        if isinstance(images, np.ndarray | torch.Tensor):
            # One array is a batch when it has 4 dims, else a single image.
            images = list(images) if images.ndim == 4 else [images]
        elif isinstance(images, Image.Image):
            images = [images]
        if not isinstance(images, Sequence) or isinstance(images, str | bytes):
            raise TypeError(f"images must be a sequence of arrays, got {type(images).__name__}")
        self._images = images
        self._labels = None if labels is None else [int(v) for v in labels]
        if self._labels is not None and len(self._labels) != len(images):
            raise ValueError(f"labels has {len(self._labels)} entries for {len(images)} images")
        bad = [v for v in self._labels or () if not -1 <= v < MAX_CLASSES]
        if bad:
            raise ValueError(
                f"labels must be class indices in [0, {MAX_CLASSES}) (MAX_CLASSES) or -1 for none, "
                f"got {bad[:5]}"
            )
        if classes is None:
            n = max(self._labels, default=-1) + 1 if self._labels else 0
            classes = [str(i) for i in range(n)]
        self.classes = list(classes)

    def __len__(self) -> int:
        return len(self._images)

    def image(self, index: int) -> Any:
        return self._images[index]

    def annotation(self, index: int) -> Annotation:
        return Annotation(label=None if self._labels is None else self._labels[index])

    def name(self, index: int) -> str:
        """``"image {index}"``: how warnings and errors name image ``index``."""
        return f"image {index}"


class FilesSource:
    """Image files given by path, read on access. No annotations.

    Args:
        paths: the files, in the order to present them.
    """

    def __init__(self, paths: Sequence[str | os.PathLike[str]]) -> None:
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise ValueError("paths must name at least one image file")
        self.classes: list[str] = []

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, index: int) -> Image.Image:
        with Image.open(self.paths[index]) as img:
            img.load()
            return img

    def annotation(self, index: int) -> Annotation:
        return Annotation()

    def name(self, index: int) -> str:
        """The path of image ``index``, for warnings and errors."""
        return str(self.paths[index])


class FolderSource(FilesSource):
    """Every image file under a folder, recursively, in sorted path order.

    Reads files whose extension is in :data:`IMAGE_EXTENSIONS` (any case);
    hidden files and folders are skipped. A symlink that leads nowhere (broken,
    or a loop) is listed, so that the load counts it as unreadable. No annotations.

    Args:
        root: the folder.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"source folder {str(self.root)!r} does not exist or is not a folder")
        # Broken and looping symlinks are listed too: reading them fails, and the load counts it.
        self.paths = sorted(
            p
            for p in self.root.rglob("*")
            if p.suffix.lower() in IMAGE_EXTENSIONS
            and (p.is_file() or (p.is_symlink() and not p.is_dir()))
            and not any(part.startswith(".") for part in p.relative_to(self.root).parts)
        )
        if not self.paths:
            raise ValueError(
                f"source folder {str(self.root)!r} holds no image files ({', '.join(IMAGE_EXTENSIONS)})"
            )
        self.classes: list[str] = []


#: What a path string given as ``source=`` is read as, by how its name ends.
SOURCE_SUFFIXES: dict[str, str] = {
    ".jsonl": "CaptionManifest",
    ".csv": "CaptionManifest",
    ".tsv": "CaptionManifest",
    ".tar": "WebDatasetSource",
    ".tar.gz": "WebDatasetSource",
    ".tgz": "WebDatasetSource",
    ".json": "CocoSource (instances or captions, by its keys)",
    ".gif": "VideoFramesSource",
    ".webp": "VideoFramesSource",
    ".tif": "VideoFramesSource",
    ".tiff": "VideoFramesSource",
    ".mp4": "VideoFramesSource",
    ".avi": "VideoFramesSource",
    ".mov": "VideoFramesSource",
    ".mkv": "VideoFramesSource",
    ".webm": "VideoFramesSource",
}


class SubsetSource:
    """Some images of another source, by index (everything else delegated to it).

    Args:
        source: an :class:`ImageSource`.
        indices: indices into ``source``, in the order to present them.
    """

    def __init__(self, source: Any, indices: Sequence[int]) -> None:
        self.source = source
        self.indices = [int(i) for i in indices]
        n = len(source)
        bad = [i for i in self.indices if not 0 <= i < n]
        if bad:
            raise ValueError(f"indices must lie in [0, {n}), got {bad[:5]}")

    def __len__(self) -> int:
        return len(self.indices)

    def image(self, index: int) -> Any:
        return self.source.image(self.indices[index])

    def annotation(self, index: int) -> Annotation:
        return self.source.annotation(self.indices[index])

    def name(self, index: int) -> str:
        """The underlying source's name of image ``index`` (``"image {i}"`` if it names none)."""
        i = self.indices[index]
        return self.source.name(i) if hasattr(self.source, "name") else f"image {i}"

    def __getattr__(self, name: str) -> Any:
        if name == "source":  # not yet set (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.source, name)


def _frame_count(path: Path) -> int:
    """Frames of an image file (1 for a still image, or one PIL cannot open)."""
    try:
        with Image.open(path) as img:
            return int(getattr(img, "n_frames", 1))
    except (OSError, ValueError, SyntaxError):
        return 1


def _path_source(path: Path, strict: bool) -> ImageSource:
    """The reader for an existing file, chosen by its suffix (see :data:`SOURCE_SUFFIXES`).

    A still image file (one of :data:`IMAGE_EXTENSIONS`; a ``.webp`` or ``.tif``
    with one frame) is a one-image :class:`FilesSource`.
    """
    from vpt_env.data import readers

    name = path.name.lower()
    suffix = path.suffix.lower()
    if suffix in IMAGE_EXTENSIONS and (suffix not in SOURCE_SUFFIXES or _frame_count(path) == 1):
        return FilesSource([path])
    kind = next(
        (SOURCE_SUFFIXES[s] for s in sorted(SOURCE_SUFFIXES, key=len, reverse=True) if name.endswith(s)), None
    )
    if kind == "CaptionManifest":
        return readers.CaptionManifest(path, strict=strict)
    if kind == "WebDatasetSource":
        return readers.WebDatasetSource(path, strict=strict)
    if kind is not None and kind.startswith("CocoSource"):
        return readers.CocoSource.from_json(path, strict=strict)
    if kind == "VideoFramesSource":
        return readers.VideoFramesSource(path, strict=strict)
    raise ValueError(
        f"source file {str(path)!r} is not a format source= reads by name "
        f"({', '.join(SOURCE_SUFFIXES)}); pass a folder, or a reader such as "
        "vpt_env.ImageFolderSource(root)"
    )


def resolve_source(source: Any, strict: bool = False) -> ImageSource:
    """Turn the ``source=`` argument of an env into an :class:`ImageSource`.

    Accepts None or an embedded dataset name (``"photos"``), a folder path
    (:class:`FolderSource`), an image file path (``.jpg``, ``.png``, ...; a
    still ``.webp`` or ``.tif``), a file path whose name picks a reader (``.jsonl``,
    ``.csv``, ``.tsv``: captions manifest; ``.tar``, ``.tar.gz``: WebDataset
    shard; ``.json``: COCO instances or captions, by its keys; ``.gif``,
    ``.webp``, ``.tif``, ``.mp4``, ...: video clip), a brace pattern of shards
    (``"shards/cc-{000..009}.tar"``), a sequence of arrays/tensors/PIL
    images, an array batch, one PIL image, or an object implementing :class:`ImageSource`
    (e.g. ``ImageFolderSource(root)``, which is never chosen by name: a
    folder stays a :class:`FolderSource`).

    Args:
        source: as above.
        strict: passed to the reader a path string selects.
    """
    from vpt_env.data.embedded import EMBEDDED, embedded_source

    if source is None:
        return embedded_source("photos")
    if isinstance(source, str) and source in EMBEDDED:
        return embedded_source(source)
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if not path.exists():
            from vpt_env.data.readers import WebDatasetSource, expand_braces

            if isinstance(source, str) and expand_braces(source) != [source]:
                return WebDatasetSource(source, strict=strict)
            raise ValueError(
                f"source {str(source)!r} is neither an embedded dataset {sorted(EMBEDDED)} "
                "nor an existing folder or file"
            )
        if path.is_dir():
            return FolderSource(path)
        return _path_source(path, strict)
    if isinstance(source, ImageSource):
        return source
    if isinstance(source, np.ndarray | torch.Tensor | Image.Image) or (
        isinstance(source, Sequence) and not isinstance(source, str | bytes)
    ):
        return ArraySource(source)
    raise TypeError(
        "source must be None, an embedded dataset name, a folder or file path, a sequence of "
        f"arrays, an array, a PIL image, or an ImageSource, got {type(source).__name__}"
    )


def _iter_readable(
    src: ImageSource, strict: bool, min_side: int, max_side: int, progress: Progress | None = None
) -> Iterator[tuple[int, np.ndarray, Annotation]]:
    """``(index, image, annotation)`` for every readable image of ``src``; skips are counted
    (``progress``, when given, counts every image tried)."""
    bad: list[str] = []
    # Readers (vpt_env.data.readers) count what they skip themselves and warn
    # once with everything they met, construction included: hand them the
    # unreadable images instead of warning a second time here.
    record = getattr(src, "record_problem", None)
    strict = strict or getattr(src, "strict", False) is True
    for i in range(len(src)):
        name = src.name(i) if hasattr(src, "name") else f"image {i}"
        try:
            arr = fit_size(to_rgb_uint8(src.image(i)), min_side, max_side)
            ann = src.annotation(i)
        except (OSError, ValueError, TypeError, SyntaxError, EOFError, Image.DecompressionBombError) as err:
            if strict:
                raise ImageReadError(f"cannot read {name}: {err}") from err
            if record is not None:
                record("unreadable image", f"{name} ({type(err).__name__}: {err})")
            else:
                bad.append(f"{name} ({type(err).__name__}: {err})")
            continue
        finally:
            if progress is not None:
                progress.update()
        yield i, arr, ann
    if record is not None and hasattr(src, "warn_summary"):
        src.warn_summary()
    if bad:
        warnings.warn(
            f"skipped {len(bad)} unreadable image(s) of {len(src)}; first: {bad[0]}",
            RuntimeWarning,
            stacklevel=3,
        )


def load_images(
    source: Any,
    min_side: int = 1,
    max_side: int = MAX_IMAGE_SIDE,
    strict: bool = False,
) -> tuple[list[np.ndarray], Annotations]:
    """Read every image of a source as RGB uint8, with its annotations.

    Args:
        source: anything :func:`resolve_source` takes.
        min_side: upsample images whose shorter side is below this.
        max_side: downsample images whose longer side is above this.
        strict: raise :class:`ImageReadError` naming the first unreadable
            image instead of skipping it (skipped images are counted in one
            ``RuntimeWarning``).

    Returns:
        The images and their :class:`Annotations`.

    Raises:
        ValueError: if no image could be read.
    """
    if isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 8:
        raise ValueError(f"max_image_side must be an int >= 8, got {max_side!r}")
    if min_side > max_side:
        raise ValueError(f"max_image_side ({max_side}) must be at least the view size ({min_side})")
    src = resolve_source(source, strict=strict)
    images: list[np.ndarray] = []
    anns: list[Annotation] = []
    for _, arr, ann in _iter_readable(src, strict, min_side, max_side):
        images.append(arr)
        anns.append(ann)
    if not images:
        raise _no_readable_image(src)
    return images, Annotations(anns, getattr(src, "classes", ()))


def _no_readable_image(src: Any) -> ValueError:
    """The error of a source none of whose images could be read, with what its reader counted."""
    why = f"; {src.summary()}" if getattr(src, "skipped", None) and hasattr(src, "summary") else ""
    return ValueError(f"source holds no readable image ({len(src)} listed){why}")
