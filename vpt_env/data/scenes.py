"""``scenes``: COCO-like multi-object scenes generated from real object and background images.

Each scene (default 128x128) is a crop of a real background (a scikit-image
texture, one of the embedded photos, or a flat colour) with 2-6 objects
pasted on it. The objects are instances of the single-object sets of
:mod:`vpt_env.data.objects` (digits always; Fashion-MNIST and animal
silhouettes when installed), each resized, coloured and placed at random.
Every scene carries the objects' boxes and labels in one class space
(:attr:`SceneSource.classes`, e.g. ``"digit 3"``, ``"sneaker"``, ``"zebra"``);
a fraction of the scenes also carries a template caption naming the objects,
their colours, sizes and positions, and the rest are unlabeled.

Shortcuts. The defaults keep appearance from naming the class: colours are
drawn per object, independently of its class; size and position are drawn
independently of the class; the background is drawn independently of the
objects. Only an object's shape (and its inner shading, for Fashion-MNIST)
tells its class. ``colour_mode="class"`` ties colour to class on purpose.

Determinism. A scene depends only on the parameters, the seed, the split and
its own index: layouts are drawn in blocks of 1024 scenes, each block from
its own seed sequence, so the first ``n`` scenes are the same for any
``n_images >= n``, and rendering draws no random numbers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import warnings
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vpt_env.data.annotations import Annotation
from vpt_env.data.objects import OBJECT_SETS, available_object_sets
from vpt_env.data.scene_layout import BLOCK, SCENES_VERSION, glyph_pool, layout_block
from vpt_env.data.scene_render import BG_KINDS, SceneLayout, render_scenes
from vpt_env.data.scene_text import CAPTION_WORDS, caption

__all__ = ["COLOUR_MODES", "SCENES_VERSION", "SceneConfig", "SceneSource", "default_cache_dir"]

COLOUR_MODES = ("random", "grayscale", "class")
ANNOTATE = ("all", "captioned")
_CHUNK = 128  # scenes rendered per call (one image read renders its chunk)
# Threads rendering chunks at once: numpy releases the GIL in its array work,
# and chunks are independent, so the bytes do not depend on this.
_WORKERS = min(8, os.cpu_count() or 1)


@dataclass(frozen=True)
class SceneConfig:
    """Parameters of a scene dataset; every field is a knob of :class:`SceneSource`."""

    split: str = "train"
    """``"train"`` or ``"test"``: which object instances (disjoint) the scenes use."""
    size: int = 128
    """Scene side in pixels."""
    n_images: int = 10_000
    """Number of scenes."""
    seed: int = 0
    """Seed of the layouts; same seed and parameters, same bytes."""
    object_sets: tuple[str, ...] | None = None
    """Object sets to draw from (``"digits"``, ``"fashion"``, ``"animals"``); None: every installed one."""
    objects: tuple[int, int] = (2, 6)
    """Objects per scene: drawn uniformly from this inclusive range."""
    object_size: tuple[float, float] = (0.22, 0.44)
    """Longer side of each object's box as a fraction of the scene side, drawn uniformly (28-56 px at 128)."""
    colour_mode: str = "random"
    """``"random"``: a random colour per object; ``"grayscale"``: grey objects on grey backgrounds;
    ``"class"``: one fixed colour per class (a deliberate shortcut)."""
    background: tuple[str, ...] = ("texture", "photo")
    """Background kinds drawn uniformly per scene: ``"texture"``, ``"photo"``, ``"flat"``."""
    clutter: int = 0
    """Distractors per scene: random strokes and blobs coloured like objects, drawn under them."""
    max_overlap: float = 0.2
    """Largest allowed overlap of two object boxes, as a fraction of the smaller box's area."""
    caption_fraction: float = 0.2
    """Fraction of scenes with a caption; the others have none (unlabeled)."""
    caption_words: tuple[str, ...] = CAPTION_WORDS
    """Which of ``"size"``, ``"colour"``, ``"position"`` the captions name besides each object's class
    (``()``: class names only). Colour words with random colours are a shortcut for caption-image models."""
    annotate: str = "all"
    """``"all"``: every scene stores its boxes (for evaluation and box rewards); ``"captioned"``:
    uncaptioned scenes store no annotation at all."""

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"SceneSource {name}={getattr(self, name)!r}: {why}")

        if self.split not in ("train", "test"):
            raise bad("split", "must be 'train' or 'test'")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 16:
            raise bad("size", "must be an int >= 16")
        if isinstance(self.n_images, bool) or not isinstance(self.n_images, int) or self.n_images < 1:
            raise bad("n_images", "must be an int >= 1")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise bad("seed", "must be an int >= 0")
        if self.object_sets is not None:
            object.__setattr__(self, "object_sets", tuple(self.object_sets))
            unknown = [s for s in self.object_sets if s not in OBJECT_SETS]
            if unknown or not self.object_sets or len(set(self.object_sets)) != len(self.object_sets):
                raise bad("object_sets", f"must be distinct names from {list(OBJECT_SETS)}")
        lo, hi = self.objects
        ints = all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in (lo, hi))
        if not (ints and 1 <= lo <= hi <= 16):
            raise bad("objects", "must be (min, max) ints with 1 <= min <= max <= 16")
        object.__setattr__(self, "objects", (int(lo), int(hi)))
        a, b = (float(v) for v in self.object_size)
        if not (0 < a <= b <= 1) or a * self.size < 4:
            raise bad("object_size", "must be (min, max) with 0 < min <= max <= 1 and min * size >= 4")
        object.__setattr__(self, "object_size", (a, b))
        if self.colour_mode not in COLOUR_MODES:
            raise bad("colour_mode", f"must be one of {COLOUR_MODES}")
        kinds = (self.background,) if isinstance(self.background, str) else tuple(self.background)
        if not kinds or any(k not in BG_KINDS for k in kinds):
            raise bad("background", f"must be one or more of {BG_KINDS}")
        object.__setattr__(self, "background", kinds)
        if isinstance(self.clutter, bool) or not isinstance(self.clutter, int) or not 0 <= self.clutter <= 64:
            raise bad("clutter", "must be an int in [0, 64]")
        if not 0 <= self.max_overlap <= 1:
            raise bad("max_overlap", "must be in [0, 1]")
        if not 0 <= self.caption_fraction <= 1:
            raise bad("caption_fraction", "must be in [0, 1]")
        words = (self.caption_words,) if isinstance(self.caption_words, str) else tuple(self.caption_words)
        if any(w not in CAPTION_WORDS for w in words) or len(set(words)) != len(words):
            raise bad("caption_words", f"must be distinct names from {list(CAPTION_WORDS)}")
        object.__setattr__(self, "caption_words", words)
        if self.annotate not in ANNOTATE:
            raise bad("annotate", f"must be one of {ANNOTATE}")


def _scene_source(config: SceneConfig, cache: bool | Path) -> SceneSource:
    """Rebuild a pickled :class:`SceneSource` from its config."""
    return SceneSource(config, cache=cache)


def default_cache_dir() -> Path:
    """``$VPT_ENV_CACHE``, else ``$XDG_CACHE_HOME/vpt_env``, else ``~/.cache/vpt_env``."""
    if os.environ.get("VPT_ENV_CACHE"):
        return Path(os.environ["VPT_ENV_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vpt_env"


class SceneSource:
    """COCO-like scenes of real objects on real backgrounds (``source="scenes"`` gives the defaults).

    Pass a :class:`SceneConfig`, or its fields as keywords (documented
    there), or both (keywords override), plus ``cache``. Layouts and
    annotations are drawn at construction (about 0.3 s per 10k scenes);
    pixels are rendered on first access, in chunks of 128 scenes (the last
    four chunks are kept), or all at once (chunks in parallel threads) when
    :meth:`images` is called or when caching to disk.

    Annotations. ``annotation(i)`` holds the objects' normalised boxes
    ``(x0, y0, x1, y1)`` and class indices, ``label=None`` and, for the
    captioned scenes (:attr:`captioned`), one caption such as ``"a red
    sneaker at the top left, a small blue digit 3 in the centre"``. With
    ``annotate="all"`` (default) uncaptioned scenes keep their boxes so that
    evaluations and box rewards can use them: a learner that treats these
    scenes as unlabeled must not read them (test ``captioned``, or pass
    ``annotate="captioned"`` to drop them).

    Args:
        config: the parameters (default: :class:`SceneConfig` defaults).
        cache: False (default) keeps rendered pixels in memory; True or a
            folder writes all scenes once to a ``.npy`` file in that folder
            (True: :func:`default_cache_dir`) named by a hash of every
            parameter that changes pixels, the object data and numpy's
            version, written atomically (a private temporary file, then a
            rename), and memory-maps it afterwards.
        **overrides: :class:`SceneConfig` fields.

    Attributes:
        config: the :class:`SceneConfig`.
        object_sets: the object sets used (resolved when ``object_sets`` is None).
        classes: class names, object set by object set.
        captioned: ``(N,)`` bool, which scenes have a caption.
        boxes: ``(N, O, 4)`` float32 normalised boxes, zeros past each scene's count.
        box_labels: ``(N, O)`` int64 class indices, -1 past each scene's count.
        layout: the :class:`~vpt_env.data.scene_render.SceneLayout` of every scene.

    Raises:
        DatasetNotInstalledError: when ``object_sets`` names a set that is not installed.
    """

    def __init__(
        self,
        config: SceneConfig | None = None,
        *,
        cache: bool | str | os.PathLike[str] = False,
        **overrides: object,
    ) -> None:
        names = [f.name for f in dataclasses.fields(SceneConfig)]
        unknown = set(overrides) - set(names)
        if unknown:
            raise TypeError(
                f"SceneSource got unknown keywords {sorted(unknown)}; accepted: {names} and cache"
            )
        if config is not None and not isinstance(config, SceneConfig):
            raise TypeError(f"config must be a SceneConfig, got {type(config).__name__}")
        cfg = dataclasses.replace(config or SceneConfig(), **overrides)  # type: ignore[arg-type]
        self.object_sets: tuple[str, ...] = cfg.object_sets or available_object_sets()
        self.config = dataclasses.replace(cfg, object_sets=self.object_sets)
        self._glyphs, classes, self._fingerprint = glyph_pool(self.object_sets, cfg.split)
        self.classes = list(classes)
        n = cfg.n_images
        blocks = [
            layout_block(self.config, self._glyphs, len(self.classes), b) for b in range(-(-n // BLOCK))
        ]
        self.layout = SceneLayout(*(np.concatenate(p)[:n] for p in zip(*(b[0] for b in blocks), strict=True)))
        self.captioned = np.concatenate([b[1] for b in blocks])[:n]
        self.box_labels = np.concatenate([b[2] for b in blocks])[:n]
        present = (self.box_labels >= 0)[..., None]
        self.boxes = np.where(present, self.layout.box / cfg.size, 0).astype(np.float32)
        self._cache_dir = None if cache is False else default_cache_dir() if cache is True else Path(cache)
        self._all: np.ndarray | None = None
        self._chunks: OrderedDict[int, np.ndarray] = OrderedDict()
        self._last = -2  # index of the last image() read, to tell reads in order from random ones

    def __len__(self) -> int:
        return self.config.n_images

    def __reduce__(self) -> tuple[Any, tuple[SceneConfig, bool | Path]]:
        # Pickled as its config: the scenes are a function of it (the same config gives the
        # same bytes), so a pickle weighs bytes, not the glyphs, layouts and rendered pixels.
        return _scene_source, (self.config, False if self._cache_dir is None else self._cache_dir)

    # -- pixels -------------------------------------------------------------------------------------
    def render(self, index: np.ndarray | list[int]) -> np.ndarray:
        """Render the scenes at ``index`` (no caching): uint8 ``(len(index), size, size, 3)``."""
        index = np.asarray(index, dtype=np.int64)
        return render_scenes(self.layout.take(index), self._glyphs, self.config.size)

    def images(self) -> np.ndarray:
        """Every scene, uint8 ``(N, size, size, 3)`` (memory-mapped when caching to disk; read-only)."""
        if self._all is None:
            self._all = self._load_or_render()
        return self._all

    def image(self, index: int) -> np.ndarray:
        """Scene ``index``, uint8 ``(size, size, 3)``, read-only.

        Reading in order renders a chunk of 128 scenes at a time (about 0.7 ms
        per scene on a 2-core CPU); a read out of order renders that scene
        alone (about 1 ms), so random access stays cheap.
        """
        if not 0 <= index < len(self):
            raise IndexError(f"scene index must be in [0, {len(self)}), got {index}")
        if self._all is not None or self._cache_dir is not None:
            return self.images()[index]
        chunk = index // _CHUNK
        in_order, self._last = index == self._last + 1 or index % _CHUNK == 0, index
        if chunk not in self._chunks and not in_order:
            single = self.render([index])[0]
            single.setflags(write=False)
            return single
        if chunk not in self._chunks:
            stop = min(len(self), (chunk + 1) * _CHUNK)
            pixels = self.render(np.arange(chunk * _CHUNK, stop))
            pixels.setflags(write=False)
            self._chunks[chunk] = pixels
            while len(self._chunks) > 4:
                self._chunks.popitem(last=False)
        self._chunks.move_to_end(chunk)
        return self._chunks[chunk][index - chunk * _CHUNK]

    def _render_all(self) -> np.ndarray:
        out = np.empty((len(self), self.config.size, self.config.size, 3), np.uint8)

        def chunk(start: int) -> None:
            stop = min(len(self), start + _CHUNK)
            out[start:stop] = self.render(np.arange(start, stop))

        starts = range(0, len(self), _CHUNK)
        if _WORKERS > 1 and len(starts) > 1:
            with ThreadPoolExecutor(_WORKERS) as pool:
                list(pool.map(chunk, starts))
        else:
            for start in starts:
                chunk(start)
        return out

    def cache_key(self) -> str:
        """Hex digest of everything that decides the pixels (names the cache file)."""
        fields = dataclasses.asdict(self.config)
        fields.pop("caption_fraction")  # captions and annotations do not change pixels
        fields.pop("caption_words")
        fields.pop("annotate")
        key = {
            "version": SCENES_VERSION,
            "config": fields,
            "objects": list(self._fingerprint),
            "numpy": np.__version__,
        }
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]

    @property
    def cache_path(self) -> Path | None:
        """The cache file, or None when not caching to disk."""
        if self._cache_dir is None:
            return None
        return self._cache_dir / f"scenes-v{SCENES_VERSION}-{self.cache_key()}.npy"

    def _load_or_render(self) -> np.ndarray:
        path = self.cache_path
        shape = (len(self), self.config.size, self.config.size, 3)
        if path is None:
            out = self._render_all()
            out.setflags(write=False)
            return out
        if path.is_file():
            try:
                arr = np.load(path, mmap_mode="r")
                if arr.shape == shape and arr.dtype == np.uint8:
                    return arr
            except (OSError, ValueError):
                pass
            warnings.warn(
                f"scene cache {path} is unreadable or stale; regenerating it", RuntimeWarning, stacklevel=3
            )
        out = self._render_all()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Write to a private temporary file in the same folder, then rename:
            # readers never see a partial file, concurrent writers never mix.
            fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as f:
                    np.save(f, out)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        except OSError as err:
            warnings.warn(
                f"cannot write the scene cache {path}: {err}; keeping scenes in memory",
                RuntimeWarning,
                stacklevel=3,
            )
            out.setflags(write=False)
            return out
        return np.load(path, mmap_mode="r")

    # -- annotations --------------------------------------------------------------------------------
    def caption(self, index: int) -> str:
        """The template caption of scene ``index`` (whether or not the scene is captioned)."""
        lay, cfg = self.layout, self.config
        k = int(lay.count[index])
        return caption(
            [self.classes[c] for c in self.box_labels[index, :k]],
            lay.colour[index, :k],
            lay.box[index, :k] / cfg.size,
            cfg.object_size,
            grey=cfg.colour_mode == "grayscale",
            words=cfg.caption_words,
        )

    def annotation(self, index: int) -> Annotation:
        if not 0 <= index < len(self):
            raise IndexError(f"scene index must be in [0, {len(self)}), got {index}")
        captioned = bool(self.captioned[index])
        if self.config.annotate == "captioned" and not captioned:
            return Annotation()
        k = int(self.layout.count[index])
        return Annotation(
            label=None,
            captions=[self.caption(index)] if captioned else [],
            boxes=self.boxes[index, :k],
            box_labels=self.box_labels[index, :k],
        )

    def name(self, index: int) -> str:
        """``"scene {index} ({split})"``, for warnings and errors."""
        return f"scene {index} ({self.config.split})"
