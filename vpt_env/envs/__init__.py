"""Environments: thin stateful shells over the batched core."""

from vpt_env.envs.image_view import ImageViewDiscreteEnv, ImageViewEnv

__all__ = ["ImageViewDiscreteEnv", "ImageViewEnv"]
