"""``ImageView-v0`` and ``ImageViewDiscrete-v0``: one view of an image, moved by actions."""

from __future__ import annotations

import math
from typing import Any, ClassVar, SupportsFloat

import gymnasium as gym
import numpy as np
import torch
from gymnasium.error import ResetNeeded
from PIL import Image, ImageDraw

from vpt_env.core.state import ViewState
from vpt_env.data.pool import ImagePool
from vpt_env.envs.arguments import COMMON_KWARGS, refuse_unknown, reset_options
from vpt_env.envs.vector import ImageViewDiscreteVectorEnv, ImageViewVectorEnv

__all__ = ["ImageViewDiscreteEnv", "ImageViewEnv"]

#: Longest side of the frame returned by ``render()`` in ``"rgb_array"`` mode.
RENDER_SIDE = 512


def shell_attribute(name: str, doc: str) -> Any:
    """A read-only property reading the vector shell's attribute ``name``."""
    return property(lambda self: getattr(self._env, name), doc=doc)


class ImageViewEnv(gym.Env[Any, np.ndarray]):
    """A view of an image that actions pan, zoom, stretch and augment.

    ## Description

    The image-view MDP of visual pre-training as reinforcement learning: the
    state is an image, a box on it and the augmentation of the view; the
    observation is the view, ``aug(resize(crop(image, box), S x S))``; actions
    move the box relative to itself and set the next view's augmentation.
    Each episode starts on an image drawn uniformly from the source. Rewards
    come from the image's annotations (labels, object boxes) or any function.

    ## Action Space

    ``Box(-1, 1, (4 + A,), float32)``: pan x and pan y (in units of the
    current box's width/height, times ``max_pan``), log-zoom (positive zooms
    in: the box's sides shrink by ``exp(max_log_zoom * a)``), log-aspect
    (positive widens, times ``max_log_aspect``), then one entry per enabled
    augmentation (``augmentations``, default all of brightness, contrast,
    saturation, hue, grayscale, flip, blur), mapped affinely from ``[-1, 1]``
    onto its range; grayscale and flip are on when their entry is positive.
    On a video source (every image a frame of a clip, e.g.
    ``VideoFramesSource``) a last entry moves ``round(a * max_time_step)``
    frames in time within the clip (``max_time_step`` 4 by default).
    Finite actions outside ``[-1, 1]`` are clipped; NaN or infinite actions
    raise ``ValueError``.

    ## Observation Space

    ``obs_mode="view"`` (default): ``Box(0, 255, (S, S, 3), uint8)``, the view,
    ``S = view_size`` (default 64). ``obs_mode="dict"``: ``Dict(view=...,
    box=Box(0, 1, (4,), float32), aug=Box(low, high, (7,), float32))`` adding the
    normalised box ``(x0, y0, x1, y1)`` and the augmentation vector.

    ## Rewards

    ``reward="zero"`` (default) gives 0; ``"label"`` 1 when the image's label is
    ``target``; ``"coverage"`` the fraction of the ``target`` class's boxes
    inside the view; any :class:`~vpt_env.rewards.RewardFn` callable or
    ``"module:function"`` string is computed on the rendered next views.

    ## Starting State

    A uniformly drawn image (or ``options={"image_index": i}``), a
    RandomResizedCrop box (area fraction ``init_scale``, pixel aspect
    ``init_ratio``) and identity augmentation (random if ``random_initial_aug``).

    ## Episode End

    Never terminates; truncated by the ``TimeLimit`` wrapper after
    ``max_episode_steps`` (100 at registration).

    ## Arguments

    * ``source``: None (the embedded photos), an embedded dataset name, a
      folder, a sequence of arrays, or an ``ImageSource``.
    * ``reward``, ``target``, ``reward_kwargs``: the reward (see Rewards).
    * ``obs_mode``: ``"view"`` or ``"dict"``. ``render_mode``: None or ``"rgb_array"``.
    * ``params``: an :class:`~vpt_env.core.state.EnvParams`, or its fields as
      keywords (``view_size``, ``max_pan``, ``max_log_zoom``, ``max_log_aspect``,
      ``min_box_size``, ``max_aspect``, ``init_scale``, ``init_ratio``,
      ``augmentations``, ``aug_ranges``, ``random_initial_aug``, ``interpolation``).
    * ``max_image_side``: longer sides above this are downsampled on load (1024).
    * ``strict``: raise on the first unreadable image instead of skipping it.
    * ``max_pool_bytes``: memory cap of the image pool; a larger source is read
      lazily, a random part that fits (``env.unwrapped.pool.resample(seed)``
      swaps in another; reset afterwards). None (default): no cap.
    * ``device``: torch device of the image pool and the rendering (``"cpu"``).

    ``info`` holds ``image_index``, ``box``, ``aug`` and, when the source has
    an annotation space, ``cumulant``: the distribution over its classes met
    in the view (object classes weighted by the fraction of each box inside
    the view; all zeros when none is). When the reward exposes a vector
    cumulant (``reward.cumulant``, e.g. ``teacher_prob``), ``info`` also holds
    it as ``reward_cumulant`` (computed each step, at about the reward's cost).

    ## Version History

    * v0: initial release.

    Example:
        >>> import gymnasium as gym
        >>> import vpt_env
        >>> env = gym.make("ImageView-v0", reward="coverage", target="cat")
        >>> obs, info = env.reset(seed=0)
        >>> obs.shape, obs.dtype
        ((64, 64, 3), dtype('uint8'))
        >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        >>> 0.0 <= reward <= 1.0, sorted(info)
        (True, ['aug', 'box', 'cumulant', 'image_index'])
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 4}
    #: The vector shell this env is at a batch of one.
    vector_class: ClassVar[type[ImageViewVectorEnv]] = ImageViewVectorEnv

    def __init__(
        self,
        source: Any = None,
        *,
        render_mode: str | None = None,
        **kwargs: Any,
    ) -> None:
        own = self.vector_class.task_class.own_kwargs
        # The vector shell's own keywords (num_envs, array, ...) are not the single env's.
        refuse_unknown(
            [k for k in kwargs if k not in COMMON_KWARGS and k not in own], own, type(self).__name__
        )
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}"
            )
        self.render_mode = render_mode
        self._env = self.vector_class(1, source, max_episode_steps=None, array="numpy", **kwargs)
        self.observation_space = self._env.single_observation_space
        self.action_space = self._env.single_action_space
        self._started = False

    # What the shell holds, read through (``env.unwrapped.pool`` etc., as before the task split).
    #: Whether the actions are discrete ids (the vector shell's, set for every subclass).
    discrete: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.discrete = cls.vector_class.discrete
    task = shell_attribute("task", "The task this env steps (a :class:`~vpt_env.envs.task.ViewTask`).")
    pool = shell_attribute("pool", "The images (an :class:`~vpt_env.data.pool.ImagePool`).")
    params = shell_attribute("params", "The env parameters (:class:`~vpt_env.core.state.EnvParams`).")
    reward_fn = shell_attribute("reward_fn", "The reward function.")
    actions = shell_attribute("actions", "The action space and the map from raw actions to the next state.")
    device = shell_attribute("device", "Torch device of the pool and the rendering.")
    obs_mode = shell_attribute("obs_mode", '``"view"`` or ``"dict"``.')

    def _batch_of_one(self, action: Any) -> Any:
        if isinstance(action, torch.Tensor):
            action = action.detach().cpu().numpy()
        arr = np.asarray(action)
        shape = () if self.discrete else self.action_space.shape
        if arr.shape != shape:
            kind = "a single integer id" if self.discrete else f"shape {shape}"
            raise ValueError(f"action must be {kind}, got {action!r}")
        return arr[None]

    # -- Gymnasium API ----------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Start an episode on a random image (``options={"image_index": i}`` picks one)."""
        super().reset(seed=seed)
        self.task.check_options(options)
        image_index = reset_options(options, ("image_index",)).get("image_index")
        n = len(self.pool)
        if image_index is not None:
            if isinstance(image_index, bool) or not isinstance(image_index, int | np.integer):
                raise TypeError(f"options['image_index'] must be an int, got {type(image_index).__name__}")
            if not 0 <= int(image_index) < n:
                raise ValueError(f"options['image_index'] must be in [0, {n}), got {image_index}")
        # The seed is the core's random stream key (a vector env gives env i the key seed + i, so
        # the two agree); without one, the key comes from np_random, which Gymnasium seeds from OS
        # entropy. Each later reset starts the next episode of the same stream.
        stream: int | None = None
        if seed is not None or not self._started:
            stream = seed if seed is not None else int(self.np_random.integers(0, 2**63 - 1))
        opts = None if image_index is None else {"image_index": [int(image_index)]}
        obs, info = self._env.reset(seed=[stream], options=opts)
        self._started = True
        return _first(obs), _first(info)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """Move the view; returns ``(obs, reward, terminated, truncated, info)``."""
        if not self._started:
            raise ResetNeeded("Cannot call env.step() before calling env.reset()")
        reward, terminated = self._env.step_batch(self._batch_of_one(action))
        return (
            _first(self._env._observation()),
            float(reward),  # a batch of one: its only value
            bool(terminated),
            False,
            _first(self._env._info(masks=False)),
        )

    def render(self) -> np.ndarray | None:  # type: ignore[override]
        """The whole image with the current view's box drawn (``"rgb_array"`` mode)."""
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='rgb_array'")
            return None
        state = self.state
        if state is None:
            raise ResetNeeded("Cannot call env.render() before calling env.reset()")
        return draw_box(self.pool, int(state.image[0]), state.box[0].tolist())

    @property
    def state(self) -> ViewState | None:
        """The current batch-of-one :class:`ViewState` (None before reset)."""
        return self._env.state

    @state.setter
    def state(self, state: ViewState) -> None:
        """Move the env to another state (tests, demos); the views are rendered on the next step."""
        self._env._state = state


def _first(x: Any) -> Any:
    """Env 0 of a batched numpy value, as its own copy (a dict: without Gymnasium's ``_key`` masks)."""
    if isinstance(x, dict):
        return {k: _first(v) for k, v in x.items() if not k.startswith("_")}
    item = x[0]
    if isinstance(item, np.generic):
        return item.item()
    return item.copy() if isinstance(item, np.ndarray) else item


class ImageViewDiscreteEnv(ImageViewEnv):
    """``ImageView-v0`` with a small discrete action set (``ImageViewDiscrete-v0``).

    ## Action Space

    ``Discrete(9)``: 0 no-op, 1 pan left, 2 pan right, 3 pan up, 4 pan down
    (each by ``max_pan`` box sides), 5 zoom in, 6 zoom out (by
    ``exp(max_log_zoom)``), 7 toggle the horizontal flip, 8 draw a new random
    augmentation. Each id maps onto a vector of ``ImageView-v0``'s continuous
    action space (:func:`vpt_env.core.dynamics.discrete_to_action`), so both
    envs share one transition; augmentations not changed by the action keep
    their current value. On a video source ids 9 and 10 move one frame
    earlier or later in the clip (``Discrete(11)``). Other ids raise
    ``ValueError``.

    Everything else (observations, rewards, arguments, episode end) is as in
    :class:`ImageViewEnv`.

    Example:
        >>> import gymnasium as gym
        >>> import vpt_env
        >>> env = gym.make("ImageViewDiscrete-v0")
        >>> obs, info = env.reset(seed=0)
        >>> box0 = info["box"]
        >>> obs, reward, terminated, truncated, info = env.step(5)  # zoom in
        >>> bool((info["box"][2] - info["box"][0]) < (box0[2] - box0[0]))
        True
    """

    vector_class: ClassVar[type[ImageViewVectorEnv]] = ImageViewDiscreteVectorEnv


def draw_box(pool: ImagePool, image: int, box: list[float], side: int = RENDER_SIDE) -> np.ndarray:
    """The image (longer side at most ``side``) with a normalised box outlined in red."""
    h, w = (int(v) for v in pool.image_hw[image])
    level = max(0, math.ceil(math.log2(max(h, w) / side))) if max(h, w) > side else 0
    frame = Image.fromarray(pool.image(image, level))
    if max(frame.size) > side:
        scale = side / max(frame.size)
        frame = frame.resize((max(1, round(frame.width * scale)), max(1, round(frame.height * scale))))
    fw, fh = frame.size
    x0, y0, x1, y1 = box
    width = max(2, round(max(fw, fh) / 128))
    ImageDraw.Draw(frame).rectangle(
        (x0 * fw, y0 * fh, x1 * fw - 1, y1 * fh - 1), outline=(255, 0, 0), width=width
    )
    return np.asarray(frame)
