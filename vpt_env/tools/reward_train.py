"""Train a short SB3 PPO agent with a reward and compare it with a random policy in the same run.

``vpt bench-reward --train-steps N`` (:mod:`agents.cli`) and
``examples/custom_reward.py`` call :func:`train_with_reward`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from vpt_env.progress import ppo_callback
from vpt_env.tools.reward_check import accepts_target

__all__ = ["torch_threads", "train_with_reward"]


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with torch's CPU threads set to ``threads`` (None: unchanged)."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _episode_returns(venv: Any, policy: Callable[[Any], Any], episodes: int, seed: int) -> list[float]:
    """Returns of the first ``episodes`` episodes of every env of an SB3 VecEnv."""
    import numpy as np

    venv.seed(seed)
    obs = venv.reset()
    n = venv.num_envs
    running = np.zeros(n)
    done_count = np.zeros(n, dtype=int)
    returns: list[float] = []
    while (done_count < episodes).any():
        obs, rewards, dones, _ = venv.step(policy(obs))
        running += rewards
        for i in np.flatnonzero(dones):
            if done_count[i] < episodes:
                returns.append(float(running[i]))
            done_count[i] += 1
            running[i] = 0.0
    return returns


def train_with_reward(
    reward: str | Callable[..., Tensor],
    source: Any = "photos",
    *,
    target: int | str | None = None,
    steps: int = 2048,
    env_id: str = "ImageViewDiscrete-v0",
    num_envs: int = 8,
    view_size: int = 36,
    episode_steps: int = 32,
    episodes: int = 2,
    seed: int = 0,
    device: str = "cpu",
    threads: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Train SB3 PPO with ``reward`` for ``steps`` env steps; compare with a random policy.

    Both policies are evaluated in the same run on the same seeds, over
    ``episodes`` episodes per env (``num_envs * episodes`` in all); the trained
    policy acts deterministically. ``threads`` sets torch's CPU threads for
    the run (None: unchanged); on a loaded 2-core machine one thread trains
    many times faster than two. ``progress`` shows PPO's env steps on stderr
    (:class:`~vpt_env.progress.Progress`).

    Returns:
        A dict: ``trained_mean``, ``trained_std``, ``random_mean``,
        ``random_std``, ``episodes``, ``train_seconds`` and the settings.
    """

    with torch_threads(threads):
        return _train(
            reward,
            source,
            target,
            steps,
            env_id,
            num_envs,
            view_size,
            episode_steps,
            episodes,
            seed,
            device,
            progress,
        )


def _train(
    reward: Any,
    source: Any,
    target: Any,
    steps: int,
    env_id: str,
    num_envs: int,
    view_size: int,
    episode_steps: int,
    episodes: int,
    seed: int,
    device: str,
    progress: bool,
) -> dict[str, Any]:
    import numpy as np
    from stable_baselines3 import PPO

    from vpt_env.wrappers import make_sb3_vec_env

    kwargs: dict[str, Any] = {"target": target} if target is not None and accepts_target(reward) else {}
    venv = make_sb3_vec_env(
        env_id,
        num_envs=num_envs,
        source=source,
        reward=reward,
        view_size=view_size,
        device=device,
        max_episode_steps=episode_steps,
        **kwargs,
    )
    try:
        rng = np.random.default_rng(seed)
        space = venv.action_space

        def random_policy(obs: Any) -> Any:
            if hasattr(space, "n"):
                return rng.integers(0, space.n, size=num_envs)
            return rng.uniform(space.low, space.high, size=(num_envs, *space.shape)).astype(np.float32)

        random_returns = _episode_returns(venv, random_policy, episodes, seed + 1000)
        n_steps = max(16, min(128, steps // num_envs))
        model = PPO(
            "CnnPolicy",
            venv,
            n_steps=n_steps,
            batch_size=min(256, n_steps * num_envs),
            n_epochs=4,
            learning_rate=3e-4,
            ent_coef=0.01,
            seed=seed,
            device=device,
            verbose=0,
        )
        start = time.perf_counter()
        model.learn(total_timesteps=steps, callback=ppo_callback(steps, enabled=progress))
        train_seconds = time.perf_counter() - start
        trained_returns = _episode_returns(
            venv, lambda obs: model.predict(obs, deterministic=True)[0], episodes, seed + 1000
        )
    finally:
        venv.close()
    return {
        "env_id": env_id,
        "num_envs": num_envs,
        "view_size": view_size,
        "episode_steps": episode_steps,
        "steps": steps,
        "episodes": len(trained_returns),
        "train_seconds": train_seconds,
        "trained_mean": float(np.mean(trained_returns)),
        "trained_std": float(np.std(trained_returns)),
        "random_mean": float(np.mean(random_returns)),
        "random_std": float(np.std(random_returns)),
    }
