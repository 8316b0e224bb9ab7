"""``ImageViewVectorEnv``: the stateful shell that steps a batch of ``N`` envs of a task as one.

The shell holds the state (random streams, view state, the task's memo, autoreset flags) and
speaks Gymnasium's vector API; everything that makes one environment differ from another is its
:class:`~vpt_env.envs.task.Task` (``ViewTask`` here, ``SearchTask`` for the search envs). The
single envs are this shell at a batch of one (:mod:`vpt_env.envs.image_view`).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
from gymnasium.error import ResetNeeded
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from torch import Tensor

from vpt_env.core.dynamics import reset_state
from vpt_env.core.random import seed_key
from vpt_env.core.render import render, render_nearest_uint8
from vpt_env.core.state import EnvParams, ViewState
from vpt_env.data.pool import check_device
from vpt_env.data.sources import MAX_IMAGE_SIDE
from vpt_env.envs.arguments import build_pool, make_observation_space, reset_options, resolve_params
from vpt_env.envs.task import Views, ViewTask, where_state

__all__ = ["ImageViewDiscreteVectorEnv", "ImageViewVectorEnv", "ViewsFromState"]

OBS_FORMATS = ("uint8", "float")
ARRAY_TYPES = ("torch", "numpy")
_AUTORESET = {
    "next_step": AutoresetMode.NEXT_STEP,
    "same_step": AutoresetMode.SAME_STEP,
    "disabled": AutoresetMode.DISABLED,
}


class ViewsFromState:
    """Pickling of an env whose rendered views are a cache of its state.

    The views are rendered again on unpickling (``_render_views``) instead of
    travelling with the env; with the pool pickled as its source
    (:meth:`~vpt_env.data.pool.ImagePool.__getstate__`), an env built from a
    name or a path pickles in kilobytes and continues its episode identically.
    """

    #: Attributes that hold rendered views.
    _view_caches: ClassVar[tuple[str, ...]] = ("_views",)
    _state: ViewState | None

    def _render_views(self) -> None:
        raise NotImplementedError

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, **dict.fromkeys(self._view_caches)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self._state is not None:
            self._render_views()


class ImageViewVectorEnv(ViewsFromState, VectorEnv):
    """``num_envs`` image-view envs in one batch: the vector entry point of ``ImageView-v0``.

    Every env's transition, render and reward is one batched call of the core
    that the single env uses with a batch of one, so ``N`` single envs seeded
    ``seed, seed + 1, ...`` and one vector env reset with ``seed`` step through
    identical states. Make it with::

        envs = gym.make_vec("ImageView-v0", num_envs=256, vectorization_mode="vector_entry_point")

    Args:
        num_envs: number of envs ``N``.
        source, reward, target, reward_kwargs, obs_mode, render_mode, params,
            max_image_side, strict, device, max_pool_bytes: as for ``ImageView-v0``; every
            EnvParams field may also be given as a keyword. ``source`` may be
            a ready :class:`~vpt_env.data.pool.ImagePool`.
        max_episode_steps: truncation after this many steps (100 at registration).
        obs_format: ``"uint8"`` views ``(N, S, S, 3)`` (default) or
            ``"float"`` views ``(N, 3, S, S)`` in ``[0, 1]``.
        array: ``"torch"`` (default): observations, rewards, flags and infos
            are tensors on ``device``; ``"numpy"``: numpy arrays, as
            Gymnasium's own vector envs return.
        autoreset_mode: ``"next_step"`` (Gymnasium's default: the step after
            an episode ends resets that env, ignoring its action and returning
            reward 0 and no flags), ``"same_step"`` (the env resets within
            the step that ends it; the last observation and info go to
            ``infos["final_obs"]`` and ``infos["final_info"]``, with the mask
            ``infos["_final_obs"]``) or ``"disabled"`` (no env resets by
            itself: call ``reset(options={"reset_mask": ended})`` before the
            next step; stepping an ended env raises ``ResetNeeded``, which
            TorchRL prefers). Also an :class:`~gymnasium.vector.AutoresetMode`;
            the env's :attr:`autoreset_mode` attribute and
            ``metadata["autoreset_mode"]`` hold it, as on Gymnasium's vector envs.
        validate: check actions (NaN/inf, id range) and rewards (finite). On an
            accelerator each check reads one flag back to the host; pass False
            for a step path with no synchronisation.

    Observations follow ``observation_space`` (a batched version of
    ``single_observation_space``); with ``array="torch"`` they are tensors of
    the same shapes and dtypes. ``infos`` carries ``image_index`` ``(N,)``,
    ``box`` ``(N, 4)``, ``aug`` ``(N, 7)`` and, for annotated sources,
    ``cumulant`` ``(N, K)`` and, for a reward with a vector cumulant,
    ``reward_cumulant``, each with its Gymnasium ``_key`` mask.
    """

    metadata: ClassVar[dict[str, Any]] = {
        "render_modes": ["rgb_array"],
        "autoreset_mode": AutoresetMode.NEXT_STEP,
    }
    discrete: ClassVar[bool] = False
    #: The task this shell steps.
    task_class: ClassVar[type[ViewTask]] = ViewTask
    #: Keywords of this class beyond the common ones (listed when an unknown one is refused).
    own_kwargs: ClassVar[tuple[str, ...]] = (
        "num_envs",
        "max_episode_steps",
        "obs_format",
        "array",
        "autoreset_mode",
        "validate",
    )

    def __init__(
        self,
        num_envs: int = 1,
        source: Any = None,
        *,
        reward: Any = "zero",
        target: int | str | None = None,
        reward_kwargs: dict[str, Any] | None = None,
        obs_mode: str = "view",
        render_mode: str | None = None,
        params: EnvParams | None = None,
        max_image_side: int = MAX_IMAGE_SIDE,
        strict: bool = False,
        device: str | torch.device = "cpu",
        max_pool_bytes: int | None = None,
        max_episode_steps: int | None = ViewTask.max_episode_steps,
        obs_format: str = "uint8",
        array: str = "torch",
        autoreset_mode: str | AutoresetMode = "next_step",
        validate: bool = True,
        **param_kwargs: Any,
    ) -> None:
        self.params = resolve_params(params, param_kwargs, self.own_kwargs, owner=type(self).__name__)
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        if max_episode_steps is not None and (
            isinstance(max_episode_steps, bool)
            or not isinstance(max_episode_steps, int)
            or max_episode_steps < 1
        ):
            raise ValueError(f"max_episode_steps must be a positive int or None, got {max_episode_steps!r}")
        if obs_format not in OBS_FORMATS:
            raise ValueError(f"obs_format must be one of {OBS_FORMATS}, got {obs_format!r}")
        if array not in ARRAY_TYPES:
            raise ValueError(f"array must be one of {ARRAY_TYPES}, got {array!r}")
        # Our names, or Gymnasium's enum or its values ("NextStep", ...).
        by_value = {m.value: name for name, m in _AUTORESET.items()}
        if isinstance(autoreset_mode, AutoresetMode):
            autoreset_mode = autoreset_mode.value
        if isinstance(autoreset_mode, str):
            autoreset_mode = by_value.get(autoreset_mode, autoreset_mode)
        if autoreset_mode not in _AUTORESET:
            raise ValueError(f"autoreset_mode must be one of {tuple(_AUTORESET)}, got {autoreset_mode!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}"
            )
        self.autoreset_mode = _AUTORESET[autoreset_mode]
        self.metadata = {**type(self).metadata, "autoreset_mode": self.autoreset_mode}
        self.num_envs = num_envs
        self.device = check_device(device)
        self.obs_mode = obs_mode
        self.obs_format = obs_format
        self.array = array
        self.render_mode = render_mode
        self.max_episode_steps = max_episode_steps
        self.validate = validate
        self.pool, self.reward_fn, self.params = build_pool(
            source,
            self.params,
            reward=reward,
            target=target,
            reward_kwargs=reward_kwargs,
            obs_mode=obs_mode,
            max_image_side=max_image_side,
            strict=strict,
            device=self.device,
            max_pool_bytes=max_pool_bytes,
        )
        self.task = self.task_class(
            self.pool, self.params, self.reward_fn, obs_mode, self.discrete, **self._task_kwargs
        )
        view_space = make_observation_space(self.params, "view", channels_first_float=obs_format == "float")
        self.single_observation_space = self.task.observation_space(view_space)
        self.actions = self.task.actions
        self.single_action_space = self.actions.space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._state: ViewState | None = None
        self._memo: Any = None  # the task's own per-env values (the search goal)
        self._views: Views | None = None
        self._autoreset = torch.zeros(num_envs, dtype=torch.bool, device=self.device)

    #: The task's own keywords (set by a task's shell, e.g. the search envs, before ``__init__``).
    _task_kwargs: ClassVar[dict[str, Any]] = {}

    # -- Gymnasium API ----------------------------------------------------------

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Reset every env, or those in ``options["reset_mask"]``.

        ``seed``: an int seeds env ``i`` with ``seed + i`` (as Gymnasium's vector
        envs do, so single envs seeded alike match); a list gives one seed (or
        None) per env. ``options``: ``reset_mask`` (bool ``(N,)``) resets only
        those envs; ``image_index`` (int ``(N,)``) picks each env's image.
        """
        n = self.num_envs
        self.task.check_options(options)
        options = reset_options(options, ("image_index", "reset_mask"))
        mask = options.get("reset_mask")
        image_index = options.get("image_index")
        if isinstance(seed, int) and not isinstance(seed, bool):
            super().reset(seed=seed)
            seeds: list[int | None] = [seed + i for i in range(n)]
        elif seed is None:
            seeds = [None] * n
        elif isinstance(seed, list | tuple) and len(seed) == n:
            seeds = list(seed)
        else:
            raise ValueError(f"seed must be None, an int or a list of {n} ints/None, got {seed!r}")
        if mask is None:
            mask_t = torch.ones(n, dtype=torch.bool, device=self.device)
        else:
            mask_t = torch.as_tensor(
                np.asarray(mask.cpu() if isinstance(mask, Tensor) else mask), device=self.device
            )
            if mask_t.shape != (n,) or mask_t.dtype != torch.bool:
                raise ValueError(f"options['reset_mask'] must be a bool array of shape ({n},)")
        if self._state is None and not bool(mask_t.all()):
            raise ResetNeeded("the first reset() must reset every env (no reset_mask)")
        keys, episodes = self._next_streams(seeds)
        image = None
        if image_index is not None:
            image = torch.as_tensor(np.asarray(image_index), dtype=torch.int64, device=self.device)
            if image.shape != (n,) or not bool(((image >= 0) & (image < len(self.pool))).all()):
                raise ValueError(f"options['image_index'] must hold {n} ints in [0, {len(self.pool)})")
        if image is None:
            image = self.task.reset_images(keys, episodes)
        fresh = reset_state(self.params, self.pool.image_hw, keys, episodes, image)
        self._state = where_state(mask_t, fresh, self._state)
        self._autoreset = self._autoreset & ~mask_t
        self._render_views()
        self._memo = self.task.start(self._state, self._views, mask_t, self._memo)
        return self._observation(), self._info()

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """Step every env; returns ``(obs, rewards, terminations, truncations, infos)``."""
        if self._state is None:
            raise ResetNeeded("Cannot call step() before calling reset()")
        mode = self.autoreset_mode
        if mode == AutoresetMode.DISABLED and self.validate and bool(self._autoreset.any()):
            ended = self._autoreset.nonzero().flatten().tolist()
            raise ResetNeeded(
                f"env(s) {ended} ended and autoreset_mode is 'disabled': reset them first, "
                "with reset(options={'reset_mask': mask})"
            )
        state = self._state
        nxt = self.task.transition(state, actions, self.validate)
        if mode == AutoresetMode.NEXT_STEP:
            resetting = self._autoreset
            self._state = where_state(resetting, self._fresh(state), nxt)
            self._render_views()
            self._memo = self.task.start(self._state, self._views, resetting, self._memo)
            rewards, terminated = self._reward()
            rewards = torch.where(resetting, 0.0, rewards)
            terminated = terminated & ~resetting
            truncated = self._truncated() & ~resetting
            self._autoreset = terminated | truncated
            return (
                self._observation(),
                self._out(rewards),
                self._out(terminated),
                self._out(truncated),
                self._info(),
            )
        # SAME_STEP and DISABLED: finish the step; SAME_STEP then resets the envs that ended within it.
        self._state = nxt
        self._render_views()
        rewards, terminated = self._reward()
        truncated = self._truncated()
        done = terminated | truncated
        infos = self._info()
        if mode == AutoresetMode.DISABLED:
            self._autoreset = done
        elif bool(done.any()):
            final_obs, final_info = self._observation(), infos
            self._state = where_state(done, self._fresh(state), nxt)
            self._render_views()
            self._memo = self.task.start(self._state, self._views, done, self._memo)
            infos = self._info()
            infos["final_obs"] = final_obs
            infos["final_info"] = final_info
            infos["_final_obs"] = self._out(done)
            infos["_final_info"] = self._out(done)
        return self._observation(), self._out(rewards), self._out(terminated), self._out(truncated), infos

    def step_batch(self, actions: Any) -> tuple[Tensor, Tensor]:
        """Move every env, with no autoreset and no truncation: ``(rewards, terminated)`` tensors.

        The single envs' step (this shell at a batch of one, which never resets by itself).
        """
        if self._state is None:
            raise ResetNeeded("Cannot call step() before calling reset()")
        self._state = self.task.transition(self._state, actions, self.validate)
        self._render_views()
        return self._reward()

    def _fresh(self, state: ViewState) -> ViewState:
        """The first state of every env's next episode (of its random stream)."""
        episode = state.episode + 1
        return reset_state(
            self.params, self.pool.image_hw, state.key, episode, self.task.reset_images(state.key, episode)
        )

    def render(self) -> np.ndarray | None:  # type: ignore[override]
        """A grid of the current views (at most 64), uint8 ``(H, W, 3)``."""
        if self.render_mode is None:
            return None
        if self._state is None:
            raise ResetNeeded("Cannot call render() before calling reset()")
        assert self._views is not None
        views = self._views.uint8[:64].cpu().numpy()
        k, s = views.shape[0], views.shape[1]
        cols = math.ceil(math.sqrt(k))
        rows = math.ceil(k / cols)
        grid = np.full((rows * (s + 2) + 2, cols * (s + 2) + 2, 3), 32, np.uint8)
        for i, v in enumerate(views):
            r, c = divmod(i, cols)
            grid[2 + r * (s + 2) : 2 + r * (s + 2) + s, 2 + c * (s + 2) : 2 + c * (s + 2) + s] = v
        return grid

    def close(self, **kwargs: Any) -> None:
        """Nothing to release: the pool is freed with the env."""
        self.closed = True

    @property
    def state(self) -> ViewState | None:
        """The current batched :class:`ViewState` (None before reset)."""
        return self._state

    # -- helpers ------------------------------------------------------------------

    def _next_streams(self, seeds: list[int | None]) -> tuple[Tensor, Tensor]:
        keys, episodes = [], []
        for sd in seeds:
            if sd is not None:
                keys.append(seed_key(sd))
                episodes.append(0)
            elif self._state is not None:
                keys.append(None)
                episodes.append(None)
            else:
                keys.append(seed_key(int(self.np_random.integers(0, 2**63 - 1))))
                episodes.append(0)
        if self._state is not None:
            old_k = self._state.key.tolist()
            old_e = self._state.episode.tolist()
            keys = [old_k[i] if k is None else k for i, k in enumerate(keys)]
            episodes = [old_e[i] + 1 if e is None else e for i, e in enumerate(episodes)]
        return (
            torch.tensor(keys, dtype=torch.int64, device=self.device),
            torch.tensor(episodes, dtype=torch.int64, device=self.device),
        )

    def _fast_nearest(self) -> bool:
        return (
            self.params.interpolation == "nearest"
            and not self.params.has_pixel_augmentation
            and self.obs_format == "uint8"
        )

    def _render_views(self) -> None:
        st = self._state
        assert st is not None
        if self._fast_nearest():
            u8 = render_nearest_uint8(self.pool, st.image, st.box, self.params.view_size, st.aug[:, 5])
            self._views = Views(uint8_views=u8)
        else:
            self._views = Views(float_views=render(self.pool, st, self.params))

    def _reward(self) -> tuple[Tensor, Tensor]:
        assert self._state is not None and self._views is not None
        rewards, terminated, self._memo = self.task.reward(
            self._state, self._views, self._memo, self.validate
        )
        return rewards, terminated

    def _truncated(self) -> Tensor:
        assert self._state is not None
        if self.max_episode_steps is None:
            return torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        return self._state.t >= self.max_episode_steps

    def _out(self, x: Any) -> Any:
        return x.cpu().numpy() if self.array == "numpy" and isinstance(x, Tensor) else x

    def _observation(self) -> Any:
        assert self._state is not None and self._views is not None
        view = self._views.uint8 if self.obs_format == "uint8" else self._views.float
        obs = self.task.observation(view, self._state, self._memo)
        return {k: self._out(v) for k, v in obs.items()} if isinstance(obs, dict) else self._out(obs)

    def _info(self, masks: bool = True) -> dict[str, Any]:
        """The infos, with Gymnasium's ``_key`` masks unless ``masks`` is False (the single envs)."""
        assert self._state is not None and self._views is not None
        values = self.task.info(self._state, self._views, self._memo)
        if not masks:
            return {k: self._out(v) for k, v in values.items()}
        mask = self._out(torch.ones(self.num_envs, dtype=torch.bool, device=self.device))
        info: dict[str, Any] = {}
        for k, v in values.items():
            info[k] = self._out(v)
            info[f"_{k}"] = mask
        return info


class ImageViewDiscreteVectorEnv(ImageViewVectorEnv):
    """The vector entry point of ``ImageViewDiscrete-v0``: ``MultiDiscrete([9] * N)`` actions."""

    discrete: ClassVar[bool] = True
