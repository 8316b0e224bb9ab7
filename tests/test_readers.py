"""Dataset readers: ImageFolder, caption manifests, COCO, WebDataset shards, video frames.

Every test builds its own tiny fixtures in ``tmp_path``. Images are solid
colours, so that the loaded order can be checked by pixel value; every reader
is also run through ``gym.make("ImageView-v0", source=...)``, which loads it
with ``load_images``. Bad input follows one rule (see
:mod:`vpt_env.data.readers._base`): strict raises ``ValueError`` naming file
and line, non-strict skips and counts, and a reader warns once.

COCO is tested in ``test_readers_coco.py``; WebDataset shards and video in
``test_readers_streams.py``.
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import pytest
import torch
from _data_helpers import VIEW, _collect, _make, _red, _save, _step_once

import vpt_env
from vpt_env.data import (
    CaptionManifest,
    FolderSource,
    ImageFolderSource,
    ImageReadError,
    ImageSource,
    load_images,
    resolve_source,
)

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
        "cat/a.png",
        "cat/z.jpg",
        "cat/sub/b.png",
        "dog/c.webp",
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


@pytest.mark.parametrize(
    "rows",
    [
        'img/a.png,"a cat\nimg/b.png,a dog\nimg/c.png,a cow\n',  # open to the end of the file
        'img/a.png,"a cat\nimg/b.png,a dog\nimg/c.png,"a cow"\n',  # closed by a later cell's quote
    ],
)
def test_an_unclosed_quote_costs_one_counted_row_not_the_rest(tmp_path: Path, rows: str) -> None:
    _manifest_images(tmp_path)
    path = tmp_path / "open.csv"
    path.write_text("image,caption\n" + rows)
    src = CaptionManifest(path)
    assert [p.name for p in src.paths] == ["b.png", "c.png"]
    assert [src.annotation(i).captions for i in range(2)] == [["a dog"], ["a cow"]]
    assert src.skipped == {"malformed line": 1}
    with pytest.raises(ValueError, match=r"open\.csv, line 2: a quoted cell runs on to line \d"):
        CaptionManifest(path, strict=True)


def test_deeply_nested_jsonl_is_a_malformed_line(tmp_path: Path) -> None:
    _manifest_images(tmp_path)
    path = tmp_path / "deep.jsonl"
    path.write_text('{"image": "img/a.png"}\n' + "[" * 100_000 + "]" * 100_000 + "\n")
    src = CaptionManifest(path)
    assert len(src) == 1 and src.skipped == {"malformed line": 1}
    with pytest.raises(ValueError, match=r"deep\.jsonl, line 2: JSON nested too deeply"):
        CaptionManifest(path, strict=True)


def test_an_unclosed_quote_past_csvs_field_limit_costs_one_counted_row(tmp_path: Path) -> None:
    """Past csv's field size limit (128 KiB) the open quote raises instead of returning a row: the
    lines it swallowed are read again too, so only the bad row is lost (and counted)."""
    _manifest_images(tmp_path)
    good = "".join(f"img/{n}.png,caption {i} {'x' * 40}\n" for i in range(4000) for n in ("b", "c"))
    path = tmp_path / "long.csv"
    path.write_text('image,caption\nimg/a.png,"open quote\n' + good)
    src = CaptionManifest(path)
    assert [p.name for p in src.paths] == ["b.png", "c.png"] and src.skipped == {"malformed line": 1}
    assert [len(src.annotation(i).captions) for i in range(2)] == [4000, 4000]  # every row's caption
