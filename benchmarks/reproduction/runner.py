"""Run directories and training of the reproduction benchmark (probing: :mod:`.probing`).

One run = (row, seed, ordering) = one :func:`agents.pretrain.pretrain` run directory
``<out>/<row>/s<seed>o<ordering>`` holding, besides the trainer's files, ``train.json`` (written
when training finished) and ``eval.json`` (the probe results, final and per intermediate
checkpoint), each stamped with the run's identity (:func:`~.profiles.run_identity`: the hash of its
resolved configs). A run whose ``eval.json`` carries its identity is done and skipped; an
interrupted one resumes (``pretrain`` resumes itself, and refuses a directory trained with other
configs); probe results already in ``eval.json`` under the identity are never recomputed; finished
runs of an earlier report with the same identity can be reused (:mod:`.reuse`).

Seeds: ``seed`` is the model initialisation (``pretrain(init_seed=seed)``: ``torch.manual_seed``
right before the system is built; systems build the encoder first, so base, AB and ``random`` rows
of one seed start from the same encoder) and ``ordering`` is ``TrainConfig.seed``, which seeds the
sampler (images, crops, augmentations) and the global RNGs of the training loop.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from agents.checkpoint import LATEST
from agents.pretrain import RUN_FILE, DataConfig, pretrain, run_record
from agents.rundir import config_differences, describe
from agents.systems import SystemConfig, make_system
from agents.train_config import TrainConfig

from .profiles import Profile, RowSpec, parse_row, run_configs, run_identity

__all__ = ["Run", "plan", "random_encoder", "run_status", "train_run"]


@dataclass(frozen=True)
class Run:
    """One planned run: a row at a model seed and a data ordering, its directory and its identity."""

    row: RowSpec
    seed: int
    ordering: int
    dir: Path
    identity: str

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
                runs.append(
                    Run(spec, seed, o, out / name / f"s{seed}o{o}", run_identity(profile, spec, seed, o))
                )
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


def run_status(run: Run, tasks: tuple[str, ...]) -> str:
    """``"done"`` (trained and probed), ``"trained"``, ``"partial"`` (a checkpoint) or ``"todo"``,
    judged by the identity that ``train.json`` and ``eval.json`` carry (a record of another identity
    counts as absent: the run is trained or probed again, and ``pretrain`` refuses a checkpoint
    trained with other configs)."""
    ev = read_json(run.dir / "eval.json") or {}
    trained = (
        run.row.method is None or (read_json(run.dir / "train.json") or {}).get("identity") == run.identity
    )
    if trained and ev.get("identity") == run.identity and all(t in ev.get("final", {}) for t in tasks):
        return "done"
    if run.row.method is None:
        return "todo"
    if trained:
        return "trained"
    return "partial" if (run.dir / LATEST).is_file() else "todo"


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


# -- configs and training ---------------------------------------------------------------------------


def train_run(run: Run, profile: Profile) -> dict[str, Any] | None:
    """Train ``run`` (resuming it) unless it already finished; returns its ``train.json`` (None: random)."""
    if run.row.method is None:
        return None
    done = read_json(run.dir / "train.json")
    if done is not None and done.get("identity") == run.identity:
        return done
    data, system, train = run_configs(profile, run.row, run.ordering, str(run.dir))
    _check_directory(run, data, system, train)
    run.dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    result = pretrain(data, system, train, init_seed=run.seed)  # the sampler and loop use train.seed
    if result.get("stopped") != "done":
        raise RuntimeError(f"{run.key} stopped early ({result.get('stopped')}); rerun to resume")
    record = {
        "identity": run.identity,
        "step": result["step"],
        "images_seen": result["step"] * profile.batch_size,
        "loss": result["loss"],
        "metrics": result["metrics"],
        "wall_s_last_call": time.monotonic() - start,
    }
    write_json(run.dir / "train.json", record)
    return record


def _check_directory(run: Run, data: DataConfig, system: SystemConfig, train: TrainConfig) -> None:
    """Refuse a run directory whose checkpoint was trained with other settings than ``run``'s.

    ``pretrain`` refuses the fields that change the numbers but lets a run be extended or cut short
    (``steps``) and move between machines (``device``); a reproduction run is the same run only at
    the same length and on the same kind of device (CUDA trains in bf16), so those count here too.

    Raises:
        ValueError: naming the directory and every differing field.
    """
    stored = read_json(run.dir / RUN_FILE)
    if not isinstance(stored, dict) or not isinstance(stored.get("train"), dict):
        return  # none (a fresh run), or not a run record: pretrain's to judge
    now = json.loads(json.dumps(run_record(data, system, train, run.seed), default=list))
    diffs = config_differences(stored, now)
    for part, key, kind in (("train", "steps", None), ("data", "device", torch.device)):
        old, new = stored.get(part, {}).get(key), now[part][key]
        if old is not None and (kind(old).type if kind else old) != (kind(new).type if kind else new):
            diffs.append((f"{part}.{key}", old, new))
    if diffs:
        raise ValueError(
            f"{run.dir} holds {run.key} trained with other settings: {describe(diffs)}; move the "
            "directory away (or pass another --out) to train it again"
        )


def random_encoder(profile: Profile, seed: int) -> torch.nn.Module:
    """The untrained encoder every trained row of ``seed`` starts from."""
    torch.manual_seed(seed)
    _, system, _ = run_configs(profile, parse_row("random"))
    return make_system(system).encoder.to(profile.data.device).eval()


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
