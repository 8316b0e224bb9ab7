"""Embedded datasets: the single-object sets, the generated scenes, their determinism and shortcuts.

Fashion-MNIST and animal-mnist are installed by ``make test``; tests that
need them are skipped (visibly) where they are not, and under ``CI=true``
a test fails unless both are installed.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import vpt_env  # noqa: F401  (registers the envs)
from vpt_env.data import objects, scene_layout
from vpt_env.data.embedded import EMBEDDED, embedded_source
from vpt_env.data.objects import (
    OBJECT_SETS,
    DatasetNotInstalledError,
    ObjectSource,
    available_object_sets,
    load_object_set,
)
from vpt_env.data.scene_text import caption, colour_name, position_name
from vpt_env.data.scenes import SceneConfig, SceneSource
from vpt_env.data.sources import resolve_source

INSTALLED = available_object_sets()


def _clear_object_caches() -> None:
    for fn in (objects._fashion_all, objects._animals_all, objects._split_cached, scene_layout.glyph_pool):
        fn.cache_clear()


# -- set-up -----------------------------------------------------------------------------------------


@pytest.mark.skipif(os.environ.get("CI") != "true", reason="only under CI=true")
def test_ci_setup_installed_every_object_set() -> None:
    assert INSTALLED == tuple(OBJECT_SETS), f"make test should install all object sets; found {INSTALLED}"


# -- single-object sets -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(OBJECT_SETS))
def test_object_set_splits_are_disjoint_instances(name: str) -> None:
    if name not in INSTALLED:
        pytest.skip(f"{name} not installed")
    xtr, ytr, classes = load_object_set(name, "train")
    xte, yte, classes_te = load_object_set(name, "test")
    assert classes == classes_te == OBJECT_SETS[name] and len(classes) == 10
    side = 8 if name == "digits" else 28
    for x, y in ((xtr, ytr), (xte, yte)):
        assert x.dtype == np.uint8 and x.ndim == 3 and x.shape[1:] == (side, side)
        assert y.dtype == np.int64 and y.shape == (len(x),)
        assert set(np.unique(y)) == set(range(10))
        assert not x.flags.writeable
    assert 0.1 < len(xte) / (len(xtr) + len(xte)) < 0.3
    train = {hashlib.sha1(r.tobytes()).digest() for r in xtr}
    assert not any(hashlib.sha1(r.tobytes()).digest() in train for r in xte)
    again = load_object_set(name, "test")[0]
    assert np.array_equal(again, xte)


def test_digits_are_rescaled_and_named() -> None:
    x, y, classes = objects.load_digits()
    assert x.max() == 255 and classes[3] == "digit 3"


def test_missing_sets_raise_with_install_instructions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(objects, "_fashion_dir", lambda: None)
    monkeypatch.setattr(objects, "_animals_dir", lambda: None)
    _clear_object_caches()
    try:
        with pytest.raises(DatasetNotInstalledError, match="apt-get install dataset-fashion-mnist"):
            objects.load_fashion()
        with pytest.raises(DatasetNotInstalledError, match="pip install --no-deps animal-mnist"):
            objects.load_animals("test")
        assert available_object_sets() == ("digits",)
        with pytest.raises(DatasetNotInstalledError):
            SceneSource(n_images=4, object_sets=("digits", "animals"))
        assert SceneSource(n_images=4).classes == list(OBJECT_SETS["digits"])
        with pytest.raises(ImportError):  # DatasetNotInstalledError is an ImportError
            embedded_source("fashion")
    finally:
        _clear_object_caches()


def _write_idx(path: Path, arr: np.ndarray, gz: bool) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + np.array(arr.shape, ">i4").tobytes()
    data = header + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


def test_fashion_reads_idx_files_plain_or_gzipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    xtr = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    # The last test image is a copy of a training image.
    xte = np.concatenate((rng.integers(0, 256, (4, 28, 28), dtype=np.uint8), xtr[:1]))
    ytr, yte = np.arange(20) % 10, np.arange(5) % 10
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", xtr, gz=True)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", ytr, gz=False)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", xte, gz=False)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", yte, gz=True)
    monkeypatch.setenv(objects.FASHION_ENV, str(tmp_path))
    _clear_object_caches()
    try:
        x, y, classes = objects.load_fashion("train")
        assert np.array_equal(x, xtr) and np.array_equal(y, ytr) and classes[7] == "sneaker"
        x, y, _ = objects.load_fashion("test")
        assert np.array_equal(x, xte[:4]) and np.array_equal(y, yte[:4])  # the copy is dropped
        (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 20)
        _clear_object_caches()
        with pytest.raises(ValueError, match="idx"):
            objects.load_fashion("test")
    finally:
        _clear_object_caches()


def test_animal_pickles_may_hold_numpy_arrays_only(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as f:
        pickle.dump(os.getcwd, f)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        objects._unpickle_array(bad)
    good = tmp_path / "good.gz"
    with gzip.open(good, "wb") as f:
        pickle.dump(np.arange(6, dtype=np.uint8).reshape(2, 3), f)
    assert objects._unpickle_array(good).shape == (2, 3)


@pytest.mark.parametrize("name", list(OBJECT_SETS))
def test_object_sets_are_embedded_sources(name: str) -> None:
    if name not in INSTALLED:
        pytest.skip(f"{name} not installed")
    src = resolve_source(name)
    assert isinstance(src, ObjectSource) and src.split == "train"
    ann = src.annotation(5)
    assert ann.label == int(src.labels[5]) and list(ann.box_labels) == [ann.label]
    x0, y0, x1, y1 = ann.boxes[0]
    assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
    assert src.image(5).ndim == 2 and src.classes == list(OBJECT_SETS[name])


# -- scenes: annotations and knobs ------------------------------------------------------------------


def test_registry_keeps_photos_and_adds_the_new_names() -> None:
    assert {"photos", "scenes", "digits", "fashion", "animals"} <= set(EMBEDDED)
    assert len(resolve_source("photos")) == 10
    scenes = resolve_source("scenes")
    assert isinstance(scenes, SceneSource) and len(scenes) == 10_000
    assert scenes.config == SceneConfig(object_sets=INSTALLED)
    assert scenes._all is None and not scenes._chunks  # no pixels rendered until asked


def test_scene_annotations() -> None:
    src = SceneSource(n_images=300)
    assert src.classes[:10] == list(OBJECT_SETS["digits"]) and len(src.classes) == 10 * len(INSTALLED)
    counts = src.layout.count
    assert counts.min() == 2 and counts.max() == 6
    for i in range(len(src)):
        ann = src.annotation(i)
        assert ann.label is None and len(ann.boxes) == counts[i]
        assert np.all(ann.boxes >= 0) and np.all(ann.boxes <= 1)
        longer = np.maximum(ann.boxes[:, 2] - ann.boxes[:, 0], ann.boxes[:, 3] - ann.boxes[:, 1])
        assert np.all(longer >= 0.22 - 1 / 128) and np.all(longer <= 0.44 + 1 / 128)
        assert (len(ann.captions) == 1) == bool(src.captioned[i])
        for label in ann.box_labels:
            assert src.classes[label] in src.caption(i)
    assert 0.1 < src.captioned.mean() < 0.3
    assert (
        src.caption(0).count(" at the ")
        + src.caption(0).count(" on the ")
        + src.caption(0).count(" in the centre")
        == counts[0]
    )


def test_annotate_captioned_hides_unlabeled_scenes() -> None:
    src = SceneSource(n_images=50, annotate="captioned", caption_fraction=0.5)
    for i in range(len(src)):
        ann = src.annotation(i)
        assert (len(ann.boxes) > 0) == bool(src.captioned[i]) == (len(ann.captions) == 1)
    assert SceneSource(n_images=50, caption_fraction=0.0).captioned.sum() == 0


def test_scene_pixels_and_knobs() -> None:
    src = SceneSource(n_images=8)
    img = src.image(3)
    assert img.shape == (128, 128, 3) and img.dtype == np.uint8 and not img.flags.writeable
    small = SceneSource(n_images=8, size=64, objects=(1, 1), object_size=(0.5, 0.5))
    assert small.image(0).shape == (64, 64, 3)
    assert np.all(small.layout.count == 1)
    assert np.all(small.layout.box[:, 0, 2:] - small.layout.box[:, 0, :2] <= 32)
    grey = SceneSource(n_images=8, colour_mode="grayscale").images()
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 1], grey[..., 2])
    flat = SceneSource(n_images=8, background="flat", objects=(1, 1), object_size=(0.25, 0.25)).images()
    corners = flat[:, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert np.all(corners.max(axis=1) - corners.min(axis=1) <= 1)  # untouched corners: one flat colour
    clutter = SceneSource(n_images=8, clutter=6)
    assert not np.array_equal(clutter.images(), src.images())
    assert np.array_equal(clutter.boxes, src.boxes)
    assert np.array_equal(clutter.layout.colour, src.layout.colour)


def test_class_colour_mode_ties_colour_to_class() -> None:
    src = SceneSource(n_images=200, colour_mode="class")
    present = src.box_labels >= 0
    colours, labels = src.layout.colour[present], src.box_labels[present]
    for c in np.unique(labels):
        hues = {colour_name(rgb).split()[-1] for rgb in colours[labels == c]}
        assert len(hues) == 1
    rnd = SceneSource(n_images=200)
    hues = {colour_name(rgb).split()[-1] for rgb in rnd.layout.colour[present][labels == labels[0]]}
    assert len(hues) > 3


def test_max_overlap_zero_gives_disjoint_boxes() -> None:
    src = SceneSource(n_images=100, objects=(3, 3), object_size=(0.2, 0.25), max_overlap=0.0)
    b = src.layout.box
    for i in range(len(src)):
        for j in range(3):
            for k in range(j):
                iw = min(b[i, j, 2], b[i, k, 2]) - max(b[i, j, 0], b[i, k, 0])
                ih = min(b[i, j, 3], b[i, k, 3]) - max(b[i, j, 1], b[i, k, 1])
                assert iw <= 0 or ih <= 0


def test_config_object_and_overrides() -> None:
    cfg = SceneConfig(n_images=5, seed=2, object_size=[0.3, 0.4])  # type: ignore[arg-type]
    src = SceneSource(cfg, objects=(1, 2))
    assert src.config.seed == 2 and src.config.objects == (1, 2) and src.config.object_size == (0.3, 0.4)
    assert len(src) == 5 and src.config.object_sets == INSTALLED
    with pytest.raises(TypeError, match="SceneConfig"):
        SceneSource({"n_images": 3})  # type: ignore[arg-type]


def test_bad_parameters_are_named() -> None:
    for kw, name in [
        ({"size": 8}, "size"),
        ({"objects": (3, 2)}, "objects"),
        ({"object_size": (0.5, 0.2)}, "object_size"),
        ({"colour_mode": "neon"}, "colour_mode"),
        ({"background": "space"}, "background"),
        ({"caption_fraction": 1.5}, "caption_fraction"),
        ({"object_sets": ("mnist",)}, "object_sets"),
        ({"split": "val"}, "split"),
        ({"annotate": "some"}, "annotate"),
        ({"max_overlap": -1}, "max_overlap"),
    ]:
        with pytest.raises(ValueError, match=name):
            SceneSource(n_images=2, **kw)
    with pytest.raises(TypeError, match="colour"):
        SceneSource(n_images=2, color_mode="random")
    with pytest.raises(IndexError):
        SceneSource(n_images=2).image(2)


def test_captions() -> None:
    assert position_name(0.1, 0.1) == "at the top left" and position_name(0.5, 0.5) == "in the centre"
    assert position_name(0.9, 0.5) == "on the right" and position_name(0.5, 0.9) == "at the bottom"
    assert colour_name(np.array([0.9, 0.1, 0.1])) == "red"
    assert colour_name(np.array([0.1, 0.1, 0.5])) == "dark blue"
    assert colour_name(np.array([0.5, 0.5, 0.5]), grey=True) == "grey"
    boxes = np.array([[0.0, 0.0, 0.22, 0.2], [0.4, 0.4, 0.84, 0.6]])
    text = caption(["sneaker", "digit 3"], np.array([[0.9, 0.1, 0.1], [0.9, 0.5, 0.1]]), boxes, (0.22, 0.44))
    assert text == "a small red sneaker at the top left and a large orange digit 3 in the centre"
    args = (["sneaker", "digit 3"], np.array([[0.9, 0.1, 0.1], [0.9, 0.5, 0.1]]), boxes, (0.22, 0.44))
    assert caption(*args, words=("position",)) == "a sneaker at the top left and a digit 3 in the centre"
    assert caption(*args, words=()) == "a sneaker and a digit 3"
    assert caption(*args, words=("colour",)) == "a red sneaker and an orange digit 3"
    with pytest.raises(ValueError, match="words"):
        caption(*args, words=("shape",))


def test_caption_words_reach_the_scenes_but_not_the_pixels(tmp_path: Path) -> None:
    full = SceneSource(n_images=12, caption_fraction=1.0, cache=tmp_path)
    bare = SceneSource(n_images=12, caption_fraction=1.0, caption_words=(), cache=tmp_path)
    assert bare.cache_key() == full.cache_key()
    for i in range(12):
        parts = [
            ("an " if n[0] in "aeiou" else "a ") + n
            for n in map(full.classes.__getitem__, full.annotation(i).box_labels)
        ]
        expected = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
        assert bare.annotation(i).captions == [expected]
        assert len(expected) < len(full.caption(i))
    with pytest.raises(ValueError, match="caption_words"):
        SceneSource(n_images=2, caption_words=("shape",))


# -- determinism and splits -------------------------------------------------------------------------


def _fingerprint(src: SceneSource) -> str:
    h = hashlib.sha256(np.ascontiguousarray(src.images()).tobytes())
    for i in range(len(src)):
        ann = src.annotation(i)
        h.update(ann.boxes.tobytes() + ann.box_labels.tobytes() + "|".join(ann.captions).encode())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_differs() -> None:
    a, b = SceneSource(n_images=40, seed=3, clutter=2), SceneSource(n_images=40, seed=3, clutter=2)
    assert _fingerprint(a) == _fingerprint(b)
    c = SceneSource(n_images=40, seed=4, clutter=2)
    assert _fingerprint(c) != _fingerprint(a)
    assert not np.array_equal(c.images()[0], a.images()[0])


def test_scene_does_not_depend_on_batch_or_dataset_size() -> None:
    small, large = SceneSource(n_images=300), SceneSource(n_images=1100)
    # images() renders chunks of 128 in threads; render() one batch of 300.
    assert np.array_equal(small.images(), large.render(np.arange(300)))
    assert np.array_equal(small.boxes, large.boxes[:300]) and small.caption(7) == large.caption(7)
    assert np.array_equal(large.image(1050), large.render([1050])[0])  # random access: that scene alone
    assert not large._chunks
    assert np.array_equal(large.image(1051), large.render([1051])[0])  # in order: its chunk of 128
    assert list(large._chunks) == [1051 // 128]
    assert np.array_equal(large.image(1052), large.render([1052])[0])


def test_train_and_test_scenes_use_disjoint_instances() -> None:
    tr, te = SceneSource(n_images=200), SceneSource(n_images=200, split="test")
    assert tr.classes == te.classes
    used = {}
    for split, src in (("train", tr), ("test", te)):
        inst = src.layout.instance[src.layout.instance >= 0]
        used[split] = {hashlib.sha1(src._glyphs.images[k].tobytes()).digest() for k in inst}
    assert used["train"] and used["test"] and not used["train"] & used["test"]
    assert not np.array_equal(tr.images()[0], te.images()[0])


def test_disk_cache_is_written_once_and_reused(tmp_path: Path) -> None:
    src = SceneSource(n_images=30, cache=tmp_path)
    path = src.cache_path
    assert path is not None and path.parent == tmp_path and not path.exists()
    first = np.array(src.images())
    assert path.exists() and [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left
    again = SceneSource(n_images=30, cache=tmp_path, caption_fraction=0.9)  # captions do not change pixels
    assert again.cache_path == path and isinstance(again.images(), np.memmap)
    assert np.array_equal(again.image(29), first[29])
    assert np.array_equal(first, SceneSource(n_images=30).images())
    assert SceneSource(n_images=30, cache=tmp_path, seed=1).cache_path != path
    path.write_bytes(b"not a numpy file")
    with pytest.warns(RuntimeWarning, match="regenerating"):
        redone = SceneSource(n_images=30, cache=tmp_path).images()
    assert np.array_equal(redone, first)


# -- shortcuts --------------------------------------------------------------------------------------


def _appearance_accuracy(**kw: object) -> tuple[float, float]:
    """Held-out accuracy of a logistic regression on each box's mean colour and intensity; and chance."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def features(src: SceneSource) -> tuple[np.ndarray, np.ndarray]:
        imgs = src.images().astype(np.float32) / 255.0
        x, y = [], []
        for i in range(len(src)):
            for j in range(int(src.layout.count[i])):
                x0, y0, x1, y1 = src.layout.box[i, j]
                mean = imgs[i, y0:y1, x0:x1].reshape(-1, 3).mean(axis=0)
                x.append([*mean, mean @ [0.299, 0.587, 0.114]])
                y.append(src.box_labels[i, j])
        return np.array(x), np.array(y)

    xtr, ytr = features(SceneSource(n_images=500, **kw))
    xte, yte = features(SceneSource(n_images=250, split="test", **kw))
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(xtr, ytr)
    return clf.score(xte, yte), 1.0 / len(np.unique(ytr))


def test_appearance_alone_does_not_identify_the_class() -> None:
    acc, chance = _appearance_accuracy()
    assert acc < 2 * chance, f"default scenes leak the class through colour: {acc:.3f} vs chance {chance:.3f}"
    acc_class, _ = _appearance_accuracy(colour_mode="class")
    assert acc_class > 5 * chance, f"colour_mode='class' should be a shortcut: {acc_class:.3f}"


# -- environments -----------------------------------------------------------------------------------


def test_scenes_through_gym_make_with_coverage_reward(monkeypatch: pytest.MonkeyPatch) -> None:
    src = SceneSource(n_images=16)
    target = src.classes[int(src.box_labels[0, 0])]
    env = gym.make("ImageView-v0", source=src, reward="coverage", target=target)
    obs, info = env.reset(seed=0, options={"image_index": 0})
    rewards = [env.step(env.action_space.sample())[1] for _ in range(20)]
    assert obs.shape == (64, 64, 3) and all(0.0 <= r <= 1.0 for r in rewards)
    assert info["cumulant"].shape == (len(src.classes),)
    # The name goes through the same registry (shrunk here so that the pool stays small).
    monkeypatch.setitem(EMBEDDED, "scenes", lambda: SceneSource(n_images=8))
    env = gym.make("ImageView-v0", source="scenes", reward="coverage", target="digit 3")
    env.reset(seed=1)
    env.step(env.action_space.sample())


def test_digits_through_gym_make() -> None:
    env = gym.make("ImageView-v0", source="digits", reward="label", target="digit 7", view_size=16)
    env.reset(seed=0)
    _, reward, *_ = env.step(env.action_space.sample())
    assert reward in (0.0, 1.0)


def test_no_warnings_on_the_happy_path() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SceneSource(n_images=4).image(0)
