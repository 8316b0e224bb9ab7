"""Tests of agents.systems: the eight pre-training systems, their EMA, AB targets and resume."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math

import pytest
import torch
import torch.nn.functional as F
from _system_helpers import (
    AB_METHODS,
    BASES,
    SMALL,
    B,
    V,
    build,
    expected_p_ema,
    perturb_online,
)

from agents.systems import METHODS, SystemConfig, make_system
from agents.trainer import TrainConfig, Trainer, default_param_groups
from vpt_env import TransitionSampler

AB_KEYS = {"ab_loss", "target_entropy", "ab_pairs", "ab_labels"}

pytestmark = pytest.mark.usefixtures("one_thread")


# -- one step of every method ------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_step_loss_grad_and_ema(method, system_data):
    batch, captions, k = system_data
    rate = 0.25
    system = build(method, k, ema_rate=rate)
    loss, metrics = system.training_loss(batch, captions)
    assert loss.ndim == 0 and math.isfinite(loss.item())
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    assert "base_loss" in metrics
    if method.startswith("ab"):
        assert AB_KEYS <= metrics.keys() and metrics["ab_pairs"] == V * (V - 1)  # nb = 1 image
        assert 0 < metrics["target_entropy"] <= math.log(metrics["ab_labels"]) + 1e-5
    else:
        assert not AB_KEYS & metrics.keys()
    loss.backward()
    stem = system.encoder.stem[0].weight
    assert stem.grad is not None and stem.grad.abs().sum() > 0
    if system.decoder is not None:
        assert all(p.grad is not None for p in system.decoder.parameters())

    # EMA copies: no grad, outside the optimizer, checkpointed.
    ema_ids = {id(p) for p in system.ema.parameters()}
    assert ema_ids and not any(p.requires_grad for p in system.ema.parameters())
    grouped = {id(p) for g in default_param_groups(system, 0.05) for p in g["params"]}
    assert not ema_ids & grouped
    assert any(key.startswith("ema.encoder.") for key in system.state_dict())
    if method.endswith("dino"):
        assert "center" in system.state_dict() and system.center.abs().sum() > 0

    # after_step: t <- t + rate * (o - t), on one parameter of every EMA module.
    with torch.no_grad():
        for p in system.parameters():
            if p.requires_grad:
                p.add_(torch.linspace(-1, 1, p.numel()).view_as(p))
    before = {n: p.detach().clone() for n, p in system.ema.named_parameters()}
    online = dict(system.named_parameters())
    system.after_step()
    for name in system.ema:
        pname = next(n for n in before if n.startswith(name + "."))
        t0, o = before[pname].double(), online[pname].double()  # ema[name] mirrors the child `name`
        expected = t0 + rate * (o - t0)
        torch.testing.assert_close(dict(system.ema.named_parameters())[pname].double(), expected)
        assert not torch.equal(before[pname], dict(system.ema.named_parameters())[pname])


def test_every_method_trains_on_device(system_data, device):
    """One step per method on --device (bf16 autocast on CUDA, as the trainer's amp="auto")."""
    batch, captions, k = system_data
    batch = type(batch)(*(None if t is None else t.to(device) for t in batch))
    for method in METHODS:
        system = build(method, k).to(device)
        amp = torch.autocast("cuda", torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
        with amp:
            loss, metrics = system.training_loss(batch, captions)
        loss.backward()
        system.after_step()
        assert math.isfinite(loss.item()) and math.isfinite(metrics["base_loss"]), method
        assert system.encoder.stem[0].weight.grad is not None, method


def test_ab_step_reuses_the_online_forward(system_data):
    """The AB term adds no online encoder call (DINO: one per view size, base or AB), except for the
    CLIP pair, whose base encodes view 0 alone (all it reads): ABCLIP encodes its bootstrap images'
    other views itself, still fewer views than encoding every view of the batch."""
    batch, captions, k = system_data
    for base in BASES:
        calls, views = [], []
        for method in (base, "ab" + base):
            system = build(method, k)
            seen = []
            system.encoder.register_forward_hook(
                lambda _m, args, _out, seen=seen: seen.append(args[0].shape[0])
            )
            system.training_loss(batch, captions)
            calls.append(len(seen))
            views.append(sum(seen))
        if base == "clip":
            nb = system.num_bootstrap(B)
            assert calls == [1, 2] and views == [B, B + nb * V] and views[1] < B * V
        else:
            assert calls[0] == calls[1] == (2 if base == "dino" else 1), base
            assert views[0] == views[1] == B * V, base


# -- AB targets -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", AB_METHODS)
def test_crop_only_ab_views_feed_the_target_and_q(method, system_data):
    """batch.crop_views: p_ema and Q come from those views; the base loss and annotations do not."""
    batch, captions, k = system_data
    crops = torch.flip(batch.views, dims=[-1]).contiguous()  # any other views of the same boxes
    system = build(method, k, gamma=0.0, bootstrap_fraction=0.25)  # nb = 2 images
    perturb_online(system)
    target, _ = system.ab_targets(batch._replace(crop_views=crops), captions)
    with torch.no_grad():
        p = expected_p_ema(method, system, batch, captions, 2, ab_views=crops)
    for i in range(V):
        torch.testing.assert_close(target[:, i], p, atol=1e-5, rtol=1e-4)
    # The decoder sees the online tokens of the crop views, not of the base's views.
    seen = {}

    def hook(module, args, output):
        seen.setdefault("tokens", args[0])

    system.decoder.register_forward_hook(hook)
    state = {k: v.clone() for k, v in system.state_dict().items()}  # DINO's step moves its centre
    base_loss = system.training_loss(batch, captions)[1]["base_loss"]
    shared_tokens = seen.pop("tokens")
    system.load_state_dict(state)
    loss, metrics = system.training_loss(batch._replace(crop_views=crops), captions)
    assert metrics["base_loss"] == base_loss
    with torch.no_grad():
        first = crops[:2, :2] if method == "abdino" else crops[:2]  # DINO: the global views' group
        expected = system.encoder(first.flatten(0, 1)).tokens
    torch.testing.assert_close(seen["tokens"], expected)
    assert not torch.allclose(seen["tokens"], shared_tokens)
    loss.backward()
    assert all(p.grad is not None for p in system.decoder.parameters())


@pytest.mark.parametrize("method", AB_METHODS)
def test_crop_views_equal_to_the_views_give_the_shared_loss(method, system_data):
    """Crop-only AB views that happen to equal the base's views change nothing but the cost."""
    batch, captions, k = system_data
    system = build(method, k, bootstrap_fraction=0.25)
    perturb_online(system)
    state = {k: v.clone() for k, v in system.state_dict().items()}  # DINO's step moves its centre
    loss, metrics = system.training_loss(batch, captions)
    system.load_state_dict(state)
    calls = []
    system.encoder.register_forward_hook(lambda *args: calls.append(1))
    loss_c, metrics_c = system.training_loss(batch._replace(crop_views=batch.views.clone()), captions)
    torch.testing.assert_close(loss_c, loss, atol=1e-5, rtol=1e-5)
    assert metrics_c.keys() == metrics.keys()
    assert len(calls) == (4 if method == "abdino" else 2)  # one more online pass per view group


@pytest.mark.parametrize("method", AB_METHODS)
def test_gamma0_target_is_p_ema_of_the_next_view(method, system_data):
    batch, captions, k = system_data
    system = build(method, k, gamma=0.0, bootstrap_fraction=0.25)  # nb = 2 images
    perturb_online(system)
    if method == "abdino":
        system.center.copy_(torch.linspace(-0.5, 0.5, system.center.numel()))
    center = system.center.clone() if method == "abdino" else None
    target, valid = system.ab_targets(batch, captions)
    nb = 2
    with torch.no_grad():
        p = expected_p_ema(method, system, batch, captions, nb)
    assert target.shape == (nb, V, V, p.shape[-1]) and torch.equal(valid, batch.pair_valid[:nb])
    for i in range(V):  # target[b, i, j] = p_ema(l | x_j) whatever i
        torch.testing.assert_close(target[:, i], p, atol=1e-5, rtol=1e-4)
    if center is not None:  # diagnostics change no state
        assert torch.equal(system.center, center)


def test_bootstrap_target_mixes_the_ema_q_of_the_next_view(system_data):
    """gamma > 0: target[b,i,j] = normalise((1-g) p[b,j] + g max_{k valid} Q_ema(. | x_j, a_{j->k}))."""
    batch, captions, k = system_data
    gamma = 0.5
    system = build("absupervised", k, gamma=gamma)
    perturb_online(system)
    target, valid = system.ab_targets(batch, captions)
    ema = system.ema
    with torch.no_grad():
        p = expected_p_ema("absupervised", system, batch, captions, 1)[0]  # (V, L)
        tokens = ema["encoder"](batch.views[0]).tokens  # (V, T, D)
        phi = ema["decoder"](tokens, batch.relative[0])  # (V, V, E)
        psi = F.normalize(ema["class_embed"].weight, dim=-1)
        q = (F.normalize(phi, dim=-1) @ psi.T / system.config.ab_temperature).softmax(-1)
    for j in range(V):
        best = torch.stack([q[j, kk] for kk in range(V) if valid[0, j, kk]]).amax(0)
        mixed = (1 - gamma) * p[j] + gamma * best
        for i in range(V):
            torch.testing.assert_close(target[0, i, j], mixed / mixed.sum(), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("base", BASES)
def test_zero_ab_weight_gives_the_base_loss_bit_for_bit(base, system_data):
    batch, captions, k = system_data
    base_system = build(base, k)
    ab_system = build("ab" + base, k, ab_weight=0.0)
    ab_state = ab_system.state_dict()
    for key, value in base_system.state_dict().items():  # same seed: same base weights
        assert torch.equal(value, ab_state[key]), key
    loss_base, _ = base_system.training_loss(batch, captions)
    loss_ab, metrics = ab_system.training_loss(batch, captions)
    assert metrics["ab_loss"] > 0
    assert torch.equal(loss_base, loss_ab)
    loss_base.backward()
    loss_ab.backward()
    assert torch.equal(base_system.encoder.stem[0].weight.grad, ab_system.encoder.stem[0].weight.grad)


def test_ab_targets_needs_an_ab_method(system_data):
    batch, captions, k = system_data
    with pytest.raises(ValueError, match="method"):
        build("simclr", k).ab_targets(batch, captions)


def test_clip_without_captions_is_a_zero_that_reaches_every_parameter(system_data):
    batch, captions, k = system_data
    uncaptioned = batch._replace(caption=torch.full_like(batch.caption, -1))
    system = build("abclip", k)
    loss, metrics = system.training_loss(uncaptioned, captions)
    assert loss.item() == 0.0 and metrics["ab_pairs"] == 0 and metrics["captioned"] == 0
    loss.backward()
    assert all(p.grad is not None for p in system.parameters() if p.requires_grad)


# -- training loop ---------------------------------------------------------------------------------


def test_trainer_three_plus_three_steps_equal_six(tmp_path, system_source):
    k = len(system_source.classes)

    def run(out, stop_at=None):
        system = build("absimclr", k)
        sampler = TransitionSampler(system_source, view_size=16, seed=3)
        cfg = TrainConfig(steps=6, batch_size=B, views_per_image=V, out_dir=str(out), progress=False, lr=1e-3)
        trainer = Trainer(system, sampler, cfg)
        return trainer, trainer.fit(stop_at=stop_at)

    straight, res_a = run(tmp_path / "a")
    run(tmp_path / "b", stop_at=3)
    resumed, res_b = run(tmp_path / "b")
    assert res_a["step"] == res_b["step"] == 6 and res_a["loss"] == res_b["loss"]
    state_a, state_b = straight.system.state_dict(), resumed.system.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key
    # The EMA moved away from the online weights during training.
    assert not torch.equal(state_a["ema.encoder.stem.0.weight"], state_a["encoder.stem.0.weight"])


# -- config -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("method", "byol"),
        ("encoder", "vgg"),
        ("text_encoder", "gpt"),
        ("supervised_target", "soft"),
        ("gamma", 1.0),
        ("gamma", -0.1),
        ("ema_rate", 1.5),
        ("ab_weight", -1.0),
        ("annotation_fraction", 0.0),
        ("bootstrap_fraction", 1.5),
        ("ab_temperature", 0.0),
        ("embed_dim", 0),
        ("decoder_heads", 3),
        ("dino_local_size", 0),
        ("num_classes", True),
        ("encoder_kwargs", {"width": object()}),
    ],
)
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        SystemConfig(**{field: value})


def test_config_json_round_trip():
    cfg = SystemConfig("abdino", encoder="vit_tiny", encoder_kwargs={"depth": 2}, dino_local_size=16)
    again = SystemConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.base_method == "dino" and again.is_ab
    with pytest.raises(ValueError, match="unknown keys"):
        SystemConfig.from_dict({**cfg.to_dict(), "lr": 1.0})


def test_make_system_checks():
    with pytest.raises(ValueError, match="num_classes"):
        make_system(SystemConfig("supervised", **SMALL))
    with pytest.raises(TypeError, match="SystemConfig"):
        make_system({"method": "simclr"})  # type: ignore[arg-type]
    system = make_system(SystemConfig("absupervised", **SMALL), num_classes=7)
    assert system.config.num_classes == 7 and system.class_embed.weight.shape == (7, 16)


@pytest.mark.skipif(importlib.util.find_spec("sentence_transformers") is not None, reason="installed")
def test_sentence_text_encoder_needs_its_package():
    with pytest.raises(ImportError, match="sentence-transformers"):
        make_system(SystemConfig("clip", text_encoder="sentence", **SMALL))
