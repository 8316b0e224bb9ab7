"""Image sources: folder reading in every PIL mode, and unreadable or missing files.

Every image must come out RGB uint8 ``(H, W, 3)`` (see :mod:`vpt_env.data.sources`).
Files in the test folder have distinct sizes, so that the loaded order can be
checked against the expected sorted recursive order by shape alone.

Arrays, tensors, custom sources and the embedded photos are in ``test_sources_arrays.py``.
"""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from _data_helpers import _assert_rgb_uint8
from PIL import Image

import vpt_env  # noqa: F401  (registers the envs)
from vpt_env.data import FolderSource, ImageReadError, load_images, resolve_source, to_rgb_uint8

RGB = (30, 120, 210)
PALETTE = (200, 30, 40, 5, 6, 7)  # index 0 -> (200, 30, 40), index 1 -> (5, 6, 7)


def _size(i: int) -> tuple[int, int]:
    """(width, height) of the i-th file in sorted order: all distinct, all landscape."""
    h = 10 + i
    return 2 * h + 1, h


def _palette_image(size: tuple[int, int]) -> Image.Image:
    w, h = size
    idx = np.zeros((h, w), np.uint8)
    idx[:, w // 2 :] = 1  # left half index 0, right half index 1
    img = Image.frombytes("P", (w, h), idx.tobytes())
    img.putpalette(list(PALETTE))
    return img


def _write_folder(root: Path) -> list[str]:
    """Write the mixed-mode folder; return the image paths (relative) in expected load order."""
    (root / "a_sub" / "deeper").mkdir(parents=True)
    (root / "b_sub").mkdir()
    (root / ".cache").mkdir()
    order: list[str] = []

    def save(rel: str, img: Image.Image, **kw: object) -> None:
        w, h = _size(len(order))
        assert img.size == (w, h), (rel, img.size, (w, h))
        img.save(root / rel, **kw)
        order.append(rel)

    def size() -> tuple[int, int]:
        return _size(len(order))

    save("00_L.png", Image.new("L", size(), 77))
    w, h = size()
    grey = Image.new("L", (w, h), 10)
    alpha = Image.new("L", (w, h), 0)
    alpha.paste(255, (w // 2, 0, w, h))  # left half transparent, right half opaque
    save("01_LA.png", Image.merge("LA", (grey, alpha)))
    save("02_rgb.jpg", Image.new("RGB", size(), RGB), quality=95)
    save("03_rgb.png", Image.new("RGB", size(), RGB))
    save("04_rgb.webp", Image.new("RGB", size(), RGB), lossless=True)
    save("05_rgb.bmp", Image.new("RGB", size(), RGB))
    save("06_rgb.tiff", Image.new("RGB", size(), RGB))
    save("07_upper.PNG", Image.new("RGB", size(), RGB))
    save("a_sub/08_P.png", _palette_image(size()))
    save("a_sub/09_P_transparent.png", _palette_image(size()), transparency=1)
    w, h = size()
    rgba = np.zeros((h, w, 4), np.uint8)
    rgba[..., :3] = (10, 20, 30)
    rgba[:, : w // 3, 3] = 0  # transparent -> white
    rgba[:, w // 3 : 2 * w // 3, 3] = 128  # half transparent
    rgba[:, 2 * w // 3 :, 3] = 255  # opaque
    save("a_sub/deeper/10_RGBA.png", Image.fromarray(rgba))
    save("b_sub/11_CMYK.jpg", Image.new("CMYK", size(), (0, 255, 255, 0)), quality=95)  # red
    w, h = size()
    ramp = np.round(np.linspace(0, 65535, w)).astype(np.uint16)
    ramp[w // 2] = 32768
    save("b_sub/12_I16.png", Image.fromarray(np.tile(ramp, (h, 1))))
    # Not read: non-image files, hidden files and folders.
    (root / "notes.txt").write_text("not an image")
    (root / "b_sub" / "labels.json").write_text("{}")
    Image.new("RGB", (5, 5), (1, 2, 3)).save(root / ".hidden.png")
    Image.new("RGB", (6, 6), (1, 2, 3)).save(root / ".cache" / "13_cached.png")
    return order


@pytest.fixture
def folder(tmp_path: Path) -> tuple[Path, list[str]]:
    root = tmp_path / "images"
    root.mkdir()
    return root, _write_folder(root)


def _by_name(root: Path) -> dict[str, np.ndarray]:
    """Loaded images keyed by file name (independent of the order check)."""
    images, _ = load_images(root)
    paths = FolderSource(root).paths
    assert len(images) == len(paths)
    return {p.name: im for p, im in zip(paths, images, strict=True)}


# -- folders ---------------------------------------------------------------------------


def test_folder_loads_every_mode_as_rgb_uint8_in_sorted_recursive_order(folder):
    root, order = folder
    images, anns = load_images(root)
    assert len(images) == len(order) == 13
    for im in images:
        _assert_rgb_uint8(im)
    # Distinct sizes identify the files: the order is sorted by path, recursively.
    expected = [(_size(i)[1], _size(i)[0], 3) for i in range(len(order))]
    assert [im.shape for im in images] == expected
    assert len(anns) == 13 and anns.num_classes == 0 and not anns.has_boxes
    # Hidden and non-image files are not listed; the uppercase extension is.
    src = FolderSource(root)
    assert [p.relative_to(root).as_posix() for p in src.paths] == order
    assert resolve_source(str(root)).paths == src.paths


def test_folder_pixel_values_per_mode(folder):
    root, _ = folder
    ims = _by_name(root)

    grey = ims["00_L.png"]
    assert (grey == 77).all()  # L value v -> (v, v, v)

    la = ims["01_LA.png"]
    w = la.shape[1]
    assert (la[:, : w // 2] == 255).all()  # alpha 0 -> white
    assert (la[:, w // 2 :] == 10).all()  # opaque grey 10 -> (10, 10, 10)

    for name, tol in [
        ("02_rgb.jpg", 4),
        ("03_rgb.png", 0),
        ("04_rgb.webp", 0),
        ("05_rgb.bmp", 0),
        ("06_rgb.tiff", 0),
        ("07_upper.PNG", 0),
    ]:
        diff = np.abs(ims[name].astype(int) - np.array(RGB)).max()
        assert diff <= tol, (name, diff)

    pal = ims["08_P.png"]
    w = pal.shape[1]
    assert (pal[:, : w // 2] == PALETTE[:3]).all()
    assert (pal[:, w // 2 :] == PALETTE[3:]).all()

    pal_t = ims["09_P_transparent.png"]
    w = pal_t.shape[1]
    assert (pal_t[:, : w // 2] == PALETTE[:3]).all()  # palette colour comes through
    assert (pal_t[:, w // 2 :] == 255).all()  # transparent index -> white

    rgba = ims["10_RGBA.png"]
    w = rgba.shape[1]
    assert (rgba[:, : w // 3] == 255).all()  # alpha 0 -> white
    assert (rgba[:, 2 * w // 3 :] == (10, 20, 30)).all()  # opaque
    mid = rgba[:, w // 3 : 2 * w // 3].astype(float)
    a = 128 / 255
    expected = a * np.array([10, 20, 30]) + (1 - a) * 255  # composited onto white
    assert np.abs(mid - expected).max() <= 1.5

    cmyk = ims["11_CMYK.jpg"].astype(int)
    assert np.abs(cmyk - (255, 0, 0)).max() <= 8  # CMYK (0, 255, 255, 0) is red

    i16 = ims["12_I16.png"]
    _assert_rgb_uint8(i16)
    w = i16.shape[1]
    assert (i16[:, 0] == 0).all()  # 0 -> 0
    assert (i16[:, -1] == 255).all()  # 65535 -> 255
    assert (i16[:, w // 2] == 128).all()  # 32768 * 255 / 65535 = 127.5 -> 128
    assert (np.diff(i16[0, :, 0].astype(int)) >= 0).all()  # the gradient is kept, not re-normalised
    assert (i16[..., 0] == i16[..., 1]).all() and (i16[..., 1] == i16[..., 2]).all()


def test_i16_constant_image_is_scaled_not_normalised(tmp_path):
    """A uniform 16-bit image keeps its brightness (no min..max stretch)."""
    for value, expected in [(65535, 255), (0, 0), (257 * 40, 40)]:
        sub = tmp_path / f"c{value}"
        sub.mkdir()
        Image.fromarray(np.full((12, 20), value, np.uint16)).save(sub / "flat.png")
        (im,), _ = load_images(sub)
        assert im.shape == (12, 20, 3) and im.dtype == np.uint8
        assert (im == expected).all(), (value, np.unique(im))


@pytest.mark.parametrize(
    ("mode", "values", "expected"),
    [
        ("I;16", np.array([[0, 32768, 65535]], np.uint16), [0, 128, 255]),
        ("I", np.array([[-10, 0, 10]], np.int32), [0, 128, 255]),  # 32-bit: own min..max
        ("F", np.array([[2.0, 3.0, 4.0]], np.float32), [0, 128, 255]),
    ],
)
def test_pil_high_bit_depth_modes_become_rgb(mode, values, expected):
    img = Image.fromarray(values)
    assert img.mode == mode
    out = to_rgb_uint8(img)
    assert out.shape == (1, 3, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0], np.repeat(np.array(expected)[:, None], 3, axis=1))


def test_folder_through_env_upsamples_small_images(folder):
    root, order = folder
    env = gym.make("ImageView-v0", source=str(root), view_size=32)
    pool = env.unwrapped.pool
    assert len(pool) == len(order)
    for i in range(len(pool)):
        im = pool.image(i)
        _assert_rgb_uint8(im)
        h, w = im.shape[:2]
        w0, h0 = _size(i)
        assert min(h, w) == 32  # every test image is smaller than the view: shorter side -> view_size
        assert abs(w - w0 * 32 / h0) <= 1  # aspect kept
    obs, _ = env.reset(seed=0)
    assert obs.shape == (32, 32, 3) and obs.dtype == np.uint8
    env.close()


def test_max_side_caps_the_longer_side(tmp_path):
    Image.new("RGB", (300, 150), RGB).save(tmp_path / "big.png")
    Image.new("RGB", (90, 200), RGB).save(tmp_path / "tall.png")
    images, _ = load_images(tmp_path, max_side=100)
    assert [im.shape for im in images] == [(50, 100, 3), (100, 45, 3)]
    assert np.abs(images[0].astype(int) - RGB).max() <= 1
    # Default cap: 1024; smaller images are untouched.
    images, _ = load_images(tmp_path)
    assert [im.shape for im in images] == [(150, 300, 3), (200, 90, 3)]
    # Through the env's max_image_side=.
    env = gym.make("ImageView-v0", source=tmp_path, max_image_side=100, view_size=16)
    hw = env.unwrapped.pool.image_hw.cpu().tolist()
    assert hw == [[50.0, 100.0], [100.0, 45.0]]
    env.close()
    with pytest.raises(ValueError, match="max_image_side"):
        gym.make("ImageView-v0", source=tmp_path, max_image_side=16, view_size=32)


def test_max_side_cap_on_a_large_array():
    big = np.zeros((1100, 2200, 3), np.uint8)
    (im,), _ = load_images([big])
    assert im.shape == (512, 1024, 3)  # default MAX_IMAGE_SIDE


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 20, 20))  # left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    (im,), _ = load_images(tmp_path)
    assert im.shape == (40, 20, 3)  # transposed from the stored (20, 40)
    # Clockwise: the stored left column becomes the top row.
    assert np.abs(im[5, 10].astype(int) - (255, 0, 0)).max() <= 10
    assert np.abs(im[35, 10].astype(int) - (0, 0, 255)).max() <= 10


# -- unreadable files ------------------------------------------------------------------


def _write_corrupt(root: Path) -> list[Path]:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), RGB).save(buf, "JPEG")
    data = buf.getvalue()
    bad = [root / "a_truncated.jpg", root / "b_garbage.png"]
    bad[0].write_bytes(data[: len(data) // 2])
    bad[1].write_bytes(b"this is not a png at all" * 10)
    return bad


def _runtime_warnings(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, RuntimeWarning)]


def test_unreadable_files_are_skipped_with_one_warning(tmp_path):
    bad = _write_corrupt(tmp_path)
    Image.new("RGB", (24, 16), RGB).save(tmp_path / "c_good.png")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        images, _ = load_images(tmp_path)
    assert [im.shape for im in images] == [(16, 24, 3)]
    msgs = _runtime_warnings(record)
    assert len(msgs) == 1, msgs
    assert re.search(r"\b2\b", msgs[0].replace(str(tmp_path), "")), msgs[0]  # the count
    assert str(bad[0]) in msgs[0] or str(bad[1]) in msgs[0]

    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        env = gym.make("ImageView-v0", source=tmp_path, view_size=16)
    assert len(env.unwrapped.pool) == 1
    msgs = _runtime_warnings(record)
    assert len(msgs) == 1, msgs
    assert re.search(r"\b2\b", msgs[0].replace(str(tmp_path), "")), msgs[0]
    env.close()


def test_strict_raises_image_read_error_naming_the_file(tmp_path):
    bad = _write_corrupt(tmp_path)
    Image.new("RGB", (24, 16), RGB).save(tmp_path / "c_good.png")
    assert issubclass(ImageReadError, ValueError)
    with pytest.raises(ImageReadError) as info:
        load_images(tmp_path, strict=True)
    assert str(bad[0]) in str(info.value)  # the first unreadable file in sorted order
    with pytest.raises(ValueError, match=re.escape(str(bad[0]))):
        gym.make("ImageView-v0", source=tmp_path, strict=True, view_size=16)


def test_folder_with_only_corrupt_files(tmp_path):
    _write_corrupt(tmp_path)
    with pytest.warns(RuntimeWarning, match=r"2 unreadable"), pytest.raises(ValueError) as info:
        load_images(tmp_path)
    assert "no readable image" in str(info.value)
    with pytest.raises(ImageReadError):
        load_images(tmp_path, strict=True)


def test_empty_and_missing_folders(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no image files") as info:
        load_images(empty)
    assert str(empty) in str(info.value)

    text_only = tmp_path / "text_only"
    (text_only / "sub").mkdir(parents=True)
    (text_only / "a.txt").write_text("x")
    (text_only / "sub" / "b.csv").write_text("1,2")
    Image.new("RGB", (8, 8)).save(text_only / ".hidden.png")  # hidden: does not count
    with pytest.raises(ValueError, match="no image files"):
        load_images(text_only)

    missing = tmp_path / "does_not_exist"
    with pytest.raises(ValueError) as info:
        load_images(missing)
    assert str(missing) in str(info.value)
    assert "photos" in str(info.value)  # names what else source= could be
    with pytest.raises(ValueError, match="does_not_exist"):
        gym.make("ImageView-v0", source=str(missing))

    with pytest.raises(TypeError, match="source must be"):
        load_images(42)


def test_looping_and_broken_symlinks_are_listed_and_counted(tmp_path):
    Image.new("RGB", (24, 16), RGB).save(tmp_path / "a.png")
    (tmp_path / "loop.png").symlink_to("loop.png")
    (tmp_path / "broken.jpg").symlink_to("nowhere.jpg")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        images, _ = load_images(tmp_path)
    assert len(images) == 1
    msgs = _runtime_warnings(record)
    assert len(msgs) == 1 and "skipped 2 unreadable image(s) of 3" in msgs[0], msgs
    with pytest.raises(ImageReadError, match=r"broken\.jpg"):
        load_images(tmp_path, strict=True)


def test_a_single_pil_image_or_image_file_is_a_source(tmp_path):
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8))
    env = gym.make("ImageView-v0", source=img, view_size=16)
    assert len(env.unwrapped.pool) == 1 and env.reset(seed=0)[0].shape == (16, 16, 3)
    np.testing.assert_array_equal(env.unwrapped.pool.image(0), np.asarray(img))
    for ext in ("png", "jpg", "bmp", "webp", "tif"):
        path = tmp_path / f"one.{ext}"
        img.save(path)
        for source in (path, str(path)):
            env = gym.make("ImageView-v0", source=source, view_size=16)
            assert len(env.unwrapped.pool) == 1, ext
            # A still .webp/.tif is an image, not a one-frame video (no time action).
            assert env.action_space.shape == (11,), ext
    frames = [Image.fromarray(np.full((20, 20, 3), 40 * i, np.uint8)) for i in range(3)]
    frames[0].save(tmp_path / "clip.webp", save_all=True, append_images=frames[1:])
    env = gym.make("ImageView-v0", source=tmp_path / "clip.webp", view_size=16)
    assert len(env.unwrapped.pool) == 3 and env.action_space.shape == (12,)  # still a video
