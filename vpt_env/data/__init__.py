"""Image sources, annotations and the device-resident image pool."""

from vpt_env.data.annotations import Annotation, Annotations, view_cumulant
from vpt_env.data.objects import (
    DatasetNotInstalledError,
    ObjectSource,
    available_object_sets,
    load_object_set,
)
from vpt_env.data.pool import ImagePool
from vpt_env.data.readers import (
    CaptionManifest,
    CocoSource,
    ImageFolderSource,
    VideoFramesSource,
    WebDatasetSource,
    expand_braces,
)
from vpt_env.data.scenes import SceneConfig, SceneSource
from vpt_env.data.sources import (
    ArraySource,
    FilesSource,
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
    "DatasetNotInstalledError",
    "FilesSource",
    "FolderSource",
    "ImageFolderSource",
    "ImagePool",
    "ImageReadError",
    "ImageSource",
    "ObjectSource",
    "SceneConfig",
    "SceneSource",
    "SubsetSource",
    "VideoFramesSource",
    "WebDatasetSource",
    "available_object_sets",
    "expand_braces",
    "load_images",
    "load_object_set",
    "resolve_source",
    "to_rgb_uint8",
    "view_cumulant",
]
