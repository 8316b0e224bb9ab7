"""The ``vpt`` command. Subcommands: ``info``, ``bench-reward``, ``pretrain``, ``eval``, ``export``,
``valuemap``.

Usage::

    vpt info SOURCE [--out DIR] [--max-images N] [--strict] [--no-progress]
    vpt bench-reward NAME|module:function [--source photos] [--target T] [--device cpu]
                     [--out DIR] [--seconds S] [--threads N] [--train-steps N] [--no-progress]
    vpt pretrain --method abclip --source scenes --steps 300 [--out-dir runs/pretrain] [every knob: --help]
    vpt eval --ckpt RUN|FILE [--source S] [--baseline random] [--task image|objects] [--out DIR]
             [--no-progress]
    vpt export --ckpt RUN [--out encoder.safetensors]
    vpt valuemap --ckpt RUN [--source S] [--image N] [--grid G] [--move-size S] [--out DIR]

Long work (reading images, training, probing) shows its progress on stderr: a bar on a terminal,
else a plain line every 10 s (``--no-progress``: none); stdout holds only the results.

Every ``pretrain`` flag is a documented field of :class:`agents.pretrain.DataConfig`,
:class:`agents.systems.SystemConfig` or :class:`agents.trainer.TrainConfig`.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _info(args: argparse.Namespace) -> int:
    from vpt_env.data.summary import contact_sheet, summarize_source

    summary, samples, classes = summarize_source(
        args.source, max_images=args.max_images, strict=args.strict, progress=args.progress
    )
    print(summary.table())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "info.json").write_text(json.dumps({**summary.to_dict(), "class_names": classes}, indent=2))
    contact_sheet(samples, classes).save(out / "contact_sheet.png")
    print(f"wrote {out / 'info.json'} and {out / 'contact_sheet.png'}")
    return 0


def _bench_reward(args: argparse.Namespace) -> int:
    from vpt_env.tools.reward_bench import bench_reward, train_with_reward

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
            progress=args.progress,
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


_PRETRAIN_DEFAULTS = {"out_dir": "runs/pretrain", "steps": 300}


def _pretrain_parser(sub: Any) -> None:
    from agents.config_cli import add_dataclass_arguments
    from agents.encoders import ENCODER_NAMES
    from agents.pretrain import AB_VIEWS, DataConfig
    from agents.systems import METHODS, TEXT_ENCODERS, SystemConfig
    from agents.systems.config import SUPERVISED_TARGETS
    from agents.train_config import AMP_MODES
    from agents.trainer import TrainConfig

    p = sub.add_parser("pretrain", help="pre-train an encoder (AB or a base method); resumes its --out-dir")
    system_choices = {
        "method": METHODS, "encoder": ENCODER_NAMES, "text_encoder": TEXT_ENCODERS,
        "supervised_target": SUPERVISED_TARGETS,
    }  # fmt: skip
    add_dataclass_arguments(
        p, SystemConfig, exclude=("num_classes",), title="system (SystemConfig)", choices=system_choices
    )
    add_dataclass_arguments(p, DataConfig, title="data (DataConfig)", choices={"ab_views": AB_VIEWS})
    add_dataclass_arguments(
        p,
        TrainConfig,
        defaults=_PRETRAIN_DEFAULTS,
        title="training (TrainConfig)",
        choices={"amp": AMP_MODES},
    )
    p.add_argument("--no-resume", dest="resume", action="store_false", help="start over in --out-dir")
    p.set_defaults(run=_pretrain)


def _pretrain(args: argparse.Namespace) -> int:
    from agents.config_cli import dataclass_from_args
    from agents.pretrain import DataConfig, pretrain
    from agents.systems import SystemConfig
    from agents.trainer import TrainConfig

    system = dataclass_from_args(SystemConfig, args)
    data = dataclass_from_args(DataConfig, args)
    train = dataclass_from_args(TrainConfig, args, defaults=_PRETRAIN_DEFAULTS)
    out = pretrain(data, system, train, resume=args.resume)
    last = "no step left to run" if out["loss"] is None else f"last loss {out['loss']:.4f}"
    print(
        f"{system.method}: {out['step']} steps on {out['images']} images ({out['stopped']}); "
        f"{last}; run in {out['out_dir']}"
    )
    return 0


def _eval(args: argparse.Namespace) -> int:
    import torch

    from agents.encoders import make_encoder
    from agents.eval import compare_to_baseline, evaluate_encoder, format_table, probe_views
    from agents.export import load_encoder

    ckpt = Path(args.ckpt)
    source, view_size = args.source, args.view_size
    run_dir = ckpt if ckpt.is_dir() else ckpt.parent
    if (run_dir / "run.json").is_file():
        from agents.pretrain import read_run

        data, _, _ = read_run(run_dir)
        source = source or data.source
        view_size = view_size or data.view_size
    source, view_size = source or "scenes", view_size or 32
    encoder = load_encoder(ckpt, device=args.device)
    encoders = {args.name or ckpt.stem: encoder}
    if args.baseline == "random":
        torch.manual_seed(args.seed)
        encoders["random init"] = make_encoder(**encoder.config).to(args.device).eval()
    data_all = probe_views(
        source,
        view_size=view_size,
        max_images=args.max_images,
        seed=args.seed,
        task=args.task,
        device=args.device,
        progress=args.progress,
    )
    results, said = {}, []
    for name, enc in encoders.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            results[name] = evaluate_encoder(
                enc,
                data_all,
                view_size=view_size,
                task=args.task,
                probes=args.probes.split(","),
                seed=args.seed,
                device=args.device,
                linear_epochs=args.linear_epochs,
                attentive_epochs=args.attentive_epochs,
                progress=name if args.progress else False,
            )
        own = set(results[name].get("warnings", []))  # the split's warnings (check_split)
        for w in caught:
            if str(w.message) not in own:  # anyone else's warning goes out as Python would show it
                warnings.showwarning(w.message, w.category, w.filename, w.lineno)
            elif str(w.message) not in said:  # the split is the same for every encoder: say it once
                said.append(str(w.message))
                print(f"vpt eval: warning: {w.message}", file=sys.stderr)
    table = format_table(results)
    print(table)
    sentence = None
    if "random init" in results:
        sentence = compare_to_baseline(results, "random init", seed=args.seed)
        print(sentence)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {
        "ckpt": str(ckpt),
        "source": str(source),
        "view_size": view_size,
        "task": args.task,
        "max_images": args.max_images,
        "seed": args.seed,
    }
    record: dict[str, Any] = {"settings": settings, "results": results, "warnings": said}
    if sentence is not None:
        record["summary"] = sentence
    (out / "eval.json").write_text(json.dumps(record, indent=2))
    (out / "eval.md").write_text(table + "\n" + ("" if sentence is None else "\n" + sentence + "\n"))
    print(f"wrote {out / 'eval.json'} and {out / 'eval.md'}")
    return 0


def _eval_parser(sub: Any) -> None:
    p = sub.add_parser("eval", help="probe a frozen encoder: linear, kNN and attention pooling")
    p.add_argument("--ckpt", required=True, help="a pretrain run directory, its checkpoint, or an export")
    p.add_argument("--source", default=None, help="labelled images to probe on (default: the run's source)")
    p.add_argument("--view-size", type=int, default=None, help="view side (default: the run's)")
    p.add_argument("--max-images", type=int, default=2000, help="a random subset of the source (0: all)")
    p.add_argument(
        "--task",
        default="image",
        choices=("image", "objects"),
        help="image: whole-image (multi-)labels; objects: the class of each object's region",
    )
    p.add_argument("--probes", default="linear,knn,attentive", help="comma-separated subset")
    p.add_argument(
        "--baseline",
        default="random",
        choices=("random", "none"),
        help="also probe a randomly initialised encoder of the same architecture",
    )
    p.add_argument("--name", default=None, help="row name of the encoder (default: the checkpoint's)")
    p.add_argument("--seed", type=int, default=0, help="subset, split, probe and baseline seed")
    p.add_argument("--linear-epochs", type=int, default=100)
    p.add_argument("--attentive-epochs", type=int, default=30)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="eval_out", help="folder for eval.json and eval.md")
    _progress_flag(p)
    p.set_defaults(run=_eval)


def _export(args: argparse.Namespace) -> int:
    from agents.export import load_encoder, save_encoder

    path = save_encoder(load_encoder(args.ckpt), args.out)
    print(f"wrote {path} (load it with agents.export.load_encoder({str(path)!r}))")
    return 0


def _export_parser(sub: Any) -> None:
    p = sub.add_parser("export", help="write a run's encoder as .safetensors (or .pt) with its config")
    p.add_argument("--ckpt", required=True, help="a pretrain run directory or its checkpoint")
    p.add_argument("--out", default="encoder.safetensors", help="output file (.safetensors or .pt)")
    p.set_defaults(run=_export)


def _valuemap(args: argparse.Namespace) -> int:
    from agents.export import load_system
    from agents.pretrain import read_run, resolve_data_source
    from agents.systems import METHODS
    from agents.valuemap import heldout_source, write_value_map

    ckpt = Path(args.ckpt)
    if not ckpt.exists():
        raise FileNotFoundError(f"--ckpt {ckpt}: no such run directory or checkpoint")
    data, system_cfg, _ = read_run(ckpt)
    if not system_cfg.is_ab:
        ab = [m for m in METHODS if m.startswith("ab")]
        raise ValueError(f"valuemap needs an AB run ({', '.join(ab)}); {ckpt} is method={system_cfg.method}")
    if args.source is not None:
        source, label = resolve_data_source(args.source), args.source
    else:
        try:
            source, label = heldout_source(data.source), f"the test split of {data.source}"
        except (ValueError, OSError) as err:
            raise ValueError(f"--source is required: the run's source cannot be read here ({err})") from None
        if source is None:
            raise ValueError(
                f"--source is required: the run's source {data.source!r} has no test split (pass an "
                "embedded name such as scenes or photos, a folder, a dataset file or a JSON scenes spec)"
            )
    n = len(source)
    if not 0 <= args.image < n:
        raise ValueError(f"--image must be in [0, {n}) ({label} has {n} images), got {args.image}")
    system = load_system(ckpt, device=args.device)
    png, js = write_value_map(
        system, source, args.image, args.out, view_size=data.view_size, grid=args.grid,
        move_size=args.move_size, distractors=args.distractors, device=args.device,
    )  # fmt: skip
    print(f"wrote {png} and {js}")
    return 0


def _progress_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no progress on stderr (default: a bar on a terminal, else a line every 10 s)",
    )


def _bounded(kind: type, low: float, high: float | None = None, low_open: bool = False) -> Any:
    """An argparse type: a ``kind`` number in ``[low, high]`` (``(low, ...`` with ``low_open``; no
    upper bound when ``high`` is None)."""
    what = "an int" if kind is int else "a number"
    accepted = f"{what} >= {low}" if high is None else f"{what} in {'(' if low_open else '['}{low}, {high}]"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {accepted}, got {text!r}") from None
        if not (value > low if low_open else value >= low) or (high is not None and not value <= high):
            raise argparse.ArgumentTypeError(f"must be {accepted}, got {text!r}")
        return value

    return parse


def _valuemap_parser(sub: Any) -> None:
    from agents.valuemap import MAX_GRID

    p = sub.add_parser(
        "valuemap",
        help="draw where an AB run's value function expects each annotation of one image",
        description="Draw Q(l | x, a) of an AB run for one image: x is the whole image, a the move to a "
        "box centred on each cell of a grid, l each of the image's annotations (objects, classes, "
        "captions or prototypes, by method). Writes a PNG and the numbers as JSON.",
    )
    p.add_argument("--ckpt", required=True, help="a pretrain run directory or its checkpoint file")
    p.add_argument(
        "--source",
        default=None,
        help="images to map: an embedded name, a folder, a dataset file or a JSON scenes spec "
        "(default: the test split of the run's source, for scenes)",
    )
    p.add_argument(
        "--image",
        type=_bounded(int, 0),
        default=0,
        help="index of the image in the source; it must have object boxes (default: 0)",
    )
    p.add_argument("--grid", type=_bounded(int, 2, MAX_GRID), default=9, help="moves per side (default: 9)")
    p.add_argument(
        "--move-size",
        type=_bounded(float, 0.0, 1.0, low_open=True),
        default=None,
        help="side of each move box as a fraction of the image's shorter side (default: the "
        "median size of the image's objects)",
    )
    p.add_argument(
        "--distractors",
        type=_bounded(int, 0, 4096),
        default=16,
        help="absimclr: crops of other images' objects added to the annotation set (default: 16)",
    )
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument(
        "--out", default="valuemap_out", help="folder for the PNG and the JSON (default: valuemap_out)"
    )
    p.set_defaults(run=_valuemap)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vpt`` console script."""
    import vpt_env

    parser = argparse.ArgumentParser(prog="vpt", description="vpt-env: visual pre-training as RL.")
    parser.add_argument("--version", action="version", version=f"vpt-env {vpt_env.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="describe a source: counts, sizes, annotations, skipped files")
    info.add_argument("source", help="an embedded name (photos, scenes, ...), a folder, or a dataset file")
    info.add_argument("--out", default="info_out", help="folder for info.json and contact_sheet.png")
    info.add_argument("--max-images", type=int, default=None, help="read at most this many images")
    info.add_argument("--strict", action="store_true", help="stop at the first unreadable image")
    _progress_flag(info)
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
    bench.add_argument("--threads", type=int, default=None, help="torch CPU threads for timing and training")
    bench.add_argument(
        "--train-steps", type=int, default=0, help="train PPO for this many env steps (0: off)"
    )
    _progress_flag(bench)
    bench.set_defaults(run=_bench_reward)
    _pretrain_parser(sub)
    _eval_parser(sub)
    _export_parser(sub)
    _valuemap_parser(sub)
    args = parser.parse_args(argv)
    if getattr(args, "max_images", None) == 0 and args.command == "eval":
        args.max_images = None
    try:
        return args.run(args)
    except (ValueError, TypeError, OSError) as err:
        print(f"vpt {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
