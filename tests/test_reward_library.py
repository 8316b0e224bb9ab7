"""Library rewards (edge_density, saliency, caption_match, teacher_prob) on hand-computed cases."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

import vpt_env  # noqa: F401  (registers the envs)
from vpt_env.core.augment import AUG_DIM
from vpt_env.core.state import ViewState
from vpt_env.data import Annotation, Annotations, ArraySource
from vpt_env.envs.vector import ImageViewVectorEnv
from vpt_env.rewards import (
    REWARDS,
    CaptionMatchReward,
    ContrastiveCaptionReward,
    EdgeDensityReward,
    RewardFn,
    SaliencyReward,
    TeacherProbReward,
    check_reward_output,
    make_reward,
)

COLOURS = ["red", "green", "blue"]
E = math.e


def _state(b: int, device: torch.device) -> ViewState:
    return ViewState(
        image=torch.zeros(b, dtype=torch.int64, device=device),
        box=torch.tensor([[0.0, 0.0, 1.0, 1.0]] * b, device=device),
        aug=torch.zeros(b, AUG_DIM, device=device),
        t=torch.zeros(b, dtype=torch.int64, device=device),
        key=torch.zeros(b, dtype=torch.int64, device=device),
        episode=torch.zeros(b, dtype=torch.int64, device=device),
    )


def _anns(device: torch.device) -> Annotations:
    return Annotations([Annotation(label=i) for i in range(3)], COLOURS).to(device)


def _close(got: torch.Tensor, expected: list, atol: float = 1e-5) -> None:
    torch.testing.assert_close(
        got.cpu().float(), torch.tensor(expected, dtype=torch.float32), atol=atol, rtol=0
    )


def _colour_views(colours: list[tuple[float, float, float]], device: torch.device, size: int = 8):
    c = torch.tensor(colours, dtype=torch.float32, device=device)
    return c[:, :, None, None].expand(-1, -1, size, size).contiguous()


def _step_edge(device: torch.device, size: int = 8) -> torch.Tensor:
    """Left half black, right half white."""
    v = torch.zeros(1, 3, size, size, device=device)
    v[..., size // 2 :] = 1.0
    return v


# Tiny deterministic encoders: an image is its mean colour; a text is its colour's one-hot vector.
def mean_colour(views: torch.Tensor) -> torch.Tensor:
    return views.mean(dim=(2, 3))


def colour_text(texts: list[str]) -> torch.Tensor:
    out = torch.zeros(len(texts), 3)
    for i, t in enumerate(texts):
        out[i, COLOURS.index(t.split()[-1])] = 1.0
    return out


# -- edge density and saliency ------------------------------------------------------------


def test_edge_density_hand_computed(device):
    anns = _anns(device)
    fn = EdgeDensityReward()
    flat = _colour_views([(0.3, 0.6, 0.9)], device)
    # Step edge: the two columns beside it have gx = (1 + 2 + 1) / 8 = 1/2, gy = 0; normalised by
    # sqrt(1/2): sqrt(2)/2 each, on 2 of 8 columns -> sqrt(2) / 8 = 0.176777.
    views = torch.cat((flat, _step_edge(device)))
    out = fn(views, _state(2, device), anns)
    assert out.shape == (2,) and out.device == views.device and out.dtype == torch.float32
    _close(out, [0.0, math.sqrt(2) / 8])
    # A pure-red edge has luma contrast 0.299 only.
    red = torch.zeros(1, 3, 8, 8, device=device)
    red[:, 0, :, 4:] = 1.0
    _close(fn(red, _state(1, device), anns), [0.299 * math.sqrt(2) / 8])


def test_edge_density_matches_kornia(device):
    kornia = pytest.importorskip("kornia")
    views = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0)).to(device)
    luma = (views * torch.tensor([0.299, 0.587, 0.114], device=device).view(1, 3, 1, 1)).sum(1, keepdim=True)
    # kornia's magnitude adds eps=1e-6 under the square root: at most 1e-3 / sqrt(1/2) apart.
    ref = kornia.filters.sobel(luma, normalized=True).mean(dim=(1, 2, 3)) / math.sqrt(0.5)
    torch.testing.assert_close(EdgeDensityReward()(views, _state(3, device), None), ref, atol=2e-3, rtol=0)


def test_saliency_hand_computed(device):
    anns = _anns(device)
    # No centre blur, surround = mean colour: mean |x - mean x| = 0.5 for a half-black view.
    fn = SaliencyReward(centre_sigma=0.0, surround_sigma=None)
    views = torch.cat((_colour_views([(0.2, 0.4, 0.6)], device), _step_edge(device)))
    _close(fn(views, _state(2, device), anns), [0.0, 0.5])
    # A 2x2 white square in an 8x8 black view: mean 1/16; |1 - 1/16| on 4 px, 1/16 on 60 px.
    sq = torch.zeros(1, 3, 8, 8, device=device)
    sq[..., 3:5, 3:5] = 1.0
    _close(fn(sq, _state(1, device), anns), [(4 * 15 / 16 + 60 / 16) / 64])
    # The default (difference of Gaussians): 0 on a flat view, the square stands out.
    default = make_reward("saliency", anns)
    assert isinstance(default, SaliencyReward)
    out = default(torch.cat((views[:1], sq)), _state(2, device), anns)
    assert abs(float(out[0])) < 1e-6 and 0.01 < out[1] <= 1.0


def test_saliency_matches_kornia(device):
    kornia = pytest.importorskip("kornia")
    views = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)).to(device)

    def blur(x, sigma):
        s = sigma * 32
        k = 2 * max(1, math.ceil(3 * s)) + 1
        return kornia.filters.gaussian_blur2d(x, (k, k), (s, s), border_type="replicate")

    ref = (blur(views, 0.03) - blur(views, 0.25)).abs().mean(dim=(1, 2, 3))
    torch.testing.assert_close(SaliencyReward()(views, _state(2, device), None), ref, atol=1e-5, rtol=0)


def test_saliency_pools_large_views(device):
    views = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(3)).to(device)
    pooled = torch.nn.functional.avg_pool2d(views, 2)
    fn = SaliencyReward()
    torch.testing.assert_close(fn(views, _state(2, device), None), fn(pooled, _state(2, device), None))
    full = SaliencyReward(resolution=None)(views, _state(2, device), None)
    assert not torch.allclose(full, fn(views, _state(2, device), None))


def test_saliency_arguments():
    with pytest.raises(ValueError, match="centre_sigma"):
        SaliencyReward(centre_sigma=-1)
    with pytest.raises(ValueError, match="surround_sigma"):
        SaliencyReward(centre_sigma=0.2, surround_sigma=0.1)
    with pytest.raises(ValueError, match="resolution"):
        SaliencyReward(resolution=1)


# -- caption match ---------------------------------------------------------------------------


def test_caption_match_hand_computed(device):
    anns = _anns(device)
    views = _colour_views([(1, 0, 0), (0, 1, 0), (0.5, 0.5, 0)], device)
    fn = make_reward(
        "caption_match", anns, image_encoder=mean_colour, text_encoder=colour_text, caption="red"
    )
    assert isinstance(fn, CaptionMatchReward) and not hasattr(fn, "cumulant")
    # cos = 1, 0, 1/sqrt(2) -> (cos + 1) / 2
    out = fn(views, _state(3, device), anns)
    assert out.device == views.device
    _close(out, [1.0, 0.5, (1 + 1 / math.sqrt(2)) / 2])
    # target= by name or index builds "a photo of a green".
    for target in ("green", 1):
        fn = make_reward(
            "caption_match", anns, image_encoder=mean_colour, text_encoder=colour_text, target=target
        )
        assert fn.caption == "a photo of a green"
        _close(fn(views, _state(3, device), anns), [0.5, 1.0, (1 + 1 / math.sqrt(2)) / 2])


def test_caption_match_contrastive(device):
    anns = _anns(device)
    views = _colour_views([(1, 0, 0), (0.5, 0.5, 0), (0, 0, 1)], device)
    fn = make_reward(
        "caption_match",
        anns,
        image_encoder=mean_colour,
        text_encoder=colour_text,
        target="red",
        contrastive=True,
        temperature=1.0,
    )
    assert isinstance(fn, ContrastiveCaptionReward) and isinstance(fn, RewardFn)
    assert fn.prompts == ["a photo of a red", "a photo of a green", "a photo of a blue"]
    # cos to (red, green, blue): (1, 0, 0) -> e / (e + 2); (r, r, 0) with r = 1/sqrt(2); (0, 0, 1).
    r = math.exp(1 / math.sqrt(2))
    out = fn(views, _state(3, device), anns)
    _close(out, [E / (E + 2), r / (2 * r + 1), 1 / (E + 2)])
    cum = fn.cumulant(views, _state(3, device), anns)
    assert cum.shape == (3, anns.num_classes) and cum.device == views.device
    _close(cum[:, 0], out.cpu().tolist())
    _close(cum.sum(1), [1.0, 1.0, 1.0])
    _close(cum[2], [1 / (E + 2), 1 / (E + 2), E / (E + 2)])


def test_caption_match_runs_frozen_in_eval_mode(device):
    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(3, 3)
            self.dropout = torch.nn.Dropout(0.9)

        def forward(self, views):
            assert not self.training and not torch.is_grad_enabled()
            return self.dropout(self.proj(views.mean(dim=(2, 3))))

    enc = Encoder().to(device)
    fn = CaptionMatchReward(enc, lambda texts: torch.ones(len(texts), 3), "anything")
    views = torch.rand(4, 3, 8, 8, device=device)
    a, b = fn(views, _state(4, device), None), fn(views, _state(4, device), None)
    assert torch.equal(a, b) and not a.requires_grad and bool(((a >= 0) & (a <= 1)).all())


def test_caption_match_arguments(device):
    anns = _anns(device)
    enc = {"image_encoder": mean_colour, "text_encoder": colour_text}
    with pytest.raises(TypeError, match="image_encoder"):
        make_reward("caption_match", anns, caption="red")
    with pytest.raises(TypeError, match="exactly one"):
        make_reward("caption_match", anns, **enc)
    with pytest.raises(TypeError, match="exactly one"):
        make_reward("caption_match", anns, caption="red", target="red", **enc)
    with pytest.raises(TypeError, match="contrastive"):
        make_reward("caption_match", anns, caption="red", contrastive=True, **enc)
    with pytest.raises(ValueError, match="not a class"):
        make_reward("caption_match", anns, target="purple", **enc)
    with pytest.raises(ValueError, match="text_encoder"):
        make_reward(
            "caption_match", anns, image_encoder=mean_colour, text_encoder=lambda t: None, caption="x"
        )
    fn = make_reward(
        "caption_match", anns, image_encoder=lambda v: v, text_encoder=colour_text, caption="red"
    )
    with pytest.raises(ValueError, match="image_encoder"):
        fn(torch.zeros(2, 3, 4, 4, device=device), _state(2, device), anns)


# -- teacher probability -----------------------------------------------------------------------


def test_teacher_prob_logits(device):
    anns = _anns(device)
    model = torch.nn.Linear(3, 3, bias=False).to(device)
    with torch.no_grad():
        model.weight.copy_(2 * torch.eye(3))

    def classifier(views):
        return model(views.mean(dim=(2, 3)))

    views = _colour_views([(1, 0, 0), (0, 1, 0), (0.5, 0.5, 0)], device)
    # logits (2, 0, 0) -> e^2 / (e^2 + 2); (0, 2, 0) -> 1 / (e^2 + 2); (1, 1, 0) -> e / (2e + 1).
    expected = [E**2 / (E**2 + 2), 1 / (E**2 + 2), E / (2 * E + 1)]
    for target in (0, "red"):
        fn = make_reward("teacher_prob", anns, model=classifier, target=target)
        assert isinstance(fn, TeacherProbReward) and fn.target == 0
        out = fn(views, _state(3, device), anns)
        assert out.device == views.device
        _close(out, expected)
    cum = fn.cumulant(views, _state(3, device), anns)
    assert cum.shape == (3, 3)
    _close(cum[1], [1 / (E**2 + 2), E**2 / (E**2 + 2), 1 / (E**2 + 2)])
    # temperature 2 halves the logits: e / (e + 2).
    _close(
        TeacherProbReward(classifier, 0, temperature=2.0)(views[:1], _state(1, device), anns), [E / (E + 2)]
    )
    # The teacher's own class names.
    fn = make_reward("teacher_prob", anns, model=classifier, target="b", classes=["a", "b", "c"])
    _close(fn(views, _state(3, device), anns), [1 / (E**2 + 2), E**2 / (E**2 + 2), E / (2 * E + 1)])


def test_teacher_prob_prototypes(device):
    anns = _anns(device)
    protos = torch.eye(3)
    views = _colour_views([(1, 0, 0), (0.5, 0.5, 0)], device)
    # cos (1, 0, 0) / 0.5 -> logits (2, 0, 0); (r, r, 0) / 0.5 with r = 1/sqrt(2).
    r2 = math.exp(2 / math.sqrt(2))
    fn = make_reward(
        "teacher_prob", anns, model=mean_colour, target="red", prototypes=protos, temperature=0.5
    )
    _close(fn(views, _state(2, device), anns), [E**2 / (E**2 + 2), r2 / (2 * r2 + 1)])
    # Default temperature with prototypes is 0.1: (1, 0, 0) -> e^10 / (e^10 + 2).
    fn = make_reward("teacher_prob", anns, model=mean_colour, target=0, prototypes=protos)
    _close(fn(views[:1], _state(1, device), anns), [math.exp(10) / (math.exp(10) + 2)])


def test_teacher_prob_arguments(device):
    anns = _anns(device)
    with pytest.raises(TypeError, match="model"):
        make_reward("teacher_prob", anns, target=0)
    with pytest.raises(TypeError, match="target"):
        make_reward("teacher_prob", anns, model=mean_colour)
    with pytest.raises(ValueError, match="prototypes"):
        make_reward("teacher_prob", anns, model=mean_colour, target=5, prototypes=torch.eye(3))
    with pytest.raises(ValueError, match="not a class"):
        make_reward("teacher_prob", anns, model=mean_colour, target="purple")
    with pytest.raises(ValueError, match="temperature"):
        TeacherProbReward(mean_colour, 0, temperature=0.0)
    fn = make_reward("teacher_prob", anns, model=mean_colour, target=7)
    with pytest.raises(ValueError, match="out of range"):
        fn(torch.zeros(1, 3, 4, 4, device=device), _state(1, device), anns)


# -- common properties -------------------------------------------------------------------------


def _all_rewards(anns):
    enc = {"image_encoder": mean_colour, "text_encoder": colour_text}
    return {
        "edge_density": make_reward("edge_density", anns),
        "saliency": make_reward("saliency", anns),
        "caption_match": make_reward("caption_match", anns, caption="a photo of a blue", **enc),
        "caption_contrastive": make_reward("caption_match", anns, target=2, contrastive=True, **enc),
        "teacher_prob": make_reward("teacher_prob", anns, model=lambda v: 5 * mean_colour(v), target=1),
        "teacher_protos": make_reward(
            "teacher_prob", anns, model=mean_colour, target=1, prototypes=torch.rand(3, 3) + 0.1
        ),
    }


def test_registered():
    assert {"edge_density", "saliency", "caption_match", "teacher_prob"} <= set(REWARDS)
    assert "novelty" in REWARDS  # built in: see tests/test_novelty.py


def test_range_batch_invariance_and_device(device):
    anns = _anns(device)
    views = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(2)).to(device)
    views[0] = 0.0
    views[1] = 1.0
    for name, fn in _all_rewards(anns).items():
        assert isinstance(fn, RewardFn) and fn.needs_views and not fn.needs_annotations
        out = check_reward_output(fn, fn(views, _state(6, device), anns), 6, views.device)
        assert out.dtype == torch.float32, name
        assert bool(((out >= 0) & (out <= 1)).all()), (name, out)
        rows = torch.cat([fn(views[i : i + 1], _state(1, device), anns) for i in range(6)])
        torch.testing.assert_close(out, rows, atol=1e-6, rtol=0, msg=name)
        torch.testing.assert_close(fn(views, _state(6, device), anns), out, atol=0, rtol=0, msg=name)
        if hasattr(fn, "cumulant"):
            cum = fn.cumulant(views, _state(6, device), anns)
            assert cum.shape == (6, 3) and cum.device == views.device, name
            torch.testing.assert_close(cum.sum(1), torch.ones(6, device=device), atol=1e-5, rtol=0)
            torch.testing.assert_close(cum[:, fn.target], out, atol=1e-6, rtol=0)


# -- through gym.make --------------------------------------------------------------------------


def _source():
    """Three 32x32 images: noise, pure red and pure green (classes red, green, blue).

    The caption and teacher envs run without augmentations, so a flat view keeps its colour.
    """
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    red = np.zeros((32, 32, 3), np.uint8)
    red[..., 0] = 255
    green = np.zeros((32, 32, 3), np.uint8)
    green[..., 1] = 255
    return noise, red, green


@pytest.mark.parametrize("name", ["edge_density", "saliency"])
def test_gym_make_view_rewards(device, name):
    noise, red, _ = _source()
    src = ArraySource([noise, red], labels=[0, 0], classes=COLOURS)
    env = gym.make("ImageView-v0", source=src, view_size=16, device=device, reward=name)
    fn = make_reward(name, _anns(device))
    seen = set()
    _, info = env.reset(seed=0)
    for _ in range(12):
        obs, reward, term, trunc, info = env.step(env.action_space.sample())
        view = torch.from_numpy(obs).permute(2, 0, 1)[None].float().div(255).to(device)
        expected = float(fn(view, _state(1, device), None)[0])
        assert 0.0 <= reward <= 1.0
        assert reward == pytest.approx(expected, abs=1e-3)  # the observation is the view in uint8
        seen.add((info["image_index"], reward > 0))
        if term or trunc:
            env.reset()
    assert (1, False) in seen or (0, True) in seen  # the flat red image scores 0, the noise > 0
    env.close()


def test_gym_make_caption_and_teacher(device):
    _, red, green = _source()
    src = ArraySource([red, green], labels=[0, 1], classes=COLOURS)
    enc = {"image_encoder": mean_colour, "text_encoder": colour_text}
    envs = {
        # cos 1 / 0 -> 1 / 0.5
        "caption": (dict(reward="caption_match", target="red", reward_kwargs=enc), [1.0, 0.5]),
        # softmax over (red, green, blue) prompts, temperature 1
        "contrastive": (
            dict(
                reward="caption_match",
                target="red",
                reward_kwargs={**enc, "contrastive": True, "temperature": 1},
            ),
            [E / (E + 2), 1 / (E + 2)],
        ),
        # logits 3 * mean colour
        "teacher": (
            dict(
                reward="teacher_prob", target="green", reward_kwargs={"model": lambda v: 3 * mean_colour(v)}
            ),
            [1 / (math.exp(3) + 2), math.exp(3) / (math.exp(3) + 2)],
        ),
    }
    for name, (kwargs, expected) in envs.items():
        env = gym.make("ImageView-v0", source=src, view_size=16, augmentations=(), device=device, **kwargs)
        env.reset(seed=0)
        for _ in range(6):
            _, reward, term, trunc, info = env.step(env.action_space.sample())
            assert reward == pytest.approx(expected[info["image_index"]], abs=1e-4), name
            if term or trunc:
                env.reset()
        env.close()


@pytest.mark.parametrize("name", ["edge_density", "saliency"])
def test_vector_env_view_rewards(device, name):
    noise, red, _ = _source()
    src = ArraySource([noise, red], labels=[0, 0], classes=COLOURS)
    venv = ImageViewVectorEnv(6, src, view_size=16, reward=name, device=device)
    fn = make_reward(name, _anns(device))
    venv.reset(seed=0)
    for _ in range(3):
        obs, reward, *_ = venv.step(venv.action_space.sample())
        obs = torch.as_tensor(np.asarray(obs) if not isinstance(obs, torch.Tensor) else obs)
        views = obs.permute(0, 3, 1, 2).float().div(255).to(device)
        expected = fn(views, _state(6, device), None)
        torch.testing.assert_close(torch.as_tensor(reward).float().to(device), expected, atol=1e-3, rtol=0)
    venv.close()
