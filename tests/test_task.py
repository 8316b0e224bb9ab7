"""A new task is one class: the two shells step it alike, single and vector."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from vpt_env.envs.image_view import ImageViewEnv
from vpt_env.envs.task import Views, ViewTask, where_state
from vpt_env.envs.vector import ImageViewVectorEnv

IMAGES = [np.random.default_rng(i).integers(0, 256, (48, 64, 3), dtype=np.uint8) for i in range(3)]


class WideTask(ViewTask):
    """Pays 1 when the view is wider than tall; ends when it is 1.5 times as wide."""

    def reward(self, state, views, memo, validate=True):
        w = state.box[:, 2] - state.box[:, 0]
        h = state.box[:, 3] - state.box[:, 1]
        return (w > h).float(), w > 1.5 * h, memo


class WideVectorEnv(ImageViewVectorEnv):
    task_class = WideTask


class WideEnv(ImageViewEnv):
    vector_class = WideVectorEnv


def test_a_new_task_passes_gymnasiums_checker() -> None:
    check_env(WideEnv(IMAGES, view_size=16), skip_render_check=True)


def test_a_new_task_steps_alike_in_both_shells() -> None:
    n = 3
    singles = [WideEnv(IMAGES, view_size=16) for _ in range(n)]
    vec = WideVectorEnv(n, IMAGES, view_size=16, array="numpy", autoreset_mode="disabled")
    vobs, _ = vec.reset(seed=5)
    for i, env in enumerate(singles):
        obs, _ = env.reset(seed=5 + i)
        assert np.array_equal(obs, vobs[i])
    rng = np.random.default_rng(0)
    ended = np.zeros(n, bool)
    endings = 0
    for _ in range(40):
        actions = rng.uniform(-1, 1, (n, vec.single_action_space.shape[0])).astype(np.float32)
        actions[:, 3] = rng.uniform(0, 1, n)  # widen: episodes end
        vobs, vrew, vterm, _, _ = vec.step(actions)
        for i, env in enumerate(singles):
            if ended[i]:
                continue
            obs, rew, term, trunc, _ = env.step(actions[i])
            assert np.array_equal(obs, vobs[i]) and rew == vrew[i] and term == vterm[i] and not trunc
        ended |= vterm
        endings += int(vterm.sum())
        if ended.any():
            vec.reset(options={"reset_mask": ended.copy()})
            for i in np.flatnonzero(ended):
                singles[i].reset()
            ended[:] = False
    assert endings > 0, "no episode ended: the test compared no termination"


def test_where_state_selects_per_env_across_tensors_arrays_and_absent_fields() -> None:
    from typing import NamedTuple

    class Memo(NamedTuple):
        a: torch.Tensor
        text: np.ndarray
        none: None

    new = Memo(torch.tensor([[1, 1], [2, 2]]), np.array(["x", "y"], dtype=object), None)
    old = Memo(torch.tensor([[0, 0], [9, 9]]), np.array(["p", "q"], dtype=object), None)
    out = where_state(torch.tensor([False, True]), new, old)
    assert out.a.tolist() == [[0, 0], [2, 2]] and out.text.tolist() == ["p", "y"] and out.none is None
    assert where_state(torch.tensor([True, False]), new, None) is new


def test_views_convert_between_float_and_uint8_once() -> None:
    u8 = torch.randint(0, 256, (2, 4, 4, 3), dtype=torch.uint8)
    views = Views(uint8_views=u8)
    assert views.float_if_rendered is None
    f = views.float
    assert f.shape == (2, 3, 4, 4) and views.float is f and torch.equal(views.uint8, u8)
    assert torch.equal(Views(float_views=f).uint8, u8)
    with pytest.raises(ValueError, match="float_views or uint8_views"):
        Views()


def test_the_shells_expose_the_search_settings_and_discreteness() -> None:
    from vpt_env.data.scenes import SceneSource
    from vpt_env.envs.image_view import ImageViewDiscreteEnv
    from vpt_env.envs.search import ImageSearchDiscreteEnv, ImageSearchEnv, ImageSearchVectorEnv

    src = SceneSource(n_images=10)
    single = ImageSearchEnv(src, found_iou=0.3, goal_mode="caption", text_info=True)
    vec = ImageSearchVectorEnv(2, src, found_iou=0.3, goal_mode="caption")
    assert (single.found_iou, single.goal_mode, single.text_info) == (0.3, "caption", True)
    assert (vec.found_iou, vec.goal_mode, vec.text_info) == (0.3, "caption", False)
    assert ImageSearchDiscreteEnv.discrete and ImageViewDiscreteEnv.discrete
    assert not ImageSearchEnv.discrete and not ImageViewEnv.discrete


def test_caption_goals_returned_by_the_vector_env_are_not_rewritten_by_later_resets() -> None:
    from vpt_env.data.scenes import SceneSource
    from vpt_env.envs.search import ImageSearchVectorEnv

    env = ImageSearchVectorEnv(2, SceneSource(n_images=20), goal_mode="caption", array="numpy")
    obs, _ = env.reset(seed=0)
    kept = obs["goal"].copy()
    later, _ = env.reset(seed=1)
    assert not np.array_equal(later["goal"], kept)  # other goals: a shared buffer would show them
    assert np.array_equal(obs["goal"], kept)
