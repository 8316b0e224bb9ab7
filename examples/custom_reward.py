"""A reward written in a few lines, registered, checked, benchmarked and used by PPO.

The reward: how close the view's centre is to the centre of the nearest box
of a target class, or of any annotated object (1 at the centre, falling
linearly to 0 half an image away; 0 on images without such a box). It reads only the state and the
annotations, so it declares ``needs_views = False``.

Usage: ``python examples/custom_reward.py [--target cat] [--train-steps 32768] [--quick] [--out DIR]
[--no-progress]``
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

import vpt_env
from vpt_env.data.pool import ImagePool
from vpt_env.tools.reward_bench import bench_reward, check_reward, load_reward, train_with_reward


class CentreOnTarget:
    """``max(0, 1 - 2 d)``, ``d`` the distance from the view's centre to the nearest target box centre."""

    needs_annotations = True
    needs_views = False

    def __init__(self, target: int) -> None:
        self.target = target

    def __call__(self, views, state, annotations):
        boxes = annotations.boxes[state.image]  # (B, M, 4), normalised (x0, y0, x1, y1)
        labels = annotations.box_labels[state.image]  # (B, M), -1 pads
        match = labels == self.target if self.target >= 0 else labels >= 0
        centres = (boxes[..., :2] + boxes[..., 2:]) / 2
        view_centre = ((state.box[:, :2] + state.box[:, 2:]) / 2)[:, None]
        dist = (centres - view_centre).norm(dim=-1).masked_fill(~match, float("inf")).amin(dim=1)
        return (1 - 2 * dist).clamp(min=0)  # inf (no target box) -> 0


@vpt_env.register_reward("centre_on_target")
def make_centre_on_target(annotations, target=None):
    """``target``: a class name or index; None: any annotated object."""
    return CentreOnTarget(-1 if target is None else annotations.class_index(target))


@dataclass
class Args:
    """Example settings."""

    source: str = "photos"
    """Images (embedded name, folder or dataset file)."""
    target: str | None = None
    """Target class (None: any annotated object)."""
    train_steps: int = 32768
    """PPO env steps."""
    seconds: float = 0.5
    """Throughput timing budget per reward and batch size."""
    threads: int = 1
    """Torch CPU threads (on a loaded 2-core machine, two threads wait on each other)."""
    quick: bool = False
    """Tiny budget, for the tests."""
    out: str = "examples_out"
    """Folder for custom_reward.json."""
    no_progress: bool = False
    """No progress of the PPO training on stderr (default: a bar on a terminal, else a line every 10 s)."""


def main(args: Args) -> None:
    if args.quick:
        args.train_steps, args.seconds = 256, 0.02
    pool = ImagePool.from_source(args.source)
    reward = load_reward("centre_on_target", pool, args.target)
    checks = check_reward(reward, pool, name="centre_on_target")
    print("centre_on_target passed: " + ", ".join(checks))

    bench = bench_reward(
        "centre_on_target",
        args.source,
        target=args.target,
        pool=pool,
        seconds=args.seconds,
        threads=args.threads,
    )
    print("throughput in rewards/s, against the built-in coverage reward timed in the same run:")
    print(bench.table())

    start = time.perf_counter()
    train = train_with_reward(
        "centre_on_target",
        args.source,
        target=args.target,
        steps=args.train_steps,
        episodes=4,
        threads=args.threads,
        progress=not args.no_progress,
    )
    print(
        f"PPO on ImageViewDiscrete-v0, {train['steps']} steps ({time.perf_counter() - start:.0f} s): "
        f"mean episode reward {train['trained_mean']:.2f} +- {train['trained_std']:.2f} against "
        f"{train['random_mean']:.2f} +- {train['random_std']:.2f} for a random policy "
        f"({train['episodes']} episodes of {train['episode_steps']} steps each)"
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "custom_reward.json").write_text(
        json.dumps({"args": asdict(args), **bench.to_dict(), "train": train}, indent=2)
    )
    print(f"wrote {out / 'custom_reward.json'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in asdict(Args()).items():
        flag = "--" + name.replace("_", "-")
        if isinstance(default, bool):
            parser.add_argument(flag, action="store_true")
        elif default is None:
            parser.add_argument(flag, default=None)
        else:
            parser.add_argument(flag, type=type(default), default=default)
    torch.manual_seed(0)
    main(Args(**vars(parser.parse_args())))
