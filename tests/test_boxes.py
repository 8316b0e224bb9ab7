"""Property tests for :mod:`vpt_env.core.boxes` (normalised ``(x0, y0, x1, y1)`` boxes, float32)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vpt_env.core.boxes import (
    area,
    box_to_cxcywh,
    clamp_boxes,
    compose,
    cxcywh_to_box,
    intersection,
    intersection_fraction,
    iou,
    relative_box,
)

PROPS = settings(max_examples=200, deadline=None)
# float32 rounding of coordinates of order 1; every identity below holds exactly in real arithmetic.
ATOL = 1e-5

unit = st.floats(0.0, 1.0, allow_nan=False, width=32)


@st.composite
def boxes(draw: st.DrawFn, min_side: float = 1e-3) -> list[float]:
    """A valid box inside the unit square with sides at least ``min_side``."""
    x0 = draw(st.floats(0.0, 1.0 - min_side))
    y0 = draw(st.floats(0.0, 1.0 - min_side))
    w = draw(st.floats(min_side, 1.0 - x0))
    h = draw(st.floats(min_side, 1.0 - y0))
    return [x0, y0, min(x0 + w, 1.0), min(y0 + h, 1.0)]


def box_batches(min_side: float = 1e-3) -> st.SearchStrategy[list[list[float]]]:
    return st.lists(boxes(min_side), min_size=1, max_size=8)


# Arbitrary, possibly inverted, too large or out-of-image boxes, as clamp_boxes receives them.
raw_boxes = st.lists(
    st.lists(st.floats(-2.0, 3.0, allow_nan=False, width=32), min_size=4, max_size=4),
    min_size=1,
    max_size=8,
)


def _t(data: list[list[float]], device: torch.device) -> torch.Tensor:
    return torch.tensor(data, dtype=torch.float32, device=device)


def _valid(b: torch.Tensor) -> bool:
    return bool((b[..., 2] > b[..., 0]).all() and (b[..., 3] > b[..., 1]).all())


# ---------------------------------------------------------------------------------------------
# relative_box / compose


@PROPS
@given(box_batches())
def test_relative_box_of_itself_is_unit_box(device: torch.device, data: list[list[float]]) -> None:
    b = _t(data, device)
    rel = relative_box(b, b)
    assert rel.shape == b.shape
    unit_box = torch.tensor([0.0, 0.0, 1.0, 1.0], device=device).expand_as(b)
    # (x - x0) / (x1 - x0) with the same rounded operands is exact.
    assert torch.equal(rel, unit_box)


@PROPS
@given(box_batches(), box_batches())
def test_compose_inverts_relative_box(
    device: torch.device, d1: list[list[float]], d2: list[list[float]]
) -> None:
    n = min(len(d1), len(d2))
    b1, b2 = _t(d1[:n], device), _t(d2[:n], device)
    rel = relative_box(b1, b2)
    back = compose(b1, rel)
    torch.testing.assert_close(back, b2, atol=ATOL, rtol=0)


@PROPS
@given(box_batches(), box_batches())
def test_relative_box_broadcasts(device: torch.device, d1: list[list[float]], d2: list[list[float]]) -> None:
    b1, b2 = _t(d1, device), _t(d2, device)
    rel = relative_box(b1[:, None], b2[None, :])
    assert rel.shape == (len(d1), len(d2), 4)
    for i in range(len(d1)):
        for j in range(len(d2)):
            torch.testing.assert_close(rel[i, j], relative_box(b1[i], b2[j]), atol=0, rtol=0)


@PROPS
@given(box_batches(), st.lists(st.lists(unit, min_size=4, max_size=4), min_size=8, max_size=8))
def test_relative_box_of_inner_box_lies_in_unit_square(
    device: torch.device, d1: list[list[float]], fracs: list[list[float]]
) -> None:
    b1 = _t(d1, device)
    n = b1.shape[0]
    # Any point of b1 (coordinates clamped into [x0, x1] x [y0, y1], so exactly inside in float32).
    u = _t(fracs[:n], device)
    lo = b1[:, [0, 1, 0, 1]]
    hi = b1[:, [2, 3, 2, 3]]
    b2 = torch.minimum(torch.maximum(lo + u * (hi - lo), lo), hi)
    rel = relative_box(b1, b2)
    assert bool((rel >= 0).all() and (rel <= 1).all()), rel


# ---------------------------------------------------------------------------------------------
# iou / intersection_fraction


@PROPS
@given(box_batches(), box_batches())
def test_iou_symmetric_and_bounded(
    device: torch.device, d1: list[list[float]], d2: list[list[float]]
) -> None:
    n = min(len(d1), len(d2))
    a, b = _t(d1[:n], device), _t(d2[:n], device)
    ab, ba = iou(a, b), iou(b, a)
    assert ab.shape == (n,)
    assert torch.equal(ab, ba)
    assert bool((ab >= 0).all() and (ab <= 1 + 1e-6).all()), ab
    # IoU never exceeds the ratio of the smaller to the larger area.
    ratio = torch.minimum(area(a), area(b)) / torch.maximum(area(a), area(b))
    assert bool((ab <= ratio + 1e-5).all())


@PROPS
@given(box_batches())
def test_iou_of_box_with_itself_is_one(device: torch.device, data: list[list[float]]) -> None:
    b = _t(data, device)
    torch.testing.assert_close(iou(b, b), torch.ones(b.shape[0], device=device), atol=1e-6, rtol=0)


@PROPS
@given(boxes(), boxes(), st.sampled_from(["left", "right", "above", "below"]))
def test_iou_of_disjoint_boxes_is_zero(
    device: torch.device, d1: list[float], d2: list[float], side: str
) -> None:
    a = _t([d1], device)[0]
    w2, h2 = d2[2] - d2[0], d2[3] - d2[1]
    # Place the second box next to the first, touching or further away, never overlapping.
    gap = d2[0]
    if side == "right":
        b = torch.tensor([d1[2] + gap, d2[1], d1[2] + gap + w2, d2[3]])
    elif side == "left":
        b = torch.tensor([d1[0] - gap - w2, d2[1], d1[0] - gap, d2[3]])
    elif side == "below":
        b = torch.tensor([d2[0], d1[3] + gap, d2[2], d1[3] + gap + h2])
    else:
        b = torch.tensor([d2[0], d1[1] - gap - h2, d2[2], d1[1] - gap])
    b = b.to(device=device, dtype=torch.float32)
    assert float(intersection(a, b)) == 0.0
    assert float(iou(a, b)) == 0.0
    assert float(iou(b, a)) == 0.0


@PROPS
@given(box_batches(), box_batches())
def test_intersection_fraction_bounded(
    device: torch.device, d1: list[list[float]], d2: list[list[float]]
) -> None:
    n = min(len(d1), len(d2))
    objects, view = _t(d1[:n], device), _t(d2[:n], device)
    f = intersection_fraction(objects, view)
    assert f.shape == (n,)
    assert bool((f >= 0).all() and (f <= 1 + 1e-6).all()), f
    # Consistent with the areas it is built from.
    torch.testing.assert_close(f * area(objects), intersection(objects, view), atol=1e-6, rtol=1e-5)


@PROPS
@given(box_batches(), st.lists(boxes(min_side=1e-2), min_size=8, max_size=8))
def test_intersection_fraction_of_object_inside_view_is_one(
    device: torch.device, d1: list[list[float]], rel: list[list[float]]
) -> None:
    view = _t(d1, device)
    n = view.shape[0]
    # An object given in the view's frame, clamped so that it is exactly inside in float32.
    obj = compose(view, _t(rel[:n], device))
    obj = torch.minimum(torch.maximum(obj, view[:, [0, 1, 0, 1]]), view[:, [2, 3, 2, 3]])
    assert bool((area(obj) > 0).all())
    f = intersection_fraction(obj, view)
    assert torch.equal(f, torch.ones_like(f)), f
    # Empty objects give 0, by definition.
    empty = torch.cat((obj[:, :2], obj[:, :2]), -1)
    assert torch.equal(intersection_fraction(empty, view), torch.zeros_like(f))


def test_tiny_boxes_keep_exact_ratios(device: torch.device) -> None:
    # Valid boxes (x1 > x0, y1 > y0) whose area (1e-14) is below the 1e-12 that iou and
    # intersection_fraction clamp their denominators to: the ratios must still be exact.
    tiny = torch.tensor([0.5, 0.5, 0.5 + 1e-7, 0.5 + 1e-7], device=device)
    view = torch.tensor([0.25, 0.25, 0.75, 0.75], device=device)
    assert float(area(tiny)) > 0
    got = (float(intersection_fraction(tiny, view)), float(iou(tiny, tiny)))
    assert got == pytest.approx((1.0, 1.0), abs=1e-6)


# ---------------------------------------------------------------------------------------------
# clamp_boxes


@PROPS
@given(raw_boxes, st.floats(1e-3, 1.0))
def test_clamp_boxes_output_valid_and_inside(
    device: torch.device, data: list[list[float]], min_size: float
) -> None:
    out = clamp_boxes(_t(data, device), min_size=min_size)
    assert out.shape == (len(data), 4)
    assert _valid(out), out
    assert bool((out >= -1e-6).all() and (out <= 1 + 1e-6).all()), out
    sides = out[:, 2:] - out[:, :2]
    assert bool((sides >= min_size - 1e-6).all()), (sides, min_size)
    assert bool((sides <= 1 + 1e-6).all()), sides


@PROPS
@given(raw_boxes, st.floats(1e-3, 1.0))
def test_clamp_boxes_idempotent(device: torch.device, data: list[list[float]], min_size: float) -> None:
    once = clamp_boxes(_t(data, device), min_size=min_size)
    twice = clamp_boxes(once, min_size=min_size)
    torch.testing.assert_close(twice, once, atol=1e-6, rtol=0)


@PROPS
@given(box_batches(min_side=0.05))
def test_clamp_boxes_keeps_valid_boxes(device: torch.device, data: list[list[float]]) -> None:
    b = _t(data, device)
    torch.testing.assert_close(clamp_boxes(b, min_size=0.05), b, atol=1e-6, rtol=0)


@PROPS
@given(raw_boxes, st.floats(1e-3, 0.5), st.floats(0.5, 1.0))
def test_clamp_boxes_per_axis_sizes(
    device: torch.device, data: list[list[float]], lo: float, hi: float
) -> None:
    min_size = torch.tensor([lo, lo / 2], device=device)
    max_size = torch.tensor([hi, hi / 2], device=device)
    out = clamp_boxes(_t(data, device), min_size=min_size, max_size=max_size)
    sides = out[:, 2:] - out[:, :2]
    assert bool((sides >= min_size - 1e-6).all() and (sides <= max_size + 1e-6).all()), sides


# ---------------------------------------------------------------------------------------------
# cxcywh


@PROPS
@given(box_batches())
def test_cxcywh_round_trip(device: torch.device, data: list[list[float]]) -> None:
    b = _t(data, device)
    c = box_to_cxcywh(b)
    assert bool((c[:, 2:] > 0).all())
    torch.testing.assert_close(cxcywh_to_box(c), b, atol=1e-6, rtol=0)
    torch.testing.assert_close(box_to_cxcywh(cxcywh_to_box(c)), c, atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------------
# Hand-computed cases


def test_hand_computed_relative_box_and_compose(device: torch.device) -> None:
    b1 = torch.tensor([0.2, 0.2, 0.6, 0.8], device=device)
    b2 = torch.tensor([0.3, 0.5, 0.5, 0.8], device=device)
    # w1 = 0.4, h1 = 0.6: ((0.3-0.2)/0.4, (0.5-0.2)/0.6, (0.5-0.2)/0.4, (0.8-0.2)/0.6).
    expected = torch.tensor([0.25, 0.5, 0.75, 1.0], device=device)
    torch.testing.assert_close(relative_box(b1, b2), expected, atol=1e-6, rtol=0)
    # The right half of b1, in the image frame.
    half = torch.tensor([0.5, 0.0, 1.0, 1.0], device=device)
    torch.testing.assert_close(compose(b1, half), torch.tensor([0.4, 0.2, 0.6, 0.8], device=device))


def test_hand_computed_iou_and_fraction(device: torch.device) -> None:
    a = torch.tensor([0.0, 0.0, 0.5, 0.5], device=device)
    b = torch.tensor([0.25, 0.25, 0.75, 0.75], device=device)
    # Overlap 0.25 x 0.25 = 1/16; union 1/4 + 1/4 - 1/16 = 7/16.
    assert float(iou(a, b)) == pytest.approx(1 / 7, abs=1e-6)
    obj = torch.tensor([0.4, 0.4, 0.8, 0.6], device=device)
    view = torch.tensor([0.0, 0.0, 0.5, 1.0], device=device)
    # Inside: [0.4, 0.5] x [0.4, 0.6] = 0.02 of the object's 0.4 x 0.2 = 0.08.
    assert float(intersection_fraction(obj, view)) == pytest.approx(0.25, abs=1e-6)
    assert float(intersection_fraction(view, obj)) == pytest.approx(0.02 / 0.5, abs=1e-6)


def test_hand_computed_clamp(device: torch.device) -> None:
    # Centre (1.1, 1.0), size (0.4, 0.2) -> size (0.4, 0.3) -> centre shifted to (0.8, 0.85).
    out = clamp_boxes(torch.tensor([[0.9, 0.9, 1.3, 1.1]], device=device), min_size=0.3)
    torch.testing.assert_close(out, torch.tensor([[0.6, 0.7, 1.0, 1.0]], device=device), atol=1e-6, rtol=0)
    # An inverted box keeps its centre (0.5, 0.4) and |size| (0.2, 0.2).
    out = clamp_boxes(torch.tensor([[0.6, 0.5, 0.4, 0.3]], device=device))
    torch.testing.assert_close(out, torch.tensor([[0.4, 0.3, 0.6, 0.5]], device=device), atol=1e-6, rtol=0)
    # Larger than the image: clamped to the whole image.
    out = clamp_boxes(torch.tensor([[-1.0, 0.2, 2.0, 0.4]], device=device), max_size=1.0)
    torch.testing.assert_close(out, torch.tensor([[0.0, 0.2, 1.0, 0.4]], device=device), atol=1e-6, rtol=0)
