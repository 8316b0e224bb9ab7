"""ImagePool: memory cap, lazy loading, resampling, bytes per image."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import vpt_env  # noqa: F401
from vpt_env import TransitionSampler
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
    per = ImagePool.bytes_for(32, 48)
    pool = ImagePool.from_source(src, max_bytes=10 * per + 5, seed=0)
    assert len(pool) == 10 and not pool.complete
    assert src.reads == 11  # ten kept, one read and found not to fit, none of the other 89
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
    per = ImagePool.bytes_for(32, 48)
    env = gym.make("ImageView-v0", source=Counting(), view_size=16, max_pool_bytes=5 * per)
    pool = env.unwrapped.pool
    assert len(pool) == 5
    _, info = env.reset(seed=0)
    assert 0 <= info["image_index"] < 5
    pool.resample(seed=3)
    _, info = env.reset()
    assert 0 <= info["image_index"] < 5
    s = TransitionSampler(Counting(), view_size=16, max_pool_bytes=4 * per, seed=0)
    b = s.sample(8)
    assert len(s.pool) == 4 and bool((b.image < 4).all())
    assert torch.equal(b.labels, s.pool.source_index[b.image])
