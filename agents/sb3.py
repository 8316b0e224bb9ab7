"""The stable-baselines3 adapter: any :class:`~agents.encoders.Encoder` as an SB3 features extractor.

Example:
    >>> import gymnasium as gym, vpt_env
    >>> from stable_baselines3 import PPO
    >>> from agents.encoders import make_encoder
    >>> env = gym.make("ImageView-v0", view_size=32)
    >>> kwargs = {"features_extractor_class": EncoderFeaturesExtractor,
    ...           "features_extractor_kwargs": {"encoder": make_encoder("cnn", width=8)}}
    >>> PPO("CnnPolicy", env, n_steps=16, batch_size=16, policy_kwargs=kwargs).policy.features_dim
    32
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch
from stable_baselines3.common.preprocessing import get_flattened_obs_dim, is_image_space_channels_first
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import Tensor

from agents.encoders import Encoder, make_encoder

__all__ = ["EncoderFeaturesExtractor"]


class EncoderFeaturesExtractor(BaseFeaturesExtractor):
    """Plug an :class:`Encoder` into a stable-baselines3 policy.

    Accepts a Box image observation (``(H, W, C)`` or ``(C, H, W)``, C = 1 or 3; SB3's
    ``VecTransposeImage`` makes uint8 images channels-first and ``preprocess_obs`` divides them by
    255) or a Dict observation with an image under ``image_key`` and any other entries (e.g.
    ``"goal": Discrete(K)``, which SB3 one-hot encodes) concatenated to the pooled vector in the
    Dict's key order. ``features_dim = D + sum of the other entries' flat sizes``.

    Args:
        observation_space: the policy's observation space.
        encoder: a ready encoder (e.g. pre-trained); if given, ``encoder_name``/``encoder_kwargs``
            are ignored.
        encoder_name: name for :func:`make_encoder` when ``encoder`` is None.
        encoder_kwargs: kwargs for :func:`make_encoder`.
        image_key: the image entry of a Dict observation space.
        divide_by_255: divide pixels by 255 here; set it when the policy has
            ``normalize_images=False`` and the env gives uint8 pixels.

    Example:
        >>> import gymnasium as gym, numpy as np, torch
        >>> space = gym.spaces.Dict({"goal": gym.spaces.Discrete(5),
        ...                          "view": gym.spaces.Box(0, 255, (3, 32, 32), np.uint8)})
        >>> fx = EncoderFeaturesExtractor(space, encoder_kwargs={"width": 8})
        >>> fx.features_dim
        37
        >>> fx({"goal": torch.eye(5)[:2], "view": torch.rand(2, 3, 32, 32)}).shape
        torch.Size([2, 37])
    """

    def __init__(
        self,
        observation_space: gym.Space,
        encoder: Encoder | None = None,
        encoder_name: str = "cnn",
        encoder_kwargs: dict[str, Any] | None = None,
        image_key: str = "view",
        divide_by_255: bool = False,
    ) -> None:
        if encoder is None:
            encoder = make_encoder(encoder_name, **(encoder_kwargs or {}))
        elif not isinstance(encoder, Encoder):
            raise TypeError(f"encoder must be an agents.encoders.Encoder, got {type(encoder).__name__}")
        extra_keys: list[str] = []
        extra_dim = 0
        if isinstance(observation_space, gym.spaces.Dict):
            if image_key not in observation_space.spaces:
                keys = list(observation_space.spaces)
                raise ValueError(f"image_key must be one of {keys}, got {image_key!r}")
            image_space = observation_space[image_key]
            extra_keys = [k for k in observation_space.spaces if k != image_key]
            extra_dim = sum(get_flattened_obs_dim(observation_space[k]) for k in extra_keys)
        else:
            image_space = observation_space
        if not isinstance(image_space, gym.spaces.Box) or len(image_space.shape) != 3:
            raise ValueError(f"the image observation space must be a 3-d Box, got {image_space}")
        shape = image_space.shape
        if shape[0] in (1, 3) and shape[2] in (1, 3):
            channels_first = is_image_space_channels_first(image_space)  # ambiguous: SB3's rule
        elif shape[0] in (1, 3) or shape[2] in (1, 3):
            channels_first = shape[0] in (1, 3)
        else:
            raise ValueError(f"the image space must have 1 or 3 channels first or last, got shape {shape}")
        super().__init__(observation_space, encoder.dim + extra_dim)
        self.encoder = encoder
        self.image_key = image_key
        self.extra_keys = extra_keys
        self.channels_first = channels_first
        self.divide_by_255 = divide_by_255

    def _to_bchw(self, image: Tensor) -> Tensor:
        x = image.float()
        if x.dim() == 3:  # an unbatched observation
            x = x.unsqueeze(0)
        # Follow the space's layout, but trust the tensor when only the other layout fits it.
        if self.channels_first and x.shape[1] not in (1, 3) and x.shape[3] in (1, 3):
            x = x.permute(0, 3, 1, 2)
        elif not self.channels_first and (x.shape[3] in (1, 3) or x.shape[1] not in (1, 3)):
            x = x.permute(0, 3, 1, 2)
        if self.divide_by_255:
            x = x / 255.0
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x

    def forward(self, observations: Tensor | dict[str, Tensor]) -> Tensor:
        """Features ``(B, features_dim)``: the pooled encoding, then the other Dict entries flattened."""
        if isinstance(observations, dict):
            pooled = self.encoder(self._to_bchw(observations[self.image_key])).pooled
            extras = [observations[k].float().reshape(pooled.shape[0], -1) for k in self.extra_keys]
            return torch.cat([pooled, *extras], dim=1)
        return self.encoder(self._to_bchw(observations)).pooled
