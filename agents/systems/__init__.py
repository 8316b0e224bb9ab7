"""Pre-training systems: the four bases (CLIP, DINO, SimCLR, supervised) and their AB versions.

A system is an ``nn.Module`` that :class:`agents.trainer.Trainer` trains: it has
``training_loss(batch, captions) -> (loss, metrics)`` and ``after_step()`` (the EMA
update), ``.encoder`` (the online encoder, for evaluation and export), ``.config``
and ``.ema`` (the EMA copies, which are checkpointed with the rest). docs/method.md
sections 3-4 are the spec; :mod:`agents.systems.base` holds the AB term.

Example:
    >>> import numpy as np, torch
    >>> from vpt_env import TransitionSampler
    >>> from vpt_env.data.sources import ArraySource
    >>> images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    >>> batch = TransitionSampler(ArraySource(images), view_size=16).sample(8, views_per_image=3)
    >>> small = dict(encoder_kwargs={"width": 8}, embed_dim=16, hidden_dim=16, decoder_dim=16)
    >>> system = make_system(SystemConfig("absimclr", **small))
    >>> loss, metrics = system.training_loss(batch, captions=[])
    >>> loss.backward()
    >>> sorted(metrics)
    ['ab_labels', 'ab_loss', 'ab_pairs', 'base_loss', 'target_entropy']
    >>> system.after_step()
"""

from __future__ import annotations

import dataclasses

from agents.systems.base import Annotations, BaseSystem
from agents.systems.clip import CLIPSystem, LogitScale
from agents.systems.config import BASE_METHODS, METHODS, TEXT_ENCODERS, SystemConfig
from agents.systems.dino import DINOSystem
from agents.systems.simclr import SimCLRSystem
from agents.systems.supervised import SupervisedSystem

__all__ = [
    "BASE_METHODS",
    "METHODS",
    "TEXT_ENCODERS",
    "Annotations",
    "BaseSystem",
    "CLIPSystem",
    "DINOSystem",
    "LogitScale",
    "SimCLRSystem",
    "SupervisedSystem",
    "SystemConfig",
    "make_system",
]

_SYSTEMS: dict[str, type[BaseSystem]] = {
    "clip": CLIPSystem,
    "dino": DINOSystem,
    "simclr": SimCLRSystem,
    "supervised": SupervisedSystem,
}


def make_system(config: SystemConfig, num_classes: int | None = None) -> BaseSystem:
    """Build the system ``config.method`` names.

    Args:
        config: the :class:`SystemConfig`.
        num_classes: if given, overrides ``config.num_classes`` (the supervised systems need it;
            the returned system's ``config`` holds it).

    Returns:
        The system, on the CPU (move it with ``.to(device)``); its EMA copies equal its online
        modules.

    Raises:
        TypeError: ``config`` is not a :class:`SystemConfig`.
        ValueError: a supervised method without ``num_classes``.
        ImportError: ``text_encoder="sentence"`` without ``sentence-transformers``.
    """
    if not isinstance(config, SystemConfig):
        raise TypeError(f"config must be a SystemConfig, got {type(config).__name__}")
    if num_classes is not None:
        config = dataclasses.replace(config, num_classes=num_classes)
    return _SYSTEMS[config.base_method](config)
