"""WebDataset tar shards (as CC12M, LAION, img2dataset ship them): streamed, or indexed for random access."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import posixpath
import tarfile
from array import array
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image

from vpt_env.data.annotations import MAX_CLASSES, Annotation
from vpt_env.data.image_convert import ImageReadError, to_rgb_uint8
from vpt_env.data.readers._base import MALFORMED, READ_ERRORS, UNREADABLE, Reader, open_image, parse_json
from vpt_env.data.readers.braces import expand_braces
from vpt_env.data.readers.manifest import CAPTION_KEYS

__all__ = ["IMAGE_MEMBER_EXTENSIONS", "WebDatasetSource", "expand_braces"]

#: Member extensions read as the sample's image (the first present, in this order).
IMAGE_MEMBER_EXTENSIONS: tuple[str, ...] = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "ppm")
_TEXT_MEMBERS = ("txt", "json", "cls")
_LABEL_KEYS = ("label", "cls", "class")

_NO_IMAGE = "sample without an image member"
_IMAGE_EXTS_TEXT = "/".join(IMAGE_MEMBER_EXTENSIONS)
_BAD_SHARD = "unreadable or truncated shard (the sample read then and the rest of the shard skipped)"
_MISSING_SHARD = "missing shard"


def _split_member(name: str) -> tuple[str, str] | None:
    """``dir/abc.seg.png`` -> ``("dir/abc", "seg.png")``; None for names without an extension."""
    folder, base = posixpath.split(name)
    if base.startswith(".") or "." not in base:
        return None
    stem, ext = base.split(".", 1)
    return posixpath.join(folder, stem), ext.lower()


def _open_shard(path: Path) -> IO[bytes]:
    """A seekable binary stream of the (decompressed) tar bytes."""
    name = path.name.lower()
    if name.endswith((".gz", ".tgz")):
        return gzip.open(path, "rb")
    if name.endswith(".bz2"):
        return bz2.open(path, "rb")
    if name.endswith(".xz"):
        return lzma.open(path, "rb")
    return open(path, "rb")  # kept open in the handle cache


class _TarInfo(tarfile.TarInfo):
    """Notes on its ``TarFile`` (``vpt_end``) how the member list ended: None at the end-of-archive
    marker, else what went wrong. ``tarfile`` itself ends the list silently at a file cut at a
    member boundary or inside a header, which would lose the samples after the cut uncounted."""

    @classmethod
    def fromtarfile(cls, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            return super().fromtarfile(tarfile_)
        except tarfile.EOFHeaderError:  # a zero block: the end-of-archive marker
            tarfile_.vpt_end = None  # type: ignore[attr-defined]
            raise
        except tarfile.EmptyHeaderError:
            tarfile_.vpt_end = "the file ends without the end-of-archive marker"  # type: ignore[attr-defined]
            raise
        except tarfile.TruncatedHeaderError:
            tarfile_.vpt_end = "the file ends inside a member header"  # type: ignore[attr-defined]
            raise
        except tarfile.HeaderError as err:
            tarfile_.vpt_end = f"a corrupt member header ({err})"  # type: ignore[attr-defined]
            raise


class _Truncated(tarfile.TarError):
    """A shard whose member list did not end at the end-of-archive marker."""


def _open_tar(source: Path | IO[bytes], stream: bool) -> tarfile.TarFile:
    """A shard path opened for streaming (``r|*``), or a seekable file for random access (``r:``)."""
    if stream:
        return tarfile.open(source, mode="r|*", tarinfo=_TarInfo)
    return tarfile.open(fileobj=source, mode="r:", tarinfo=_TarInfo)  # type: ignore[arg-type]


def _members(tf: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """The members of a shard opened by :func:`_open_tar`; raises :class:`_Truncated` at the end of a
    shard that lacks the end-of-archive marker."""
    if not hasattr(tf, "vpt_end"):
        tf.vpt_end = "the member list ended early"  # type: ignore[attr-defined]
    for m in tf:
        tf.vpt_end = "the member list ended early"  # type: ignore[attr-defined]
        yield m
    if tf.vpt_end is not None:  # type: ignore[attr-defined]
        raise _Truncated(f"truncated or corrupt: {tf.vpt_end} after {len(tf.members)} members")  # type: ignore[attr-defined]


def _groups(members: Iterator[tuple[str, str | None, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Group consecutive members by key, as WebDataset does.

    A group is complete when a member of another key begins. A member that could not be read
    (``ext`` None, its error as payload) and the end of a truncated shard raise: the group being
    read then is lost with the rest of the shard (the caller counts it), so streaming and random
    access keep the same samples of a damaged shard.
    """
    key, group = None, {}
    for k, ext, payload in members:
        if k != key:
            if key is not None:
                yield key, group
            key, group = k, {}
        if ext is None:
            raise payload
        group.setdefault(ext, payload)
    if key is not None:
        yield key, group


def _wanted(ext: str) -> bool:
    return ext in IMAGE_MEMBER_EXTENSIONS or ext in _TEXT_MEMBERS


class WebDatasetSource(Reader):
    """Samples of WebDataset tar shards: ``key.jpg`` plus optional ``key.txt``, ``key.json``, ``key.cls``.

    Members are grouped into samples by key (the member's path up to the first
    dot of its file name), consecutive members with one key forming one
    sample, as in the ``webdataset`` library. A sample's image is its first
    member in :data:`IMAGE_MEMBER_EXTENSIONS`; its captions are the ``.txt``
    member's text and the ``.json`` member's ``caption``/``captions``/``text``
    fields; its label is the ``.cls`` member's integer, or the ``.json``
    member's ``label``/``cls``/``class`` integer. ``classes`` are the names
    given, else ``"0"``, ``"1"``, ... up to the largest label found.

    Streamed: iterating the source reads the shards one after another with
    ``tarfile`` in streaming mode (``r|*``: compressed shards too), holding
    one sample at a time. Random access (``len``, ``image(i)``,
    ``annotation(i)``, ``classes``) first builds an index of member offsets
    (one pass over the tar headers and the small text members; images are
    not read) and then reads each image by seeking into its shard. Nothing is
    extracted to disk, and no image is held in memory by the source. Indexed
    access to compressed shards works but seeks backwards slowly.

    Bad input: a missing shard, an unreadable or truncated shard (the rest of
    it is skipped), a sample without an image member, a malformed ``.json``
    or ``.cls`` member and non-UTF-8 text raise ``ValueError`` naming the
    shard and member when ``strict``, else are skipped and counted. Corrupt
    images are skipped and counted when read (by iteration or by
    ``load_images``). No shard with an image raises ``ValueError`` at
    construction.

    Args:
        urls: a shard path, a list of them, or a brace pattern
            (``"shards/cc-{000..009}.tar"``, see :func:`expand_braces`).
        classes: names of the label indices (default: the label numbers).
        strict: raise on the first bad shard, sample or member.
    """

    def __init__(
        self,
        urls: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        classes: Sequence[str] | None = None,
        strict: bool = False,
    ) -> None:
        super().__init__(strict)
        single = isinstance(urls, str | os.PathLike)
        items = [urls] if single else list(urls)
        paths = [Path(p) for u in items for p in expand_braces(os.fspath(u))]
        if not paths:
            raise ValueError("WebDatasetSource needs at least one shard")
        self.urls: str | list[str] = os.fspath(urls) if single else [os.fspath(u) for u in items]
        self.shards: list[Path] = []
        for p in paths:
            if p.is_file():
                self.shards.append(p)
            else:
                self._problem(_MISSING_SHARD, f"shard {str(p)!r} not found")
        self._classes = None if classes is None else list(classes)
        self._index: dict[str, Any] | None = None
        self._files: dict[int, IO[bytes]] = {}
        found, why = self._any_sample() if self.shards else (False, "")
        if not found:
            raise ValueError(
                f"{self!r}: no readable sample with an image member "
                f"({len(self.shards)} of {len(paths)} shards found; image members: "
                f"{', '.join(IMAGE_MEMBER_EXTENSIONS)}){why}"
            )

    # -- reading shards -----------------------------------------------------------------

    @staticmethod
    def _stream_members(tf: tarfile.TarFile) -> Iterator[tuple[str, str | None, Any]]:
        """(key, ext, bytes) of the wanted members of a streamed shard, in order; a member whose
        bytes cannot be read ends it as (key, None, error)."""
        for m in _members(tf):
            split = _split_member(m.name) if m.isfile() else None
            if split is None or not _wanted(split[1]):
                continue
            f = tf.extractfile(m)
            try:
                data = f.read() if f is not None else b""
            except (tarfile.TarError, OSError, EOFError) as err:
                yield split[0], None, err
                return
            yield split[0], split[1], data

    @staticmethod
    def _offset_members(tf: tarfile.TarFile) -> Iterator[tuple[str, str | None, Any]]:
        """(key, ext, (offset, size)) of the wanted members of a seekable shard."""
        for m in _members(tf):
            split = _split_member(m.name) if m.isfile() else None
            if split is not None and _wanted(split[1]):
                yield split[0], split[1], (m.offset_data, m.size)

    def _any_sample(self) -> tuple[bool, str]:
        """Whether a shard holds a sample with an image; else the first shard error, for the message."""
        first = ""
        for shard in self.shards:
            try:
                with _open_tar(shard, stream=True) as tf:
                    for _, group in _groups(self._stream_members(tf)):
                        if any(e in group for e in IMAGE_MEMBER_EXTENSIONS):
                            return True, ""
            except (tarfile.TarError, OSError, EOFError) as err:
                # counted when the shard is read for real
                what = str(err) if isinstance(err, _Truncated) else f"{type(err).__name__}: {err}"
                first = first or f"; shard {str(shard)!r}: {what}"
        return False, first

    def _shard_problem(self, shard: Path, err: BaseException) -> None:
        what = str(err) if isinstance(err, _Truncated) else f"{type(err).__name__}: {err}"
        self._problem(_BAD_SHARD, f"shard {str(shard)!r}: {what}")

    def _read(self, shard_no: int, offset: int, size: int) -> bytes:
        f = self._files.get(shard_no)
        if f is None:
            if len(self._files) >= 8:  # bound the open files; shards are read mostly in order
                self._files.pop(next(iter(self._files))).close()
            f = self._files[shard_no] = _open_shard(self.shards[shard_no])
        f.seek(offset)
        data = f.read(size)
        if len(data) != size:
            raise OSError(f"truncated member: {len(data)} of {size} bytes")
        return data

    def close(self) -> None:
        """Close the shard files kept open for random access (reopened when needed)."""
        for f in self._files.values():
            f.close()
        self._files.clear()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the file objects may already be gone
            pass

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_files"] = {}
        return state

    # -- samples ------------------------------------------------------------------------

    def _text(
        self, where: str, txt: bytes | None, js: bytes | None, cls: bytes | None
    ) -> tuple[list[str], int | None]:
        """Captions and label from a sample's text members."""
        captions: list[str] = []
        label: int | None = None
        if txt is not None:
            text = self._decode(txt, f"{where}.txt").strip()
            if text:
                captions.append(text)
        if js is not None:
            try:
                obj = parse_json(self._decode(js, f"{where}.json"))
                if not isinstance(obj, dict):
                    raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
            except ValueError as err:  # JSONDecodeError included
                self._problem(MALFORMED, f"{where}.json: {err}")
                obj = {}
            for key in CAPTION_KEYS:
                value = obj.get(key)
                for c in [value] if isinstance(value, str) else value if isinstance(value, list) else []:
                    if isinstance(c, str) and c.strip() and c.strip() not in captions:
                        captions.append(c.strip())
            found = next((obj[k] for k in _LABEL_KEYS if k in obj), None)
            if isinstance(found, int) and not isinstance(found, bool) and found >= 0:
                label = found
            elif found is not None:
                self._problem(MALFORMED, f"{where}.json: label {found!r} is not a class index")
        if cls is not None:
            text = self._decode(cls, f"{where}.cls").strip()
            try:
                label = int(text)
                if label < 0:
                    raise ValueError("negative")
            except ValueError:
                self._problem(MALFORMED, f"{where}.cls: {text[:40]!r} is not a class index")
                label = None
        if label is not None and self._classes is not None and label >= len(self._classes):
            n = len(self._classes)
            self._problem(MALFORMED, f"{where}: label {label} is not below len(classes) = {n}")
            label = None
        elif label is not None and label >= MAX_CLASSES:
            self._problem(
                MALFORMED,
                f"{where}: label {label} is not below {MAX_CLASSES} (the most classes a source may "
                "have without classes= naming them)",
            )
            label = None
        return captions, label

    def __iter__(self) -> Iterator[tuple[np.ndarray, Annotation]]:
        """Stream every readable sample as ``(RGB uint8 (H, W, 3) array, Annotation)``, in order.

        Reads each shard once, sequentially, without building the index.
        Bad samples are skipped and counted (strict: raised); the summary is
        warned once at the end.
        """
        for shard in self.shards:
            try:
                with _open_tar(shard, stream=True) as tf:
                    for key, group in _groups(self._stream_members(tf)):
                        where = f"{shard}:{key}"
                        img = next((group[e] for e in IMAGE_MEMBER_EXTENSIONS if e in group), None)
                        if img is None:
                            self._problem(_NO_IMAGE, f"{where}: no image member ({_IMAGE_EXTS_TEXT})")
                            continue
                        try:
                            arr = to_rgb_uint8(open_image(io.BytesIO(img)))
                        except READ_ERRORS as err:
                            if self.strict:
                                raise ImageReadError(f"cannot read {where}: {err}") from err
                            self.record_problem(UNREADABLE, f"{where} ({type(err).__name__}: {err})")
                            continue
                        caps, label = self._text(where, group.get("txt"), group.get("json"), group.get("cls"))
                        yield arr, Annotation(label=label, captions=caps)
            except (tarfile.TarError, EOFError, OSError) as err:
                self._shard_problem(shard, err)
        self.warn_summary()

    def _build_index(self) -> dict[str, Any]:
        cols = {k: array("q") for k in ("shard", "img_off", "img_size", "label")}
        for ext in _TEXT_MEMBERS:
            cols[f"{ext}_off"], cols[f"{ext}_size"] = array("q"), array("q")
        keys: list[str] = []
        for shard_no, shard in enumerate(self.shards):
            try:
                f = _open_shard(shard)
                with f, _open_tar(f, stream=False) as tf:
                    for key, group in _groups(self._offset_members(tf)):
                        where = f"{shard}:{key}"
                        img = next((group[e] for e in IMAGE_MEMBER_EXTENSIONS if e in group), None)
                        if img is None:
                            self._problem(_NO_IMAGE, f"{where}: no image member ({_IMAGE_EXTS_TEXT})")
                            continue
                        texts = {}
                        for ext in _TEXT_MEMBERS:
                            off, size = group.get(ext, (-1, -1))
                            cols[f"{ext}_off"].append(off)
                            cols[f"{ext}_size"].append(size)
                            if off >= 0:
                                f.seek(off)
                                texts[ext] = f.read(size)
                        _, label = self._text(where, texts.get("txt"), texts.get("json"), texts.get("cls"))
                        cols["shard"].append(shard_no)
                        cols["img_off"].append(img[0])
                        cols["img_size"].append(img[1])
                        cols["label"].append(-1 if label is None else label)
                        keys.append(key)
            except (tarfile.TarError, EOFError, OSError) as err:
                self._shard_problem(shard, err)
        return {
            "keys": keys,
            **{k: np.frombuffer(v, np.int64) if len(v) else np.zeros(0, np.int64) for k, v in cols.items()},
        }

    @property
    def index(self) -> dict[str, Any]:
        """Member offsets of every sample (built on first use): ``keys`` and int64 columns."""
        if self._index is None:
            self._index = self._build_index()
        return self._index

    @property
    def classes(self) -> list[str]:  # type: ignore[override]
        """Label names: as given, else ``"0"`` ... the largest label (builds the index)."""
        if self._classes is not None:
            return self._classes
        labels = self.index["label"]
        return [str(i) for i in range(int(labels.max()) + 1 if len(labels) else 0)]

    # -- the ImageSource protocol -------------------------------------------------------

    def __repr__(self) -> str:
        return f"WebDatasetSource({self.urls!r})"

    def _size_text(self) -> str:
        if self._index is None:  # a summary must not cost a pass over the shards
            return f"{len(self.shards)} shards"
        return f"{len(self)} samples in {len(self.shards)} shards"

    def __len__(self) -> int:
        return len(self.index["keys"])

    def image(self, index: int) -> Image.Image:
        """Image of sample ``index``, read by seeking into its shard."""
        idx = self.index
        data = self._read(int(idx["shard"][index]), int(idx["img_off"][index]), int(idx["img_size"][index]))
        return open_image(io.BytesIO(data))

    def annotation(self, index: int) -> Annotation:
        """Captions and label of sample ``index`` (read from its text members)."""
        idx = self.index
        shard_no = int(idx["shard"][index])
        texts = {}
        for ext in _TEXT_MEMBERS:
            off = int(idx[f"{ext}_off"][index])
            if off >= 0:
                texts[ext] = self._read(shard_no, off, int(idx[f"{ext}_size"][index]))
        caps, label = self._text(self.name(index), texts.get("txt"), texts.get("json"), texts.get("cls"))
        return Annotation(label=label, captions=caps)

    def name(self, index: int) -> str:
        """``shard:key`` of sample ``index``."""
        return f"{self.shards[int(self.index['shard'][index])]}:{self.index['keys'][index]}"
