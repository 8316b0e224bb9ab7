"""Dataset readers that stream: WebDataset tar shards and video frames.

Fixtures are built in ``tmp_path``; the conventions are those of ``test_readers.py``.
"""

from __future__ import annotations

import io
import json
import pickle
import tarfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from _data_helpers import VIEW, _collect, _make, _red, _save, _step_once
from PIL import Image

from vpt_env.data import (
    ImageReadError,
    VideoFramesSource,
    WebDatasetSource,
    expand_braces,
    load_images,
    resolve_source,
)


def _encode(rgb: tuple[int, int, int], fmt: str = "PNG", size: tuple[int, int] = (48, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, rgb).save(buf, format=fmt)
    return buf.getvalue()


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
    _tar(
        d / "cc-000.tar",
        [
            ("s/000000.jpg", _encode((10, 0, 0), "JPEG")),
            ("s/000000.txt", b"a red square"),
            ("s/000000.cls", b"2\n"),
            ("s/000001.png", _encode((20, 0, 0))),
            ("s/000001.json", json.dumps({"caption": "dark", "label": 0, "url": "http://x"}).encode()),
            ("s/000002.jpg", b"\xff\xd8\xff corrupt jpeg"),
            ("s/000002.txt", b"unreadable"),
        ],
    )
    _tar(
        d / "cc-001.tar",
        [
            ("000003.jpg", _encode((30, 0, 0), "JPEG")),
            ("000003.txt", b"caf\xe9"),
            ("000004.txt", b"a caption without its image"),
            ("000005.webp", _encode((50, 0, 0), "WEBP")),
            ("000005.json", b"{not json"),
            ("000005.seg.png", _encode((0, 0, 0))),  # another member of the sample, ignored
        ],
    )
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


def _offsets(path: Path) -> list[tuple[int, int, int]]:
    """(header offset, data offset, data size) of every member of a tar file."""
    with tarfile.open(path) as tf:
        return [(m.offset, m.offset_data, m.size) for m in tf.getmembers()]


def test_a_cut_shard_loses_no_sample_without_a_count(tmp_path: Path) -> None:
    """Cut inside a header, at a member boundary, inside an image, or at the end marker: the
    samples before the cut are kept (the same ones streamed and indexed), and a loss is counted."""
    reds = [10, 20, 30, 40]
    members = []
    for k, r in enumerate(reds):
        members += [(f"{k:04d}.png", _encode((r, 0, 0), size=(8, 8))), (f"{k:04d}.txt", f"cap {k}".encode())]
    whole = _tar(tmp_path / "whole.tar", members).read_bytes()
    cuts = set()
    for header, data, size in _offsets(tmp_path / "whole.tar"):
        cuts |= {header, header + 1, header + 300, data, data + size // 2, data + size}
    end = max(d + s for _, d, s in _offsets(tmp_path / "whole.tar"))
    cuts |= {end + (-end) % 512, end + (-end) % 512 + 100}  # at and inside the end marker
    for cut in sorted(c for c in cuts if 0 < c < len(whole)):
        path = tmp_path / f"cut{cut}.tar"
        path.write_bytes(whole[:cut])
        try:
            src = WebDatasetSource(path)
        except ValueError as err:  # nothing before the cut: the error says why
            assert "no readable sample" in str(err) and str(path) in str(err), cut
            continue
        streamed, _ = _collect(lambda src=src: [im for im, _ in src])
        indexed = WebDatasetSource(path)
        (loaded, _), _ = _collect(lambda indexed=indexed: load_images(indexed))
        assert _red(streamed) == _red(loaded) == reds[: len(streamed)], cut
        if len(streamed) < len(reds):  # a loss is counted, in both modes
            assert (
                src.skipped.get(
                    "unreadable or truncated shard (the sample read then and the rest of the shard skipped)"
                )
                == 1
            ), (cut, src.skipped)
            assert sum(indexed.skipped.values()) >= 1, (cut, indexed.skipped)
    # A truncated .tar.gz with nothing readable says why.
    import gzip

    gz = tmp_path / "cut.tar.gz"
    gz.write_bytes(gzip.compress(whole)[:60])
    with pytest.raises(ValueError, match=r"no readable sample.*cut\.tar\.gz': .*(end of data|truncated)"):
        WebDatasetSource(gz)


def test_huge_labels_are_malformed_not_a_huge_label_space(tmp_path: Path) -> None:
    img = _encode((10, 0, 0), size=(8, 8))
    shard = _tar(
        tmp_path / "labels.tar",
        [
            ("a.png", img),
            ("a.cls", b"999999999"),
            ("b.png", img),
            ("b.json", b'{"label": 5000000}'),
            ("c.png", img),
            ("c.cls", b"3"),
        ],
    )
    src = WebDatasetSource(shard)
    assert len(src) == 3 and src.classes == ["0", "1", "2", "3"]
    assert [src.annotation(i).label for i in range(3)] == [None, None, 3]
    assert src.skipped == {"malformed entry": 2}
    assert "label 999999999 is not below 100000" in src.summary()
    with pytest.raises(ValueError, match=r"labels\.tar:a: label 999999999 is not below 100000"):
        len(WebDatasetSource(shard, strict=True))


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
