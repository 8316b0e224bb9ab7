"""Library rewards: ``edge_density``, ``saliency``, ``caption_match`` and ``teacher_prob``.

=============  ========  ================================================================
name           range     value of a view
=============  ========  ================================================================
edge_density   ``[0,1]`` mean Sobel gradient magnitude of the view's luma, divided by
                         its largest possible value (see :class:`EdgeDensityReward`)
saliency       ``[0,1]`` mean centre-surround contrast: ``|blur_c(x) - blur_s(x)|``
                         averaged over pixels and channels (difference of Gaussians,
                         on the view pooled to at most 64 pixels a side)
caption_match  ``[0,1]`` ``(cos + 1) / 2`` between the view's and the caption's embedding
                         under frozen encoders; with ``contrastive=True``, the softmax
                         probability of the target's prompt among the class prompts
teacher_prob   ``[0,1]`` softmax probability a frozen classifier (or prototype model)
                         assigns to ``target``
=============  ========  ================================================================

None of them reads annotations. ``teacher_prob`` and ``caption_match`` with
``contrastive=True`` also expose a vector-valued cumulant,
``reward.cumulant(views, state, annotations) -> (B, K)``: the whole softmax
(see :class:`~vpt_env.rewards.base.RewardFn`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from vpt_env.core.state import ViewState
from vpt_env.data.annotations import Annotations
from vpt_env.rewards.base import register_reward

__all__ = [
    "CaptionMatchReward",
    "ContrastiveCaptionReward",
    "EdgeDensityReward",
    "SaliencyReward",
    "TeacherProbReward",
]

#: ITU-R BT.601 luma weights.
LUMA = (0.299, 0.587, 0.114)
#: Largest Sobel magnitude of a ``[0, 1]`` image with the ``1/8``-normalised kernels:
#: each of ``gx``, ``gy`` lies in ``[-1/2, 1/2]``, so ``sqrt(gx^2 + gy^2) <= sqrt(1/2)``.
SOBEL_MAX = math.sqrt(0.5)


def _luma(views: Tensor) -> Tensor:
    w = torch.tensor(LUMA, dtype=views.dtype, device=views.device).view(1, 3, 1, 1)
    return (views * w).sum(1, keepdim=True)


def _eval(module: Any) -> Any:
    if isinstance(module, torch.nn.Module):
        module.eval()
    return module


class EdgeDensityReward:
    """Mean Sobel gradient magnitude of the view's luma, in ``[0, 1]``.

    The luma ``0.299 R + 0.587 G + 0.114 B`` is filtered with the 3x3 Sobel
    kernels divided by 8 (``[[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]] / 8`` and its
    transpose), borders replicated, so that ``gx`` and ``gy`` each lie in
    ``[-1/2, 1/2]``. The magnitude ``sqrt(gx^2 + gy^2)`` is divided by its
    largest value ``sqrt(1/2)`` and averaged over the pixels: 0 for a flat
    view; a vertical black/white step edge in an ``S``-wide view gives
    ``(2 / S) * (1/2) / sqrt(1/2) = sqrt(2) / S``; 1 needs every pixel to
    sit on a full-contrast diagonal edge.
    """

    needs_annotations = False
    needs_views = True

    def __call__(self, views: Tensor, state: ViewState, annotations: Annotations) -> Tensor:
        y = F.pad(_luma(views.float()), (1, 1, 1, 1), mode="replicate")[:, 0]  # (B, S+2, S+2)
        # The separable Sobel kernels as slices (cheaper than conv2d on CPU): a central
        # difference along one axis, smoothed by [1, 2, 1] along the other, over 8.
        dx = y[:, :, 2:] - y[:, :, :-2]
        dy = y[:, 2:] - y[:, :-2]
        gx = (dx[:, :-2] + 2 * dx[:, 1:-1] + dx[:, 2:]) / 8
        gy = (dy[:, :, :-2] + 2 * dy[:, :, 1:-1] + dy[:, :, 2:]) / 8
        mag = torch.sqrt(gx * gx + gy * gy) / SOBEL_MAX
        return mag.mean(dim=(1, 2)).clamp(0.0, 1.0)


def _blur_matrix(sigma_px: float, size: int, device: torch.device) -> Tensor:
    """``(size, size)`` Gaussian blur along one axis, borders replicated (taps past an edge fold onto it)."""
    radius = max(1, math.ceil(3 * sigma_px))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (offsets / sigma_px) ** 2)
    k = k / k.sum()
    rows = torch.arange(size).repeat_interleave(len(offsets))
    cols = (torch.arange(size)[:, None] + offsets.long()[None, :]).clamp(0, size - 1).reshape(-1)
    m = torch.zeros(size, size).index_put_((rows, cols), k.repeat(size), accumulate=True)
    return m.to(device)


class SaliencyReward:
    """Centre-surround saliency (difference of Gaussians), mean over the view, in ``[0, 1]``.

    The view is first averaged down to ``resolution`` pixels a side when it
    is larger (area pooling). Per colour channel, ``|G_c * x - G_s * x|``
    with Gaussian blurs of standard deviation ``centre_sigma * S`` and
    ``surround_sigma * S`` pixels (``S`` that side; kernels to 3 sigma,
    borders replicated), averaged over pixels and channels. Both blurs of a
    ``[0, 1]`` image lie in ``[0, 1]``, so the value does too: 0 for a flat
    view, larger where small regions stand out from their surround.

    Args:
        centre_sigma: centre blur, as a fraction of the view side (0: none).
        surround_sigma: surround blur, as a fraction of the view side; None
            takes the view's mean colour (the limit of an infinitely wide
            surround), so a half-black, half-white view scores 0.5.
        resolution: side the view is pooled to first (None: never).
    """

    needs_annotations = False
    needs_views = True

    def __init__(
        self, centre_sigma: float = 0.03, surround_sigma: float | None = 0.25, resolution: int | None = 64
    ) -> None:
        if not centre_sigma >= 0:
            raise ValueError(f"centre_sigma must be >= 0, got {centre_sigma}")
        if surround_sigma is not None and not surround_sigma > centre_sigma:
            raise ValueError(
                f"surround_sigma must exceed centre_sigma ({centre_sigma}), got {surround_sigma}"
            )
        if resolution is not None and not resolution >= 2:
            raise ValueError(f"resolution must be >= 2 or None, got {resolution}")
        self.centre_sigma = float(centre_sigma)
        self.surround_sigma = None if surround_sigma is None else float(surround_sigma)
        self.resolution = resolution
        self._matrices: dict[tuple[float, int, torch.device], Tensor] = {}

    def _blur(self, x: Tensor, sigma: float) -> Tensor:
        """Separable Gaussian blur as two matrix products (fast on CPU and GPU)."""
        if sigma <= 0:
            return x
        size = x.shape[-1]
        key = (sigma, size, x.device)
        if key not in self._matrices:
            self._matrices[key] = _blur_matrix(sigma * size, size, x.device)
        m = self._matrices[key]
        return m @ x @ m.T

    def __call__(self, views: Tensor, state: ViewState, annotations: Annotations) -> Tensor:
        x = views.float()
        if self.resolution is not None and max(x.shape[-2:]) > self.resolution:
            x = F.adaptive_avg_pool2d(x, self.resolution)
        centre = self._blur(x, self.centre_sigma)
        if self.surround_sigma is None:
            surround = x.mean(dim=(2, 3), keepdim=True)
        else:
            surround = self._blur(x, self.surround_sigma)
        return (centre - surround).abs().mean(dim=(1, 2, 3)).clamp(0.0, 1.0)


def _cosine(a: Tensor, b: Tensor) -> Tensor:
    return F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).T


class _OnDevice:
    """A constant tensor, copied once per device."""

    def __init__(self, value: Tensor) -> None:
        self._copies = {value.device: value}

    def on(self, device: torch.device) -> Tensor:
        if device not in self._copies:
            self._copies[device] = next(iter(self._copies.values())).to(device)
        return self._copies[device]


def _encode_texts(text_encoder: Callable[[list[str]], Tensor], texts: list[str]) -> Tensor:
    with torch.no_grad():
        out = _eval(text_encoder)(list(texts))
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != len(texts):
        raise ValueError(
            f"text_encoder must return a ({len(texts)}, D) tensor for {len(texts)} texts, "
            f"got {getattr(out, 'shape', type(out).__name__)}"
        )
    return out.detach().float()


class CaptionMatchReward:
    """Similarity of the view to a caption under frozen encoders: ``(cos + 1) / 2`` in ``[0, 1]``.

    Args:
        image_encoder: ``views (B, 3, S, S) -> (B, D)`` embeddings (e.g. a CLIP
            image tower with its preprocessing); run under ``torch.no_grad``,
            in eval mode when it is an ``nn.Module``.
        text_encoder: ``list[str] -> (N, D)`` embeddings; the caption is
            encoded once, here.
        caption: the target caption.
    """

    needs_annotations = False
    needs_views = True

    def __init__(
        self,
        image_encoder: Callable[[Tensor], Tensor],
        text_encoder: Callable[[list[str]], Tensor],
        caption: str,
    ) -> None:
        self.image_encoder = _eval(image_encoder)
        self.caption = caption
        self._text = _OnDevice(_encode_texts(text_encoder, [caption]))

    def _embed(self, views: Tensor) -> Tensor:
        with torch.no_grad():
            out = self.image_encoder(views)
        if not isinstance(out, Tensor) or out.shape[:1] != views.shape[:1] or out.dim() != 2:
            raise ValueError(
                f"image_encoder must return a (B, D) tensor for B={views.shape[0]} views, "
                f"got {getattr(out, 'shape', type(out).__name__)}"
            )
        return out.detach().to(views.device)

    def __call__(self, views: Tensor, state: ViewState, annotations: Annotations) -> Tensor:
        cos = _cosine(self._embed(views), self._text.on(views.device))[:, 0]
        return ((cos + 1) / 2).clamp(0.0, 1.0)


class ContrastiveCaptionReward(CaptionMatchReward):
    """Softmax probability of the target's prompt among ``prompts``, in ``[0, 1]``.

    ``softmax(cos(view, prompts) / temperature)[target]``; its cumulant is the
    whole ``(B, len(prompts))`` softmax (for ``caption_match`` the prompts are
    the source's class prompts, so the cumulant lives in its annotation space).

    Args:
        image_encoder, text_encoder: as for :class:`CaptionMatchReward`.
        prompts: the candidate captions, e.g. ``"a photo of a {class}"`` per class.
        target: index of the target prompt.
        temperature: softmax temperature on the cosines (CLIP uses 0.01).
    """

    def __init__(
        self,
        image_encoder: Callable[[Tensor], Tensor],
        text_encoder: Callable[[list[str]], Tensor],
        prompts: Sequence[str],
        target: int,
        temperature: float = 0.01,
    ) -> None:
        prompts = list(prompts)
        if not 0 <= target < len(prompts):
            raise ValueError(f"target must index the {len(prompts)} prompts, got {target}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.image_encoder = _eval(image_encoder)
        self.prompts = prompts
        self.caption = prompts[target]
        self.target = int(target)
        self.temperature = float(temperature)
        self._text = _OnDevice(_encode_texts(text_encoder, prompts))

    def cumulant(self, views: Tensor, state: ViewState, annotations: Annotations) -> Tensor:
        """``(B, len(prompts))`` softmax over the prompts."""
        cos = _cosine(self._embed(views), self._text.on(views.device))
        return torch.softmax(cos / self.temperature, dim=1)

    def __call__(self, views: Tensor, state: ViewState, annotations: Annotations) -> Tensor:
        return self.cumulant(views, state, annotations)[:, self.target]


class TeacherProbReward:
    """Probability a frozen classifier assigns to ``target``, in ``[0, 1]``.

    Without ``prototypes``, ``model(views)`` gives logits ``(B, K)`` and the
    reward is ``softmax(logits / temperature)[:, target]``. With
    ``prototypes`` ``(K, D)``, ``model(views)`` gives features ``(B, D)`` and
    the logits are their cosines to the prototypes over ``temperature``. Its
    cumulant is the whole ``(B, K)`` softmax over the teacher's classes.

    Args:
        model: frozen classifier or feature extractor; run under
            ``torch.no_grad``, in eval mode when it is an ``nn.Module``.
        target: index of the target among the model's ``K`` outputs.
        prototypes: ``(K, D)`` class prototypes, or None.
        temperature: softmax temperature; None: 1 for logits, 0.1 for prototypes.
    """

    needs_annotations = False
    needs_views = True

    def __init__(
        self,
        model: Callable[[Tensor], Tensor],
        target: int,
        prototypes: Tensor | None = None,
        temperature: float | None = None,
    ) -> None:
        if temperature is None:
            temperature = 1.0 if prototypes is None else 0.1
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self._prototypes = None
        if prototypes is not None:
            prototypes = torch.as_tensor(prototypes).detach().float()
            if prototypes.dim() != 2:
                raise ValueError(f"prototypes must be (K, D), got shape {tuple(prototypes.shape)}")
            if not 0 <= target < prototypes.shape[0]:
                raise ValueError(f"target must index the {prototypes.shape[0]} prototypes, got {target}")
            self._prototypes = _OnDevice(prototypes)
        if target < 0:
            raise ValueError(f"target must be >= 0, got {target}")
        self.model = _eval(model)
        self.target = int(target)
        self.temperature = float(temperature)

    def cumulant(self, views: Tensor, state: ViewState, annotations: Annotations) -> Tensor:
        """``(B, K)`` softmax over the teacher's classes."""
        with torch.no_grad():
            out = self.model(views)
        if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != views.shape[0]:
            raise ValueError(
                f"model must return a (B, K) tensor for B={views.shape[0]} views, "
                f"got {getattr(out, 'shape', type(out).__name__)}"
            )
        out = out.detach().float().to(views.device)
        logits = out if self._prototypes is None else _cosine(out, self._prototypes.on(views.device))
        if self.target >= logits.shape[1]:
            raise ValueError(
                f"target {self.target} is out of range for a model with {logits.shape[1]} classes"
            )
        return torch.softmax(logits / self.temperature, dim=1)

    def __call__(self, views: Tensor, state: ViewState, annotations: Annotations) -> Tensor:
        return self.cumulant(views, state, annotations)[:, self.target]


def _resolve(target: int | str, classes: Sequence[str] | None, annotations: Annotations, reward: str) -> int:
    """A class index from an index or a name (looked up in ``classes``, else the source's)."""
    if isinstance(target, str):
        names = list(classes) if classes is not None else annotations.classes
        if target not in names:
            raise ValueError(f"reward {reward!r}: target {target!r} is not a class; classes: {names}")
        return names.index(target)
    if isinstance(target, bool) or not isinstance(target, int):
        try:
            target = int(target)  # numpy / 0-d tensor indices
        except (TypeError, ValueError):
            raise TypeError(
                f"reward {reward!r}: target must be a class index or name, got {type(target).__name__}"
            ) from None
    return int(target)


@register_reward("edge_density")
def _edge_density(annotations: Annotations) -> EdgeDensityReward:
    return EdgeDensityReward()


@register_reward("saliency")
def _saliency(
    annotations: Annotations,
    centre_sigma: float = 0.03,
    surround_sigma: float | None = 0.25,
    resolution: int | None = 64,
) -> SaliencyReward:
    return SaliencyReward(centre_sigma, surround_sigma, resolution)


@register_reward("caption_match")
def _caption_match(
    annotations: Annotations,
    image_encoder: Callable[[Tensor], Tensor] | None = None,
    text_encoder: Callable[[list[str]], Tensor] | None = None,
    caption: str | None = None,
    target: int | str | None = None,
    contrastive: bool = False,
    template: str = "a photo of a {}",
    temperature: float = 0.01,
) -> CaptionMatchReward:
    if image_encoder is None or text_encoder is None:
        raise TypeError("reward 'caption_match' needs image_encoder= and text_encoder= (callables)")
    if contrastive:
        if caption is not None or target is None:
            raise TypeError(
                "reward 'caption_match' with contrastive=True scores target= (a class index or name) "
                "among the source's class prompts; give target= (and template=), not caption="
            )
        if not annotations.num_classes:
            raise ValueError("reward 'caption_match' with contrastive=True needs a source with classes")
        index = annotations.class_index(target)
        prompts = [template.format(c) for c in annotations.classes]
        return ContrastiveCaptionReward(image_encoder, text_encoder, prompts, index, temperature)
    if (caption is None) == (target is None):
        raise TypeError(
            "reward 'caption_match' needs exactly one of caption= (a string) or target= (a class)"
        )
    if caption is None:
        assert target is not None
        caption = template.format(annotations.classes[annotations.class_index(target)])
    if not isinstance(caption, str):
        raise TypeError(f"reward 'caption_match': caption must be a string, got {type(caption).__name__}")
    return CaptionMatchReward(image_encoder, text_encoder, caption)


@register_reward("teacher_prob")
def _teacher_prob(
    annotations: Annotations,
    model: Callable[[Tensor], Tensor] | None = None,
    target: int | str | None = None,
    prototypes: Tensor | None = None,
    temperature: float | None = None,
    classes: Sequence[str] | None = None,
) -> TeacherProbReward:
    """``classes`` names the model's outputs, for a ``target`` given by name (default: the source's)."""
    if model is None:
        raise TypeError("reward 'teacher_prob' needs model= (a callable views -> logits or features)")
    if target is None:
        raise TypeError("reward 'teacher_prob' needs target= (a class index or name)")
    index = _resolve(target, classes, annotations, "teacher_prob")
    if classes is not None and not 0 <= index < len(classes):
        raise ValueError(f"reward 'teacher_prob': target must be in [0, {len(classes)}), got {index}")
    return TeacherProbReward(model, index, prototypes, temperature)
