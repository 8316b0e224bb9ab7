"""TransitionSampler: shapes, pair geometry, IoU bounds, determinism, captions, cumulants."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vpt_env import TransitionSampler
from vpt_env.core.boxes import compose, iou
from vpt_env.data.annotations import Annotation
from vpt_env.data.pool import ImagePool
from vpt_env.data.sources import load_images

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pool() -> ImagePool:
    images, annotations = load_images("photos", min_side=32)
    return ImagePool(images, annotations)


def test_shapes_and_pair_geometry(pool: ImagePool) -> None:
    s = TransitionSampler(pool, view_size=32, seed=0)
    b = s.sample(16, views_per_image=4)
    assert b.views.shape == (16, 4, 3, 32, 32) and b.views.dtype == torch.float32
    assert b.boxes.shape == (16, 4, 4) and b.relative.shape == (16, 4, 4, 4)
    assert b.cumulants is not None and b.cumulants.shape == (16, 4, len(pool.annotations.classes))
    sums = b.cumulants.sum(-1)
    assert bool(((sums - 1).abs() < 1e-5).logical_or(sums == 0).all())
    # relative[b, i, j] is view j's box in view i's frame: composing gives view j back.
    back = compose(b.boxes[:, :, None, :], b.relative)
    torch.testing.assert_close(back, b.boxes[:, None, :, :].expand_as(back), atol=1e-5, rtol=0)
    diag = b.relative[:, torch.arange(4), torch.arange(4)]
    torch.testing.assert_close(diag, torch.tensor([0.0, 0.0, 1.0, 1.0]).expand_as(diag))
    assert not bool(b.pair_valid[:, torch.arange(4), torch.arange(4)].any())
    torch.testing.assert_close(b.iou, iou(b.boxes[:, :, None], b.boxes[:, None, :]))
    # Areas follow RandomResizedCrop's scale (up to clamping at the image border).
    area = (b.boxes[..., 2] - b.boxes[..., 0]) * (b.boxes[..., 3] - b.boxes[..., 1])
    assert float(area.min()) >= 0.05 * 0.7 and float(area.max()) <= 1.0
    labels = pool.annotations.labels[b.image]
    torch.testing.assert_close(b.labels, labels)


def test_views_are_the_renders_of_their_boxes(pool: ImagePool) -> None:
    from vpt_env.core.render import render_crops

    s = TransitionSampler(pool, view_size=32, seed=1)
    b = s.sample(3, views_per_image=2)
    direct = render_crops(pool, b.image.repeat_interleave(2), b.boxes.view(-1, 4), 32)
    torch.testing.assert_close(b.views.view(-1, 3, 32, 32), direct)


def test_crop_views_are_the_boxes_without_augmentation(pool: ImagePool) -> None:
    from vpt_env.core.render import render_crops

    plain = TransitionSampler(pool, view_size=32, seed=2, augment=True).sample(4, views_per_image=3)
    b = TransitionSampler(pool, view_size=32, seed=2, augment=True, crop_views=True).sample(4, 3)
    assert plain.crop_views is None and b.crop_views is not None
    # No extra random draws: everything else is the batch crop_views=False gives.
    for name in ("views", "boxes", "aug", "image", "caption"):
        assert torch.equal(getattr(b, name), getattr(plain, name)), name
    direct = render_crops(pool, b.image.repeat_interleave(3), b.boxes.view(-1, 4), 32)
    torch.testing.assert_close(b.crop_views.view(-1, 3, 32, 32), direct)
    assert not torch.allclose(b.crop_views, b.views)  # the augmented views differ
    u8 = TransitionSampler(pool, view_size=32, seed=2, augment=True, crop_views=True, output="uint8")
    assert u8.sample(2, 2).crop_views.shape == (2, 2, 32, 32, 3)
    # Without augmentation the views are crops already: no copy.
    assert TransitionSampler(pool, view_size=32, crop_views=True).sample(2, 2).crop_views is None
    with pytest.raises(TypeError, match="crop_views"):
        TransitionSampler(pool, crop_views="yes")
    with pytest.raises(TypeError, match="augment"):
        TransitionSampler(pool, augment=None)


def test_deterministic_under_its_seed_and_resumable(pool: ImagePool) -> None:
    a = TransitionSampler(pool, view_size=32, seed=5).sample(8)
    b = TransitionSampler(pool, view_size=32, seed=5).sample(8)
    c = TransitionSampler(pool, view_size=32, seed=6).sample(8)
    torch.testing.assert_close(a.views, b.views, atol=0, rtol=0)
    assert not torch.equal(a.boxes, c.boxes)
    s = TransitionSampler(pool, view_size=32, seed=5)
    s.sample(8)
    state = s.state_dict()
    nxt = s.sample(8)
    r = TransitionSampler(pool, view_size=32, seed=0)
    r.load_state_dict(state)
    torch.testing.assert_close(r.sample(8).boxes, nxt.boxes, atol=0, rtol=0)


def test_iou_bounds(pool: ImagePool) -> None:
    s = TransitionSampler(pool, view_size=16, seed=0, iou_range=(0.1, 0.5))
    b = s.sample(64, views_per_image=4)
    ok = b.iou[b.pair_valid]
    assert float(ok.min()) >= 0.1 and float(ok.max()) <= 0.5
    assert float(b.pair_valid.float().sum()) / (64 * 12) > 0.6  # most pairs satisfy the bounds
    free = TransitionSampler(pool, view_size=16, seed=0).sample(64, views_per_image=4)
    off = ~torch.eye(4, dtype=torch.bool).expand(64, 4, 4)
    in_range = (free.iou[off] >= 0.1) & (free.iou[off] <= 0.5)
    assert float(in_range.float().mean()) < float(b.pair_valid.float().sum()) / (64 * 12)


class _Captioned:
    def __init__(self) -> None:
        self.classes = ["a", "b"]
        rng = np.random.default_rng(0)
        self.images = [rng.integers(0, 256, (40, 40, 3), dtype=np.uint8) for _ in range(3)]
        self.caps = [["one", "uno"], [], ["three"]]

    def __len__(self) -> int:
        return 3

    def image(self, i: int) -> np.ndarray:
        return self.images[i]

    def annotation(self, i: int) -> Annotation:
        return Annotation(label=i % 2, captions=self.caps[i])


def test_captions_and_labels_by_index() -> None:
    s = TransitionSampler(_Captioned(), view_size=16, seed=0, output="uint8", augment=True)
    assert s.captions == ["one", "uno", "three"]
    b = s.sample(32, views_per_image=2)
    assert b.views.dtype == torch.uint8 and b.views.shape == (32, 2, 16, 16, 3)
    text = s.caption_text(b.caption)
    for img, t, lab in zip(b.image.tolist(), text, b.labels.tolist(), strict=True):
        assert lab == img % 2
        assert (t is None) if img == 1 else (t in {0: ["one", "uno"], 2: ["three"]}[img])
    assert not torch.allclose(b.aug, b.aug[:1, :1].expand_as(b.aug))  # augment draws per view


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"iou_range": (0.6, 0.2)}, "iou_range"),
        ({"output": "half"}, "output"),
        ({"resample_rounds": -1}, "resample"),
    ],
)
def test_bad_arguments(pool: ImagePool, kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        TransitionSampler(pool, **kwargs)
    with pytest.raises(ValueError, match="batch_size"):
        TransitionSampler(pool).sample(0)
    with pytest.raises(ValueError, match="images"):
        TransitionSampler(pool).sample(2, images=torch.tensor([0, 99]))


def test_vector_env_example_runs(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "vector_env.py"),
            "--num-envs",
            "16",
            "--steps",
            "3",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "views/s" in proc.stdout and (tmp_path / "transitions.png").exists()
