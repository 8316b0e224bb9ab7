"""The demo: a random-policy rollout on the embedded photos, saved as a contact sheet.

Run it with ``make env-demo`` or ``python -m vpt_env.demo [--steps N] [--out DIR] [--no-progress]``.
It prints the rollout's steps per second and writes ``DIR/contact_sheet.png``:
one tile per sampled step, the view beside its source image with the view's
box drawn in red.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
from PIL import Image, ImageDraw

import vpt_env  # noqa: F401  (registers the env ids)
from vpt_env.envs.image_view import draw_box
from vpt_env.progress import track

__all__ = ["DemoConfig", "main", "run_demo"]


@dataclass
class DemoConfig:
    """Settings of the demo rollout."""

    env_id: str = "ImageView-v0"
    """Registered env id to roll out."""
    steps: int = 1000
    """Environment steps to take (episodes reset automatically)."""
    tiles: int = 16
    """Steps shown in the contact sheet, evenly spaced over the rollout."""
    seed: int = 0
    """Seed of the env and of the random policy."""
    out: str = "demo_out"
    """Folder for contact_sheet.png."""
    progress: bool = True
    """Show the rollout's progress on stderr: a bar on a terminal, else a line every 10 s."""


def _tile(view: np.ndarray, frame: np.ndarray, height: int = 128) -> Image.Image:
    v = Image.fromarray(view).resize((height, height), Image.Resampling.NEAREST)
    f = Image.fromarray(frame)
    f = f.resize((max(1, round(f.width * height / f.height)), height))
    tile = Image.new("RGB", (v.width + f.width + 12, height + 8), (32, 32, 32))
    tile.paste(f, (4, 4))
    tile.paste(v, (f.width + 8, 4))
    return tile


def run_demo(cfg: DemoConfig) -> dict[str, float]:
    """Roll out a random policy and write the contact sheet.

    Returns:
        ``{"steps": ..., "seconds": ..., "steps_per_second": ..., "mean_reward": ...}``.
    """
    if cfg.steps < 1 or cfg.tiles < 1:
        raise ValueError(f"steps and tiles must be >= 1, got steps={cfg.steps}, tiles={cfg.tiles}")
    env = gym.make(cfg.env_id, reward="coverage", target="cat")
    env.action_space.seed(cfg.seed)
    obs, info = env.reset(seed=cfg.seed)
    keep = set(np.linspace(0, cfg.steps - 1, min(cfg.tiles, cfg.steps)).round().astype(int).tolist())
    shots: list[tuple[np.ndarray, int, list[float]]] = []
    rewards = 0.0
    start = time.perf_counter()
    for step in track(range(cfg.steps), "rollout", unit="steps", enabled=cfg.progress):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        rewards += float(reward)
        if step in keep:
            shots.append((obs, info["image_index"], info["box"].tolist()))
        if terminated or truncated:
            obs, info = env.reset()
    seconds = time.perf_counter() - start
    pool = env.unwrapped.pool
    tiles = [_tile(v, draw_box(pool, i, b, side=256)) for v, i, b in shots]
    cols = 4
    rows = (len(tiles) + cols - 1) // cols
    tw = max(t.width for t in tiles)
    th = max(t.height for t in tiles)
    sheet = Image.new("RGB", (cols * tw, rows * th + 24), (16, 16, 16))
    for k, t in enumerate(tiles):
        sheet.paste(t, ((k % cols) * tw, 24 + (k // cols) * th))
    ImageDraw.Draw(sheet).text(
        (6, 6), f"{cfg.env_id}: random policy, {cfg.steps} steps, source image + view", fill=(230, 230, 230)
    )
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    sheet.save(out / "contact_sheet.png")
    env.close()
    return {
        "steps": float(cfg.steps),
        "seconds": seconds,
        "steps_per_second": cfg.steps / seconds,
        "mean_reward": rewards / cfg.steps,
    }


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = DemoConfig()
    parser.add_argument("--env-id", default=defaults.env_id)
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--tiles", type=int, default=defaults.tiles)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--out", default=defaults.out)
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress on stderr")
    args = parser.parse_args(argv)
    cfg = DemoConfig(args.env_id, args.steps, args.tiles, args.seed, args.out, args.progress)
    result = run_demo(cfg)
    print(
        f"{cfg.env_id}: {result['steps']:.0f} random-policy steps in {result['seconds']:.2f} s "
        f"= {result['steps_per_second']:.0f} steps/s (mean coverage reward for 'cat': "
        f"{result['mean_reward']:.3f})"
    )
    print(f"contact sheet: {Path(cfg.out) / 'contact_sheet.png'}")


if __name__ == "__main__":
    main()
