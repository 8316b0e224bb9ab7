"""Every registered env id: API checks, determinism, pickling, bad input, SB3."""

from __future__ import annotations

import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.error import ResetNeeded
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import vpt_env
from vpt_env.core.dynamics import DISCRETE_ACTIONS, discrete_to_action, reset_state, step_state
from vpt_env.core.state import EnvParams, ViewState

# The image-view ids; the search ids (which need boxes) have tests/test_search.py.
ENV_IDS = sorted(
    env_id
    for env_id, spec in gym.registry.items()
    if isinstance(spec.entry_point, str) and spec.entry_point.startswith("vpt_env.envs.image_view")
)
# A small array source keeps env creation cheap where the photos are not the point.
RNG = np.random.default_rng(0)
SMALL = [RNG.integers(0, 256, (96, 128, 3), dtype=np.uint8) for _ in range(3)]


def test_registry_has_both_ids() -> None:
    assert {"ImageView-v0", "ImageViewDiscrete-v0"} <= set(ENV_IDS)
    for env_id in ENV_IDS:
        assert gym.spec(env_id).max_episode_steps == vpt_env.MAX_EPISODE_STEPS


@pytest.mark.parametrize("obs_mode", ["view", "dict"])
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_gymnasium_and_sb3_check_env_without_warnings(env_id: str, obs_mode: str, device) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env = gym.make(env_id, obs_mode=obs_mode, render_mode="rgb_array", device=device)
        check_env(env.unwrapped, skip_render_check=False)
        sb3_check_env(gym.make(env_id, obs_mode=obs_mode, device=device), warn=True)


def _rollout(env: gym.Env, seed: int, steps: int) -> list:
    env.action_space.seed(seed)
    out = [env.reset(seed=seed)]
    for _ in range(steps):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        out.append((obs, reward, terminated, truncated, info))
        if terminated or truncated:
            out.append(env.reset())
    return out


def _assert_same(a, b) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, tuple | list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y)
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_same_seed_same_trajectory_over_100_steps(env_id: str, device) -> None:
    kw = {"reward": "coverage", "target": "cat", "obs_mode": "dict", "device": device}
    a = _rollout(gym.make(env_id, max_episode_steps=40, **kw), seed=7, steps=100)
    b = _rollout(gym.make(env_id, max_episode_steps=40, **kw), seed=7, steps=100)
    _assert_same(a, b)
    c = _rollout(gym.make(env_id, max_episode_steps=40, **kw), seed=8, steps=5)
    assert not np.array_equal(a[0][0]["view"], c[0][0]["view"])


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_pickled_env_continues_identically(env_id: str) -> None:
    env = gym.make(env_id, source=SMALL)
    env.action_space.seed(3)
    env.reset(seed=3)
    env.step(env.action_space.sample())
    clone = pickle.loads(pickle.dumps(env))
    actions = [env.action_space.sample() for _ in range(10)]
    for act in actions:
        _assert_same(env.step(act), clone.step(act))
    _assert_same(env.reset(), clone.reset())


def test_unknown_keyword_is_a_type_error_naming_it() -> None:
    with pytest.raises(TypeError, match="colour_jitter"):
        gym.make("ImageView-v0", source=SMALL, colour_jitter=True)


# Every registered id, the search ids included: the keyword check runs before any image is loaded.
ALL_IDS = sorted(i for i, s in gym.registry.items() if str(s.entry_point).startswith("vpt_env."))


@pytest.mark.parametrize("env_id", ALL_IDS)
@pytest.mark.parametrize("vector", [False, True])
def test_unknown_keyword_reads_as_pythons_own_error_then_lists_the_accepted_ones(
    env_id: str, vector: bool
) -> None:
    # TorchRL's GymEnv passes frameskip=1 and retries without it only when the
    # error contains Python's wording "unexpected keyword argument 'frameskip'".
    spec = gym.spec(env_id)
    entry = spec.vector_entry_point if vector else spec.entry_point
    cls = entry.split(":")[1]
    with pytest.raises(TypeError) as err:
        if vector:
            gym.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point", frameskip=1)
        else:
            gym.make(env_id, frameskip=1)
    msg = str(err.value)
    assert msg.startswith(f"{cls}.__init__() got an unexpected keyword argument 'frameskip'"), msg
    assert "accepted:" in msg and "'view_size'" in msg and "'source'" in msg
    with pytest.raises(TypeError) as err:
        gym.make(env_id, frameskip=1, colour=2)
    # Each unknown keyword in Python's wording, so a client may look for any of them.
    for name in ("frameskip", "colour"):
        assert f"unexpected keyword argument '{name}'" in str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"view_size": 3}, "view_size"),
        ({"view_size": 2048}, "view_size"),
        ({"max_pan": -1.0}, "max_pan"),
        ({"max_log_zoom": float("nan")}, "max_log_zoom"),
        ({"min_box_size": 0.0}, "min_box_size"),
        ({"init_scale": (0.9, 0.1)}, "init_scale"),
        ({"augmentations": ("brightness", "sharpness")}, "augmentations"),
        ({"aug_ranges": {"hue": (-0.7, 0.1)}}, "hue"),
        ({"interpolation": "bicubic"}, "interpolation"),
        ({"obs_mode": "pixels"}, "obs_mode"),
        ({"render_mode": "ansi"}, "render_mode"),
        ({"reward": "nonexistent"}, "reward"),
        ({"max_image_side": 4}, "max_image_side"),
    ],
)
@pytest.mark.filterwarnings("ignore:.*render_mode")
def test_out_of_range_parameters_raise_value_error_naming_them(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        gym.make("ImageView-v0", source=SMALL, **kwargs)


def test_wrong_types_raise_type_error() -> None:
    with pytest.raises(TypeError, match="view_size"):
        gym.make("ImageView-v0", source=SMALL, view_size=64.0)
    with pytest.raises(TypeError, match="params"):
        gym.make("ImageView-v0", source=SMALL, params={"view_size": 32})
    with pytest.raises(TypeError, match="strict"):
        gym.make("ImageView-v0", source=SMALL, strict="yes")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_actions_raise(bad: float) -> None:
    env = gym.make("ImageView-v0", source=SMALL)
    env.reset(seed=0)
    action = np.zeros(env.action_space.shape, np.float32)
    action[2] = bad
    with pytest.raises(ValueError, match="finite"):
        env.step(action)


def test_finite_float64_actions_are_clipped_not_refused() -> None:
    env = gym.make("ImageView-v0", source=SMALL)
    k = env.action_space.shape[0]
    env.reset(seed=0)
    huge = np.array([1e308, -1e308] + [0.0] * (k - 2), np.float64)  # finite, beyond float32's range
    _, _, _, _, info = env.step(huge)
    env.reset(seed=0)
    _, _, _, _, clipped = env.step(np.array([1.0, -1.0] + [0.0] * (k - 2), np.float32))
    np.testing.assert_array_equal(info["box"], clipped["box"])


def test_wrong_action_shape_raises() -> None:
    env = gym.make("ImageView-v0", source=SMALL)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(3, np.float32))


def test_actions_outside_the_space_are_clipped() -> None:
    big = np.full(11, 5.0, np.float32)
    a = gym.make("ImageView-v0", source=SMALL, disable_env_checker=True)
    b = gym.make("ImageView-v0", source=SMALL, disable_env_checker=True)
    a.reset(seed=1)
    b.reset(seed=1)
    _assert_same(a.step(big), b.step(np.clip(big, -1, 1)))


@pytest.mark.parametrize("bad", [9, -1, 1.5, "left"])
def test_invalid_discrete_actions_raise(bad) -> None:
    env = gym.make("ImageViewDiscrete-v0", source=SMALL, disable_env_checker=True)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(bad)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_step_before_reset_raises_reset_needed(env_id: str) -> None:
    with pytest.raises(ResetNeeded):
        gym.make(env_id, source=SMALL).step(gym.make(env_id, source=SMALL).action_space.sample())
    raw = gym.make(env_id, source=SMALL).unwrapped
    with pytest.raises(ResetNeeded):
        raw.step(raw.action_space.sample())


def test_reset_options() -> None:
    env = gym.make("ImageView-v0", source=SMALL)
    _, info = env.reset(seed=0, options={"image_index": 2})
    assert info["image_index"] == 2
    with pytest.raises(ValueError, match="image_index"):
        env.reset(options={"image_index": 3})
    with pytest.raises(ValueError, match="colour"):
        env.reset(options={"colour": 1})


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_reset_options_must_be_a_dict(env_id: str) -> None:
    env = gym.make(env_id, source=SMALL)
    vec = gym.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point", source=SMALL)
    for e in (env, vec):
        with pytest.raises(TypeError, match=r"options must be a dict.*got str 'image_index'"):
            e.reset(seed=0, options="image_index")
    assert env.reset(seed=0, options={"image_index": 1})[1]["image_index"] == 1


def test_unavailable_device_is_a_value_error_naming_it() -> None:
    from vpt_env import TransitionSampler

    # A CPU build (this set-up) has no CUDA; with CUDA, one index past the last device.
    cuda = "cuda" if not torch.cuda.is_available() else f"cuda:{torch.cuda.device_count()}"
    for device in (cuda, "gpu", 3):
        with pytest.raises(ValueError, match=r"device.*available: \['cpu'"):
            gym.make("ImageView-v0", source=SMALL, device=device)
        with pytest.raises(ValueError, match="device"):
            gym.make_vec("ImageView-v0", num_envs=2, vectorization_mode="vector_entry_point", device=device)
        with pytest.raises(ValueError, match="device"):
            TransitionSampler(SMALL, device=device)


def test_dict_observation_matches_info_and_space() -> None:
    env = gym.make("ImageView-v0", obs_mode="dict", source=SMALL)
    obs, info = env.reset(seed=0)
    for _ in range(20):
        assert env.observation_space.contains(obs)
        np.testing.assert_array_equal(obs["box"], info["box"])
        np.testing.assert_array_equal(obs["aug"], info["aug"])
        box = obs["box"]
        assert 0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1
        obs, _, _, _, info = env.step(env.action_space.sample())


def test_info_cumulant_only_for_annotated_sources() -> None:
    env = gym.make("ImageView-v0")  # embedded photos, annotated
    _, info = env.reset(seed=0, options={"image_index": 2})  # chelsea: the cat fills most of it
    cum = info["cumulant"]
    assert cum.shape == (len(env.unwrapped.pool.annotations.classes),)
    assert cum.sum() == pytest.approx(1.0, abs=1e-5) or cum.sum() == 0.0
    _, info = gym.make("ImageView-v0", source=SMALL).reset(seed=0)
    assert "cumulant" not in info


def test_render_draws_the_box_on_the_whole_image() -> None:
    img = np.full((200, 300, 3), 40, np.uint8)
    env = gym.make("ImageView-v0", source=[img], render_mode="rgb_array")
    _, info = env.reset(seed=0)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.shape == (200, 300, 3)
    x0, y0, x1, y1 = info["box"]
    red = (frame[..., 0] == 255) & (frame[..., 1] == 0)
    ys, xs = np.nonzero(red)
    assert abs(xs.min() - x0 * 300) <= 1 and abs(xs.max() - (x1 * 300 - 1)) <= 1
    assert abs(ys.min() - y0 * 200) <= 1 and abs(ys.max() - (y1 * 200 - 1)) <= 1


def _state(box: list[float], aug: list[float] | None = None) -> ViewState:
    a = torch.tensor([aug or [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]])
    zero = torch.tensor([0])
    return ViewState(zero, torch.tensor([box]), a, zero, key=torch.tensor([5]), episode=zero)


HW = torch.tensor([[100.0, 100.0]])


def test_continuous_transition_by_hand() -> None:
    p = EnvParams(max_pan=0.5, max_log_zoom=np.log(2.0), max_log_aspect=0.0)
    s = _state([0.2, 0.2, 0.6, 0.6])
    act = torch.zeros(1, p.action_dim)
    act[0, 0] = 1.0  # pan right by half the box width: +0.2
    nxt = step_state(p, s, act, HW)
    torch.testing.assert_close(nxt.box, torch.tensor([[0.4, 0.2, 0.8, 0.6]]))
    act = torch.zeros(1, p.action_dim)
    act[0, 2] = 1.0  # zoom in: sides halve about the centre (0.4, 0.4)
    act[0, 4] = 1.0  # brightness -> top of its range
    nxt = step_state(p, s, act, HW)
    torch.testing.assert_close(nxt.box, torch.tensor([[0.3, 0.3, 0.5, 0.5]]))
    assert nxt.aug[0, 0].item() == pytest.approx(1.4)
    assert nxt.t.item() == 1


def test_transition_keeps_boxes_valid_and_aspect_bounded() -> None:
    p = EnvParams(max_aspect=2.0, max_log_aspect=1.0, max_log_zoom=1.0, max_pan=2.0)
    g = torch.Generator().manual_seed(0)
    hw = torch.tensor([[100.0, 300.0], [400.0, 50.0]])
    s = reset_state(p, hw, torch.arange(128), torch.zeros(128, dtype=torch.int64), torch.tensor([0, 1] * 64))
    for _ in range(50):
        act = torch.rand(128, p.action_dim, generator=g) * 2 - 1
        s = step_state(p, s, act, hw)
        b = s.box
        assert bool(((b >= 0) & (b <= 1)).all())
        w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        assert bool((w >= p.min_box_size - 1e-6).all() and (h >= p.min_box_size - 1e-6).all())
        aspect = w * hw[s.image, 1] / (h * hw[s.image, 0])
        # The bound holds unless a side hit the image edge.
        free = (w < 1 - 1e-6) & (h < 1 - 1e-6) & (w > p.min_box_size + 1e-6) & (h > p.min_box_size + 1e-6)
        assert bool((aspect[free] <= 2.0 + 1e-3).all() and (aspect[free] >= 0.5 - 1e-3).all())


def test_discrete_actions_map_onto_the_continuous_transition() -> None:
    p = EnvParams()
    aug = [1.2, 0.8, 1.1, 0.05, 0.0, 0.0, 0.5]
    s = _state([0.3, 0.3, 0.6, 0.6], aug)
    results = {}
    for i, name in enumerate(DISCRETE_ACTIONS):
        act = discrete_to_action(p, s, torch.tensor([i]))
        assert act.shape == (1, p.action_dim)
        results[name] = step_state(p, s, act, HW)
    cx = lambda st: float(st.box[0, 0] + st.box[0, 2]) / 2  # noqa: E731
    cy = lambda st: float(st.box[0, 1] + st.box[0, 3]) / 2  # noqa: E731
    side = lambda st: float(st.box[0, 2] - st.box[0, 0])  # noqa: E731
    torch.testing.assert_close(results["no-op"].box, s.box)
    torch.testing.assert_close(results["no-op"].aug, s.aug)
    assert cx(results["pan left"]) < cx(s) < cx(results["pan right"])
    assert cy(results["pan up"]) < cy(s) < cy(results["pan down"])
    assert side(results["zoom in"]) < side(s) < side(results["zoom out"])
    assert results["flip"].aug[0, 5].item() == 1.0
    torch.testing.assert_close(results["flip"].aug[0, :5], s.aug[0, :5])
    assert not torch.allclose(results["change augmentation"].aug, s.aug)
    torch.testing.assert_close(results["change augmentation"].box, s.box)


def test_sb3_ppo_runs_256_steps_on_the_discrete_env() -> None:
    from stable_baselines3 import PPO

    env = gym.make("ImageViewDiscrete-v0", source=SMALL, reward="zero")
    model = PPO("CnnPolicy", env, n_steps=128, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=256)
    assert model.num_timesteps == 256
    action, _ = model.predict(env.reset(seed=0)[0], deterministic=True)
    assert env.action_space.contains(int(action))
