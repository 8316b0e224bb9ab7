"""An exported AB encoder as the features extractor of SB3 PPO on ImageSearch-v0, against a random one.

Usage: ``python examples/pretrained_encoder_in_sb3.py [--encoder encoder.safetensors] [--ppo-steps 20000]``

Without ``--encoder`` it first pre-trains one (``--method``, ``--pretrain-steps``)
on the embedded scenes and exports it. Then PPO trains twice with the same
seed and budget: once with the pre-trained encoder in
:class:`agents.sb3.EncoderFeaturesExtractor` (one line of
``policy_kwargs``), once with a randomly initialised encoder of the same
architecture; both play the same held-out episodes. The table gives PPO's
seconds and the evaluation's apart.

Time: the defaults (50 pre-training steps, 1,024 PPO steps per arm, 10
episodes per arm) took 6 min 23 s on the 2-core development CPU while another
job kept one core busy (2026-12-03: pre-training 161 s, PPO 67 s and 19 s,
evaluation 17 s and 99 s). They show the plumbing, not a difference between
the encoders: at this budget both policies are still near random. For that,
give PPO tens of thousands of steps (2,048 steps took about 105 s per arm
on the same machine).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv

import vpt_env  # noqa: F401  (registers the envs)
from agents.config_cli import add_dataclass_arguments, dataclass_from_args
from agents.encoders import make_encoder
from agents.export import load_encoder, save_encoder
from agents.pretrain import DataConfig, pretrain
from agents.sb3 import EncoderFeaturesExtractor
from agents.systems import SystemConfig
from agents.trainer import TrainConfig
from vpt_env.data.scenes import SceneSource
from vpt_env.progress import ppo_callback, track


@dataclass
class Args:
    """Example settings."""

    encoder: str | None = None
    """An exported encoder (.safetensors / .pt) or run directory; None: pre-train one first."""
    method: str = "abclip"
    """Pre-training method when no --encoder is given."""
    pretrain_steps: int = 50
    """Pre-training steps when no --encoder is given."""
    width: int = 16
    """Channel width of the pre-trained CNN encoder when no --encoder is given."""
    ppo_steps: int = 1024
    """PPO env steps per arm."""
    view_size: int = 32
    """Side of the search views (and of the pre-training views)."""
    scenes: int = 500
    """Embedded scenes the search runs on."""
    episodes: int = 10
    """Held-out evaluation episodes per arm."""
    freeze: bool = False
    """Keep the encoder's weights fixed during PPO (only the policy heads learn)."""
    seed: int = 0
    """PPO and evaluation seed (the random encoder's too)."""
    out: str = "runs/example_sb3"
    """Folder for the pre-training run and the exported encoder."""
    threads: int = 2
    """Torch CPU threads."""
    progress: bool = True
    """Show pre-training, PPO and the evaluation on stderr: a bar on a terminal, else a line every 10 s."""


def _encoder(args: Args) -> Any:
    if args.encoder is not None:
        return load_encoder(args.encoder)
    out = Path(args.out)
    pretrain(
        DataConfig(source="scenes", max_images=2000, view_size=args.view_size),
        SystemConfig(args.method, encoder_kwargs={"width": args.width}),
        TrainConfig(
            steps=args.pretrain_steps,
            batch_size=64,
            lr=2e-3,
            out_dir=str(out / "pretrain"),
            progress=args.progress,
        ),
    )
    path = save_encoder(load_encoder(out / "pretrain"), out / "encoder.safetensors")
    print(f"pre-trained {args.method} for {args.pretrain_steps} steps; exported {path}")
    return load_encoder(path)


def _evaluate(model: PPO, source: Any, args: Args) -> dict[str, float]:
    env = gym.make("ImageSearch-v0", source=source, view_size=args.view_size)
    wins, returns = 0, []
    for ep in track(range(args.episodes), "evaluation", unit="episodes", enabled=args.progress):
        obs, _ = env.reset(seed=100_000 + ep)
        total, done = 0.0, False
        while not done:
            action, _ = model.predict(obs, deterministic=False)
            obs, reward, terminated, truncated, info = env.step(action)
            total += float(reward)
            done = terminated or truncated
        wins += bool(info["is_success"])
        returns.append(total)
    return {"success": wins / args.episodes, "return": float(np.mean(returns))}


def main(args: Args) -> dict[str, dict[str, float]]:
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    pre = _encoder(args)
    print(f"encoder ready in {time.perf_counter() - start:.0f} s", flush=True)
    torch.manual_seed(args.seed)
    arms = {"pre-trained": pre, "random init": make_encoder(**pre.config)}
    source = SceneSource(n_images=args.scenes)
    results = {}
    for name, encoder in arms.items():
        encoder.train()
        encoder.requires_grad_(not args.freeze)
        venv = DummyVecEnv([lambda: gym.make("ImageSearch-v0", source=source, view_size=args.view_size)] * 4)
        model = PPO(
            "MultiInputPolicy",
            venv,
            n_steps=128,
            batch_size=128,
            n_epochs=4,
            seed=args.seed,
            device="cpu",
            policy_kwargs={
                "features_extractor_class": EncoderFeaturesExtractor,
                "features_extractor_kwargs": {"encoder": encoder},
            },
        )
        start = time.perf_counter()
        model.learn(
            total_timesteps=args.ppo_steps,
            callback=ppo_callback(args.ppo_steps, f"PPO, {name}", enabled=args.progress),
        )
        train_s = time.perf_counter() - start
        start = time.perf_counter()
        scores = _evaluate(model, source, args)
        results[name] = {**scores, "train_s": train_s, "eval_s": time.perf_counter() - start}
        venv.close()
    print(
        f"| encoder | success | mean return | PPO seconds | evaluation seconds |  ({args.ppo_steps} PPO "
        f"steps, {args.episodes} held-out episodes)\n| --- | ---: | ---: | ---: | ---: |"
    )
    for name, r in results.items():
        print(f"| {name} | {r['success']:.2f} | {r['return']:.3f} | {r['train_s']:.0f} | {r['eval_s']:.0f} |")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_dataclass_arguments(parser, Args)
    main(dataclass_from_args(Args, parser.parse_args()))
