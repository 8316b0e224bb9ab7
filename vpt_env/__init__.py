"""vpt-env: visual pre-training as reinforcement learning.

Importing the package registers the environments with Gymnasium::

    import gymnasium as gym
    import vpt_env

    env = gym.make("ImageView-v0")
"""

from gymnasium.envs.registration import register, registry

from vpt_env.core.state import EnvParams, ViewState
from vpt_env.data import (
    Annotation,
    Annotations,
    ArraySource,
    CaptionManifest,
    CocoSource,
    FolderSource,
    ImageFolderSource,
    ImagePool,
    ImageSource,
    SceneConfig,
    SceneSource,
    VideoFramesSource,
    WebDatasetSource,
)
from vpt_env.envs import (
    ImageViewDiscreteEnv,
    ImageViewDiscreteVectorEnv,
    ImageViewEnv,
    ImageViewVectorEnv,
)
from vpt_env.envs.search_task import SearchTask
from vpt_env.envs.task import ViewTask
from vpt_env.rewards import REWARDS, RewardFn, make_reward, register_reward
from vpt_env.sampling import TransitionBatch, TransitionSampler

#: The package version.
__version__ = "0.1.0"

__all__ = [
    "REWARDS",
    "Annotation",
    "Annotations",
    "ArraySource",
    "CaptionManifest",
    "CocoSource",
    "EnvParams",
    "FolderSource",
    "ImageFolderSource",
    "ImagePool",
    "ImageSource",
    "ImageViewDiscreteEnv",
    "ImageViewDiscreteVectorEnv",
    "ImageViewEnv",
    "ImageViewVectorEnv",
    "RewardFn",
    "SceneConfig",
    "SceneSource",
    "TransitionBatch",
    "TransitionSampler",
    "VideoFramesSource",
    "ViewState",
    "WebDatasetSource",
    "__version__",
    "make_reward",
    "register_reward",
]

#: Episode length at registration (``TimeLimit``).
MAX_EPISODE_STEPS = ViewTask.max_episode_steps

for _id, _entry, _vector_entry in (
    (
        "ImageView-v0",
        "vpt_env.envs.image_view:ImageViewEnv",
        "vpt_env.envs.vector:ImageViewVectorEnv",
    ),
    (
        "ImageViewDiscrete-v0",
        "vpt_env.envs.image_view:ImageViewDiscreteEnv",
        "vpt_env.envs.vector:ImageViewDiscreteVectorEnv",
    ),
):
    if _id not in registry:
        register(
            id=_id,
            entry_point=_entry,
            vector_entry_point=_vector_entry,
            max_episode_steps=MAX_EPISODE_STEPS,
        )

#: Episode length of the search envs at registration.
SEARCH_EPISODE_STEPS = SearchTask.max_episode_steps

for _id, _entry, _vector_entry in (
    (
        "ImageSearch-v0",
        "vpt_env.envs.search:ImageSearchEnv",
        "vpt_env.envs.search:ImageSearchVectorEnv",
    ),
    (
        "ImageSearchDiscrete-v0",
        "vpt_env.envs.search:ImageSearchDiscreteEnv",
        "vpt_env.envs.search:ImageSearchDiscreteVectorEnv",
    ),
):
    if _id not in registry:
        register(
            id=_id,
            entry_point=_entry,
            vector_entry_point=_vector_entry,
            max_episode_steps=SEARCH_EPISODE_STEPS,
        )
