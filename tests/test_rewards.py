"""Rewards and cumulants on hand-computed cases; ``reward=`` resolution and validation."""

from __future__ import annotations

import sys
import textwrap
import uuid

import gymnasium as gym
import numpy as np
import pytest
import torch

import vpt_env  # noqa: F401  (registers the envs)
from vpt_env.core.augment import AUG_DIM
from vpt_env.core.state import ViewState
from vpt_env.data import Annotation, Annotations, ArraySource, view_cumulant
from vpt_env.rewards import (
    REWARDS,
    CoverageReward,
    LabelReward,
    ZeroReward,
    check_reward_output,
    make_reward,
    register_reward,
)
from vpt_env.rewards.base import same_device

CLASSES = ["cat", "dog", "car"]
CAT, DOG, CAR = 0, 1, 2


def _annotations(device: torch.device) -> Annotations:
    """Four images with known labels and boxes.

    0: label cat; one cat box (0, 0, 0.5, 0.5), area 0.25.
    1: label dog; cat boxes A (0, 0, 0.4, 0.5) area 0.2 and B (0.5, 0.5, 1, 1) area 0.25,
       plus a dog box covering the whole image (not a target of "cat").
    2: label cat, no boxes.
    3: nothing.
    """
    items = [
        Annotation(label=CAT, boxes=[[0, 0, 0.5, 0.5]], box_labels=[CAT]),
        Annotation(
            label=DOG,
            boxes=[[0, 0, 0.4, 0.5], [0.5, 0.5, 1, 1], [0, 0, 1, 1]],
            box_labels=[CAT, CAT, DOG],
        ),
        Annotation(label=CAT),
        Annotation(),
    ]
    return Annotations(items, CLASSES).to(device)


def _state(images: list[int], boxes: list[list[float]], device: torch.device) -> ViewState:
    b = len(images)
    return ViewState(
        image=torch.tensor(images, dtype=torch.int64, device=device),
        box=torch.tensor(boxes, dtype=torch.float32, device=device),
        aug=torch.zeros(b, AUG_DIM, device=device),
        t=torch.zeros(b, dtype=torch.int64, device=device),
        key=torch.zeros(b, dtype=torch.int64, device=device),
        episode=torch.zeros(b, dtype=torch.int64, device=device),
    )


def _views(state: ViewState, size: int = 8) -> torch.Tensor:
    return torch.zeros(state.image.shape[0], 3, size, size, device=state.box.device)


def _close(got: torch.Tensor, expected: list) -> None:
    want = torch.tensor(expected, dtype=torch.float32)
    torch.testing.assert_close(got.cpu().float(), want, atol=1e-6, rtol=0)


def _array_env(device: torch.device, **kwargs):
    """A small env over two 24x24 arrays labelled 0 ("a") and 1 ("b")."""
    images = [np.full((24, 24, 3), 50, np.uint8), np.full((24, 24, 3), 150, np.uint8)]
    src = kwargs.pop("source", ArraySource(images, labels=[0, 1], classes=["a", "b"]))
    return gym.make("ImageView-v0", source=src, view_size=16, device=device, **kwargs)


def _zero_action(env) -> np.ndarray:
    return np.zeros(env.action_space.shape, np.float32)


# -- built-in rewards ------------------------------------------------------------------


def test_zero_reward(device):
    anns = _annotations(device)
    state = _state([0, 1, 2, 3], [[0, 0, 1, 1]] * 4, device)
    for fn in (ZeroReward(), make_reward("zero", anns)):
        out = fn(_views(state), state, anns)
        assert out.shape == (4,) and out.device == state.box.device
        _close(out, [0, 0, 0, 0])


def test_label_reward(device):
    anns = _annotations(device)
    state = _state([0, 1, 2, 3, 1], [[0, 0, 1, 1]] * 5, device)
    _close(LabelReward(CAT)(_views(state), state, anns), [1, 0, 1, 0, 0])
    fn = make_reward("label", anns, target="dog")
    assert fn.target == DOG
    out = fn(_views(state), state, anns)
    assert out.shape == (5,) and out.device == state.box.device
    _close(out, [0, 1, 0, 0, 1])
    _close(make_reward("label", anns, target=CAR)(_views(state), state, anns), [0, 0, 0, 0, 0])


def test_coverage_reward(device):
    anns = _annotations(device)
    state = _state(
        [0, 0, 0, 1, 1, 1, 2, 3],
        [
            [0.25, 0, 1, 1],  # half of the cat box inside (x 0.25..0.5 of 0..0.5)
            [0, 0, 1, 1],  # all of it
            [0.6, 0.6, 1, 1],  # none of it
            # A: x 0.3..0.4 * y 0..0.5 = 0.05; B: x 0.5..0.9 * y 0.5..1 = 0.2; (0.05 + 0.2) / 0.45
            [0.3, 0, 0.9, 1],
            [0, 0, 0.4, 0.5],  # exactly A: 0.2 / 0.45 (the dog box is ignored)
            [0.45, 0.45, 0.5, 0.5],  # inside the dog box only: 0
            [0, 0, 1, 1],  # no boxes at all
            [0, 0, 1, 1],
        ],
        device,
    )
    expected = [0.5, 1.0, 0.0, 0.25 / 0.45, 0.2 / 0.45, 0.0, 0.0, 0.0]
    _close(CoverageReward(CAT)(_views(state), state, anns), expected)
    fn = make_reward("coverage", anns, target="cat")
    assert isinstance(fn, CoverageReward) and fn.target == CAT
    out = fn(_views(state), state, anns)
    assert out.shape == (8,) and out.device == state.box.device
    _close(out, expected)
    # Target dog: the whole-image dog box of image 1 is covered by the view's area.
    _close(
        make_reward("coverage", anns, target=DOG)(_views(state), state, anns),
        [0, 0, 0, 0.6, 0.2, 0.0025, 0, 0],
    )


# -- cumulants -------------------------------------------------------------------------


def test_view_cumulant_hand_cases(device):
    anns = _annotations(device)
    state = _state(
        [1, 0, 0, 2, 3, 1],
        [
            [0.3, 0, 0.9, 1],  # cat 0.05/0.2 + 0.2/0.25 = 1.05, dog 0.6 of 1
            [0.6, 0.6, 1, 1],  # sees none of image 0's boxes: zeros (no label fallback)
            [0.25, 0, 1, 1],  # half of the cat box: all mass on cat
            [0.9, 0.9, 1, 1],  # label fallback: no boxes, label cat
            [0, 0, 1, 1],  # nothing known
            [0.45, 0.45, 0.5, 0.5],  # dog only
        ],
        device,
    )
    out = view_cumulant(anns, state.image, state.box)
    assert out.shape == (6, 3) and out.dtype == torch.float32 and out.device == state.box.device
    expected = [
        [1.05 / 1.65, 0.6 / 1.65, 0],
        [0, 0, 0],
        [1, 0, 0],
        [1, 0, 0],
        [0, 0, 0],
        [0, 1, 0],
    ]
    _close(out, expected)
    sums = out.sum(dim=1).cpu()
    _close(sums, [1, 0, 1, 1, 0, 1])


def test_view_cumulant_labels_only_and_no_classes(device):
    anns = Annotations([Annotation(label=2), Annotation(), Annotation(label=0)], ["x", "y", "z"]).to(device)
    assert anns.boxes.shape == (3, 0, 4)
    image = torch.tensor([0, 1, 2], device=device)
    box = torch.tensor([[0, 0, 1, 1]] * 3, dtype=torch.float32, device=device)
    _close(view_cumulant(anns, image, box), [[0, 0, 1], [0, 0, 0], [1, 0, 0]])
    empty = Annotations.empty(3).to(device)
    assert view_cumulant(empty, image, box).shape == (3, 0)


def test_env_info_cumulant_is_the_label(device):
    env = _array_env(device)
    env.reset(seed=0, options={"image_index": 1})
    _, _, _, _, info = env.step(_zero_action(env))
    np.testing.assert_allclose(info["cumulant"], [0.0, 1.0])
    env.close()


# -- make_reward -----------------------------------------------------------------------


def test_unknown_reward_name_lists_the_names():
    anns = _annotations(torch.device("cpu"))
    with pytest.raises(ValueError, match="no_such_reward") as info:
        make_reward("no_such_reward", anns)
    for name in ("zero", "label", "coverage"):
        assert name in str(info.value)


def test_bad_targets():
    anns = _annotations(torch.device("cpu"))
    for target in ("horse", 3, -1):
        with pytest.raises(ValueError) as info:
            make_reward("label", anns, target=target)
        assert str(target) in str(info.value)
        with pytest.raises(ValueError):
            make_reward("coverage", anns, target=target)
    with pytest.raises(ValueError, match="horse") as info:
        make_reward("coverage", anns, target="horse")
    assert "cat" in str(info.value)  # lists the classes
    for name in ("label", "coverage"):
        with pytest.raises(TypeError, match="target"):
            make_reward(name, anns)
    with pytest.raises(TypeError):
        make_reward("label", anns, target=1.5)
    with pytest.raises(TypeError):
        make_reward("zero", anns, target="cat")


def test_coverage_needs_boxes(device):
    labels_only = Annotations([Annotation(label=0), Annotation(label=1)], ["a", "b"])
    assert isinstance(make_reward("label", labels_only, target="b"), LabelReward)
    with pytest.raises(ValueError, match="box"):
        make_reward("coverage", labels_only, target="a")
    with pytest.raises(ValueError, match="box"):
        _array_env(device, reward="coverage", target="a")
    with pytest.raises(ValueError):
        _array_env(device, source=[np.zeros((24, 24, 3), np.uint8)], reward="label", target=0)


def test_label_reward_through_env(device):
    env = _array_env(device, reward="label", target="b")
    rewards = []
    for index in (0, 1):
        env.reset(seed=0, options={"image_index": index})
        _, reward, _, _, _ = env.step(_zero_action(env))
        rewards.append(reward)
    assert rewards == [0.0, 1.0]
    env.close()


def test_module_function_string(tmp_path, monkeypatch, device):
    modname = f"user_rewards_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{modname}.py").write_text(
        textwrap.dedent(
            """
            import torch

            def box_width(views, state, annotations):
                return state.box[:, 2] - state.box[:, 0]

            class Scaled:
                is_reward_factory = False

                def __init__(self, annotations, scale=1.0):
                    self.scale = scale

                def __call__(self, views, state, annotations):
                    return torch.full(state.image.shape, self.scale, device=state.box.device)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        anns = _annotations(device)
        fn = make_reward(f"{modname}:box_width", anns)
        assert fn is sys.modules[modname].box_width
        state = _state([0, 1], [[0.1, 0, 0.6, 1], [0, 0, 1, 1]], device)
        _close(fn(_views(state), state, anns), [0.5, 1.0])
        scaled = make_reward(f"{modname}:Scaled", anns, scale=2.0)  # a class is a factory
        _close(scaled(_views(state), state, anns), [2.0, 2.0])
        with pytest.raises(ValueError, match="could not be loaded"):
            make_reward(f"{modname}:no_such_function", anns)
        with pytest.raises(ValueError, match="could not be loaded"):
            make_reward("no_such_module_xyz_123:fn", anns)
        env = _array_env(device, reward=f"{modname}:box_width")
        env.reset(seed=3)
        _, reward, _, _, info = env.step(_zero_action(env))
        assert reward == pytest.approx(float(info["box"][2] - info["box"][0]), abs=1e-6)
        env.close()
    finally:
        sys.modules.pop(modname, None)


def test_user_callable_through_env(device):
    calls = []

    def my_reward(views, state, annotations):
        calls.append((views.shape, views.dtype, float(views.min()), float(views.max()), state))
        x0, y0, x1, y1 = state.box.unbind(-1)
        return (x1 - x0) * (y1 - y0) + state.image.float()

    env = _array_env(device, reward=my_reward)
    assert env.unwrapped.reward_fn is my_reward
    env.reset(seed=0, options={"image_index": 1})
    action = _zero_action(env)
    action[2] = 1.0  # zoom in: the box changes
    _, reward, _, _, info = env.step(action)
    x0, y0, x1, y1 = info["box"].tolist()
    assert reward == pytest.approx((x1 - x0) * (y1 - y0) + 1.0, abs=1e-6)
    assert reward < 2.0
    shape, dtype, lo, hi, state = calls[-1]
    assert shape == (1, 3, 16, 16) and dtype == torch.float32
    assert 0.0 <= lo <= hi <= 1.0
    assert int(state.image[0]) == 1 == info["image_index"]
    env.close()
    with pytest.raises(TypeError, match="target"):
        make_reward(my_reward, _annotations(device), target="cat")


def test_needs_annotations_callable_is_refused_without_annotations(device):
    def annotated(views, state, annotations):
        return torch.zeros(state.image.shape[0], device=state.box.device)

    annotated.needs_annotations = True
    with pytest.raises(ValueError, match="annotated"):
        make_reward(annotated, Annotations.empty(2))
    assert make_reward(annotated, _annotations(device)) is annotated


def _wrong_shape_reward(views, state, annotations):
    return torch.zeros(state.image.shape[0], 2, device=state.box.device)


def _nan_reward(views, state, annotations):
    return torch.full(state.image.shape, float("nan"), device=state.box.device)


def _inf_reward(views, state, annotations):
    return torch.full(state.image.shape, float("inf"), device=state.box.device)


def _scalar_reward(views, state, annotations):
    return torch.tensor(1.0, device=state.box.device)


def _list_reward(views, state, annotations):
    return [0.0]


@pytest.mark.parametrize(
    ("fn", "error"),
    [
        (_wrong_shape_reward, ValueError),
        (_nan_reward, ValueError),
        (_inf_reward, ValueError),
        (_scalar_reward, ValueError),
        (_list_reward, TypeError),
    ],
)
def test_bad_reward_output_is_reported_by_step(fn, error, device):
    env = _array_env(device, reward=fn)
    env.reset(seed=0)
    with pytest.raises(error, match=fn.__name__):
        env.step(_zero_action(env))
    env.close()


def test_check_reward_output(device):
    out = check_reward_output(_nan_reward, torch.tensor([1, 0], device=device), 2, device)
    assert out.is_floating_point() and out.tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="NaN"):
        check_reward_output(_nan_reward, torch.tensor([0.0, float("nan")], device=device), 2, device)
    with pytest.raises(ValueError, match=r"\(2,\)"):
        check_reward_output(_nan_reward, torch.zeros(3, device=device), 2, device)
    with pytest.raises(TypeError, match=r"returned complex dtype torch.complex64, expected a real float"):
        check_reward_output(_nan_reward, torch.tensor([1 + 2j, 0j], device=device), 2, device)


def test_same_device_reads_bare_cuda_as_the_current_device(monkeypatch):
    # On a GPU, torch.device("cuda") (no index) names the current device, and a tensor made there
    # reports "cuda:0": the reward check must accept it (a bug that only a CUDA run showed).
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert same_device(torch.device("cuda:1"), "cuda") and same_device(torch.device("cuda"), "cuda:1")
    assert not same_device(torch.device("cuda:0"), "cuda")
    assert not same_device(torch.device("cuda:0"), "cuda:1") and not same_device(torch.device("cpu"), "cuda")
    assert same_device(torch.device("cpu"), "cpu") and same_device(torch.device("cuda:2"), "cuda:2")
    with pytest.raises(ValueError, match="on cpu, expected cuda"):
        check_reward_output(_nan_reward, torch.zeros(2), 2, torch.device("cuda"))


def test_annotations_to_leaves_the_original_where_it_was():
    # Two pools of one Annotations on two devices: moving one must not move the other's.
    anns = Annotations([Annotation(label=2), Annotation(label=0)], ["x", "y", "z"])
    moved = anns.to("meta")
    assert moved.labels.device.type == "meta" and moved.boxes.device.type == "meta"
    assert anns.labels.device.type == "cpu" and anns.boxes.device.type == "cpu"
    assert anns.labels.tolist() == [2, 0] and moved.classes == anns.classes and len(moved) == 2


def test_register_reward(device):
    name = f"test_constant_{uuid.uuid4().hex[:8]}"
    assert name not in REWARDS
    try:

        @register_reward(name)
        def constant(annotations, value=0.25):
            def reward(views, state, annotations):
                return torch.full(state.image.shape, value, device=state.box.device)

            return reward

        assert REWARDS[name] is constant
        anns = _annotations(device)
        state = _state([0, 1, 2], [[0, 0, 1, 1]] * 3, device)
        _close(make_reward(name, anns)(_views(state), state, anns), [0.25] * 3)
        env = _array_env(device, reward=name, reward_kwargs={"value": 0.75})
        env.reset(seed=0)
        _, reward, _, _, _ = env.step(_zero_action(env))
        assert reward == 0.75
        env.close()
        with pytest.raises(ValueError, match="already registered"):
            register_reward(name)(constant)
        with pytest.raises(ValueError, match="already registered"):
            register_reward("zero")(constant)
        with pytest.raises(TypeError, match=name):
            make_reward(name, anns, no_such_param=1)
    finally:
        REWARDS.pop(name, None)
    assert name not in REWARDS
