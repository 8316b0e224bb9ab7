"""A known-answer test of annotation bootstrapping: a small image-view MDP whose GVF is known exactly.

The MDP (:func:`make_mdp`): a few synthetic ``H x H`` images, each a mid-grey background with
axis-aligned rectangles in three colours (red, green, blue), one rectangle per cell of a
``grid x grid`` layout at most, so rectangles never overlap. Each image has a finite set of ``N``
boxes (normalised ``(x0, y0, x1, y1)``, :mod:`vpt_env.core.boxes`). The annotations are the
``L = 4`` labels ``("red", "green", "blue", "nothing")`` and the cumulant of a box is the share of
its area each colour covers, "nothing" taking the background's share::

    p(l | box) = sum_{rectangles r of colour l} area(r & box) / area(box)     (l a colour)
    p(nothing | box) = 1 - sum_{colours} p(l | box)

computed in closed form from the rectangles (:func:`annotation_probs`); rectangles sit on the
pixel grid, so ``p`` is also exactly the rendered image's colour shares inside the box.

The value function (docs/method.md) is the fixed point of the operator that
:func:`agents.losses.ab_target` implements: the target of the move ``i -> j`` is
``normalise((1 - gamma) * p(l | x_j) + gamma * max_{k != j} Q(l | x_j, a_{j->k}))``, the max per
annotation over the moves from ``j`` to the *other sampled* views ``k``. Which views are sampled
is the behaviour policy; :func:`td_operator` makes it explicit: every step draws ``V`` of an
image's ``N`` boxes uniformly without replacement and uses every ordered pair of them. The
*expected* TD target of a move, over the draws that contain both of its views, is what the
cross-entropy of :func:`agents.losses.ab_loss` is minimised by; :func:`exact_gvf` finds the fixed
point of that expected operator by value iteration, with ``ab_target`` itself inside (one copy of
the maths). With ``V = N`` (the default) there is one draw, the max runs over all other boxes,
and ``Q*(l | x_i, a_{i->j}) = T_j`` depends on ``j`` alone.

:func:`fit_gvf` trains the action-conditioned head on transitions of the MDP by offline TD with
the project's own pieces (a :func:`agents.encoders.make_encoder` CNN on views rendered by
:func:`vpt_env.core.render.render_crops`, :class:`agents.heads.ABDecoder`, a learned ``psi``,
:func:`agents.losses.ab_logits`, EMA targets from :mod:`agents.ema`, ``ab_target`` with the
oracle ``p`` as the cumulant, ``ab_loss``, AdamW) and :func:`gvf_errors` measures the learned
``Q`` against the exact values, next to two reference predictors.

Example:
    >>> mdp = make_mdp(num_images=2, num_boxes=3, seed=0)
    >>> tuple(mdp.cumulants.shape), mdp.annotation_names
    ((2, 3, 4), ('red', 'green', 'blue', 'nothing'))
    >>> q_star = exact_gvf(mdp.cumulants, gamma=0.5)
    >>> moves = move_mask(3)
    >>> again = td_operator(mdp.cumulants, q_star, gamma=0.5)
    >>> bool((again - q_star)[:, moves].abs().max() < 1e-9)
    True
    >>> fit = fit_gvf(mdp, FitConfig(gamma=0.5, steps=3, batch_size=2))
    >>> tuple(fit.q.shape), fit.errors.tv_mean >= 0.0
    ((2, 3, 3, 4), True)
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from agents import mechanism
from agents.ema import copy_for_ema, ema_update
from agents.encoders import make_encoder
from agents.heads import ABDecoder
from agents.losses import ab_logits, ab_loss, ab_target
from agents.systems.base import decode, encode_groups
from vpt_env.core.boxes import area, intersection, relative_box
from vpt_env.core.render import render_crops
from vpt_env.data.pool import ImagePool

__all__ = [
    "ANNOTATION_NAMES",
    "COLOURS",
    "FitConfig",
    "FitResult",
    "GVFErrors",
    "KnownAnswerMDP",
    "action_information",
    "annotation_probs",
    "exact_gvf",
    "fit_gvf",
    "gvf_errors",
    "make_mdp",
    "max_temperature",
    "move_mask",
    "render_views",
    "td_operator",
]

#: RGB in ``[0, 1]`` of the rectangles of each colour annotation; the background is mid-grey.
COLOURS = ((0.9, 0.1, 0.1), (0.1, 0.75, 0.15), (0.15, 0.25, 0.95))
BACKGROUND = (0.5, 0.5, 0.5)
#: The annotation space: one label per colour, then the background's.
ANNOTATION_NAMES = ("red", "green", "blue", "nothing")


@dataclass(frozen=True)
class KnownAnswerMDP:
    """A finite image-view MDP with known cumulants (built by :func:`make_mdp`).

    Attributes:
        images: ``(K, H, W, 3)`` uint8 images.
        rectangles: ``(K, M, 4)`` float64 normalised boxes of the coloured rectangles.
        rectangle_labels: ``(K, M)`` int64 colour index of each rectangle (into :data:`COLOURS`).
        boxes: ``(K, N, 4)`` float64 normalised ``(x0, y0, x1, y1)`` boxes, the MDP's states.
        cumulants: ``(K, N, L)`` float64 ``p(l | box)`` of every box (:func:`annotation_probs`).
        annotation_names: the ``L`` annotation names.
    """

    images: Tensor
    rectangles: Tensor
    rectangle_labels: Tensor
    boxes: Tensor
    cumulants: Tensor
    annotation_names: tuple[str, ...] = ANNOTATION_NAMES

    @property
    def num_images(self) -> int:
        """K."""
        return self.images.shape[0]

    @property
    def num_boxes(self) -> int:
        """N, boxes per image."""
        return self.boxes.shape[1]

    @property
    def num_annotations(self) -> int:
        """L."""
        return self.cumulants.shape[-1]


def annotation_probs(rectangles: Tensor, rectangle_labels: Tensor, boxes: Tensor, num_colours: int) -> Tensor:
    """``p(l | box)``: the share of each box's area covered by each colour, then the rest ("nothing").

    The rectangles must not overlap (then the colour shares sum to at most 1).

    Args:
        rectangles: normalised ``(x0, y0, x1, y1)`` rectangles of each image.
        rectangle_labels: the colour index of each rectangle, in ``[0, num_colours)``.
        boxes: normalised boxes of each image.
        num_colours: C; the result has ``L = C + 1`` annotations.

    Returns:
        ``(K, N, C + 1)`` distributions, in the dtype of ``boxes``.

    Shape:
        rectangles: ``(K, M, 4)``; rectangle_labels: ``(K, M)``; boxes: ``(K, N, 4)``.
    """
    inter = intersection(boxes[:, :, None, :], rectangles[:, None, :, :].to(boxes.dtype))  # (K, N, M)
    share = inter / area(boxes)[..., None]
    onehot = nn.functional.one_hot(rectangle_labels, num_colours).to(boxes.dtype)  # (K, M, C)
    colours = share @ onehot  # (K, N, C)
    # Clamp only rounding: non-overlapping rectangles cover at most the whole box.
    nothing = (1.0 - colours.sum(-1, keepdim=True)).clamp_min(0.0)
    return torch.cat([colours, nothing], dim=-1)


def make_mdp(
    num_images: int = 3,
    num_boxes: int = 4,
    rectangles_per_image: int = 4,
    image_size: int = 64,
    grid: int = 2,
    box_size: tuple[float, float] = (0.25, 0.6),
    seed: int = 0,
) -> KnownAnswerMDP:
    """Build a known-answer MDP: random rectangles on grey, random boxes, exact cumulants.

    Each image draws ``rectangles_per_image`` distinct cells of a ``grid x grid`` layout and puts
    in each a rectangle of a random colour, on whole pixels, each side at least half the cell's,
    so rectangles never overlap. The colours of an image are drawn so that it holds every colour
    when ``rectangles_per_image >= 3`` (one of each, the rest random). Each box has sides drawn
    uniformly in ``box_size`` (independently for width and height) and a uniform position inside
    the image.

    Args:
        num_images: K.
        num_boxes: N, the boxes (states) of each image.
        rectangles_per_image: M, at most ``grid ** 2``.
        image_size: side H of the square images in pixels.
        grid: cells per side of the layout.
        box_size: range of the boxes' normalised side lengths, within ``(0, 1]``.
        seed: seeds the ``torch.Generator`` that draws everything.

    Returns:
        The :class:`KnownAnswerMDP`.

    Raises:
        ValueError: a size is out of range.
    """
    if num_images < 1 or num_boxes < 2:
        raise ValueError(f"need num_images >= 1 and num_boxes >= 2, got {num_images}, {num_boxes}")
    if not 1 <= rectangles_per_image <= grid * grid:
        raise ValueError(f"rectangles_per_image must be in [1, {grid * grid}], got {rectangles_per_image}")
    if image_size < 4 * grid:
        raise ValueError(f"image_size must be at least 4 * grid = {4 * grid}, got {image_size}")
    lo, hi = box_size
    if not 0.0 < lo <= hi <= 1.0:
        raise ValueError(f"box_size must satisfy 0 < low <= high <= 1, got {box_size}")
    g = torch.Generator().manual_seed(seed)
    c = len(COLOURS)
    edges = [round(k * image_size / grid) for k in range(grid + 1)]
    images = torch.empty(num_images, image_size, image_size, 3)
    rects = torch.empty(num_images, rectangles_per_image, 4, dtype=torch.float64)
    labels = torch.empty(num_images, rectangles_per_image, dtype=torch.int64)
    for k in range(num_images):
        images[k] = torch.tensor(BACKGROUND)
        cells = torch.randperm(grid * grid, generator=g)[:rectangles_per_image].tolist()
        colours = torch.randint(c, (rectangles_per_image,), generator=g)
        colours[: min(c, rectangles_per_image)] = torch.arange(min(c, rectangles_per_image))
        labels[k] = colours[torch.randperm(rectangles_per_image, generator=g)]
        for m, cell in enumerate(cells):
            col, row = cell % grid, cell // grid
            x0, x1 = _span(edges[col], edges[col + 1], g)
            y0, y1 = _span(edges[row], edges[row + 1], g)
            images[k, y0:y1, x0:x1] = torch.tensor(COLOURS[int(labels[k, m])])
            rects[k, m] = torch.tensor([x0, y0, x1, y1], dtype=torch.float64) / image_size
    wh = lo + (hi - lo) * torch.rand(num_images, num_boxes, 2, generator=g, dtype=torch.float64)
    xy0 = (1.0 - wh) * torch.rand(num_images, num_boxes, 2, generator=g, dtype=torch.float64)
    boxes = torch.cat([xy0, xy0 + wh], dim=-1)
    return KnownAnswerMDP(
        images=(images * 255).round().to(torch.uint8),
        rectangles=rects,
        rectangle_labels=labels,
        boxes=boxes,
        cumulants=annotation_probs(rects, labels, boxes, c),
    )


def _span(start: int, stop: int, g: torch.Generator) -> tuple[int, int]:
    """A whole-pixel sub-interval of ``[start, stop)`` at least half as long."""
    size = stop - start
    length = int(torch.randint((size + 1) // 2, size + 1, (1,), generator=g))
    offset = int(torch.randint(0, size - length + 1, (1,), generator=g))
    return start + offset, start + offset + length


def move_mask(num_boxes: int) -> Tensor:
    """``(N, N)`` bool: True where ``i != j``, the moves ``i -> j`` of an image."""
    return ~torch.eye(num_boxes, dtype=torch.bool)


def action_information(p: Tensor) -> float:
    """docs/method.md's action information of the cumulants, with all ``N`` boxes as the views.

    :func:`agents.mechanism.action_information` with every ordered pair of boxes a move.

    Args:
        p: ``(K, N, L)`` cumulants.

    Returns:
        The action information in nats.
    """
    k, n = p.shape[:2]
    return float(mechanism.action_information(p, move_mask(n).to(p.device).expand(k, n, n)))


def _check_views(num_boxes: int, views_per_image: int | None) -> int:
    v = num_boxes if views_per_image is None else views_per_image
    if isinstance(v, bool) or not isinstance(v, int) or not 2 <= v <= num_boxes:
        raise ValueError(f"views_per_image must be an int in [2, N = {num_boxes}], got {views_per_image!r}")
    return v


def td_operator(p: Tensor, q: Tensor, gamma: float, views_per_image: int | None = None) -> Tensor:
    """The expected AB TD target of every move, under the behaviour policy of :func:`fit_gvf`.

    The behaviour policy draws ``V`` of an image's ``N`` boxes uniformly without replacement and
    makes every ordered pair of them a transition. For a draw ``S`` the target of a move
    ``i -> j`` (``i, j`` in ``S``) is ``ab_target``'s,
    ``normalise((1 - gamma) * p_j + gamma * max_{k in S, k != j} q[j, k])``; the result is its mean
    over the ``C(N - 2, V - 2)`` draws that contain ``i`` and ``j``, all equally likely, which is
    the distribution that minimises the expected cross-entropy of ``Q(. | x_i, a_{i->j})`` against
    the sampled targets. Computed by enumerating the ``C(N, V)`` draws and calling
    :func:`agents.losses.ab_target` on all of them in one batch. With ``V = N`` there is one draw
    and the result is ``ab_target`` itself. Keep ``C(N, V)`` small.

    Args:
        p: cumulants ``p(l | x_j)``.
        q: action values ``q[k, i, j] = Q(l | x_i, a_{i->j})`` (probabilities); the diagonal is
            not read.
        gamma: discount in ``[0, 1)``.
        views_per_image: V in ``[2, N]``; None for ``N``.

    Returns:
        ``(K, N, N, L)`` expected targets; the diagonal (no move) is NaN.

    Shape:
        p: ``(K, N, L)``; q: ``(K, N, N, L)``.
    """
    k, n, el = p.shape
    v = _check_views(n, views_per_image)
    draws = torch.tensor(list(itertools.combinations(range(n), v)), device=p.device)  # (C, V)
    c = draws.shape[0]
    rows, cols = draws[:, :, None].expand(c, v, v), draws[:, None, :].expand(c, v, v)
    p_sub = p[:, draws]  # (K, C, V, L)
    q_sub = q[:, rows, cols]  # (K, C, V, V, L)
    valid = move_mask(v).to(p.device).expand(k * c, v, v)
    target = ab_target(p_sub.flatten(0, 1), q_sub.flatten(0, 1), valid, gamma).unflatten(0, (k, c))
    target = target.masked_fill(~valid[0].view(1, 1, v, v, 1), 0.0)
    out = torch.zeros(k, n, n, el, dtype=target.dtype, device=p.device)
    image = torch.arange(k, device=p.device).view(k, 1, 1, 1)
    out.index_put_((image, rows.unsqueeze(0), cols.unsqueeze(0)), target, accumulate=True)
    out = out / math.comb(n - 2, v - 2)
    return out.masked_fill(~move_mask(n).to(p.device).view(1, n, n, 1), float("nan"))


def exact_gvf(
    p: Tensor,
    gamma: float,
    views_per_image: int | None = None,
    tol: float = 1e-12,
    max_iter: int = 10_000,
) -> Tensor:
    """The exact GVF: the fixed point of :func:`td_operator`, by value iteration in float64.

    Starts from the ``gamma = 0`` values (``Q(. | x_i, a_{i->j}) = p_j``) and applies the
    operator until the largest change of any probability of any move is below ``tol``.

    Args:
        p: ``(K, N, L)`` cumulants.
        gamma: discount in ``[0, 1)``.
        views_per_image: V of the behaviour policy (None: all ``N``).
        tol: stop when ``max |Q_{t+1} - Q_t| < tol`` over the moves.
        max_iter: give up after this many applications.

    Returns:
        ``(K, N, N, L)`` float64 ``Q*(l | x_i, a_{i->j})``; the diagonal (no move) is NaN.

    Raises:
        RuntimeError: no convergence within ``max_iter`` iterations.
    """
    p = p.to(torch.float64)
    n = p.shape[1]
    moves = move_mask(n).to(p.device)
    q = p[:, None].expand(-1, n, -1, -1).masked_fill(~moves[None, :, :, None], float("nan"))
    change = math.inf
    for _ in range(max_iter):
        nxt = td_operator(p, q, gamma, views_per_image)
        change = float((nxt - q)[:, moves].abs().max())
        q = nxt
        if change < tol:
            return q
    raise RuntimeError(
        f"value iteration did not converge in {max_iter} iterations (last change {change:.3g} >= tol {tol:g})"
    )


def max_temperature(q: Tensor) -> float:
    """The largest ``ab_logits`` temperature at which ``Q`` could express every move's values.

    Logits are cosines over the temperature, in ``[-1 / t, 1 / t]``, so no two annotations of one
    ``Q`` can differ by more than ``2 / t`` in log-probability. Values whose largest
    ``log(max_l q_l / min_l q_l)`` is ``R`` therefore need ``t <= 2 / R``: a necessary condition,
    not a sufficient one (``psi``'s geometry and the other moves constrain ``Q`` further). An exact
    zero (possible at ``gamma = 0``) gives 0: ``Q`` can only approach it.

    Args:
        q: ``(K, N, N, L)`` values, e.g. from :func:`exact_gvf` (the diagonal is ignored).

    Returns:
        ``2 / R`` over the moves (``inf`` if every move's values are uniform).
    """
    q = q[:, move_mask(q.shape[1]).to(q.device)].to(torch.float64)
    ratio = float((q.amax(-1).log() - q.amin(-1).log()).max())
    return 2.0 / ratio if ratio > 0 else math.inf


class GVFErrors(NamedTuple):
    """Total-variation errors over every move ``(image, i -> j)``, ``TV(a, b) = 0.5 * sum_l |a_l - b_l|``.

    Attributes:
        tv_mean: mean TV between the learned ``Q`` and the exact ``Q*``.
        tv_max: max of the same.
        blind_tv_mean: mean TV of the best action-blind predictor, ``mean_{j != i} Q*(. | x_i,
            a_{i->j})`` for every ``(image, i)``, against ``Q*``: what a ``Q`` that ignores the move
            can do at best (in mean TV, up to the mean-vs-median choice).
        blind_tv_max: max of the same.
        gamma0_tv_mean: mean TV between ``Q*`` and the ``gamma = 0`` values ``p(. | x_j)``: above the
            learned error, bootstrapping is being tested, not just the local term.
        gamma0_tv_max: max of the same.
    """

    tv_mean: float
    tv_max: float
    blind_tv_mean: float
    blind_tv_max: float
    gamma0_tv_mean: float
    gamma0_tv_max: float


def _tv(a: Tensor, b: Tensor) -> Tensor:
    return 0.5 * (a - b).abs().sum(-1)


def gvf_errors(q: Tensor, exact: Tensor, p: Tensor) -> GVFErrors:
    """Errors of a learned ``Q`` against the exact values and the two reference predictors.

    Args:
        q: ``(K, N, N, L)`` learned probabilities (the diagonal is ignored).
        exact: ``(K, N, N, L)`` from :func:`exact_gvf`.
        p: ``(K, N, L)`` cumulants (the ``gamma = 0`` values).

    Returns:
        The :class:`GVFErrors`.
    """
    exact = exact.to(torch.float64)
    n = exact.shape[1]
    moves = move_mask(n).to(exact.device)
    m = moves[None, :, :, None]
    blind = torch.where(m, exact, 0.0).sum(2, keepdim=True) / (n - 1)
    gamma0 = p.to(torch.float64)[:, None].expand_as(exact)

    def stats(pred: Tensor) -> tuple[float, float]:
        tv = _tv(pred.to(torch.float64), exact)[:, moves]
        return float(tv.mean()), float(tv.max())

    return GVFErrors(*stats(q), *stats(blind.expand_as(exact)), *stats(gamma0))


@dataclass(frozen=True)
class FitConfig:
    """Training of the action-conditioned head on a :class:`KnownAnswerMDP` (:func:`fit_gvf`).

    Attributes:
        gamma: discount in ``[0, 1)``.
        steps: AdamW steps.
        batch_size: images per step, drawn uniformly with replacement.
        views_per_image: V, boxes drawn per image and step (None: all ``N``; then every step
            holds every move of its images).
        lr: AdamW learning rate (constant after ``warmup_steps``, then cosine to ``lr * final_lr``).
        warmup_steps: linear warm-up steps.
        final_lr: the cosine schedule's last learning rate as a fraction of ``lr``.
        weight_decay: AdamW weight decay.
        ema_rate: rate of the EMA target network (docs/method.md: 0.004; a short run wants faster).
        temperature: ``ab_logits``'s temperature; logits are cosines over it, so the largest
            log-ratio ``Q`` can express between two annotations is ``2 / temperature``.
        view_size: side of the rendered views in pixels.
        encoder_width: width of the :class:`agents.encoders.SmallCNN`.
        encoder_depth: its stages (total stride 8: 32 px views give 4 x 4 tokens).
        decoder_dim: width of the :class:`agents.heads.ABDecoder`.
        decoder_depth: its blocks.
        decoder_heads: its attention heads.
        embed_dim: E, the width of ``phi`` and ``psi``.
        seed: seeds the initial weights and the sampling generator.
    """

    gamma: float = 0.5
    steps: int = 400
    batch_size: int = 8
    views_per_image: int | None = None
    lr: float = 2e-3
    warmup_steps: int = 20
    final_lr: float = 0.05
    weight_decay: float = 0.0
    ema_rate: float = 0.05
    temperature: float = 0.1
    view_size: int = 32
    encoder_width: int = 8
    encoder_depth: int = 2
    decoder_dim: int = 32
    decoder_depth: int = 1
    decoder_heads: int = 2
    embed_dim: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "view_size", "embed_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not (isinstance(self.gamma, (int, float)) and 0.0 <= self.gamma < 1.0):
            raise ValueError(f"gamma must be in [0, 1), got {self.gamma!r}")
        if not (isinstance(self.warmup_steps, int) and self.warmup_steps >= 0):
            raise ValueError(f"warmup_steps must be a non-negative int, got {self.warmup_steps!r}")
        if not 0.0 <= self.final_lr <= 1.0:
            raise ValueError(f"final_lr must be in [0, 1], got {self.final_lr!r}")


class FitResult(NamedTuple):
    """What :func:`fit_gvf` returns.

    Attributes:
        q: ``(K, N, N, L)`` float64 learned ``Q(l | x_i, a_{i->j})`` of the online model after the
            last step (diagonal: the model's output for the identity move, not a move of the MDP).
        exact: ``(K, N, N, L)`` the exact values (:func:`exact_gvf`).
        errors: :class:`GVFErrors` of ``q``.
        history: ``(step, GVFErrors)`` at each requested checkpoint (and the last step).
        losses: the AB loss of every step.
    """

    q: Tensor
    exact: Tensor
    errors: GVFErrors
    history: list[tuple[int, GVFErrors]]
    losses: list[float]


class _GVFModel(nn.Module):
    """Encoder, decoder ``phi_AB`` and annotation embeddings ``psi_AB``: ``Q``'s logits."""

    def __init__(self, config: FitConfig, num_annotations: int) -> None:
        super().__init__()
        self.encoder = make_encoder(
            "cnn", width=config.encoder_width, depth=config.encoder_depth, downsample=8
        )
        self.decoder = ABDecoder(
            self.encoder.dim,
            config.decoder_dim,
            config.decoder_depth,
            config.decoder_heads,
            out_dim=config.embed_dim,
        )
        # Unit-scale rows: the logits are cosines, and AdamW's steps are relative to this scale.
        self.psi = nn.Parameter(torch.randn(num_annotations, config.embed_dim) / math.sqrt(config.embed_dim))

    def forward(self, views: Tensor, relative: Tensor, temperature: float) -> Tensor:
        """``(B, V, 3, S, S)`` views, ``(B, V, V, 4)`` relative boxes -> ``(B, V, V, L)`` logits."""
        phi = decode(self.decoder, encode_groups(self.encoder, [views]), relative)
        return ab_logits(phi, self.psi, temperature)


def render_views(mdp: KnownAnswerMDP, size: int) -> Tensor:
    """Every box of every image rendered by :func:`vpt_env.core.render.render_crops` (antialiased).

    Returns:
        ``(K, N, 3, size, size)`` float32 views in ``[0, 1]``.
    """
    pool = ImagePool([im.numpy() for im in mdp.images])
    k, n = mdp.num_images, mdp.num_boxes
    image = torch.arange(k).repeat_interleave(n)
    return render_crops(pool, image, mdp.boxes.flatten(0, 1).float(), size).unflatten(0, (k, n))


def _lr_factor(step: int, config: FitConfig) -> float:
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    t = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.final_lr + (1.0 - config.final_lr) * 0.5 * (1.0 + math.cos(math.pi * t))


def fit_gvf(mdp: KnownAnswerMDP, config: FitConfig, checkpoints: tuple[int, ...] = ()) -> FitResult:
    """Train ``Q(l | x_i, a_{i->j})`` by offline TD on transitions of ``mdp``; measure it against ``Q*``.

    Each step draws ``batch_size`` images (with replacement) and ``V`` of each image's boxes
    (without replacement) from an explicit ``torch.Generator``; every ordered pair of the drawn
    views is a transition. The online model gives ``Q``'s logits (``ab_logits`` of the decoder's
    ``phi`` on view ``i``'s tokens and the relative box ``relative_box(box_i, box_j)``, against
    ``psi``); its EMA copy gives ``Q_ema``; the target is ``ab_target(p, Q_ema, valid, gamma)``
    with the oracle cumulants ``p`` of :attr:`KnownAnswerMDP.cumulants` as the local term; the loss
    is ``ab_loss``; AdamW steps, then the EMA moves at ``ema_rate``. Views are the boxes rendered
    once by :func:`render_views` (no augmentation). Deterministic given ``config.seed`` (initial
    weights under a forked global RNG; sampling from its own generator); the global RNG state is
    left as it was.

    Args:
        mdp: the MDP.
        config: the :class:`FitConfig`.
        checkpoints: steps (counted after the update, in ``[1, steps]``) at which to record errors.

    Returns:
        The :class:`FitResult`.
    """
    k, n, el = mdp.num_images, mdp.num_boxes, mdp.num_annotations
    v = _check_views(n, config.views_per_image)
    if any(not 1 <= s <= config.steps for s in checkpoints):
        raise ValueError(f"checkpoints must lie in [1, steps = {config.steps}], got {checkpoints}")
    exact = exact_gvf(mdp.cumulants, config.gamma, config.views_per_image)
    views = render_views(mdp, config.view_size)
    relative = relative_box(mdp.boxes[:, :, None], mdp.boxes[:, None, :]).float()  # (K, N, N, 4)
    p = mdp.cumulants.float()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = _GVFModel(config, el)
    ema = copy_for_ema(model)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, config))
    g = torch.Generator().manual_seed(config.seed)
    valid = move_mask(v).expand(config.batch_size, v, v)
    wanted = set(checkpoints) | {config.steps}
    history: list[tuple[int, GVFErrors]] = []
    losses: list[float] = []
    q = exact
    for step in range(1, config.steps + 1):
        img = torch.randint(k, (config.batch_size,), generator=g)
        drawn = torch.rand(config.batch_size, n, generator=g).argsort(dim=1)[:, :v]  # (B, V)
        b_views = views[img[:, None], drawn]
        b_rel = relative[img[:, None, None], drawn[:, :, None], drawn[:, None, :]]
        b_p = p[img[:, None], drawn]
        with torch.no_grad():
            if config.gamma == 0:  # ab_target does not read q_next
                q_next = b_p[:, :, None].expand(-1, -1, v, -1)
            else:
                q_next = ema(b_views, b_rel, config.temperature).softmax(dim=-1)
            target = ab_target(b_p, q_next, valid, config.gamma)
        loss = ab_loss(model(b_views, b_rel, config.temperature), target, valid)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        ema_update(ema, model, config.ema_rate)
        losses.append(loss.detach().item())
        if step in wanted:
            with torch.no_grad():
                q = model(views, relative, config.temperature).double().softmax(dim=-1)
            history.append((step, gvf_errors(q, exact, mdp.cumulants)))
    return FitResult(q=q, exact=exact, errors=history[-1][1], history=history, losses=losses)
