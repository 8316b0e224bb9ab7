"""``ImageSearch-v0`` and ``ImageSearchDiscrete-v0``: find an object of a goal class in a scene.

The task's maths is a handful of pure batched functions in :mod:`vpt_env.envs.search_task`
(:func:`search_images`, :func:`sample_goal_boxes`, :func:`goal_iou`, :func:`search_reward`; re-exported
here) that the single env (a batch of one) and the vector env (a batch of N) both call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, SupportsFloat

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.error import ResetNeeded
from gymnasium.vector.utils import batch_space
from torch import Tensor

from vpt_env.core.random import RESET_STEP, uniform
from vpt_env.envs.image_view import ImageViewEnv
from vpt_env.envs.search_task import (
    CAPTION_BYTES,
    GOAL_MODES,
    encode_caption,
    goal_iou,
    goal_phrase,
    goal_score,
    sample_goal_boxes,
    sample_goals,
    search_images,
    search_reward,
)
from vpt_env.envs.vector import ImageViewVectorEnv

__all__ = [
    "GOAL_MODES",
    "ImageSearchDiscreteEnv",
    "ImageSearchDiscreteVectorEnv",
    "ImageSearchEnv",
    "ImageSearchVectorEnv",
    "encode_caption",
    "goal_iou",
    "goal_phrase",
    "sample_goal_boxes",
    "sample_goals",
    "search_images",
    "search_reward",
]

#: Default source of the search envs: 2,000 embedded scenes (quick to build).
DEFAULT_SCENES = {"n_images": 2000, "seed": 0}


#: The search envs' own keywords.
SEARCH_KWARGS = ("found_iou", "goal_mode", "text_info")


class _SearchSetup:
    """What both search envs check and build: arguments, goals, spaces."""

    def _search_kwargs(
        self, source: Any, found_iou: float, goal_mode: str, text_info: bool, kwargs: dict[str, Any]
    ) -> Any:
        for name in ("reward", "obs_mode"):
            if name in kwargs:
                raise TypeError(f"ImageSearch envs fix {name!r}; it cannot be passed")
        if isinstance(found_iou, bool) or not isinstance(found_iou, int | float) or not 0 < found_iou <= 1:
            raise ValueError(f"found_iou must be in (0, 1], got {found_iou!r}")
        if goal_mode not in GOAL_MODES:
            raise ValueError(f"goal_mode must be one of {GOAL_MODES}, got {goal_mode!r}")
        if not isinstance(text_info, bool):
            raise TypeError(f"text_info must be a bool, got {type(text_info).__name__}")
        self.found_iou = float(found_iou)
        self.goal_mode = goal_mode
        self.text_info = text_info
        if source is None:
            from vpt_env.data.scenes import SceneSource

            source = SceneSource(**DEFAULT_SCENES)
        if "params" not in kwargs:
            kwargs.setdefault("augmentations", ())
            kwargs.setdefault("init_scale", (0.02, 0.1))
        return source

    def _search_setup(self, pool: Any, view_space: spaces.Space) -> spaces.Dict:
        ann = pool.annotations
        if not ann.has_boxes or ann.num_classes == 0:
            raise ValueError("ImageSearch needs a source with object boxes (e.g. SceneSource)")
        self._searchable = torch.nonzero((ann.box_labels >= 0).any(dim=1)).flatten()
        goal: spaces.Space = (
            spaces.Discrete(ann.num_classes)
            if self.goal_mode == "class"
            else spaces.Box(0, 255, (CAPTION_BYTES,), np.uint8)
        )
        return spaces.Dict({"view": view_space, "goal": goal, "box": spaces.Box(0.0, 1.0, (4,), np.float32)})

    def _check_image_option(self, options: dict[str, Any] | None) -> None:
        """Refuse ``options["image_index"]`` naming an image without objects (before any state changes).

        Images drawn by the env itself come from the searchable ones, so the
        step path needs no such check (and no host synchronisation).
        """
        if not isinstance(options, Mapping) or options.get("image_index") is None:
            return  # no image asked for, or not a dict: reset() says so
        index = np.atleast_1d(np.asarray(options["image_index"]))
        searchable = set(self._searchable.tolist())
        bad = [int(i) for i in index if 0 <= int(i) < len(self.pool) and int(i) not in searchable]
        if bad:
            raise ValueError(
                f"options['image_index'] must name images with at least one object; {bad[:5]} have none"
            )

    def _goal_text(self, goal: list[int], captions: list[str]) -> dict[str, list[str]]:
        """``goal_name`` and ``goal_caption`` of a batch of goals (the ``text_info=True`` infos)."""
        classes = self.pool.annotations.classes
        return {"goal_name": [classes[g] for g in goal], "goal_caption": captions}

    def _draw_goals(self, pool: Any, image: Tensor, key: Tensor, episode: Tensor) -> tuple[Tensor, Tensor]:
        """``(goal class, goal box index)`` of new episodes, from their reset draws."""
        ann = pool.annotations
        pick = sample_goal_boxes(ann, image, uniform(key, episode, RESET_STEP, 8)[:, 7])
        return ann.box_labels[image].gather(1, pick[:, None])[:, 0], pick


class ImageSearchEnv(_SearchSetup, ImageViewEnv):
    """Goal-conditioned visual search: move the view onto an object of the goal class.

    ## Description

    Each episode draws a scene and a goal object in it (a uniformly drawn
    object box). The agent moves a view, starting from a small random crop,
    until the view frames an object of the goal class (``goal_mode="class"``)
    or the very object a caption describes (``goal_mode="caption"``).

    ## Action Space

    As ``ImageView-v0`` (``ImageViewDiscrete-v0`` for the discrete variant),
    with no augmentation by default (``augmentations=()``): pan x/y, log-zoom,
    log-aspect.

    ## Observation Space

    ``Dict(view=Box(0, 255, (S, S, 3), uint8), goal=..., box=Box(0, 1, (4,), float32))``:
    the view, the goal and where the view is (its normalised box, as a
    searcher knows where it looks). The goal is ``Discrete(K)``, a class
    index of the source's ``K`` classes, or with ``goal_mode="caption"``
    ``Box(0, 255, (64,), uint8)``, the UTF-8 bytes of a caption of the goal
    object padded with 0 (:func:`encode_caption`; ``info["goal_caption"]``
    has the text). On the embedded scenes the caption is the object's part of
    the scene caption (``"a small blue digit 3 in the centre"``); elsewhere
    ``"a <class> <position>"`` (:func:`goal_phrase`).

    ## Rewards

    Built on the IoU between the view and the goal (``info["iou"]``, in ``[0,
    1]``): the best IoU with a box of the goal class, or with the described
    box in caption mode. Each step earns the change in that IoU (potential-
    based shaping, so it does not change which policies are optimal), and
    finding the object earns :data:`~vpt_env.envs.search_task.SUCCESS_BONUS` (1) and ends the episode;
    an episode's return is ``iou_end - iou_start`` plus the bonus. IoU rather
    than coverage alone: a view of the whole image covers every object, so
    coverage would reward zooming out; IoU is high only when the object fills
    the view. (A per-step IoU reward would pay the agent to hover near the
    object instead of finding it.)

    ## Starting State

    A random scene that has at least one object, a goal drawn from its
    objects, a RandomResizedCrop box with area in ``init_scale`` (default
    ``(0.02, 0.1)`` of the image) and identity augmentation.

    ## Episode End

    Terminates when the IoU reaches ``found_iou`` (default 0.5: the object is
    found); truncated after ``max_episode_steps`` (50 at registration).

    ## Arguments

    ``source`` (default: 2,000 embedded scenes, ``SceneSource(n_images=2000)``;
    any source with object boxes works), ``found_iou``, ``goal_mode``
    (``"class"`` or ``"caption"``), ``text_info`` (add the goal's text to
    ``info``, see below), and every argument of ``ImageView-v0``
    except ``reward`` and ``obs_mode``. ``gym.make_vec("ImageSearch-v0",
    num_envs=N, vectorization_mode="vector_entry_point")`` gives the batched
    :class:`ImageSearchVectorEnv`.

    ``info`` adds ``goal``, ``iou`` and ``is_success`` and, with
    ``text_info=True``, ``goal_name`` (the goal's class name) and
    ``goal_caption`` (its caption, as in caption mode). Text is off by default:
    string values in ``info`` break TorchRL's readers of batched infos
    (``GymEnv(id, num_envs=...)``); ``obs["goal"]`` holds the caption's bytes
    in caption mode.

    ## Version History

    * v0: initial release.

    Example:
        >>> import gymnasium as gym
        >>> import vpt_env
        >>> from vpt_env.data.scenes import SceneSource
        >>> env = gym.make("ImageSearch-v0", source=SceneSource(n_images=50))
        >>> obs, info = env.reset(seed=0)
        >>> sorted(obs), obs["view"].shape
        (['box', 'goal', 'view'], (64, 64, 3))
        >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        >>> -1.0 <= reward <= 2.0
        True
    """

    own_kwargs: ClassVar[tuple[str, ...]] = SEARCH_KWARGS

    def __init__(
        self,
        source: Any = None,
        *,
        found_iou: float = 0.5,
        goal_mode: str = "class",
        text_info: bool = False,
        **kwargs: Any,
    ) -> None:
        source = self._search_kwargs(source, found_iou, goal_mode, text_info, kwargs)
        super().__init__(source, reward="zero", obs_mode="view", **kwargs)
        self.observation_space = self._search_setup(self.pool, self.observation_space)
        self._goal: Tensor | None = None
        self._goal_box = torch.zeros(1, dtype=torch.int64)
        self._last = torch.zeros(1)
        self._caption = ""

    def _reset_images(self, key: Tensor, episode: Tensor) -> Tensor | None:
        return search_images(self._searchable, key, episode)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Start an episode on a random scene with an object (``options={"image_index": i}`` picks one)."""
        self._check_image_option(options)
        obs, info = super().reset(seed=seed, options=options)
        st = self._state
        assert st is not None
        self._goal, self._goal_box = self._draw_goals(self.pool, st.image, st.key, st.episode)
        self._caption = goal_phrase(self.pool.annotations, int(st.image[0]), int(self._goal_box[0]))
        self._last = self._score()
        return self._search_obs(obs), self._search_info(info, self._last)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """Move the view; reward is the change in IoU with the goal, plus 1 when found (which ends it)."""
        if self._goal is None:
            raise ResetNeeded("Cannot call env.step() before calling env.reset()")
        obs, _, _, truncated, info = super().step(action)
        score = self._score()
        reward, found = search_reward(score, self._last, self.found_iou)
        self._last = score
        info = self._search_info(info, score)
        return self._search_obs(obs), float(reward[0]), bool(found[0]), truncated, info

    def _score(self) -> Tensor:
        assert self._state is not None and self._goal is not None
        return goal_score(self.pool.annotations, self._state, self._goal, self._goal_box, self.goal_mode)

    def _search_obs(self, view: np.ndarray) -> dict[str, Any]:
        assert self._goal is not None and self._state is not None
        goal: Any = int(self._goal[0]) if self.goal_mode == "class" else encode_caption(self._caption)
        return {"view": view, "goal": goal, "box": self._state.box[0].cpu().numpy().astype(np.float32)}

    def _search_info(self, info: dict[str, Any], score: Tensor) -> dict[str, Any]:
        assert self._goal is not None
        goal = int(self._goal[0])
        out = {**info, "goal": goal, "iou": float(score[0]), "is_success": bool(score[0] >= self.found_iou)}
        if self.text_info:
            out.update({k: v[0] for k, v in self._goal_text([goal], [self._caption]).items()})
        return out


class ImageSearchDiscreteEnv(ImageSearchEnv):
    """``ImageSearchDiscrete-v0``: ``ImageSearch-v0`` with ``ImageViewDiscrete-v0``'s discrete actions."""

    discrete: ClassVar[bool] = True


class ImageSearchVectorEnv(_SearchSetup, ImageViewVectorEnv):
    """``N`` search envs in one batch: the vector entry point of ``ImageSearch-v0``.

    The same pure functions as :class:`ImageSearchEnv` at batch ``N``: ``N``
    single envs seeded ``seed, seed + 1, ...`` and one vector env reset with
    ``seed`` draw the same scenes and goals and earn the same rewards.
    Observations are ``{"view": (N, S, S, 3), "goal": (N,) or (N, 64), "box": (N, 4)}``
    (tensors on ``device``, or numpy with ``array="numpy"``); ``infos`` adds
    ``goal``, ``iou`` and ``is_success`` (and with ``text_info=True``
    ``goal_name`` and ``goal_caption``, object arrays of strings, built on the
    host after every reset) with their ``_key`` masks. Autoreset and every other argument as
    :class:`~vpt_env.envs.vector.ImageViewVectorEnv`.

    Example:
        >>> import gymnasium as gym, vpt_env
        >>> from vpt_env.data.scenes import SceneSource
        >>> envs = gym.make_vec("ImageSearch-v0", num_envs=8, vectorization_mode="vector_entry_point",
        ...                     source=SceneSource(n_images=50))
        >>> obs, info = envs.reset(seed=0)
        >>> tuple(obs["view"].shape), tuple(obs["goal"].shape)
        ((8, 64, 64, 3), (8,))
    """

    own_kwargs: ClassVar[tuple[str, ...]] = (*ImageViewVectorEnv.own_kwargs, *SEARCH_KWARGS)

    def __init__(
        self,
        num_envs: int = 1,
        source: Any = None,
        *,
        found_iou: float = 0.5,
        goal_mode: str = "class",
        text_info: bool = False,
        max_episode_steps: int | None = 50,
        **kwargs: Any,
    ) -> None:
        source = self._search_kwargs(source, found_iou, goal_mode, text_info, kwargs)
        super().__init__(
            num_envs, source, reward="zero", obs_mode="view", max_episode_steps=max_episode_steps, **kwargs
        )
        self.single_observation_space = self._search_setup(self.pool, self.single_observation_space)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        dev = self.device
        self._goal = torch.zeros(num_envs, dtype=torch.int64, device=dev)
        self._goal_box = torch.zeros(num_envs, dtype=torch.int64, device=dev)
        self._last = torch.zeros(num_envs, device=dev)
        self._found = torch.zeros(num_envs, dtype=torch.bool, device=dev)
        self._captions = [""] * num_envs
        self._caption_bytes = torch.zeros(num_envs, CAPTION_BYTES, dtype=torch.uint8, device=dev)

    def _reset_images(self, key: Tensor, episode: Tensor) -> Tensor | None:
        return search_images(self._searchable, key, episode)

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """As :meth:`ImageViewVectorEnv.reset`; ``options["image_index"]`` must name scenes with objects."""
        self._check_image_option(options)
        return super().reset(seed=seed, options=options)

    def _on_reset(self, mask: Tensor) -> None:
        st = self._state
        assert st is not None
        goal, pick = self._draw_goals(self.pool, st.image, st.key, st.episode)
        self._goal = torch.where(mask, goal, self._goal)
        self._goal_box = torch.where(mask, pick, self._goal_box)
        self._last = torch.where(mask, self._score(), self._last)
        self._found = self._found & ~mask
        if self.goal_mode == "caption" or self.text_info:
            ann = self.pool.annotations
            for i in torch.nonzero(mask).flatten().tolist():
                self._captions[i] = goal_phrase(ann, int(st.image[i]), int(self._goal_box[i]))
                self._caption_bytes[i] = torch.from_numpy(encode_caption(self._captions[i]))

    def _score(self) -> Tensor:
        assert self._state is not None
        return goal_score(self.pool.annotations, self._state, self._goal, self._goal_box, self.goal_mode)

    def _reward(self) -> Tensor:
        score = self._score()
        reward, self._found = search_reward(score, self._last, self.found_iou)
        self._last = score
        return reward

    def _terminated(self) -> Tensor:
        return self._found

    def _observation(self) -> Any:
        assert self._state is not None
        goal = self._goal if self.goal_mode == "class" else self._caption_bytes
        return {"view": super()._observation(), "goal": self._out(goal), "box": self._out(self._state.box)}

    def _info(self) -> dict[str, Any]:
        info = super()._info()
        mask = self._out(torch.ones(self.num_envs, dtype=torch.bool, device=self.device))
        extra: dict[str, Any] = {
            "goal": self._out(self._goal),
            "iou": self._out(self._last),
            "is_success": self._out(self._last >= self.found_iou),
        }
        if self.text_info:
            text = self._goal_text(self._goal.tolist(), self._captions)
            extra.update({k: np.array(v, dtype=object) for k, v in text.items()})
        for k, v in extra.items():
            info[k] = v
            info[f"_{k}"] = mask
        return info


class ImageSearchDiscreteVectorEnv(ImageSearchVectorEnv):
    """The vector entry point of ``ImageSearchDiscrete-v0``: ``MultiDiscrete([9] * N)`` actions."""

    discrete: ClassVar[bool] = True
