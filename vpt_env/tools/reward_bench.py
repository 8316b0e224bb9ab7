"""Check and benchmark a reward: validity, throughput, and what an agent learns with it.

Pure functions (no argv); ``vpt bench-reward`` (:mod:`agents.cli`) and
``examples/custom_reward.py`` call them.

* :func:`check_reward` (:mod:`vpt_env.tools.reward_check`) calls the reward on random
  states and views and raises :class:`RewardCheckError` naming the reward and
  the violated property.
* :func:`measure_throughput` times only the reward call, on views rendered once
  per batch size, and reports rewards per second.
* :func:`bench_reward` does both, against the built-in ``coverage`` reward
  timed in the same run; :func:`train_with_reward` (:mod:`vpt_env.tools.reward_train`)
  trains SB3 PPO with it and compares with a random policy measured in the same run.
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from vpt_env.core.state import EnvParams, ViewState
from vpt_env.data.pool import ImagePool
from vpt_env.rewards.base import make_reward
from vpt_env.tools.reward_check import (
    PROPERTIES,
    RewardCheckError,
    check_reward,
    load_reward,
    random_views,
    reward_name,
)
from vpt_env.tools.reward_train import torch_threads as _torch_threads
from vpt_env.tools.reward_train import train_with_reward

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

#: Views rendered per batch when timing; larger batches tile these (rendering is not timed).
_RENDER_MAX = 256
#: Timing rounds per batch size (the rewards alternate; each keeps its best round).
_ROUNDS = 5




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


