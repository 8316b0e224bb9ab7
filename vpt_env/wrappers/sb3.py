"""A stable-baselines3 ``VecEnv`` over :class:`~vpt_env.envs.vector.ImageViewVectorEnv`.

SB3 resets an env within the step that ends its episode and hands the last
observation over in ``infos[i]["terminal_observation"]``, with
``infos[i]["TimeLimit.truncated"]`` telling truncation from termination; the
bridge runs the vector env in ``"same_step"`` autoreset mode with numpy arrays
and translates. Everything is still stepped as one batch. Dict observations
(``ImageSearch-v0``'s view, goal and box) stay dicts of batched arrays, as
SB3's ``MultiInputPolicy`` takes them. Each env's info holds the
:data:`INFO_KEYS` the vector env has (``is_success``, ``iou``, ...), from
the episode's last step when it ended, as SB3's own vector envs do, so
``VecMonitor`` and SB3's success-rate logging see how the episode ended.

Example:
    >>> from stable_baselines3 import PPO
    >>> from vpt_env.wrappers import make_sb3_vec_env
    >>> venv = make_sb3_vec_env("ImageViewDiscrete-v0", num_envs=4, view_size=36)
    >>> model = PPO("CnnPolicy", venv, n_steps=16, batch_size=32, n_epochs=1, device="cpu")
    >>> _ = model.learn(total_timesteps=64)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn

from vpt_env.envs.vector import ImageViewVectorEnv

__all__ = ["INFO_KEYS", "SB3VecEnv", "make_sb3_vec_env"]

#: Per-env scalar infos the bridge hands to SB3 (when the vector env has them):
#: ``is_success`` is what SB3's ``Monitor``/``VecMonitor`` and ``EvalCallback`` read.
INFO_KEYS = ("image_index", "goal", "iou", "is_success")


class SB3VecEnv(VecEnv):
    """Expose an :class:`ImageViewVectorEnv` as a stable-baselines3 ``VecEnv``.

    Args:
        venv: a vector env made with ``array="numpy"`` and
            ``autoreset_mode="same_step"`` (see :func:`make_sb3_vec_env`).
    """

    def __init__(self, venv: ImageViewVectorEnv) -> None:
        if not isinstance(venv, ImageViewVectorEnv):
            raise TypeError(f"venv must be an ImageViewVectorEnv, got {type(venv).__name__}")
        if venv.array != "numpy" or venv.metadata["autoreset_mode"] != gym.vector.AutoresetMode.SAME_STEP:
            raise ValueError(
                "venv must be made with array='numpy' and autoreset_mode='same_step' "
                "(make_sb3_vec_env does this)"
            )
        self.venv = venv
        self.render_mode = venv.render_mode
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)
        self._actions: np.ndarray | None = None

    def reset(self) -> VecEnvObs:
        """Reset every env (with the seeds and options set by ``seed()``/``set_options()``)."""
        seed = self._seeds[0] if self._seeds and self._seeds[0] is not None else None
        options = self._options[0] if self._options and self._options[0] else None
        obs, _ = self.venv.reset(seed=seed, options=options)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        """Store the actions for :meth:`step_wait`."""
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        """Step every env; ended envs are reset at once (SB3's convention)."""
        obs, rewards, terminated, truncated, infos = self.venv.step(self._actions)
        dones = terminated | truncated
        # SB3's convention (DummyVecEnv): an ended env's info is that of its last
        # step, not of the episode the reset began; the vector env keeps it in final_info.
        ended = infos["_final_obs"] if "final_obs" in infos else np.zeros(self.num_envs, bool)
        last = infos.get("final_info", infos)
        out = [self._env_info(last if ended[i] else infos, i) for i in range(self.num_envs)]
        if "final_obs" in infos:
            final = infos["final_obs"]
            for i in np.flatnonzero(ended):
                out[i]["terminal_observation"] = (
                    {k: v[i] for k, v in final.items()} if isinstance(final, dict) else final[i]
                )
                out[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
        return obs, rewards.astype(np.float32), dones, out

    def _env_info(self, infos: dict[str, Any], i: int) -> dict[str, Any]:
        """Env ``i``'s entries of :data:`INFO_KEYS` as Python scalars (those the vector env gives)."""
        out = {}
        for k in INFO_KEYS:
            mask = infos.get(f"_{k}")
            if k in infos and (mask is None or mask[i]):
                out[k] = infos[k][i].item()
        return out

    def close(self) -> None:
        """Close the vector env."""
        self.venv.close()

    def get_images(self) -> Sequence[np.ndarray | None]:
        """The current view of every env."""
        views = self.venv._uint8_views().cpu().numpy()
        return list(views)

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """The vector env's attribute, once per selected env (all envs share it)."""
        return [getattr(self.venv, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set an attribute of the vector env (shared by every env)."""
        setattr(self.venv, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        """Call a method of the vector env once per selected env."""
        return [
            getattr(self.venv, method_name)(*method_args, **method_kwargs) for _ in self._get_indices(indices)
        ]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        """No env is wrapped by a Gymnasium wrapper."""
        return [False for _ in self._get_indices(indices)]

    def _get_indices(self, indices: VecEnvIndices) -> Iterable[int]:
        if indices is None:
            return range(self.num_envs)
        if isinstance(indices, int):
            return [indices]
        return indices


def make_sb3_vec_env(env_id: str = "ImageView-v0", num_envs: int = 8, **kwargs: Any) -> SB3VecEnv:
    """Make a registered image-view env's vector env and wrap it for SB3.

    Args:
        env_id: ``"ImageView-v0"``, ``"ImageViewDiscrete-v0"``, ``"ImageSearch-v0"``,
            ``"ImageSearchDiscrete-v0"`` (any id whose vector entry point is an
            :class:`ImageViewVectorEnv`; Dict observations stay dicts of arrays).
        num_envs: number of envs.
        **kwargs: env arguments (``source``, ``reward``, ``view_size``, ...).
    """
    venv = gym.make_vec(
        env_id,
        num_envs=num_envs,
        vectorization_mode="vector_entry_point",
        array="numpy",
        autoreset_mode="same_step",
        **kwargs,
    )
    return SB3VecEnv(venv)
