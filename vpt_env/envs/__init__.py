"""Environments: thin stateful shells over the batched core."""

from vpt_env.envs.image_view import ImageViewDiscreteEnv, ImageViewEnv
from vpt_env.envs.vector import ImageViewDiscreteVectorEnv, ImageViewVectorEnv

__all__ = ["ImageViewDiscreteEnv", "ImageViewDiscreteVectorEnv", "ImageViewEnv", "ImageViewVectorEnv"]
