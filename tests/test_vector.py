"""The vector env against N single envs, its Gymnasium semantics, the SB3 bridge."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.error import ResetNeeded

import vpt_env  # noqa: F401
from vpt_env.data.pool import ImagePool
from vpt_env.data.sources import load_images
from vpt_env.envs.vector import ImageViewVectorEnv

N = 6
SMALL = [np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(3)]


@pytest.fixture(scope="module")
def photos_pool() -> ImagePool:
    images, annotations = load_images("photos")
    return ImagePool(images, annotations)


def _vec(env_id: str, n: int = N, **kw):
    return gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point", **kw)


@pytest.mark.parametrize("env_id", ["ImageView-v0", "ImageViewDiscrete-v0"])
def test_vector_env_equals_n_single_envs_over_200_steps(env_id: str, device: torch.device) -> None:
    images, annotations = load_images("photos", min_side=32)
    pool = ImagePool(images, annotations, device=device)  # one copy of the images for all 7 envs
    kw = {
        "source": pool,
        "reward": "coverage",
        "target": "cat",
        "obs_mode": "dict",
        "device": device,
        "max_episode_steps": 30,
        "view_size": 32,
    }
    venv = _vec(env_id, **kw)
    singles = [gym.make(env_id, **kw) for _ in range(N)]
    obs, info = venv.reset(seed=11)
    single_obs = [e.reset(seed=11 + i) for i, e in enumerate(singles)]
    for i, (o, _inf) in enumerate(single_obs):
        np.testing.assert_array_equal(obs["box"][i].cpu().numpy(), o["box"])
        assert np.abs(obs["view"][i].cpu().numpy().astype(int) - o["view"].astype(int)).max() <= 1
    rng = np.random.default_rng(0)
    pending = np.zeros(N, dtype=bool)
    resets = 0
    for _ in range(200):
        if env_id == "ImageViewDiscrete-v0":
            actions = rng.integers(0, 9, N)
        else:
            actions = rng.uniform(-1.3, 1.3, (N, venv.single_action_space.shape[0])).astype(np.float32)
        obs, rew, term, trunc, _info = venv.step(actions)
        for i, e in enumerate(singles):
            if pending[i]:  # NEXT_STEP autoreset: this step resets env i
                o, _ = e.reset()
                r, te, tr = 0.0, False, False
                resets += 1
            else:
                o, r, te, tr, _ = e.step(actions[i])
            np.testing.assert_array_equal(obs["box"][i].cpu().numpy(), o["box"])
            np.testing.assert_array_equal(obs["aug"][i].cpu().numpy(), o["aug"])
            assert np.abs(obs["view"][i].cpu().numpy().astype(int) - o["view"].astype(int)).max() <= 1
            assert float(rew[i]) == pytest.approx(r, abs=1e-6)
            assert bool(term[i]) == te and bool(trunc[i]) == tr
        pending = (term | trunc).cpu().numpy()
    assert resets >= N * 5


def test_next_step_autoreset_semantics() -> None:
    venv = _vec("ImageView-v0", n=3, max_episode_steps=2, array="numpy")
    assert venv.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    venv.reset(seed=0)
    zeros = np.zeros((3, 11), np.float32)
    _, _, _, trunc, _ = venv.step(zeros)
    assert not trunc.any()
    last, _, _, trunc, info = venv.step(zeros)
    assert trunc.all()
    obs, rew, term, trunc, _info = venv.step(zeros)  # the reset step
    assert not (term.any() or trunc.any()) and (rew == 0).all()
    assert not np.array_equal(obs, last)
    assert isinstance(obs, np.ndarray) and venv.observation_space.contains(obs)


def test_same_step_autoreset_reports_final_observation() -> None:
    venv = _vec("ImageView-v0", n=2, max_episode_steps=1, array="numpy", autoreset_mode="same_step")
    venv.reset(seed=0)
    obs, _rew, _term, trunc, info = venv.step(np.zeros((2, 11), np.float32))
    assert trunc.all() and info["_final_obs"].all()
    assert info["final_obs"].shape == obs.shape and not np.array_equal(info["final_obs"], obs)
    np.testing.assert_array_equal(info["final_info"]["image_index"].shape, (2,))


@pytest.mark.parametrize(
    "mode", [None, "next_step", "same_step", "disabled", gym.vector.AutoresetMode.DISABLED]
)
def test_autoreset_mode_is_an_attribute_as_on_gymnasiums_vector_envs(mode) -> None:
    # TorchRL reads envs.autoreset_mode (not metadata) and prefers DISABLED.
    kw = {} if mode is None else {"autoreset_mode": mode}
    venv = _vec("ImageView-v0", n=2, source=[np.zeros((32, 32, 3), np.uint8)], **kw)
    names = {"next_step": "NEXT_STEP", "same_step": "SAME_STEP", "disabled": "DISABLED"}
    expected = (
        mode
        if isinstance(mode, gym.vector.AutoresetMode)
        else gym.vector.AutoresetMode[names[mode or "next_step"]]
    )
    assert venv.autoreset_mode == expected and venv.metadata["autoreset_mode"] == expected
    same = _vec("ImageView-v0", n=2, source=[np.zeros((32, 32, 3), np.uint8)], autoreset_mode=expected.value)
    assert same.autoreset_mode == expected  # Gymnasium's own values ("Disabled") work too


def test_disabled_autoreset_matches_gymnasiums_sync_vector_env() -> None:
    n, steps = 3, 3
    kw = {"source": SMALL, "reward": "zero", "view_size": 16, "obs_mode": "dict"}
    ours = _vec("ImageView-v0", n=n, max_episode_steps=steps, array="numpy", autoreset_mode="disabled", **kw)
    theirs = gym.vector.SyncVectorEnv(
        [lambda: gym.make("ImageView-v0", max_episode_steps=steps, **kw)] * n,
        autoreset_mode=gym.vector.AutoresetMode.DISABLED,
    )
    a, _ = ours.reset(seed=5)
    b, _ = theirs.reset(seed=5)
    rng = np.random.default_rng(0)
    reset_mask = np.array([True, False, True])
    for t in range(2 * steps):
        if t == steps:  # every env ended at once: reset two of them, keep the third ended
            a, _ = ours.reset(options={"reset_mask": reset_mask})
            b, _ = theirs.reset(options={"reset_mask": reset_mask})
            np.testing.assert_array_equal(a["box"], b["box"])
            with pytest.raises(ResetNeeded, match=r"\[1\]"):
                ours.step(np.zeros((n, 11), np.float32))  # env 1 ended and was not reset
            a, _ = ours.reset(options={"reset_mask": ~reset_mask})
            b, _ = theirs.reset(options={"reset_mask": ~reset_mask})
        actions = rng.uniform(-1, 1, (n, 11)).astype(np.float32)
        a, ra, ta, tra, _ = ours.step(actions)
        b, rb, tb, trb, _ = theirs.step(actions)
        np.testing.assert_array_equal(a["box"], b["box"])
        assert np.abs(a["view"].astype(int) - b["view"].astype(int)).max() <= 1
        np.testing.assert_array_equal(ta, tb)
        np.testing.assert_array_equal(tra, trb)
        assert tra.all() == (t % steps == steps - 1)  # no env was reset by stepping it


def test_observation_formats_and_spaces(device: torch.device) -> None:
    venv = _vec("ImageView-v0", n=4, obs_format="float", view_size=32, device=device)
    obs, info = venv.reset(seed=0)
    assert obs.shape == (4, 3, 32, 32) and obs.dtype == torch.float32 and obs.device.type == device.type
    assert float(obs.min()) >= 0 and float(obs.max()) <= 1
    assert venv.single_observation_space.shape == (3, 32, 32)
    venv = _vec("ImageView-v0", n=4, array="numpy", obs_mode="dict")
    obs, info = venv.reset(seed=0)
    assert venv.observation_space.contains(obs)
    assert set(info) >= {"image_index", "_image_index", "box", "aug", "cumulant"}
    u8 = _vec("ImageView-v0", n=4, augmentations=(), interpolation="nearest")
    assert u8.reset(seed=0)[0].dtype == torch.uint8


def test_partial_reset_and_image_index(photos_pool: ImagePool) -> None:
    venv = ImageViewVectorEnv(4, photos_pool, array="numpy", obs_mode="dict")
    _obs, _ = venv.reset(seed=0)
    venv.step(np.zeros((4, 11), np.float32))
    moved = venv.state.box.clone()
    mask = np.array([True, False, True, False])
    _obs2, info = venv.reset(options={"reset_mask": mask, "image_index": [1, 1, 2, 2]})
    assert info["image_index"][0] == 1 and info["image_index"][2] == 2
    torch.testing.assert_close(venv.state.box[~torch.from_numpy(mask)], moved[~torch.from_numpy(mask)])
    assert (venv.state.t.numpy() == np.array([0, 1, 0, 1])).all()


def test_unvalidated_nan_actions_are_read_as_zero(photos_pool: ImagePool) -> None:
    """validate=False skips the check (no host synchronisation) but must not crash on NaN."""
    fast, checked = ImageViewVectorEnv(2, photos_pool, validate=False), ImageViewVectorEnv(2, photos_pool)
    fast.reset(seed=0)
    checked.reset(seed=0)
    bad = torch.zeros(2, 11)
    bad[0, :4] = torch.tensor([float("nan"), float("inf"), float("-inf"), 0.5])
    fast.step(bad)
    checked.step(torch.tensor([[0.0, 1.0, -1.0, 0.5] + [0.0] * 7, [0.0] * 11]))
    torch.testing.assert_close(fast.state.box, checked.state.box, rtol=0, atol=0)


def test_bad_input_vector(photos_pool: ImagePool) -> None:
    venv = ImageViewVectorEnv(3, photos_pool)
    with pytest.raises(ResetNeeded):
        venv.step(np.zeros((3, 11), np.float32))
    venv.reset(seed=0)
    bad = np.zeros((3, 11), np.float32)
    bad[1, 0] = np.nan
    with pytest.raises(ValueError, match=r"finite.*\[1\]"):
        venv.step(bad)
    with pytest.raises(ValueError, match="shape"):
        venv.step(np.zeros((2, 11), np.float32))
    for kwargs, name in (
        ({"num_envs": 0}, "num_envs"),
        ({"obs_format": "half"}, "obs_format"),
        ({"array": "jax"}, "array"),
        ({"autoreset_mode": "sometimes"}, "autoreset_mode"),
        ({"max_episode_steps": 0}, "max_episode_steps"),
    ):
        with pytest.raises(ValueError, match=name):
            ImageViewVectorEnv(source=photos_pool, **{"num_envs": 2, **kwargs})
    with pytest.raises(TypeError, match="colour"):
        ImageViewVectorEnv(2, photos_pool, colour=1)
    disc = _vec("ImageViewDiscrete-v0", n=2, source=photos_pool)
    disc.reset(seed=0)
    with pytest.raises(ValueError, match=r"\[0, 9\)"):
        disc.step(np.array([0, 9]))


def test_render_grid() -> None:
    venv = _vec("ImageView-v0", n=5, render_mode="rgb_array", view_size=16)
    venv.reset(seed=0)
    frame = venv.render()
    assert frame.dtype == np.uint8 and frame.shape == (2 + 2 * 18, 2 + 3 * 18, 3)


def test_sb3_ppo_trains_through_the_bridge() -> None:
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecMonitor

    from vpt_env.wrappers import make_sb3_vec_env

    venv = VecMonitor(
        make_sb3_vec_env("ImageViewDiscrete-v0", num_envs=4, view_size=36, max_episode_steps=20)
    )
    model = PPO("CnnPolicy", venv, n_steps=32, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=256)
    assert model.num_timesteps == 256
    assert len(model.ep_info_buffer) >= 4  # episodes of 20 steps ended and were reset by the bridge
    raw = make_sb3_vec_env("ImageView-v0", num_envs=2, view_size=36, max_episode_steps=1)
    raw.reset()
    obs, _rew, dones, infos = raw.step(np.zeros((2, 11), np.float32))
    assert dones.all() and infos[0]["TimeLimit.truncated"] is True
    assert infos[0]["terminal_observation"].shape == (36, 36, 3)
    assert not np.array_equal(infos[0]["terminal_observation"], obs[0])
