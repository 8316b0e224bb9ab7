"""Visual search: SB3 PPO (ImageSearch-v0) and DQN (ImageSearchDiscrete-v0) against a random policy.

Usage: ``python benchmarks/search.py [--cpu-minutes 15] [--seeds 3] [--eval-episodes 200]
[--algos ppo,dqn] [--objects MIN,MAX]``

Each algorithm trains once per seed for an equal share of its CPU budget
(``--cpu-minutes`` per algorithm, all seeds together, measured as this
process's CPU time with every thread counted, so other load on the machine
does not eat it; wall-clock time is reported too). Training steps 16 envs as
one batch through the SB3 bridge (:func:`vpt_env.wrappers.make_sb3_vec_env`)
with a small CNN (:class:`SearchExtractor`) and one torch thread. Then
every trained policy, and a uniformly random policy on the very same
episodes (same scenes, goals and starting views), plays ``--eval-episodes``
episodes from held-out episode seeds (the scenes are the training pool's).
Reported per algorithm: success rate (the view frames an object of the goal
class, IoU >= 0.5) and mean episode length, mean and standard deviation over
seeds, and the trained policy's success rate over the random policy's.

The task is the env's own (30 classes, ``found_iou`` 0.5, 50 steps, start
views of 2-10% of the scene, 36x36 views) on the benchmark scene set
:data:`SCENES`: 1-3 objects per scene instead of the env's default 2-6.
``--objects 2,6`` runs the default scenes instead (stored as e.g. ``"ppo
objects 2-6"``). Results are merged into ``--json`` (default
``benchmarks/results/search.json``) by key, so algorithms can run as separate
processes, in parallel.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

import vpt_env  # noqa: F401
from vpt_env.data.scenes import SceneSource
from vpt_env.wrappers import make_sb3_vec_env

#: Scenes of the benchmark task (the random baseline plays exactly these).
SCENES: dict[str, Any] = {"n_images": 2000, "seed": 0, "objects": (1, 3)}
DEFAULT_OBJECTS = SCENES["objects"]
#: Env arguments of the benchmark task (the rest are ImageSearch-v0's defaults).
ENV_KWARGS: dict[str, Any] = {"view_size": 36, "init_scale": (0.02, 0.1)}
#: Envs stepped as one batch while training.
TRAIN_ENVS = 16
EVAL_SEED = 1_000_000  # held-out episode seeds start here (training resets from the model seed)

PPO_KWARGS: dict[str, Any] = {
    "n_steps": 64,
    "batch_size": 256,
    "n_epochs": 4,
    "learning_rate": 5e-4,
    "gamma": 0.95,
    "gae_lambda": 0.9,
    "ent_coef": 0.0,
    "clip_range": 0.2,
}
DQN_KWARGS: dict[str, Any] = {
    "buffer_size": 100_000,
    "learning_starts": 2_000,
    "batch_size": 64,
    "learning_rate": 5e-4,
    "gamma": 0.95,
    "train_freq": 1,
    "gradient_steps": 2,
    "target_update_interval": 1_000,
    "exploration_fraction": 0.2,
    "exploration_final_eps": 0.05,
}


class SearchExtractor(BaseFeaturesExtractor):
    """A small CNN on the view, concatenated with the goal (one-hot) and the view's box."""

    def __init__(self, observation_space: gym.spaces.Dict, features: int = 128) -> None:
        view = observation_space["view"]
        channels = view.shape[0]  # SB3 hands images over channels-first
        cnn = nn.Sequential(
            nn.Conv2d(channels, 16, 5, stride=2),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            n = cnn(torch.zeros(1, *view.shape)).shape[1]
        goal = observation_space["goal"]
        goal_dim = int(goal.n) if isinstance(goal, gym.spaces.Discrete) else int(np.prod(goal.shape))
        super().__init__(observation_space, features + goal_dim + 4)
        self.cnn = nn.Sequential(cnn, nn.Linear(n, features), nn.ReLU())

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        goal = obs["goal"].float().flatten(1)
        return torch.cat([self.cnn(obs["view"]), goal, obs["box"].float()], dim=1)


class _CpuDeadline(BaseCallback):
    """Stop training once this process has used ``seconds`` of CPU time.

    ``fraction()`` is the share of the budget spent so far: the training
    schedules (DQN's exploration) run on it, since ``learn`` is given no
    step count (the budget is CPU time, not steps).
    """

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.start = time.process_time()
        self.seconds = seconds

    def fraction(self) -> float:
        return min(1.0, (time.process_time() - self.start) / self.seconds)

    def _on_step(self) -> bool:
        return self.fraction() < 1.0


def _venv(env_id: str, source: Any, n: int) -> Any:
    return make_sb3_vec_env(env_id, num_envs=n, source=source, **ENV_KWARGS)


def evaluate(
    env_id: str, source: Any, policy: Any, episodes: int, seed: int, deterministic: bool
) -> dict[str, float]:
    """Success rate and mean length of one episode in each of ``episodes`` envs (seeds ``seed + i``).

    ``policy=None`` plays uniformly random actions. The envs are seeded, so
    every policy evaluated with the same ``seed`` meets the same scenes, goals
    and starting views.
    """
    venv = _venv(env_id, source, episodes)
    venv.seed(seed)
    obs = venv.reset()
    rng = np.random.default_rng(seed)
    space = venv.action_space
    done = np.zeros(episodes, bool)
    success = np.zeros(episodes, bool)
    length = np.zeros(episodes, int)
    t = 0
    while not done.all():
        t += 1
        if policy is None:
            if isinstance(space, gym.spaces.Discrete):
                actions = rng.integers(0, space.n, episodes)
            else:
                actions = rng.uniform(space.low, space.high, (episodes, *space.shape)).astype(np.float32)
        else:
            actions, _ = policy.predict(obs, deterministic=deterministic)
        obs, _, dones, infos = venv.step(actions)
        for i in np.flatnonzero(dones & ~done):
            done[i] = True
            success[i] = bool(infos[i]["is_success"])
            length[i] = t
    venv.close()
    return {"success": float(success.mean()), "length": float(length.mean())}


def make_model(algo: str, venv: Any, seed: int) -> Any:
    """PPO (continuous actions) or DQN (discrete) with :class:`SearchExtractor`."""
    policy_kwargs: dict[str, Any] = {"features_extractor_class": SearchExtractor}
    if algo.startswith("ppo"):
        policy_kwargs["net_arch"] = {"pi": [64], "vf": [64]}
        return PPO(
            "MultiInputPolicy", venv, seed=seed, device="cpu", policy_kwargs=policy_kwargs, **PPO_KWARGS
        )
    policy_kwargs["net_arch"] = [64]
    return DQN("MultiInputPolicy", venv, seed=seed, device="cpu", policy_kwargs=policy_kwargs, **DQN_KWARGS)


ALGOS = {
    "ppo": "ImageSearch-v0",
    "dqn": "ImageSearchDiscrete-v0",
    "ppo-discrete": "ImageSearchDiscrete-v0",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cpu-minutes", type=float, default=15.0, help="CPU budget per algorithm (all seeds)"
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--eval-episodes", type=int, default=200)
    parser.add_argument("--algos", default="ppo,dqn", help=f"comma-separated, from {list(ALGOS)}")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 spends CPU time best)")
    parser.add_argument("--objects", default=None, help="objects per scene, 'min,max' (default: SCENES)")
    parser.add_argument("--json", default="benchmarks/results/search.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.objects:
        lo, hi = (int(v) for v in args.objects.split(","))
        SCENES["objects"] = (lo, hi)
    source = SceneSource(**SCENES)
    runs: dict[str, Any] = {}
    per_run = args.cpu_minutes * 60 / args.seeds
    for algo in args.algos.split(","):
        env_id = ALGOS[algo]
        deterministic = not algo.startswith("ppo")  # PPO evaluates its stochastic policy, DQN its greedy one
        rows = []
        for seed in range(args.seeds):
            venv = _venv(env_id, source, TRAIN_ENVS)
            model = make_model(algo, venv, seed)
            cpu0, wall0 = time.process_time(), time.monotonic()
            deadline = _CpuDeadline(per_run)
            if isinstance(model, DQN):
                # epsilon: 1 -> final over the first exploration_fraction of the CPU budget
                start, end, frac = 1.0, model.exploration_final_eps, model.exploration_fraction
                model.exploration_schedule = lambda _, d=deadline, a=start, b=end, f=frac: (
                    a + (b - a) * min(1.0, d.fraction() / f)
                )
            model.learn(total_timesteps=10**9, callback=deadline)
            cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
            eval_seed = EVAL_SEED + seed * 10_000
            trained = evaluate(env_id, source, model, args.eval_episodes, eval_seed, deterministic)
            random = evaluate(env_id, source, None, args.eval_episodes, eval_seed, deterministic)
            row = {
                "seed": seed,
                "steps": int(model.num_timesteps),
                "cpu_seconds": cpu,
                "wall_seconds": wall,
                "trained": trained,
                "random": random,
            }
            rows.append(row)
            print(
                f"{algo} seed {seed}: {model.num_timesteps} steps in {cpu:.0f} CPU s ({wall:.0f} s wall); "
                f"success {trained['success']:.3f} (random {random['success']:.3f}), "
                f"length {trained['length']:.1f} (random {random['length']:.1f})",
                flush=True,
            )
        t = np.array([r["trained"]["success"] for r in rows])
        r = np.array([r["random"]["success"] for r in rows])
        summary = {
            "env_id": env_id,
            "success_mean": float(t.mean()),
            "success_std": float(t.std()),
            "random_success_mean": float(r.mean()),
            "random_success_std": float(r.std()),
            "ratio": float(t.mean() / r.mean()) if r.mean() > 0 else None,
            "length_mean": float(np.mean([x["trained"]["length"] for x in rows])),
            "random_length_mean": float(np.mean([x["random"]["length"] for x in rows])),
            "steps_mean": float(np.mean([x["steps"] for x in rows])),
            "cpu_seconds": float(sum(x["cpu_seconds"] for x in rows)),
            "wall_seconds": float(sum(x["wall_seconds"] for x in rows)),
        }
        key = (
            algo
            if SCENES["objects"] == DEFAULT_OBJECTS
            else f"{algo} objects {'-'.join(map(str, SCENES['objects']))}"
        )
        settings = {
            "cpu_minutes": args.cpu_minutes,
            "seeds": args.seeds,
            "eval_episodes": args.eval_episodes,
            "eval_seed": EVAL_SEED,
            "deterministic_eval": deterministic,
            "threads": args.threads,
            "scenes": SCENES,
            "env": ENV_KWARGS,
            "train_envs": TRAIN_ENVS,
            "hyperparameters": PPO_KWARGS if algo.startswith("ppo") else DQN_KWARGS,
            "date": time.strftime("%Y-%m-%d"),
        }
        runs[key] = {"settings": settings, "summary": summary, "seeds": rows}
        print(
            f"{key} ({env_id}): success {summary['success_mean']:.3f} +- {summary['success_std']:.3f} "
            f"against random {summary['random_success_mean']:.3f} +- {summary['random_success_std']:.3f} "
            f"({summary['ratio'] or float('nan'):.2f}x); length {summary['length_mean']:.1f} "
            f"(random {summary['random_length_mean']:.1f}); {summary['steps_mean']:.0f} steps per seed, "
            f"{summary['cpu_seconds']:.0f} CPU s, {summary['wall_seconds']:.0f} s wall",
            flush=True,
        )
    # Runs of other algorithms (or scene sets) already in the file are kept, so algorithms may
    # run as separate processes (in parallel) and land in one file; the file is read just now.
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(path.read_text()) if path.exists() else {}
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "runs": {**(old.get("runs") or {}), **runs},
    }
    path.write_text(json.dumps(results, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
