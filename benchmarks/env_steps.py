"""Steps per second of the single-view envs, against a PIL reference loop in the same run.

Usage: ``python benchmarks/env_steps.py [--steps N] [--json PATH]``.

Rows:

* ``ImageView-v0`` through ``gym.make`` (wrappers included), random actions
  with every augmentation enabled, and with ``augmentations=()`` (crop only);
* ``ImageViewDiscrete-v0``, random actions;
* ``ImageView-v0`` with ``interpolation="nearest"`` and no augmentation;
* the reference: a plain Python loop over the same embedded photos that moves
  a box with numpy and renders it with one PIL ``resize(box=...)`` per step
  (the fastest simple per-view CPU implementation), no augmentation.

Each ratio is against the reference, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import gymnasium as gym
import numpy as np
import torch
from PIL import Image

import vpt_env  # noqa: F401
from vpt_env.data.sources import load_images


def _time_env(make, steps: int, seed: int = 0) -> float:
    env = make()
    env.action_space.seed(seed)
    env.reset(seed=seed)
    actions = [env.action_space.sample() for _ in range(steps)]
    for a in actions[:20]:  # warm-up
        env.step(a)
    start = time.perf_counter()
    for a in actions:
        _, _, terminated, truncated, _ = env.step(a)
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start)


def _time_reference(steps: int, size: int = 64, seed: int = 0) -> float:
    images, _ = load_images("photos")
    pils = [Image.fromarray(im) for im in images]
    rng = np.random.default_rng(seed)
    idx, box = 0, np.array([0.2, 0.2, 0.8, 0.8])
    start = time.perf_counter()
    for t in range(steps):
        if t % 100 == 0:
            idx = int(rng.integers(len(pils)))
            box = np.array([0.2, 0.2, 0.8, 0.8])
        a = rng.uniform(-1, 1, 4)
        w, h = box[2] - box[0], box[3] - box[1]
        cx, cy = (box[0] + box[2]) / 2 + 0.25 * a[0] * w, (box[1] + box[3]) / 2 + 0.25 * a[1] * h
        s = np.exp(-0.25 * a[2])
        w, h = np.clip(w * s, 0.05, 1.0), np.clip(h * s, 0.05, 1.0)
        cx, cy = np.clip(cx, w / 2, 1 - w / 2), np.clip(cy, h / 2, 1 - h / 2)
        box = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
        img = pils[idx]
        px = (box[0] * img.width, box[1] * img.height, box[2] * img.width, box[3] * img.height)
        np.asarray(img.resize((size, size), Image.Resampling.BILINEAR, box=px))
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--json", default="benchmarks/results/env_steps.json")
    args = parser.parse_args()
    n = args.steps
    rows = {
        "reference: PIL crop+resize loop": _time_reference(n),
        "ImageView-v0 (all augmentations)": _time_env(lambda: gym.make("ImageView-v0"), n),
        "ImageView-v0 (crop only)": _time_env(lambda: gym.make("ImageView-v0", augmentations=()), n),
        "ImageView-v0 (nearest, crop only)": _time_env(
            lambda: gym.make("ImageView-v0", augmentations=(), interpolation="nearest"), n
        ),
        "ImageViewDiscrete-v0": _time_env(lambda: gym.make("ImageViewDiscrete-v0"), n),
    }
    ref = rows["reference: PIL crop+resize loop"]
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"
    print(f"steps per second, {n} steps each, 64x64 views, embedded photos ({machine})")
    print(f"{'env':<38} {'steps/s':>9} {'x reference':>12}")
    for name, sps in rows.items():
        print(f"{name:<38} {sps:>9.0f} {sps / ref:>12.2f}")
    import pathlib

    path = pathlib.Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"steps": n, "machine": machine, "steps_per_second": rows}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
