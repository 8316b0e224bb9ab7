"""Image sources that are not a folder: arrays and tensors, custom sources, the embedded photos.

Every image must come out RGB uint8 ``(H, W, 3)`` (see :mod:`vpt_env.data.sources`).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from _data_helpers import _assert_rgb_uint8
from PIL import Image

import vpt_env  # noqa: F401  (registers the envs)
from vpt_env.data import (
    Annotation,
    ArraySource,
    ImageReadError,
    ImageSource,
    load_images,
    resolve_source,
    to_rgb_uint8,
)
from vpt_env.data.annotations import MAX_CLASSES, Annotations
from vpt_env.data.embedded import PhotoSource

# -- arrays and tensors ----------------------------------------------------------------


def test_to_rgb_uint8_array_layouts_and_dtypes(device):
    v = np.full((6, 9), 77, np.uint8)
    for arr in (v, v[:, :, None]):
        out = to_rgb_uint8(arr)
        assert out.shape == (6, 9, 3) and out.dtype == np.uint8 and (out == 77).all()

    rgb = np.random.default_rng(0).integers(0, 256, (6, 9, 3), dtype=np.uint8)
    np.testing.assert_array_equal(to_rgb_uint8(rgb), rgb)

    rgba = np.zeros((6, 9, 4), np.uint8)
    rgba[..., :3] = (10, 20, 30)
    rgba[:3, :, 3] = 255
    out = to_rgb_uint8(rgba)
    assert out.shape == (6, 9, 3)
    assert (out[:3] == (10, 20, 30)).all() and (out[3:] == 255).all()

    u16 = np.array([[0, 65535, 32768]], np.uint16)
    np.testing.assert_array_equal(to_rgb_uint8(u16)[..., 0], [[0, 255, 128]])

    b = np.array([[True, False]])
    np.testing.assert_array_equal(to_rgb_uint8(b)[0], [[255] * 3, [0] * 3])

    f = np.array([[0.0, 0.5, 1.0, 0.25]], np.float32)
    np.testing.assert_array_equal(to_rgb_uint8(f)[0, :, 0], [0, 128, 255, 64])

    chw = torch.zeros(3, 12, 20, dtype=torch.uint8, device=device)
    chw[0], chw[1], chw[2] = 10, 20, 30
    out = to_rgb_uint8(chw)
    assert out.shape == (12, 20, 3) and (out == (10, 20, 30)).all()
    out = to_rgb_uint8(torch.full((1, 12, 20), 0.5, device=device))
    assert out.shape == (12, 20, 3) and (out == 128).all()


@pytest.mark.parametrize(
    ("arr", "error"),
    [
        (np.zeros((6, 9), np.int64), TypeError),
        (np.zeros((6, 9, 3), np.int32), TypeError),
        (np.zeros((6, 9, 2), np.uint8), ValueError),
        (np.zeros((6, 9, 5), np.uint8), ValueError),
        (np.zeros((2, 6, 9, 3), np.uint8), ValueError),
        (np.zeros((9,), np.uint8), ValueError),
        (np.zeros((0, 9, 3), np.uint8), ValueError),
        ("not an image", TypeError),
    ],
)
def test_to_rgb_uint8_rejects(arr, error):
    with pytest.raises(error):
        to_rgb_uint8(arr)


def test_array_source_list_through_load_images(device):
    images = [
        np.full((20, 30), 7, np.uint8),
        np.full((20, 30, 1), 8, np.uint8),
        np.full((20, 30, 3), 9, np.uint8),
        np.concatenate([np.full((20, 30, 3), 9, np.uint8), np.zeros((20, 30, 1), np.uint8)], axis=2),
        np.full((20, 30), 65535, np.uint16),
        np.ones((20, 30), bool),
        np.full((20, 30, 3), 0.2, np.float64),
        torch.full((3, 20, 30), 0.4, device=device),
    ]
    loaded, anns = load_images(images)
    assert len(loaded) == len(images) and len(anns) == len(images)
    for im in loaded:
        _assert_rgb_uint8(im)
        assert im.shape == (20, 30, 3)
    assert [int(im[0, 0, 0]) for im in loaded] == [7, 8, 9, 255, 255, 255, 51, 102]
    assert (anns.labels == -1).all()
    # Upsampled to min_side like files are.
    (small,), _ = load_images([np.zeros((8, 12), np.uint8)], min_side=16)
    assert small.shape == (16, 24, 3)


def test_array_batch_with_labels(device):
    batch = np.zeros((3, 16, 24, 3), np.uint8)
    for i in range(3):
        batch[i] = 40 * (i + 1)
    src = ArraySource(batch, labels=[1, 0, 1], classes=["cat", "dog"])
    assert isinstance(src, ImageSource) and len(src) == 3
    images, anns = load_images(src)
    assert [int(im[0, 0, 0]) for im in images] == [40, 80, 120]
    assert anns.labels.tolist() == [1, 0, 1]
    assert anns.classes == ["cat", "dog"]
    # Default class names, and a torch NCHW batch.
    tbatch = torch.zeros(2, 3, 16, 24, dtype=torch.uint8, device=device)
    tbatch[1] = 200
    images, anns = load_images(ArraySource(tbatch, labels=np.array([0, 2])))
    assert [im.shape for im in images] == [(16, 24, 3)] * 2
    assert int(images[1][5, 5, 1]) == 200
    assert anns.classes == ["0", "1", "2"]
    # Through the env, as a bare batch array.
    env = gym.make("ImageView-v0", source=batch, view_size=16, device=device)
    assert len(env.unwrapped.pool) == 3
    assert tuple(env.unwrapped.pool.image_hw[0].tolist()) == (16.0, 24.0)
    env.close()
    with pytest.raises(ValueError, match="labels"):
        ArraySource(batch, labels=[0, 1])


def test_bad_arrays_in_a_source():
    good = np.zeros((16, 16, 3), np.uint8)
    bad_dtype = np.zeros((16, 16, 3), np.int64)
    bad_shape = np.zeros((16, 16, 2), np.uint8)
    with pytest.raises(TypeError, match="int64"):
        to_rgb_uint8(ArraySource([good, bad_dtype]).image(1))
    with pytest.raises(ImageReadError, match="image 1") as info:
        load_images([good, bad_dtype], strict=True)
    assert isinstance(info.value.__cause__, TypeError)
    with pytest.raises(ImageReadError, match="image 1") as info:
        load_images([good, bad_shape], strict=True)
    assert isinstance(info.value.__cause__, ValueError)
    with pytest.warns(RuntimeWarning, match=r"skipped 2 unreadable"):
        images, _ = load_images([good, bad_dtype, bad_shape])
    assert len(images) == 1


# -- custom sources --------------------------------------------------------------------


class _CustomSource:
    """Implements the ImageSource protocol only (no ``name``)."""

    classes = ("thing", "other")

    def __len__(self) -> int:
        return 2

    def image(self, index: int):
        if index == 0:
            return np.full((32, 48, 3), 60, np.uint8)
        return Image.new("L", (48, 32), 90)

    def annotation(self, index: int) -> Annotation:
        if index == 0:
            return Annotation(label=0, boxes=[[0.25, 0.25, 0.75, 0.75]], box_labels=[0])
        return Annotation(
            label=1, captions=["grey"], boxes=[[0, 0, 0.5, 1], [0.5, 0, 1, 1]], box_labels=[1, 0]
        )


def test_custom_image_source(device):
    src = _CustomSource()
    assert isinstance(src, ImageSource)
    assert resolve_source(src) is src
    images, anns = load_images(src)
    assert [int(im[0, 0, 1]) for im in images] == [60, 90]
    assert anns.classes == ["thing", "other"]
    assert anns.labels.tolist() == [0, 1]
    assert anns.box_labels.tolist() == [[0, -1], [1, 0]]
    torch.testing.assert_close(anns.boxes[1], torch.tensor([[0, 0, 0.5, 1], [0.5, 0, 1, 1]]))
    assert anns.captions == [[], ["grey"]]

    env = gym.make("ImageView-v0", source=src, reward="coverage", target="thing", view_size=16, device=device)
    pool_anns = env.unwrapped.pool.annotations
    assert pool_anns.classes == ["thing", "other"]
    torch.testing.assert_close(pool_anns.boxes.cpu(), anns.boxes)
    env.reset(seed=1, options={"image_index": 0})
    _, reward, _, _, info = env.step(np.zeros(env.action_space.shape, np.float32))
    x0, y0, x1, y1 = info["box"].tolist()
    inside = max(0.0, min(x1, 0.75) - max(x0, 0.25)) * max(0.0, min(y1, 0.75) - max(y0, 0.25))
    assert reward == pytest.approx(inside / 0.25, abs=1e-5)
    assert info["cumulant"].shape == (2,)
    env.close()


# -- embedded photos -------------------------------------------------------------------


def test_embedded_photos():
    images, anns = load_images("photos")
    assert len(images) == 10
    for im in images:
        _assert_rgb_uint8(im)
        assert max(im.shape[:2]) <= 1024
        assert im.std() > 5  # a real photo, not a blank
    assert anns.num_classes > 0 and "cat" in anns.classes
    assert anns.has_boxes
    valid = anns.box_labels >= 0
    assert valid.any(dim=1).all()  # every photo has boxes
    boxes = anns.boxes[valid]
    assert (boxes >= 0).all() and (boxes <= 1).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert (anns.labels >= 0).all() and (anns.labels < anns.num_classes).all()
    # source=None is the same embedded set.
    default = resolve_source(None)
    assert isinstance(default, PhotoSource) and isinstance(resolve_source("photos"), PhotoSource)
    assert len(default) == 10 and list(default.classes) == anns.classes


@pytest.mark.parametrize(
    ("values", "said"),
    [(255.0, r"got \[255, 255\] \(a \[0, 255\] image\? scale it by 1/255\)"), (float("nan"), "got 48 NaN")],
)
def test_float_images_outside_0_1_are_refused_not_clipped(values, said):
    bad = np.full((4, 4, 3), values, np.float32)
    with pytest.raises(ValueError, match=f"float image must hold values in \\[0, 1\\], {said}"):
        to_rgb_uint8(bad)
    with pytest.raises(ImageReadError, match="cannot read image 0: a float image"):
        load_images([bad, np.zeros((4, 4, 3), np.uint8)], strict=True)
    with pytest.warns(RuntimeWarning, match="skipped 1 unreadable image"):
        loaded, _ = load_images([bad, np.zeros((4, 4, 3), np.uint8)])
    assert len(loaded) == 1  # skipped and counted, not turned white or black


def test_labels_beyond_the_class_limit_are_refused():
    images = np.zeros((2, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match=rf"labels must be class indices in \[0, {MAX_CLASSES}\).*5000000"):
        ArraySource(images, labels=[0, 5_000_000])
    with pytest.raises(ValueError, match="at most 100000"):
        Annotations([Annotation(label=0)], classes=[str(i) for i in range(MAX_CLASSES + 1)])
