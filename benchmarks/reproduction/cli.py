"""Command line of ``benchmarks/reproduce.py`` (see its docstring)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from .probing import ProbeSet, evaluate_run, write_row_value_map
from .profiles import PROFILES, expand_rows
from .report import write_outputs
from .reuse import reuse_runs
from .runner import machine_info, plan, read_json, run_status, steps_done, train_run

RESULTS = Path(__file__).resolve().parents[1] / "results" / "reproduce"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="benchmarks/reproduce.py",
        description="Reproduce the paper's AB-vs-base comparisons at small scale.",
    )
    p.add_argument("--profile", default="cpu-quick", choices=sorted(PROFILES))
    p.add_argument(
        "--rows",
        default=None,
        help="comma-separated rows or groups: default, pairs, ablations, all; rows: random, "
        "supervised, clip, abclip, simclr, absimclr, dino, abdino, and ablations "
        "<ab>-<knob>[-<knob>...] with knobs gamma<g>, noact, noema, v<views>, augab, scale<low>, "
        "iou<lo>_<hi>, w<weight>, crops, nopsigrad (abdino) "
        "(default: the profile's)",
    )
    p.add_argument(
        "--out", default=None, help="output directory (default: benchmarks/results/reproduce/<profile>)"
    )
    p.add_argument("--device", default=None, help="torch device (default: the profile's)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the profile's)")
    p.add_argument("--seeds", default=None, help="override the profile's seeds, e.g. 0,1")
    p.add_argument("--orderings", default=None, help="override the profile's data orderings, e.g. 0,1")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=JSON",
        help="override a profile field for calibration: a config field (data.scale=[0.2,1], "
        "system.gamma=0.9, train.steps=300), a scene field (scenes.objects=[1,2]) or a probe field "
        "(probe_images=500) "
        "(JSON values; repeatable; changes the runs' identities: they train again)",
    )
    p.add_argument(
        "--shard",
        default=None,
        metavar="K/N",
        help="run only every N-th run of the plan, starting at K (0-based), and write no report: run "
        "N processes on one machine (e.g. one GPU), then --report-only",
    )
    p.add_argument(
        "--time-budget",
        type=float,
        default=None,
        metavar="SECONDS",
        help="start no new run after this many seconds (a run in progress finishes; the rest stays todo)",
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        help="train and probe nothing: report the runs already done and list the missing ones",
    )
    p.add_argument(
        "--reuse",
        action="append",
        default=[],
        metavar="RESULTS_JSON",
        help="take finished runs from an earlier report's results.json where a stored run has a planned "
        "run's identity (e.g. SimCLR/DINO runs made with other captions, which they never read) "
        "(repeatable)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    p.add_argument("--no-plots", action="store_true")
    return p


def parse_ints(text: str, flag: str) -> tuple[int, ...]:
    """``"0,1,2"`` -> ``(0, 1, 2)``; anything else exits naming ``flag``."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or any(v < 0 for v in values):
        raise SystemExit(f"{flag} {text!r}: expected comma-separated non-negative ints, e.g. 0,1,2")
    return values


def _shard(text: str) -> tuple[int, int]:
    k, sep, n = text.partition("/")
    try:
        k_, n_ = int(k), int(n)
    except ValueError:
        k_, n_ = -1, 0
    if not sep or not 0 <= k_ < n_:
        raise SystemExit(f"--shard {text!r}: expected K/N with 0 <= K < N, e.g. 0/3")
    return k_, n_


def apply_overrides(profile: Any, items: list[str]) -> Any:
    """``profile`` with ``FIELD=JSON`` overrides: ``<config>.<field>`` sets one field of the profile's
    ``data``, ``system`` or ``train`` config, ``scenes.<key>`` one scene keyword, and a bare name a
    profile field (``probe_images``); ``<config>={...}`` sets several fields of a config at once."""
    names = {f.name for f in dataclasses.fields(profile)}
    for item in items:
        if item.partition("=")[0] in _HARNESS_FIELDS:
            raise SystemExit(f"--set {item!r}: the harness sets this field for every run (see run_configs)")
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected FIELD=JSON")
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = value  # a bare string
        field, _, sub = key.partition(".")
        if field not in names:
            raise SystemExit(
                f"--set {item!r}: unknown profile field {field!r}; fields: {', '.join(sorted(names))} "
                "(a config field is data.<name>, system.<name> or train.<name>)"
            )
        current = getattr(profile, field)
        values = {sub: parsed} if sub else parsed
        try:
            if dataclasses.is_dataclass(current):
                if not isinstance(values, dict):
                    raise SystemExit(f"--set {item!r}: {field} takes <field>=JSON or a JSON object")
                fix = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
                parsed = dataclasses.replace(current, **fix)
            elif sub:
                parsed = {**current, sub: tuple(parsed) if isinstance(parsed, list) else parsed}
            elif isinstance(parsed, list):
                parsed = tuple(parsed)
            profile = dataclasses.replace(profile, **{field: parsed})
        except (TypeError, ValueError) as e:
            raise SystemExit(f"--set {item!r}: {e}") from e
    return profile


#: Fields :func:`~.profiles.run_configs` sets per row and run (``--set`` refuses them).
_HARNESS_FIELDS = frozenset({
    "data.source", "system.method", "train.seed", "train.out_dir", "train.log_every",
    "train.checkpoint_every", "train.keep_checkpoints", "train.progress",
})  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    profile = apply_overrides(PROFILES[args.profile], args.set)
    if args.seeds:
        profile = dataclasses.replace(profile, seeds=parse_ints(args.seeds, "--seeds"))
    if args.orderings:
        profile = dataclasses.replace(profile, orderings=parse_ints(args.orderings, "--orderings"))
    data = profile.data
    profile = dataclasses.replace(
        profile,
        data=dataclasses.replace(
            data, device=args.device or data.device, threads=args.threads or data.threads
        ),
    )
    device = profile.data.device
    if profile.data.threads:
        torch.set_num_threads(profile.data.threads)
    out = Path(args.out) if args.out else RESULTS / profile.name
    rows = expand_rows(profile, args.rows)
    runs = plan(profile, rows, out)
    machine = machine_info(device)
    print(f"reproduce: profile {profile.name} ({profile.description})")
    print(
        f"machine: {machine['device_name']} ({device}), {machine['cpu_count']} CPUs, "
        f"{machine['torch_threads']} torch threads, {machine['date']}"
    )
    system, data, train = profile.system, profile.data, profile.train
    print(
        f"encoder {system.encoder} {system.encoder_kwargs}, views {data.view_size}px x "
        f"{train.views_per_image}, {train.steps} steps x {train.batch_size} = {profile.images_seen} "
        f"images seen per run; seeds {list(profile.seeds)}, orderings {list(profile.orderings)}; out {out}"
    )
    if args.time_budget is not None and not args.time_budget >= 0:
        raise SystemExit(f"--time-budget {args.time_budget}: expected seconds >= 0")
    if args.shard:
        k, n = _shard(args.shard)
        runs = runs[k::n]
        print(f"shard {k}/{n}: {len(runs)} runs")
    if args.reuse:
        try:
            reused = reuse_runs(runs, [Path(f) for f in args.reuse], profile.tasks, write=not args.dry_run)
        except ValueError as e:
            raise SystemExit(f"reproduce: {e}") from e
        verb = "would reuse (the plan below lists them as todo)" if args.dry_run else "reused"
        for path, r in reused.items():
            print(f"{verb} {r['written']} finished runs from {path}")
            if r["skipped"]:
                print(f"  not reused ({len(r['skipped'])}): " + ", ".join(r["skipped"]))
    if args.dry_run:
        return _dry_run(runs, profile)
    probes = ProbeSet(profile)
    records: list[dict[str, Any]] = []
    missing: list[str] = []
    mapped: dict[str, Path | None] = {}  # row -> its value map (AB rows: the first finished run's)
    began = time.monotonic()
    for i, run in enumerate(runs, 1):
        status = run_status(run, profile.tasks)
        start = time.monotonic()
        late = args.time_budget is not None and start - began > args.time_budget
        if status != "done" and (args.report_only or late):
            missing.append(f"{run.key} ({status})")
            continue
        if status == "done":
            print(f"[{i}/{len(runs)}] {run.key}: done, skipped", flush=True)
        else:
            print(f"[{i}/{len(runs)}] {run.key}: {status} -> training and probing", flush=True)
        train = (
            train_run(run, profile) if status in ("todo", "partial") else read_json(run.dir / "train.json")
        )
        trained = time.monotonic()
        ev = evaluate_run(run, profile, probes)
        if status != "done":
            scores = ", ".join(
                f"{t} {100 * r['attentive'][r['metric']]:.1f}"
                for t, r in ev["final"].items()
                if "attentive" in r
            )
            print(
                f"    {time.monotonic() - start:.1f} s (training {trained - start:.1f} s, probing "
                f"{time.monotonic() - trained:.1f} s); attentive probe: {scores}",
                flush=True,
            )
        if mapped.get(run.row.name) is None and not args.no_plots:
            mapped[run.row.name] = write_row_value_map(run, profile, probes, out)
        records.append(
            {
                "key": run.key,
                "row": run.row.name,
                "seed": run.seed,
                "ordering": run.ordering,
                "dir": str(run.dir),
                "train": train,
                "eval": ev,
            }
        )
    if probes.render_s:
        print(
            "probe views rendered in "
            + ", ".join(f"{name} {s:.1f} s" for name, s in probes.render_s.items()),
            flush=True,
        )
    if missing:
        why = "--report-only" if args.report_only else f"past the time budget of {args.time_budget:g} s"
        print(f"not run ({why}): {len(missing)} runs: " + ", ".join(missing))
    if args.shard:
        return 0
    if not records:
        print("no finished runs to report")
        return 1
    paths = write_outputs(out, profile, machine, records, plots=not args.no_plots, missing=missing)
    print()
    print(paths["table"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _dry_run(runs: list[Any], profile: Any) -> int:
    remaining = 0
    est = 0.0
    print(f"plan: {len(runs)} runs")
    for run in runs:
        status = run_status(run, profile.tasks)
        left = 0
        if run.row.method is not None and status in ("todo", "partial"):
            left = profile.steps - steps_done(run)
        remaining += left
        cost = 1.5 if run.row.method and run.row.method.startswith("ab") else 1.0
        est += left * cost * (profile.est_step_s or 0.0)
        seen = profile.images_seen if run.row.method else 0
        print(f"  {run.key:32s} {status:8s} images seen {seen:>9d}  steps left {left:>6d}  {run.dir}")
    line = f"training steps left: {remaining}"
    if profile.est_step_s:
        line += f" (~{est / 60:.0f} min at ~{profile.est_step_s} s per base step, AB ~1.5x; probes extra)"
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
