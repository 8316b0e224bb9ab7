"""ImagePool: every image of a source resident on one device, ready for batched rendering."""

from __future__ import annotations

import math
import os
import pickle
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vpt_env.data.annotations import Annotation, Annotations
from vpt_env.data.sources import (
    MAX_IMAGE_SIDE,
    SubsetSource,
    _iter_readable,
    _no_readable_image,
    resolve_source,
)
from vpt_env.progress import Progress

__all__ = ["ImagePool", "check_device", "fork_safe_threads"]

#: Same-size images whose pyramids are built in one batch: at most this many, and at most
#: :data:`_BUILD_BYTES` of float32 pixels, so the build's temporary copies stay small next to the
#: stores (one batch of every photo at once doubled the peak memory).
_BUILD_CHUNK = 256
_BUILD_BYTES = 32 << 20
#: Pyramid levels stop when an image's shorter side would fall below this.
MIN_LEVEL_SIDE = 8
MAX_LEVELS = 10

# Torch's CPU builds run intra-op parallel work on libgomp, the GNU OpenMP runtime, which keeps
# its worker threads between calls and is not fork-safe: a child forked after the parent ran a
# multi-threaded op inherits the runtime's belief that those workers exist, but not the threads,
# and its own first multi-threaded op waits for them forever. Gymnasium's AsyncVectorEnv does
# exactly that on Linux (it builds one env in the parent, converting images with torch, then
# forks its workers), and the workers hung in ImagePool.__init__. A process that was forked after
# vpt_env was imported therefore switches torch to one thread before its first torch call
# (fork_safe_threads), as PyTorch's own DataLoader workers do; one thread per worker process is
# also what a worker per core wants. Spawned processes and the parent are left alone.
_forked = False


def _note_fork() -> None:
    global _forked
    _forked = True


os.register_at_fork(after_in_child=_note_fork)


def fork_safe_threads() -> None:
    """In a process forked after ``vpt_env`` was imported, use one torch thread (else do nothing).

    Pools and envs call this before their first torch call: the parent's
    OpenMP thread pool does not survive ``fork()``, and a multi-threaded torch
    op in the child would wait for it forever (see the comment above).
    """
    if _forked and torch.get_num_threads() > 1:
        torch.set_num_threads(1)


def check_device(device: Any) -> torch.device:
    """``device`` as a :class:`torch.device`, refused with a clear error where it is not available.

    Raises:
        ValueError: an unknown device string, or a CUDA or MPS device this torch
            build or machine does not have (the message lists the available ones).
    """
    available = ["cpu"]
    available += [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    available += ["mps"] if torch.backends.mps.is_available() else []
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        msg = f"device must be a torch device, got {device!r} ({err}); available: {available}"
        raise ValueError(msg) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise ValueError(
            f"device={device!r}: CUDA is not available (torch {torch.__version__}, {build}); "
            f"available: {available}"
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device={device!r}: no such CUDA device; available: {available}")
    if dev.type == "mps" and "mps" not in available:
        raise ValueError(f"device={device!r}: MPS is not available; available: {available}")
    return dev


class ImagePool:
    """Images of any sizes with their pyramids, resident on one device.

    Each image is stored at full resolution (level 0) and at successive half
    resolutions (2x2 averages; an odd last row or column is replicated first,
    so level ``L`` pixel ``k`` averages full-resolution pixels
    ``[k 2^L, (k + 1) 2^L)``). Two stores hold them: a flat row-major uint8
    ``(P, 3)`` buffer, from which nearest-neighbour views are one gather, and a
    float32 texture atlas, from which bilinear views of any images and scales
    are one ``grid_sample`` call (see :func:`vpt_env.core.render.render`).
    Memory: about 4 bytes per pixel for the uint8 store and 16 for the atlas,
    times 4/3 for the pyramid (:attr:`nbytes`).

    Args:
        images: RGB uint8 arrays ``(H, W, 3)``.
        annotations: per-image annotations (length ``len(images)``); None for none.
        device: where the buffers live.
        keep_float: also build the float32 atlas (needed by the bilinear and
            antialiased renders; nearest reads uint8 only).

    Attributes:
        image_hw: ``(N, 2)`` float32 heights and widths at full resolution.
        level_hw: ``(N, L, 2)`` int64 heights and widths of every level
            (levels past an image's last repeat its last level).
        level_offset: ``(N, L)`` int64 start of every level in the buffers.
        num_levels: ``(N,)`` int64 levels each image has.
        pixels: ``(P, 3)`` uint8 buffer.
        atlas: ``(1, 3, Ha, Wa)`` float32 texture in ``[0, 1]`` (channels-last
            memory) holding every level of every image, each with a one-pixel
            replicated border, or None (``keep_float=False``).
        level_xy: ``(N, L, 2)`` int64 atlas position ``(x, y)`` of the top-left
            pixel of every level, or None.
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        annotations: Annotations | None = None,
        device: torch.device | str = "cpu",
        keep_float: bool = True,
    ) -> None:
        if len(images) == 0:
            raise ValueError("images must hold at least one image")
        fork_safe_threads()
        self.device = check_device(device)
        n = len(images)
        for i, im in enumerate(images):
            if not (
                isinstance(im, np.ndarray) and im.dtype == np.uint8 and im.ndim == 3 and im.shape[2] == 3
            ):
                raise TypeError(f"images[{i}] must be a uint8 (H, W, 3) array")
        # Sizes first (level L+1 is ceil(level L / 2), after replicating an odd
        # last row/column), so both stores are allocated once and filled in
        # batches of same-size images: memory stays near the stores' own size.
        sizes = [_level_sizes(im.shape[0], im.shape[1]) for im in images]
        depth = max(len(sz) for sz in sizes)
        # Bookkeeping in numpy: element-wise tensor indexing costs microseconds.
        hw = np.zeros((n, depth, 2), dtype=np.int64)
        offset = np.zeros((n, depth), dtype=np.int64)
        pos = 0
        for i, sz in enumerate(sizes):
            for j in range(depth):
                h, w = sz[min(j, len(sz) - 1)]
                hw[i, j] = (h, w)
                if j < len(sz):
                    offset[i, j] = pos
                    pos += h * w
                else:
                    offset[i, j] = offset[i, len(sz) - 1]
        # Filled with numpy: torch's strided slice assignment is ~100x slower here.
        flat = np.empty((pos, 3), dtype=np.uint8)
        atlas = xy = None
        if keep_float:
            atlas, xy = _pack_atlas(sizes, depth)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault(im.shape[:2], []).append(i)
        for (gh, gw), members in groups.items():
            step = max(1, min(_BUILD_CHUNK, _BUILD_BYTES // (gh * gw * 3 * 4)))
            for c in range(0, len(members), step):
                chunk = members[c : c + step]
                lv = torch.from_numpy(np.stack([images[i] for i in chunk])).permute(0, 3, 1, 2).float()
                for j in range(len(sizes[chunk[0]])):
                    if j:
                        pad = (0, lv.shape[-1] % 2, 0, lv.shape[-2] % 2)
                        lv = F.avg_pool2d(F.pad(lv, pad, mode="replicate") if any(pad) else lv, 2)
                    u8 = (
                        lv.round()
                        .clamp(0, 255)
                        .to(torch.uint8)
                        .permute(0, 2, 3, 1)
                        .reshape(len(chunk), -1, 3)
                    )
                    if atlas is not None:
                        bordered = (F.pad(lv, (1, 1, 1, 1), mode="replicate") / 255.0).permute(0, 2, 3, 1)
                    h, w = lv.shape[-2:]
                    for k, i in enumerate(chunk):
                        start = offset[i, j]
                        flat[start : start + h * w] = u8[k]
                        if atlas is not None:
                            x, y = xy[i, j, 0] - 1, xy[i, j, 1] - 1
                            atlas[y : y + h + 2, x : x + w + 2] = bordered[k]
        self.pixels = torch.from_numpy(flat).to(self.device)
        self.atlas: Tensor | None = None
        self.level_xy: Tensor | None = None
        if atlas is not None:
            self.atlas = torch.from_numpy(atlas).permute(2, 0, 1)[None].to(self.device)
            self.level_xy = torch.from_numpy(xy).to(self.device)
        self.level_hw = torch.from_numpy(hw).to(self.device)
        self.level_offset = torch.from_numpy(offset).to(self.device)
        self.num_levels = torch.tensor([len(sz) for sz in sizes], device=self.device)
        self.image_hw = torch.from_numpy(hw[:, 0]).float().to(self.device)
        self.annotations = annotations if annotations is not None else Annotations.empty(n)
        if len(self.annotations) != n:
            raise ValueError(f"annotations has {len(self.annotations)} entries for {n} images")
        self.annotations = self.annotations.to(self.device)
        self.source_index = torch.arange(n, device=self.device)
        self.source_size = n

    #: Source index of each pool image (set by :meth:`from_source`; else 0..N-1).
    source_index: Tensor

    @classmethod
    def from_source(
        cls,
        source: Any,
        *,
        min_side: int = 1,
        max_side: int = MAX_IMAGE_SIDE,
        strict: bool = False,
        device: torch.device | str = "cpu",
        keep_float: bool = True,
        max_bytes: int | None = None,
        seed: int = 0,
        progress: bool = False,
    ) -> ImagePool:
        """Load a source into a pool, all of it or, under ``max_bytes``, a random part.

        With ``max_bytes``, images are read in a random order (``seed``) until
        the next would take the pool past ``max_bytes`` (:meth:`bytes_for`);
        :meth:`resample` later swaps in another random part. The source is
        read lazily: images beyond the cap are never decoded.

        Args:
            source: anything :func:`~vpt_env.data.sources.resolve_source` takes.
            min_side, max_side: images are resized on load to these bounds.
            strict: raise on the first unreadable image instead of skipping it.
            device: where the pool lives.
            keep_float: build the float32 atlas (bilinear and antialias renders).
            max_bytes: memory cap of the pool's stores, or None for no cap.
            seed: the random order under a cap.
            progress: show the reading on stderr (:class:`~vpt_env.progress.Progress`).
        """
        if max_bytes is not None and (
            isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1
        ):
            raise ValueError(f"max_pool_bytes must be a positive int or None, got {max_bytes!r}")
        if isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 8:
            raise ValueError(f"max_image_side must be an int >= 8, got {max_side!r}")
        if min_side > max_side:
            raise ValueError(f"max_image_side ({max_side}) must be at least the view size ({min_side})")
        src = resolve_source(source, strict=strict)
        n = len(src)
        order = list(range(n))
        if max_bytes is not None:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
        images: list[np.ndarray] = []
        anns: list[Annotation] = []
        picked: list[int] = []
        used = 0
        with Progress(n, "reading images", unit="images", enabled=progress) as bar:
            for i, arr, ann in _iter_readable(SubsetSource(src, order), strict, min_side, max_side, bar):
                cost = cls.bytes_for(arr.shape[0], arr.shape[1], keep_float)
                if max_bytes is not None and images and used + cost > max_bytes:
                    break
                used += cost
                images.append(arr)
                anns.append(ann)
                picked.append(order[i])
        if not images:
            raise _no_readable_image(src)
        if max_bytes is not None:  # bytes_for leaves out the atlas's packing: fit the exact size
            keep = _fit_count([im.shape[:2] for im in images], keep_float, max_bytes)
            del images[keep:], anns[keep:], picked[keep:]
        pool = cls(
            images, Annotations(anns, getattr(src, "classes", ())), device=device, keep_float=keep_float
        )
        pool.source_index = torch.tensor(picked, dtype=torch.int64, device=pool.device)
        pool.source_size = n
        pool._origin = {
            "source": src,
            "min_side": min_side,
            "max_side": max_side,
            "strict": strict,
            "device": device,
            "keep_float": keep_float,
            "max_bytes": max_bytes,
            "seed": seed,
        }
        pool._spec = source  # what was passed, pickled in place of the images (__getstate__)
        return pool

    @staticmethod
    def bytes_for(height: int, width: int, keep_float: bool = True) -> int:
        """Bytes an image of this size takes in a pool (both stores, pyramid and atlas borders
        included); the atlas's packing adds a little per pool (:meth:`bytes_for_images` is exact)."""
        levels = _level_sizes(height, width)
        u8 = sum(3 * h * w for h, w in levels)
        return u8 + (sum(12 * (h + 2) * (w + 2) for h, w in levels) if keep_float else 0)

    @staticmethod
    def bytes_for_images(shapes: Sequence[tuple[int, int]], keep_float: bool = True) -> int:
        """The exact :attr:`nbytes` of a pool of images of these ``(height, width)``."""
        sizes = [_level_sizes(h, w) for h, w in shapes]
        u8 = sum(3 * h * w for sz in sizes for h, w in sz)
        if not keep_float:
            return u8
        height, width, _ = _atlas_layout(sizes, max(len(sz) for sz in sizes))
        return u8 + 12 * height * width

    @property
    def complete(self) -> bool:
        """Whether the pool holds every readable image of its source."""
        return self.source_size == len(self) or getattr(self, "_origin", {}).get("max_bytes") is None

    @property
    def bytes_per_image(self) -> float:
        """Mean bytes per image held (:attr:`nbytes` over the image count)."""
        return self.nbytes / len(self)

    def resample(self, seed: int) -> None:
        """Replace the pool's images by another random part of its source (under its cap).

        Only for pools made by :meth:`from_source`. Indices of images change:
        envs must be reset afterwards.
        """
        origin = getattr(self, "_origin", None)
        if origin is None:
            raise ValueError("resample() needs a pool made by ImagePool.from_source")
        fresh = type(self).from_source(**{**origin, "seed": seed})
        self.__dict__.update({**fresh.__dict__, "_spec": self._spec})

    # -- pickling -----------------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        """A pool loaded from a source pickles that source, not its images.

        A pool made by :meth:`from_source` pickles what was passed as its
        source (an embedded set's name, a path, a reader, a ``SceneSource``,
        which pickles as its config, or in-memory arrays, which travel as they
        are) with its load settings, a few bytes to a few kilobytes where the
        source is a name or a path, and rebuilds itself on unpickling
        (:meth:`__setstate__`). A pool made from images (``ImagePool(images)``),
        or whose source cannot be pickled, pickles its stores.
        """
        origin = getattr(self, "_origin", None)
        if origin is not None and _picklable(self._spec):
            settings = {k: v for k, v in origin.items() if k != "source"}
            # The source object itself, so that a pickle holding it elsewhere too (an env's
            # spec kwargs) stores it once.
            return {"_rebuild": settings, "_spec": self._spec, "_checksum": self._checksum()}
        return self.__dict__

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Rebuild from the pickled source, or take the pickled stores.

        Raises:
            ValueError: the source no longer gives the images it gave when the
                pool was pickled (a file changed, for example): a pool rebuilt
                from it would not continue an episode as pickled.
        """
        if "_rebuild" not in state:
            self.__dict__.update(state)
            return
        spec = state["_spec"]
        fresh = type(self).from_source(spec, **state["_rebuild"])
        if fresh._checksum() != state["_checksum"]:
            raise ValueError(
                f"cannot unpickle the image pool: its source {str(spec)[:200]!r} has changed since it was "
                "pickled (other images, sizes or pixels)"
            )
        self.__dict__.update(fresh.__dict__)

    def _checksum(self) -> tuple[int, int, int]:
        """Image count, and Adler-32 checksums of the sizes and of the uint8 pixels."""
        hw = np.ascontiguousarray(self.image_hw.cpu().numpy())
        pixels = np.ascontiguousarray(self.pixels.cpu().numpy())
        return len(self), zlib.adler32(hw), zlib.adler32(pixels)

    def __len__(self) -> int:
        return int(self.image_hw.shape[0])

    def image(self, index: int, level: int = 0) -> np.ndarray:
        """Image ``index`` at pyramid ``level`` as an RGB uint8 ``(H, W, 3)`` array."""
        if not 0 <= index < len(self):
            raise IndexError(f"index must be in [0, {len(self)}), got {index}")
        level = min(level, int(self.num_levels[index]) - 1)
        h, w = (int(v) for v in self.level_hw[index, level])
        start = int(self.level_offset[index, level])
        return self.pixels[start : start + h * w].reshape(h, w, 3).cpu().numpy()

    @property
    def nbytes(self) -> int:
        """Bytes held on the device by the image stores."""
        n = self.pixels.numel()
        return n + (4 * self.atlas.numel() if self.atlas is not None else 0)


def _picklable(source: Any) -> bool:
    """Whether a source can be pickled (names, paths and arrays can; other objects are tried)."""
    plain = (str, os.PathLike, np.ndarray, torch.Tensor, type(None))
    if isinstance(source, plain) or (
        isinstance(source, list | tuple) and all(isinstance(x, np.ndarray | torch.Tensor) for x in source)
    ):
        return True
    try:
        pickle.dumps(source)
    except (pickle.PicklingError, TypeError, AttributeError):
        return False  # e.g. a source holding a lambda or an open handle
    return True


def _level_sizes(h: int, w: int) -> list[tuple[int, int]]:
    """Heights and widths of every pyramid level of an ``h`` x ``w`` image."""
    out = [(h, w)]
    while len(out) < MAX_LEVELS and min(out[-1]) // 2 >= MIN_LEVEL_SIDE:
        h, w = out[-1]
        out.append(((h + 1) // 2, (w + 1) // 2))
    return out


def _fit_count(shapes: list[tuple[int, int]], keep_float: bool, max_bytes: int) -> int:
    """The most leading images of ``shapes`` whose pool fits in ``max_bytes`` (at least one)."""

    def fits(k: int) -> bool:
        return ImagePool.bytes_for_images(shapes[:k], keep_float) <= max_bytes

    if fits(len(shapes)):
        return len(shapes)
    lo, hi = 1, len(shapes)  # the packing makes the size nearly, not strictly, monotone in k
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    while lo > 1 and not fits(lo):
        lo -= 1
    return lo


def _atlas_layout(sizes: list[list[tuple[int, int]]], depth: int) -> tuple[int, int, np.ndarray]:
    """Shelf-pack every level (with a one-pixel border): the atlas's height and width, and the
    ``(N, depth, 2)`` position ``(x, y)`` of each level's top-left pixel (inside its border)."""
    items = [(i, j, h, w) for i, sz in enumerate(sizes) for j, (h, w) in enumerate(sz)]
    area = sum((h + 2) * (w + 2) for _, _, h, w in items)
    width = max(max(w + 2 for *_, w in items), min(16384, math.ceil(math.sqrt(area) * 1.05)))
    xy = np.zeros((len(sizes), depth, 2), dtype=np.int64)
    x = y = shelf = 0
    for i, j, h, w in sorted(items, key=lambda it: (-it[2], -it[3])):
        if x + w + 2 > width:
            x, y, shelf = 0, y + shelf, 0
        xy[i, j] = (x + 1, y + 1)
        x += w + 2
        shelf = max(shelf, h + 2)
    for i, sz in enumerate(sizes):
        xy[i, len(sz) :] = xy[i, len(sz) - 1]
    return y + shelf, width, xy


def _pack_atlas(sizes: list[list[tuple[int, int]]], depth: int) -> tuple[np.ndarray, np.ndarray]:
    """The zeroed ``(Ha, Wa, 3)`` float32 atlas of :func:`_atlas_layout` and its positions."""
    height, width, xy = _atlas_layout(sizes, depth)
    return np.zeros((height, width, 3), dtype=np.float32), xy
