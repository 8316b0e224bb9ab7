"""Known-answer benchmark of AB's value learning: the learned Q's error against the exact GVF by steps, gamma.

Usage::

    python benchmarks/known_answer.py [--steps 1600] [--gammas 0,0.5,0.9] [--seeds 0,1]
        [--views N] [--images 3] [--boxes 4] [--batch-size 8] [--lr 2e-3] [--ema-rate 0.05]
        [--temperature 0.1] [--threads 1] [--out PATH]

On the MDP of :func:`agents.known_answer.make_mdp` (synthetic images of coloured rectangles, a
finite set of boxes per image, cumulants the colour shares of each box), for each gamma: the exact
GVF by value iteration (:func:`agents.known_answer.exact_gvf`), then one training run per seed
(:func:`agents.known_answer.fit_gvf`) whose error is recorded at steps 100, 200, 400, ... and the
last step. Errors are total-variation distances over every move ``(image, i -> j)``: the learned
``Q`` against ``Q*`` (mean over seeds of the mean TV, with the spread over seeds, and the max over
seeds of the max TV), next to the action-blind predictor's error and the distance of ``Q*`` from
the ``gamma = 0`` values (both properties of the MDP, not of training). The learning rate follows
one warm-up + cosine schedule over ``--steps``, so an early checkpoint is taken at a high learning
rate. ``max_temperature`` is the largest ``ab_logits`` temperature at which ``Q`` could express the
exact values at all (a necessary condition). Prints a table and writes JSON (default
``benchmarks/results/known_answer.json``) with the machine and the time taken.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reproduction.runner import machine_info

from agents.known_answer import FitConfig, action_information, exact_gvf, fit_gvf, make_mdp, max_temperature

RESULTS = Path(__file__).resolve().parent / "results"


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def checkpoints(steps: int) -> tuple[int, ...]:
    """Steps 100, 200, 400, ... below ``steps``, then ``steps`` itself."""
    points, s = [], 100
    while s < steps:
        points.append(s)
        s *= 2
    return (*points, steps)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every (gamma, seed) run; returns the JSON-able record."""
    mdp = make_mdp(num_images=args.images, num_boxes=args.boxes, seed=args.mdp_seed)
    points = checkpoints(args.steps)
    record: dict[str, Any] = {
        "mdp": {
            "images": mdp.num_images,
            "boxes": mdp.num_boxes,
            "annotations": list(mdp.annotation_names),
            "views_per_image": args.views or mdp.num_boxes,
            "action_information_nats": action_information(mdp.cumulants),
            "seed": args.mdp_seed,
        },
        "gammas": {},
    }
    for gamma in args.gammas:
        exact = exact_gvf(mdp.cumulants, gamma, args.views)
        runs = []
        for seed in args.seeds:
            cfg = FitConfig(
                gamma=gamma,
                steps=args.steps,
                batch_size=args.batch_size,
                views_per_image=args.views,
                lr=args.lr,
                ema_rate=args.ema_rate,
                temperature=args.temperature,
                seed=seed,
            )
            start = time.perf_counter()
            fit = fit_gvf(mdp, cfg, checkpoints=points)
            runs.append(
                {
                    "seed": seed,
                    "seconds": time.perf_counter() - start,
                    "history": [{"step": s, **e._asdict()} for s, e in fit.history],
                }
            )
            print(f"gamma {gamma} seed {seed}: {runs[-1]['seconds']:.1f} s", file=sys.stderr, flush=True)
        record["gammas"][str(gamma)] = {"max_temperature": max_temperature(exact), "runs": runs}
    return record


def table(record: dict[str, Any]) -> str:
    """The error table: one row per (gamma, checkpoint)."""
    head = (
        "| gamma | step | TV mean (seeds) | TV max | blind TV mean / max | gamma-0 TV mean / max "
        "| max_temperature |\n| --- | --- | --- | --- | --- | --- | --- |"
    )
    rows = [head]
    for gamma, entry in record["gammas"].items():
        runs = entry["runs"]
        for k, first in enumerate(runs[0]["history"]):
            means = [r["history"][k]["tv_mean"] for r in runs]
            spread = f" +- {statistics.stdev(means):.4f}" if len(means) > 1 else ""
            worst = max(r["history"][k]["tv_max"] for r in runs)
            rows.append(
                f"| {gamma} | {first['step']} | {statistics.mean(means):.4f}{spread} | {worst:.4f} "
                f"| {first['blind_tv_mean']:.4f} / {first['blind_tv_max']:.4f} "
                f"| {first['gamma0_tv_mean']:.4f} / {first['gamma0_tv_max']:.4f} "
                f"| {entry['max_temperature']:.3f} |"
            )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1600, help="training steps per run")
    p.add_argument("--gammas", type=_floats, default=[0.0, 0.5, 0.9], help="e.g. 0,0.5,0.9")
    p.add_argument("--seeds", type=_ints, default=[0, 1], help="training seeds, e.g. 0,1")
    p.add_argument("--views", type=int, default=None, help="views drawn per image (default: all boxes)")
    p.add_argument("--images", type=int, default=3, help="images of the MDP")
    p.add_argument("--boxes", type=int, default=4, help="boxes per image")
    p.add_argument("--mdp-seed", type=int, default=0, help="seed of the MDP's images and boxes")
    p.add_argument("--batch-size", type=int, default=8, help="images per step")
    p.add_argument("--lr", type=float, default=FitConfig.lr)
    p.add_argument("--ema-rate", type=float, default=FitConfig.ema_rate)
    p.add_argument("--temperature", type=float, default=FitConfig.temperature, help="ab_logits temperature")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--out", type=Path, default=RESULTS / "known_answer.json", help="JSON output path")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    record = run(args)
    record["config"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    record["machine"] = machine_info("cpu")
    record["seconds"] = time.perf_counter() - start
    mdp = record["mdp"]
    print(
        f"known-answer MDP: {mdp['images']} images x {mdp['boxes']} boxes, L = {len(mdp['annotations'])}, "
        f"V = {mdp['views_per_image']}, action information {mdp['action_information_nats']:.3f} nats; "
        f"batch {args.batch_size}, lr {args.lr}, EMA rate {args.ema_rate}, temperature {args.temperature}"
    )
    print(table(record))
    m = record["machine"]
    print(
        f"machine: {m['host']}, {m['device_name']}, {m['cpu_count']} CPUs (shared), "
        f"{m['torch_threads']} torch thread(s), torch {m['torch']}, commit {m['commit']}, {m['date']}; "
        f"total {record['seconds']:.0f} s"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
