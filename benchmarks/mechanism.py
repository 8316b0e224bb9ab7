"""Mechanism metrics of annotation bootstrapping: the data's action information, and what a run learned.

Usage::

    python benchmarks/mechanism.py                       # the data: scenes x crop scales x views
    python benchmarks/mechanism.py --ckpt RUN [RUN ...]  # trained runs (their own data configs)

Without ``--ckpt`` it prints the *oracle action information* (``agents.mechanism``, docs/method.md
section 8) of the embedded scenes under the settings the reproduction profiles used and use
(objects per scene, object size, crop scale, views per image): how much a move tells about the
annotations of the view it leads to, measured with the true per-view annotations before any
training. With ``--ckpt`` it prints every mechanism metric of each run directory (a ``vpt
pretrain`` run or a reproduction run), on fixed batches of that run's own training data.

Writes JSON (``--json``; default ``benchmarks/results/mechanism.json``) with the machine and date.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from agents.export import load_system
from agents.mechanism import MECHANISM_KEYS, fixed_batches, mechanism_metrics
from agents.pretrain import build_sampler, read_run
from vpt_env import TransitionSampler
from vpt_env.data.scenes import SceneSource

#: (name, SceneSource overrides) of the data grid; the base is the CPU profiles' scenes of 64 px.
SCENES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("1-3 objects of 30-50% (profiles until issue 19)", dict(objects=(1, 3), object_size=(0.3, 0.5))),
    ("2-4 objects of 20-35%", dict(objects=(2, 4), object_size=(0.2, 0.35))),
    ("3-6 objects of 15-30% (profiles since issue 19)", dict(objects=(3, 6), object_size=(0.15, 0.3))),
    ("4-6 objects of 15-25%", dict(objects=(4, 6), object_size=(0.15, 0.25))),
)
BASE_SCENES: dict[str, Any] = dict(
    size=64, seed=0, object_sets=("digits",), colour_mode="random", background=("flat",), clutter=0
)
SCALES: tuple[tuple[float, float], ...] = ((0.2, 1.0), (0.05, 1.0))


def _data_grid(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for name, over in SCENES:
        src = SceneSource(**{**BASE_SCENES, "n_images": args.images, **over})
        for scale in SCALES:
            for views in (2, 4):
                sampler = TransitionSampler(src, view_size=args.view_size, scale=scale, seed=0)
                batches = fixed_batches(sampler, args.batches, args.batch_size, views)
                info = mechanism_metrics(None, batches)["oracle_info"]
                rows.append({"scenes": name, "scale": list(scale), "views": views, "oracle_info": info})
                print(f"| {name} | {scale[0]}-{scale[1]} | {views} | {info:.4f} |", flush=True)
    return rows


def _runs(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for run in args.ckpt:
        data, system_cfg, train = read_run(run)
        data.device = args.device
        sampler = build_sampler(data, seed=0, method=system_cfg.method)
        batches = fixed_batches(sampler, args.batches, train.batch_size, train.views_per_image)
        system = load_system(run, args.device)
        out = mechanism_metrics(system, batches, sampler.captions)
        rows.append({"run": str(run), "method": system_cfg.method, **out})
        cells = " | ".join(f"{out[k]:.4f}" for k in MECHANISM_KEYS)
        print(f"| {run} | {system_cfg.method} | {cells} |", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--ckpt", nargs="*", default=None, help="run directories to measure (default: the data grid)"
    )
    p.add_argument("--images", type=int, default=1000, help="scenes of the data grid")
    p.add_argument("--batches", type=int, default=8, help="fixed batches per setting")
    p.add_argument("--batch-size", type=int, default=256, help="images per batch of the data grid")
    p.add_argument("--view-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None, help="default: benchmarks/results/mechanism.json")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    if args.ckpt:
        print("| run | method | " + " | ".join(MECHANISM_KEYS) + " |")
        print("|" + " --- |" * (len(MECHANISM_KEYS) + 2))
        rows = _runs(args)
    else:
        print("Oracle action information (nats) of the embedded scenes, 64 px, 32 px views:")
        print("| scenes | crop scale | views | oracle_info |\n| --- | --- | --- | --- |")
        rows = _data_grid(args)
    seconds = time.perf_counter() - start
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    print(f"{len(rows)} rows in {seconds:.0f} s on {machine}, {date}")
    path = Path(args.json or Path(__file__).parent / "results" / "mechanism.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps({"machine": machine, "date": date, "seconds": seconds, "rows": rows}, indent=2)
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
