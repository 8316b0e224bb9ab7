"""Video clips: folders of frame files, and video files where a standard library decodes them."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageSequence

from vpt_env.data.annotations import Annotation
from vpt_env.data.image_convert import IMAGE_EXTENSIONS, to_rgb_uint8
from vpt_env.data.readers._base import Reader, natural_key, open_image

__all__ = ["PIL_VIDEO_EXTENSIONS", "VIDEO_EXTENSIONS", "VideoFramesSource", "video_backends"]

#: Files that are always clips, never single frames (inside folders too).
VIDEO_EXTENSIONS: tuple[str, ...] = (".gif", ".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
#: Multi-frame formats PIL decodes (animated GIF and WebP, multi-page TIFF, APNG).
#: Inside a folder, ``.webp``, ``.tif``, ``.tiff`` and ``.png`` files are frames;
#: given as the source itself, they are clips.
PIL_VIDEO_EXTENSIONS: tuple[str, ...] = (".gif", ".webp", ".tif", ".tiff", ".png", ".apng")

_UNREADABLE_VIDEO = "unreadable video"


def video_backends() -> list[str]:
    """The optional libraries importable here that decode ``.mp4``/``.avi``/...: ``av``, ``cv2``, ``imageio``.

    None is a dependency; ``imageio`` also needs its ``imageio-ffmpeg`` or
    ``av`` plugin to read these formats.
    """
    import importlib.util

    return [m for m in ("av", "cv2", "imageio") if importlib.util.find_spec(m) is not None]


def _decode_pil(path: Path) -> list[np.ndarray]:
    with Image.open(path) as img:
        return [to_rgb_uint8(frame.copy()) for frame in ImageSequence.Iterator(img)]


def _decode_with_backend(path: Path) -> list[np.ndarray]:
    """Decode every frame with the first optional library that can; raise OSError if none can."""
    with warnings.catch_warnings():
        # imageio's plugin discovery imports deprecated plugins noisily.
        warnings.simplefilter("ignore", DeprecationWarning)
        return _try_backends(path)


def _try_backends(path: Path) -> list[np.ndarray]:
    errors = []
    for backend in video_backends():
        try:
            if backend == "av":
                import av

                with av.open(str(path)) as container:
                    return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
            if backend == "cv2":
                import cv2

                cap = cv2.VideoCapture(str(path))
                frames = []
                while True:
                    ok, bgr = cap.read()
                    if not ok:
                        break
                    frames.append(np.ascontiguousarray(bgr[:, :, ::-1]))
                cap.release()
                if frames:
                    return frames
                raise OSError("OpenCV decoded no frame")
            import imageio.v3 as iio

            return [to_rgb_uint8(np.asarray(f)) for f in iio.imread(path, index=None)]
        except Exception as err:  # any backend failure: try the next one
            errors.append(f"{backend}: {type(err).__name__}: {err}")
    tried = "; ".join(errors) if errors else "none of av, cv2, imageio is installed"
    raise OSError(f"no video decoder could read it ({tried}); install av (PyAV) or opencv-python")


def _decode_video(path: Path) -> list[np.ndarray]:
    if path.suffix.lower() in PIL_VIDEO_EXTENSIONS:
        return _decode_pil(path)
    return _decode_with_backend(path)


class _Clip:
    __slots__ = ("frames", "name", "path")

    def __init__(self, name: str, path: Path, frames: list[Path] | None) -> None:
        self.name, self.path, self.frames = name, path, frames  # frames None: a video file


class VideoFramesSource(Reader):
    """Frames of video clips, each frame annotated with its clip and time index.

    ``root`` is one of:

    * a folder: every folder below it (itself included) that directly holds
      image files is a clip of those frames, in natural order
      (``frame_2.jpg`` before ``frame_10.jpg``), as EPIC-KITCHENS ships
      ``rgb_frames/P01/P01_01/frame_0000000001.jpg``; every video file below
      it (:data:`VIDEO_EXTENSIONS`) is a clip too. Clips are ordered by their
      relative paths, naturally; hidden files and folders are skipped.
    * a video file: one clip.

    Decoding: frame files and animated GIF / animated WebP / multi-page TIFF
    / APNG clips are decoded by PIL (``ImageSequence``), always available.
    ``.mp4``, ``.avi``, ``.mov``, ``.mkv``, ``.webm`` are decoded only if one
    of ``av`` (PyAV), ``cv2`` (OpenCV) or ``imageio`` with a video plugin
    happens to be importable (:func:`video_backends`; none is a
    dependency); otherwise such a clip counts as an unreadable video. Video
    files are decoded whole when their clip is first read (their frame
    counts too, at construction, for non-PIL formats); one decoded clip is
    cached.

    ``annotation(i)`` has ``clip`` (the clip's index in :attr:`clip_names`)
    and ``frame`` (the frame's 0-based position in its clip); ``classes``
    is empty.

    Bad input: a video no decoder can read (or with no frame) raises
    ``ValueError`` naming it when ``strict``, else is skipped and counted;
    corrupt frame files are skipped when loaded. No frame at all raises
    ``ValueError`` at construction.

    Args:
        root: a folder of clips or a video file.
        strict: raise on the first unreadable video.

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> with tempfile.TemporaryDirectory() as d:
        ...     frames = [Image.new("RGB", (8, 8), (40 * t, 0, 0)) for t in range(3)]
        ...     frames[0].save(f"{d}/clip.gif", save_all=True, append_images=frames[1:])
        ...     src = VideoFramesSource(f"{d}/clip.gif")
        ...     (len(src), src.annotation(2).clip, src.annotation(2).frame)
        (3, 0, 2)
    """

    def __init__(self, root: str | os.PathLike[str], strict: bool = False) -> None:
        super().__init__(strict)
        self.root = Path(root)
        self.classes = []
        if self.root.is_file():
            found = [_Clip(self.root.name, self.root, None)]
        elif self.root.is_dir():
            found = self._scan()
        else:
            raise ValueError(f"video source {str(self.root)!r} does not exist")
        self._clips: list[_Clip] = []
        clip_of: list[int] = []
        frame_of: list[int] = []
        self._cache: tuple[int, list[np.ndarray]] | None = None
        for clip in found:
            if clip.frames is not None:
                n = len(clip.frames)
            else:
                n = self._count_frames(clip)
                if n == 0:
                    continue
            clip_of += [len(self._clips)] * n
            frame_of += list(range(n))
            self._clips.append(clip)
        self._clip_of = np.array(clip_of, np.int64)
        self._frame_of = np.array(frame_of, np.int64)
        if not len(self._clip_of):
            problems = ", ".join(f"{n} {r}" for r, n in self.skipped.items()) or "no frame files or videos"
            raise ValueError(f"video source {str(self.root)!r} holds no readable frame ({problems})")

    def _scan(self) -> list[_Clip]:
        clips: list[tuple[list[Any], _Clip]] = []
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=True):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            folder = Path(dirpath)
            rel = folder.relative_to(self.root).as_posix()
            frames, videos = [], []
            for f in filenames:
                ext = Path(f).suffix.lower()
                if f.startswith("."):
                    continue
                if ext in VIDEO_EXTENSIONS:
                    videos.append(f)
                elif ext in IMAGE_EXTENSIONS:
                    frames.append(f)
            if frames:
                name = self.root.name if rel == "." else rel
                paths = [folder / f for f in sorted(frames, key=natural_key)]
                clips.append((natural_key(rel), _Clip(name, folder, paths)))
            for f in videos:
                name = f if rel == "." else f"{rel}/{f}"
                clips.append((natural_key(name), _Clip(name, folder / f, None)))
        clips.sort(key=lambda kc: kc[0])
        return [c for _, c in clips]

    def _count_frames(self, clip: _Clip) -> int:
        try:
            if clip.path.suffix.lower() in PIL_VIDEO_EXTENSIONS:
                with Image.open(clip.path) as img:
                    n = int(getattr(img, "n_frames", 1))
            else:
                frames = _decode_with_backend(clip.path)
                self._cache = (len(self._clips), frames)
                n = len(frames)
            if n == 0:
                raise OSError("no frame")
        except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as err:
            self._problem(_UNREADABLE_VIDEO, f"{clip.path}: {type(err).__name__}: {err}")
            return 0
        return n

    # -- the ImageSource protocol -------------------------------------------------------

    @property
    def clip_names(self) -> list[str]:
        """Name of every clip (its path relative to ``root``), by clip index."""
        return [c.name for c in self._clips]

    def __repr__(self) -> str:
        return f"VideoFramesSource({str(self.root)!r})"

    def _size_text(self) -> str:
        return f"{len(self)} frames in {len(self._clips)} clips"

    def __len__(self) -> int:
        return len(self._clip_of)

    def image(self, index: int) -> Image.Image | np.ndarray:
        """Frame ``index``: a decoded frame file, or a frame of a decoded video."""
        c, t = int(self._clip_of[index]), int(self._frame_of[index])
        clip = self._clips[c]
        if clip.frames is not None:
            return open_image(clip.frames[t])
        if self._cache is None or self._cache[0] != c:
            self._cache = None  # free the previous clip before decoding the next
            self._cache = (c, _decode_video(clip.path))
        frames = self._cache[1]
        if t >= len(frames):
            raise OSError(f"{clip.path} decoded to {len(frames)} frames, fewer than counted")
        return frames[t]

    def annotation(self, index: int) -> Annotation:
        """The frame's clip index and time index."""
        return Annotation(clip=int(self._clip_of[index]), frame=int(self._frame_of[index]))

    def name(self, index: int) -> str:
        """``clip/frame-file (clip c, frame t)``."""
        c, t = int(self._clip_of[index]), int(self._frame_of[index])
        clip = self._clips[c]
        where = f"{clip.name}/{clip.frames[t].name}" if clip.frames is not None else str(clip.path)
        return f"{where} (clip {c}, frame {t})"

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_cache"] = None
        return state
