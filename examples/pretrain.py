"""Pre-train an image encoder with annotation bootstrapping (or a base method) from Python.

Usage: ``python examples/pretrain.py [--method abclip] [--source scenes] [--steps 300] [--out-dir DIR]``

The same run as ``vpt pretrain``: three config dataclasses (data, system,
trainer) and one call. The run directory can be resumed (run again) and
exported (``vpt export --ckpt DIR``); ``examples/evaluate.py`` probes it.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from agents.config_cli import add_dataclass_arguments, dataclass_from_args
from agents.pretrain import DataConfig, pretrain
from agents.systems import SystemConfig
from agents.trainer import TrainConfig


@dataclass
class Args:
    """Example settings (every other knob keeps its SystemConfig / TrainConfig default)."""

    method: str = "abclip"
    """abclip, abdino, absimclr, absupervised, or a base: clip, dino, simclr, supervised."""
    source: str = "scenes"
    """Images: an embedded set, a folder or a dataset file."""
    max_images: int = 2000
    """Use the first N images."""
    steps: int = 300
    """Optimizer steps."""
    batch_size: int = 64
    """Images per step (4 views each)."""
    view_size: int = 32
    """Side of the views in pixels."""
    width: int = 32
    """Width of the small CNN encoder."""
    out_dir: str = "runs/example_pretrain"
    """Run directory (resumed when it exists)."""
    threads: int = 2
    """Torch CPU threads."""


def main(args: Args) -> dict:
    torch.set_num_threads(args.threads)
    data = DataConfig(source=args.source, max_images=args.max_images, view_size=args.view_size)
    system = SystemConfig(args.method, encoder="cnn", encoder_kwargs={"width": args.width})
    train = TrainConfig(
        steps=args.steps, batch_size=args.batch_size, lr=2e-3, warmup_steps=min(30, args.steps // 10),
        checkpoint_every=100, out_dir=args.out_dir,
    )
    out = pretrain(data, system, train)
    lines = (Path(args.out_dir) / "metrics.jsonl").read_text().splitlines()
    first, last = json.loads(lines[0]), json.loads(lines[-1])
    print(f"{args.method}: loss {first['loss']:.3f} at step {first['step']} -> {last['loss']:.3f} at step "
          f"{last['step']}; {last['images_per_s']:.0f} images/s; run in {out['out_dir']}")
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_dataclass_arguments(parser, Args)
    main(dataclass_from_args(Args, parser.parse_args()))
