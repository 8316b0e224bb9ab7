"""Pre-train an encoder: data, system and trainer configs in, a resumable run directory out.

Under ``torchrun`` it initialises the process group from the environment
(:func:`agents.distributed.init_from_env`) and trains with DDP.

A run directory holds ``run.json`` (the three configs and the model's initialisation seed),
``latest.pt`` (the checkpoint: system with its EMA copies, optimizer, scheduler, every RNG state,
step) and ``metrics.jsonl``. Running :func:`pretrain` again on the same
directory resumes it exactly; a directory holding a different run (a field that changes the
numbers differs) is refused, and so is a second process while one trains there
(:mod:`agents.rundir`).

Example:
    >>> import tempfile
    >>> from agents.pretrain import DataConfig, pretrain
    >>> from agents.systems import SystemConfig
    >>> from agents.trainer import TrainConfig
    >>> small = dict(encoder_kwargs={"width": 8}, embed_dim=16, hidden_dim=16, decoder_dim=16)
    >>> out = pretrain(
    ...     DataConfig(source="photos", view_size=16),
    ...     SystemConfig("absimclr", **small),
    ...     TrainConfig(steps=2, batch_size=4, out_dir=tempfile.mkdtemp(), progress=False),
    ... )
    >>> out["step"]
    2
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from agents import distributed, rundir
from agents.checkpoint import atomic_write
from agents.systems import SystemConfig, make_system
from agents.train_config import check_int
from agents.trainer import TrainConfig, Trainer
from vpt_env import TransitionSampler
from vpt_env.core.state import check_range
from vpt_env.data.sources import SubsetSource, resolve_source
from vpt_env.sampling import METHOD_CROP_SCALE

__all__ = [
    "AB_VIEWS",
    "AUGMENTED_BASES",
    "RUN_FILE",
    "DataConfig",
    "base_view_args",
    "build_sampler",
    "pretrain",
    "read_run",
    "resolve_data_source",
    "run_record",
]

#: The configs of a run, next to its checkpoint.
RUN_FILE = "run.json"
#: Accepted values of ``DataConfig.ab_views``.
AB_VIEWS = ("shared", "crops")


@dataclass
class DataConfig:
    """Where the images come from and how the views are drawn."""

    source: str = "scenes"
    """Image source: an embedded set (``scenes``, ``photos``, ``digits``, ...), a folder, a caption
    manifest, a COCO annotation file or WebDataset shards (as ``source=`` of the envs), or scenes with
    other parameters as JSON: ``{"scenes": {"size": 64, "objects": [1, 3], "n_images": 4000}}`` (the
    keys are :class:`~vpt_env.data.scenes.SceneConfig` fields)."""
    max_images: int | None = None
    """Use only the first N images of the source (None: all)."""
    view_size: int = 32
    """Side S of the views in pixels."""
    scale: tuple[float, float] = METHOD_CROP_SCALE
    """RandomResizedCrop area range of the views (docs/method.md: 0.05 to 1)."""
    iou_range: tuple[float, float] | None = None
    """Optional (low, high) bounds on the IoU of a pair of views of one image."""
    augment: bool | None = None
    """Draw a random colour/grayscale/flip/blur augmentation per view. None: on for the
    crop-consistency families (``simclr``, ``dino`` and their AB versions), off otherwise. The
    paper augments the base's views and keeps AB's crop-only (see ``ab_views``); without colour
    augmentation SimCLR and DINO learn the objects' colours instead of their shapes."""
    ab_views: str = "crops"
    """Views of the AB term when the views are augmented: ``"crops"`` (the paper's default, docs/method.md
    section 3: AB sees the same boxes rendered without augmentation, at the cost of one more encoder
    pass over the bootstrap images' views) or ``"shared"`` (the "augmented AB views" ablation: AB reuses
    the base's augmented views and their online forward; the relative box does not encode a flip, so a
    flipped view's move is mirrored against its tokens). No effect on base methods or without
    augmentation (the views are crops only then)."""
    caption_view_scale: tuple[float, float] | None = (0.9, 1.0)
    """Crop area range of the view the CLIP family's image-caption contrast reads (*ours*; open_clip
    trains on crops of 90-100%): a caption describes the whole image, which a crop of 5% of it rarely
    shows. It is one more view per image (``TransitionBatch.base_views``), so AB's ``V`` views stay
    docs/method.md's crops (the paper, too, gives the base its own batch). None: the contrast reads view 0,
    one of AB's crops (as before issue 19)."""
    dino_global_scale: tuple[float, float] | None = (0.4, 1.0)
    """Crop area range of the DINO family's two global crops (DINO's own default, Caron et al. 2021),
    two more views per image (``TransitionBatch.base_views``) that the teacher and the student see;
    the ``V`` views (AB's crops) are the student's local crops, at half size. None: views 0 and 1 of
    the ``V`` are the global crops (as before issue 19), so the teacher sees crops of 5% too."""
    device: str = "cpu"
    """Torch device of the pool, the sampler and the model (``cpu``, ``cuda``, ``cuda:1``)."""
    threads: int | None = None
    """Torch CPU threads (None: torch's default)."""
    strict: bool = False
    """Raise on an unreadable image instead of skipping and counting it."""

    def __post_init__(self) -> None:
        if self.max_images is not None and (
            isinstance(self.max_images, bool) or not isinstance(self.max_images, int) or self.max_images < 1
        ):
            raise ValueError(f"max_images must be None or a positive int, got {self.max_images!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"threads must be None or a positive int, got {self.threads!r}")
        self.scale = _area_range("scale", self.scale)
        if self.iou_range is not None:
            self.iou_range = tuple(self.iou_range)  # type: ignore[assignment]
            check_range("iou_range", self.iou_range, 0.0, 1.0)
        if self.augment is not None and not isinstance(self.augment, bool):
            raise TypeError(f"augment must be None, True or False, got {self.augment!r}")
        if self.ab_views not in AB_VIEWS:
            raise ValueError(f"ab_views must be one of {AB_VIEWS}, got {self.ab_views!r}")
        for name in ("caption_view_scale", "dino_global_scale"):
            if getattr(self, name) is not None:
                setattr(self, name, _area_range(name, getattr(self, name)))


def _area_range(name: str, value: Any) -> tuple[float, float]:
    """``value`` as a crop area range ``(low, high)`` with ``0 < low <= high <= 1``, or ValueError."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be (low, high) with 0 < low <= high <= 1, got {value!r}") from None
    if not 0.0 < low <= high <= 1.0:
        raise ValueError(f"{name} must be (low, high) with 0 < low <= high <= 1, got {value!r}")
    return (low, high)


#: Base methods whose views are augmented when ``DataConfig.augment`` is None.
AUGMENTED_BASES = ("simclr", "dino")


def build_sampler(data: DataConfig, seed: int = 0, method: str | None = None) -> TransitionSampler:
    """The :class:`~vpt_env.TransitionSampler` of a data config (the source read once).

    ``method`` decides ``augment=None`` and whether ``ab_views="crops"`` applies (AB methods only;
    see :class:`DataConfig`).
    """
    augment = data.augment
    if augment is None:
        augment = method is not None and method.removeprefix("ab") in AUGMENTED_BASES
    crop_views = data.ab_views == "crops" and method is not None and method.startswith("ab")
    base_view_scale, base_views = base_view_args(data, method)
    source: Any = resolve_data_source(data.source, data.strict)
    if data.max_images is not None and data.max_images < len(source):
        source = SubsetSource(source, range(data.max_images))
    return TransitionSampler(
        source,
        view_size=data.view_size,
        scale=data.scale,
        iou_range=data.iou_range,
        augment=augment,
        crop_views=crop_views,
        base_view_scale=base_view_scale,
        base_views=base_views,
        device=data.device,
        seed=seed,
        strict=data.strict,
    )


def base_view_args(data: DataConfig, method: str | None) -> tuple[tuple[float, float] | None, int]:
    """``(base_view_scale, base_views)`` of the sampler for ``method``: the crops its base draws for
    itself, one caption view for the CLIP family, two global crops for the DINO family, none else."""
    base = "" if method is None else method.removeprefix("ab")
    return {"clip": (data.caption_view_scale, 1), "dino": (data.dino_global_scale, 2)}.get(base, (None, 1))


def resolve_data_source(spec: str, strict: bool = False) -> Any:
    """The image source of a ``DataConfig.source`` string (as ``pretrain`` reads it).

    Args:
        spec: anything :func:`~vpt_env.data.sources.resolve_source` takes by name (an embedded set,
            a folder, a file), or a JSON ``{"scenes": {SceneConfig fields}}`` spec.
        strict: passed to the reader a path selects.
    """
    if not spec.lstrip().startswith("{"):
        return resolve_source(spec, strict=strict)
    try:
        parsed = json.loads(spec)
    except json.JSONDecodeError as err:
        raise ValueError(f"source looks like JSON but does not parse: {err}") from err
    if not (isinstance(parsed, dict) and list(parsed) == ["scenes"] and isinstance(parsed["scenes"], dict)):
        raise ValueError(f'a JSON source must be {{"scenes": {{SceneConfig fields}}}}, got {spec!r}')
    return _scene_source(json.dumps(parsed["scenes"], sort_keys=True))


@functools.lru_cache(maxsize=2)
def _scene_source(fields_json: str) -> Any:
    """The scenes of a JSON source, built once per process for the last two specs (rendering
    thousands of scenes takes seconds; a source is read-only, so runs may share it)."""
    from vpt_env.data.scenes import SceneSource

    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(fields_json).items()}
    source = SceneSource(**fields)
    source.images()  # render once: the pools of later runs read them from memory
    return source


def run_record(data: DataConfig, system: SystemConfig, train: TrainConfig, init_seed: int) -> dict[str, Any]:
    """The configs of a run as ``run.json`` stores them (``data``, ``system``, ``train``, ``run``)."""
    return {
        "data": dataclasses.asdict(data),
        "system": system.to_dict(),
        "train": dataclasses.asdict(train),
        "run": {"init_seed": init_seed},
    }


def _load_record(path: Path) -> dict[str, Any]:
    """The parsed ``run.json`` at ``path``; ValueError naming the file when it is not a run record."""
    try:
        record = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(
            f"{path} is not valid JSON ({err}); it is not a readable `vpt pretrain` run record"
        ) from None
    if not isinstance(record, dict) or not all(
        isinstance(record.get(k), dict) for k in ("data", "system", "train")
    ):
        raise ValueError(
            f"{path} is not a `vpt pretrain` run record: expected an object with 'data', 'system' and "
            "'train' objects"
        )
    return record


def read_run(path: str | Path) -> tuple[DataConfig, SystemConfig, TrainConfig]:
    """The configs of a run directory (or of the directory of a checkpoint file in it)."""
    path = Path(path)
    run_dir = path if path.is_dir() else path.parent
    record_path = run_dir / RUN_FILE
    if not record_path.is_file():
        raise FileNotFoundError(f"{record_path} not found: {path} is not a `vpt pretrain` run")
    record = rundir.with_legacy_fields(_load_record(record_path))
    return (
        DataConfig(**record["data"]),
        SystemConfig.from_dict(record["system"]),
        TrainConfig(**record["train"]),
    )


def pretrain(
    data: DataConfig,
    system: SystemConfig,
    train: TrainConfig,
    *,
    resume: bool = True,
    init_seed: int | None = None,
) -> dict[str, Any]:
    """Pre-train ``system`` on ``data`` with ``train`` (resuming ``train.out_dir`` if it holds this run).

    The run owns ``out_dir`` while it lives (:func:`agents.rundir.hold`). A directory holding a run
    is resumed only if every field that changes the numbers matches (all but
    :data:`agents.rundir.NON_NUMERIC_FIELDS`; ``steps`` may change: the run is extended or cut
    short, and ``run.json`` records where). ``run.json`` is written (atomically) once the
    checkpoint has loaded.

    Args:
        data: images and views.
        system: the method and its knobs (``num_classes`` is filled in from the source).
        train: steps, batch, optimiser, checkpoints; ``out_dir`` is the run directory.
        resume: continue from ``out_dir/latest.pt`` when it exists; False starts over, deleting the
            old run's checkpoints and metrics.
        init_seed: seed of the model initialisation (``torch.manual_seed`` right before the system
            is built); None: ``train.seed``. Recorded in ``run.json`` as ``run.init_seed``.

    Returns:
        The trainer's summary (``step``, ``loss``, ``metrics``, ``stopped``) plus
        ``out_dir`` and ``images`` (the number of images in the pool).

    Raises:
        RunDirectoryLocked: another process trains into ``out_dir``.
        ValueError: ``out_dir`` holds a run with other settings (naming every differing field), or
            a ``run.json`` that is not a readable run record (the checkpoints are left as they are).
    """
    init_seed = train.seed if init_seed is None else init_seed
    check_int("init_seed", init_seed, 0)
    if data.threads is not None:
        torch.set_num_threads(data.threads)
    if distributed.init_from_env() and torch.device(data.device).type == "cuda":
        # Under torchrun each rank drives its own GPU.
        data = dataclasses.replace(data, device=f"cuda:{os.environ.get('LOCAL_RANK', '0')}")
    out = Path(train.out_dir)
    main = distributed.is_main_process()
    with rundir.hold(out) if main else contextlib.nullcontext():
        old = _check_resumable(out, run_record(data, system, train, init_seed)) if resume else None
        sampler = build_sampler(data, seed=train.seed, method=system.method)
        classes = sampler.pool.annotations.num_classes
        if system.num_classes is None and classes:
            system = dataclasses.replace(system, num_classes=classes)
        torch.manual_seed(init_seed)  # the model's initialisation (the loop seeds its own RNGs)
        model = make_system(system).to(data.device)
        trainer = Trainer(model, sampler, train)

        def write_record() -> None:  # once the checkpoint has loaded: a record never lies
            if not main:
                return
            record = run_record(data, system, train, init_seed)
            history = list(old.get("history", [])) if old is not None and trainer.step > 0 else []
            if old is not None and trainer.step > 0 and old["train"].get("steps") != train.steps:
                history.append({"step": trainer.step, "steps": [old["train"].get("steps"), train.steps]})
            if history:
                record["history"] = history
            atomic_write(out / RUN_FILE, lambda f: f.write(json.dumps(record, indent=2).encode()))

        result = trainer.fit(resume=resume, on_start=write_record)
    return {**result, "out_dir": str(out), "images": len(sampler.pool)}


def _check_resumable(out: Path, given: dict[str, Any]) -> dict[str, Any] | None:
    """The stored record of ``out`` (None without one), if it is the run ``given`` describes.

    Checked before the images load, to fail fast.

    Raises:
        ValueError: the record is unreadable, or differs in a field that changes the numbers.
    """
    previous = out / RUN_FILE
    if not previous.is_file():
        return None
    try:
        old = _load_record(previous)
    except ValueError as err:
        raise ValueError(
            f"{err}; pass another --out-dir, or --no-resume to start over (deleting it resumes the "
            "checkpoints with the configs given, checked only against the checkpoint's training config)"
        ) from None
    diffs = rundir.config_differences(old, given, rundir.NON_NUMERIC_FIELDS | rundir.RESUMABLE_FIELDS)
    if diffs:
        raise ValueError(
            f"{out} holds a run with other settings: {rundir.describe(diffs)}; pass the run's own values "
            "to resume it, another --out-dir, or --no-resume to start over (deletes its checkpoints)"
        )
    return old
