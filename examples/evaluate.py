"""Probe a pre-trained encoder (linear, kNN, attention pooling) against a randomly initialised one.

Usage: ``python examples/evaluate.py --ckpt runs/example_pretrain [--source scenes] [--task image]``

``--ckpt`` is a ``vpt pretrain`` run directory, its checkpoint, or an
exported ``.safetensors`` / ``.pt`` encoder. Views are rendered once and every
encoder is probed on the same held-out split (by image).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch

from agents.config_cli import add_dataclass_arguments, dataclass_from_args
from agents.encoders import make_encoder
from agents.eval import evaluate_encoder, format_table, probe_views
from agents.export import load_encoder


@dataclass
class Args:
    """Example settings."""

    ckpt: str = "runs/example_pretrain"
    """Run directory, checkpoint or exported encoder."""
    source: str = "scenes"
    """Labelled images to probe on."""
    max_images: int = 2000
    """A random subset of the source."""
    view_size: int = 32
    """Side of the views (the pre-training view size)."""
    task: str = "image"
    """image (whole-image labels, multi-label on scenes) or objects (the class of each object's region)."""
    linear_epochs: int = 100
    """Linear probe epochs."""
    attentive_epochs: int = 30
    """Attention-pooling probe epochs."""
    seed: int = 0
    """Subset, split, probes and the random encoder's initialisation."""
    threads: int = 2
    """Torch CPU threads."""


def main(args: Args) -> dict:
    torch.set_num_threads(args.threads)
    encoder = load_encoder(args.ckpt)
    torch.manual_seed(args.seed)
    encoders = {"pre-trained": encoder, "random init": make_encoder(**encoder.config).eval()}
    data = probe_views(args.source, view_size=args.view_size, max_images=args.max_images, seed=args.seed,
                       task=args.task)
    results = {
        name: evaluate_encoder(enc, data, view_size=args.view_size, task=args.task, seed=args.seed,
                               linear_epochs=args.linear_epochs, attentive_epochs=args.attentive_epochs)
        for name, enc in encoders.items()
    }
    print(format_table(results))
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_dataclass_arguments(parser, Args)
    main(dataclass_from_args(Args, parser.parse_args()))
