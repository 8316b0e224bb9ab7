"""``ImageSearch-v0`` and ``ImageSearchDiscrete-v0``: find an object of a goal class in a scene.

The task is :class:`~vpt_env.envs.search_task.SearchTask` (with its pure batched functions,
re-exported here); these classes are the two shells over it with the search envs' arguments.
"""

from __future__ import annotations

from typing import Any, ClassVar

from vpt_env.envs.image_view import ImageViewEnv, shell_attribute
from vpt_env.envs.search_task import (
    DEFAULT_SCENES,
    GOAL_MODES,
    SEARCH_KWARGS,
    SearchTask,
    encode_caption,
    goal_iou,
    goal_phrase,
    sample_goal_boxes,
    sample_goals,
    search_images,
    search_reward,
)
from vpt_env.envs.vector import ImageViewVectorEnv

__all__ = [
    "DEFAULT_SCENES",
    "GOAL_MODES",
    "ImageSearchDiscreteEnv",
    "ImageSearchDiscreteVectorEnv",
    "ImageSearchEnv",
    "ImageSearchVectorEnv",
    "SearchTask",
    "encode_caption",
    "goal_iou",
    "goal_phrase",
    "sample_goal_boxes",
    "sample_goals",
    "search_images",
    "search_reward",
]


class ImageSearchVectorEnv(ImageViewVectorEnv):
    """``N`` search envs in one batch: the vector entry point of ``ImageSearch-v0``.

    The vector shell over :class:`~vpt_env.envs.search_task.SearchTask`, as
    :class:`ImageSearchEnv` is at a batch of one: ``N`` single envs seeded ``seed, seed + 1,
    ...`` and one vector env reset with ``seed`` draw the same scenes and goals and earn the same
    rewards. Observations are ``{"view": (N, S, S, 3), "goal": (N,) or (N, 64), "box": (N, 4)}``
    (tensors on ``device``, or numpy with ``array="numpy"``); ``infos`` adds ``goal``, ``iou`` and
    ``is_success`` (and with ``text_info=True`` ``goal_name`` and ``goal_caption``, object arrays
    of strings, built on the host after every reset) with their ``_key`` masks. Autoreset and
    every other argument as :class:`~vpt_env.envs.vector.ImageViewVectorEnv`.

    Example:
        >>> import gymnasium as gym, vpt_env
        >>> from vpt_env.data.scenes import SceneSource
        >>> envs = gym.make_vec("ImageSearch-v0", num_envs=8, vectorization_mode="vector_entry_point",
        ...                     source=SceneSource(n_images=50))
        >>> obs, info = envs.reset(seed=0)
        >>> tuple(obs["view"].shape), tuple(obs["goal"].shape)
        ((8, 64, 64, 3), (8,))
    """

    task_class: ClassVar[type[SearchTask]] = SearchTask
    own_kwargs: ClassVar[tuple[str, ...]] = (*ImageViewVectorEnv.own_kwargs, *SEARCH_KWARGS)

    def __init__(
        self,
        num_envs: int = 1,
        source: Any = None,
        *,
        found_iou: float = 0.5,
        goal_mode: str = "class",
        text_info: bool = False,
        max_episode_steps: int | None = SearchTask.max_episode_steps,
        **kwargs: Any,
    ) -> None:
        source = SearchTask.prepare(source, found_iou, goal_mode, text_info, kwargs)
        self._task_kwargs = {"found_iou": found_iou, "goal_mode": goal_mode, "text_info": text_info}
        super().__init__(num_envs, source, max_episode_steps=max_episode_steps, **kwargs)

    found_iou = property(lambda self: self.task.found_iou, doc="IoU with the goal at which it is found.")
    goal_mode = property(lambda self: self.task.goal_mode, doc='``"class"`` or ``"caption"``.')
    text_info = property(lambda self: self.task.text_info, doc="Whether infos hold the goal's text.")


class ImageSearchDiscreteVectorEnv(ImageSearchVectorEnv):
    """The vector entry point of ``ImageSearchDiscrete-v0``: ``MultiDiscrete([9] * N)`` actions."""

    discrete: ClassVar[bool] = True


class ImageSearchEnv(ImageViewEnv):
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

    vector_class: ClassVar[type[ImageViewVectorEnv]] = ImageSearchVectorEnv

    def __init__(
        self,
        source: Any = None,
        *,
        found_iou: float = 0.5,
        goal_mode: str = "class",
        text_info: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(source, found_iou=found_iou, goal_mode=goal_mode, text_info=text_info, **kwargs)

    found_iou = shell_attribute("found_iou", "IoU with the goal at which it is found.")
    goal_mode = shell_attribute("goal_mode", '``"class"`` or ``"caption"``.')
    text_info = shell_attribute("text_info", "Whether infos hold the goal's text.")


class ImageSearchDiscreteEnv(ImageSearchEnv):
    """``ImageSearchDiscrete-v0``: ``ImageSearch-v0`` with ``ImageViewDiscrete-v0``'s discrete actions."""

    vector_class: ClassVar[type[ImageViewVectorEnv]] = ImageSearchDiscreteVectorEnv
