"""A batched rollout of ImageViewVectorEnv and a TransitionSampler batch drawn as a contact sheet.

Usage: ``python examples/vector_env.py [--device cuda] [--num-envs 256] [--steps 50] [--out DIR]
[--no-progress]``
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import torch
from PIL import Image, ImageDraw

import vpt_env
from vpt_env.progress import track


@dataclass
class Args:
    """Example settings."""

    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    """Torch device of the envs and the sampler."""
    num_envs: int = 256
    """Envs stepped as one batch."""
    steps: int = 50
    """Batched steps to take."""
    out: str = "examples_out"
    """Folder for transitions.png."""
    progress: bool = True
    """Show the rollout on stderr: a bar on a terminal, else a line every 10 s."""


def main(args: Args) -> None:
    envs = gym.make_vec(
        "ImageView-v0",
        num_envs=args.num_envs,
        vectorization_mode="vector_entry_point",
        device=args.device,
        reward="coverage",
        target="cat",
        interpolation="bilinear",
    )
    obs, _ = envs.reset(seed=0)
    start = time.perf_counter()
    total = torch.zeros((), device=args.device)
    for _ in track(range(args.steps), "rollout", unit="batched steps", enabled=args.progress):
        actions = torch.rand(args.num_envs, envs.single_action_space.shape[0], device=args.device) * 2 - 1
        obs, rewards, _terminated, _truncated, _info = envs.step(actions)
        total += rewards.sum()
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    print(
        f"{args.num_envs} envs x {args.steps} steps on {args.device}: "
        f"{args.num_envs * args.steps / seconds:,.0f} views/s, "
        f"mean reward {float(total) / (args.num_envs * args.steps):.3f}; "
        f"observations {tuple(obs.shape)} {obs.dtype} on {obs.device}"
    )

    sampler = vpt_env.TransitionSampler(view_size=64, device=args.device, seed=0, iou_range=(0.05, 0.9))
    batch = sampler.sample(4, views_per_image=4)
    print(
        f"TransitionBatch: views {tuple(batch.views.shape)}, relative boxes {tuple(batch.relative.shape)}, "
        f"valid pairs {int(batch.pair_valid.sum())}/{4 * 4 * 3}"
    )
    sheet = Image.new("RGB", (4 * 96 + 256, 4 * 100), (20, 20, 20))
    colours = [(255, 64, 64), (64, 255, 64), (64, 128, 255), (255, 220, 64)]
    for b in range(4):
        frame = Image.fromarray(sampler.pool.image(int(batch.image[b]), level=1))
        frame.thumbnail((240, 96))
        draw = ImageDraw.Draw(frame)
        for v in range(4):
            x0, y0, x1, y1 = batch.boxes[b, v].tolist()
            draw.rectangle(
                (x0 * frame.width, y0 * frame.height, x1 * frame.width - 1, y1 * frame.height - 1),
                outline=colours[v],
                width=2,
            )
            view = (batch.views[b, v].permute(1, 2, 0).cpu().numpy() * 255).round().astype("uint8")
            tile = Image.fromarray(view).resize((92, 92))
            ImageDraw.Draw(tile).rectangle((0, 0, 91, 91), outline=colours[v], width=2)
            sheet.paste(tile, (256 + v * 96, b * 100 + 4))
        sheet.paste(frame, (4, b * 100 + 4))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sheet.save(out / "transitions.png")
    print(f"contact sheet: {out / 'transitions.png'}")


if __name__ == "__main__":
    defaults = Args()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default=defaults.device)
    p.add_argument("--num-envs", type=int, default=defaults.num_envs)
    p.add_argument("--steps", type=int, default=defaults.steps)
    p.add_argument("--out", default=defaults.out)
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress on stderr")
    a = p.parse_args()
    main(Args(a.device, a.num_envs, a.steps, a.out, a.progress))
