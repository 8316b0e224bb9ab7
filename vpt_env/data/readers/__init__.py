"""Dataset readers: each is an :class:`~vpt_env.data.ImageSource` usable as ``source=``.

=======================  ===================================================================
reader                   format
=======================  ===================================================================
ImageFolderSource        torchvision ``ImageFolder``: ``root/<class>/**/<image>``, labelled
CaptionManifest          JSONL or CSV/TSV manifest of image paths with captions
CocoSource               COCO instances JSON (boxes, categories) and/or captions JSON
WebDatasetSource         WebDataset tar shards (``key.jpg`` + ``.txt``/``.json``/``.cls``)
VideoFramesSource        folders of frames per clip, GIF/WebP/TIFF (and, if decodable, mp4)
=======================  ===================================================================

Every reader takes ``strict``, counts what it skipped in ``skipped``
(reason -> count), describes it in ``summary()`` and warns once (see
:mod:`vpt_env.data.readers._base`).
"""

from vpt_env.data.readers._base import Reader
from vpt_env.data.readers.braces import expand_braces
from vpt_env.data.readers.coco import CocoSource, coco_kind
from vpt_env.data.readers.image_folder import ImageFolderSource
from vpt_env.data.readers.manifest import CaptionManifest
from vpt_env.data.readers.video import VIDEO_EXTENSIONS, VideoFramesSource, video_backends
from vpt_env.data.readers.webdataset import WebDatasetSource

__all__ = [
    "VIDEO_EXTENSIONS",
    "CaptionManifest",
    "CocoSource",
    "ImageFolderSource",
    "Reader",
    "VideoFramesSource",
    "WebDatasetSource",
    "coco_kind",
    "expand_braces",
    "video_backends",
]
