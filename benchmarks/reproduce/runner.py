"""Run directories, training and probing of the reproduction benchmark.

One run = (row, seed, ordering) = one :func:`agents.pretrain.pretrain` run directory
``<out>/<row>/s<seed>o<ordering>`` holding, besides the trainer's files, ``reproduce.json`` (the
profile fingerprint and configs, written before training), ``train.json`` (written when training
finished) and ``eval.json`` (the probe results, final and per intermediate checkpoint). A finished
run is skipped; an interrupted one resumes (``pretrain`` resumes itself); probe results already in
``eval.json`` are never recomputed.

Seeds: ``seed`` is the model initialisation (``torch.manual_seed`` right before the system is
built; systems build the encoder first, so base, AB and ``random`` rows of one seed start from the
same encoder) and ``ordering`` is ``TrainConfig.seed``, which seeds the sampler (images, crops,
augmentations) and the global RNGs of the training loop.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from agents.checkpoint import LATEST
from agents.eval import (
    ProbeData,
    evaluate_encoder,
    extract_features,
    fit_attentive_probe,
    fit_linear_probe,
    knn_eval,
    probe_views,
)
from agents.eval.report import chance_level
from agents.export import load_encoder
from agents.pretrain import DataConfig, pretrain
from agents.systems import SystemConfig, make_system
from agents.trainer import TrainConfig

from .profiles import Profile, RowSpec, parse_row

__all__ = ["ProbeSet", "Run", "evaluate_run", "plan", "run_status", "train_run"]

PROBE_NAMES = ("linear", "knn", "attentive")
TASKS = {
    "scene": "scene multi-label (mAP), whole images of fresh train-split scenes",
    "region": "object-in-region (top-1): object boxes of the same scenes, split by image",
    "heldout": "object-crop (top-1): probe trained on train-split instances, tested on held-out instances",
}
_STEP_FILE = re.compile(r"^step_(\d{8})\.pt$")


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


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=list))
    tmp.replace(path)


def run_status(run: Run, profile: Profile) -> str:
    """``"done"`` (trained and probed), ``"trained"``, ``"partial"`` (a checkpoint) or ``"todo"``."""
    ev = _read(run.dir / "eval.json")
    trained = (
        run.row.method is None
        or (_read(run.dir / "train.json") or {}).get("fingerprint") == profile.fingerprint()
    )
    if (
        trained
        and ev is not None
        and ev.get("fingerprint") == profile.fingerprint()
        and all(t in ev.get("final", {}) for t in profile.tasks)
    ):
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


def register_training_source(profile: Profile) -> str:
    """Register the profile's pre-training scenes as an embedded dataset name for ``DataConfig.source``.

    ``DataConfig.source`` must be JSON-able (it is written to ``run.json``), so a configured
    ``SceneSource`` cannot be passed; the name carries the profile fingerprint, so ``pretrain``
    refuses to resume a run directory made with other scenes.
    """
    from vpt_env.data.embedded import EMBEDDED

    name = f"reproduce-{profile.name}-{profile.fingerprint()}"
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


def configs(profile: Profile, run: Run, device: str) -> tuple[DataConfig, SystemConfig, TrainConfig]:
    """The three configs of a trained run."""
    if profile.curve_points > 0:
        every, keep = max(1, profile.steps // (profile.curve_points + 1)), profile.curve_points + 1
    else:
        every, keep = max(1, profile.steps // 10), 0
    data = DataConfig(
        source=register_training_source(profile),
        view_size=profile.view_size,
        scale=tuple(profile.scale),
        augment=profile.augment,
        device=device,
        **run.row.data,
    )
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
    return data, system_config(profile, run.row), train


def train_run(run: Run, profile: Profile, device: str) -> dict[str, Any] | None:
    """Train ``run`` (resuming it) unless it already finished; returns its ``train.json`` (None: random)."""
    if run.row.method is None:
        return None
    fp = profile.fingerprint()
    done = _read(run.dir / "train.json")
    if done is not None and done.get("fingerprint") == fp:
        return done
    data, system, train = configs(profile, run, device)
    run.dir.mkdir(parents=True, exist_ok=True)
    meta = _read(run.dir / "reproduce.json")
    if meta is not None and meta.get("fingerprint") != fp:
        raise ValueError(
            f"{run.dir} was made by profile {meta.get('profile')!r} with other settings "
            f"(fingerprint {meta.get('fingerprint')} != {fp}); pass another --out"
        )
    _write(
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
    torch.manual_seed(run.seed)  # model initialisation (the sampler and loop use train.seed)
    result = pretrain(data, system, train)
    if result.get("stopped") != "done":
        raise RuntimeError(f"{run.key} stopped early ({result.get('stopped')}); rerun to resume")
    record = {
        "fingerprint": fp,
        "step": result["step"],
        "images_seen": result["step"] * profile.batch_size,
        "loss": result["loss"],
        "metrics": result["metrics"],
        "wall_s_last_call": time.monotonic() - start,
    }
    _write(run.dir / "train.json", record)
    return record


def random_encoder(profile: Profile, seed: int, device: str) -> torch.nn.Module:
    """The untrained encoder every trained row of ``seed`` starts from."""
    torch.manual_seed(seed)
    return make_system(system_config(profile, parse_row("random"))).encoder.to(device).eval()


# -- probes -------------------------------------------------------------------------------------------


class ProbeSet:
    """Probe views of a profile, rendered once per task and shared by every row.

    * ``scene`` / ``region``: ``probe_images`` fresh train-split scenes (layout seed + 1000), whole
      images / object boxes; :func:`agents.eval.evaluate_encoder` splits them by image (seed 0).
    * ``heldout``: train on the ``region`` object crops, test on the object crops of
      ``probe_test_images`` test-split scenes (object instances never seen in training).
    """

    def __init__(self, profile: Profile, device: str) -> None:
        self.profile, self.device = profile, device
        self.size = profile.probe_view_size or profile.view_size
        self._data: dict[str, ProbeData] = {}

    def _source(self, split: str) -> Any:
        p = self.profile
        n = p.probe_images if split == "train" else p.probe_test_images
        return scene_source(p, split=split, n_images=n, seed=int(p.scenes.get("seed", 0)) + 1000)

    def data(self, name: str) -> ProbeData:
        if name not in self._data:
            src, task = {
                "scene": ("train", "image"),
                "region": ("train", "objects"),
                "heldout_test": ("test", "objects"),
            }[name]
            self._data[name] = probe_views(
                self._source(src), view_size=self.size, task=task, device=self.device
            )
        return self._data[name]

    def evaluate(self, encoder: torch.nn.Module, task: str, probes: tuple[str, ...]) -> dict[str, Any]:
        p = self.profile
        kw = dict(linear_epochs=p.linear_epochs, attentive_epochs=p.attentive_epochs)
        if task in ("scene", "region"):
            out = evaluate_encoder(
                encoder,
                self.data(task),
                view_size=self.size,
                task="image" if task == "scene" else "objects",
                probes=probes,
                seed=0,
                device=self.device,
                knn_k=p.knn_k,
                **kw,
            )
            out["task"] = task
            return out
        if task != "heldout":
            raise ValueError(f"unknown task {task!r}; tasks: {list(TASKS)}")
        return probe_heldout(
            encoder,
            self.data("region"),
            self.data("heldout_test"),
            probes,
            device=self.device,
            knn_k=p.knn_k,
            **kw,
        )


def probe_heldout(
    encoder: torch.nn.Module,
    train: ProbeData,
    test: ProbeData,
    probes: tuple[str, ...],
    *,
    device: str,
    knn_k: int,
    linear_epochs: int,
    attentive_epochs: int,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Top-1 of probes fitted on ``train`` views and scored on ``test`` views (a separate source).

    ``agents.eval.evaluate_encoder`` splits one ProbeData by image; held-out *instances* need a test
    set from another source, so this calls the probes directly (same settings, seed 0).
    """
    if train.class_names != test.class_names:
        raise ValueError("train and test probe sources must share one class space")
    tr, te = train.subset(train.labels >= 0), test.subset(test.labels >= 0)
    ftr = extract_features(encoder, tr.views, batch_size=batch_size, device=device)
    fte = extract_features(encoder, te.views, batch_size=batch_size, device=device)
    out: dict[str, Any] = {"metric": "top1", "task": "heldout"}
    if "linear" in probes:
        out["linear"] = fit_linear_probe(
            ftr.pooled,
            tr.labels,
            fte.pooled,
            te.labels,
            False,
            epochs=linear_epochs,
            batch_size=batch_size,
            seed=0,
        )
    if "knn" in probes:
        out["knn"] = knn_eval(ftr.pooled, tr.labels, fte.pooled, te.labels, False, k=knn_k)
    if "attentive" in probes:
        out["attentive"] = fit_attentive_probe(
            ftr.tokens,
            tr.labels,
            fte.tokens,
            te.labels,
            False,
            epochs=attentive_epochs,
            batch_size=batch_size,
            seed=0,
        )
    out.update(
        n_train=len(tr.labels), n_test=len(te.labels), chance=chance_level(tr.labels, te.labels, False)
    )
    return out


def step_checkpoints(run_dir: Path) -> dict[int, Path]:
    """The kept ``step_XXXXXXXX.pt`` files of a run directory, by step."""
    if not run_dir.is_dir():
        return {}
    return {int(m.group(1)): p for p in run_dir.iterdir() if (m := _STEP_FILE.match(p.name))}


def evaluate_run(run: Run, profile: Profile, probes: ProbeSet, device: str) -> dict[str, Any]:
    """Probe a finished run (final encoder and kept intermediate checkpoints), caching in ``eval.json``.

    Only the results missing from ``eval.json`` are computed.
    """
    fp = profile.fingerprint()
    path = run.dir / "eval.json"
    ev = _read(path) or {}
    if ev.get("fingerprint") != fp:
        ev = {
            "fingerprint": fp,
            "row": run.row.name,
            "seed": run.seed,
            "ordering": run.ordering,
            "final": {},
            "curve": {},
        }
    trained = run.row.method is not None
    ev["images_seen"] = profile.images_seen if trained else 0
    missing = [t for t in profile.tasks if t not in ev["final"]]
    curve_steps = {}
    if trained and profile.curve_points > 0:
        curve_steps = {s: p for s, p in step_checkpoints(run.dir).items() if s < profile.steps}
    todo_curve = {
        s: [t for t in profile.curve_tasks if t not in ev["curve"].get(str(s), {})] for s in curve_steps
    }
    if not missing and not any(todo_curve.values()):
        return ev
    run.dir.mkdir(parents=True, exist_ok=True)
    if missing:
        encoder = load_encoder(run.dir, device) if trained else random_encoder(profile, run.seed, device)
        for task in missing:
            ev["final"][task] = probes.evaluate(encoder, task, PROBE_NAMES)
            _write(path, ev)
    for step, tasks in sorted(todo_curve.items()):
        if not tasks:
            continue
        encoder = load_encoder(curve_steps[step], device)
        entry = ev["curve"].setdefault(str(step), {})
        for task in tasks:
            entry[task] = probes.evaluate(encoder, task, tuple(profile.curve_probes))
            _write(path, ev)
    return ev


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


def profile_record(profile: Profile) -> dict[str, Any]:
    return {
        **dataclasses.asdict(profile),
        "fingerprint": profile.fingerprint(),
        "images_seen": profile.images_seen,
    }
