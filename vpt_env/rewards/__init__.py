"""Rewards: the :class:`RewardFn` protocol, built-ins, and the registry by name."""

from vpt_env.rewards import builtin as _builtin  # noqa: F401  (registers the built-ins)
from vpt_env.rewards.base import REWARDS, RewardFn, check_reward_output, make_reward, register_reward
from vpt_env.rewards.builtin import CoverageReward, LabelReward, ZeroReward

__all__ = [
    "REWARDS",
    "CoverageReward",
    "LabelReward",
    "RewardFn",
    "ZeroReward",
    "check_reward_output",
    "make_reward",
    "register_reward",
]
