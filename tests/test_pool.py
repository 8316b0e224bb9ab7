"""ImagePool: memory cap, lazy loading, resampling, bytes per image."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import vpt_env  # noqa: F401
from vpt_env import TransitionSampler
from vpt_env.data import pool as pool_module
from vpt_env.data.annotations import Annotation
from vpt_env.data.pool import ImagePool


class Counting:
    """100 labelled 32x48 images; counts how many were decoded."""

    def __init__(self) -> None:
        self.classes = [str(i) for i in range(100)]
        self.reads = 0

    def __len__(self) -> int:
        return 100

    def image(self, i: int) -> np.ndarray:
        self.reads += 1
        return np.full((32, 48, 3), i, np.uint8)

    def annotation(self, i: int) -> Annotation:
        return Annotation(label=i)


def test_cap_loads_a_random_part_lazily() -> None:
    src = Counting()
    cap = ImagePool.bytes_for_images([(32, 48)] * 10) + 5
    pool = ImagePool.from_source(src, max_bytes=cap, seed=0)
    assert len(pool) == 10 and not pool.complete and pool.nbytes <= cap
    assert src.reads < 20  # those kept and the few the atlas's packing leaves out; not the other 80
    idx = pool.source_index.tolist()
    assert len(set(idx)) == 10 and idx != list(range(10))
    # Labels and pixels follow the source indices.
    assert pool.annotations.labels.tolist() == idx
    assert [int(pool.image(k)[0, 0, 0]) for k in range(10)] == idx
    assert pool.bytes_per_image == pytest.approx(pool.nbytes / 10)
    before = set(idx)
    pool.resample(seed=1)
    assert len(pool) == 10 and set(pool.source_index.tolist()) != before
    assert pool.annotations.labels.tolist() == pool.source_index.tolist()


def test_no_cap_loads_everything_in_order() -> None:
    pool = ImagePool.from_source(Counting())
    assert len(pool) == 100 and pool.complete
    assert pool.source_index.tolist() == list(range(100))
    with pytest.raises(ValueError, match="max_pool_bytes"):
        ImagePool.from_source(Counting(), max_bytes=0)


def test_envs_and_sampler_take_the_cap() -> None:
    five = ImagePool.bytes_for_images([(32, 48)] * 5)
    env = gym.make("ImageView-v0", source=Counting(), view_size=16, max_pool_bytes=five)
    pool = env.unwrapped.pool
    assert len(pool) == 5
    _, info = env.reset(seed=0)
    assert 0 <= info["image_index"] < 5
    pool.resample(seed=3)
    _, info = env.reset()
    assert 0 <= info["image_index"] < 5
    s = TransitionSampler(
        Counting(), view_size=16, max_pool_bytes=ImagePool.bytes_for_images([(32, 48)] * 4), seed=0
    )
    b = s.sample(8)
    assert len(s.pool) == 4 and bool((b.image < 4).all())
    assert torch.equal(b.labels, s.pool.source_index[b.image])


def test_the_cap_holds_for_images_of_many_sizes() -> None:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (int(h), int(w), 3), np.uint8) for h, w in rng.integers(40, 300, (60, 2))]
    for cap in (10**6, 3 * 10**6, 5 * 10**6):
        for keep_float in (True, False):
            pool = ImagePool.from_source(images, max_bytes=cap, keep_float=keep_float, seed=1)
            assert pool.nbytes <= cap or len(pool) == 1, (cap, keep_float)
            shapes = [images[i].shape[:2] for i in pool.source_index.tolist()]
            assert ImagePool.bytes_for_images(shapes, keep_float) == pool.nbytes


def test_the_pool_is_built_in_batches_of_bounded_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """The float copies of one build batch stay under _BUILD_BYTES (one batch of every same-size
    photo doubled the peak memory of a load)."""
    stacked: list[int] = []
    real = np.stack

    def spy(arrays, *args, **kwargs):
        out = real(arrays, *args, **kwargs)
        stacked.append(out.size * 4)  # the float32 copy the build makes of it
        return out

    monkeypatch.setattr(pool_module.np, "stack", spy)
    images = [np.zeros((256, 256, 3), np.uint8)] * 100  # 75 MiB as float32
    ImagePool(images)
    assert sum(stacked) == 100 * 256 * 256 * 3 * 4 and max(stacked) <= pool_module._BUILD_BYTES
