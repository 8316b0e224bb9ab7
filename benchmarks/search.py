"""Visual search: SB3 PPO (ImageSearch-v0) and DQN (ImageSearchDiscrete-v0) against a random policy.

Usage: ``python benchmarks/search.py [--minutes 15] [--seeds 3] [--eval-episodes 100]``

Each algorithm trains once per seed for an equal share of the CPU budget
(wall-clock minutes on this machine), then every policy, and a random
policy in the same run, plays ``--eval-episodes`` episodes on held-out seeds.
Reported: success rate (the view frames the goal, IoU >= 0.5) and mean
episode length, mean and standard deviation over seeds, and each trained
policy's success rate over the random policy's. Writes JSON under
``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv

import vpt_env  # noqa: F401
from vpt_env.data.scenes import SceneSource

VIEW = 36
SCENES = {"n_images": 2000, "seed": 0}


class _Deadline(BaseCallback):
    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.end = time.monotonic() + seconds

    def _on_step(self) -> bool:
        return time.monotonic() < self.end


def _make(env_id: str, source: Any) -> Any:
    return lambda: gym.make(env_id, source=source, view_size=VIEW)


def evaluate(env_id: str, source: Any, policy: Any, episodes: int, seed: int) -> dict[str, float]:
    """Success rate and mean length over ``episodes`` (``policy=None``: uniform random actions)."""
    env = gym.make(env_id, source=source, view_size=VIEW)
    env.action_space.seed(seed)
    wins, lengths = 0, []
    for ep in range(episodes):
        obs, _ = env.reset(seed=10_000 + seed * 1000 + ep)
        for t in range(1, 10_000):
            if policy is None:
                action = env.action_space.sample()
            else:
                action, _ = policy.predict(obs, deterministic=False)
            obs, _, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                wins += bool(info["is_success"])
                lengths.append(t)
                break
    return {"success": wins / episodes, "length": float(np.mean(lengths))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=15.0, help="training budget per algorithm")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--eval-episodes", type=int, default=100)
    parser.add_argument("--algos", default="ppo,dqn")
    parser.add_argument("--json", default="benchmarks/results/search.json")
    args = parser.parse_args()
    source = SceneSource(**SCENES)
    results: dict[str, Any] = {"settings": {**vars(args), "view_size": VIEW, "scenes": SCENES}, "runs": {}}
    per_run = args.minutes * 60 / args.seeds
    for algo in args.algos.split(","):
        env_id = "ImageSearch-v0" if algo == "ppo" else "ImageSearchDiscrete-v0"
        rows = []
        for seed in range(args.seeds):
            venv = DummyVecEnv([_make(env_id, source) for _ in range(8 if algo == "ppo" else 4)])
            if algo == "ppo":
                model = PPO("MultiInputPolicy", venv, n_steps=128, batch_size=256, seed=seed, device="cpu")
            else:
                model = DQN(
                    "MultiInputPolicy",
                    venv,
                    buffer_size=50_000,
                    learning_starts=2_000,
                    exploration_fraction=0.3,
                    train_freq=4,
                    seed=seed,
                    device="cpu",
                )
            start = time.monotonic()
            model.learn(total_timesteps=10**9, callback=_Deadline(per_run))
            trained = evaluate(env_id, source, model, args.eval_episodes, seed)
            random = evaluate(env_id, source, None, args.eval_episodes, seed)
            row = {
                "seed": seed,
                "steps": model.num_timesteps,
                "train_seconds": time.monotonic() - start,
                "trained": trained,
                "random": random,
            }
            rows.append(row)
            print(
                f"{algo} seed {seed}: {model.num_timesteps} steps in {row['train_seconds']:.0f} s; "
                f"success {trained['success']:.2f} (random {random['success']:.2f}), "
                f"length {trained['length']:.1f} (random {random['length']:.1f})",
                flush=True,
            )
        t = np.array([r["trained"]["success"] for r in rows])
        r = np.array([r["random"]["success"] for r in rows])
        summary = {
            "success_mean": float(t.mean()),
            "success_std": float(t.std()),
            "random_success_mean": float(r.mean()),
            "random_success_std": float(r.std()),
            "ratio": float(t.mean() / max(r.mean(), 1e-9)),
            "length_mean": float(np.mean([x["trained"]["length"] for x in rows])),
            "random_length_mean": float(np.mean([x["random"]["length"] for x in rows])),
        }
        results["runs"][algo] = {"seeds": rows, "summary": summary}
        print(
            f"{algo}: success {summary['success_mean']:.2f} +- {summary['success_std']:.2f} against random "
            f"{summary['random_success_mean']:.2f} +- {summary['random_success_std']:.2f} "
            f"({summary['ratio']:.2f}x); length {summary['length_mean']:.1f} "
            f"(random {summary['random_length_mean']:.1f})",
            flush=True,
        )
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
