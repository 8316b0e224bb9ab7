"""ImageSearch-v0: API checks, goals, the IoU reward and termination."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import vpt_env  # noqa: F401
from vpt_env.data.annotations import Annotation, Annotations
from vpt_env.data.scenes import SceneSource
from vpt_env.envs.search import goal_iou, sample_goals

SCENES = SceneSource(n_images=40)


class TwoObjects:
    """One 100x100 image with a 'cat' box at the top left and a 'dog' box at the bottom right."""

    def __init__(self) -> None:
        self.classes = ["cat", "dog"]

    def __len__(self) -> int:
        return 1

    def image(self, i: int) -> np.ndarray:
        return np.full((100, 100, 3), 90, np.uint8)

    def annotation(self, i: int) -> Annotation:
        return Annotation(boxes=[[0.0, 0.0, 0.4, 0.4], [0.5, 0.5, 1.0, 1.0]], box_labels=[0, 1])


@pytest.mark.parametrize("env_id", ["ImageSearch-v0", "ImageSearchDiscrete-v0"])
def test_check_env_and_determinism(env_id: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(gym.make(env_id, source=SCENES).unwrapped)
        sb3_check_env(gym.make(env_id, source=SCENES), warn=True)
    a, b = gym.make(env_id, source=SCENES), gym.make(env_id, source=SCENES)
    a.action_space.seed(0)
    oa, ia = a.reset(seed=5)
    ob, ib = b.reset(seed=5)
    assert oa["goal"] == ob["goal"] and ia["image_index"] == ib["image_index"]
    for _ in range(30):
        act = a.action_space.sample()
        ra, rb = a.step(act), b.step(act)
        np.testing.assert_array_equal(ra[0]["view"], rb[0]["view"])
        assert ra[1:4] == rb[1:4]
        if ra[2] or ra[3]:
            break


def test_goal_is_an_object_of_the_scene() -> None:
    env = gym.make("ImageSearch-v0", source=SCENES, text_info=True)
    ann = env.unwrapped.pool.annotations
    for seed in range(20):
        obs, info = env.reset(seed=seed)
        labels = ann.box_labels[info["image_index"]]
        assert obs["goal"] in labels[labels >= 0].tolist()
        assert info["goal_name"] == ann.classes[obs["goal"]]


def test_goal_iou_and_sample_goals_by_hand() -> None:
    ann = Annotations([TwoObjects().annotation(0)], ["cat", "dog"])
    img = torch.tensor([0, 0, 0])
    box = torch.tensor([[0.0, 0.0, 0.4, 0.4], [0.0, 0.0, 0.8, 0.8], [0.0, 0.0, 0.4, 0.4]])
    goal = torch.tensor([0, 0, 1])
    # cat box exactly: 1; cat box inside a view of 0.64 area: 0.16 / 0.64 = 0.25; dog vs the cat view: 0.
    torch.testing.assert_close(goal_iou(ann, img, box, goal), torch.tensor([1.0, 0.25, 0.0]))
    assert sample_goals(ann, img, torch.tensor([0.1, 0.6, 0.99])).tolist() == [0, 1, 1]


def test_reward_is_the_iou_and_finding_terminates() -> None:
    env = gym.make("ImageSearch-v0", source=TwoObjects(), view_size=16, found_iou=0.5)
    obs, info = env.reset(seed=0)
    x0, y0, x1, y1 = info["box"]
    goal_box = [0.0, 0.0, 0.4, 0.4] if obs["goal"] == 0 else [0.5, 0.5, 1.0, 1.0]
    inter = max(0, min(x1, goal_box[2]) - max(x0, goal_box[0])) * max(
        0, min(y1, goal_box[3]) - max(y0, goal_box[1])
    )
    union = (x1 - x0) * (y1 - y0) + (goal_box[2] - goal_box[0]) * (goal_box[3] - goal_box[1]) - inter
    assert info["iou"] == pytest.approx(inter / union, abs=1e-5)
    start = info["iou"]
    # A no-op step keeps the IoU: the shaped reward is 0.
    _, reward, terminated, _, info = env.step(np.zeros(4, np.float32))
    assert reward == pytest.approx(0.0, abs=1e-6) and not terminated and info["iou"] == pytest.approx(start)
    # Steer the view onto the goal by setting the state, then a no-op step finds it:
    # the change in IoU (1 - start) plus the success bonus.
    raw = env.unwrapped
    raw.state = raw.state._replace(box=torch.tensor([goal_box]))
    _, reward, terminated, truncated, info = env.step(np.zeros(4, np.float32))
    assert info["iou"] == pytest.approx(1.0, abs=1e-5)
    assert reward == pytest.approx(1.0 - start + 1.0, abs=1e-5)
    assert terminated and info["is_success"] and not truncated


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="reward"):
        gym.make("ImageSearch-v0", source=SCENES, reward="zero")
    with pytest.raises(ValueError, match="found_iou"):
        gym.make("ImageSearch-v0", source=SCENES, found_iou=0.0)
    with pytest.raises(ValueError, match="object boxes"):
        gym.make("ImageSearch-v0", source=[np.zeros((64, 64, 3), np.uint8)])
