"""Single-object labelled image sets that install with the set-up (no download).

Three sets of small grey object images, each with a fixed split into train and
test *instances* (an instance is one source image; the test split holds
instances never seen in training):

* ``"digits"``: scikit-learn's handwritten digits, 1797 images of 8x8 (always
  available; scikit-learn is a dependency). Classes ``"digit 0"`` ..
  ``"digit 9"``.
* ``"fashion"``: Fashion-MNIST, 70,000 images of 28x28, from Debian's package
  ``dataset-fashion-mnist`` (``apt-get install dataset-fashion-mnist``; the
  idx files under ``/usr/share/datasets/fashion-mnist``, or a folder named by
  the ``VPT_FASHION_MNIST_DIR`` environment variable). Classes ``"t-shirt"``,
  ``"trouser"``, ``"pullover"``, ``"dress"``, ``"coat"``, ``"sandal"``,
  ``"shirt"``, ``"sneaker"``, ``"bag"``, ``"ankle boot"``.
* ``"animals"``: the animal silhouettes of PyPI's ``animal-mnist``, 10,000
  images of 28x28 (``pip install --no-deps animal-mnist``; its loader imports
  tensorflow, so this module reads the package's pickled arrays itself and
  never imports it). Classes ``"bear"``, ``"bird"``, ``"cat"``, ``"cow"``,
  ``"dog"``, ``"elephant"``, ``"giraffe"``, ``"horse"``, ``"sheep"``,
  ``"zebra"``.

Splits. Fashion-MNIST keeps its official split (60,000 / 10,000), minus the
test images that are byte-identical to a training image. Digits and animals
have none, so an image goes to the test split when the first byte of the
BLAKE2b hash of its pixels is below 52 (about 20%): the split depends on the
content alone, so exact duplicates (animal-mnist has 284) always fall on the
same side and no test instance is a training instance.

All images are uint8 with the object bright on black (digits are rescaled
from 0..16 to 0..255).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import os
import pickle
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from vpt_env.data.annotations import Annotation

__all__ = [
    "OBJECT_SETS",
    "DatasetNotInstalledError",
    "ObjectSource",
    "available_object_sets",
    "load_animals",
    "load_digits",
    "load_fashion",
    "load_object_set",
    "tight_boxes",
]

#: Default folder of the Debian package ``dataset-fashion-mnist``.
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
#: Environment variable naming another folder with the Fashion-MNIST idx files.
FASHION_ENV = "VPT_FASHION_MNIST_DIR"

DIGIT_CLASSES: tuple[str, ...] = tuple(f"digit {i}" for i in range(10))
FASHION_CLASSES: tuple[str, ...] = (
    "t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot",
)
ANIMAL_CLASSES: tuple[str, ...] = (
    "bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra",
)
#: Names of the object sets, with their classes, in the order scenes use them.
OBJECT_SETS: dict[str, tuple[str, ...]] = {
    "digits": DIGIT_CLASSES,
    "fashion": FASHION_CLASSES,
    "animals": ANIMAL_CLASSES,
}
SPLITS = ("train", "test")
# Hash split: an image is a test instance when its hash's first byte is below this (52/256 ~ 20%).
_TEST_BYTE = 52

_INSTALL = {
    "fashion": (
        "Fashion-MNIST is not installed: run `apt-get install dataset-fashion-mnist` (Debian/Ubuntu; "
        "`make test` does it when run as root), or put its four idx files in a folder and set "
        f"{FASHION_ENV} to it"
    ),
    "animals": (
        "animal-mnist is not installed: run `pip install --no-deps animal-mnist` "
        "(`make test` does it; --no-deps skips its unused tensorflow dependency)"
    ),
}


class DatasetNotInstalledError(ImportError):
    """An optional object set is not installed; the message says how to install it."""


Loaded = tuple[np.ndarray, np.ndarray, tuple[str, ...]]


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def _readonly(*arrays: np.ndarray) -> None:
    for a in arrays:
        a.setflags(write=False)


def _hash_test_mask(images: np.ndarray) -> np.ndarray:
    """True for images whose content hash puts them in the test split."""
    flat = images.reshape(len(images), -1)
    return np.array(
        [hashlib.blake2b(row.tobytes(), digest_size=8).digest()[0] < _TEST_BYTE for row in flat],
        dtype=bool,
    )


@functools.cache
def _digits_all() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits as sk_load_digits

    data = sk_load_digits()
    images = np.round(data.images * (255.0 / 16.0)).astype(np.uint8)
    labels = data.target.astype(np.int64)
    return images, labels, _hash_test_mask(images)


def load_digits(split: str = "train") -> Loaded:
    """scikit-learn's 8x8 handwritten digits, one split.

    Args:
        split: ``"train"`` (about 80% of the 1797 images) or ``"test"``.

    Returns:
        ``(images, labels, classes)``: uint8 ``(N, 8, 8)`` (object bright on
        black, 0..255), int64 ``(N,)`` class indices, and the class names
        ``"digit 0"`` .. ``"digit 9"``. The arrays are read-only.
    """
    _check_split(split)
    return _split_cached("digits", split)


def _read_idx(path: Path) -> np.ndarray:
    """Read an idx file (the MNIST format), gzipped or not."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not a uint8 idx file")
    ndim = raw[3]
    dims = tuple(int(d) for d in np.frombuffer(raw, ">i4", count=ndim, offset=4))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: idx header says {dims} but holds {data.size} values")
    return data.reshape(dims).copy()


def _fashion_dir() -> Path | None:
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte")
    for folder in (os.environ.get(FASHION_ENV), FASHION_DIR):
        if not folder:
            continue
        folder = Path(folder)
        if all((folder / n).is_file() or (folder / f"{n}.gz").is_file() for n in names):
            return folder
    return None


def _idx_file(folder: Path, name: str) -> Path:
    plain = folder / name
    return plain if plain.is_file() else folder / f"{name}.gz"


@functools.cache
def _fashion_all() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    folder = _fashion_dir()
    if folder is None:
        raise DatasetNotInstalledError(_INSTALL["fashion"])
    parts = []
    for prefix in ("train", "t10k"):
        x = _read_idx(_idx_file(folder, f"{prefix}-images-idx3-ubyte"))
        y = _read_idx(_idx_file(folder, f"{prefix}-labels-idx1-ubyte")).astype(np.int64)
        if x.ndim != 3 or len(x) != len(y):
            raise ValueError(f"{folder}: {prefix} images {x.shape} and labels {y.shape} do not match")
        parts.append((x, y))
    (xtr, ytr), (xte, yte) = parts
    # Drop test images that are exact copies of a training image: test instances must be unseen.
    seen = {row.tobytes() for row in xtr.reshape(len(xtr), -1)}
    keep = np.array([row.tobytes() not in seen for row in xte.reshape(len(xte), -1)], dtype=bool)
    images = np.concatenate((xtr, xte[keep]))
    labels = np.concatenate((ytr, yte[keep]))
    test = np.concatenate((np.zeros(len(xtr), bool), np.ones(int(keep.sum()), bool)))
    return images, labels, test


def load_fashion(split: str = "train") -> Loaded:
    """Fashion-MNIST (28x28) from Debian's ``dataset-fashion-mnist``, one split.

    Args:
        split: ``"train"`` (the official 60,000) or ``"test"`` (the official
            10,000 less exact copies of training images).

    Returns:
        ``(images, labels, classes)``: uint8 ``(N, 28, 28)``, int64 ``(N,)``,
        class names. The arrays are read-only.

    Raises:
        DatasetNotInstalledError: when the package is not installed.
    """
    _check_split(split)
    return _split_cached("fashion", split)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain numpy arrays and nothing else (no arbitrary code)."""

    _ALLOWED: ClassVar[frozenset[tuple[str, str]]] = frozenset(
        {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy._core.multiarray", "_reconstruct")}
    )

    def find_class(self, module: str, name: str) -> Any:
        # Pickles written by numpy 1.x name numpy.core, which numpy 2 renamed numpy._core.
        if module.startswith("numpy.core"):
            module = "numpy._core" + module[len("numpy.core") :]
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")
        return super().find_class(module, name)


def _animals_dir() -> Path | None:
    # find_spec on a top-level package locates it without importing it (its
    # __init__ imports tensorflow).
    spec = importlib.util.find_spec("animal_mnist")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "data" / "Animal_MNIST"
    return folder if folder.is_dir() else None


def _unpickle_array(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        out = _NumpyOnlyUnpickler(f).load()
    if not isinstance(out, np.ndarray):
        raise ValueError(f"{path} does not hold a numpy array")
    return out


@functools.cache
def _animals_all() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    folder = _animals_dir()
    if folder is None:
        raise DatasetNotInstalledError(_INSTALL["animals"])
    images = _unpickle_array(folder / "animal_data_version_3.gz").astype(np.uint8)
    labels = _unpickle_array(folder / "animal_label_version_3.gz").astype(np.int64)
    if images.ndim != 3 or len(images) != len(labels):
        raise ValueError(f"{folder}: images {images.shape} and labels {labels.shape} do not match")
    return images, labels, _hash_test_mask(images)


def load_animals(split: str = "train") -> Loaded:
    """The animal silhouettes of ``animal-mnist`` (28x28), one split.

    Args:
        split: ``"train"`` (about 80% of the 10,000) or ``"test"``.

    Returns:
        ``(images, labels, classes)``: uint8 ``(N, 28, 28)``, int64 ``(N,)``,
        class names (alphabetical, as the package labels them). Read-only.

    Raises:
        DatasetNotInstalledError: when the package is not installed.
    """
    _check_split(split)
    return _split_cached("animals", split)


_ALL = {"digits": _digits_all, "fashion": _fashion_all, "animals": _animals_all}


@functools.cache
def _split_cached(name: str, split: str) -> Loaded:
    images, labels, test = _ALL[name]()
    keep = test if split == "test" else ~test
    out_images, out_labels = images[keep], labels[keep]
    _readonly(out_images, out_labels)
    return out_images, out_labels, OBJECT_SETS[name]


def load_object_set(name: str, split: str = "train") -> Loaded:
    """One object set by name (``"digits"``, ``"fashion"`` or ``"animals"``).

    Returns:
        ``(images, labels, classes)`` as the per-set loaders.

    Raises:
        ValueError: for an unknown name or split.
        DatasetNotInstalledError: when the set is not installed.
    """
    if name not in OBJECT_SETS:
        raise ValueError(f"unknown object set {name!r}; known: {list(OBJECT_SETS)}")
    _check_split(split)
    return _split_cached(name, split)


def available_object_sets() -> tuple[str, ...]:
    """Names of the object sets installed here, in :data:`OBJECT_SETS` order (cheap: reads no data)."""
    found = {"digits": True, "fashion": _fashion_dir() is not None, "animals": _animals_dir() is not None}
    return tuple(n for n in OBJECT_SETS if found[n])


def tight_boxes(images: np.ndarray, threshold: int = 32) -> np.ndarray:
    """``(N, 4)`` int ``(x0, y0, x1, y1)`` pixel boxes (exclusive ends) of the pixels above ``threshold``.

    Images with no such pixel get the whole frame.
    """
    n, h, w = images.shape
    on = images > threshold
    rows, cols = on.any(axis=2), on.any(axis=1)
    empty = ~rows.any(axis=1)
    y0 = np.where(empty, 0, rows.argmax(axis=1))
    y1 = np.where(empty, h, h - rows[:, ::-1].argmax(axis=1))
    x0 = np.where(empty, 0, cols.argmax(axis=1))
    x1 = np.where(empty, w, w - cols[:, ::-1].argmax(axis=1))
    return np.stack((x0, y0, x1, y1), axis=1).astype(np.int64)


class ObjectSource:
    """One object set as an image source (``source="digits"``, ``"fashion"``, ``"animals"``).

    Each image is one object, grey on black, at its native size (the env
    upsamples images smaller than the view on load). ``annotation(i)`` holds
    the class as ``label`` and the object's tight box (pixels brighter than
    32) with the same class, so box rewards and cumulants work too.

    Args:
        name: the object set.
        split: ``"train"`` or ``"test"``.

    Raises:
        DatasetNotInstalledError: when the set is not installed.
    """

    def __init__(self, name: str, split: str = "train") -> None:
        self.images, self.labels, classes = load_object_set(name, split)
        self.classes = list(classes)
        self.set_name = name
        self.split = split
        h, w = self.images.shape[1:]
        self._boxes = tight_boxes(self.images).astype(np.float32) / np.array([w, h, w, h], np.float32)

    def __len__(self) -> int:
        return len(self.images)

    def image(self, index: int) -> np.ndarray:
        return self.images[index]

    def annotation(self, index: int) -> Annotation:
        label = int(self.labels[index])
        return Annotation(label=label, boxes=self._boxes[index][None], box_labels=[label])

    def name(self, index: int) -> str:
        """``"{set} {split} image {index}"``, for warnings and errors."""
        return f"{self.set_name} {self.split} image {index}"
