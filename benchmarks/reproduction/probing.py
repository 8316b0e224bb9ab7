"""Probing of the reproduction benchmark: the probe views shared by every row, and each run's probes.

Three tasks (:data:`TASKS`) x three probes (:data:`PROBE_NAMES`) on the frozen final encoder of a
run, and the curve tasks on its kept intermediate checkpoints; results are cached in the run's
``eval.json`` under the run's identity and never recomputed.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import torch

from agents.checkpoint import LATEST
from agents.eval import (
    ProbeData,
    evaluate_encoder,
    probe_views,
)
from agents.export import load_encoder, load_system
from agents.mechanism import fixed_batches, mechanism_metrics
from agents.pretrain import build_sampler
from agents.valuemap import write_value_map

from .profiles import Profile, run_configs
from .runner import Run, random_encoder, read_json, scene_source, write_json

__all__ = [
    "MECHANISM_BATCHES",
    "PROBE_NAMES",
    "TASKS",
    "ProbeSet",
    "evaluate_run",
    "run_mechanism",
    "step_checkpoints",
    "write_row_value_map",
]

PROBE_NAMES = ("linear", "knn", "attentive")
TASKS = {
    "scene": "scene multi-label (mAP), whole images of fresh train-split scenes",
    "region": "object-in-region (top-1): object boxes of the same scenes, split by image",
    "heldout": "object-crop (top-1): probe trained on train-split instances, tested on held-out instances",
}
_STEP_FILE = re.compile(r"^step_(\d{8})\.pt$")
#: Batches (of the profile's batch size, drawn from the training scenes with a fixed seed, the same
#: for every row) on which :func:`run_mechanism` measures the mechanism metrics.
MECHANISM_BATCHES = 3
#: The held-out (test-split) probe scene whose value maps the report draws, one per AB row.
VALUEMAP_IMAGE = 0


class ProbeSet:
    """Probe views of a profile, rendered once per task and shared by every row.

    * ``scene`` / ``region``: ``probe_images`` fresh train-split scenes (layout seed + 1000), whole
      images / object boxes; :func:`agents.eval.evaluate_encoder` splits them by image (seed 0).
    * ``heldout``: train on the ``region`` object crops, test on the object crops of
      ``probe_test_images`` test-split scenes (object instances never seen in training).
    """

    def __init__(self, profile: Profile) -> None:
        self.profile, self.device = profile, profile.data.device
        self.size = profile.probe_view_size or profile.data.view_size
        self._data: dict[str, ProbeData] = {}
        self.render_s: dict[str, float] = {}  # seconds spent rendering each task's probe views

    def source(self, split: str) -> Any:
        """The probe scenes of ``split`` ("train": fresh train-split scenes; "test": held-out instances)."""
        p = self.profile
        n = p.probe_images if split == "train" else p.probe_test_images
        return scene_source(p, split=split, n_images=n, seed=int(p.scenes.get("seed", 0)) + 1000)

    def data(self, name: str) -> ProbeData:
        if name not in self._data:
            start = time.monotonic()
            src, task = {
                "scene": ("train", "image"),
                "region": ("train", "objects"),
                "heldout_test": ("test", "objects"),
            }[name]
            self._data[name] = probe_views(
                self.source(src), view_size=self.size, task=task, device=self.device
            )
            self.render_s[name] = time.monotonic() - start
        return self._data[name]

    def evaluate(self, encoder: torch.nn.Module, task: str, probes: tuple[str, ...]) -> dict[str, Any]:
        """``task``'s probe results for ``encoder``, with ``wall_s``: the seconds spent probing.

        ``wall_s`` excludes rendering the probe views (once per process; :attr:`render_s`).
        """
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; tasks: {list(TASKS)}")
        for name in ("region", "heldout_test") if task == "heldout" else (task,):
            self.data(name)  # render first, outside the timing
        start = time.monotonic()
        out = self._evaluate(encoder, task, probes)
        out["wall_s"] = round(time.monotonic() - start, 3)
        return out

    def _evaluate(self, encoder: torch.nn.Module, task: str, probes: tuple[str, ...]) -> dict[str, Any]:
        p = self.profile
        if task == "heldout":  # train on the region crops, test on unseen object instances
            data, test = self.data("region"), self.data("heldout_test")
            if data.class_names != test.class_names:
                raise ValueError("train and test probe sources must share one class space")
        else:
            data, test = self.data(task), None
        out = evaluate_encoder(
            encoder,
            data,
            view_size=self.size,
            task="image" if task == "scene" else "objects",
            multilabel=False if task == "heldout" else None,
            probes=probes,
            seed=0,
            device=self.device,
            knn_k=p.knn_k,
            linear_epochs=p.linear_epochs,
            attentive_epochs=p.attentive_epochs,
            test=test,
        )
        out["task"] = task
        return out


def step_checkpoints(run_dir: Path) -> dict[int, Path]:
    """The kept ``step_XXXXXXXX.pt`` files of a run directory, by step."""
    if not run_dir.is_dir():
        return {}
    return {int(m.group(1)): p for p in run_dir.iterdir() if (m := _STEP_FILE.match(p.name))}


def evaluate_run(run: Run, profile: Profile, probes: ProbeSet) -> dict[str, Any]:
    """Probe a finished run (final encoder and kept intermediate checkpoints), caching in ``eval.json``.

    Beside the probes, ``eval.json`` holds the run's mechanism metrics (:func:`run_mechanism`) under
    ``"mechanism"``: ``{"final": {...}, "curve": {step: {...}}}``. Only the results missing from
    ``eval.json`` are computed.
    """
    path, device = run.dir / "eval.json", profile.data.device
    ev = read_json(path) or {}
    if ev.get("identity") != run.identity:
        ev = {
            "identity": run.identity,
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
    # A run reused from another report has no checkpoint here: its mechanism metrics come with its
    # eval.json where that report measured them, and are not measured again.
    has_model = trained and (run.dir / LATEST).is_file()
    mech = ev.setdefault("mechanism", {"final": None, "curve": {}}) if has_model else None
    todo_mech = [] if mech is None else [s for s in curve_steps if str(s) not in mech["curve"]]
    mech_final = mech is not None and mech["final"] is None
    if not missing and not any(todo_curve.values()) and not todo_mech and not mech_final:
        return ev
    run.dir.mkdir(parents=True, exist_ok=True)
    if missing:
        encoder = load_encoder(run.dir, device) if trained else random_encoder(profile, run.seed)
        for task in missing:
            ev["final"][task] = probes.evaluate(encoder, task, PROBE_NAMES)
            write_json(path, ev)
    for step, tasks in sorted(todo_curve.items()):
        if not tasks:
            continue
        encoder = load_encoder(curve_steps[step], device)
        entry = ev["curve"].setdefault(str(step), {})
        for task in tasks:
            entry[task] = probes.evaluate(encoder, task, tuple(profile.curve_probes))
            write_json(path, ev)
    if mech is not None and (mech_final or todo_mech):
        if mech_final:
            mech["final"] = run_mechanism(run, profile, run.dir)
            write_json(path, ev)
        for step in sorted(todo_mech):
            mech["curve"][str(step)] = run_mechanism(run, profile, curve_steps[step])
            write_json(path, ev)
    return ev


def run_mechanism(run: Run, profile: Profile, checkpoint: Path) -> dict[str, Any]:
    """The mechanism metrics (:mod:`agents.mechanism`) of a run's system at ``checkpoint``.

    Measured on :data:`MECHANISM_BATCHES` batches of the run's own data config (views, crops, AB
    views) drawn with a fixed seed: every row of a profile, and every checkpoint of a run, is measured
    on the same images and boxes (rows with other views or crops draw their own).
    """
    start, device = time.perf_counter(), profile.data.device
    data, _, train = run_configs(profile, run.row, run.ordering)
    sampler = build_sampler(data, seed=0, method=run.row.method)
    batches = fixed_batches(sampler, MECHANISM_BATCHES, train.batch_size, train.views_per_image)
    system = load_system(checkpoint, device)
    out = mechanism_metrics(system, batches, sampler.captions)
    out["seconds"] = round(time.perf_counter() - start, 2)
    return out


def write_row_value_map(run: Run, profile: Profile, probes: ProbeSet, out: Path) -> Path | None:
    """The value map (:mod:`agents.valuemap`) of an AB run's final system on held-out scene
    :data:`VALUEMAP_IMAGE` (a test-split probe scene), as ``out/valuemaps/<row>.png`` (and ``.json``).

    Written once per row (the caller passes the row's finished runs until one has a checkpoint: a
    run reused from another report has none); an existing map is kept. Returns the PNG's path, or
    None for a row without an AB head or a run without a checkpoint.
    """
    if run.row.method is None or not run.row.method.startswith("ab"):
        return None
    png = out / "valuemaps" / f"{run.row.name}.png"
    if png.is_file():
        return png
    if not (run.dir / LATEST).is_file():  # reused from another report: the row's next run draws it
        return None
    device = profile.data.device
    system = load_system(run.dir, device)
    png, _ = write_value_map(
        system, probes.source("test"), VALUEMAP_IMAGE, png.parent, view_size=profile.data.view_size,
        device=device, stem=run.row.name,
    )  # fmt: skip
    return png
