"""What every dataset reader shares: problem counting, the one summary warning, iteration.

Bad input is handled the same way by every reader:

* ``strict=True``: the first problem that loses or changes data raises a
  ``ValueError`` naming the file and the line (or entry, or tar member);
* ``strict=False`` (default): the sample is skipped (or the text decoded with
  replacement characters) and the problem counted under a reason in
  :attr:`Reader.skipped`.

Geometry repairs (a box clipped to its image, a degenerate box dropped) are
counted in both modes and never raise: real annotation files are full of boxes
that overhang the image by a fraction of a pixel.

A reader warns once in its lifetime: one ``RuntimeWarning`` holding
:meth:`Reader.summary`, at the end of its first full pass (``load_images``,
hence ``gym.make``, or iterating the reader), covering what construction
found as well as what the pass found. Warning at construction as well would
give two warnings for one ``gym.make``.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vpt_env.data.annotations import Annotation
from vpt_env.data.image_convert import ImageReadError, to_rgb_uint8

__all__ = ["READ_ERRORS", "Reader", "natural_key", "open_image", "parse_json"]

#: Exceptions that mean "this one sample cannot be read" (the pass goes on).
READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    TypeError,
    SyntaxError,
    EOFError,
    Image.DecompressionBombError,
)

# Reasons shared by several readers (the keys of ``Reader.skipped``).
MALFORMED = "malformed entry"
MISSING = "missing image file"
UNREADABLE = "unreadable image"
NON_UTF8 = "non-UTF-8 text (decoded with replacement)"
CLIPPED = "box clipped to the image"
DEGENERATE = "degenerate box dropped"

_MAX_DETAIL = 300


def natural_key(name: str) -> list[Any]:
    """Sort key that orders embedded numbers by value: ``f2 < f10``.

    >>> sorted(["f10.jpg", "f2.jpg", "F1.jpg"], key=natural_key)
    ['F1.jpg', 'f2.jpg', 'f10.jpg']
    """
    return [(0, int(tok), "") if tok.isdigit() else (1, 0, tok.lower()) for tok in re.split(r"(\d+)", name)]


def parse_json(text: str) -> Any:
    """``json.loads``, with nesting too deep for Python's parser a ``ValueError`` like bad syntax.

    Raises:
        json.JSONDecodeError: invalid JSON.
        ValueError: nested deeper than the parser's recursion limit.
    """
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply to parse") from None


def open_image(file: str | Path | Any) -> Image.Image:
    """Open and fully decode an image (a path or a binary file object).

    Decoding here, not later, makes a truncated file fail inside the reader's
    ``image(i)``, where the pass counts it.
    """
    try:
        with Image.open(file) as img:
            img.load()
            return img
    except Image.UnidentifiedImageError:
        if isinstance(file, str | Path):
            raise
        # PIL names the in-memory buffer by its address: useless, and different every time.
        raise Image.UnidentifiedImageError("cannot identify the image format") from None


class Reader:
    """Base of the dataset readers (an :class:`~vpt_env.data.ImageSource`).

    Subclasses set ``classes`` and implement ``__len__``, ``image``,
    ``annotation`` and ``name``; they call :meth:`_problem` for bad input.

    Args:
        strict: raise on the first problem instead of skipping and counting it.

    Attributes:
        strict: as given.
        skipped: reason -> how many samples (or lines, boxes, members) it hit.
        classes: names of the annotation space (indices of labels and box labels).
    """

    classes: list[str]

    def __init__(self, strict: bool = False) -> None:
        if not isinstance(strict, bool):
            raise TypeError(f"strict must be a bool, got {type(strict).__name__}")
        self.strict = strict
        self.skipped: dict[str, int] = {}
        self._first: dict[str, str] = {}
        self._seen: set[tuple[str, str]] = set()
        self._warned = False

    # -- the ImageSource protocol (subclasses) ------------------------------------------

    def __len__(self) -> int:
        raise NotImplementedError

    def image(self, index: int) -> Any:
        """Image ``index`` (a decoded PIL image or an array)."""
        raise NotImplementedError

    def annotation(self, index: int) -> Annotation:
        """Annotation of image ``index``."""
        raise NotImplementedError

    def name(self, index: int) -> str:
        """Where image ``index`` comes from, for messages."""
        return f"image {index}"

    # -- bad input ----------------------------------------------------------------------

    def record_problem(self, reason: str, detail: str) -> None:
        """Count one problem under ``reason``; the first ``detail`` is kept for the summary.

        Never raises: ``load_images`` calls it for the images it cannot read
        (it raises itself when strict). A repeat of the same reason and detail
        (the same sample met again by a second pass) is not counted twice.
        """
        if (reason, detail) in self._seen:
            return
        self._seen.add((reason, detail))
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        if reason not in self._first:
            self._first[reason] = detail if len(detail) <= _MAX_DETAIL else detail[: _MAX_DETAIL - 3] + "..."

    def _problem(self, reason: str, detail: str, *, always_count: bool = False) -> None:
        """Raise ``ValueError(detail)`` when strict (unless ``always_count``), else count it."""
        if self.strict and not always_count:
            raise ValueError(detail)
        self.record_problem(reason, detail)

    def _decode(self, data: bytes, where: str, multiline: bool = False) -> str:
        """UTF-8 text (a leading BOM dropped); bad bytes are a problem, never a crash.

        ``multiline``: ``data`` is a whole file, so name the line of the first bad byte.
        """
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            line = data.count(b"\n", 0, err.start) + 1
            at = f"line {line}" if multiline else f"byte {err.start}"
            msg = f"{where}, {at}: not valid UTF-8 ({err.reason})"
            self._problem(NON_UTF8, msg)
            return data.decode("utf-8-sig", errors="replace")

    def summary(self) -> str:
        """One line: what the reader holds and every problem counted, with its first instance."""
        head = f"{self!r}: {self._size_text()}"
        if not self.skipped:
            return f"{head}; no problems"
        parts = [f"{reason}: {n} (first: {self._first[reason]})" for reason, n in self.skipped.items()]
        return f"{head}; " + "; ".join(parts)

    def _size_text(self) -> str:
        return f"{len(self)} images"

    def warn_summary(self) -> None:
        """Issue the one ``RuntimeWarning`` (with :meth:`summary`) if anything was counted.

        Later calls do nothing: a reader warns at most once.
        """
        if self.skipped and not self._warned:
            self._warned = True
            warnings.warn(self.summary(), RuntimeWarning, stacklevel=3)

    # -- iteration ----------------------------------------------------------------------

    def __iter__(self) -> Iterator[tuple[np.ndarray, Annotation]]:
        """Every readable sample as ``(RGB uint8 (H, W, 3) array, Annotation)``, in order.

        Unreadable images are skipped and counted (raised as
        :class:`~vpt_env.data.ImageReadError` when strict); the summary is
        warned once at the end.
        """
        for i in range(len(self)):
            try:
                arr = to_rgb_uint8(self.image(i))
                ann = self.annotation(i)
            except READ_ERRORS as err:
                if self.strict:
                    raise ImageReadError(f"cannot read {self.name(i)}: {err}") from err
                self.record_problem(UNREADABLE, f"{self.name(i)} ({type(err).__name__}: {err})")
                continue
            yield arr, ann
        self.warn_summary()
