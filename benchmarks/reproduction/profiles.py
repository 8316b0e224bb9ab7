"""Named profiles of the reproduction benchmark and the rows (methods and ablations) they can run.

A :class:`Profile` fixes everything a comparison holds equal: the scenes, the view size, the
encoder, steps x batch (so images seen), the optimiser, the seeds and data orderings, and the
probe settings. A *row* is one encoder-producing recipe:

* ``random``: the seed's initial encoder, untrained (the floor; it is exactly the encoder every
  trained row of that seed starts from: systems build their encoder first).
* ``supervised``: the supervised base on the scenes' object labels (the ceiling).
* a base (``clip``, ``simclr``, ``dino``) or its AB version (``abclip``, ...).
* an ablation of an AB row: ``<ab>-<knob>[-<knob>...]``. The profiles follow docs/method.md (4 views per
  image, crops of 5-100% of the image, AB's views crops only); a knob departs from it in one named way:

  - ``gamma<g>``: the AB discount (``SystemConfig.gamma``; 0.5 by default);
  - ``noact``: no action tokens (``SystemConfig.ab_actions=False``: Q predicts the average over crops);
  - ``noema``: no EMA target (both AB target terms from the online modules,
    ``SystemConfig.ab_ema_target=False``; the EMA copies still serve the base, i.e. DINO's teacher.
    Before this knob, ``noema`` meant ``ema_rate=1.0``, which also removed DINO's teacher and made it
    collapse: CALIBRATION.md c22);
  - ``augab``: AB's views are the base's augmented views (colour, grayscale, flip, blur) instead of crops
    only (``DataConfig.ab_views="shared"``; a no-op where the base's views are not augmented, i.e. the
    CLIP pair); ``crops`` names the default explicitly (``ab_views="crops"``, kept for old row names);
  - ``v<views>``: views per image (``TrainConfig.views_per_image``), e.g. ``v2``: with 2 views the max
    over next moves has one candidate, the move back;
  - ``scale<low>``: crop area range ``(low, 1)`` of every view (``DataConfig.scale``), e.g. ``scale0.2``;
  - ``iou<lo>_<hi>``: crop pairs whose IoU lies in ``[lo, hi]`` (``DataConfig.iou_range``);
  - ``nopsigrad`` (``abdino`` only): the AB loss does not train DINO's prototype matrix
    (``SystemConfig.ab_psi_grad=False``);
  - ``w<weight>``: the AB loss's weight against the base loss (``SystemConfig.ab_weight``; 1 by default);

  e.g. ``abclip-gamma0.9``, ``abdino-v2`` or ``absimclr-augab``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

import torch

from agents.pretrain import AUGMENTED_BASES, DataConfig
from agents.rundir import NON_NUMERIC_FIELDS
from agents.systems import SystemConfig
from agents.train_config import TrainConfig, check_int
from vpt_env.data.scenes import SceneConfig

__all__ = [
    "PAIRS", "PROFILES", "Profile", "RowSpec", "expand_rows", "parse_row", "run_configs", "run_identity",
]  # fmt: skip

#: (base, AB) pairs, in table order.
PAIRS: tuple[tuple[str, str], ...] = (("clip", "abclip"), ("simclr", "absimclr"), ("dino", "abdino"))
ALL_PAIRS: tuple[str, ...] = tuple(m for pair in PAIRS for m in pair)
#: Scene fields that only change captions (not pixels, layouts or labels): rows that read no
#: caption leave them out of their identity (:func:`run_identity`).
CAPTION_FIELDS: tuple[str, ...] = ("caption_fraction", "caption_words")
#: The paper's ablations (issue 7 item 4) and the departures from docs/method.md that earlier profiles made
#: by default (issue 19: 2 views, augmented AB views, crops of 20-100%), as suffixes of an AB row.
ABLATION_SUFFIXES: tuple[str, ...] = (
    "gamma0", "gamma0.9", "noact", "noema", "v2", "augab", "scale0.2", "iou0_0.3", "iou0.3_0.6", "iou0.6_1",
)  # fmt: skip


@dataclass(frozen=True)
class RowSpec:
    """What one row trains: method, SystemConfig overrides and DataConfig overrides."""

    name: str
    method: str | None  # None: the random-init row (no training)
    system: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)

    @property
    def base(self) -> str | None:
        """The row's base method (``clip`` for ``abclip-noact``), None for ``random``."""
        if self.method is None:
            return None
        return self.method[2:] if self.method.startswith("ab") else self.method

    @property
    def reads_captions(self) -> bool:
        """Whether training reads the scenes' captions (the CLIP family only; ``supervised`` reads the
        object labels, SimCLR and DINO nothing, ``random`` does not train)."""
        return self.base == "clip"


_NUM = r"(\d+(?:\.\d+)?)"
#: The knobs of an ablation row: (pattern, config, field, value of the matched numbers).
_KNOBS: tuple[tuple[str, str, str, Any], ...] = (
    (f"gamma{_NUM}", "system", "gamma", float),
    (f"w{_NUM}", "system", "ab_weight", float),
    ("noact", "system", "ab_actions", lambda: False),
    ("noema", "system", "ab_ema_target", lambda: False),
    ("nopsigrad", "system", "ab_psi_grad", lambda: False),
    ("crops", "data", "ab_views", lambda: "crops"),
    ("augab", "data", "ab_views", lambda: "shared"),
    (r"v(\d+)", "train", "views_per_image", int),
    (f"scale{_NUM}", "data", "scale", lambda low: (float(low), 1.0)),
    (f"iou{_NUM}_{_NUM}", "data", "iou_range", lambda lo, hi: (float(lo), float(hi))),
)


def parse_row(name: str) -> RowSpec:
    """The :class:`RowSpec` of a row name (see the module docstring); the knobs' values are checked
    by the configs they set.

    Raises:
        ValueError: an unknown method or knob, a knob on a non-AB method, a value its config refuses,
            or two knobs setting one field (``abdino-w0.25-w0.5``).
    """
    if name in ("random", "supervised"):
        return RowSpec(name, None if name == "random" else name)
    method, *knobs = name.split("-")
    if method not in ALL_PAIRS:
        raise ValueError(f"row {name!r}: unknown method {method!r}; methods: random, supervised, {ALL_PAIRS}")
    if knobs and not method.startswith("ab"):
        raise ValueError(f"row {name!r}: ablation knobs apply to AB rows only")
    parts: dict[str, dict[str, Any]] = {"system": {}, "data": {}, "train": {}}
    for knob in knobs:
        found = [
            (part, f, value(*m.groups())) for pat, part, f, value in _KNOBS if (m := re.fullmatch(pat, knob))
        ]
        if not found:
            raise ValueError(
                f"row {name!r}: unknown knob {knob!r} (gamma<g>, noact, noema, crops, augab, v<views>, "
                "scale<low>, nopsigrad, w<weight>, iou<lo>_<hi>)"
            )
        part, f, value = found[0]
        if f in parts[part]:  # refuse, not overwrite
            raise ValueError(f"row {name!r}: knob {knob!r} sets what an earlier knob of the row already set")
        parts[part][f] = value
    if "ab_psi_grad" in parts["system"] and method != "abdino":
        raise ValueError(f"row {name!r}: nopsigrad applies to abdino only")
    try:  # the configs check the values (views >= 2, crop and IoU ranges)
        SystemConfig(method, **parts["system"])
        DataConfig(**parts["data"])
        TrainConfig(**parts["train"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"row {name!r}: {e}") from e
    return RowSpec(name, method, parts["system"], parts["data"], parts["train"])


@dataclass(frozen=True)
class Profile:
    """Everything one comparison holds fixed; see :data:`PROFILES`.

    A profile *holds* the three training configs (it copies none of their fields): every row of it
    trains with ``data``, ``system`` and ``train``, changed only by the row's method and knobs and by
    the run's seed and ordering (:func:`run_configs`). Their fields mean what they mean for
    ``vpt pretrain``; ``data.source`` is ignored (the source is the profile's ``scenes``, split
    ``"train"``), and so are ``system.method`` (the row's), ``train.seed`` (the ordering) and
    ``train``'s output fields (the harness sets them per run).
    """

    name: str
    description: str
    scenes: dict[str, Any]
    """:class:`~vpt_env.data.scenes.SceneConfig` keywords of the pre-training scenes (split "train")."""
    data: DataConfig
    system: SystemConfig
    train: TrainConfig
    seeds: tuple[int, ...] = (0, 1, 2)
    """Model-initialisation seeds (``torch.manual_seed`` before the system is built)."""
    orderings: tuple[int, ...] = (0,)
    """Data orderings: ``TrainConfig.seed`` (the sampler's draws of images, crops and augmentations)."""
    rows: tuple[str, ...] = ("random", "supervised", "clip", "abclip")
    """Rows run when ``--rows`` is not given."""
    first_seed_rows: tuple[str, ...] = ()
    """Rows run at the first seed and ordering only (calibration rows, e.g. ``supervised``, to save time)."""
    ablation_of: str = "abclip"
    """The AB row the ``ablations`` group of ``--rows`` varies."""
    probe_images: int = 1000
    """Fresh train-split scenes (another layout seed) for the scene and object-in-region probes."""
    probe_test_images: int = 500
    """Test-split scenes (held-out object instances) for the object-crop probe's test side."""
    probe_view_size: int | None = None
    """Side of the probe views (None: ``data.view_size``)."""
    linear_epochs: int = 100
    attentive_epochs: int = 30
    knn_k: int = 20
    tasks: tuple[str, ...] = ("scene", "region", "heldout")
    curve_points: int = 4
    """Intermediate checkpoints per run evaluated for the score-vs-images-seen plot (0: final only)."""
    curve_tasks: tuple[str, ...] = ("scene", "heldout")
    curve_probes: tuple[str, ...] = ("linear", "attentive")
    est_step_s: float | None = None
    """Rough seconds per training step of a base row on the intended machine (dry-run estimate)."""

    def __post_init__(self) -> None:
        try:
            SceneConfig(**{**self.scenes, "split": "train"})
        except TypeError as e:
            raise ValueError(f"profile {self.name!r}: scenes: {e}") from e
        for name in ("probe_images", "probe_test_images", "linear_epochs", "attentive_epochs", "knn_k"):
            check_int(name, getattr(self, name), 1)
        check_int("curve_points", self.curve_points, 0)
        if self.probe_view_size is not None:
            check_int("probe_view_size", self.probe_view_size, 1)

    @property
    def steps(self) -> int:
        return self.train.steps

    @property
    def batch_size(self) -> int:
        return self.train.batch_size

    @property
    def images_seen(self) -> int:
        """Images each trained run sees: ``steps * batch_size`` (same for every row)."""
        return self.train.steps * self.train.batch_size

    def scene_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """The SceneSource keywords with ``overrides`` (tuples kept as tuples)."""
        return {**self.scenes, **overrides}

    def to_dict(self) -> dict[str, Any]:
        """The profile as JSON values (``results.json`` stores it)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d.update(
            data=dataclasses.asdict(self.data),
            system=self.system.to_dict(),
            train=dataclasses.asdict(self.train),
        )
        return json.loads(json.dumps(d, default=list))


def run_configs(
    profile: Profile, row: RowSpec, ordering: int = 0, out_dir: str = "."
) -> tuple[DataConfig, SystemConfig, TrainConfig]:
    """The resolved configs of one trained run of ``row``: the profile's, with the row's method and
    knobs, the profile's scenes as the source and ``ordering`` as ``TrainConfig.seed``."""
    source = json.dumps({"scenes": {**profile.scenes, "split": "train"}}, sort_keys=True, default=list)
    data = dataclasses.replace(profile.data, source=source, **row.data)
    system = dataclasses.replace(profile.system, method=row.method or "simclr", **row.system)
    steps = profile.train.steps
    if profile.curve_points > 0:
        # curve_points step files below the last step, plus the one a periodic save may write at
        # (or next to) the end: keep them all (steps not divisible by curve_points + 1 made one more)
        every, keep = max(1, steps // (profile.curve_points + 1)), profile.curve_points + 2
    else:
        every, keep = max(1, steps // 10), 0
    train = dataclasses.replace(
        profile.train,
        log_every=max(1, min(10, steps // 4)),
        checkpoint_every=every,
        keep_checkpoints=keep,
        out_dir=out_dir,
        seed=ordering,
        progress=False,
        **row.train,
    )
    return data, system, train


#: Config fields only one family of methods reads (by name prefix): the other rows' identities leave
#: them out, so e.g. DINO's local crop size does not retrain CLIP (the test
#: ``test_fields_of_other_families_leave_a_row_unchanged`` trains rows under both values).
_FAMILY_FIELDS: dict[str, tuple[str, ...]] = {
    "clip": ("text_", "sentence_model", "clip_", "caption_view_scale"),
    "dino": ("dino_",),
    "simclr": ("simclr_",),
    "supervised": ("supervised_",),
}


def _numeric(d: dict[str, Any], base: str | None = None) -> dict[str, Any]:
    """``d`` less the fields that change no number (of a row of ``base``: also other families')."""
    foreign = tuple(p for family, prefixes in _FAMILY_FIELDS.items() if family != base for p in prefixes)
    return {
        k: v for k, v in d.items() if k not in NON_NUMERIC_FIELDS and not (base and k.startswith(foreign))
    }


def _probe_scenes(profile: Profile, reads_captions: bool) -> dict[str, Any]:
    """The scenes as they change a run's numbers: a row that reads no caption, like every probe,
    leaves out the caption fields (unless ``annotate="captioned"``, where captions decide labels)."""
    scenes = dataclasses.asdict(SceneConfig(**profile.scenes))  # defaults resolved
    scenes.pop("split")
    if reads_captions or scenes["annotate"] != "all":
        return scenes
    return {k: v for k, v in scenes.items() if k not in CAPTION_FIELDS}


def run_identity(profile: Profile, row: RowSpec, seed: int, ordering: int) -> str:
    """A run's identity: the hash of everything that changes its numbers.

    That is its resolved configs (:func:`run_configs`) less :data:`agents.rundir.NON_NUMERIC_FIELDS`,
    the kind of device (CUDA runs use bf16 autocast), the model-initialisation ``seed``, and the
    probe settings with their scenes. Captions are left out of a row that reads none (all but the
    CLIP family), so its runs stand when only the captions change; the test
    ``test_rows_reading_no_caption_train_the_same_under_any_captions`` checks that this is so.
    A run is done when its ``eval.json`` carries this identity, and ``--reuse`` takes a stored run
    whose identity equals it; nothing else decides whether two runs are the same.
    """
    data, system, train = run_configs(profile, row, ordering)
    parts: dict[str, Any] = {
        "init_seed": seed,
        "device": torch.device(profile.data.device).type,
        "system": _numeric(system.to_dict()),
        "probes": {
            "scenes": _probe_scenes(profile, False),
            **{f: getattr(profile, f) for f in _PROBE_FIELDS},
            "probe_view_size": profile.probe_view_size or profile.data.view_size,
        },
    }
    if row.method is not None:
        parts["system"] = _numeric(system.to_dict(), row.base)
        d = _numeric(dataclasses.asdict(data), row.base)
        d["source"] = {"scenes": {**_probe_scenes(profile, row.reads_captions), "split": "train"}}
        parts.update(data=d, train=_numeric(dataclasses.asdict(train)))
    else:  # the untrained encoder: only its construction matters
        parts["system"] = {k: parts["system"][k] for k in ("encoder", "encoder_kwargs")}
    text = json.dumps(_plain(parts), sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _plain(x: Any) -> Any:
    """``x`` with every number as a float (``ab_weight=1`` and ``1.0`` are one setting) and tuples
    as lists, for hashing."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    return float(x) if isinstance(x, int) and not isinstance(x, bool) else x


#: Profile fields that change a run's probe results (its identity holds them; which tasks and curve
#: points are measured does not change any one result: ``eval.json`` keys them).
_PROBE_FIELDS: tuple[str, ...] = (
    "probe_images",
    "probe_test_images",
    "linear_epochs",
    "attentive_epochs",
    "knn_k",
)


def _ablations(profile: Profile) -> list[str]:
    """The ablation rows of ``profile.ablation_of``, less ``augab`` where the base's views are not
    augmented (it would train the AB row again under another name)."""
    base = profile.ablation_of.removeprefix("ab")
    augmented = profile.data.augment if profile.data.augment is not None else base in AUGMENTED_BASES
    return [f"{profile.ablation_of}-{s}" for s in ABLATION_SUFFIXES if augmented or s != "augab"]


def expand_rows(profile: Profile, spec: str | None) -> list[str]:
    """Row names of ``--rows``: comma-separated names or groups.

    Groups: ``default`` (the profile's rows), ``pairs``, ``ablations`` (of ``profile.ablation_of``), ``all``.
    """
    if not spec:
        names = list(profile.rows)
    else:
        names = []
        for item in (s.strip() for s in spec.split(",")):
            if item == "default":
                names += profile.rows
            elif item == "pairs":
                names += ["random", "supervised", *ALL_PAIRS]
            elif item == "ablations":
                names += [profile.ablation_of, *_ablations(profile)]
            elif item == "all":
                names += ["random", "supervised", *ALL_PAIRS, *_ablations(profile)]
            elif item:
                names.append(item)
    out = list(dict.fromkeys(names))
    for name in out:
        parse_row(name)
    return out


# Scenes without appearance shortcuts (docs/method.md): colour drawn per object independently
# of class, flat or textured backgrounds (no photos), digits only (always installed). Where a move
# says something about the next view (docs/method.md, issue 19): 3-6 objects of 15-30% of the
# scene side, so crops of 5-100% of the scene meet different objects. The data's action information
# (agents.mechanism, 4 views, crops 0.05-1) is 0.22 nats here against 0.068 with the earlier scenes
# (1-3 objects of 30-50%) and crops 0.2-1: CALIBRATION.md c27.
_CPU_SCENES: dict[str, Any] = dict(
    size=64, n_images=4000, seed=0, object_sets=("digits",), objects=(3, 6), object_size=(0.15, 0.3),
    colour_mode="random", background=("flat", "texture"), clutter=0, caption_fraction=0.3,
)  # fmt: skip
# cpu-quick (CALIBRATION.md): flat backgrounds only; captions name each object's class, size and
# position but not its colour (colour words were a shortcut for CLIP, c4/c10; class-only captions left
# CLIP's MAP on object crops below the random-init floor, c10; size and position words lift it above,
# c21, the default since c25). docs/method.md's views: 4 per image, crops of 5-100% of the scene, AB's
# views crops only (issue 19; before, 2 views and crops of 20-100%: c4-c26). lr 1e-3 (3e-3 collapsed
# CLIP). A caption on every scene (c27, c28: with 30% captioned, CLIP stayed below the floor on
# MAP). See CALIBRATION.md for what each choice was measured against.
_QUICK_SCENES: dict[str, Any] = {
    **_CPU_SCENES, "background": ("flat",), "caption_words": ("size", "position"), "caption_fraction": 1.0,
}  # fmt: skip
_CPU_SYSTEM = SystemConfig(
    "simclr", encoder="cnn", encoder_kwargs=dict(width=32, depth=4, downsample=8),  # 32 px views: 4x4 tokens
    embed_dim=128, hidden_dim=256, decoder_dim=128, gamma=0.5, dino_prototypes=256,
    dino_local_size=32,  # DINO's local crops at the view size: at 16 px the digits are a few pixels (c28)
)  # fmt: skip

_CPU_QUICK = Profile(
    name="cpu-quick",
    description="calibration rows plus the CLIP/ABCLIP pair, 3 seeds; under 60 min on 2 CPU cores",
    scenes=_QUICK_SCENES,
    # docs/method.md's views: 4 per image (TrainConfig's default), crops of 5-100% of the scene
    # (DataConfig's default), AB's views crops only.
    data=DataConfig(view_size=32, threads=2),
    system=_CPU_SYSTEM,
    # 4 views per image cost twice the encoder work of 2 per image: the batch went from 256 to 128
    # images to fit the hour (issue 19: size steps and batch, not the views).
    train=TrainConfig(steps=800, batch_size=128, lr=1e-3, warmup_steps=30),
    seeds=(0, 1, 2),
    orderings=(0,),
    rows=("random", "supervised", "clip", "abclip"),
    first_seed_rows=("supervised",),
    probe_images=1200,
    probe_test_images=600,
    linear_epochs=100,
    attentive_epochs=30,
    curve_points=2,
    est_step_s=0.3,
)

PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            name="smoke",
            description="tiny end-to-end check of the pipeline (tests); numbers mean nothing",
            scenes=dict(
                size=32,
                n_images=48,
                seed=0,
                object_sets=("digits",),
                objects=(1, 2),
                object_size=(0.4, 0.6),
                background=("flat",),
                caption_fraction=0.5,
            ),
            data=DataConfig(view_size=16, threads=1),
            system=SystemConfig(
                "simclr",
                encoder="cnn",
                encoder_kwargs=dict(width=8, depth=2, downsample=4),
                embed_dim=16,
                hidden_dim=16,
                decoder_dim=16,
                dino_prototypes=16,
                text_dim=16,
                text_depth=1,
                text_max_len=64,
            ),
            train=TrainConfig(steps=4, batch_size=8),
            seeds=(0,),
            orderings=(0,),
            rows=("random", "simclr", "absimclr"),
            ablation_of="absimclr",
            probe_images=40,
            probe_test_images=24,
            linear_epochs=5,
            attentive_epochs=2,
            knn_k=5,
            curve_points=2,
        ),
        _CPU_QUICK,
        # cpu-quick's configs (so cpu-quick's runs are cpu-full's ordering-0 CLIP/ABCLIP runs, with
        # the same identities: --reuse copies them), with every pair and 2 orderings.
        dataclasses.replace(
            _CPU_QUICK,
            name="cpu-full",
            description="every pair, 3 seeds x 2 data orderings, cpu-quick's settings; under 6 h on 2 CPU "
            "cores, resumable",
            orderings=(0, 1),
            rows=("random", "supervised", *ALL_PAIRS),
            est_step_s=0.3,
        ),
        Profile(
            name="gpu",
            description="every pair, 3 seeds, a 2x wider CNN and 4 views per image; 6 min on one H100 as "
            "3 processes, one per seed, with class-only captions (benchmarks/gpu_session.sh reproduce)",
            scenes={**_QUICK_SCENES, "n_images": 10_000},
            data=DataConfig(view_size=32, device="cuda", threads=4),
            system=SystemConfig(
                "simclr",
                encoder="cnn",
                encoder_kwargs=dict(width=64, depth=4, downsample=8),
                embed_dim=256,
                hidden_dim=512,
                decoder_dim=192,
                gamma=0.5,
                dino_prototypes=512,
                dino_local_size=32,
            ),
            # 300 steps: what fitted the 15-minute device budget with 3 seeds x 7 rows (measured:
            # 33-49 s per run with its probes, 3 processes on one H100).
            train=TrainConfig(steps=300, batch_size=256, lr=1e-3, warmup_steps=50),
            seeds=(0, 1, 2),
            orderings=(0,),
            rows=("random", "supervised", *ALL_PAIRS),
            probe_images=2000,
            probe_test_images=1000,
            linear_epochs=100,
            attentive_epochs=30,
            curve_points=0,
            est_step_s=0.05,
        ),
    )
}
