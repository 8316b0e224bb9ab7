"""Tools over the library: checking, timing and training with a reward (``vpt bench-reward``).

* :mod:`vpt_env.tools.reward_check`: the properties a reward must have (shapes, batch
  independence, determinism), checked on random views;
* :mod:`vpt_env.tools.reward_train`: a short training run with a reward as the signal;
* :mod:`vpt_env.tools.reward_bench`: both, and the reward's cost against the env's step, timed in
  the same run.
"""
