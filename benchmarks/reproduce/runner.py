"""Run directories and training of the reproduction benchmark (probing: :mod:`.probing`).

One run = (row, seed, ordering) = one :func:`agents.pretrain.pretrain` run directory
``<out>/<row>/s<seed>o<ordering>`` holding, besides the trainer's files, ``reproduce.json`` (the
row fingerprint, written before training), ``train.json`` (written when training finished) and
``eval.json`` (the probe results, final and per intermediate checkpoint), each stamped with the row
fingerprint (:meth:`~.profiles.Profile.fingerprint`: rows that read no caption leave the captions
out). A finished run is skipped; an interrupted one resumes (``pretrain`` resumes itself); probe
results already in ``eval.json`` are never recomputed; finished runs of an earlier report can be
reused (:mod:`.reuse`).

Seeds: ``seed`` is the model initialisation (``pretrain(init_seed=seed)``: ``torch.manual_seed``
right before the system is built; systems build the encoder first, so base, AB and ``random`` rows
of one seed start from the same encoder) and ``ordering`` is ``TrainConfig.seed``, which seeds the
sampler (images, crops, augmentations) and the global RNGs of the training loop.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from agents.checkpoint import LATEST
from agents.pretrain import DataConfig, pretrain
from agents.rundir import NON_NUMERIC_FIELDS, config_differences
from agents.systems import SystemConfig, make_system
from agents.trainer import TrainConfig

from .profiles import Profile, RowSpec, parse_row

__all__ = ["Run", "plan", "random_encoder", "recipe_difference", "row_recipe", "run_status", "train_run"]


@dataclass(frozen=True)
class Run:
    row: RowSpec
    seed: int
    ordering: int
    dir: Path

    @property
    def key(self) -> str:
        return f"{self.row.name}/s{self.seed}o{self.ordering}"


def plan(profile: Profile, rows: list[str], out: Path) -> list[Run]:
    """Every run of ``rows``: seeds x orderings (``random`` has no ordering: seeds only; the
    profile's ``first_seed_rows``: the first seed and ordering only)."""
    runs = []
    for ordering in profile.orderings:  # ordering- then seed-major: early runs give complete rows
        for seed in profile.seeds:
            for name in rows:
                spec = parse_row(name)
                if spec.method is None and ordering != profile.orderings[0]:
                    continue
                first = seed == profile.seeds[0] and ordering == profile.orderings[0]
                if name in profile.first_seed_rows and not first:
                    continue
                o = 0 if spec.method is None else ordering
                runs.append(Run(spec, seed, o, out / name / f"s{seed}o{o}"))
    return runs


def steps_done(run: Run) -> int:
    """Last logged training step of a run directory (0 when none)."""
    try:
        lines = (run.dir / "metrics.jsonl").read_text().splitlines()
        return int(json.loads(lines[-1])["step"]) if lines else 0
    except (OSError, ValueError, KeyError, IndexError):
        return 0


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=list))
    tmp.replace(path)


def run_status(run: Run, profile: Profile) -> str:
    """``"done"`` (trained and probed), ``"trained"``, ``"partial"`` (a checkpoint) or ``"todo"``.

    Raises:
        ValueError: the directory holds a run of this row made with another recipe (see
            :func:`check_recipe`).
    """
    check_recipe(run, profile)
    ev = read_json(run.dir / "eval.json")
    trained = run.row.method is None or profile.made_by(
        (read_json(run.dir / "train.json") or {}).get("fingerprint"), run.row
    )
    if (
        trained
        and ev is not None
        and profile.made_by(ev.get("fingerprint"), run.row)
        and all(t in ev.get("final", {}) for t in profile.tasks)
    ):
        return "done"
    if run.row.method is None:
        return "todo"
    if trained:
        return "trained"
    return "partial" if (run.dir / LATEST).is_file() else "todo"


def check_recipe(run: Run, profile: Profile) -> None:
    """Refuse a run directory whose stored configs (``run.json``, or for a run reused from a report
    the ``recipe`` of its ``train.json``) differ from the row's recipe now.

    The row fingerprint covers what the profile fixes; this covers what the row adds (its
    knobs) and the configs' defaults, so a knob whose meaning changed cannot pass old results off as
    new ones (see :func:`recipe_difference` for what is not compared).

    Raises:
        ValueError: naming the run directory and the first differing field.
    """
    if run.row.method is None:
        return
    stored = read_json(run.dir / "run.json")
    if stored is None:
        stored = (read_json(run.dir / "train.json") or {}).get("recipe")
    if not isinstance(stored, dict):  # none, or unreadable: pretrain's to judge
        return
    diff = recipe_difference(stored, profile, run.row)
    if diff is not None:
        raise ValueError(
            f"{run.dir} holds {run.key} trained with {diff}; move the directory away (or pass another "
            "--out) to rerun it"
        )


#: Config fields a recipe does not compare: those that change no number of a run
#: (:data:`agents.rundir.NON_NUMERIC_FIELDS`: the machine, bookkeeping, ``num_classes``), plus
#: ``source`` (the row fingerprint covers it: its name carries it) and ``seed`` (the ordering: the
#: run's identity, not the row's).
_NOT_RECIPE = NON_NUMERIC_FIELDS | {"source", "seed"}


def row_recipe(profile: Profile, row: RowSpec) -> dict[str, Any]:
    """The row's three configs as ``run.json`` stores them (``system``, ``data``, ``train``; JSON
    values), for any run of the row (seed, ordering and paths aside)."""
    data, system, train = configs(profile, Run(row, 0, 0, Path(".")), "cpu")
    parts = {"system": system.to_dict(), "data": dataclasses.asdict(data), "train": dataclasses.asdict(train)}
    return json.loads(json.dumps(parts, default=list))


def recipe_difference(stored: dict[str, Any], profile: Profile, row: RowSpec) -> str | None:
    """The first field where stored configs (``{"system": ..., "data": ..., "train": ...}``) differ
    from the row's recipe now, as ``"<part> <key>=<old>, but the row's recipe now gives <key>=<new>"``;
    None if none.

    Not compared: fields the stored configs lack (added since: a new field is taken to keep the old
    behaviour by default) and :data:`_NOT_RECIPE`.
    """
    now = row_recipe(profile, row)
    parts = {part: stored[part] for part in ("system", "data", "train") if isinstance(stored.get(part), dict)}
    diffs = config_differences(parts, now, _NOT_RECIPE)
    if not diffs:
        return None
    field, a, b = min(diffs, key=lambda d: ("system", "data", "train").index(d[0].split(".")[0]))
    part, key = field.split(".", 1)
    return f"{part} {key}={a!r}, but the row's recipe now gives {key}={b!r}"


# -- sources --------------------------------------------------------------------------------------

_SCENES: dict[str, Any] = {}


def scene_source(profile: Profile, **overrides: Any) -> Any:
    """A memoised, fully rendered :class:`~vpt_env.data.scenes.SceneSource` of the profile's scenes."""
    from vpt_env.data.scenes import SceneSource

    kwargs = profile.scene_kwargs(**overrides)
    key = json.dumps(kwargs, sort_keys=True, default=list)
    if key not in _SCENES:
        src = SceneSource(**kwargs)
        src.images()  # render once; later pools read from memory
        _SCENES[key] = src
    return _SCENES[key]


def register_training_source(profile: Profile, row: RowSpec) -> str:
    """Register the profile's pre-training scenes as an embedded dataset name for ``DataConfig.source``.

    ``DataConfig.source`` must be JSON-able (it is written to ``run.json``), so a configured
    ``SceneSource`` cannot be passed; the name carries the row fingerprint, so ``pretrain``
    refuses to resume a run directory made with other scenes (or, for a row that reads captions,
    other captions).
    """
    from vpt_env.data.embedded import EMBEDDED

    name = f"reproduce-{profile.name}-{profile.fingerprint(row)}"
    if name not in EMBEDDED:
        EMBEDDED[name] = lambda: scene_source(profile, split="train")
    return name


# -- configs and training ---------------------------------------------------------------------------


def system_config(profile: Profile, row: RowSpec) -> SystemConfig:
    method = row.method or "simclr"  # random: the encoder of any method (built first, same weights)
    return SystemConfig(
        method,
        encoder=profile.encoder,
        encoder_kwargs=dict(profile.encoder_kwargs),
        **{**profile.system, **row.system},
    )


def data_config(profile: Profile, row: RowSpec, device: str) -> DataConfig:
    """The data config of a trained row (the profile's scenes and views, plus the row's knobs)."""
    fields = dict(view_size=profile.view_size, scale=tuple(profile.scale), augment=profile.augment)
    return DataConfig(source=register_training_source(profile, row), device=device, **{**fields, **row.data})


def configs(profile: Profile, run: Run, device: str) -> tuple[DataConfig, SystemConfig, TrainConfig]:
    """The three configs of a trained run."""
    if profile.curve_points > 0:
        # curve_points step files below the last step, plus the one a periodic save may write at
        # (or next to) the end: keep them all (steps not divisible by curve_points + 1 made one more)
        every, keep = max(1, profile.steps // (profile.curve_points + 1)), profile.curve_points + 2
    else:
        every, keep = max(1, profile.steps // 10), 0
    data = data_config(profile, run.row, device)
    train = TrainConfig(
        steps=profile.steps,
        batch_size=profile.batch_size,
        views_per_image=profile.views_per_image,
        lr=profile.lr,
        warmup_steps=profile.warmup_steps,
        weight_decay=profile.weight_decay,
        log_every=max(1, min(10, profile.steps // 4)),
        checkpoint_every=every,
        keep_checkpoints=keep,
        out_dir=str(run.dir),
        seed=run.ordering,
        progress=False,
    )
    train = dataclasses.replace(train, **run.row.train)
    return data, system_config(profile, run.row), train


def train_run(run: Run, profile: Profile, device: str) -> dict[str, Any] | None:
    """Train ``run`` (resuming it) unless it already finished; returns its ``train.json`` (None: random)."""
    if run.row.method is None:
        return None
    fp = profile.fingerprint(run.row)
    done = read_json(run.dir / "train.json")
    if done is not None and profile.made_by(done.get("fingerprint"), run.row):
        return done
    data, system, train = configs(profile, run, device)
    run.dir.mkdir(parents=True, exist_ok=True)
    meta = read_json(run.dir / "reproduce.json")
    if meta is not None and not profile.made_by(meta.get("fingerprint"), run.row):
        raise ValueError(
            f"{run.dir} was made by profile {meta.get('profile')!r} with other settings "
            f"(fingerprint {meta.get('fingerprint')} != {fp}); pass another --out"
        )
    write_json(
        run.dir / "reproduce.json",
        {
            "profile": profile.name,
            "fingerprint": fp,
            "row": run.row.name,
            "seed": run.seed,
            "ordering": run.ordering,
            "images_seen": profile.images_seen,
        },
    )
    start = time.monotonic()
    result = pretrain(data, system, train, init_seed=run.seed)  # the sampler and loop use train.seed
    if result.get("stopped") != "done":
        raise RuntimeError(f"{run.key} stopped early ({result.get('stopped')}); rerun to resume")
    record = {
        "fingerprint": fp,
        "step": result["step"],
        "images_seen": result["step"] * profile.batch_size,
        "loss": result["loss"],
        "metrics": result["metrics"],
        "wall_s_last_call": time.monotonic() - start,
        "recipe": row_recipe(profile, run.row),  # what --reuse checks a stored run against
    }
    write_json(run.dir / "train.json", record)
    return record


def random_encoder(profile: Profile, seed: int, device: str) -> torch.nn.Module:
    """The untrained encoder every trained row of ``seed`` starts from."""
    torch.manual_seed(seed)
    return make_system(system_config(profile, parse_row("random"))).encoder.to(device).eval()


def machine_info(device: str) -> dict[str, Any]:
    """Which machine produced the numbers: CPUs, torch threads, device name, date, versions."""
    import os
    import platform
    import subprocess
    from datetime import datetime, timezone

    name = platform.processor() or platform.machine()
    if device.startswith("cuda") and torch.cuda.is_available():
        name = torch.cuda.get_device_name(torch.device(device))
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                check=False,
                cwd=Path(__file__).parent,
            ).stdout.strip()
            or None
        )
    except OSError:
        commit = None
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "device_name": name,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "commit": commit,
    }
