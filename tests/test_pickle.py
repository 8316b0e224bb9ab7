"""Pickling envs and pools: the image source travels by reference where it can be rebuilt."""

from __future__ import annotations

import pickle
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from PIL import Image

import vpt_env  # noqa: F401
from vpt_env.data.pool import ImagePool
from vpt_env.data.scenes import SceneSource

RNG = np.random.default_rng(0)
ARRAYS = [RNG.integers(0, 256, (60 + 10 * i, 80, 3), dtype=np.uint8) for i in range(3)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("images")
    for i, arr in enumerate(ARRAYS):
        Image.fromarray(arr).save(root / f"{i}.png")
    return root


def _continue_both(env, clone, steps: int = 8) -> None:
    """Step the env and its unpickled clone with the same actions: identical results."""
    env.action_space.seed(1)
    for _ in range(steps):
        act = env.action_space.sample()
        a, b = env.step(act), clone.step(act)
        for x, y in zip(a, b, strict=True):
            if isinstance(x, dict):
                for k in x:
                    np.testing.assert_array_equal(np.asarray(x[k]), np.asarray(y[k]), err_msg=k)
            else:
                np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _mid_episode(env):
    env.action_space.seed(0)
    env.reset(seed=0)
    env.step(env.action_space.sample())
    return env


@pytest.mark.parametrize(
    ("env_id", "source"),
    [
        ("ImageView-v0", None),  # the embedded photos, by name
        ("ImageView-v0", "photos"),
        ("ImageViewDiscrete-v0", "folder"),
        ("ImageView-v0", "file"),
        ("ImageSearch-v0", SceneSource(n_images=20)),  # rebuilt from its config
    ],
)
def test_env_from_a_rebuildable_source_pickles_in_kilobytes_and_continues(
    env_id: str, source: object, folder: Path
) -> None:
    if source == "folder":
        source = folder
    elif source == "file":
        source = str(folder / "1.png")
    env = _mid_episode(gym.make(env_id, source=source, view_size=16, max_image_side=256))
    blob = pickle.dumps(env)
    assert len(blob) < 50_000, len(blob)  # was the whole pool: 110 MB for the photos
    clone = pickle.loads(blob)
    _continue_both(env, clone)


def test_vector_env_pickles_by_reference_and_continues(folder: Path) -> None:
    venv = gym.make_vec(
        "ImageView-v0",
        num_envs=3,
        vectorization_mode="vector_entry_point",
        source=folder,
        array="numpy",
        view_size=16,
    )
    venv.reset(seed=0)
    blob = pickle.dumps(venv)
    assert len(blob) < 50_000  # its spaces and state, not the pool, nor its views
    clone = pickle.loads(blob)
    actions = np.random.default_rng(0).uniform(-1, 1, (8, 3, 11)).astype(np.float32)
    for act in actions:
        for x, y in zip(venv.step(act), clone.step(act), strict=True):
            if isinstance(x, dict):
                for k in x:
                    np.testing.assert_array_equal(x[k], y[k], err_msg=k)
            else:
                np.testing.assert_array_equal(x, y)


def test_env_from_arrays_pickles_the_arrays_not_the_pool() -> None:
    env = _mid_episode(gym.make("ImageView-v0", source=ARRAYS, view_size=16))
    blob = pickle.dumps(env)
    raw = sum(a.nbytes for a in ARRAYS)
    assert raw < len(blob) < raw + 50_000 < env.unwrapped.pool.nbytes
    _continue_both(env, pickle.loads(blob))


def test_pool_made_from_images_keeps_pickling_its_stores() -> None:
    pool = ImagePool(ARRAYS)
    clone = pickle.loads(pickle.dumps(pool))
    assert clone.nbytes == pool.nbytes
    for i in range(len(pool)):
        np.testing.assert_array_equal(clone.image(i), pool.image(i))


def test_capped_pool_keeps_its_part_after_resample(folder: Path) -> None:
    per = ImagePool.bytes_for(80, 80)
    pool = ImagePool.from_source(folder, max_bytes=2 * per, seed=0)
    pool.resample(seed=5)
    clone = pickle.loads(pickle.dumps(pool))
    assert clone.source_index.tolist() == pool.source_index.tolist()
    clone.resample(seed=6)  # still knows its source
    assert len(clone) == len(pool)


def test_source_changed_since_pickling_is_refused(tmp_path: Path) -> None:
    for i, arr in enumerate(ARRAYS):
        Image.fromarray(arr).save(tmp_path / f"{i}.png")
    env = _mid_episode(gym.make("ImageView-v0", source=tmp_path, view_size=16))
    blob = pickle.dumps(env)
    Image.fromarray(255 - ARRAYS[1]).save(tmp_path / "1.png")
    with pytest.raises(ValueError, match="changed since"):
        pickle.loads(blob)
