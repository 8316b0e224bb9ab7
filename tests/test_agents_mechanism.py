"""Tests of agents.mechanism (the mechanism metrics) and of the two defects issue 19 found beside them."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from _system_helpers import AB_METHODS, B, V, build

from agents.mechanism import (
    MECHANISM_KEYS,
    action_information,
    fixed_batches,
    gradient_cosine,
    mechanism_metrics,
    oracle_distributions,
    q_action_gain,
)
from agents.systems.clip import MAX_LOGIT_SCALE
from vpt_env import TransitionSampler

pytestmark = pytest.mark.usefixtures("one_thread")


def _all_pairs(b: int, v: int) -> torch.Tensor:
    return ~torch.eye(v, dtype=torch.bool).expand(b, v, v)


# -- (a) / (b): action information ----------------------------------------------------------------------


def test_action_information_by_hand() -> None:
    # One image, 3 views. From view 0 the moves reach p1 = [0, 1] and p2 = [.5, .5]: their mean is
    # [.25, .75]; KL(p1 || .) = ln(4/3), KL(p2 || .) = .5 ln 2 + .5 ln(2/3). From view 1 the same by
    # symmetry. From view 2 they reach [1, 0] and [0, 1], mean [.5, .5]: KL = ln 2 each.
    p = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]])
    from_0 = (math.log(4 / 3) + 0.5 * math.log(2) + 0.5 * math.log(2 / 3)) / 2
    expected = (2 * from_0 + math.log(2)) / 3
    assert action_information(p, _all_pairs(1, 3)).item() == pytest.approx(expected, abs=1e-12)


def test_action_information_is_zero_when_moves_cannot_tell() -> None:
    p = torch.softmax(torch.randn(4, 2, 5, generator=torch.Generator().manual_seed(0)), -1)
    # Two views: one move from each view, whose mean is itself.
    assert action_information(p, _all_pairs(4, 2)).item() == pytest.approx(0.0, abs=1e-12)
    # Every view of an image with the same annotations.
    same = p[:, :1].expand(4, 4, 5)
    assert action_information(same, _all_pairs(4, 4)).item() == pytest.approx(0.0, abs=1e-12)


def test_action_information_reads_only_valid_moves() -> None:
    p = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]]])
    valid = _all_pairs(1, 4).clone()
    valid[0, :, 3] = False  # view 3 is never reached
    valid[0, 3, :] = False  # and has no move
    # From views 0, 1, 2 the moves reach the other two of {[1,0], [0,1], [0,1]}.
    kl = lambda p_, q_: sum(a * math.log(a / b) for a, b in zip(p_, q_, strict=True) if a > 0)  # noqa: E731
    from_0 = kl([0, 1], [0, 1])  # both moves reach [0, 1]
    from_1 = (kl([1, 0], [0.5, 0.5]) + kl([0, 1], [0.5, 0.5])) / 2
    expected = (from_0 + 2 * from_1) / 3
    assert action_information(p, valid).item() == pytest.approx(expected, abs=1e-12)
    assert action_information(p, torch.zeros_like(valid)).item() == 0.0


def test_oracle_distributions_give_an_empty_view_nothing() -> None:
    cum = torch.tensor([[[0.25, 0.75], [0.0, 0.0]]])
    got = oracle_distributions(cum)
    assert got.tolist() == [[[0.25, 0.75, 0.0], [0.0, 0.0, 1.0]]]


# -- (c): Q's gain from the action ----------------------------------------------------------------------


def test_q_gain_by_hand() -> None:
    # One image, 3 views; from view 0: Q_01 = [.8, .2], Q_02 = [.4, .6]; mean [.6, .4]. Targets
    # t_01 = [1, 0], t_02 = [0, 1]. Gain of (0,1): -ln .6 + ln .8; of (0,2): -ln .4 + ln .6.
    q = torch.full((1, 3, 3, 2), 0.5, dtype=torch.float64)
    q[0, 0, 1] = torch.tensor([0.8, 0.2], dtype=torch.float64)
    q[0, 0, 2] = torch.tensor([0.4, 0.6], dtype=torch.float64)
    t = torch.full((1, 3, 3, 2), 0.5)
    t[0, 0, 1] = torch.tensor([1.0, 0.0])
    t[0, 0, 2] = torch.tensor([0.0, 1.0])
    valid = torch.zeros(1, 3, 3, dtype=torch.bool)
    valid[0, 0, 1] = valid[0, 0, 2] = True
    expected = ((math.log(0.8) - math.log(0.6)) + (math.log(0.6) - math.log(0.4))) / 2
    assert q_action_gain(q.log(), t, valid).item() == pytest.approx(expected, abs=1e-9)


def test_q_gain_is_zero_for_a_q_that_ignores_the_move_and_the_target_info_for_a_perfect_q() -> None:
    gen = torch.Generator().manual_seed(1)
    p = torch.softmax(3 * torch.randn(5, 4, 6, generator=gen), -1)
    target = p[:, None].expand(5, 4, 4, 6)  # t[b, i, j] = p[b, j]
    valid = _all_pairs(5, 4)
    blind = torch.randn(5, 4, 1, 6, generator=gen).expand(5, 4, 4, 6)
    assert q_action_gain(blind, target, valid).item() == pytest.approx(0.0, abs=1e-12)
    perfect = target.log()
    info = action_information(target[:, 0], valid).item()
    assert info > 0.1
    assert q_action_gain(perfect, target, valid).item() == pytest.approx(info, abs=1e-9)


def test_gradient_cosine_by_hand() -> None:
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    base = (w * torch.tensor([1.0, 0.0])).sum()  # gradient [1, 0]
    ab = (w * torch.tensor([1.0, 1.0])).sum() * 3  # gradient [3, 3]
    cos, ratio = gradient_cosine(base, ab, [w])
    assert cos == pytest.approx(1 / math.sqrt(2))
    assert ratio == pytest.approx(math.sqrt(18))


# -- mechanism_metrics on systems -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def mech_data(system_source):
    sampler = TransitionSampler(system_source, view_size=16, seed=0)
    return sampler, sampler.captions, len(system_source.classes)


def test_fixed_batches_leave_the_training_stream_alone(mech_data) -> None:
    sampler, _, _ = mech_data
    state = sampler.generator.get_state()
    first = fixed_batches(sampler, 2, B, V, seed=3)
    assert torch.equal(sampler.generator.get_state(), state)
    again = fixed_batches(sampler, 2, B, V, seed=3)
    assert all(torch.equal(a.views, b.views) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0].boxes, first[1].boxes)


@pytest.mark.parametrize("method", AB_METHODS)
def test_mechanism_metrics_change_nothing_and_are_finite(method, mech_data) -> None:
    sampler, captions, k = mech_data
    system = build(method, k, bootstrap_fraction=0.5, annotation_fraction=1.0)
    before = {name: t.clone() for name, t in system.state_dict().items()}
    batches = fixed_batches(sampler, 2, B, V)
    out = mechanism_metrics(system, batches, captions)
    assert set(MECHANISM_KEYS) <= out.keys() and out["batches"] == 2
    for key in MECHANISM_KEYS:
        assert math.isfinite(out[key]), (key, out[key])
    assert out["oracle_info"] > 0 and out["target_entropy"] > 0 and -1 <= out["grad_cosine"] <= 1
    # Nothing moved: weights, EMA copies, buffers (DINO's centre), and no gradient left behind.
    after = system.state_dict()
    assert all(torch.equal(before[n], after[n]) for n in before)
    assert all(p.grad is None for p in system.parameters())


def test_q_gain_is_zero_without_action_tokens(mech_data) -> None:
    sampler, captions, k = mech_data
    batches = fixed_batches(sampler, 1, B, V)
    blind = mechanism_metrics(build("absimclr", k, ab_actions=False), batches, captions, gradients=False)
    assert blind["q_gain"] == pytest.approx(0.0, abs=1e-9)
    seeing = mechanism_metrics(build("absimclr", k), batches, captions, gradients=False)
    assert abs(seeing["q_gain"]) > 1e-6


def test_mechanism_metrics_of_a_base_system_are_the_data_alone(mech_data) -> None:
    sampler, captions, k = mech_data
    batches = fixed_batches(sampler, 1, B, V)
    out = mechanism_metrics(build("simclr", k), batches, captions)
    assert out["oracle_info"] == mechanism_metrics(None, batches)["oracle_info"] > 0
    assert all(math.isnan(out[key]) for key in MECHANISM_KEYS if key != "oracle_info")


# -- the two defects found beside the metrics ---------------------------------------------------------


def test_absimclr_never_scores_a_view_against_itself(mech_data) -> None:
    """Without augmentation AB shares the base's views, and view 0 of a bootstrap image is its own
    annotation key: before the fix its p_ema put cosine 1 (logit 1/t) on its own image."""
    sampler, captions, k = mech_data
    system = build("absimclr", k, bootstrap_fraction=0.5)
    batch = sampler.sample(B, V)
    assert batch.crop_views is None
    ab = system.loss_terms(batch, captions).ab
    ema, t = system.ema, system.config.simclr_temperature
    with torch.no_grad():
        q = F.normalize(ema["projector"](ema["encoder"](batch.views[0]).pooled), dim=-1)  # (V, E)
        keys = F.normalize(ema["projector"](ema["encoder"](batch.views[:, 0]).pooled), dim=-1)
    self_logits = q[0] @ keys[: ab.p_next.shape[-1]].T / t
    assert self_logits[0].item() == pytest.approx(1 / t, rel=1e-5)  # the self-match the fix removes
    self_match = self_logits.softmax(-1)
    assert not torch.allclose(ab.p_next[0, 0], self_match, atol=1e-3)
    # The other views meet image 0 through its view 0 as before.
    other = (q[1] @ keys[: ab.p_next.shape[-1]].T / t).softmax(-1)
    assert torch.allclose(ab.p_next[0, 1], other, atol=1e-5)


def test_clip_logit_scale_is_clipped_as_a_parameter_so_it_can_come_back() -> None:
    """Clamping the forward value at the cap zeroed the gradient above it, so AdamW's momentum could
    carry the parameter past the cap where nothing brought it back (a toy run stuck at 100)."""
    system = build("clip", 3)
    scale = system.logit_scale
    with torch.no_grad():
        scale.log_scale.fill_(math.log(150.0))
    value = scale()
    value.backward()  # a loss that wants a smaller scale
    assert scale.log_scale.grad is not None and scale.log_scale.grad.item() > 0  # was 0 above the cap
    system.after_step()
    assert scale.log_scale.item() == pytest.approx(math.log(MAX_LOGIT_SCALE))
    assert scale().item() == pytest.approx(MAX_LOGIT_SCALE)
    # From the cap, descent moves it down again.
    opt = torch.optim.AdamW([scale.log_scale], lr=0.1, weight_decay=0.0)
    for _ in range(3):
        opt.zero_grad()
        scale().backward()
        opt.step()
        system.after_step()
    assert scale().item() < MAX_LOGIT_SCALE - 1


# -- CLIP's caption view (issue 19: crops of 5% rarely show what a caption describes) -----------------


def test_base_views_are_drawn_last_and_in_their_own_range(system_source) -> None:
    plain = TransitionSampler(system_source, view_size=16, seed=4, augment=True).sample(B, V)
    extra = TransitionSampler(
        system_source, view_size=16, seed=4, augment=True, base_view_scale=(0.9, 1.0), base_views=2
    ).sample(B, V)
    assert plain.base_views is None and plain.base_boxes is None
    for name in ("views", "boxes", "relative", "aug", "image", "caption"):
        assert torch.equal(getattr(plain, name), getattr(extra, name)), name
    box = extra.base_boxes
    area = (box[..., 2] - box[..., 0]) * (box[..., 3] - box[..., 1])
    # (aspect ratios of 3/4-4/3 clamped to the image keep at least sqrt(0.9 * 3 / 4) = 0.82 of it)
    assert extra.base_views.shape == (B, 2, 3, 16, 16) and bool((area >= 0.82).all())
    assert not torch.equal(extra.base_views[:, 0], extra.base_views[:, 1])  # two draws, two augmentations
    with pytest.raises(ValueError, match="base_view_scale"):
        TransitionSampler(system_source, view_size=16, base_view_scale=(0.5, 0.2))
    with pytest.raises(ValueError, match="base_views must be"):
        TransitionSampler(system_source, view_size=16, base_view_scale=(0.5, 1.0), base_views=0)


def test_clip_contrasts_its_caption_view_and_dino_teaches_on_its_global_crops(system_source) -> None:
    from agents.pretrain import DataConfig, build_sampler

    data = DataConfig(source="photos", view_size=16)
    assert (data.caption_view_scale, data.dino_global_scale) == ((0.9, 1.0), (0.4, 1.0))
    assert build_sampler(data, method="abclip").sample(2, 2).base_views.shape[1] == 1
    assert build_sampler(data, method="dino").sample(2, 2).base_views.shape[1] == 2
    assert build_sampler(data, method="absimclr").sample(2, 2).base_views is None
    off = DataConfig(source="photos", view_size=16, caption_view_scale=None, dino_global_scale=None)
    assert build_sampler(off, method="clip").sample(2, 2).base_views is None
    assert build_sampler(off, method="abdino").sample(2, 2).base_views is None
    with pytest.raises(ValueError, match="caption_view_scale must be"):
        DataConfig(caption_view_scale=(0.0, 1.0))

    k = len(system_source.classes)
    for method, n in (("clip", 1), ("dino", 2)):
        sampler = TransitionSampler(
            system_source, view_size=16, seed=0, base_view_scale=(0.9, 1.0), base_views=n
        )
        batch, captions = sampler.sample(B, V), sampler.captions
        system = build(method, k)
        base = system.loss_terms(batch, captions).base_loss
        # CLIP's contrast reads the caption view, not view 0; DINO's teacher reads the global crops.
        views = batch.views.clone()
        views[:, 0] = views[:, 0].flip(-1)
        changed = system.loss_terms(batch._replace(views=views), captions).base_loss
        assert torch.equal(changed, base) == (method == "clip"), method
        flipped = batch._replace(base_views=batch.base_views.flip(-1))
        assert not torch.equal(system.loss_terms(flipped, captions).base_loss, base), method
    seen: list[int] = []
    system.ema["encoder"].register_forward_hook(lambda _m, args, _out: seen.append(args[0].shape[0]))
    system.loss_terms(batch, captions)
    assert seen == [B * 2]  # the teacher: the two global crops of every image
    # ABDINO on such a batch: AB moves between the V crops, all encoded at the view size (one token
    # grid; the base's local crops are half size), online and EMA; its targets from that EMA pass.
    abdino = build("abdino", k)
    sizes: dict[str, list[tuple[int, int]]] = {"online": [], "ema": []}
    for name, enc in (("online", abdino.encoder), ("ema", abdino.ema["encoder"])):
        enc.register_forward_hook(
            lambda _m, args, _out, n=name: sizes[n].append(tuple(args[0].shape[::3][:2]))
        )
    ab = abdino.loss_terms(batch, captions).ab
    assert ab is not None and ab.target.shape[1:3] == (V, V) and torch.isfinite(ab.loss)
    nb = abdino.num_bootstrap(B)
    assert sizes["online"] == [(B * 2, 16), (B * V, 8), (nb * V, 16)]  # globals, locals, AB's crops
    assert (nb * V, 16) in sizes["ema"] and (nb * 2, 16) not in sizes["ema"]


def test_a_q_equal_to_its_target_scores_target_info_with_uneven_moves_per_view() -> None:
    """With some pairs invalid (IoU bins) views have different numbers of moves: gain and information
    must weigh start views alike, or a perfect Q would not score the target's information."""
    gen = torch.Generator().manual_seed(2)
    p = torch.softmax(3 * torch.randn(3, 4, 5, generator=gen), -1)
    target = p[:, None].expand(3, 4, 4, 5)
    valid = _all_pairs(3, 4).clone()
    valid[0, 0, 1:3] = False  # view 0 of image 0 has one move, the others three
    valid[1, 2, :] = False  # and view 2 of image 1 none
    info = action_information(target[:, 0], valid).item()
    assert q_action_gain(target.log(), target, valid).item() == pytest.approx(info, abs=1e-9)
