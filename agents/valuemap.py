"""Value maps: where an AB system's value function expects each annotation of an image.

For one image, the start view ``x`` is the whole image (box ``(0, 0, 1, 1)``) rendered at the run's
view size, as training renders a crop; the moves ``a`` are square boxes of one size whose centres lie
on a ``G x G`` grid; and ``Q(l | x, a) = softmax_l(phi_AB(x, a) . psi_AB(l) / t_AB)`` comes from the
*online* encoder and decoder (docs/method.md) through :func:`agents.systems.base.decode` and
:func:`agents.losses.ab_logits`. The annotation set ``L`` is built per system from the image's own
annotations, plus distractors so that the softmax runs over a meaningful set:

* ABCLIP: one class caption per class of the source, worded by the scenes' caption template with no
  optional words (``"a digit 3"``), plus the image's own captions; each through the online text
  tower and ``psi_head``. Maps: the classes of the image's objects, then its captions.
* ABSupervised: every row of the class embedding. Maps: the classes of the image's objects.
* ABSimCLR: ``psi_head`` of the online encoder's pooled output of a view cropped to each of the
  image's object boxes, plus crops of up to ``distractors`` objects of the following images of the
  source (whole images where those have no boxes). Maps: the image's objects ("this object").
* ABDINO: all ``K`` prototypes. Maps: for each object, the prototype to which the teacher (AB's
  ``p_ema``: the EMA encoder and head, centred and sharpened) gives the highest probability on the
  object's crop.

:func:`value_map` computes a :class:`ValueMap`, :func:`draw_value_map` draws it with PIL (the image
with its boxes beside one heatmap per annotation), and
:func:`write_value_map` writes the PNG and the numbers as JSON; ``vpt valuemap`` is the command.

Example:
    >>> from agents.valuemap import move_grid
    >>> moves = move_grid(3, (0.5, 0.5))
    >>> tuple(moves.shape), moves[0, 0].tolist(), moves[2, 1].tolist()
    ((3, 3, 4), [0.0, 0.0, 0.5, 0.5], [0.25, 0.5, 0.75, 1.0])
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, ImageOps
from torch import Tensor, nn

from agents.losses import ab_logits, teacher_probs
from agents.systems import BaseSystem
from agents.systems.base import decode, encode_groups
from vpt_env.core.boxes import cxcywh_to_box, relative_box
from vpt_env.core.render import render_crops
from vpt_env.data.annotations import Annotation
from vpt_env.data.image_convert import to_rgb_uint8
from vpt_env.data.pool import ImagePool
from vpt_env.data.scene_text import caption
from vpt_env.data.sources import SubsetSource
from vpt_env.data.summary import _PALETTE  # the box colours of `vpt info`'s contact sheet

__all__ = [
    "MAX_GRID",
    "AnnotationSet",
    "MappedImage",
    "ValueMap",
    "annotation_set",
    "class_caption",
    "clip_annotations",
    "dino_annotations",
    "draw_value_map",
    "heldout_source",
    "move_grid",
    "q_values",
    "simclr_annotations",
    "supervised_annotations",
    "value_map",
    "write_value_map",
]

#: Largest grid side accepted (a grid of G x G moves is one decoder call of G**2 moves).
MAX_GRID = 64
_WHOLE = (0.0, 0.0, 1.0, 1.0)


class AnnotationSet(NamedTuple):
    """The annotation space ``L`` of a value map and which of its annotations are drawn.

    Attributes:
        psi: ``(L, E)`` online annotation embeddings ``psi_AB(l)`` (detached).
        names: the text of each of the ``L`` annotations.
        shown: indices into ``L`` of the annotations drawn, one map each (may repeat).
        titles: the title of each drawn map.
        objects: for each drawn map, the indices of the image's objects it refers to (empty for a
            caption of the whole image).
        description: what ``L`` holds, in words (for the figure and the JSON).
    """

    psi: Tensor
    names: list[str]
    shown: list[int]
    titles: list[str]
    objects: list[tuple[int, ...]]
    description: str


class ValueMap(NamedTuple):
    """``Q(l | x, a)`` of one image over a grid of moves, with what is needed to draw it.

    Attributes:
        method: the system's method (``"abclip"``, ...).
        image_index: the image's index in its source.
        image_name: the image's name (the source's ``name(i)``).
        image: ``(H, W, 3)`` uint8 pixels of the image.
        boxes: ``(M, 4)`` the image's object boxes, normalised ``(x0, y0, x1, y1)``.
        box_names: the class name of each object.
        captions: the image's captions.
        view_size: side of the rendered start view (the run's view size).
        move_size: side of every move box as a fraction of the image's shorter side.
        moves: ``(G, G, 4)`` the move boxes in image coordinates; row ``r`` is the ``r``-th centre
            from the top, column ``c`` the ``c``-th from the left. The start view is the whole image,
            so these are also the relative boxes ``bb_x->a`` the decoder sees.
        q: ``(G, G, L)`` ``Q(l | x, a)`` of every move (each cell sums to 1 over ``L``).
        annotations: the :class:`AnnotationSet`.
    """

    method: str
    image_index: int
    image_name: str
    image: np.ndarray
    boxes: Tensor
    box_names: list[str]
    captions: list[str]
    view_size: int
    move_size: float
    moves: Tensor
    q: Tensor
    annotations: AnnotationSet

    def to_dict(self) -> dict[str, Any]:
        """The numbers as a JSON-able dict (every ``Q``, the moves, ``L`` and the drawn maps)."""
        ann = self.annotations
        return {
            "method": self.method,
            "image_index": self.image_index,
            "image_name": self.image_name,
            "image_size": [int(self.image.shape[1]), int(self.image.shape[0])],
            "view_size": self.view_size,
            "grid": int(self.q.shape[0]),
            "move_size": self.move_size,
            "start_view": list(_WHOLE),
            "objects": [
                {"box": box, "name": name}
                for box, name in zip(self.boxes.tolist(), self.box_names, strict=True)
            ],
            "captions": list(self.captions),
            "annotation_set": ann.description,
            "annotations": list(ann.names),
            "maps": [
                {"annotation": i, "title": t, "objects": list(o), "q": self.q[..., i].tolist()}
                for i, t, o in zip(ann.shown, ann.titles, ann.objects, strict=True)
            ],
            "moves": self.moves.tolist(),
            "q": self.q.tolist(),
        }


# -- the value function over a grid of moves ----------------------------------------------------------


def move_grid(grid: int, size: tuple[float, float]) -> Tensor:
    """``G x G`` move boxes of one size whose centres lie on a regular grid inside the image.

    Convention:
        Boxes are normalised ``(x0, y0, x1, y1)``. The centres of row ``r`` and column ``c`` are
        ``cx = w / 2 + (1 - w) * c / (G - 1)`` and ``cy = h / 2 + (1 - h) * r / (G - 1)``, so the
        first and last boxes touch the image's edges and every box lies inside the image (a grid
        spanning the whole image, clamped to it, without two equal boxes).

    Args:
        grid: ``G >= 2``.
        size: ``(w, h)`` of every box, each in ``(0, 1]``.

    Returns:
        ``(G, G, 4)`` float32 boxes, rows top to bottom, columns left to right.
    """
    _check_grid(grid)
    w, h = (float(v) for v in size)
    if not (0.0 < w <= 1.0 and 0.0 < h <= 1.0):
        raise ValueError(f"size must be (w, h) with each in (0, 1], got {size!r}")
    t = torch.arange(grid, dtype=torch.float32) / (grid - 1)
    cy, cx = torch.meshgrid(h / 2 + (1 - h) * t, w / 2 + (1 - w) * t, indexing="ij")
    wh = torch.tensor([w, h]).expand(grid, grid, 2)
    return cxcywh_to_box(torch.cat((torch.stack((cx, cy), dim=-1), wh), dim=-1))


def _check_grid(grid: Any) -> None:
    if isinstance(grid, bool) or not isinstance(grid, int) or not 2 <= grid <= MAX_GRID:
        raise ValueError(f"grid must be an int in [2, {MAX_GRID}], got {grid!r}")


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Eval mode and no gradient inside; every submodule's training flag restored afterwards."""
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, mode in modes.items():
            m.training = mode


def _check_ab(system: BaseSystem) -> None:
    if not isinstance(system, BaseSystem):
        raise TypeError(f"system must be an agents.systems.BaseSystem, got {type(system).__name__}")
    if system.decoder is None:
        from agents.systems import METHODS

        ab = [m for m in METHODS if m.startswith("ab")]
        raise ValueError(
            f"value maps need an AB system (method one of {ab}); got method={system.config.method!r}, "
            "which has no action-conditioned value function"
        )


def q_values(system: BaseSystem, view: Tensor, relative: Tensor, psi: Tensor) -> Tensor:
    """``Q(l | x, a)`` of one view for any number of moves, from the online encoder and decoder.

    Args:
        system: an AB system.
        view: the view ``x``, ``(3, S, S)`` in ``[0, 1]`` (on the system's device).
        relative: the moves as boxes in the view's frame (``relative_box``), ``(..., 4)``.
        psi: ``(L, E)`` annotation embeddings ``psi_AB(l)``.

    Returns:
        ``(..., L)`` probabilities (softmax over ``L`` of :func:`~agents.losses.ab_logits` at the
        system's ``ab_temperature``), in eval mode and without gradient.
    """
    _check_ab(system)
    assert system.decoder is not None
    if view.ndim != 3 or view.shape[0] != 3:
        raise ValueError(f"view must be (3, S, S), got {tuple(view.shape)}")
    with _eval_mode(system):
        out = encode_groups(system.encoder, [view[None, None]])
        phi = decode(system.decoder, out, relative.reshape(1, 1, -1, 4))[0, 0]
        q = ab_logits(phi, psi, system.config.ab_temperature).softmax(dim=-1)
    return q.reshape(*relative.shape[:-1], psi.shape[0])


# -- the annotation set of each system --------------------------------------------------------------


class MappedImage(NamedTuple):
    """The image a value map is drawn for: the input of the annotation-set builders.

    Attributes:
        source: the image source (crops of this and, for ABSimCLR, other images are read from it).
        index: the image's index in ``source``.
        annotation: its :class:`~vpt_env.data.annotations.Annotation` (boxes, labels, captions).
        classes: the source's class names.
        view_size: side of every rendered view.
        device: where views are rendered and encoded.
    """

    source: Any
    index: int
    annotation: Annotation
    classes: list[str]
    view_size: int
    device: torch.device


def _render(
    source: Any, items: Sequence[tuple[int, Sequence[float]]], size: int, device: torch.device
) -> Tensor:
    """Views of ``(image index, normalised box)`` pairs of a source: ``(n, 3, S, S)`` in ``[0, 1]``."""
    images = sorted({i for i, _ in items})
    pool = ImagePool.from_source(SubsetSource(source, images), min_side=size, strict=True, device=device)
    where = {i: k for k, i in enumerate(images)}
    index = torch.tensor([where[i] for i, _ in items], device=device)
    boxes = torch.tensor([list(b) for _, b in items], dtype=torch.float32, device=device)
    return render_crops(pool, index, boxes, size).clamp(0.0, 1.0)


def _object_crops(img: MappedImage) -> Tensor:
    return _render(
        img.source, [(img.index, b) for b in img.annotation.boxes.tolist()], img.view_size, img.device
    )


def _class_maps(img: MappedImage) -> tuple[list[int], list[tuple[int, ...]]]:
    """The classes of the image's objects (first appearance order) and the objects of each."""
    labels = img.annotation.box_labels.tolist()
    classes = list(dict.fromkeys(labels))
    return classes, [tuple(k for k, lab in enumerate(labels) if lab == c) for c in classes]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _objects_text(objects: tuple[int, ...]) -> str:
    return ("object " if len(objects) == 1 else "objects ") + ", ".join(str(k + 1) for k in objects)


def class_caption(name: str) -> str:
    """A caption naming one object of class ``name`` only, worded as the scenes' captions are."""
    return caption([name], np.zeros((1, 3)), np.array([_WHOLE]), (0.0, 1.0), words=())


def clip_annotations(system: BaseSystem, img: MappedImage) -> AnnotationSet:
    """ABCLIP: a class caption per class, then the image's captions, via the text tower and ``psi_head``."""
    texts = [class_caption(c) for c in img.classes] + list(img.annotation.captions)
    text_input = system._text_input(texts, img.device)
    psi = system.psi_head(system._embed_text(system.text, text_input, img.device))
    classes, objects = _class_maps(img)
    own = list(range(len(img.classes), len(texts)))
    titles = [f'"{texts[c]}" ({_objects_text(o)})' for c, o in zip(classes, objects, strict=True)]
    titles += [f'caption "{texts[i]}"' for i in own]
    desc = f"a caption per class ({len(img.classes)})"
    if own:
        desc += f" and the image's {_count(len(own), 'caption')}"
    return AnnotationSet(psi, texts, classes + own, titles, objects + [()] * len(own), desc)


def supervised_annotations(system: BaseSystem, img: MappedImage) -> AnnotationSet:
    """ABSupervised: every row of the class embedding."""
    k = system.config.num_classes
    if len(img.classes) != k:
        raise ValueError(
            f"the source names {len(img.classes)} classes but the system was trained on {k}: map an "
            "image of a source with the run's class space"
        )
    classes, objects = _class_maps(img)
    titles = [f"class {img.classes[c]} ({_objects_text(o)})" for c, o in zip(classes, objects, strict=True)]
    desc = f"the {k} class embeddings"
    return AnnotationSet(system.class_embed.weight, list(img.classes), classes, titles, objects, desc)


def _distractors(img: MappedImage, count: int) -> list[tuple[int, list[float], str]]:
    """Up to ``count`` objects of the images after ``img.index`` (cyclic); whole images without boxes."""
    out: list[tuple[int, list[float], str]] = []
    n = len(img.source)
    for step in range(1, n):
        if len(out) >= count:
            break
        j = (img.index + step) % n
        ann = img.source.annotation(j)
        if len(ann.boxes) == 0:
            out.append((j, list(_WHOLE), f"image {j}"))
            continue
        for box, lab in zip(ann.boxes.tolist(), ann.box_labels.tolist(), strict=True):
            out.append((j, box, f"{img.classes[lab] if 0 <= lab < len(img.classes) else lab} in image {j}"))
    return out[:count]


def simclr_annotations(system: BaseSystem, img: MappedImage, distractors: int = 16) -> AnnotationSet:
    """ABSimCLR: ``psi_head`` of the online encoder on crops of the image's objects, then distractors."""
    others = _distractors(img, distractors)
    crops = _render(
        img.source,
        [(img.index, b) for b in img.annotation.boxes.tolist()] + [(j, b) for j, b, _ in others],
        img.view_size,
        img.device,
    )
    psi = system.psi_head(system.encoder(crops).pooled)
    m = len(img.annotation.boxes)
    own = [f"object {k + 1} ({img.classes[lab]})" for k, lab in enumerate(img.annotation.box_labels.tolist())]
    names = own + [name for _, _, name in others]
    titles = [f"crop of {t}" for t in own]
    desc = f"crops of the image's {_count(m, 'object')} and {_count(len(others), 'crop')} of other images"
    return AnnotationSet(psi, names, list(range(m)), titles, [(k,) for k in range(m)], desc)


def dino_annotations(system: BaseSystem, img: MappedImage) -> AnnotationSet:
    """ABDINO: all prototypes; maps of each object's top prototype under AB's teacher ``p_ema``.

    The teacher is the system's :meth:`~agents.systems.BaseSystem.target_modules` (the EMA copies, or
    the online modules under the ``ab_ema_target=False`` ablation), as in AB's target.
    """
    cfg = system.config
    targets = system.target_modules()
    teacher = targets["head"](targets["encoder"](_object_crops(img)).pooled)
    probs = teacher_probs(teacher, system.center, cfg.dino_teacher_temp)
    top = probs.argmax(dim=-1).tolist()
    k = cfg.dino_prototypes
    titles = [
        f"prototype {p}: teacher's top for object {i + 1} ({img.classes[lab]}, p={probs[i, p]:.2f})"
        for i, (p, lab) in enumerate(zip(top, img.annotation.box_labels.tolist(), strict=True))
    ]
    names = [f"prototype {p}" for p in range(k)]
    desc = f"all {k} prototypes"
    return AnnotationSet(system.head.prototypes, names, top, titles, [(i,) for i in range(len(top))], desc)


def annotation_set(system: BaseSystem, img: MappedImage, distractors: int = 16) -> AnnotationSet:
    """The annotation set of ``system``'s method for one image (see the module docstring)."""
    _check_ab(system)
    base = system.config.base_method
    with _eval_mode(system):
        if base == "clip":
            out = clip_annotations(system, img)
        elif base == "supervised":
            out = supervised_annotations(system, img)
        elif base == "simclr":
            out = simclr_annotations(system, img, distractors)
        else:
            out = dino_annotations(system, img)
    return out._replace(psi=out.psi.detach())


# -- one image ------------------------------------------------------------------------------------------


def heldout_source(spec: str) -> Any | None:
    """The test split of a run's ``DataConfig.source`` where it has one, else None.

    A source of scenes (``"scenes"``, a JSON ``{"scenes": {...}}`` spec, or an embedded name that
    gives a :class:`~vpt_env.data.scenes.SceneSource`) gives the same scenes with ``split="test"``
    (held-out object instances); other sources have no split.

    Raises:
        ValueError: ``spec`` names no readable source.
    """
    from agents.pretrain import resolve_data_source
    from vpt_env.data.scenes import SceneSource

    source = resolve_data_source(spec)
    return SceneSource(source.config, split="test") if isinstance(source, SceneSource) else None


def _source(source: Any) -> Any:
    if isinstance(source, str):
        from agents.pretrain import resolve_data_source

        return resolve_data_source(source)
    from vpt_env.data.sources import resolve_source

    return resolve_source(source)


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def value_map(
    system: BaseSystem,
    source: Any,
    image_index: int,
    *,
    view_size: int,
    grid: int = 9,
    move_size: float | None = None,
    distractors: int = 16,
    device: torch.device | str | None = None,
) -> ValueMap:
    """``Q(l | whole image, move)`` of one image over a ``grid x grid`` set of moves.

    Args:
        system: an AB system (e.g. :func:`agents.export.load_system` of a run).
        source: the images: a ``DataConfig.source`` string or anything
            :func:`~vpt_env.data.sources.resolve_source` takes (e.g. a test-split ``SceneSource``).
        image_index: the image, an index into ``source``; it must have object boxes.
        view_size: side of the start view in pixels (the run's ``DataConfig.view_size``).
        grid: moves per side, in ``[2, MAX_GRID]``.
        move_size: side of each (square) move box as a fraction of the image's shorter side, in
            ``(0, 1]``; None: the median longer side of the image's object boxes.
        distractors: ABSimCLR only: crops of other images' objects added to ``L``.
        device: where to compute (None: the system's device); the system is moved there.

    Returns:
        The :class:`ValueMap`.

    Raises:
        ValueError: a base (non-AB) system, an index out of range, an image without object boxes, or
            a bad ``grid``, ``move_size``, ``view_size`` or ``distractors``.
    """
    _check_ab(system)
    _positive_int("view_size", view_size)
    if isinstance(distractors, bool) or not isinstance(distractors, int) or distractors < 0:
        raise ValueError(f"distractors must be an int >= 0, got {distractors!r}")
    _check_grid(grid)
    if move_size is not None and (
        isinstance(move_size, bool) or not isinstance(move_size, int | float) or not 0.0 < move_size <= 1.0
    ):
        raise ValueError(f"move_size must be None or a number in (0, 1], got {move_size!r}")
    src = _source(source)
    n = len(src)
    if isinstance(image_index, bool) or not isinstance(image_index, int) or not 0 <= image_index < n:
        raise ValueError(
            f"image_index must be an int in [0, {n}) (the source has {n} images), got {image_index!r}"
        )
    name = src.name(image_index) if hasattr(src, "name") else f"image {image_index}"
    ann = src.annotation(image_index)
    if len(ann.boxes) == 0:
        raise ValueError(
            f"image {image_index} ({name}) has no annotated object boxes, so there is nothing to map; "
            "choose an image with objects"
        )
    dev = torch.device(device) if device is not None else next(system.parameters()).device
    system = system.to(dev)
    pixels = to_rgb_uint8(src.image(image_index))
    h, w = pixels.shape[:2]
    short = min(h, w)
    if move_size is None:
        longer = np.maximum((ann.boxes[:, 2] - ann.boxes[:, 0]) * w, (ann.boxes[:, 3] - ann.boxes[:, 1]) * h)
        move_size = float(min(1.0, np.median(longer) / short))
    moves = move_grid(grid, (move_size * short / w, move_size * short / h))
    img = MappedImage(src, image_index, ann, list(getattr(src, "classes", [])), view_size, dev)
    annotations = annotation_set(system, img, distractors)
    view = _render(src, [(image_index, _WHOLE)], view_size, dev)[0]
    relative = relative_box(torch.tensor(_WHOLE), moves)
    q = q_values(system, view, relative.to(dev), annotations.psi).cpu()
    return ValueMap(
        method=system.config.method,
        image_index=image_index,
        image_name=name,
        image=pixels,
        boxes=torch.from_numpy(ann.boxes.copy()),
        box_names=[img.classes[lab] if 0 <= lab < len(img.classes) else str(lab) for lab in ann.box_labels],
        captions=list(ann.captions),
        view_size=view_size,
        move_size=float(move_size),
        moves=moves,
        q=q,
        annotations=annotations._replace(psi=annotations.psi.cpu()),
    )


# -- drawing ---------------------------------------------------------------------------------------------

#: A diverging map (ColorBrewer RdBu, reversed): blue below the uniform level, white at it, red above.
_DIVERGING = np.array(
    [[33, 102, 172], [103, 169, 207], [209, 229, 240], [247, 247, 247], [253, 219, 199], [239, 138, 98],
     [178, 24, 43]], dtype=np.float64,
)  # fmt: skip
_BG, _FG, _DIM = (255, 255, 255), (20, 20, 20), (90, 90, 90)


def _colour(t: float) -> tuple[int, int, int]:
    """The colour of ``t`` in ``[-1, 1]`` (clamped): blue at -1, white at 0, red at 1."""
    x = (min(max(t, -1.0), 1.0) + 1.0) / 2 * (len(_DIVERGING) - 1)
    k = min(int(x), len(_DIVERGING) - 2)
    c = _DIVERGING[k] + (x - k) * (_DIVERGING[k + 1] - _DIVERGING[k])
    return (round(c[0]), round(c[1]), round(c[2]))


def _log_ratio(q: Tensor, n_labels: int) -> Tensor:
    """``log2(Q |L|)``: how many doublings above (or halvings below) the uniform level ``1 / |L|``."""
    return torch.log2(q.double().clamp_min(1e-300) * n_labels)


def _scale(ratio: float, limits: tuple[float, float]) -> float:
    """A ``log2(Q |L|)`` value on the colour scale: ``-limits[0]`` to -1, 0 to 0, ``limits[1]`` to 1."""
    return ratio / (limits[1] if ratio > 0 else limits[0])


def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int, lines: int) -> list[str]:
    """``text`` broken into at most ``lines`` lines of at most ``width`` pixels (the last one cut)."""
    out: list[str] = []
    for word in text.split():
        if out and draw.textlength(out[-1] + " " + word, font=font) <= width:
            out[-1] += " " + word
        else:
            out.append(word)
    if len(out) > lines:
        out = out[:lines]
        out[-1] = out[-1].rstrip(".") + " ..."
    return out


def _fit(image: np.ndarray, side: int) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """The image scaled into a ``side x side`` square, and where it lies there ``(x, y, w, h)``."""
    h, w = image.shape[:2]
    scale = side / max(h, w)
    sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
    out = Image.fromarray(image).resize((sw, sh), Image.Resampling.BICUBIC)
    return out, ((side - sw) // 2, (side - sh) // 2, sw, sh)


def _to_px(box: Sequence[float], at: tuple[int, int, int, int]) -> tuple[float, float, float, float]:
    x, y, w, h = at
    return (x + box[0] * w, y + box[1] * h, x + box[2] * w - 1, y + box[3] * h - 1)


def _image_panel(vm: ValueMap, side: int, font: Any) -> Image.Image:
    panel = Image.new("RGB", (side, side), _BG)
    img, at = _fit(vm.image, side)
    panel.paste(img, at[:2])
    draw = ImageDraw.Draw(panel)
    # One move, the grid's first, drawn where it lies: the size every cell of the maps moves to.
    draw.rectangle(_to_px(vm.moves[0, 0].tolist(), at), outline=(255, 255, 255), width=1)
    for k, (box, name) in enumerate(zip(vm.boxes.tolist(), vm.box_names, strict=True)):
        colour = _PALETTE[k % len(_PALETTE)]
        px = _to_px(box, at)
        draw.rectangle(px, outline=colour, width=2)
        label = f"{k + 1} {name}"
        tw, th = draw.textlength(label, font=font) + 4, font.size + 3
        # Above the box where there is room, else just inside its top edge.
        top = px[1] - th if px[1] - th >= 0 else px[1]
        left = min(px[0], side - tw)
        draw.rectangle((left, top, left + tw, top + th), fill=colour)
        draw.text((left + 2, top + 1), label, fill=_FG, font=font)
    return panel


def _map_panel(
    vm: ValueMap, values: Tensor, objects: tuple[int, ...], limits: tuple[float, float], side: int
) -> Image.Image:
    """One heatmap of ``values`` ``(G, G)`` over the dimmed image (colours: :func:`_scale`)."""
    img, at = _fit(vm.image, side)
    base = Image.new("RGB", (side, side), _BG)
    dim = Image.blend(ImageOps.grayscale(img).convert("RGB"), Image.new("RGB", img.size), 0.55)
    base.paste(dim, at[:2])
    layer = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    g = values.shape[0]
    ratio = _log_ratio(values, vm.q.shape[-1])
    centres = (vm.moves[..., :2] + vm.moves[..., 2:]) / 2
    # Each cell is drawn around its move's centre, one grid step wide (at least a pixel).
    step = (centres[-1, -1] - centres[0, 0]) / max(g - 1, 1)
    x, y, w, h = at
    half = (max(float(step[0]) * w, 1.0) / 2, max(float(step[1]) * h, 1.0) / 2)
    for r in range(g):
        for c in range(g):
            cx, cy = x + float(centres[r, c, 0]) * w, y + float(centres[r, c, 1]) * h
            colour = _colour(_scale(float(ratio[r, c]), limits))
            draw.rectangle((cx - half[0], cy - half[1], cx + half[0], cy + half[1]), fill=(*colour, 200))
    base.paste(layer, (0, 0), layer)
    draw = ImageDraw.Draw(base)
    for k in objects:
        draw.rectangle(_to_px(vm.boxes[k].tolist(), at), outline=_PALETTE[k % len(_PALETTE)], width=2)
    r, c = divmod(int(values.argmax()), g)
    cx, cy = x + float(centres[r, c, 0]) * w, y + float(centres[r, c, 1]) * h
    draw.ellipse((cx - 6, cy - 6, cx + 6, cy + 6), outline=_FG, width=2)
    draw.ellipse((cx - 4, cy - 4, cx + 4, cy + 4), outline=(255, 255, 255), width=1)
    return base


def draw_value_map(vm: ValueMap, panel: int = 224, columns: int = 4) -> Image.Image:
    """The figure: the image with its boxes beside one heatmap per drawn annotation.

    Each heatmap shows the image dimmed in grey, with every grid cell coloured by ``Q`` of the
    annotation for the move centred there, relative to the uniform level ``1 / |L|`` on a log scale
    shared by every map: white is ``1 / |L|`` (no preference), red rises to the largest ``Q`` drawn
    and blue falls to the smallest (each end at least a factor 2 from white, and no end above
    ``Q = 1``); the colour bar gives the ``Q`` of its ends, and each map's range is written under it.
    A black-and-white ring marks each map's best move, and the annotation's objects keep their box
    colours. The white box on the image is one move (the grid's first), to show the move size.

    Args:
        vm: the :class:`ValueMap`.
        panel: side of each panel in pixels.
        columns: panels per row (the image's panel counts as one).

    Returns:
        An RGB image.
    """
    _positive_int("panel", panel)
    _positive_int("columns", columns)
    ann = vm.annotations
    n_panels = 1 + len(ann.shown)
    cols = min(columns, n_panels)
    rows = -(-n_panels // cols)
    font, small, big = _font(13), _font(11), _font(15)
    pad, title_h, foot_h = 12, 3 * 16 + 4, 18
    cell_w, cell_h = panel + pad, title_h + panel + foot_h + pad
    width = pad + max(cols, 3) * cell_w
    g, n_l = vm.q.shape[0], vm.q.shape[-1]
    shown = vm.q[..., ann.shown]
    ratio = _log_ratio(shown, n_l)
    # Each side of white reaches the most extreme drawn value (at least 2x, but no Q above 1).
    low = max(1.0, -float(ratio.min())) if shown.numel() else 1.0
    high = max(float(ratio.max()) if shown.numel() else 0.0, min(1.0, math.log2(n_l))) or 1.0
    limits = (low, high)
    notes = [
        f"Q(l | x, a) of the {vm.method} value function. x: the whole image as one "
        f"{vm.view_size}x{vm.view_size} px view. a: the move to a square box of side {vm.move_size:.2f} "
        f"of the image's shorter side (the white box on the image), centred on the cell; a {g}x{g} grid.",
        f"L: {ann.description}; |L| = {n_l}, and each cell's Q sums to 1 over L. Colours: Q against the "
        f"uniform level 1/|L| = {1 / n_l:.3g} (white), on one log scale for every map; a ring marks each "
        "map's best move.",
    ]
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    note_lines = [ln for note in notes for ln in _wrap(scratch, note, small, width - 2 * pad, 4)]
    head_h = 2 * pad + 18
    fig = Image.new("RGB", (width, head_h + rows * cell_h + 34 + len(note_lines) * 14 + pad), _BG)
    draw = ImageDraw.Draw(fig)
    draw.text((pad, pad), f"Value map: {vm.image_name}, {vm.method}", fill=_FG, font=big)
    panels = [
        (f"image {vm.image_index}: {_count(len(vm.boxes), 'object')}", _image_panel(vm, panel, small),
         f"start view: the whole image, {vm.view_size} px"),
    ]  # fmt: skip
    for i, title, objects in zip(ann.shown, ann.titles, ann.objects, strict=True):
        v = vm.q[..., i]
        foot = f"Q from {float(v.min()):.3g} to {float(v.max()):.3g}"
        panels.append((title, _map_panel(vm, v, objects, limits, panel), foot))
    for k, (title, image, foot) in enumerate(panels):
        x, y = pad + (k % cols) * cell_w, head_h + (k // cols) * cell_h
        for j, line in enumerate(_wrap(draw, title, font, panel, 3)):
            draw.text((x, y + j * 16), line, fill=_FG, font=font)
        fig.paste(image, (x, y + title_h))
        draw.text((x, y + title_h + panel + 3), foot, fill=_DIM, font=small)
    # The colour bar, labelled with the Q of its ends and middle.
    y0 = head_h + rows * cell_h
    label = "Q(l | x, a):"
    x0 = pad + round(draw.textlength(label, font=small)) + 8
    x1 = min(width - pad, x0 + 2 * cell_w)
    draw.text((pad, y0), label, fill=_FG, font=small)
    for x in range(x0, x1):
        draw.line((x, y0, x, y0 + 12), fill=_colour(2 * (x - x0) / max(x1 - x0 - 1, 1) - 1))
    draw.rectangle((x0, y0, x1 - 1, y0 + 12), outline=_DIM)
    ticks = ((0.0, f"{2**-low / n_l:.3g}"), (0.5, f"{1 / n_l:.3g} = 1/|L|"), (1.0, f"{2**high / n_l:.3g}"))
    for frac, tick in ticks:
        tx = x0 + (x1 - x0 - 1) * frac
        tw = draw.textlength(tick, font=small)
        draw.line((tx, y0 + 12, tx, y0 + 15), fill=_FG)
        draw.text((min(max(tx - tw / 2, x0), x1 - tw), y0 + 16), tick, fill=_FG, font=small)
    for j, line in enumerate(note_lines):
        draw.text((pad, y0 + 34 + j * 14), line, fill=_FG, font=small)
    return fig


def write_value_map(
    system: BaseSystem,
    source: Any,
    image_index: int,
    out_dir: str | Path,
    *,
    view_size: int,
    grid: int = 9,
    move_size: float | None = None,
    distractors: int = 16,
    device: torch.device | str | None = None,
    stem: str | None = None,
) -> tuple[Path, Path]:
    """Compute one image's value map and write ``STEM.png`` (the figure) and ``STEM.json`` (the numbers).

    Args:
        system, source, image_index, view_size, grid, move_size, distractors, device: as for
            :func:`value_map`.
        out_dir: the folder to write to (created).
        stem: file name without suffix (default ``valuemap_{method}_image{image_index}``).

    Returns:
        The paths of the PNG and the JSON.
    """
    vm = value_map(
        system, source, image_index, view_size=view_size, grid=grid, move_size=move_size,
        distractors=distractors, device=device,
    )  # fmt: skip
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = stem or f"valuemap_{vm.method}_image{image_index}"
    png, js = out / f"{stem}.png", out / f"{stem}.json"
    draw_value_map(vm).save(png)
    js.write_text(json.dumps(vm.to_dict()))
    return png, js
