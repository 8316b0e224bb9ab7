"""Dataset readers: COCO instances and captions JSON (``CocoSource``).

Fixtures are built in ``tmp_path``; the conventions are those of ``test_readers.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _data_helpers import _collect, _make, _save

from vpt_env.data import CocoSource, ImageReadError, load_images, resolve_source


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
    nothing.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "x.jpg", "width": 4, "height": 4}],
                "annotations": [],
                "categories": [],
            }
        )
    )
    with pytest.raises(ValueError, match=r"no usable image \(1 missing image file\)"):
        CocoSource(nothing)
    with pytest.raises(ValueError, match="needs instances_json, captions_json or both"):
        CocoSource()
    neither = tmp_path / "neither.json"
    neither.write_text('{"images": [], "annotations": []}')
    with pytest.raises(ValueError, match=r"neither\.json: a COCO file needs 'categories'"):
        resolve_source(str(neither))


def test_coco_duplicate_ids_sizes_nesting_and_the_images_folder(tmp_path: Path) -> None:
    _save(tmp_path / "images" / "a.jpg", (10, 0, 0), size=(80, 60))
    _save(tmp_path / "images" / "b.jpg", (20, 0, 0), size=(160, 120))  # the JSON says 80x60
    entries = [
        {"id": 1, "file_name": "a.jpg", "width": 80, "height": 60},
        {"id": 2, "file_name": "b.jpg", "width": 80, "height": 60},
        {"id": 1, "file_name": "b.jpg", "width": 80, "height": 60},  # images[2]: id 1 again
    ]
    inst = tmp_path / "instances.json"
    box = {"image_id": 2, "category_id": 1, "bbox": [0, 0, 80, 60]}
    inst.write_text(
        json.dumps({"images": entries, "categories": [{"id": 1, "name": "x"}], "annotations": [box]})
    )
    # Images in images/ beside the JSON (a common export layout) are found.
    src, msgs = _collect(lambda: CocoSource(inst))
    assert src.image_root == tmp_path / "images" and len(src) == 2
    assert src.skipped == {"malformed entry": 1}
    assert "images[2]: duplicate image id 1 (first: images[0])" in src.summary()
    with pytest.raises(ValueError, match=r"instances\.json, images\[2\]: duplicate image id 1"):
        CocoSource(inst, strict=True)
    # A file of another size than the JSON's: its boxes would be misplaced, so it is not loaded.
    (images, anns), msgs = _collect(lambda: load_images(CocoSource(inst)))
    assert len(images) == 1 and len(msgs) == 1
    assert "the file is 160x120 but the JSON says 80x60" in msgs[0]
    with pytest.raises(ImageReadError, match=r"b\.jpg.*160x120 but the JSON says 80x60"):
        load_images(CocoSource(inst, image_root=tmp_path / "images"), strict=True)
    # Elsewhere, a missing file says how to name the folder.
    (tmp_path / "images").rename(tmp_path / "pics")
    with pytest.raises(ValueError, match=r"a\.jpg' not found; pass image_root= naming the folder"):
        CocoSource(inst)
    # JSON nested too deeply for the parser: an error naming the file, not a RecursionError.
    deep = tmp_path / "deep.json"
    deep.write_text('{"images": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(ValueError, match=r"deep\.json: JSON nested too deeply"):
        CocoSource(deep)
