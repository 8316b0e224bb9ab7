"""The configuration of a pre-training system: which method, which encoder, and every loss knob.

Example:
    >>> cfg = SystemConfig("abdino", encoder_kwargs={"width": 8}, gamma=0.0)
    >>> cfg.is_ab, cfg.base_method
    (True, 'dino')
    >>> SystemConfig.from_dict(cfg.to_dict()) == cfg
    True
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from agents.encoders import ENCODER_NAMES

__all__ = ["BASE_METHODS", "METHODS", "TEXT_ENCODERS", "SystemConfig"]

#: The four base methods.
BASE_METHODS: tuple[str, ...] = ("clip", "dino", "simclr", "supervised")
#: Every method: a base or its annotation-bootstrapping version (``"ab" + base``).
METHODS: tuple[str, ...] = tuple(sorted(BASE_METHODS + tuple("ab" + m for m in BASE_METHODS)))
#: The CLIP text towers (``SystemConfig.text_encoder``).
TEXT_ENCODERS: tuple[str, ...] = ("bytes", "sentence")
SUPERVISED_TARGETS: tuple[str, ...] = ("auto", "label", "multilabel")


@dataclass
class SystemConfig:
    """Everything :func:`agents.systems.make_system` needs to build a system (JSON round trip)."""

    method: str = "absimclr"
    """One of :data:`METHODS`: a base (``"clip"``, ``"dino"``, ``"simclr"``, ``"supervised"``) or
    its annotation-bootstrapping version (``"ab" + base``)."""
    encoder: str = "cnn"
    """Image encoder name for :func:`agents.encoders.make_encoder`."""
    encoder_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the encoder (JSON-able), e.g. ``{"width": 32}``."""
    embed_dim: int = 128
    """Width E of the projections, the CLIP joint space, the DINO bottleneck and ``phi_AB``/``psi_AB``."""
    hidden_dim: int = 256
    """Hidden width of the MLP heads (projector, ``psi_AB`` heads, DINO head)."""
    gamma: float = 0.5
    """AB discount in ``[0, 1)``; 0 gives the preprint's one-step target ``p_ema(l | x_j)``."""
    ema_rate: float = 0.004
    """EMA rate in ``[0, 1]`` of every target module (``1 - momentum``); DINO's teacher is this EMA."""
    ab_weight: float = 1.0
    """Weight (>= 0) of the AB loss added to the base loss."""
    annotation_fraction: float = 0.5
    """Annotation batch as a fraction of the batch, in ``(0, 1]`` (ABCLIP: captioned images;
    ABSimCLR: images whose view 0 is an annotation)."""
    bootstrap_fraction: float = 0.125
    """Bootstrap batch as a fraction of the batch, in ``(0, 1]``: the first
    ``max(1, round(B * fraction))`` images give the AB transitions."""
    ab_temperature: float = 0.1
    """Temperature (> 0) of ``Q``'s cosine logits ``phi . psi / t``."""
    decoder_dim: int = 128
    """Width of the AB decoder."""
    decoder_depth: int = 2
    """Blocks of the AB decoder."""
    decoder_heads: int = 4
    """Attention heads of the AB decoder (must divide ``decoder_dim``)."""
    num_box_tokens: int = 1
    """Query tokens per action (relative box) in the AB decoder."""
    ab_actions: bool = True
    """Condition ``Q`` on the action (the relative box). False is the paper's "no action tokens"
    ablation: every move is given as the identity box, so ``Q`` learns the average over crops."""
    ab_ema_target: bool = True
    """Compute AB's targets (``p_ema`` and ``Q_ema``, both terms) with the EMA copies. False is the
    paper's "no EMA target" ablation: the online modules give the targets (without gradient), while
    the EMA copies still move at ``ema_rate`` for what the base uses them for (DINO's teacher). AB
    methods only. (``ema_rate=1`` instead also removes DINO's momentum teacher.)"""
    ab_psi_grad: bool = True
    """Let the AB loss train ``psi_AB`` where the base method trains it too: ABDINO's ``psi_AB`` is
    DINO's prototype matrix. False stops that gradient (a diagnostic: does AB's pull on the
    prototypes hurt DINO?). Only ``abdino`` shares ``psi_AB`` with its base, so only it accepts False."""
    simclr_temperature: float = 0.1
    """NT-Xent temperature (> 0), also of ABSimCLR's ``p(l | x)``."""
    clip_init_temperature: float = 0.07
    """Initial CLIP temperature (> 0); the logit scale ``1 / t`` is learned and clamped at 100."""
    dino_prototypes: int = 256
    """Number K of DINO prototypes (ABDINO's annotation space)."""
    dino_student_temp: float = 0.1
    """DINO student temperature (> 0)."""
    dino_teacher_temp: float = 0.04
    """DINO teacher temperature (> 0), also of ABDINO's ``p(l | x)``."""
    dino_center_momentum: float = 0.9
    """Momentum in ``[0, 1]`` of DINO's teacher centre."""
    dino_local_size: int | None = None
    """Side of DINO's local crops, resized to it (antialiased bilinear): the batch's ``V`` views when
    it carries DINO's two global crops (``TransitionBatch.base_views``), else views ``2..V-1`` (views
    0 and 1 being the global crops). None: half the view size. A size >= the view size leaves the
    local crops as they are."""
    text_encoder: str = "bytes"
    """CLIP text tower: ``"bytes"`` (a byte-level :class:`agents.text.TextTower`, trained) or
    ``"sentence"`` (a frozen ``sentence-transformers`` model plus a trained MLP head)."""
    text_dim: int = 128
    """Width of the byte-level text transformer."""
    text_depth: int = 2
    """Layers of the byte-level text transformer."""
    text_heads: int = 4
    """Attention heads of the byte-level text transformer (must divide ``text_dim``)."""
    text_max_len: int = 256
    """Longest caption in tokens (bytes + 2); longer captions are cut (scene captions reach ~240 bytes)."""
    sentence_model: str = "all-MiniLM-L6-v2"
    """``sentence-transformers`` model name or path when ``text_encoder="sentence"``."""
    supervised_target: str = "auto"
    """Supervised base: ``"label"`` (cross-entropy on image labels, rows labelled -1 ignored),
    ``"multilabel"`` (BCE per view against ``cumulants > 0``) or ``"auto"`` (``"label"`` when any
    image of the batch is labelled, else ``"multilabel"``)."""
    num_classes: int | None = None
    """Classes K of the supervised systems (set by the caller from the source)."""

    def __post_init__(self) -> None:
        _choice("method", self.method, METHODS)
        _choice("encoder", self.encoder, ENCODER_NAMES)
        _choice("text_encoder", self.text_encoder, TEXT_ENCODERS)
        _choice("supervised_target", self.supervised_target, SUPERVISED_TARGETS)
        kwargs = self.encoder_kwargs
        if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
            raise ValueError(f"encoder_kwargs must be a dict with str keys, got {self.encoder_kwargs!r}")
        try:
            json.dumps(self.encoder_kwargs)
        except TypeError as exc:
            raise ValueError(f"encoder_kwargs must be JSON-able, got {self.encoder_kwargs!r}") from exc
        for name in ("embed_dim", "hidden_dim", "decoder_dim", "decoder_depth", "decoder_heads",
                     "num_box_tokens", "dino_prototypes", "text_dim", "text_depth", "text_heads",
                     "text_max_len"):  # fmt: skip
            _positive_int(name, getattr(self, name))
        for name in ("dino_local_size", "num_classes"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        if self.decoder_dim % self.decoder_heads:
            raise ValueError(
                f"decoder_heads must divide decoder_dim, got decoder_dim={self.decoder_dim}, "
                f"decoder_heads={self.decoder_heads}"
            )
        if not isinstance(self.ab_actions, bool):
            raise ValueError(f"ab_actions must be True or False, got {self.ab_actions!r}")
        if not isinstance(self.ab_ema_target, bool):
            raise ValueError(f"ab_ema_target must be True or False, got {self.ab_ema_target!r}")
        if not self.ab_ema_target and not self.method.startswith("ab"):
            raise ValueError(
                f"ab_ema_target=False applies to the AB methods only "
                f"({[m for m in METHODS if m.startswith('ab')]}), got method={self.method!r}"
            )
        if not isinstance(self.ab_psi_grad, bool):
            raise ValueError(f"ab_psi_grad must be True or False, got {self.ab_psi_grad!r}")
        if not self.ab_psi_grad and self.method != "abdino":
            raise ValueError(
                f"ab_psi_grad=False applies to method='abdino' only (the one whose psi_AB the base "
                f"also trains), got method={self.method!r}"
            )
        _in_range("gamma", self.gamma, 0.0, 1.0, "[0, 1)", high_open=True)
        _in_range("ema_rate", self.ema_rate, 0.0, 1.0, "[0, 1]")
        _in_range("dino_center_momentum", self.dino_center_momentum, 0.0, 1.0, "[0, 1]")
        _in_range("ab_weight", self.ab_weight, 0.0, math.inf, "[0, inf)")
        for name in ("annotation_fraction", "bootstrap_fraction"):
            _in_range(name, getattr(self, name), 0.0, 1.0, "(0, 1]", low_open=True)
        for name in ("ab_temperature", "simclr_temperature", "clip_init_temperature",
                     "dino_student_temp", "dino_teacher_temp"):  # fmt: skip
            _in_range(name, getattr(self, name), 0.0, math.inf, "(0, inf)", low_open=True)
        if not isinstance(self.sentence_model, str) or not self.sentence_model:
            raise ValueError(f"sentence_model must be a non-empty str, got {self.sentence_model!r}")

    @property
    def is_ab(self) -> bool:
        """Whether the method adds annotation bootstrapping to its base."""
        return self.method.startswith("ab")

    @property
    def base_method(self) -> str:
        """The base method: ``"clip"``, ``"dino"``, ``"simclr"`` or ``"supervised"``."""
        return self.method[2:] if self.is_ab else self.method

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field (:meth:`from_dict` rebuilds the config)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SystemConfig:
        """Rebuild a config from :meth:`to_dict`'s output (e.g. after a JSON round trip).

        Raises:
            ValueError: ``data`` holds a key that is not a field, or a field is invalid.
        """
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ValueError(f"SystemConfig got unknown keys {unknown}; accepted: {names}")
        return cls(**data)


def _choice(name: str, value: Any, accepted: tuple[str, ...]) -> None:
    if value not in accepted:
        raise ValueError(f"{name} must be one of {list(accepted)}, got {value!r}")


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def _in_range(
    name: str, value: Any, low: float, high: float, text: str, low_open: bool = False, high_open: bool = False
) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        raise ValueError(f"{name} must be a number in {text}, got {value!r}")
