"""The ``vpt`` command. Subcommands: ``info``, ``bench-reward`` (more arrive with the agents).

Usage::

    vpt info SOURCE [--out DIR] [--max-images N] [--strict]
    vpt bench-reward NAME|module:function [--source photos] [--target T] [--device cpu]
                     [--out DIR] [--seconds S] [--threads N] [--train-steps N]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["main"]


def _info(args: argparse.Namespace) -> int:
    from vpt_env.data.summary import contact_sheet, summarize_source

    summary, samples, classes = summarize_source(args.source, max_images=args.max_images, strict=args.strict)
    print(summary.table())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "info.json").write_text(json.dumps({**summary.to_dict(), "class_names": classes}, indent=2))
    contact_sheet(samples, classes).save(out / "contact_sheet.png")
    print(f"wrote {out / 'info.json'} and {out / 'contact_sheet.png'}")
    return 0


def _bench_reward(args: argparse.Namespace) -> int:
    from vpt_env.rewards.bench import bench_reward, train_with_reward

    target = int(args.target) if args.target is not None and args.target.isdigit() else args.target
    result = bench_reward(
        args.reward,
        args.source,
        target=target,
        device=args.device,
        seconds=args.seconds,
        threads=args.threads,
    )
    print(f"reward {result.reward!r}: passed " + ", ".join(result.checks))
    print(result.table())
    for note in result.notes:
        print(note)
    if args.train_steps > 0:
        result.train = train_with_reward(
            args.reward,
            args.source,
            target=target,
            steps=args.train_steps,
            device=args.device,
            threads=args.threads,
        )
        t = result.train
        print(
            f"PPO, {t['steps']} steps ({t['train_seconds']:.0f} s): mean episode reward "
            f"{t['trained_mean']:.3f} against {t['random_mean']:.3f} for a random policy "
            f"({t['episodes']} episodes each)"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_reward.json").write_text(json.dumps(result.to_dict(), indent=2))
    (out / "bench_reward.md").write_text(result.markdown())
    print(f"wrote {out / 'bench_reward.json'} and {out / 'bench_reward.md'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vpt`` console script."""
    parser = argparse.ArgumentParser(prog="vpt", description="vpt-env: visual pre-training as RL.")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="describe a source: counts, sizes, annotations, skipped files")
    info.add_argument("source", help="an embedded name (photos, scenes, ...), a folder, or a dataset file")
    info.add_argument("--out", default="info_out", help="folder for info.json and contact_sheet.png")
    info.add_argument("--max-images", type=int, default=None, help="read at most this many images")
    info.add_argument("--strict", action="store_true", help="stop at the first unreadable image")
    info.set_defaults(run=_info)
    bench = sub.add_parser(
        "bench-reward",
        help="check a reward (shape, dtype, device, finiteness, determinism, batch invariance) and time it",
    )
    bench.add_argument("reward", help="a registered reward name or a 'package.module:function' string")
    bench.add_argument("--source", default="photos", help="images to render views from")
    bench.add_argument("--target", default=None, help="class name or index (also the coverage baseline's)")
    bench.add_argument(
        "--device", default="cpu", help="device of the checks (throughput: cpu, and cuda if available)"
    )
    bench.add_argument("--out", default="bench_reward_out", help="folder for bench_reward.json and .md")
    bench.add_argument("--seconds", type=float, default=0.5, help="timing budget per reward and batch size")
    bench.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads for timing and training"
    )
    bench.add_argument(
        "--train-steps", type=int, default=0, help="train PPO for this many env steps (0: off)"
    )
    bench.set_defaults(run=_bench_reward)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError) as err:
        print(f"vpt {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
