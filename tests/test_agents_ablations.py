"""Tests of the AB ablation knobs of SystemConfig: no action tokens, no psi gradient, no EMA target."""

from __future__ import annotations

import pytest
import torch
from _system_helpers import AB_METHODS, build, perturb_online

from agents.systems import SystemConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def test_no_action_tokens_ablation_makes_q_ignore_the_move(system_data):
    """ab_actions=False: Q(l | x_i, a) is the same for every move a from view i (crop invariance)."""
    batch, captions, classes = system_data
    system = build("absimclr", classes, ab_actions=False)
    captured = {}

    def hook(module, args, output):
        captured["relative"] = args[1]

    system.decoder.register_forward_hook(hook)
    system.training_loss(batch, captions)
    rel = captured["relative"]
    assert torch.equal(rel, torch.tensor([0.0, 0.0, 1.0, 1.0]).expand_as(rel))
    with pytest.raises(ValueError, match="ab_actions"):
        SystemConfig("absimclr", ab_actions="no")


def test_abdino_without_psi_gradient_leaves_the_prototypes_to_dino(system_data):
    """ab_psi_grad=False: the prototypes get DINO's gradient only (the AB loss still trains the rest)."""
    batch, captions, k = system_data
    grads = {}
    for name, overrides in (("dino", {}), ("abdino", {}), ("abdino", {"ab_psi_grad": False})):
        system = build(name, k, **overrides)
        loss, _ = system.training_loss(batch, captions)
        loss.backward()
        grads[(name, bool(overrides))] = system.head.prototype_weight.grad.clone()
        if overrides:
            assert all(p.grad is not None for p in system.decoder.parameters())
    assert torch.equal(grads[("abdino", True)], grads[("dino", False)])
    assert not torch.allclose(grads[("abdino", False)], grads[("dino", False)])
    with pytest.raises(ValueError, match="ab_psi_grad=False applies to method='abdino' only"):
        SystemConfig("absimclr", ab_psi_grad=False)
    with pytest.raises(ValueError, match="ab_psi_grad must be"):
        SystemConfig("abdino", ab_psi_grad="no")


def _ema_from_online(system) -> None:
    """Set every EMA copy to its online module's weights."""
    for name, target in system.ema.items():
        target.load_state_dict(getattr(system, name).state_dict())


@pytest.mark.parametrize("crops", [False, True], ids=["shared", "crops"])
@pytest.mark.parametrize("method", AB_METHODS)
def test_no_ema_target_takes_both_target_terms_from_the_online_modules(method, crops, system_data):
    """ab_ema_target=False: the target is the one the EMA copies give when they equal the online
    modules, the EMA encoder is not run for it, and it differs from the EMA target."""
    batch, captions, k = system_data
    if crops:
        batch = batch._replace(crop_views=torch.flip(batch.views, dims=[-1]).contiguous())
    kwargs = dict(gamma=0.5, bootstrap_fraction=0.25)  # gamma > 0: Q_ema's term counts too
    online = build(method, k, ab_ema_target=False, **kwargs)
    perturb_online(online)  # online != EMA
    if method == "abdino":
        online.center.copy_(torch.linspace(-0.5, 0.5, online.center.numel()))
    ema_calls = []
    online.ema["encoder"].register_forward_hook(lambda *args: ema_calls.append(1))
    target, valid = online.ab_targets(batch, captions)
    assert valid.any()
    # ab_targets runs the base loss first: DINO's teacher is the one EMA encoder call.
    assert len(ema_calls) == (1 if method == "abdino" else 0)

    reference = build(method, k, **kwargs)  # the EMA target, with EMA := online
    reference.load_state_dict(online.state_dict())
    _ema_from_online(reference)
    expected, _ = reference.ab_targets(batch, captions)
    torch.testing.assert_close(target, expected, atol=1e-5, rtol=1e-4)

    ema_target = build(method, k, **kwargs)  # the EMA target, with EMA != online
    ema_target.load_state_dict(online.state_dict())
    differs = (ema_target.ab_targets(batch, captions)[0] - target).abs()[valid].amax()
    assert differs > 1e-3


def test_no_ema_target_leaves_dinos_teacher_to_the_ema(system_data):
    """ABDINO without EMA target: DINO's loss still uses the momentum teacher, which still moves."""
    batch, captions, k = system_data
    rate = 0.25
    online = build("abdino", k, ab_ema_target=False, ema_rate=rate)
    perturb_online(online)
    state = {key: v.clone() for key, v in online.state_dict().items()}
    with_ema = build("abdino", k, ema_rate=rate)
    with_ema.load_state_dict(state)
    loss, metrics = online.training_loss(batch, captions)
    assert metrics["base_loss"] == with_ema.training_loss(batch, captions)[1]["base_loss"]
    teacher_is_online = build("abdino", k)
    teacher_is_online.load_state_dict(state)
    _ema_from_online(teacher_is_online)
    assert abs(teacher_is_online.training_loss(batch, captions)[1]["base_loss"] - metrics["base_loss"]) > 1e-4
    loss.backward()
    assert all(p.grad is not None for p in online.decoder.parameters())
    before = online.ema["encoder"].stem[0].weight.clone()
    online.after_step()
    expected = before + rate * (online.encoder.stem[0].weight.detach() - before)
    torch.testing.assert_close(online.ema["encoder"].stem[0].weight, expected)


def test_no_ema_target_config_checks():
    assert SystemConfig("abclip").ab_ema_target is True
    with pytest.raises(ValueError, match="ab_ema_target must be True or False"):
        SystemConfig("abdino", ab_ema_target=0)
    with pytest.raises(ValueError, match="ab_ema_target=False applies to the AB methods only"):
        SystemConfig("dino", ab_ema_target=False)
    cfg = SystemConfig("abdino", ab_ema_target=False)
    assert SystemConfig.from_dict(cfg.to_dict()) == cfg
