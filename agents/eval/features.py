"""Probe data and frozen features: render evaluation views of a source, run an encoder over them.

Two tasks (docs/method.md):

* ``"image"``: each whole image (box ``(0, 0, 1, 1)``) as one view; its label
  is the image label (-1 when unknown) and its target the multi-hot of the
  object classes present (sources with boxes, e.g. scenes).
* ``"objects"``: object presence in a region: one view per object box, the box
  enlarged by 10% about its centre then clamped to the image, labelled with
  that object's class.

The held-out split is by image (:func:`split_indices`), so the objects of one
image never fall on both sides.

Example:
    >>> import torch
    >>> train, test = split_indices(8, test_fraction=0.25, seed=0)
    >>> len(train), len(test), sorted(torch.cat((train, test)).tolist()) == list(range(8))
    (6, 2, True)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from vpt_env.core.render import render_crops
from vpt_env.data.pool import ImagePool
from vpt_env.data.sources import SubsetSource, resolve_source
from vpt_env.progress import Progress

__all__ = ["TASKS", "Features", "ProbeData", "extract_features", "probe_views", "split_indices"]

TASKS = ("image", "objects")
SPLITS = ("all", "train", "test")
#: Object boxes grow by this fraction of their width and height before cropping.
OBJECT_MARGIN = 0.1
#: Views rendered per call (bounds the renderer's working set).
RENDER_CHUNK = 1024


class Features(NamedTuple):
    """Frozen features of a set of views.

    Attributes:
        pooled: ``(N, D)`` float32 pooled vectors (CPU).
        tokens: ``(N, T, D)`` float32 spatial tokens (CPU).
    """

    pooled: Tensor
    tokens: Tensor


class ProbeData(NamedTuple):
    """Evaluation views of a source and what is known about them.

    Attributes:
        views: ``(N, 3, S, S)`` float32 in ``[0, 1]``.
        labels: ``(N,)`` int64 class index, -1 where unknown.
        targets: ``(N, K)`` float32 multi-hot object classes present, or None
            (sources without boxes, and the ``"objects"`` task).
        class_names: names of the ``K`` classes.
        image: ``(N,)`` int64 index of each view's image (0 .. ``num_images`` - 1).
        boxes: ``(N, 4)`` normalised region ``(x0, y0, x1, y1)`` each view shows.
        num_images: images the views were drawn from (the split is over these).
    """

    views: Tensor
    labels: Tensor
    targets: Tensor | None
    class_names: list[str]
    image: Tensor
    boxes: Tensor
    num_images: int

    def subset(self, idx: Tensor) -> ProbeData:
        """The rows ``idx`` (int indices or a bool mask)."""
        return self._replace(
            views=self.views[idx],
            labels=self.labels[idx],
            targets=None if self.targets is None else self.targets[idx],
            image=self.image[idx],
            boxes=self.boxes[idx],
        )


def split_indices(n: int, test_fraction: float = 0.25, seed: int = 0) -> tuple[Tensor, Tensor]:
    """A deterministic random split of ``range(n)`` into train and test indices.

    Args:
        n: number of items (>= 2).
        test_fraction: fraction held out, in ``(0, 1)``; at least one item
            lands on each side.
        seed: seed of the permutation.

    Returns:
        ``(train_idx, test_idx)``: sorted int64 tensors partitioning ``range(n)``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an int >= 2, got {n!r}")
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    n_test = min(max(round(n * float(test_fraction)), 1), n - 1)
    return perm[n_test:].sort().values, perm[:n_test].sort().values


def _unpack(out: Any) -> tuple[Tensor, Tensor]:
    if hasattr(out, "pooled") and hasattr(out, "tokens"):
        return out.pooled, out.tokens
    if isinstance(out, tuple | list) and len(out) == 2:
        return out[0], out[1]
    raise TypeError(
        "encoder must return an EncoderOutput (pooled, tokens) or a (pooled, tokens) tuple, "
        f"got {type(out).__name__}"
    )


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    views: Tensor | Iterable[Tensor],
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
) -> Features:
    """Run a frozen encoder over views, in eval mode, without gradients.

    The encoder's training flag (and those of its submodules) is restored afterwards.

    Args:
        encoder: maps ``(B, 3, S, S)`` floats in ``[0, 1]`` to ``(pooled (B, D), tokens (B, T, D))``
            (an ``EncoderOutput`` or a tuple).
        views: ``(N, 3, S, S)`` tensor, or an iterable of such batches.
        batch_size: views per forward pass when ``views`` is a tensor.
        device: where the encoder runs (it is expected to live there already).
        progress: counts the views as they pass (:class:`~vpt_env.progress.Progress`).

    Returns:
        :class:`Features` on the CPU, float32.
    """
    if not isinstance(encoder, nn.Module):
        raise TypeError(f"encoder must be an nn.Module, got {type(encoder).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if isinstance(views, Tensor):
        if views.dim() != 4 or views.shape[1] != 3:
            raise ValueError(f"views must be (N, 3, S, S), got shape {tuple(views.shape)}")
        batches: Iterable[Tensor] = views.split(batch_size)
    else:
        batches = views
    modes = {m: m.training for m in encoder.modules()}
    encoder.eval()
    pooled: list[Tensor] = []
    tokens: list[Tensor] = []
    try:
        for x in batches:
            p, t = _unpack(encoder(x.to(device, torch.float32)))
            pooled.append(p.float().cpu())
            tokens.append(t.float().cpu())
            if progress is not None:
                progress.update(len(x))
    finally:
        for m, mode in modes.items():
            m.training = mode
    if not pooled:
        raise ValueError("views holds no batch")
    return Features(torch.cat(pooled), torch.cat(tokens))


def _pool(
    source: Any, view_size: int, max_images: int | None, seed: int, device: torch.device, progress: bool
) -> ImagePool:
    if isinstance(source, ImagePool):
        if max_images is not None:
            raise ValueError("max_images must be None when source is a ready ImagePool")
        return source
    src = resolve_source(source)
    if max_images is not None:
        if isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1:
            raise ValueError(f"max_images must be a positive int or None, got {max_images!r}")
        if max_images < len(src):
            # A random subset: a source sorted by class must not lose whole classes.
            perm = torch.randperm(len(src), generator=torch.Generator().manual_seed(int(seed)))
            src = SubsetSource(src, sorted(perm[:max_images].tolist()))
    return ImagePool.from_source(src, min_side=view_size, device=device, progress=progress)


def probe_views(
    source: Any,
    split: str = "all",
    view_size: int = 32,
    max_images: int | None = None,
    seed: int = 0,
    task: str = "image",
    test_fraction: float = 0.25,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> ProbeData:
    """Render the evaluation views of a source for one task and split.

    Args:
        source: anything ``ImagePool.from_source`` takes (e.g. a ``SceneSource``), or a ready
            ``ImagePool``.
        split: ``"all"``, or ``"train"`` / ``"test"``: the images that
            :func:`split_indices` (``num_images``, ``test_fraction``, ``seed``) puts there.
        view_size: side ``S`` of the views.
        max_images: use a random subset (``seed``) of this many images; None for all.
        seed: seed of the subset and of the split.
        task: ``"image"`` (whole images) or ``"objects"`` (one view per object box).
        test_fraction: fraction of images held out for ``split="test"``.
        device: where the images are rendered (the views come back on the CPU).
        progress: show reading the images and rendering the views on stderr
            (:class:`~vpt_env.progress.Progress`).

    Returns:
        :class:`ProbeData`.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if isinstance(view_size, bool) or not isinstance(view_size, int) or not 8 <= view_size <= 1024:
        raise ValueError(f"view_size must be an int in [8, 1024], got {view_size!r}")
    dev, size = torch.device(device), view_size
    pool = _pool(source, view_size, max_images, seed, dev, progress)
    ann = pool.annotations
    n_img, k = len(pool), ann.num_classes
    images = torch.arange(n_img)
    if split != "all":
        train, test = split_indices(n_img, test_fraction, seed)
        images = train if split == "train" else test
    box_labels = ann.box_labels.cpu()
    targets = None
    if task == "image":
        boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0]]).expand(len(images), 4)
        labels = ann.labels.cpu()[images]
        if ann.has_boxes:
            present = box_labels[images]
            targets = torch.zeros(len(images), k)
            targets.scatter_add_(1, present.clamp_min(0), (present >= 0).float())
            targets.clamp_(max=1.0)
    else:
        if not ann.has_boxes:
            raise ValueError('task="objects" needs a source with object boxes (e.g. SceneSource)')
        valid = box_labels[images] >= 0  # (n, M)
        rows, cols = valid.nonzero(as_tuple=True)
        obj = ann.boxes.cpu()[images][rows, cols]
        labels = box_labels[images][rows, cols]
        images = images[rows]
        half = (obj[:, 2:] - obj[:, :2]) * (0.5 * (1.0 + OBJECT_MARGIN))
        centre = (obj[:, 2:] + obj[:, :2]) * 0.5
        boxes = torch.cat((centre - half, centre + half), dim=1).clamp(0.0, 1.0)
    views = []
    with Progress(len(images), "rendering probe views", unit="views", enabled=progress) as bar:
        for i in range(0, len(images), RENDER_CHUNK):
            idx, box = images[i : i + RENDER_CHUNK].to(dev), boxes[i : i + RENDER_CHUNK].to(dev)
            views.append(render_crops(pool, idx, box, size).clamp(0.0, 1.0).cpu())
            bar.update(len(idx))
    return ProbeData(
        views=torch.cat(views) if views else torch.zeros(0, 3, view_size, view_size),
        labels=labels.long(),
        targets=targets,
        class_names=list(ann.classes),
        image=images.long(),
        boxes=boxes.contiguous().float(),
        num_images=n_img,
    )
