"""Offline transitions of the image-view MDP: several views of each image, every ordered pair.

The behaviour policy of annotation bootstrapping is "random nearby views": a
batch holds ``V`` RandomResizedCrop views of each of ``B`` images, and every
ordered pair ``(i, j)`` is a transition whose action is the relative box
``relative[b, i, j]`` (view ``j``'s box in the frame of view ``i``'s box, as
:func:`vpt_env.core.boxes.relative_box` defines it).

Example:
    >>> from vpt_env import TransitionSampler
    >>> sampler = TransitionSampler(view_size=32, seed=0)
    >>> batch = sampler.sample(8, views_per_image=4)
    >>> tuple(batch.views.shape), tuple(batch.relative.shape)
    ((8, 4, 3, 32, 32), (8, 4, 4, 4))
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from vpt_env.core.augment import AUG_DIM, action_to_aug, identity_aug
from vpt_env.core.boxes import clamp_boxes, iou, relative_box
from vpt_env.core.dynamics import random_boxes
from vpt_env.core.render import render, to_uint8
from vpt_env.core.state import EnvParams, ViewState
from vpt_env.data.annotations import view_cumulant
from vpt_env.data.pool import ImagePool, check_device, fork_safe_threads
from vpt_env.data.sources import MAX_IMAGE_SIDE

__all__ = ["METHOD_CROP_SCALE", "TransitionBatch", "TransitionSampler"]

#: RandomResizedCrop area range of docs/method.md's views (5-100% of the image): the default of the
#: sampler and of ``agents.pretrain.DataConfig.scale``.
METHOD_CROP_SCALE: tuple[float, float] = (0.05, 1.0)


class TransitionBatch(NamedTuple):
    """A batch of ``B`` images with ``V`` views each, and every ordered pair of views.

    Attributes:
        views: ``(B, V, 3, S, S)`` float32 in ``[0, 1]`` (or ``(B, V, S, S, 3)``
            uint8 with ``output="uint8"``).
        boxes: ``(B, V, 4)`` normalised view boxes.
        relative: ``(B, V, V, 4)``: ``relative[b, i, j]`` is view ``j``'s box in
            the frame of view ``i`` (the action of transition ``i -> j``).
        iou: ``(B, V, V)`` IoU of every pair of views.
        pair_valid: ``(B, V, V)`` bool: ``i != j`` and the pair's IoU lies in the
            sampler's ``iou_range``.
        aug: ``(B, V, 7)`` augmentation vectors (identity unless ``augment``).
        cumulants: ``(B, V, K)`` per-view distributions over the source's
            classes, or None for a source without an annotation space.
        image: ``(B,)`` int64 image indices in the pool.
        labels: ``(B,)`` int64 image labels, -1 where unknown.
        caption: ``(B,)`` int64 index into :attr:`TransitionSampler.captions` of
            one caption drawn per image, -1 for uncaptioned images.
        crop_views: the same boxes rendered without augmentation (crops only), like
            ``views``, when the sampler was built with ``augment=True, crop_views=True``;
            None otherwise (then ``views`` are crops only, or no crop-only copy was asked for).
        base_views: ``(B, K, 3, S, S)`` (or ``(B, K, S, S, 3)`` uint8) ``K = base_views`` more
            views per image, drawn with the sampler's ``base_view_scale`` (and augmented like
            ``views``), for a base loss with its own crops: CLIP's caption view of most of the
            image, DINO's global crops; None without them.
        base_boxes: ``(B, K, 4)`` their boxes; None without them.
    """

    views: Tensor
    boxes: Tensor
    relative: Tensor
    iou: Tensor
    pair_valid: Tensor
    aug: Tensor
    cumulants: Tensor | None
    image: Tensor
    labels: Tensor
    caption: Tensor
    crop_views: Tensor | None = None
    base_views: Tensor | None = None
    base_boxes: Tensor | None = None


class TransitionSampler:
    """Samples :class:`TransitionBatch` es on a device, deterministically under its generator.

    Args:
        source: as for ``ImageView-v0`` (None: the embedded photos), or a ready
            :class:`ImagePool`.
        view_size: side ``S`` of the views.
        scale: RandomResizedCrop area range (docs/method.md: ``(0.05, 1.0)``).
        ratio: RandomResizedCrop pixel-aspect range.
        iou_range: optional ``(low, high)`` bounds on the IoU of the pairs.
            Views that break a bound with an earlier view of the same image are
            redrawn up to ``resample_rounds`` times (no host synchronisation);
            pairs still outside are marked False in ``pair_valid``.
        resample_rounds: redraw rounds for ``iou_range``.
        augment: draw a random augmentation per view (uniform over the ranges
            of ``params``) instead of none (AB's views are crops only).
        crop_views: with ``augment``, also render every view's box without
            augmentation into ``TransitionBatch.crop_views`` (no extra random
            draws: the batch is otherwise the one ``crop_views=False`` gives).
            Ignored without ``augment``.
        base_view_scale: if given, also draw ``base_views`` more views per image
            with this RandomResizedCrop area range into ``TransitionBatch.base_views``
            (their random numbers are drawn after all others, so the rest of the
            batch is the one ``None`` gives): the crops a base loss draws for itself
            (docs/method.md: the base has its own batch), e.g. CLIP's view of most of the
            image, which its caption describes, or DINO's global crops.
        base_views: how many such views per image (>= 1).
        params: :class:`EnvParams` for the render (interpolation, augmentation
            ranges); ``view_size`` overrides its view size.
        output: ``"float"`` (default) or ``"uint8"`` views.
        device: where the pool lives and sampling runs.
        seed: seed of the sampler's ``torch.Generator``.
        max_image_side, strict: as for the envs.
        max_pool_bytes: memory cap of the image pool: a larger source is read
            lazily, a random part that fits; ``sampler.pool.resample(seed)``
            swaps in another part (then call :meth:`refresh`).
    """

    def __init__(
        self,
        source: Any = None,
        *,
        view_size: int = 64,
        scale: tuple[float, float] = METHOD_CROP_SCALE,
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        iou_range: tuple[float, float] | None = None,
        resample_rounds: int = 8,
        augment: bool = False,
        crop_views: bool = False,
        base_view_scale: tuple[float, float] | None = None,
        base_views: int = 1,
        params: EnvParams | None = None,
        output: str = "float",
        device: str | torch.device = "cpu",
        seed: int = 0,
        max_image_side: int = MAX_IMAGE_SIDE,
        strict: bool = False,
        max_pool_bytes: int | None = None,
    ) -> None:
        base = params if params is not None else EnvParams()
        self.params = base.replace(view_size=view_size, init_scale=tuple(scale), init_ratio=tuple(ratio))
        if iou_range is not None and not (len(iou_range) == 2 and 0.0 <= iou_range[0] <= iou_range[1] <= 1.0):
            raise ValueError(f"iou_range must be (low, high) with 0 <= low <= high <= 1, got {iou_range!r}")
        if isinstance(resample_rounds, bool) or not isinstance(resample_rounds, int) or resample_rounds < 0:
            raise ValueError(f"resample_rounds must be an int >= 0, got {resample_rounds!r}")
        if output not in ("float", "uint8"):
            raise ValueError(f"output must be 'float' or 'uint8', got {output!r}")
        self.iou_range = iou_range
        self.resample_rounds = resample_rounds
        if not isinstance(augment, bool):
            raise TypeError(f"augment must be a bool, got {type(augment).__name__}")
        if not isinstance(crop_views, bool):
            raise TypeError(f"crop_views must be a bool, got {type(crop_views).__name__}")
        self.augment = augment
        self.crop_views = crop_views
        if base_view_scale is not None:
            base_view_scale = tuple(base_view_scale)  # type: ignore[assignment]
            if not (len(base_view_scale) == 2 and 0.0 < base_view_scale[0] <= base_view_scale[1] <= 1.0):
                raise ValueError(
                    "base_view_scale must be None or (low, high) with 0 < low <= high <= 1, got "
                    f"{base_view_scale!r}"
                )
        self.base_view_scale = base_view_scale
        if isinstance(base_views, bool) or not isinstance(base_views, int) or base_views < 1:
            raise ValueError(f"base_views must be an int >= 1, got {base_views!r}")
        self.base_views = base_views
        self.output = output
        fork_safe_threads()
        self.device = check_device(device)
        if isinstance(source, ImagePool):
            self.pool = source
        else:
            self.pool = ImagePool.from_source(
                source,
                min_side=view_size,
                max_side=max_image_side,
                strict=strict,
                device=self.device,
                keep_float=self.params.interpolation != "nearest",
                max_bytes=max_pool_bytes,
                seed=seed,
            )
        self.refresh()
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)

    def refresh(self) -> None:
        """Rebuild the caption tables after the pool's images changed (``pool.resample``)."""
        ann = self.pool.annotations
        #: Every caption of the source, in image order (``TransitionBatch.caption`` indexes it).
        self.captions: list[str] = [c for caps in ann.captions for c in caps]
        counts = torch.tensor([len(c) for c in ann.captions], dtype=torch.int64)
        self._caption_count = counts.to(self.device)
        self._caption_start = (torch.cumsum(counts, 0) - counts).to(self.device)

    def __len__(self) -> int:
        return len(self.pool)

    def _rand(self, *shape: int) -> Tensor:
        return torch.rand(*shape, generator=self.generator, device=self.device)

    def _boxes(self, hw: Tensor, scale: tuple[float, float] | None = None) -> Tensor:
        n = hw.shape[0]
        scale = self.params.init_scale if scale is None else scale
        return clamp_boxes(
            random_boxes(hw, scale, self.params.init_ratio, self._rand(n, 4)),
            min_size=self.params.min_box_size,
        )

    def _augs(self, n: int) -> Tensor:
        """``n`` augmentation vectors: uniform over ``params``' ranges with ``augment``, else identity."""
        aug = identity_aug(n, device=self.device)
        if self.augment:
            u = self._rand(n, AUG_DIM) * 2 - 1
            aug = action_to_aug(u, aug, self.params.enabled_mask(self.device), self.params.ranges)
        return aug

    def _violations(self, boxes: Tensor) -> Tensor:
        """``(B, V)`` bool: view breaks the IoU bounds with some earlier view."""
        assert self.iou_range is not None
        v = boxes.shape[1]
        pair = iou(boxes[:, :, None, :], boxes[:, None, :, :])
        bad = (pair < self.iou_range[0]) | (pair > self.iou_range[1])
        earlier = torch.ones(v, v, dtype=torch.bool, device=boxes.device).tril(-1)
        return (bad & earlier).any(dim=2)

    def sample(
        self, batch_size: int, views_per_image: int = 4, images: Tensor | None = None
    ) -> TransitionBatch:
        """Draw ``batch_size`` images (uniformly, with replacement) and ``views_per_image`` views each.

        Args:
            batch_size: ``B``.
            views_per_image: ``V`` (at least 2 for a transition).
            images: optional ``(B,)`` image indices to use instead of drawing them.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if isinstance(views_per_image, bool) or not isinstance(views_per_image, int) or views_per_image < 1:
            raise ValueError(f"views_per_image must be a positive int, got {views_per_image!r}")
        b, v = batch_size, views_per_image
        n = len(self.pool)
        if images is None:
            image = (self._rand(b) * n).long().clamp_(max=n - 1)
        else:
            image = torch.as_tensor(images, dtype=torch.int64, device=self.device)
            if image.shape != (b,) or not bool(((image >= 0) & (image < n)).all()):
                raise ValueError(f"images must hold {b} indices in [0, {n})")
        hw = self.pool.image_hw[image].repeat_interleave(v, dim=0)
        boxes = self._boxes(hw).view(b, v, 4)
        if self.iou_range is not None:
            for _ in range(self.resample_rounds):
                redo = self._violations(boxes)
                boxes = torch.where(redo[..., None], self._boxes(hw).view(b, v, 4), boxes)
        flat_image = image.repeat_interleave(v)
        aug = self._augs(b * v)
        zeros = torch.zeros(b * v, dtype=torch.int64, device=self.device)
        state = ViewState(flat_image, boxes.view(-1, 4), aug, zeros, zeros, zeros)
        views = self._shape(render(self.pool, state, self.params), b, v)
        crop_views = None
        if self.augment and self.crop_views:
            plain = state._replace(aug=identity_aug(b * v, device=self.device))
            crop_views = self._shape(render(self.pool, plain, self.params), b, v)
        pair_iou = iou(boxes[:, :, None, :], boxes[:, None, :, :])
        valid = ~torch.eye(v, dtype=torch.bool, device=self.device).expand(b, v, v)
        if self.iou_range is not None:
            valid = valid & (pair_iou >= self.iou_range[0]) & (pair_iou <= self.iou_range[1])
        ann = self.pool.annotations
        cumulants = None
        if ann.num_classes:
            cumulants = view_cumulant(ann, flat_image, boxes.view(-1, 4)).view(b, v, -1)
        count = self._caption_count[image]
        pick = (self._rand(b) * count.clamp_min(1)).long().clamp_max(count.clamp_min(1) - 1)
        caption = torch.where(count > 0, self._caption_start[image] + pick, torch.full_like(pick, -1))
        base_views = base_boxes = None
        if self.base_view_scale is not None:  # drawn last: the rest of the batch does not move
            k = self.base_views
            base_image = image.repeat_interleave(k)
            base_boxes = self._boxes(self.pool.image_hw[base_image], self.base_view_scale)
            zk = torch.zeros(b * k, dtype=torch.int64, device=self.device)
            state = ViewState(base_image, base_boxes, self._augs(b * k), zk, zk, zk)
            base_views = self._shape(render(self.pool, state, self.params), b, k)
            base_boxes = base_boxes.view(b, k, 4)
        return TransitionBatch(
            views=views,
            boxes=boxes,
            relative=relative_box(boxes[:, :, None, :], boxes[:, None, :, :]),
            iou=pair_iou,
            pair_valid=valid,
            aug=aug.view(b, v, AUG_DIM),
            cumulants=cumulants,
            image=image,
            labels=ann.labels[image],
            caption=caption,
            crop_views=crop_views,
            base_views=base_views,
            base_boxes=base_boxes,
        )

    def _shape(self, views: Tensor, b: int, v: int) -> Tensor:
        """Rendered ``(B * V, 3, S, S)`` views as ``(B, V, 3, S, S)`` floats or ``(B, V, S, S, 3)`` uint8."""
        s = self.params.view_size
        return to_uint8(views).view(b, v, s, s, 3) if self.output == "uint8" else views.view(b, v, 3, s, s)

    def caption_text(self, ids: Tensor) -> list[str | None]:
        """The caption strings of ``TransitionBatch.caption`` ids (None for -1)."""
        return [self.captions[i] if i >= 0 else None for i in ids.tolist()]

    def state_dict(self) -> dict[str, Any]:
        """The generator state, for exact resumption."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`."""
        self.generator.set_state(state["generator"])
