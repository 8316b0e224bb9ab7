"""Check and benchmark a reward: validity, throughput, and what an agent learns with it.

Pure functions (no argv); ``vpt bench-reward`` (:mod:`agents.cli`) and
``examples/custom_reward.py`` call them.

* :func:`check_reward` calls the reward on random states and rendered views of
  a pool at batch sizes 1 and 64 and raises :class:`RewardCheckError` naming the
  reward and the violated property: ``"call"`` (it raised), ``"type"``,
  ``"shape"`` (``(B,)``), ``"dtype"`` (floating), ``"device"`` (the views'),
  ``"finiteness"``, ``"determinism"`` (same input, same output) and
  ``"batch invariance"`` (each row of a batch equals the row computed alone,
  within ``atol``).
* :func:`measure_throughput` times only the reward call, on views rendered once
  per batch size, and reports rewards per second.
* :func:`bench_reward` does both, against the built-in ``coverage`` reward
  timed in the same run; :func:`train_with_reward` trains SB3 PPO with it and
  compares with a random policy measured in the same run.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from vpt_env.core.dynamics import reset_state
from vpt_env.core.render import render
from vpt_env.core.state import EnvParams, ViewState
from vpt_env.data.pool import ImagePool
from vpt_env.rewards.base import REWARDS, RewardFn, _load, make_reward

__all__ = [
    "BATCH_SIZES",
    "PROPERTIES",
    "BenchResult",
    "RewardCheckError",
    "ThroughputRow",
    "bench_reward",
    "check_reward",
    "load_reward",
    "measure_throughput",
    "random_views",
    "reward_name",
    "train_with_reward",
]

#: Batch sizes timed by :func:`measure_throughput`.
BATCH_SIZES = (1, 256, 4096)
#: Properties :func:`check_reward` verifies, in the order it checks them.
PROPERTIES = ("call", "type", "shape", "dtype", "device", "finiteness", "determinism", "batch invariance")
#: Views rendered per batch when timing; larger batches tile these (rendering is not timed).
_RENDER_MAX = 256
#: Timing rounds per batch size (the rewards alternate; each keeps its best round).
_ROUNDS = 5


class RewardCheckError(ValueError):
    """A reward violates a property of the :class:`~vpt_env.rewards.base.RewardFn` contract.

    Attributes:
        reward: the reward's name.
        prop: the violated property (one of :data:`PROPERTIES`).
    """

    def __init__(self, reward: str, prop: str, detail: str) -> None:
        super().__init__(f"reward {reward!r} fails the {prop} check: {detail}")
        self.reward = reward
        self.prop = prop


def reward_name(reward: Any) -> str:
    """A readable name: the string given, else the callable's qualified name."""
    if isinstance(reward, str):
        return reward
    return getattr(reward, "__qualname__", None) or type(reward).__qualname__


def _accepts_target(reward: str | Callable[..., Any]) -> bool:
    """Whether resolving ``reward`` goes through a factory taking ``target=``."""
    if not isinstance(reward, str):
        return False
    if reward in REWARDS:
        factory: Any = REWARDS[reward]
    elif ":" in reward:
        factory = _load(reward)
        if not (isinstance(factory, type) or getattr(factory, "is_reward_factory", False)):
            return False
    else:
        return False
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "target" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def load_reward(
    reward: str | Callable[..., Tensor], pool: ImagePool, target: int | str | None = None
) -> RewardFn:
    """Resolve ``reward`` as an env would, passing ``target`` only to factories that take it.

    Args:
        reward: a registered name, a ``"module:function"`` string or a callable.
        pool: the pool whose annotations factories receive.
        target: class index or name for rewards that take one.
    """
    kwargs = {"target": target} if target is not None and _accepts_target(reward) else {}
    return make_reward(reward, pool.annotations, **kwargs)


def random_views(
    pool: ImagePool, batch: int, params: EnvParams | None = None, seed: int = 0
) -> tuple[Tensor, ViewState]:
    """Random initial states (:func:`reset_state`, stream keys ``seed..seed+batch-1``) and their views.

    Returns:
        ``(views, state)``: ``(B, 3, S, S)`` float32 views on the pool's device and the states.
    """
    params = params or EnvParams(random_initial_aug=True)
    key = torch.arange(seed, seed + batch, dtype=torch.int64, device=pool.device)
    state = reset_state(params, pool.image_hw, key, torch.zeros_like(key))
    return render(pool, state, params), state


def _call(fn: Any, name: str, views: Tensor, state: ViewState, pool: ImagePool) -> Tensor:
    try:
        out = fn(views, state, pool.annotations)
    except Exception as err:  # any failure of user code is reported, with the reward's name
        raise RewardCheckError(name, "call", f"raised {type(err).__name__}: {err}") from err
    batch = views.shape[0]
    if not isinstance(out, Tensor):
        raise RewardCheckError(name, "type", f"returned {type(out).__name__}, expected a torch.Tensor")
    if tuple(out.shape) != (batch,):
        raise RewardCheckError(name, "shape", f"returned shape {tuple(out.shape)} for a batch of {batch}, "
                                              f"expected ({batch},)")
    if not out.is_floating_point():
        raise RewardCheckError(name, "dtype", f"returned dtype {out.dtype}, expected a floating dtype")
    if out.device != views.device:
        raise RewardCheckError(name, "device", f"returned a tensor on {out.device}, the views are on "
                                               f"{views.device}")
    bad = ~torch.isfinite(out)
    if bool(bad.any()):
        rows = bad.nonzero().flatten()[:5].tolist()
        raise RewardCheckError(name, "finiteness", f"returned NaN or infinity at rows {rows} of {batch}: "
                                                   f"{out[bad][:5].tolist()}")
    return out


def check_reward(
    reward: Any,
    pool: ImagePool,
    *,
    name: str | None = None,
    params: EnvParams | None = None,
    batch: int = 64,
    seed: int = 0,
    atol: float = 1e-5,
) -> dict[str, bool]:
    """Check a resolved reward against the :class:`RewardFn` contract.

    Calls it on random views at batch sizes 1 and ``batch`` (the batch of 1 is
    the batch's first row), twice on the same input, and once per row alone.

    Args:
        reward: the reward callable (resolve names with :func:`load_reward`).
        pool: images and annotations; views are rendered on its device.
        name: the name used in errors (default: the callable's).
        params: render parameters (default: 64x64 views, random augmentation).
        batch: the larger batch size.
        seed: stream key of the first view.
        atol: absolute tolerance of the determinism and batch-invariance checks.

    Returns:
        ``{property: True}`` for every property of :data:`PROPERTIES`.

    Raises:
        RewardCheckError: naming the reward and the first violated property.
    """
    name = name or reward_name(reward)
    views, state = random_views(pool, batch, params, seed)
    first = _call(reward, name, views[:1], state.index(0), pool)
    out = _call(reward, name, views, state, pool)
    again = _call(reward, name, views, state, pool)
    if not torch.allclose(out, again, rtol=0.0, atol=atol):
        diff = float((out - again).abs().max())
        raise RewardCheckError(name, "determinism", f"two calls on the same {batch} views differ by up to "
                                                    f"{diff:.3g} (tolerance {atol:g})")
    alone = torch.cat([first] + [_call(reward, name, views[i : i + 1], state.index(i), pool)
                                 for i in range(1, batch)])
    if not torch.allclose(out, alone, rtol=0.0, atol=atol):
        diff = (out - alone).abs()
        row = int(diff.argmax())
        raise RewardCheckError(
            name,
            "batch invariance",
            f"row {row} of a batch of {batch} is {float(out[row]):.6g} but {float(alone[row]):.6g} when "
            f"computed alone (tolerance {atol:g}); a reward must not depend on the other views of its batch",
        )
    return dict.fromkeys(PROPERTIES, True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _tile(views: Tensor, state: ViewState, batch: int) -> tuple[Tensor, ViewState]:
    reps = math.ceil(batch / views.shape[0])
    views = views.repeat(reps, 1, 1, 1)[:batch]
    state = state.map(lambda x: x.repeat(reps, *([1] * (x.dim() - 1)))[:batch])
    return views, state


def measure_throughput(
    rewards: dict[str, Any],
    pool: ImagePool,
    *,
    batch_sizes: Sequence[int] = BATCH_SIZES,
    seconds: float = 0.5,
    params: EnvParams | None = None,
    seed: int = 0,
    threads: int | None = None,
) -> dict[str, dict[int, float]]:
    """Rewards per second of each reward at each batch size, on the pool's device.

    Views are rendered once per batch size (at most 256; larger batches tile
    them) and every reward is timed on the same views: only the reward call
    is timed, after one warm-up call, for about ``seconds`` per batch size,
    in alternating rounds of which each reward keeps its fastest.

    Args:
        rewards: ``name -> resolved reward``.
        pool: images and annotations on the device to time.
        batch_sizes: batch sizes to time.
        seconds: timing budget per reward and batch size (at least 2 calls per round).
        params: render parameters (default: 64x64 views, random augmentation).
        seed: stream key of the first view.
        threads: torch CPU threads while timing (restored after), or None for
            the current setting. On a loaded machine, ops split over several
            threads wait for descheduled ones: one thread times more stably.

    Returns:
        ``{name: {batch: rewards per second}}``.
    """
    with _torch_threads(threads):
        return _measure(rewards, pool, batch_sizes, seconds, params, seed)


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _measure(
    rewards: dict[str, Any],
    pool: ImagePool,
    batch_sizes: Sequence[int],
    seconds: float,
    params: EnvParams | None,
    seed: int,
) -> dict[str, dict[int, float]]:
    result: dict[str, dict[int, float]] = {name: {} for name in rewards}
    base_views, base_state = random_views(pool, min(max(batch_sizes), _RENDER_MAX), params, seed)
    for batch in batch_sizes:
        views, state = _tile(base_views, base_state, batch)
        for fn in rewards.values():
            fn(views, state, pool.annotations)
        # Rewards take turns over several short rounds and keep their best
        # round: on a shared machine, load then hits every reward alike.
        best = dict.fromkeys(rewards, 0.0)
        for _ in range(_ROUNDS):
            for name, fn in rewards.items():
                _sync(pool.device)
                calls = 0
                start = time.perf_counter()
                while True:
                    fn(views, state, pool.annotations)
                    calls += 1
                    _sync(pool.device)
                    elapsed = time.perf_counter() - start
                    if elapsed >= seconds / _ROUNDS and calls >= 2:
                        break
                best[name] = max(best[name], batch * calls / elapsed)
        for name in rewards:
            result[name][batch] = best[name]
    return result


@dataclass
class ThroughputRow:
    """Rewards per second of the benchmarked reward and of ``coverage`` at one device and batch size."""

    device: str
    batch: int
    rewards_per_s: float
    coverage_per_s: float

    @property
    def ratio(self) -> float:
        """Throughput relative to ``coverage`` (above 1: faster)."""
        return self.rewards_per_s / self.coverage_per_s


@dataclass
class BenchResult:
    """Everything ``vpt bench-reward`` reports."""

    reward: str
    source: str
    target: str | None
    checks: dict[str, bool]
    throughput: list[ThroughputRow]
    machine: str
    train: dict[str, Any] | None = None
    baseline: str = "coverage"
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (throughput rows carry their ratio)."""
        d = asdict(self)
        d["throughput"] = [{**asdict(r), "ratio": r.ratio} for r in self.throughput]
        return d

    def table(self) -> str:
        """The throughput table as plain text."""
        head = f"{self.reward[:28]} r/s"
        lines = [f"{'device':<8}{'batch':>7}{head:>32}{self.baseline + ' r/s':>18}{'ratio':>8}"]
        for r in self.throughput:
            lines.append(
                f"{r.device:<8}{r.batch:>7}{r.rewards_per_s:>32,.0f}{r.coverage_per_s:>18,.0f}{r.ratio:>8.2f}"
            )
        return "\n".join(lines)

    def markdown(self) -> str:
        """The report as markdown: checks, throughput table and training result."""
        out = [
            f"# Reward benchmark: `{self.reward}`",
            "",
            f"Source `{self.source}`, target `{self.target}`; machine: {self.machine}.",
            "",
            "Checks passed: " + ", ".join(k for k, v in self.checks.items() if v) + ".",
            "",
            f"| device | batch | `{self.reward}` rewards/s | `{self.baseline}` rewards/s | ratio |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for r in self.throughput:
            rates = f"{r.rewards_per_s:,.0f} | {r.coverage_per_s:,.0f}"
            out.append(f"| {r.device} | {r.batch} | {rates} | {r.ratio:.2f} |")
        if self.train:
            t = self.train
            out += [
                "",
                f"PPO on `{t['env_id']}` ({t['num_envs']} envs, view {t['view_size']}, {t['steps']} steps, "
                f"{t['train_seconds']:.0f} s): mean episode reward {t['trained_mean']:.3f} "
                f"(+- {t['trained_std']:.3f}) against {t['random_mean']:.3f} (+- {t['random_std']:.3f}) "
                f"for a random policy, over {t['episodes']} episodes each.",
            ]
        out += [f"\n{n}" for n in self.notes]
        return "\n".join(out) + "\n"


def machine_description(threads: int | None = None) -> str:
    """CPU cores, torch threads (``threads`` or the current setting), load average and GPU, in words."""
    desc = (
        f"{platform.machine()} CPU, {os.cpu_count()} cores, "
        f"torch {torch.__version__} ({threads or torch.get_num_threads()} threads)"
    )
    if hasattr(os, "getloadavg"):
        desc += f", load average {os.getloadavg()[0]:.1f}"
    if torch.cuda.is_available():
        desc += f"; GPU {torch.cuda.get_device_name(0)}"
    return desc


def _default_target(pool: ImagePool) -> int | None:
    """The most frequent box label of the pool (the baseline coverage reward needs a target)."""
    labels = pool.annotations.box_labels
    labels = labels[labels >= 0]
    if labels.numel() == 0:
        return None
    return int(torch.bincount(labels.flatten().cpu()).argmax())


def bench_reward(
    reward: str | Callable[..., Tensor],
    source: Any = "photos",
    *,
    target: int | str | None = None,
    device: str | torch.device = "cpu",
    batch_sizes: Sequence[int] = BATCH_SIZES,
    seconds: float = 0.5,
    pool: ImagePool | None = None,
    throughput_devices: Sequence[str] | None = None,
    threads: int | None = None,
) -> BenchResult:
    """Check ``reward`` on ``device`` and time it against ``coverage`` on the CPU (and CUDA if available).

    Args:
        reward: a registered name, a ``"module:function"`` string or a callable.
        source: the images (anything ``ImagePool.from_source`` takes).
        target: class index or name for rewards that take one (and for the
            ``coverage`` baseline; default: the most frequent box label).
        device: where the checks run.
        batch_sizes: batch sizes timed.
        seconds: timing budget per reward, device and batch size.
        pool: a pool of ``source`` already built (on any device), to skip loading.
        throughput_devices: devices timed (default: ``cpu``, plus ``cuda`` when available).
        threads: torch CPU threads while timing (None: torch's current setting).

    Raises:
        RewardCheckError: the reward violates the contract.
        ValueError / TypeError: unknown reward, bad target or source.
    """
    name = reward_name(reward)
    pool = pool if pool is not None else ImagePool.from_source(source, device=device)
    devices = list(throughput_devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else [])))
    pools: dict[str, ImagePool] = {}

    def pool_on(dev: str) -> ImagePool:
        if torch.device(dev) == pool.device:
            return pool
        if dev not in pools:
            pools[dev] = ImagePool.from_source(source, device=dev)
        return pools[dev]

    checked = pool_on(str(device))
    fn = load_reward(reward, checked, target)
    checks = check_reward(fn, checked, name=name)
    base_target = target if target is not None else _default_target(checked)
    notes: list[str] = []
    if base_target is None:
        raise ValueError(f"the source {source!r} has no object boxes: the coverage baseline needs some")
    if target is None:
        classes = checked.annotations.classes
        label = classes[base_target] if base_target < len(classes) else base_target
        notes.append(f"The coverage baseline's target: {label!r} (the most frequent box label).")
    rows: list[ThroughputRow] = []
    for dev in devices:
        p = pool_on(dev)
        fns = {
            "reward": load_reward(reward, p, target),
            "baseline": make_reward("coverage", p.annotations, target=base_target),
        }
        rates = measure_throughput(fns, p, batch_sizes=batch_sizes, seconds=seconds, threads=threads)
        rows += [ThroughputRow(dev, b, rates["reward"][b], rates["baseline"][b]) for b in batch_sizes]
    return BenchResult(
        reward=name,
        source=str(source),
        target=None if target is None else str(target),
        checks=checks,
        throughput=rows,
        machine=machine_description(threads),
        notes=notes,
    )


def _episode_returns(venv: Any, policy: Callable[[Any], Any], episodes: int, seed: int) -> list[float]:
    """Returns of the first ``episodes`` episodes of every env of an SB3 VecEnv."""
    import numpy as np

    venv.seed(seed)
    obs = venv.reset()
    n = venv.num_envs
    running = np.zeros(n)
    done_count = np.zeros(n, dtype=int)
    returns: list[float] = []
    while (done_count < episodes).any():
        obs, rewards, dones, _ = venv.step(policy(obs))
        running += rewards
        for i in np.flatnonzero(dones):
            if done_count[i] < episodes:
                returns.append(float(running[i]))
            done_count[i] += 1
            running[i] = 0.0
    return returns


def train_with_reward(
    reward: str | Callable[..., Tensor],
    source: Any = "photos",
    *,
    target: int | str | None = None,
    steps: int = 2048,
    env_id: str = "ImageViewDiscrete-v0",
    num_envs: int = 8,
    view_size: int = 36,
    episode_steps: int = 32,
    episodes: int = 2,
    seed: int = 0,
    device: str = "cpu",
    threads: int | None = None,
) -> dict[str, Any]:
    """Train SB3 PPO with ``reward`` for ``steps`` env steps; compare with a random policy.

    Both policies are evaluated in the same run on the same seeds, over
    ``episodes`` episodes per env (``num_envs * episodes`` in all); the trained
    policy acts deterministically. ``threads`` sets torch's CPU threads for
    the run (None: unchanged); on a loaded 2-core machine one thread trains
    many times faster than two.

    Returns:
        A dict: ``trained_mean``, ``trained_std``, ``random_mean``,
        ``random_std``, ``episodes``, ``train_seconds`` and the settings.
    """


    with _torch_threads(threads):
        return _train(reward, source, target, steps, env_id, num_envs, view_size, episode_steps, episodes,
                      seed, device)


def _train(
    reward: Any, source: Any, target: Any, steps: int, env_id: str, num_envs: int, view_size: int,
    episode_steps: int, episodes: int, seed: int, device: str,
) -> dict[str, Any]:
    import numpy as np
    from stable_baselines3 import PPO

    from vpt_env.wrappers import make_sb3_vec_env

    kwargs: dict[str, Any] = {"target": target} if target is not None and _accepts_target(reward) else {}
    venv = make_sb3_vec_env(
        env_id, num_envs=num_envs, source=source, reward=reward, view_size=view_size, device=device,
        max_episode_steps=episode_steps, **kwargs,
    )
    try:
        rng = np.random.default_rng(seed)
        space = venv.action_space

        def random_policy(obs: Any) -> Any:
            if hasattr(space, "n"):
                return rng.integers(0, space.n, size=num_envs)
            return rng.uniform(space.low, space.high, size=(num_envs, *space.shape)).astype(np.float32)

        random_returns = _episode_returns(venv, random_policy, episodes, seed + 1000)
        n_steps = max(16, min(128, steps // num_envs))
        model = PPO(
            "CnnPolicy", venv, n_steps=n_steps, batch_size=min(256, n_steps * num_envs), n_epochs=4,
            learning_rate=3e-4, ent_coef=0.01, seed=seed, device=device, verbose=0,
        )
        start = time.perf_counter()
        model.learn(total_timesteps=steps)
        train_seconds = time.perf_counter() - start
        trained_returns = _episode_returns(
            venv, lambda obs: model.predict(obs, deterministic=True)[0], episodes, seed + 1000
        )
    finally:
        venv.close()
    return {
        "env_id": env_id,
        "num_envs": num_envs,
        "view_size": view_size,
        "episode_steps": episode_steps,
        "steps": steps,
        "episodes": len(trained_returns),
        "train_seconds": train_seconds,
        "trained_mean": float(np.mean(trained_returns)),
        "trained_std": float(np.std(trained_returns)),
        "random_mean": float(np.mean(random_returns)),
        "random_std": float(np.std(random_returns)),
    }
