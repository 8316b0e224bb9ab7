"""Wrappers: the stable-baselines3 bridge."""

from vpt_env.wrappers.sb3 import SB3VecEnv, make_sb3_vec_env

__all__ = ["SB3VecEnv", "make_sb3_vec_env"]
