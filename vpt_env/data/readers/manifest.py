"""Caption manifests: JSONL or CSV/TSV files listing image paths with captions."""

from __future__ import annotations

import csv
import itertools
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from vpt_env.data.annotations import Annotation
from vpt_env.data.readers._base import MISSING, Reader, open_image, parse_json

__all__ = ["CAPTION_KEYS", "IMAGE_KEYS", "CaptionManifest"]

#: Keys (JSONL) or header names (CSV) that name the image file; the first present wins.
IMAGE_KEYS: tuple[str, ...] = ("image", "file_name", "filename", "path", "filepath", "image_path", "img")
#: Keys or header names holding captions (a string, or in JSONL a list of strings);
#: every one present is read. CSV headers starting with ``caption`` count too
#: (``caption_1``, ``caption_2``...).
CAPTION_KEYS: tuple[str, ...] = ("captions", "caption", "text", "texts")

_MALFORMED_LINE = "malformed line"


class CaptionManifest(Reader):
    """Images listed in a JSONL or CSV manifest, with their captions.

    Formats (chosen by the file's extension):

    * ``.jsonl``: one JSON object per line, e.g.
      ``{"image": "a.jpg", "caption": "a cat"}`` or
      ``{"file_name": "a.jpg", "captions": ["a cat", "a pet"]}``; the image
      key is one of :data:`IMAGE_KEYS`, captions come from every key of
      :data:`CAPTION_KEYS` present. Blank lines are ignored.
    * ``.csv`` (``.tsv``: tab-separated): a header row with an image column
      (a name in :data:`IMAGE_KEYS`, any case) and zero or more caption
      columns (:data:`CAPTION_KEYS`, or names starting with ``caption``);
      empty caption cells are ignored. Quoted cells may span lines.

    Lines naming the same image are merged (captions appended in file order),
    so a one-caption-per-line manifest like COCO's gives every image all its
    captions. Relative paths are resolved against ``image_root``, by default
    the manifest's folder. An image with no caption is kept (unlabelled).

    Bad input: a malformed line (invalid JSON, not an object, no image key,
    a caption that is not text, a CSV row with the wrong number of cells), a
    missing image file, and non-UTF-8 bytes (decoded with replacement
    characters) each raise ``ValueError`` naming the manifest and the line
    when ``strict``, else are skipped and counted in :attr:`skipped`. A CSV row that runs over
    several lines and is malformed there (a quote left open swallows the rows after it) is one
    malformed line, and the lines after its first are read again. A
    manifest left with no image raises ``ValueError`` at construction.

    Args:
        path: the ``.jsonl``, ``.csv`` or ``.tsv`` manifest.
        image_root: folder that relative image paths are relative to
            (default: the manifest's folder).
        strict: raise on the first bad line or missing file.

    Example:
        >>> import tempfile, pathlib
        >>> from PIL import Image
        >>> with tempfile.TemporaryDirectory() as d:
        ...     Image.new("RGB", (8, 8)).save(f"{d}/a.png")
        ...     _ = pathlib.Path(d, "m.jsonl").write_text(
        ...         '{"image": "a.png", "caption": "black"}\\n{"image": "a.png", "text": "dark"}\\n')
        ...     src = CaptionManifest(f"{d}/m.jsonl")
        ...     (len(src), src.annotation(0).captions)
        (1, ['black', 'dark'])
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        image_root: str | os.PathLike[str] | None = None,
        strict: bool = False,
    ) -> None:
        super().__init__(strict)
        self.path = Path(path)
        if not self.path.is_file():
            raise ValueError(f"manifest {str(self.path)!r} does not exist or is not a file")
        self.image_root = Path(image_root) if image_root is not None else self.path.parent
        suffix = self.path.suffix.lower()
        if suffix not in (".jsonl", ".csv", ".tsv"):
            raise ValueError(f"manifest {str(self.path)!r}: expected a .jsonl, .csv or .tsv file")
        self.classes = []
        self.paths: list[Path] = []
        self.captions: list[list[str]] = []
        self._lines: list[int] = []  # the first line naming each image
        seen: dict[str, int] = {}
        rows = self._jsonl_rows() if suffix == ".jsonl" else self._csv_rows("\t" if suffix == ".tsv" else ",")
        for lineno, image, caps in rows:
            if image in seen:
                self.captions[seen[image]].extend(caps)
                continue
            seen[image] = len(self.paths)
            self.paths.append(self.image_root / image)
            self.captions.append(list(caps))
            self._lines.append(lineno)
        keep = []
        for i, p in enumerate(self.paths):
            if p.is_file():
                keep.append(i)
            else:
                self._problem(MISSING, f"{self.path}, line {self._lines[i]}: image file {str(p)!r} not found")
        self.paths = [self.paths[i] for i in keep]
        self.captions = [self.captions[i] for i in keep]
        self._lines = [self._lines[i] for i in keep]
        if not self.paths:
            problems = ", ".join(f"{n} {r}" for r, n in self.skipped.items()) or "no entries"
            raise ValueError(f"manifest {str(self.path)!r} lists no usable image ({problems})")

    # -- parsing ------------------------------------------------------------------------

    def _malformed(self, lineno: int, what: str) -> None:
        self._problem(_MALFORMED_LINE, f"{self.path}, line {lineno}: {what}")

    def _text_lines(self) -> Iterator[tuple[int, str]]:
        # Lines are decoded one by one so that bad bytes are reported with their line.
        for lineno, raw in enumerate(self.path.read_bytes().splitlines(keepends=True), 1):
            yield lineno, self._decode(raw, f"{self.path}, line {lineno}")

    def _jsonl_rows(self) -> Iterator[tuple[int, str, list[str]]]:
        for lineno, text in self._text_lines():
            if not text.strip():
                continue
            try:
                obj = parse_json(text)
            except json.JSONDecodeError as err:
                self._malformed(lineno, f"invalid JSON ({err.msg}, column {err.colno})")
                continue
            except ValueError as err:
                self._malformed(lineno, str(err))
                continue
            if not isinstance(obj, dict):
                self._malformed(lineno, f"expected a JSON object, got {type(obj).__name__}")
                continue
            row = self._row(obj, lineno)
            if row is not None:
                yield row

    def _row(self, obj: dict[str, Any], lineno: int) -> tuple[int, str, list[str]] | None:
        key = next((k for k in IMAGE_KEYS if k in obj), None)
        if key is None:
            self._malformed(lineno, f"no image key (one of {', '.join(IMAGE_KEYS)})")
            return None
        image = obj[key]
        if not isinstance(image, str) or not image.strip():
            self._malformed(lineno, f"{key!r} must be a non-empty path string, got {image!r}")
            return None
        caps: list[str] = []
        for ck in CAPTION_KEYS:
            if ck not in obj or obj[ck] is None:
                continue
            value = obj[ck]
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
                self._malformed(lineno, f"{ck!r} must be a string or a list of strings, got {value!r}")
                return None
            caps.extend(c.strip() for c in value if c.strip())
        return lineno, image.strip(), caps

    def _csv_rows(self, delimiter: str) -> Iterator[tuple[int, str, list[str]]]:
        # One physical line per item, so csv's line_num counts lines.
        lines = [t for _, t in self._text_lines()]
        header: list[str] | None = None
        img_col, cap_cols = -1, []
        start = 0  # the line (0-based) the reader starts at; moved past a row that swallowed lines
        while start < len(lines):
            reader = csv.reader(itertools.islice(lines, start, None), delimiter=delimiter)
            restart = None
            while True:
                first = start + reader.line_num  # 0-based first line of the next row
                try:
                    cells = next(reader)
                except StopIteration:
                    break
                except csv.Error as err:
                    if header is None:
                        raise ValueError(
                            f"{self.path}, line {first + 1}: unreadable CSV header ({err})"
                        ) from err
                    self._malformed(first + 1, f"unreadable CSV row ({err})")
                    if start + reader.line_num - first > 1:
                        # It failed after swallowing lines (e.g. an open quote past csv's field size
                        # limit): read those lines again, after the bad one.
                        restart = first + 1
                        break
                    continue
                end = start + reader.line_num
                if (
                    end - first > 1
                    and header is not None
                    and not self._row_ok(lines[first:end], cells, header, delimiter)
                ):
                    # A quote left open swallows the rows after it: count this one, read those again.
                    self._malformed(
                        first + 1,
                        f"a quoted cell runs on to line {end} without closing properly (a quote left "
                        "open?); the lines after this one are read again",
                    )
                    restart = first + 1
                    break
                if header is None:
                    header = [c.strip().lower() for c in cells]
                    img_col = next((header.index(k) for k in IMAGE_KEYS if k in header), -1)
                    if img_col < 0:
                        raise ValueError(
                            f"{self.path}, line {first + 1}: the header {cells} has no image column "
                            f"(one of {', '.join(IMAGE_KEYS)})"
                        )
                    cap_cols = [
                        i
                        for i, h in enumerate(header)
                        if i != img_col and (h in CAPTION_KEYS or h.startswith("caption"))
                    ]
                    continue
                if not any(c.strip() for c in cells):
                    continue
                if len(cells) != len(header):
                    self._malformed(first + 1, f"expected {len(header)} cells, got {len(cells)}")
                    continue
                image = cells[img_col].strip()
                if not image:
                    self._malformed(first + 1, "empty image path")
                    continue
                yield first + 1, image, [cells[i].strip() for i in cap_cols if cells[i].strip()]
            if restart is None:
                break
            start = restart
        if header is None:
            raise ValueError(f"manifest {str(self.path)!r} is empty (no CSV header)")

    @staticmethod
    def _row_ok(lines: list[str], cells: list[str], header: list[str], delimiter: str) -> bool:
        """Whether a row over several lines is well formed: the right number of cells, and every
        quote closed and followed by a delimiter or the end of the row (csv's ``strict`` mode)."""
        if len(cells) != len(header):
            return False
        try:
            list(csv.reader(lines, delimiter=delimiter, strict=True))
        except csv.Error:
            return False
        return True

    # -- the ImageSource protocol -------------------------------------------------------

    def __repr__(self) -> str:
        return f"CaptionManifest({str(self.path)!r})"

    def _size_text(self) -> str:
        n = sum(bool(c) for c in self.captions)
        return f"{len(self)} images, {n} captioned"

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, index: int) -> Image.Image:
        """Image ``index``, decoded."""
        return open_image(self.paths[index])

    def annotation(self, index: int) -> Annotation:
        """The captions of image ``index`` (possibly none)."""
        return Annotation(captions=list(self.captions[index]))

    def name(self, index: int) -> str:
        """The image's path and the manifest line that first names it."""
        return f"{self.paths[index]} ({self.path.name}, line {self._lines[index]})"
