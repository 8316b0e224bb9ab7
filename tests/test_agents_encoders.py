"""Encoders: shapes, config round-trip, gradients, determinism, argument checks, SB3 adapter."""

from __future__ import annotations

import json
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.preprocessing import get_flattened_obs_dim

from agents.encoders import (
    ENCODER_NAMES,
    Encoder,
    EncoderOutput,
    ResNet18,
    SmallCNN,
    ViT,
    make_encoder,
)
from agents.sb3 import EncoderFeaturesExtractor

# Tiny variants of every architecture, so the whole file runs in seconds on CPU.
TINY = {
    "cnn": {"width": 8},
    "cnn16": {"name": "cnn", "width": 8, "downsample": 16},
    "cnn_grid": {"name": "cnn", "width": 8, "token_grid": 2},
    "resnet_bn": {"name": "resnet18", "width": 8},
    "resnet_gn": {"name": "resnet18", "width": 8, "norm": "group"},
    "resnet_big_stem": {"name": "resnet18", "width": 8, "small_input": False},
    "vit": {"name": "vit", "dim": 32, "depth": 1, "heads": 2},
    "vit_tiny": {"depth": 1},
    "vit_small": {"depth": 1, "patch_size": 16},
}
# (config key, input side) -> expected token count.
TOKENS = {
    ("cnn", 32): 16, ("cnn", 64): 64,
    ("cnn16", 32): 4, ("cnn16", 64): 16,
    ("cnn_grid", 32): 4, ("cnn_grid", 64): 4,
    ("resnet_bn", 32): 16, ("resnet_bn", 64): 64,
    ("resnet_gn", 32): 16, ("resnet_gn", 64): 64,
    ("resnet_big_stem", 32): 1, ("resnet_big_stem", 64): 4,
    ("vit", 32): 16, ("vit", 64): 64,
    ("vit_tiny", 32): 16, ("vit_tiny", 64): 64,
    ("vit_small", 32): 4, ("vit_small", 64): 16,
}  # fmt: skip
DIMS = {"cnn": 32, "cnn16": 32, "cnn_grid": 32, "vit": 32, "vit_tiny": 192, "vit_small": 384}


def build(key: str) -> Encoder:
    kwargs = dict(TINY[key])
    return make_encoder(kwargs.pop("name", key), **kwargs)


@pytest.mark.parametrize("key,size", sorted(TOKENS))
def test_output_shapes(key: str, size: int, device: torch.device) -> None:
    enc = build(key).to(device)
    out = enc(torch.rand(3, 3, size, size, device=device))
    dim = DIMS.get(key, 64)  # ResNet: 8 * width
    assert enc.dim == dim
    assert out.pooled.shape == (3, dim)
    assert out.tokens.shape == (3, TOKENS[key, size], dim)
    assert torch.isfinite(out.pooled).all() and torch.isfinite(out.tokens).all()


def test_default_sizes() -> None:
    def count(m: torch.nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    assert 300_000 <= count(SmallCNN()) <= 600_000 and SmallCNN().dim == 128
    resnet = ResNet18()
    assert resnet.dim == 512 and 11_000_000 <= count(resnet) <= 11_300_000  # torchvision: 11.18M with fc
    tiny = make_encoder("vit_tiny")
    assert (tiny.dim, len(tiny.blocks), tiny.blocks[0].heads, tiny.patch_size) == (192, 12, 3, 8)
    assert 5_000_000 <= count(tiny) <= 6_000_000
    small = make_encoder("vit_small", depth=1)
    assert (small.dim, small.blocks[0].heads, small.config["name"]) == (384, 6, "vit_small")


@pytest.mark.parametrize("key", sorted(TINY))
def test_config_round_trip(key: str) -> None:
    torch.manual_seed(0)
    enc = build(key)
    config = json.loads(json.dumps(enc.config))
    assert config["name"] in ENCODER_NAMES
    torch.manual_seed(0)
    rebuilt = make_encoder(**config)
    assert type(rebuilt) is type(enc) and rebuilt.config == enc.config
    sd, rsd = enc.state_dict(), rebuilt.state_dict()
    assert sd.keys() == rsd.keys()
    for k in sd:
        torch.testing.assert_close(sd[k], rsd[k], rtol=0, atol=0)


@pytest.mark.parametrize("key", ["cnn", "resnet_gn", "resnet_bn", "vit"])
def test_gradients_reach_every_parameter(key: str, device: torch.device) -> None:
    enc = build(key).to(device)
    x = torch.rand(2, 3, 32, 32, device=device, requires_grad=True)
    out = enc(x)
    (out.pooled.square().sum() + out.tokens.square().sum()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in enc.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("key", ["cnn", "resnet_gn", "vit"])
def test_deterministic_under_seed(key: str) -> None:
    x = torch.rand(2, 3, 32, 32)
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        outs.append(build(key)(x))
    torch.testing.assert_close(outs[0].pooled, outs[1].pooled, rtol=0, atol=0)
    torch.testing.assert_close(outs[0].tokens, outs[1].tokens, rtol=0, atol=0)
    torch.manual_seed(124)
    assert not torch.equal(build(key)(x).pooled, outs[0].pooled)


def test_imagenet_normalisation() -> None:
    seen = {}

    class Probe(Encoder):
        dim = 3

        def encode(self, x: torch.Tensor) -> EncoderOutput:
            seen["x"] = x
            return EncoderOutput(x.mean((2, 3)), x.flatten(2).transpose(1, 2))

    x = torch.rand(2, 3, 4, 4)
    Probe({"name": "probe"})(x)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    for c in range(3):
        torch.testing.assert_close(seen["x"][:, c], (x[:, c] - mean[c]) / std[c])


def test_vit_position_embedding_interpolation() -> None:
    vit = ViT(dim=16, depth=1, heads=2, patch_size=8, img_size=32)
    assert vit.position_embedding(4, 4) is vit.pos_embed
    pos = vit.position_embedding(8, 6)
    assert pos.shape == (1, 48, 16)
    # Bicubic up-sampling of a constant field stays constant.
    with torch.no_grad():
        vit.pos_embed.fill_(0.5)
    torch.testing.assert_close(vit.position_embedding(8, 8), torch.full((1, 64, 16), 0.5))
    assert vit(torch.rand(1, 3, 64, 48)).tokens.shape == (1, 48, 16)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"cnn.*resnet18.*vit_tiny.*vit_small"):
        make_encoder("alexnet")
    with pytest.raises(ValueError, match=r"norm.*'batch', 'group'"):
        ResNet18(norm="layer")
    with pytest.raises(ValueError, match="heads must divide dim"):
        ViT(dim=30, heads=4, depth=1)
    with pytest.raises(ValueError, match="patch_size"):
        ViT(dim=16, heads=2, depth=1, img_size=30)
    with pytest.raises(ValueError, match="downsample"):
        SmallCNN(downsample=6)
    with pytest.raises(ValueError, match="downsample"):
        SmallCNN(depth=2, downsample=16)
    with pytest.raises(ValueError, match="width"):
        SmallCNN(width=0)
    with pytest.raises(TypeError):
        make_encoder("cnn", widht=8)
    enc = SmallCNN(width=8)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        enc(torch.rand(2, 32, 32, 3))
    with pytest.raises(TypeError, match="float"):
        enc(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="patch_size"):
        ViT(dim=16, heads=2, depth=1)(torch.rand(1, 3, 36, 36))


# --- stable-baselines3 adapter -------------------------------------------------------------


def test_extractor_layouts_agree() -> None:
    torch.manual_seed(0)
    enc = SmallCNN(width=8).eval()
    hwc = gym.spaces.Box(0, 255, (32, 32, 3), np.uint8)
    chw = gym.spaces.Box(0, 255, (3, 32, 32), np.uint8)
    x = torch.rand(4, 3, 32, 32)
    expected = enc(x).pooled
    fx_chw = EncoderFeaturesExtractor(chw, encoder=enc)
    fx_hwc = EncoderFeaturesExtractor(hwc, encoder=enc)
    assert fx_chw.features_dim == fx_hwc.features_dim == 32
    torch.testing.assert_close(fx_chw(x), expected)
    torch.testing.assert_close(fx_hwc(x.permute(0, 2, 3, 1)), expected)
    # The space says HWC but SB3's VecTransposeImage handed over CHW: the tensor decides.
    torch.testing.assert_close(fx_hwc(x), expected)
    # Raw 0..255 pixels when the policy does not normalise images.
    fx_raw = EncoderFeaturesExtractor(chw, encoder=enc, divide_by_255=True)
    torch.testing.assert_close(fx_raw(x * 255), expected)
    # Grayscale is repeated to RGB.
    gray = EncoderFeaturesExtractor(gym.spaces.Box(0, 255, (1, 32, 32), np.uint8), encoder=enc)
    torch.testing.assert_close(gray(x[:, :1]), enc(x[:, :1].expand(-1, 3, -1, -1)).pooled)


def test_extractor_dict_goal_is_concatenated() -> None:
    space = gym.spaces.Dict(
        {"goal": gym.spaces.Discrete(7), "view": gym.spaces.Box(0, 255, (32, 32, 3), np.uint8)}
    )
    fx = EncoderFeaturesExtractor(space, encoder_name="cnn", encoder_kwargs={"width": 8}).eval()
    assert fx.features_dim == 32 + 7
    view = torch.rand(3, 3, 32, 32)
    goal = torch.nn.functional.one_hot(torch.tensor([0, 6, 2]), 7).float()
    feats = fx({"goal": goal, "view": view})
    torch.testing.assert_close(feats[:, :32], fx.encoder(view).pooled)
    torch.testing.assert_close(feats[:, 32:], goal)


def test_extractor_bad_arguments() -> None:
    image = gym.spaces.Box(0, 255, (8, 8, 3), np.uint8)
    space = gym.spaces.Dict({"goal": gym.spaces.Discrete(3), "img": image})
    with pytest.raises(ValueError, match="image_key"):
        EncoderFeaturesExtractor(space)
    with pytest.raises(ValueError, match="channels"):
        EncoderFeaturesExtractor(gym.spaces.Box(0, 255, (8, 8, 5), np.uint8))
    with pytest.raises(ValueError, match="3-d Box"):
        EncoderFeaturesExtractor(gym.spaces.Box(0, 1, (10,)))
    with pytest.raises(TypeError, match="encoder"):
        EncoderFeaturesExtractor(gym.spaces.Box(0, 255, (8, 8, 3), np.uint8), encoder=torch.nn.Linear(2, 2))


@pytest.mark.parametrize("env_id", ["ImageView-v0", "ImageSearch-v0"])
def test_sb3_ppo_trains(env_id: str) -> None:
    from stable_baselines3 import PPO

    import vpt_env  # noqa: F401  (registers the envs)
    from vpt_env.data.scenes import SceneSource

    if env_id == "ImageSearch-v0":
        env, policy = gym.make(env_id, source=SceneSource(n_images=20), view_size=32), "MultiInputPolicy"
    else:
        env, policy = gym.make(env_id, view_size=32), "CnnPolicy"
    policy_kwargs = {
        "features_extractor_class": EncoderFeaturesExtractor,
        "features_extractor_kwargs": {"encoder_name": "cnn", "encoder_kwargs": {"width": 8}},
    }
    model = PPO(
        policy, env, n_steps=32, batch_size=32, n_epochs=1, policy_kwargs=policy_kwargs, seed=0, device="cpu"
    )
    before = [p.detach().clone() for p in model.policy.features_extractor.parameters()]
    model.learn(total_timesteps=64)
    fx = model.policy.features_extractor
    assert isinstance(fx, EncoderFeaturesExtractor)
    space = env.observation_space
    if isinstance(space, gym.spaces.Dict):  # one-hot goal (+ other entries) after the pooled vector
        extra = sum(get_flattened_obs_dim(space[k]) for k in space.spaces if k != "view")
        assert extra >= space["goal"].n
        assert fx.features_dim == 32 + extra
    else:
        assert fx.features_dim == 32
    assert any(not torch.equal(a, b) for a, b in zip(before, fx.parameters(), strict=True))
    obs, _ = env.reset(seed=1)
    action, _ = model.predict(obs, deterministic=True)
    assert env.action_space.contains(action)


def test_encoders_import_without_sb3() -> None:
    # agents.encoders does not import stable-baselines3 (agents.sb3 holds the SB3 adapter).
    code = "import sys, agents.encoders; print('stable_baselines3' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
