"""Image sources, annotations and the device-resident image pool."""

from vpt_env.data.annotations import Annotation, Annotations, view_cumulant
from vpt_env.data.pool import ImagePool
from vpt_env.data.readers import (
    CaptionManifest,
    CocoSource,
    ImageFolderSource,
    VideoFramesSource,
    WebDatasetSource,
    expand_braces,
)
from vpt_env.data.sources import (
    ArraySource,
    FolderSource,
    ImageReadError,
    ImageSource,
    SubsetSource,
    load_images,
    resolve_source,
    to_rgb_uint8,
)

__all__ = [
    "Annotation",
    "Annotations",
    "ArraySource",
    "CaptionManifest",
    "CocoSource",
    "FolderSource",
    "ImageFolderSource",
    "ImagePool",
    "ImageReadError",
    "ImageSource",
    "SubsetSource",
    "VideoFramesSource",
    "WebDatasetSource",
    "expand_braces",
    "load_images",
    "resolve_source",
    "to_rgb_uint8",
    "view_cumulant",
]
