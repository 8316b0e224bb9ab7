"""ImageSearch's vector entry point and caption goals: one copy of the task's maths at batch N."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import vpt_env  # noqa: F401
from vpt_env.data.annotations import Annotation, Annotations
from vpt_env.data.scenes import SceneSource
from vpt_env.envs.search import ImageSearchVectorEnv, encode_caption, goal_phrase, search_reward

SCENES = SceneSource(n_images=40)


@pytest.mark.parametrize("env_id", ["ImageSearch-v0", "ImageSearchDiscrete-v0"])
@pytest.mark.parametrize("goal_mode", ["class", "caption"])
def test_vector_env_equals_single_envs(env_id: str, goal_mode: str, device: torch.device) -> None:
    n, seed = 6, 11
    kw = {
        "source": SCENES,
        "view_size": 16,
        "goal_mode": goal_mode,
        "init_scale": (0.05, 0.3),
        "text_info": True,
    }
    vec = gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point", device=device, **kw)
    singles = [gym.make(env_id, device=device, **kw) for _ in range(n)]
    vobs, vinfo = vec.reset(seed=seed)
    sobs = [e.reset(seed=seed + i) for i, e in enumerate(singles)]
    rng = np.random.default_rng(0)
    done = np.zeros(n, bool)
    for _step in range(60):
        for i, (o, info) in enumerate(sobs):
            if done[i]:
                continue
            np.testing.assert_array_equal(vobs["goal"][i].cpu().numpy(), np.asarray(o["goal"]))
            np.testing.assert_allclose(vobs["box"][i].cpu().numpy(), o["box"], atol=1e-6)
            diff = np.abs(vobs["view"][i].cpu().numpy().astype(int) - o["view"].astype(int))
            assert diff.max() <= 1
            assert float(vinfo["iou"][i]) == pytest.approx(info["iou"], abs=1e-6)
            assert vinfo["goal_name"][i] == info["goal_name"]
            assert vinfo["goal_caption"][i] == info["goal_caption"]
        actions = vec.action_space.sample() if env_id.startswith("ImageSearchD") else None
        if actions is None:
            actions = rng.uniform(-1, 1, vec.action_space.shape).astype(np.float32)
        vobs, vrew, vterm, vtrunc, vinfo = vec.step(torch.as_tensor(actions, device=device))
        for i, e in enumerate(singles):
            if done[i]:
                continue
            o, r, term, trunc, info = e.step(actions[i])
            sobs[i] = (o, info)
            assert float(vrew[i]) == pytest.approx(r, abs=1e-5)
            assert bool(vterm[i]) == term and bool(vtrunc[i]) == trunc
            done[i] = term or trunc  # after this the vector env autoresets; stop comparing that env
        if done.all():
            break
    assert done.any(), "no episode ended in 60 steps: the test compared no ending"


def test_vector_env_terminates_and_autoresets_goals() -> None:
    env = ImageSearchVectorEnv(4, SCENES, view_size=16, found_iou=0.05, init_scale=(0.3, 0.6))
    obs, info = env.reset(seed=0)
    # Put env 0's view on its goal: the next step must terminate it with the bonus.
    st = env.state
    img, pick = int(st.image[0]), int(env._memo.goal_box[0])
    goal_box = env.pool.annotations.boxes[img, pick]
    env._state = st._replace(box=torch.where(torch.arange(4)[:, None] == 0, goal_box, st.box))
    last0 = float(env._memo.score[0])
    obs, rew, term, trunc, info = env.step(torch.zeros(4, 4))
    assert bool(term[0]) and float(rew[0]) == pytest.approx(1.0 - last0 + 1.0, abs=1e-5)
    assert bool(info["is_success"][0])
    # NEXT_STEP autoreset: env 0 starts a new episode (reward 0, no flags), with a fresh goal.
    obs, rew, term, trunc, info = env.step(torch.zeros(4, 4))
    assert float(rew[0]) == 0.0 and not bool(term[0]) and not bool(trunc[0])
    assert int(env.state.episode[0]) == 1 and int(env.state.t[0]) == 0


@pytest.mark.parametrize("goal_mode", ["class", "caption"])
def test_infos_hold_no_text_unless_asked(goal_mode: str) -> None:
    # String values in infos break TorchRL's batched info readers (GymEnv(num_envs=...)).
    single = gym.make("ImageSearch-v0", source=SCENES, goal_mode=goal_mode)
    vec = ImageSearchVectorEnv(2, SCENES, goal_mode=goal_mode, array="numpy")
    for info in (single.reset(seed=0)[1], vec.reset(seed=0)[1], single.step(single.action_space.sample())[4]):
        assert "goal_name" not in info and "goal_caption" not in info
        for value in info.values():
            assert not isinstance(value, str) and getattr(value, "dtype", None) != np.dtype(object)
    with pytest.raises(TypeError, match="text_info"):
        gym.make("ImageSearch-v0", source=SCENES, text_info="yes")


def test_search_reward_by_hand() -> None:
    reward, found = search_reward(torch.tensor([0.2, 0.6, 0.4]), torch.tensor([0.1, 0.3, 0.5]), 0.5)
    torch.testing.assert_close(reward, torch.tensor([0.1, 1.3, -0.1]))
    assert found.tolist() == [False, True, False]


def test_caption_goals_name_the_object() -> None:
    ann = Annotations(
        [
            Annotation(
                captions=["a red cat at the top left and a small blue dog on the right"],
                boxes=[[0.0, 0.0, 0.3, 0.3], [0.7, 0.4, 1.0, 0.6]],
                box_labels=[0, 1],
            ),
            Annotation(boxes=[[0.0, 0.7, 0.2, 1.0]], box_labels=[1]),
        ],
        ["cat", "dog"],
    )
    assert goal_phrase(ann, 0, 0) == "a red cat at the top left"
    assert goal_phrase(ann, 0, 1) == "a small blue dog on the right"
    assert goal_phrase(ann, 1, 0) == "a dog at the bottom left"  # no caption: the template
    code = encode_caption("a dog", length=8)
    assert code.dtype == np.uint8 and code.tolist() == [97, 32, 100, 111, 103, 0, 0, 0]
    assert bytes(encode_caption("x" * 100)).rstrip(b"\0") == b"x" * 64


def test_caption_mode_env_and_scene_phrases() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(gym.make("ImageSearch-v0", source=SCENES, goal_mode="caption").unwrapped)
        sb3_check_env(gym.make("ImageSearch-v0", source=SCENES, goal_mode="caption"), warn=True)
    env = gym.make("ImageSearch-v0", source=SCENES, goal_mode="caption", text_info=True)
    for seed in range(10):
        obs, info = env.reset(seed=seed)
        text = bytes(obs["goal"]).rstrip(b"\0").decode()
        assert text == info["goal_caption"][:64]
        assert info["goal_name"] in text
        # The embedded scenes' captions split into one phrase per object.
        assert text.startswith(("a ", "an "))
    with pytest.raises(ValueError, match="goal_mode"):
        gym.make("ImageSearch-v0", source=SCENES, goal_mode="text")


class _OneEmpty:
    """Two 64x64 images: image 0 has a 'cat' box, image 1 has no object."""

    classes = ("cat",)

    def __len__(self) -> int:
        return 2

    def image(self, i: int) -> np.ndarray:
        return np.full((64, 64, 3), 40 * (i + 1), np.uint8)

    def annotation(self, i: int) -> Annotation:
        return Annotation(boxes=[[0.1, 0.1, 0.5, 0.5]], box_labels=[0]) if i == 0 else Annotation()


def test_image_index_without_an_object_is_refused_up_front() -> None:
    single = gym.make("ImageSearch-v0", source=_OneEmpty(), view_size=16)
    with pytest.raises(ValueError, match="image_index"):
        single.reset(seed=0, options={"image_index": 1})
    assert single.reset(seed=0, options={"image_index": 0})[1]["image_index"] == 0
    vec = ImageSearchVectorEnv(2, _OneEmpty(), view_size=16)
    with pytest.raises(ValueError, match="image_index"):
        vec.reset(seed=0, options={"image_index": [0, 1]})
    obs, info = vec.reset(seed=0)  # the env's own draws only pick scenes with objects
    assert info["image_index"].tolist() == [0, 0]
