"""Step cost of each AB system against its base, same encoder and batch, measured side by side.

Usage: ``python benchmarks/step_cost.py [--device cpu] [--encoder cnn] [--batch-size 64]
[--view-size 32] [--rounds 5] [--steps 3] [--threads N] [--ab-views crops|shared]``

For each base (SimCLR, DINO, CLIP, supervised) and its AB version, one
training step is ``training_loss`` + backward + gradient clipping + AdamW
step + ``after_step`` (the EMA update), on the same pre-sampled batches of
the embedded scenes (sampling is identical for both and not timed). The two
systems alternate over ``--rounds`` rounds of ``--steps`` steps each (so
machine load hits both alike) and each keeps its median round. Target
(issue 6): AB costs at most 1.5x its base. ``--ab-views crops`` times AB with
crop-only AB views (``DataConfig.ab_views="crops"``: augmented batches that
also carry the un-augmented crops, which AB encodes in one more pass; the base
ignores them). Writes JSON under ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from agents.pretrain import AB_VIEWS, DataConfig, base_view_args
from agents.systems import SystemConfig, make_system
from agents.trainer import default_param_groups
from vpt_env import TransitionSampler
from vpt_env.data.scenes import SceneSource

BASES = ("simclr", "dino", "clip", "supervised")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Stepper:
    """One system with its optimizer: ``step(batch)`` is one full training step."""

    def __init__(self, method: str, encoder: str, num_classes: int, device: torch.device) -> None:
        torch.manual_seed(0)
        cfg = SystemConfig(method, encoder=encoder, num_classes=num_classes)
        self.system = make_system(cfg).to(device)
        self.opt = torch.optim.AdamW(default_param_groups(self.system, 0.05), lr=1e-4)
        self.device = device

    def step(self, batch: Any, captions: list[str]) -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            loss, _ = self.system.training_loss(batch, captions)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.system.parameters(), 1.0)
        self.opt.step()
        self.system.after_step()


def _time(stepper: _Stepper, batches: list[Any], captions: list[str]) -> float:
    _sync(stepper.device)
    start = time.perf_counter()
    for batch in batches:
        stepper.step(batch, captions)
    _sync(stepper.device)
    return (time.perf_counter() - start) / len(batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--encoder", default="cnn", help="cnn, resnet18, vit_tiny, vit_small")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--view-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="steps per timed round")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--bases", default=",".join(BASES))
    parser.add_argument(
        "--ab-views",
        default="crops",
        choices=AB_VIEWS,
        help="AB views (the paper: crops)",
    )
    parser.add_argument("--json", default=None, help="default: benchmarks/results/step_cost_<device>.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    crops = args.ab_views == "crops"
    pool = TransitionSampler(SceneSource(n_images=1000), view_size=args.view_size, device=device).pool
    classes = pool.annotations.num_classes
    rows = []
    for base in args.bases.split(","):
        # The base's own crops as pretrain draws them (CLIP's caption view, DINO's global crops).
        scale, k = base_view_args(DataConfig(), base)
        sampler = TransitionSampler(
            pool,
            view_size=args.view_size,
            device=device,
            seed=0,
            augment=crops,
            crop_views=crops,
            base_view_scale=scale,
            base_views=k,
        )
        batches = [sampler.sample(args.batch_size, args.views) for _ in range(args.steps)]
        captions = sampler.captions
        pair = {m: _Stepper(m, args.encoder, classes, device) for m in (base, "ab" + base)}
        for stepper in pair.values():  # warm-up (allocations, autotuning)
            stepper.step(batches[0], captions)
        times: dict[str, list[float]] = {m: [] for m in pair}
        for _ in range(args.rounds):
            for m, stepper in pair.items():
                times[m].append(_time(stepper, batches, captions))
        base_s = statistics.median(times[base])
        ab_s = statistics.median(times["ab" + base])
        row = {
            "base": base,
            "base_ms": 1000 * base_s,
            "ab_ms": 1000 * ab_s,
            "ratio": ab_s / base_s,
            "base_images_per_s": args.batch_size / base_s,
            "ab_images_per_s": args.batch_size / ab_s,
            "meets_1_5x": ab_s / base_s <= 1.5,
        }
        rows.append(row)
        print(
            f"{base:>10}: {row['base_ms']:8.1f} ms/step   ab{base}: {row['ab_ms']:8.1f} ms/step   "
            f"ratio {row['ratio']:.2f} ({'meets' if row['meets_1_5x'] else 'MISSES'} the 1.5x target)",
            flush=True,
        )
    name = f"cpu, {torch.get_num_threads()} threads"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    result = {"settings": {**vars(args), "device_name": name}, "rows": rows}
    path = Path(args.json or f"benchmarks/results/step_cost_{device.type}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print("| base | base ms/step | AB ms/step | AB / base |\n| --- | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['base']} | {r['base_ms']:.1f} | {r['ab_ms']:.1f} | {r['ratio']:.2f} |")
    print(
        f"wrote {path} ({name}, encoder {args.encoder}, batch {args.batch_size}x{args.views} views "
        f"of {args.view_size} px, AB views {args.ab_views})"
    )


if __name__ == "__main__":
    main()
