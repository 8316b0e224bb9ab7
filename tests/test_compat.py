"""Every env id in the RL codebases users bring: Gymnasium's vector modes, TorchRL, SB3, CleanRL.

The clients come with the ``compat`` extra (``pip install -c constraints.txt -e '.[dev,compat]'``,
which ``make test`` runs); a missing one fails here at import, it is never skipped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import vpt_env  # noqa: F401
from vpt_env.data.scenes import SceneSource

ROOT = Path(__file__).resolve().parents[1]
ALL_IDS = sorted(i for i, s in gym.registry.items() if str(s.entry_point).startswith("vpt_env."))
# Small sources keep each env cheap to build; the defaults are not what these tests are about.
SMALL = [np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8) for _ in range(3)]
SCENES = SceneSource(n_images=20)


def _source(env_id: str) -> object:
    return SCENES if env_id.startswith("ImageSearch") else SMALL


# -- Gymnasium: make_vec in its three modes ------------------------------------------------------

# Each multi-process check runs as a user's script would: a file that imports vpt_env at the top
# (spawned workers re-import it, which registers the ids) in a fresh interpreter with a time limit,
# so that a deadlock fails instead of hanging CI. Two torch threads, so the parent has a live
# OpenMP thread pool when Gymnasium forks (as on any machine with two or more cores); nothing but
# Gymnasium's defaults otherwise.
SCRIPT_HEAD = """
import multiprocessing
import sys

import gymnasium as gym
import numpy as np
import torch

import vpt_env  # noqa: F401
from vpt_env.data.scenes import SceneSource


def sources():
    small = [np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8) for _ in range(3)]
    scenes = SceneSource(n_images=20)
    return lambda env_id: scenes if env_id.startswith("ImageSearch") else small
"""

ASYNC_SCRIPT = """
def main():
    torch.set_num_threads(2)
    source = sources()
    methods = [None] + (["fork"] if multiprocessing.get_start_method() != "fork" else [])
    for env_id in sys.argv[1:]:
        for method in methods:
            vector_kwargs = {} if method is None else {"context": method}
            envs = gym.make_vec(
                env_id, 2, vectorization_mode="async", vector_kwargs=vector_kwargs, source=source(env_id)
            )
            envs.action_space.seed(0)
            obs, info = envs.reset(seed=0)
            for _ in range(3):
                obs, reward, terminated, truncated, info = envs.step(envs.action_space.sample())
            assert reward.shape == (2,) and envs.autoreset_mode == gym.vector.AutoresetMode.NEXT_STEP
            envs.close()
            print("ok", env_id, method or multiprocessing.get_start_method(), flush=True)


if __name__ == "__main__":
    main()
"""


def test_make_vec_async_with_gymnasiums_defaults_does_not_deadlock(tmp_path: Path) -> None:
    # On Linux Gymnasium forks its workers after building one env in the parent; the parent's
    # torch thread pool used to deadlock the children's first torch call (vpt_env/data/pool.py).
    _run_script(tmp_path, ASYNC_SCRIPT)


def _run_script(tmp_path: Path, body: str, ids: list[str] = ALL_IDS, limit_s: int = 300) -> None:
    """Run ``SCRIPT_HEAD + body`` on ``ids``; it must print ``ok <id>`` for each, within ``limit_s``."""
    script = tmp_path / "script.py"
    script.write_text(SCRIPT_HEAD + body)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    proc = subprocess.Popen(
        [sys.executable, str(script), *ids],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=limit_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the hung workers too, not only the parent
        stdout, stderr = proc.communicate()
        pytest.fail(f"hung after: {stdout!r}")
    assert proc.returncode == 0, stderr[-3000:]
    assert {line.split()[1] for line in stdout.splitlines() if line.startswith("ok ")} == set(ids)


@pytest.mark.parametrize("mode", ["sync", "vector_entry_point"])
@pytest.mark.parametrize("env_id", ALL_IDS)
def test_make_vec_sync_and_vector_entry_point(env_id: str, mode: str) -> None:
    envs = gym.make_vec(env_id, num_envs=2, vectorization_mode=mode, source=_source(env_id))
    assert envs.autoreset_mode == gym.vector.AutoresetMode.NEXT_STEP
    envs.action_space.seed(0)
    obs, info = envs.reset(seed=0)
    for _ in range(3):
        obs, reward, terminated, truncated, info = envs.step(envs.action_space.sample())
    assert tuple(reward.shape) == (2,) and "image_index" in info
    envs.close()


# -- TorchRL --------------------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_torchrl_gym_env_on_every_id(env_id: str) -> None:
    # GymEnv passes frameskip=1 first and retries without it on Python's wording of the TypeError.
    from torchrl.envs.libs.gym import GymEnv
    from torchrl.envs.utils import check_env_specs

    env = GymEnv(env_id, source=_source(env_id), view_size=16)
    check_env_specs(env, seed=0)
    rollout = env.rollout(5)
    assert rollout["next", "reward"].shape == (5, 1)
    # TorchRL names a lone uint8 image observation "pixels"; Dict keys stay as they are.
    view = rollout["next", "view" if env_id.startswith("ImageSearch") else "pixels"]
    assert view.shape == (5, 16, 16, 3)
    env.close()


@pytest.mark.parametrize("env_id", ALL_IDS)
@pytest.mark.parametrize("autoreset_mode", ["disabled", "same_step"])
def test_torchrl_gym_wrapper_over_our_vector_env(env_id: str, autoreset_mode: str) -> None:
    from torchrl.envs.libs.gym import GymWrapper
    from torchrl.envs.utils import check_env_specs

    steps = 4
    venv = gym.make_vec(
        env_id,
        num_envs=3,
        vectorization_mode="vector_entry_point",
        source=_source(env_id),
        view_size=16,
        max_episode_steps=steps,
        autoreset_mode=autoreset_mode,
    )
    env = GymWrapper(venv)
    assert env.batch_size == (3,)
    check_env_specs(env, seed=0)
    rollout = env.rollout(3 * steps, break_when_any_done=False)
    done = rollout["next", "done"].squeeze(-1)
    assert done.shape == (3, 3 * steps)
    # Every env ended (found, or truncated after 4 steps) and TorchRL reset it and went on.
    assert bool(done[:, :steps].any(dim=1).all()) and bool(done.sum(dim=1).ge(3).all())


# GymEnv(num_envs=...) builds Gymnasium's AsyncVectorEnv; TorchRL makes spawn the default start
# method, so the workers re-import the script (and with it vpt_env).
TORCHRL_ASYNC_SCRIPT = """
def main():
    from torchrl.envs.libs.gym import GymEnv  # here, not at the top: the spawned workers skip it
    from torchrl.envs.utils import check_env_specs

    torch.set_num_threads(2)
    source = sources()
    for env_id in sys.argv[1:]:
        env = GymEnv(env_id, num_envs=2, source=source(env_id), view_size=16, max_episode_steps=3)
        assert env.batch_size == (2,)
        check_env_specs(env, seed=0)
        rollout = env.rollout(7, break_when_any_done=False)
        assert rollout["next", "done"].squeeze(-1).sum().item() >= 4
        env.close()
        print("ok", env_id, multiprocessing.get_start_method(), flush=True)


if __name__ == "__main__":
    main()
"""


def test_torchrl_gym_env_with_num_envs(tmp_path: Path) -> None:
    # One id of each task, one with discrete and one with continuous actions (each spawned worker
    # imports torch: seconds per env); every id goes through GymEnv above.
    _run_script(tmp_path, TORCHRL_ASYNC_SCRIPT, ["ImageSearch-v0", "ImageViewDiscrete-v0"])


# -- stable-baselines3 ----------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_sb3_check_env_and_ppo(env_id: str) -> None:
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_checker import check_env

    kw = {"source": _source(env_id), "view_size": 36, "max_episode_steps": 32}
    check_env(gym.make(env_id, **kw), warn=True)
    policy = "MultiInputPolicy" if env_id.startswith("ImageSearch") else "CnnPolicy"
    model = PPO(policy, gym.make(env_id, **kw), n_steps=128, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=256)
    assert model.num_timesteps == 256 and len(model.ep_info_buffer) >= 1


# -- CleanRL --------------------------------------------------------------------------------------


def _cleanrl_make_env(env_id: str, episode_steps: int):
    """CleanRL's ``make_env``: a thunk building one env with its wrappers."""

    def thunk() -> gym.Env:
        env = gym.make(env_id, source=_source(env_id), view_size=16, max_episode_steps=episode_steps)
        if isinstance(env.observation_space, gym.spaces.Dict):
            env = gym.wrappers.FlattenObservation(env)
        return gym.wrappers.RecordEpisodeStatistics(env)

    return thunk


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_cleanrl_style_loop_over_sync_vector_env(env_id: str) -> None:
    """CleanRL's off-policy loop (dqn.py for discrete actions, ddpg_continuous_action.py for
    continuous ones) at a tiny budget: SyncVectorEnv, RecordEpisodeStatistics, a replay buffer that
    skips the next-step autoreset transitions, gradient steps. Episode statistics must match ours."""
    import torch
    from torch import nn

    n, episode_steps, iterations = 2, 5, 30
    envs = gym.vector.SyncVectorEnv([_cleanrl_make_env(env_id, episode_steps) for _ in range(n)])
    obs_dim = int(np.prod(envs.single_observation_space.shape))
    discrete = isinstance(envs.single_action_space, gym.spaces.Discrete)
    act_dim = int(envs.single_action_space.n) if discrete else int(envs.single_action_space.shape[0])
    torch.manual_seed(0)
    q_net = nn.Sequential(
        nn.Linear(obs_dim + (0 if discrete else act_dim), 32),
        nn.ReLU(),
        nn.Linear(32, act_dim if discrete else 1),
    )
    actor = (
        None
        if discrete
        else nn.Sequential(nn.Linear(obs_dim, 32), nn.ReLU(), nn.Linear(32, act_dim), nn.Tanh())
    )
    params = list(q_net.parameters()) + ([] if actor is None else list(actor.parameters()))
    optimizer = torch.optim.Adam(params, lr=1e-3)
    buffer: list[tuple[np.ndarray, np.ndarray, float, np.ndarray, bool]] = []

    def as_input(o: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(o.reshape(len(o), -1), dtype=torch.float32) / 255.0

    obs, _ = envs.reset(seed=0)
    envs.single_action_space.seed(0)
    autoreset = np.zeros(n, bool)
    returns, lengths = np.zeros(n), np.zeros(n, int)
    ours, recorded = [], []
    for step in range(iterations):
        with torch.no_grad():
            if discrete:
                greedy = q_net(as_input(obs)).argmax(dim=1).numpy()
                explore = np.random.default_rng(step).random(n) < 0.3
                sampled = np.array([envs.single_action_space.sample() for _ in range(n)])
                actions = np.where(explore, sampled, greedy)
            else:
                actions = actor(as_input(obs)).numpy() + 0.1 * np.random.default_rng(step).normal(
                    size=(n, act_dim)
                )
                actions = actions.clip(-1, 1).astype(np.float32)
        next_obs, rewards, terminations, truncations, infos = envs.step(actions)
        for i in range(n):
            if autoreset[i]:  # the reset step of next-step autoreset: no transition
                continue
            buffer.append((obs[i], actions[i], float(rewards[i]), next_obs[i], bool(terminations[i])))
            returns[i] += rewards[i]
            lengths[i] += 1
        if "episode" in infos:
            for i in np.nonzero(infos["_episode"])[0]:
                recorded.append((float(infos["episode"]["r"][i]), int(infos["episode"]["l"][i])))
        for i in np.nonzero(terminations | truncations)[0]:
            ours.append((float(returns[i]), int(lengths[i])))
            returns[i], lengths[i] = 0.0, 0
        autoreset = terminations | truncations
        obs = next_obs
        if len(buffer) >= 16:
            batch = [buffer[j] for j in np.random.default_rng(step).integers(0, len(buffer), 16)]
            o, a, r, o2, d = (np.stack(x) for x in zip(*batch, strict=True))
            o, o2 = as_input(o), as_input(o2)
            r, d = torch.as_tensor(r, dtype=torch.float32), torch.as_tensor(d, dtype=torch.float32)
            with torch.no_grad():
                if discrete:
                    target = r + 0.99 * (1 - d) * q_net(o2).max(dim=1).values
                else:
                    target = r + 0.99 * (1 - d) * q_net(torch.cat([o2, actor(o2)], 1))[:, 0]
            if discrete:
                q = q_net(o).gather(1, torch.as_tensor(a, dtype=torch.int64)[:, None])[:, 0]
                loss = nn.functional.mse_loss(q, target)
            else:
                q = q_net(torch.cat([o, torch.as_tensor(a, dtype=torch.float32)], 1))[:, 0]
                loss = nn.functional.mse_loss(q, target) - q_net(torch.cat([o, actor(o)], 1)).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            assert torch.isfinite(loss)
    envs.close()
    # 30 steps of at most 5-step episodes, one reset step after each: at least 5 episodes per env.
    assert len(recorded) == len(ours) >= n * (iterations // (episode_steps + 1))
    for (r1, l1), (r2, l2) in zip(sorted(recorded), sorted(ours), strict=True):
        assert l1 == l2 <= episode_steps and r1 == pytest.approx(r2, abs=1e-5)
