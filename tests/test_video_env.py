"""Moves in time on video sources: the core index, both envs, and bad input."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import vpt_env  # noqa: F401
from vpt_env.core.video import VideoIndex, move_in_time
from vpt_env.data.annotations import Annotation


def test_video_index_by_hand() -> None:
    # Images in scrambled order: (clip, frame) = (1,0) (0,2) (1,1) (0,0) (0,1) (2,0).
    ix = VideoIndex.from_clips(torch.tensor([1, 0, 1, 0, 0, 2]), torch.tensor([0, 2, 1, 0, 1, 0]))
    assert ix is not None
    assert ix.order.tolist() == [3, 4, 1, 0, 2, 5]
    img = torch.tensor([3, 3, 1, 0, 5])
    # +1 frame: (0,0)->(0,1)=4; -1 from the clip start stays; (0,2) is the clip end; (1,0)->(1,1)=2.
    assert move_in_time(img, torch.tensor([1.0, -1.0, 1.0, 1.0, 1.0]), ix, 1).tolist() == [4, 3, 1, 2, 5]
    assert move_in_time(img, torch.tensor([0.5, 0.5, -1.0, 0.0, -1.0]), ix, 4).tolist() == [1, 1, 3, 0, 5]
    assert VideoIndex.from_clips(torch.tensor([0, -1]), torch.tensor([0, -1])) is None


class Clips:
    """Two clips of 5 and 3 frames; frame t of clip c is a flat image of grey level 20 * (5c + t)."""

    def __init__(self) -> None:
        self.classes: list[str] = []
        self.items = [(c, t) for c, n in ((0, 5), (1, 3)) for t in range(n)]

    def __len__(self) -> int:
        return len(self.items)

    def image(self, i: int) -> np.ndarray:
        c, t = self.items[i]
        return np.full((48, 48, 3), 20 * (5 * c + t), np.uint8)

    def annotation(self, i: int) -> Annotation:
        c, t = self.items[i]
        return Annotation(clip=c, frame=t)


def test_continuous_env_gains_a_time_entry() -> None:
    env = gym.make("ImageView-v0", source=Clips(), view_size=16, augmentations=())
    assert env.action_space.shape == (5,)
    _, info = env.reset(seed=0, options={"image_index": 1})
    later = np.array([0, 0, 0, 0, 1.0], np.float32)  # +4 frames, clamped to the clip's last (index 4)
    obs, *_, info = env.step(later)
    assert info["image_index"] == 4 and int(obs[0, 0, 0]) == 80
    obs, *_, info = env.step(-later * 0.5)  # -2 frames
    assert info["image_index"] == 2
    still = gym.make("ImageView-v0", source=Clips(), augmentations=(), max_time_step=0)
    assert still.action_space.shape == (4,)


def test_discrete_env_gains_earlier_and_later() -> None:
    env = gym.make("ImageViewDiscrete-v0", source=Clips(), view_size=16)
    assert env.action_space.n == 11
    _, info = env.reset(seed=0, options={"image_index": 6})  # clip 1, frame 1
    _, *_, info = env.step(10)
    assert info["image_index"] == 7
    _, *_, info = env.step(10)
    assert info["image_index"] == 7  # the clip's end
    _, *_, info = env.step(9)
    assert info["image_index"] == 6
    box = info["box"]
    _, *_, info = env.step(9)
    np.testing.assert_array_equal(info["box"], box)  # a move in time keeps the box


def test_vector_env_moves_in_time_like_single_envs() -> None:
    venv = gym.make_vec(
        "ImageViewDiscrete-v0",
        num_envs=3,
        vectorization_mode="vector_entry_point",
        source=Clips(),
        view_size=16,
        array="numpy",
    )
    singles = [gym.make("ImageViewDiscrete-v0", source=Clips(), view_size=16) for _ in range(3)]
    _, info = venv.reset(seed=3)
    for i, e in enumerate(singles):
        assert e.reset(seed=3 + i)[1]["image_index"] == info["image_index"][i]
    rng = np.random.default_rng(0)
    for _ in range(20):
        acts = rng.integers(0, 11, 3)
        _, _, _, _, info = venv.step(acts)
        for i, e in enumerate(singles):
            assert e.step(int(acts[i]))[4]["image_index"] == info["image_index"][i]


def test_time_moves_need_a_video_source() -> None:
    with pytest.raises(ValueError, match="video"):
        gym.make("ImageView-v0", source=[np.zeros((40, 40, 3), np.uint8)], max_time_step=2)
    with pytest.raises(ValueError, match="max_time_step"):
        gym.make("ImageView-v0", source=Clips(), max_time_step=-1)
