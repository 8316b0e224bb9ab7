"""Dataset readers: ImageFolder, caption manifests, COCO, WebDataset shards, video frames.

Every test builds its own tiny fixtures in ``tmp_path``. Images are solid
colours, so that the loaded order can be checked by pixel value; every reader
is also run through ``gym.make("ImageView-v0", source=...)``, which loads it
with ``load_images``. Bad input follows one rule (see
:mod:`vpt_env.data.readers._base`): strict raises ``ValueError`` naming file
and line, non-strict skips and counts, and a reader warns once.
"""

from __future__ import annotations

import io
import json
import pickle
import tarfile
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from PIL import Image

import vpt_env
from vpt_env.data import (
    CaptionManifest,
    CocoSource,
    FolderSource,
    ImageFolderSource,
    ImageReadError,
    ImageSource,
    VideoFramesSource,
    WebDatasetSource,
    expand_braces,
    load_images,
    resolve_source,
)

VIEW = 16


def _save(
    path: Path, rgb: tuple[int, int, int], size: tuple[int, int] = (48, 40), fmt: str | None = None
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path, format=fmt)
    return path


def _encode(rgb: tuple[int, int, int], fmt: str = "PNG", size: tuple[int, int] = (48, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, rgb).save(buf, format=fmt)
    return buf.getvalue()


def _red(images: list[np.ndarray]) -> list[int]:
    """The red value of each loaded image's centre pixel: fixtures encode identity there."""
    return [int(im[im.shape[0] // 2, im.shape[1] // 2, 0]) for im in images]


def _make(source: object, **kw: object) -> tuple[gym.Env, list[str]]:
    """``gym.make`` with the RuntimeWarnings it raised."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        env = gym.make("ImageView-v0", source=source, view_size=VIEW, **kw)
    return env, [str(w.message) for w in record if issubclass(w.category, RuntimeWarning)]


def _collect(fn):
    """Run ``fn()``; return its result and the RuntimeWarnings it raised."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        out = fn()
    return out, [str(w.message) for w in record if issubclass(w.category, RuntimeWarning)]


def _step_once(env: gym.Env) -> dict:
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.zeros(env.action_space.shape, np.float32))
    return info


# -- ImageFolder ------------------------------------------------------------------------


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    root = tmp_path / "imagefolder"
    _save(root / "cat" / "a.png", (10, 0, 0))
    _save(root / "cat" / "z.jpg", (20, 0, 0))
    _save(root / "cat" / "sub" / "b.png", (30, 0, 0))  # torchvision: files of cat/ before cat/sub/
    _save(root / "dog" / "c.webp", (40, 0, 0), fmt="WEBP")
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / "empty").mkdir()  # a class with no image keeps its index
    _save(root / ".ipynb_checkpoints" / "x.png", (99, 0, 0))  # hidden: not a class
    _save(root / "dog" / ".hidden.png", (98, 0, 0))
    _save(root / "stray.png", (97, 0, 0))  # not in a class folder
    return root


def test_image_folder_labels_order_and_env(image_folder: Path, device: torch.device) -> None:
    src = ImageFolderSource(image_folder)
    assert isinstance(src, ImageSource)
    assert src.classes == ["cat", "dog", "empty"]
    assert [p.relative_to(image_folder).as_posix() for p, _ in src.samples] == [
        "cat/a.png", "cat/z.jpg", "cat/sub/b.png", "dog/c.webp"
    ]
    assert [src.annotation(i).label for i in range(len(src))] == [0, 0, 0, 1]
    assert src.skipped == {"empty class folder": 1, "image outside the class folders (ignored)": 1}
    assert "stray.png" in src.summary() and "empty" in src.summary()

    env, msgs = _make(src, device=device)
    assert len(msgs) == 1, msgs  # construction problems, warned once at load
    assert "empty class folder: 1" in msgs[0]
    pool = env.unwrapped.pool
    assert len(pool) == 4 and pool.annotations.classes == ["cat", "dog", "empty"]
    assert pool.annotations.labels.tolist() == [0, 0, 0, 1]
    assert abs(int(pool.image(2)[20, 24, 0]) - 30) <= 2
    assert _step_once(env)["cumulant"].shape == (3,)
    env.close()

    # A plain folder path stays a FolderSource (no labels); ImageFolder only when asked.
    assert isinstance(resolve_source(str(image_folder)), FolderSource)


def test_image_folder_strict_and_empty(image_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"class folder .*empty.* holds no image"):
        ImageFolderSource(image_folder, strict=True)
    bare = tmp_path / "bare"
    (bare / "a").mkdir(parents=True)
    (bare / "b").mkdir()
    with pytest.raises(ValueError, match="holds no image files in class sub-folders"):
        ImageFolderSource(bare)
    with pytest.raises(ValueError, match="does not exist"):
        ImageFolderSource(tmp_path / "nope")


# -- caption manifests ------------------------------------------------------------------


def _manifest_images(root: Path) -> None:
    _save(root / "img" / "a.png", (10, 0, 0))
    _save(root / "img" / "b.png", (20, 0, 0))
    _save(root / "img" / "c.png", (30, 0, 0))
    (root / "img" / "d.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")  # corrupt


JSONL_LINES = [
    b'{"image": "img/a.png", "caption": "a red square"}',  # 1
    b'{"file_name": "img/b.png", "captions": ["dark", "darker"]}',  # 2
    b"",  # 3: blank, ignored
    b'{"path": "img/a.png", "text": "a second caption"}',  # 4: merged into a
    b'{"image": "img/c.png", "caption": ',  # 5: invalid JSON
    b"[1, 2]",  # 6: not an object
    b'{"caption": "no image key"}',  # 7
    b'{"image": "img/missing.png", "caption": "gone"}',  # 8: missing file
    b'{"image": "img/c.png", "caption": "caf\xe9 latin-1"}',  # 9: non-UTF-8
    b'{"image": "img/d.png"}',  # 10: corrupt image, no caption
    b'{"image": "img/b.png", "caption": 7}',  # 11: caption not text
]


@pytest.fixture
def jsonl(tmp_path: Path) -> Path:
    _manifest_images(tmp_path)
    path = tmp_path / "manifest.jsonl"
    path.write_bytes(b"\n".join(JSONL_LINES) + b"\n")
    return path


def test_jsonl_manifest_captions_and_counts(jsonl: Path) -> None:
    src = CaptionManifest(jsonl)
    assert [p.name for p in src.paths] == ["a.png", "b.png", "c.png", "d.png"]
    assert src.annotation(0).captions == ["a red square", "a second caption"]
    assert src.annotation(1).captions == ["dark", "darker"]
    assert src.annotation(2).captions == ["caf\ufffd latin-1"]  # decoded with replacement
    assert src.annotation(3).captions == []
    assert src.classes == []
    assert src.skipped == {
        "malformed line": 4,
        "missing image file": 1,
        "non-UTF-8 text (decoded with replacement)": 1,
    }
    assert "manifest.jsonl, line 5" in src.summary()
    assert src.name(2).endswith("(manifest.jsonl, line 9)")


def test_jsonl_manifest_through_env_warns_once(jsonl: Path) -> None:
    env, msgs = _make(str(jsonl))  # resolved by suffix
    assert len(msgs) == 1, msgs
    msg = msgs[0]
    assert "malformed line: 4" in msg and "missing image file: 1" in msg
    assert "unreadable image: 1" in msg and "d.png" in msg  # found while loading, same warning
    anns = env.unwrapped.pool.annotations
    assert len(env.unwrapped.pool) == 3
    assert anns.captions == [["a red square", "a second caption"], ["dark", "darker"], ["caf\ufffd latin-1"]]
    assert _red([env.unwrapped.pool.image(i) for i in range(3)]) == [10, 20, 30]
    env.close()


@pytest.mark.parametrize(
    ("line", "pattern"),
    [
        (5, r"manifest\.jsonl, line 5: invalid JSON"),
        (6, r"manifest\.jsonl, line 6: expected a JSON object"),
        (7, r"manifest\.jsonl, line 7: no image key"),
        (8, r"manifest\.jsonl, line 8: image file .*missing\.png.* not found"),
        (9, r"manifest\.jsonl, line 9, byte \d+: not valid UTF-8"),
        (11, r"manifest\.jsonl, line 11: 'caption' must be a string"),
    ],
)
def test_jsonl_manifest_strict_names_file_and_line(tmp_path: Path, line: int, pattern: str) -> None:
    _manifest_images(tmp_path)
    path = tmp_path / "manifest.jsonl"
    # Blank out the other bad lines, keeping line numbers, so that `line` is the one problem.
    bad = {5, 6, 7, 8, 9, 11} - {line}
    lines = [b"" if i + 1 in bad else raw for i, raw in enumerate(JSONL_LINES)]
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(ValueError, match=pattern) as info:
        CaptionManifest(path, strict=True)
    assert str(path) in str(info.value)


def test_manifest_strict_through_env_and_load_images(jsonl: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"manifest\.jsonl, line 5"):
        gym.make("ImageView-v0", source=str(jsonl), strict=True, view_size=VIEW)
    good = tmp_path / "good.jsonl"
    good.write_text('{"image": "img/a.png"}\n{"image": "img/d.png"}\n')
    with pytest.raises(ImageReadError, match=r"d\.png \(good\.jsonl, line 2\)"):
        load_images(CaptionManifest(good, strict=True))  # the reader's strict covers decoding too


def test_manifest_image_root_and_empty(tmp_path: Path) -> None:
    _save(tmp_path / "pics" / "x.png", (50, 0, 0))
    (tmp_path / "lists").mkdir()
    m = tmp_path / "lists" / "m.jsonl"
    m.write_text('{"image": "x.png", "caption": "fifty"}\n')
    with pytest.raises(ValueError, match=r"no usable image \(1 missing image file\)"):
        CaptionManifest(m)  # relative to the manifest's folder: not there
    src = CaptionManifest(m, image_root=tmp_path / "pics")
    assert len(src) == 1 and src.annotation(0).captions == ["fifty"] and src.skipped == {}

    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(ValueError, match="no usable image"):
        CaptionManifest(empty)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n{}\n")
    with pytest.raises(ValueError, match=r"no usable image \(2 malformed line\)"):
        CaptionManifest(bad)
    with pytest.raises(ValueError, match=r"\.jsonl, \.csv or \.tsv"):
        CaptionManifest(tmp_path / "pics" / "x.png")


CSV_TEXT = (
    "File_Name,caption_1,caption_2,source\n"  # 1
    "img/a.png,a red square,,web\n"  # 2
    'img/b.png,"dark, quoted",darker,web\n'  # 3
    'img/c.png,"a caption\nover two lines",,web\n'  # 4-5
    "img/a.png,third,,web\n"  # 6: merged
    "img/b.png,too,many,cells,here\n"  # 7: wrong number of cells
    "img/missing.png,gone,,web\n"  # 8
    ",no path,,web\n"  # 9
)


def test_csv_and_tsv_manifests(tmp_path: Path) -> None:
    _manifest_images(tmp_path)
    path = tmp_path / "captions.csv"
    path.write_text(CSV_TEXT)
    src = CaptionManifest(path)
    assert [p.name for p in src.paths] == ["a.png", "b.png", "c.png"]
    assert src.annotation(0).captions == ["a red square", "third"]
    assert src.annotation(1).captions == ["dark, quoted", "darker"]
    assert src.annotation(2).captions == ["a caption\nover two lines"]
    assert src.skipped == {"malformed line": 2, "missing image file": 1}
    assert "captions.csv, line 7: expected 4 cells, got 5" in src.summary()
    with pytest.raises(ValueError, match=r"captions\.csv, line 7: expected 4 cells") as info:
        CaptionManifest(path, strict=True)
    assert str(path) in str(info.value)
    lines = CSV_TEXT.splitlines(keepends=True)
    path.write_text("".join(lines[:6] + lines[7:8]))  # without the bad rows: the missing file is line 7
    with pytest.raises(ValueError, match=r"captions\.csv, line 7: image file .*missing\.png"):
        CaptionManifest(path, strict=True)

    env, msgs = _make(str(path))
    assert len(msgs) == 1 and "missing image file: 1" in msgs[0]
    assert env.unwrapped.pool.annotations.captions[1] == ["dark, quoted", "darker"]
    env.close()

    tsv = tmp_path / "captions.tsv"
    tsv.write_text("image\ttext\nimg/b.png\tdark\timg/c.png is not a column\n")
    with pytest.raises(ValueError, match=r"captions\.tsv, line 2: expected 2 cells"):
        CaptionManifest(tsv, strict=True)
    tsv.write_text("image\ttext\nimg/b.png\tdark, with a comma\n")
    assert CaptionManifest(tsv).annotation(0).captions == ["dark, with a comma"]

    nohead = tmp_path / "nohead.csv"
    nohead.write_text("a.png,caption\n")
    with pytest.raises(ValueError, match=r"nohead\.csv, line 1: the header .* has no image column"):
        CaptionManifest(nohead)


# -- COCO -------------------------------------------------------------------------------


def _coco(root: Path) -> tuple[Path, Path]:
    """COCO layout: annotations/*.json beside val2017/ holding the images."""
    _save(root / "val2017" / "000001.jpg", (10, 0, 0), size=(80, 60))
    _save(root / "val2017" / "000002.jpg", (20, 0, 0), size=(64, 64))
    _save(root / "val2017" / "000004.jpg", (40, 0, 0), size=(48, 48))
    images = [
        {"id": 1, "file_name": "000001.jpg", "width": 80, "height": 60},
        {"id": 2, "file_name": "000002.jpg", "width": 64, "height": 64},
        {"id": 3, "file_name": "000003.jpg", "width": 50, "height": 50},  # missing file
        {"id": 4, "file_name": "000004.jpg", "width": 48, "height": 48},  # no annotation
        {"id": 5, "file_name": "000005.jpg"},  # images[4]: no width/height
    ]
    instances = {
        "images": images,
        # Non-contiguous, unsorted ids: classes follow id order.
        "categories": [{"id": 18, "name": "dog"}, {"id": 17, "name": "cat"}, {"id": 3, "name": "car"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 17, "bbox": [8, 6, 40, 30]},
            {"id": 11, "image_id": 1, "category_id": 18, "bbox": [60, 30, 40, 40]},  # overhangs
            {"id": 12, "image_id": 2, "category_id": 18, "bbox": [16, 16, 0, 10]},  # zero width
            {"id": 13, "image_id": 2, "category_id": 17, "bbox": [100, 100, 10, 10]},  # outside
            {"id": 14, "image_id": 2, "category_id": 3, "bbox": [16, 32, 32, 16.0], "iscrowd": 1},
            {"id": 15, "image_id": 2, "category_id": 99, "bbox": [0, 0, 8, 8]},  # annotations[5]
            {"id": 16, "image_id": 1, "category_id": 17, "bbox": "oops"},  # annotations[6]
            {"id": 17, "image_id": 7, "category_id": 17, "bbox": [0, 0, 8, 8]},  # annotations[7]
        ],
    }
    captions = {
        "images": images[:4],
        "annotations": [
            {"id": 1, "image_id": 1, "caption": "A cat beside a dog. "},
            {"id": 2, "image_id": 2, "caption": "A car."},
            {"id": 3, "image_id": 2, "caption": "A parked car."},
            {"id": 4, "image_id": 4, "caption": ["not", "text"]},  # annotations[3]
        ],
    }
    (root / "annotations").mkdir(parents=True)
    inst = root / "annotations" / "instances_val2017.json"
    caps = root / "annotations" / "captions_val2017.json"
    inst.write_text(json.dumps(instances, indent=1))
    caps.write_text(json.dumps(captions))
    return inst, caps


def test_coco_instances_boxes_normalised_clipped_and_dropped(tmp_path: Path) -> None:
    inst, _ = _coco(tmp_path)
    src = CocoSource(inst)  # images found in ../val2017
    assert src.image_root == tmp_path / "val2017"
    assert src.classes == ["car", "cat", "dog"]  # category ids 3, 17, 18
    assert src.category_ids == [3, 17, 18]
    assert len(src) == 3 and [src.image_id(i) for i in range(3)] == [1, 2, 4]
    a = src.annotation(0)
    # [8, 6, 40, 30] in 80x60 -> (8/80, 6/60, 48/80, 36/60);
    # [60, 30, 40, 40] -> (60/80, 30/60, 100/80 -> 1, 70/60 -> 1), clipped.
    np.testing.assert_allclose(a.boxes, [[0.1, 0.1, 0.6, 0.6], [0.75, 0.5, 1.0, 1.0]], atol=1e-6)
    assert a.box_labels.tolist() == [1, 2] and a.label is None and a.captions == []
    b = src.annotation(1)
    np.testing.assert_allclose(b.boxes, [[0.25, 0.5, 0.75, 0.75]], atol=1e-6)  # [16, 32, 32, 16] in 64x64
    assert b.box_labels.tolist() == [0]
    assert len(src.annotation(2).boxes) == 0
    assert src.skipped == {
        "malformed entry": 4,  # images[4], annotations[5], [6], [7]
        "box clipped to the image": 1,
        "degenerate box dropped": 2,
        "missing image file": 1,
    }
    summary = src.summary()
    assert "instances_val2017.json, images[4]" in summary
    assert "000003.jpg" in summary
    # Strict: malformed entries and missing files raise, naming file and entry.
    with pytest.raises(ValueError, match=r"instances_val2017\.json, images\[4\]: needs an int id") as info:
        CocoSource(inst, strict=True)
    assert str(inst) in str(info.value)
    data = json.loads(inst.read_text())
    del data["images"][4]
    inst.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"instances_val2017\.json, annotations\[5\]: category_id 99 is not"):
        CocoSource(inst, strict=True)
    for k in (7, 6, 5):
        del data["annotations"][k]
    inst.write_text(json.dumps(data))
    missing = r"instances_val2017\.json, images\[2\] \(id 3\): file .*000003\.jpg.* not found"
    with pytest.raises(ValueError, match=missing):
        CocoSource(inst, strict=True)  # clipped and dropped boxes are counted, not raised
    del data["images"][2]
    inst.write_text(json.dumps(data))
    src = CocoSource(inst, strict=True)
    assert src.skipped == {"box clipped to the image": 1, "degenerate box dropped": 2}


def test_coco_instances_and_captions_through_env(tmp_path: Path, device: torch.device) -> None:
    inst, caps = _coco(tmp_path)
    src = CocoSource(instances_json=inst, captions_json=caps)
    assert src.annotation(0).captions == ["A cat beside a dog."]
    assert src.annotation(1).captions == ["A car.", "A parked car."]
    assert src.annotation(2).captions == []
    assert src.skipped["malformed entry"] == 5  # + captions annotations[3]
    with pytest.raises(ValueError, match=r"captions_val2017\.json, annotations\[3\]: caption must be text"):
        CocoSource(captions_json=caps, strict=True)

    env, msgs = _make(src, reward="coverage", target="cat", device=device)
    assert len(msgs) == 1 and "box clipped to the image: 1" in msgs[0]
    anns = env.unwrapped.pool.annotations
    assert anns.classes == ["car", "cat", "dog"] and anns.has_boxes
    assert anns.box_labels.tolist() == [[1, 2], [0, -1], [-1, -1]]
    torch.testing.assert_close(anns.boxes[0, 0].cpu(), torch.tensor([0.1, 0.1, 0.6, 0.6]))
    assert anns.captions[1] == ["A car.", "A parked car."]
    env.reset(seed=0, options={"image_index": 0})
    _, reward, _, _, info = env.step(np.zeros(env.action_space.shape, np.float32))
    x0, y0, x1, y1 = info["box"].tolist()
    inside = max(0.0, min(x1, 0.6) - max(x0, 0.1)) * max(0.0, min(y1, 0.6) - max(y0, 0.1))
    assert reward == pytest.approx(inside / 0.25, abs=1e-5)
    env.close()


def test_coco_by_path_detects_kind_and_root(tmp_path: Path) -> None:
    inst, caps = _coco(tmp_path)
    _, msgs = _collect(lambda: None)
    src, msgs = _collect(lambda: resolve_source(str(inst)))
    assert isinstance(src, CocoSource) and src.classes == ["car", "cat", "dog"] and not msgs
    src = resolve_source(caps)
    assert isinstance(src, CocoSource) and src.classes == [] and src.files == {"captions": caps}
    assert src.annotation(1).captions == ["A car.", "A parked car."]
    # Images beside the JSON are found first; image_root overrides.
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "instances.json").write_text(inst.read_text())
    for f in (tmp_path / "val2017").iterdir():
        (flat / f.name).write_bytes(f.read_bytes())
    assert CocoSource(flat / "instances.json").image_root == flat
    assert CocoSource(inst, image_root=flat).image_root == flat


def test_coco_bad_files(tmp_path: Path) -> None:
    inst, _ = _coco(tmp_path)
    broken = tmp_path / "annotations" / "broken.json"
    broken.write_text('{\n  "images": [\n    {"id": 1,, }\n  ]\n}\n')
    for strict in (False, True):  # a file that does not parse always raises
        with pytest.raises(ValueError, match=r"broken\.json, line 3, column \d+: invalid JSON"):
            CocoSource(broken, strict=strict)
    latin = tmp_path / "annotations" / "instances_latin.json"
    data = json.loads(inst.read_text())
    data["categories"][0]["name"] = "caf\u00e9"
    latin.write_bytes(json.dumps(data, ensure_ascii=False, indent=1).encode("latin-1"))
    with pytest.raises(ValueError, match=r"instances_latin\.json, line \d+: not valid UTF-8"):
        CocoSource(latin, image_root=tmp_path / "val2017", strict=True)
    src = CocoSource(latin, image_root=tmp_path / "val2017")
    assert src.classes[2] == "caf\ufffd" and src.skipped["non-UTF-8 text (decoded with replacement)"] == 1
    nothing = tmp_path / "annotations" / "instances_nothing.json"
    nothing.write_text(json.dumps({"images": [{"id": 1, "file_name": "x.jpg", "width": 4, "height": 4}],
                                   "annotations": [], "categories": []}))
    with pytest.raises(ValueError, match=r"no usable image \(1 missing image file\)"):
        CocoSource(nothing)
    with pytest.raises(ValueError, match="needs instances_json, captions_json or both"):
        CocoSource()
    neither = tmp_path / "neither.json"
    neither.write_text('{"images": [], "annotations": []}')
    with pytest.raises(ValueError, match=r"neither\.json: a COCO file needs 'categories'"):
        resolve_source(str(neither))


# -- WebDataset shards -------------------------------------------------------------------


def _tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def shards(tmp_path: Path) -> Path:
    """Shards cc-000 and cc-001 (cc-002 is missing); returns the brace pattern's folder."""
    d = tmp_path / "shards"
    _tar(d / "cc-000.tar", [
        ("s/000000.jpg", _encode((10, 0, 0), "JPEG")),
        ("s/000000.txt", b"a red square"),
        ("s/000000.cls", b"2\n"),
        ("s/000001.png", _encode((20, 0, 0))),
        ("s/000001.json", json.dumps({"caption": "dark", "label": 0, "url": "http://x"}).encode()),
        ("s/000002.jpg", b"\xff\xd8\xff corrupt jpeg"),
        ("s/000002.txt", b"unreadable"),
    ])
    _tar(d / "cc-001.tar", [
        ("000003.jpg", _encode((30, 0, 0), "JPEG")),
        ("000003.txt", b"caf\xe9"),
        ("000004.txt", b"a caption without its image"),
        ("000005.webp", _encode((50, 0, 0), "WEBP")),
        ("000005.json", b"{not json"),
        ("000005.seg.png", _encode((0, 0, 0))),  # another member of the sample, ignored
    ])
    return d


SKIPPED_STREAM = {
    "missing shard": 1,
    "unreadable image": 1,
    "non-UTF-8 text (decoded with replacement)": 1,
    "sample without an image member": 1,
    "malformed entry": 1,
}


def test_expand_braces() -> None:
    assert expand_braces("cc-{000..003}.tar") == [f"cc-{i:03d}.tar" for i in range(4)]
    assert expand_braces("cc-{8..10}.tar") == ["cc-8.tar", "cc-9.tar", "cc-10.tar"]
    assert expand_braces("cc-{08..10}.tar") == ["cc-08.tar", "cc-09.tar", "cc-10.tar"]
    assert expand_braces("{3..1}") == ["3", "2", "1"]
    assert expand_braces("{0..10..5}") == ["0", "5", "10"]
    assert expand_braces("{train,val}-{0..1}.tar") == ["train-0.tar", "train-1.tar", "val-0.tar", "val-1.tar"]
    assert expand_braces("a{b,c{1,2}}d") == ["abd", "ac1d", "ac2d"]
    assert expand_braces("{x}-{1..2}") == ["{x}-1", "{x}-2"]  # no comma, no range: literal
    assert expand_braces("plain.tar") == ["plain.tar"]
    assert expand_braces("{}{") == ["{}{"]


def test_webdataset_streams_without_index(shards: Path) -> None:
    pattern = str(shards / "cc-{000..002}.tar")
    src = WebDatasetSource(pattern)
    assert src._index is None  # construction reads until the first sample only
    assert src.skipped == {"missing shard": 1}
    samples, msgs = _collect(lambda: list(iter(src)))
    assert src._index is None  # streaming needs no index
    assert _red([im for im, _ in samples]) == [10, 20, 30, 50]
    anns = [a for _, a in samples]
    assert [a.label for a in anns] == [2, 0, None, None]
    assert [a.captions for a in anns] == [["a red square"], ["dark"], ["caf\ufffd"], []]
    assert src.skipped == SKIPPED_STREAM
    assert len(msgs) == 1, msgs  # one warning for the whole pass
    assert "cc-002.tar" in msgs[0] and "s/000002" in msgs[0] and "000005.json" in msgs[0]
    # A second pass neither double-counts nor warns again.
    again, msgs = _collect(lambda: list(iter(src)))
    assert len(again) == 4 and not msgs and src.skipped == SKIPPED_STREAM


def test_webdataset_random_access_and_env(shards: Path, device: torch.device) -> None:
    src = WebDatasetSource([shards / "cc-000.tar", str(shards / "cc-001.tar")])
    assert len(src) == 5  # the index holds every sample with an image member
    assert src.name(2) == f"{shards / 'cc-000.tar'}:s/000002"
    assert src.classes == ["0", "1", "2"]
    assert src.annotation(0).label == 2 and src.annotation(1).captions == ["dark"]
    assert _red([np.asarray(src.image(4))]) == [50]
    with pytest.raises(OSError):
        src.image(2)
    clone = pickle.loads(pickle.dumps(src))  # open shard files are not pickled
    assert np.array_equal(np.asarray(clone.image(3)), np.asarray(src.image(3)))
    src.close()

    env, msgs = _make(str(shards / "cc-{000..002}.tar"), device=device)  # a brace pattern
    assert len(msgs) == 1, msgs
    assert "unreadable image: 1" in msgs[0] and "missing shard: 1" in msgs[0]
    pool = env.unwrapped.pool
    assert len(pool) == 4 and _red([pool.image(i) for i in range(4)]) == [10, 20, 30, 50]
    assert pool.annotations.labels.tolist() == [2, 0, -1, -1]
    assert pool.annotations.classes == ["0", "1", "2"]
    assert _step_once(env)["cumulant"].shape == (3,)
    env.close()
    assert isinstance(resolve_source(str(shards / "cc-000.tar")), WebDatasetSource)


def test_webdataset_strict(shards: Path) -> None:
    with pytest.raises(ValueError, match=r"shard .*cc-002\.tar.* not found"):
        WebDatasetSource(str(shards / "cc-{000..002}.tar"), strict=True)
    src = WebDatasetSource(str(shards / "cc-{000..001}.tar"), strict=True)
    with pytest.raises(ImageReadError, match=r"cc-000\.tar:s/000002"):
        list(iter(src))
    with pytest.raises(ValueError, match=r"cc-001\.tar:000003\.txt.*not valid UTF-8"):
        len(src)  # the index reads labels, meeting the non-UTF-8 caption first
    ok = WebDatasetSource(str(shards / "cc-000.tar"), classes=["a", "b", "c"], strict=True)
    with pytest.raises(ImageReadError, match=r"cc-000\.tar:s/000002"):
        load_images(ok)
    with pytest.raises(ValueError, match=r"cc-000\.tar:s/000002"):
        gym.make("ImageView-v0", source=str(shards / "cc-000.tar"), strict=True, view_size=VIEW)


def test_webdataset_bad_shards(shards: Path, tmp_path: Path) -> None:
    # A shard cut off inside its last member: samples before the cut survive.
    whole = (shards / "cc-000.tar").read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(whole[: len(whole) // 2])
    src = WebDatasetSource(cut)
    streamed, msgs = _collect(lambda: list(iter(src)))
    assert len(streamed) >= 1 and len(msgs) == 1
    assert any(k.startswith(("unreadable", "sample without")) for k in src.skipped)
    loaded, msgs = _collect(lambda: load_images(WebDatasetSource(cut)))
    assert len(loaded[0]) >= 1 and len(msgs) == 1
    # Nothing usable: an error at construction, not later.
    texts = _tar(tmp_path / "texts.tar", [("a.txt", b"x"), ("b.json", b"{}")])
    with pytest.raises(ValueError, match="no readable sample with an image member"):
        WebDatasetSource(texts)
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"this is not a tar file" * 40)
    with pytest.raises(ValueError, match="no readable sample"):
        WebDatasetSource(garbage)
    with pytest.raises(ValueError, match=r"0 of 2 shards found"):
        WebDatasetSource(str(tmp_path / "none-{0..1}.tar"))
    # A gzip-compressed shard streams and indexes too.
    import gzip

    gz = tmp_path / "cc.tar.gz"
    gz.write_bytes(gzip.compress(whole))
    src = resolve_source(str(gz))
    assert isinstance(src, WebDatasetSource) and len(src) == 3 and _red([np.asarray(src.image(1))]) == [20]
    streamed, msgs = _collect(lambda: list(iter(src)))
    assert len(streamed) == 2 and len(msgs) == 1 and "unreadable image: 1" in msgs[0]


# -- video -------------------------------------------------------------------------------


def _gif(path: Path, reds: list[int], size: tuple[int, int] = (48, 40)) -> Path:
    frames = [Image.new("RGB", size, (r, 0, 0)) for r in reds]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=40, loop=0)
    return path


@pytest.fixture
def video_root(tmp_path: Path) -> Path:
    root = tmp_path / "videos"
    for t in range(1, 11):  # natural order: frame_2 before frame_10
        _save(root / "P01" / "P01_01" / f"frame_{t}.png", (10 * t, 0, 0))
    for t in range(3):
        _save(root / "P01" / "P01_02" / f"frame_{t:04d}.jpg", (200 + 20 * t, 0, 0))
    _gif(root / "anim.gif", [60, 120, 180])
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    _save(root / ".cache" / "frame_1.png", (1, 2, 3))  # hidden: skipped
    return root


def test_video_frames_clips_and_env(video_root: Path, device: torch.device) -> None:
    src = VideoFramesSource(video_root)
    assert src.clip_names == ["anim.gif", "P01/P01_01", "P01/P01_02"]
    assert len(src) == 3 + 10 + 3
    assert list(src.skipped) == ["unreadable video"] and "broken.mp4" in src.summary()
    anns = [src.annotation(i) for i in range(len(src))]
    assert [(a.clip, a.frame) for a in anns[:5]] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    assert [(a.clip, a.frame) for a in anns[-2:]] == [(2, 1), (2, 2)]
    assert src.name(4) == "P01/P01_01/frame_2.png (clip 1, frame 1)"
    assert src.name(1).endswith("anim.gif (clip 0, frame 1)")

    env, msgs = _make(src, device=device)
    assert len(msgs) == 1 and "unreadable video: 1" in msgs[0]
    pool = env.unwrapped.pool
    reds = _red([pool.image(i) for i in range(len(pool))])
    expected = [60, 120, 180, *range(10, 101, 10), 200, 220, 240]
    assert max(abs(r - e) for r, e in zip(reds, expected, strict=True)) <= 3
    assert pool.annotations.clips.tolist() == [0] * 3 + [1] * 10 + [2] * 3
    assert pool.annotations.frames.tolist() == [0, 1, 2, *range(10), 0, 1, 2]
    env.close()

    with pytest.raises(ValueError, match=r"broken\.mp4: OSError: no video decoder"):
        VideoFramesSource(video_root, strict=True)


def test_video_file_through_an_optional_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``.mp4`` goes to the first importable backend; faked here, as none is installed."""
    import types

    from vpt_env.data.readers import video

    class Capture:
        def __init__(self, path: str) -> None:
            self.frames = [np.full((40, 48, 3), (0, 0, 10 * t), np.uint8) for t in (1, 2, 3)]  # BGR

        def read(self) -> tuple[bool, np.ndarray | None]:
            return (True, self.frames.pop(0)) if self.frames else (False, None)

        def release(self) -> None:
            pass

    monkeypatch.setitem(__import__("sys").modules, "cv2", types.SimpleNamespace(VideoCapture=Capture))
    monkeypatch.setattr(video, "video_backends", lambda: ["cv2"])
    mp4 = tmp_path / "clip.mp4"
    mp4.write_bytes(b"decoded by the fake backend")
    env, msgs = _make(str(mp4))
    pool = env.unwrapped.pool
    assert not msgs and _red([pool.image(i) for i in range(3)]) == [10, 20, 30]  # BGR -> RGB
    assert pool.annotations.frames.tolist() == [0, 1, 2]
    env.close()
    monkeypatch.setattr(video, "video_backends", lambda: [])
    with pytest.raises(ValueError, match=r"clip\.mp4: OSError: no video decoder .*none of av, cv2, imageio"):
        VideoFramesSource(mp4, strict=True)


def test_video_files_by_path(tmp_path: Path) -> None:
    gif = _gif(tmp_path / "clip.gif", [40, 80, 120, 160])
    src = resolve_source(str(gif))
    assert isinstance(src, VideoFramesSource) and len(src) == 4 and src.skipped == {}
    images, anns = load_images(src)
    assert _red(images) == [40, 80, 120, 160] and anns.frames.tolist() == [0, 1, 2, 3]
    frames = [Image.new("RGB", (48, 40), (r, 0, 0)) for r in (30, 90)]
    tiff = tmp_path / "pages.tiff"
    frames[0].save(tiff, save_all=True, append_images=frames[1:])
    webp = tmp_path / "anim.webp"
    frames[0].save(webp, save_all=True, append_images=frames[1:], lossless=True)
    for path in (tiff, webp):
        env, msgs = _make(str(path))
        assert not msgs and _red([env.unwrapped.pool.image(i) for i in range(2)]) == [30, 90]
        env.close()
    mp4 = tmp_path / "broken.mp4"
    mp4.write_bytes(b"not a video")
    with pytest.raises(ValueError, match=r"holds no readable frame \(1 unreadable video\)"):
        VideoFramesSource(mp4)
    with pytest.raises(ValueError, match="does not exist"):
        VideoFramesSource(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no frame files or videos"):
        VideoFramesSource(empty)


# -- source= by name ---------------------------------------------------------------------


def test_resolve_source_by_name(tmp_path: Path, jsonl: Path) -> None:
    unknown = tmp_path / "notes.txt"
    unknown.write_text("x")
    with pytest.raises(ValueError, match=r"notes\.txt.* is not a format source= reads by name"):
        resolve_source(str(unknown))
    with pytest.raises(ValueError, match="neither an embedded dataset"):
        resolve_source(str(tmp_path / "missing.jsonl"))
    src, msgs = _collect(lambda: resolve_source(jsonl))  # a Path works as well as a str
    assert isinstance(src, CaptionManifest) and not msgs  # warned at load, not construction
    with pytest.raises(ValueError, match=r"line 5"):
        resolve_source(jsonl, strict=True)
    readers = ("CaptionManifest", "CocoSource", "ImageFolderSource", "VideoFramesSource", "WebDatasetSource")
    for cls in readers:
        assert cls in vpt_env.__all__ and getattr(vpt_env, cls) is getattr(vpt_env.data, cls)
