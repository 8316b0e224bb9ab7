"""Every env id in the RL codebases users bring: Gymnasium's vector modes, TorchRL, SB3, CleanRL.

The clients come with the ``compat`` extra (``pip install -c constraints.txt -e '.[dev,compat]'``,
which ``make test`` runs); a missing one fails here at import, it is never skipped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import gymnasium as gym
import numpy as np

import vpt_env  # noqa: F401
from vpt_env.data.scenes import SceneSource

ROOT = Path(__file__).resolve().parents[1]
ALL_IDS = sorted(i for i, s in gym.registry.items() if str(s.entry_point).startswith("vpt_env."))
# Small sources keep each env cheap to build; the defaults are not what these tests are about.
SMALL = [np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8) for _ in range(3)]
SCENES = SceneSource(n_images=20)


def _source(env_id: str) -> object:
    return SCENES if env_id.startswith("ImageSearch") else SMALL


# -- Gymnasium: make_vec in its three modes ------------------------------------------------------

# Run in a fresh interpreter with a time limit, so that a deadlock fails instead of hanging CI.
# Two torch threads, so the parent has a live OpenMP thread pool when Gymnasium forks (as on any
# machine with two or more cores); nothing but Gymnasium's defaults otherwise.
ASYNC_SCRIPT = textwrap.dedent(
    """
    import multiprocessing
    import sys

    import gymnasium as gym
    import numpy as np
    import torch

    import vpt_env  # noqa: F401
    from vpt_env.data.scenes import SceneSource

    torch.set_num_threads(2)
    small = [np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8) for _ in range(3)]
    scenes = SceneSource(n_images=20)
    methods = [None] + (["fork"] if multiprocessing.get_start_method() != "fork" else [])
    for env_id in sys.argv[1:]:
        source = scenes if env_id.startswith("ImageSearch") else small
        for method in methods:
            vector_kwargs = {} if method is None else {"context": method}
            envs = gym.make_vec(
                env_id, num_envs=2, vectorization_mode="async", vector_kwargs=vector_kwargs, source=source
            )
            envs.action_space.seed(0)
            obs, info = envs.reset(seed=0)
            for _ in range(3):
                obs, reward, terminated, truncated, info = envs.step(envs.action_space.sample())
            assert reward.shape == (2,) and envs.autoreset_mode == gym.vector.AutoresetMode.NEXT_STEP
            envs.close()
            print("ok", env_id, method or multiprocessing.get_start_method(), flush=True)
    """
)


def test_make_vec_async_with_gymnasiums_defaults_does_not_deadlock() -> None:
    # On Linux Gymnasium forks its workers after building one env in the parent; the parent's
    # torch thread pool used to deadlock the children's first torch call (vpt_env/data/pool.py).
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    stdout, stderr, code = _run_with_limit([sys.executable, "-c", ASYNC_SCRIPT, *ALL_IDS], env, 300)
    assert code is not None, f"make_vec(vectorization_mode='async') hung after: {stdout!r}"
    assert code == 0, stderr[-3000:]
    assert {line.split()[1] for line in stdout.splitlines() if line.startswith("ok ")} == set(ALL_IDS)


def _run_with_limit(cmd: list[str], env: dict[str, str], limit_s: int) -> tuple[str, str, int | None]:
    """Run ``cmd`` in its own session; past ``limit_s`` kill it and its workers (exit code None)."""
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=limit_s)
        return stdout, stderr, proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the hung forked workers too, not only the parent
        stdout, stderr = proc.communicate()
        return stdout, stderr, None
