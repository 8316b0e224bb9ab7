"""Rewards: the :class:`RewardFn` protocol, built-ins, and the registry by name."""

from vpt_env.rewards import builtin as _builtin  # noqa: F401  (registers the built-ins)
from vpt_env.rewards import library as _library  # noqa: F401  (registers the library rewards)
from vpt_env.rewards.base import REWARDS, RewardFn, check_reward_output, make_reward, register_reward
from vpt_env.rewards.builtin import CoverageReward, LabelReward, ZeroReward
from vpt_env.rewards.library import (
    CaptionMatchReward,
    ContrastiveCaptionReward,
    EdgeDensityReward,
    SaliencyReward,
    TeacherProbReward,
)

__all__ = [
    "REWARDS",
    "CaptionMatchReward",
    "ContrastiveCaptionReward",
    "CoverageReward",
    "EdgeDensityReward",
    "LabelReward",
    "RewardFn",
    "SaliencyReward",
    "TeacherProbReward",
    "ZeroReward",
    "check_reward_output",
    "make_reward",
    "register_reward",
]
