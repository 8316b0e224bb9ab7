"""The ``novelty`` reward and the episode memory it reads; rewards' vector cumulants in ``info``."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import vpt_env  # noqa: F401
from vpt_env.core.dynamics import reset_state, step_state
from vpt_env.core.state import EnvParams, ViewState
from vpt_env.data.annotations import Annotations
from vpt_env.rewards import make_reward
from vpt_env.rewards.builtin import NoveltyReward


def _iou(a: list[float], b: list[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_novelty_by_hand() -> None:
    box = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.2, 0.2, 0.6, 0.6]])
    visited = torch.tensor(
        [
            [[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.0, 0.0]],  # revisits its box: novelty 0
            [[0.0, 0.0, 0.4, 0.4], [0.5, 0.5, 1.0, 1.0]],  # two partial overlaps: 1 - the larger IoU
        ]
    )
    zero = torch.zeros(2, dtype=torch.int64)
    state = ViewState(zero, box, torch.zeros(2, 7), zero, zero, zero, visited)
    out = NoveltyReward(memory=2)(None, state, Annotations.empty(1))
    b = box[1].tolist()
    expected = 1 - max(_iou(b, [0.0, 0.0, 0.4, 0.4]), _iou(b, [0.5, 0.5, 1.0, 1.0]))
    torch.testing.assert_close(out, torch.tensor([0.0, expected]))


def test_step_records_the_boxes_left_in_a_ring() -> None:
    params = EnvParams(memory=2, augmentations=())
    hw = torch.tensor([[100.0, 100.0]])
    state = reset_state(params, hw, torch.tensor([3]), torch.tensor([0]))
    assert state.visited is not None and state.visited.shape == (1, 2, 4) and not state.visited.any()
    boxes = [state.box[0].clone()]
    for a in ([1.0, 0, 0, 0], [0, 1.0, 0, 0], [-1.0, 0, 0, 0]):
        state = step_state(params, state, torch.tensor([a]), hw)
        boxes.append(state.box[0].clone())
    # After 3 steps, slots hold the boxes left at steps 2 (slot 0) and 1 (slot 1).
    assert state.visited is not None
    torch.testing.assert_close(state.visited[0, 0], boxes[2])
    torch.testing.assert_close(state.visited[0, 1], boxes[1])
    assert reset_state(EnvParams(), hw, torch.tensor([3]), torch.tensor([0])).visited is None


def test_env_raises_memory_for_novelty_and_vector_matches_single(device: torch.device) -> None:
    kw = {"reward": "novelty", "reward_kwargs": {"memory": 4}, "view_size": 16, "augmentations": ()}
    single = gym.make("ImageViewDiscrete-v0", device=device, **kw)
    assert single.unwrapped.params.memory == 4
    vec = gym.make_vec(
        "ImageViewDiscrete-v0",
        num_envs=3,
        vectorization_mode="vector_entry_point",
        device=device,
        max_episode_steps=5,
        **kw,
    )
    singles = [gym.make("ImageViewDiscrete-v0", device=device, max_episode_steps=5, **kw) for _ in range(3)]
    vec.reset(seed=4)
    for i, e in enumerate(singles):
        e.reset(seed=4 + i)
    rng = np.random.default_rng(1)
    for _ in range(5):
        acts = rng.integers(0, 7, 3)
        _, vr, *_ = vec.step(torch.as_tensor(acts, device=device))
        sr = [e.step(int(a))[1] for e, a in zip(singles, acts, strict=True)]
        np.testing.assert_allclose(vr.cpu().numpy(), sr, atol=1e-6)
        assert ((vr >= 0) & (vr <= 1)).all()
    # The episodes were truncated; the autoreset step clears the memory.
    vec.step(torch.zeros(3, dtype=torch.int64, device=device))
    assert not vec.unwrapped.state.visited.any()


def test_novelty_arguments() -> None:
    with pytest.raises(ValueError, match="memory"):
        make_reward("novelty", Annotations.empty(1), memory=0)
    with pytest.raises(ValueError, match="memory"):
        EnvParams(memory=-1)
    zero = torch.zeros(1, dtype=torch.int64)
    state = ViewState(zero, torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.zeros(1, 7), zero, zero, zero)
    with pytest.raises(ValueError, match="memory"):
        NoveltyReward()(None, state, Annotations.empty(1))


def test_reward_cumulant_in_info_single_and_vector(device: torch.device) -> None:
    """A reward with a vector cumulant: both envs put it in info, and the reward is its target column."""

    def mean_colour(views):
        return 5 * views.mean(dim=(2, 3))

    kw = {"reward": "teacher_prob", "target": 1, "reward_kwargs": {"model": mean_colour}, "view_size": 16}
    env = gym.make("ImageView-v0", device=device, **kw)
    _, info = env.reset(seed=0)
    assert info["reward_cumulant"].shape == (3,)
    _, reward, *_, info = env.step(env.action_space.sample())
    np.testing.assert_allclose(info["reward_cumulant"].sum(), 1.0, atol=1e-5)
    assert reward == pytest.approx(float(info["reward_cumulant"][1]), abs=1e-6)
    kw["device"] = device
    vec = gym.make_vec("ImageView-v0", num_envs=2, vectorization_mode="vector_entry_point", **kw)
    _, vinfo = vec.reset(seed=0)
    assert tuple(vinfo["reward_cumulant"].shape) == (2, 3) and bool(vinfo["_reward_cumulant"].all())
    assert "reward_cumulant" not in gym.make("ImageView-v0", view_size=16).reset(seed=0)[1]
