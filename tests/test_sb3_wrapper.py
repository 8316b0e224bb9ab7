"""The SB3 bridge on the search envs: Dict observations, last-step infos, training."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import vpt_env  # noqa: F401
from vpt_env.data.scenes import SceneSource
from vpt_env.wrappers import make_sb3_vec_env

SCENES = SceneSource(n_images=40)
KW = {"source": SCENES, "view_size": 16, "init_scale": (0.05, 0.3)}


@pytest.mark.parametrize("env_id", ["ImageSearch-v0", "ImageSearchDiscrete-v0"])
def test_dict_observations_and_last_step_infos_match_the_vector_env(env_id: str) -> None:
    n, seed, steps = 6, 3, 4
    # found_iou low: many episodes end by termination (found) before the time limit.
    kw = {**KW, "found_iou": 0.15, "max_episode_steps": steps}
    bridge = make_sb3_vec_env(env_id, num_envs=n, **kw)
    raw = gym.make_vec(
        env_id,
        num_envs=n,
        vectorization_mode="vector_entry_point",
        array="numpy",
        autoreset_mode="same_step",
        **kw,
    )
    assert isinstance(bridge.observation_space, gym.spaces.Dict)
    bridge.seed(seed)
    obs = bridge.reset()
    robs, _ = raw.reset(seed=seed)
    assert set(obs) == {"view", "goal", "box"}
    assert obs["view"].shape == (n, 16, 16, 3) and obs["goal"].shape == (n,) and obs["box"].shape == (n, 4)
    rng = np.random.default_rng(0)
    ended = {"found": 0, "truncated": 0}
    for _ in range(3 * steps):
        actions = np.stack([raw.single_action_space.sample() for _ in range(n)])
        if env_id.endswith("Discrete-v0"):
            actions = rng.integers(0, 9, n)
        obs, rewards, dones, infos = bridge.step(actions)
        robs, rrew, term, trunc, rinfo = raw.step(actions)
        np.testing.assert_array_equal(dones, term | trunc)
        np.testing.assert_allclose(rewards, rrew, atol=1e-6)
        for k in obs:
            np.testing.assert_array_equal(obs[k], robs[k])
        for i in range(n):
            last = rinfo["final_info"] if dones[i] else rinfo
            # an ended env's info is its last step's (SB3's convention), not the new episode's
            assert infos[i]["is_success"] == bool(last["is_success"][i])
            assert infos[i]["iou"] == pytest.approx(float(last["iou"][i]))
            assert infos[i]["image_index"] == int(last["image_index"][i])
            if not dones[i]:
                assert "terminal_observation" not in infos[i]
                continue
            final = infos[i]["terminal_observation"]
            assert isinstance(final, dict) and final["view"].shape == (16, 16, 3)
            for k in final:
                np.testing.assert_array_equal(final[k], rinfo["final_obs"][k][i])
            assert infos[i]["TimeLimit.truncated"] == (not term[i])
            assert infos[i]["is_success"] == bool(term[i])
            ended["found" if term[i] else "truncated"] += 1
    assert ended["found"] > 0 and ended["truncated"] > 0


def test_ppo_trains_on_the_search_env_through_the_bridge() -> None:
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecMonitor

    venv = VecMonitor(
        make_sb3_vec_env("ImageSearch-v0", num_envs=4, max_episode_steps=8, **{**KW, "view_size": 36})
    )
    model = PPO("MultiInputPolicy", venv, n_steps=16, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=128)
    assert model.num_timesteps == 128
    assert len(model.ep_info_buffer) >= 4
    assert len(model.ep_success_buffer) >= 4  # SB3 read is_success from the episodes' last infos
