"""Shared pieces of the system tests (test_agents_systems.py, test_agents_ablations.py).

Imported by name (``from _system_helpers import ...``): pytest puts ``tests/`` on ``sys.path``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from agents.systems import METHODS, SystemConfig, make_system

AB_METHODS = [m for m in METHODS if m.startswith("ab")]
BASES = [m for m in METHODS if not m.startswith("ab")]
B, V = 8, 4

SMALL = dict(
    encoder_kwargs={"width": 8},
    embed_dim=16,
    hidden_dim=16,
    decoder_dim=16,
    decoder_heads=2,
    decoder_depth=1,
    dino_prototypes=12,
    text_dim=16,
    text_depth=1,
    text_heads=2,
)


def build(method: str, num_classes: int, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return make_system(SystemConfig(method, **{**SMALL, **overrides}), num_classes=num_classes)


def perturb_online(system) -> None:
    """Make online != EMA, so a target built from the online weights would be caught."""
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in system.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn(p.shape, generator=gen))


def expected_p_ema(method, system, batch, captions, nb, ab_views=None):
    """p_ema(l | x_j) of every view of the first nb images, from the EMA modules by the formulas.

    ``ab_views``: the AB term's views (``batch.crop_views``) when they are not the base's.
    """
    ema, cfg = system.ema, system.config
    views = (batch.views if ab_views is None else ab_views)[:nb]
    pooled = ema["encoder"](views.flatten(0, 1)).pooled  # (nb*V, D)
    if method == "abdino":  # local views downsampled
        local = F.interpolate(views[:, 2:].flatten(0, 1), size=(8, 8), mode="bilinear", antialias=True)
        pooled = torch.cat(
            [
                ema["encoder"](views[:, :2].flatten(0, 1)).pooled.view(nb, 2, -1),
                ema["encoder"](local).pooled.view(nb, V - 2, -1),
            ],
            dim=1,
        ).flatten(0, 1)
        logits = (ema["head"](pooled) - system.center) / cfg.dino_teacher_temp
        return logits.softmax(-1).view(nb, V, -1)
    if method == "absimclr":
        na = round(B * cfg.annotation_fraction)
        q = F.normalize(ema["projector"](pooled), dim=-1).view(nb, V, -1)
        keys = F.normalize(ema["projector"](ema["encoder"](batch.views[:na, 0]).pooled), dim=-1)
        logits = q @ keys.T / cfg.simclr_temperature  # (nb, V, na)
        # View 0 of an image that is also an annotation meets its image through view 1, not itself.
        own = min(nb, na)
        alt = F.normalize(ema["projector"](ema["encoder"](batch.views[:own, 1]).pooled), dim=-1)
        for b in range(own):
            logits[b, 0, b] = q[b, 0] @ alt[b] / cfg.simclr_temperature
        return logits.softmax(-1)
    if method == "abclip":
        na = round(B * cfg.annotation_fraction)
        texts = [captions[c] for c in batch.caption.tolist() if c >= 0][:na]
        img = F.normalize(ema["image_proj"](pooled), dim=-1)
        txt = F.normalize(ema["text"](texts), dim=-1)
        scale = math.exp(ema["logit_scale"].log_scale.item())  # the parameter is clipped, not the value
        return (scale * img @ txt.T).softmax(-1).view(nb, V, -1)
    assert method == "absupervised"  # scenes: multi-label, the normalised sigmoid
    sig = torch.sigmoid(ema["classifier"](pooled))
    return (sig / sig.sum(-1, keepdim=True)).view(nb, V, -1)
