"""Make the pictures of the docs under ``docs/img/`` from one command.

Usage::

    OMP_NUM_THREADS=1 python docs/make_figures.py [--out docs/img] [--steps 9] [--seed 0]
        [--gif-episodes 3] [--small]

Writes:

* ``gallery-<env id>.png`` for each registered env id: the source image with the view's box at
  each step of a short seeded rollout (coloured from magenta, early, to yellow, late, and
  numbered) beside the views the agent saw; for the search envs the goal (its class name and caption) and
  the boxes of the goal class's objects. ``ImageView*`` ids roll out a random policy on the
  embedded photos (their default source); ``ImageSearch*`` ids a scripted policy that knows where
  the goal is, on a few generated scenes.
* ``rollout-ImageSearch-v0.gif``: the same scripted search, a few episodes, animated.
* ``results-<folder>-curves.png`` and ``results-<folder>-pairs.png`` for every
  ``docs/results/<folder>/results.json`` of the current format, drawn by the reproduction
  benchmark's own plotting code (:func:`reproduction.report.record_figures`).

It prints each file with its size and lists the value maps already in ``docs/results``
(``vpt valuemap``; none is copied). ``--small`` draws everything small and short (the tests).
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import sys
import textwrap
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch
from PIL import Image

import vpt_env  # noqa: F401  (registers the env ids)
from vpt_env.core.boxes import iou
from vpt_env.core.dynamics import DISCRETE_ACTIONS
from vpt_env.data.photos import PHOTO_NAMES
from vpt_env.data.scenes import SceneSource

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from reproduction.report import RESULTS_FORMAT, record_figures  # noqa: E402

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["ENV_IDS", "FigureConfig", "Rollout", "gallery_figure", "main", "make_figures", "rollout"]

#: The registered env ids the gallery shows.
ENV_IDS = ("ImageView-v0", "ImageViewDiscrete-v0", "ImageSearch-v0", "ImageSearchDiscrete-v0")
_GOAL = "cyan"  # the goal boxes (dashed)
_CMAP = "spring"  # step colours: magenta (early) to yellow (late)
_CURRENT = "#ffd400"  # the animation's current box


@dataclass
class FigureConfig:
    """What :func:`make_figures` draws and where."""

    out: Path = ROOT / "docs" / "img"
    """Folder for the pictures (made if missing)."""
    results: str = str(ROOT / "docs" / "results" / "*" / "results.json")
    """Glob of the reproduction reports to plot (reports of older formats are skipped)."""
    steps: int = 9
    """Steps of each gallery rollout (the views shown are the reset view and these)."""
    seed: int = 0
    """Seed of the envs and the policies."""
    scenes: int = 32
    """Generated scenes of the search envs' source."""
    gif_episodes: int = 3
    """Search episodes in the animated rollout."""
    gif_steps: int = 14
    """Most steps of one animated episode (it ends earlier when the goal is found)."""
    dpi: int = 100
    """Resolution of the gallery strips and plots (the GIF uses 4/5 of it)."""
    env_ids: tuple[str, ...] = field(default=ENV_IDS)

    def __post_init__(self) -> None:
        for name in ("steps", "scenes", "gif_episodes", "gif_steps", "dpi"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")

    @classmethod
    def small(cls, out: Path) -> FigureConfig:
        """Few steps, few frames, low resolution: for the tests."""
        return cls(out=out, steps=3, scenes=8, gif_episodes=2, gif_steps=3, dpi=40)


@dataclass
class Rollout:
    """One seeded episode prefix: what the gallery and the animation draw."""

    env_id: str
    policy: str
    """What chose the actions, in words."""
    source: str
    """The source image, in words."""
    frame: np.ndarray
    """The whole source image (RGB)."""
    boxes: list[np.ndarray] = field(default_factory=list)
    """The view's normalised box after the reset and after each step."""
    views: list[np.ndarray] = field(default_factory=list)
    """The observed view after the reset and after each step."""
    rewards: list[float] = field(default_factory=list)
    """Reward of each step."""
    actions: list[str] = field(default_factory=list)
    """Discrete envs: the name of each step's action."""
    ious: list[float] = field(default_factory=list)
    """Search envs: IoU with the goal after the reset and after each step."""
    goal_name: str | None = None
    goal_caption: str | None = None
    goal_boxes: list[np.ndarray] = field(default_factory=list)
    """Search envs: the boxes of the goal class's objects in the image."""
    found: bool = False


def _steer(box: np.ndarray, target: np.ndarray, params: Any, discrete: bool, rng: np.random.Generator) -> Any:
    """An action that moves ``box`` toward ``target`` (continuous: pan, log-zoom, log-aspect, damped and
    jittered; discrete: the one pan or zoom that is most needed)."""
    wh, twh = box[2:] - box[:2], target[2:] - target[:2]
    pan = ((target[:2] + target[2:]) - (box[:2] + box[2:])) / 2 / (params.max_pan * wh)
    zoom = (np.log(wh.prod()) - np.log(twh.prod())) / (2 * params.max_log_zoom)
    aspect = (np.log(twh[0] / twh[1]) - np.log(wh[0] / wh[1])) / params.max_log_aspect
    want = np.array([*pan, zoom, aspect])
    if discrete:
        k = int(np.argmax(np.abs(want[:3])))
        return (1, 2, 3, 4, 6, 5)[2 * k + int(want[k] > 0)]
    return np.clip(0.5 * want + rng.normal(0.0, 0.1, 4), -1.0, 1.0).astype(np.float32)


def rollout(
    env_id: str, steps: int, seed: int, scenes: int = 32, episode: int = 0, env: Any = None
) -> Rollout:
    """Roll out ``steps`` steps of ``env_id`` from a reset with ``seed`` (the ``episode``-th reset of
    ``env`` when one is passed): a random policy on the photos for ``ImageView*``, the scripted search
    policy of :func:`_steer` on ``scenes`` generated scenes for ``ImageSearch*`` (stopping when the goal
    is found)."""
    search = env_id.startswith("ImageSearch")
    own = env is None
    if env is None:
        env = (
            gym.make(env_id, source=SceneSource(n_images=scenes), text_info=True)
            if search
            else gym.make(env_id)
        )
    env.action_space.seed(seed)
    obs, info = env.reset(seed=seed + episode)
    pool, params = env.unwrapped.pool, env.unwrapped.params
    image = int(info["image_index"])
    frame = pool.image(image)
    out = Rollout(
        env_id,
        "scripted policy that knows where the goal is" if search else "random policy",
        f"generated scene #{image}" if search else f"embedded photo '{PHOTO_NAMES[image]}'",
        frame,
    )
    rng = np.random.default_rng(seed + episode)
    target = None
    if search:
        boxes = pool.annotations.boxes[image].cpu().numpy()
        labels = pool.annotations.box_labels[image].cpu().numpy()
        out.goal_boxes = [b for b, lab in zip(boxes, labels, strict=True) if lab == info["goal"]]
        out.goal_name, out.goal_caption = info["goal_name"], info["goal_caption"]
        target = max(
            out.goal_boxes, key=lambda b: float(iou(torch.as_tensor(b), torch.as_tensor(info["box"])))
        )
        out.ious.append(float(info["iou"]))
    out.boxes.append(info["box"].copy())
    out.views.append(obs["view"] if search else obs)
    for _ in range(steps):
        if target is None:
            action = env.action_space.sample()
        else:
            action = _steer(info["box"], target, params, env.unwrapped.discrete, rng)
        obs, reward, terminated, truncated, info = env.step(action)
        if env.unwrapped.discrete:
            out.actions.append(DISCRETE_ACTIONS[int(action)])
        out.boxes.append(info["box"].copy())
        out.views.append(obs["view"] if search else obs)
        out.rewards.append(float(reward))
        if search:
            out.ious.append(float(info["iou"]))
            out.found = bool(info["is_success"])
        if terminated or truncated:
            break
    if own:
        env.close()
    return out


def _draw_box(ax: Any, box: np.ndarray, hw: tuple[int, int], colour: Any, **style: Any) -> None:
    """A normalised box as a rectangle (with a dark outline so it shows on any image) on ``ax``."""
    from matplotlib.patches import Rectangle

    h, w = hw
    x0, y0, x1, y1 = box
    rect = Rectangle((x0 * w, y0 * h), (x1 - x0) * w, (y1 - y0) * h, fill=False, edgecolor=colour, **style)
    rect.set_path_effects(_outline(style.get("linewidth", 2.0)))
    ax.add_patch(rect)


def _outline(width: float) -> list[Any]:
    from matplotlib import patheffects

    return [patheffects.Stroke(linewidth=width + 1.5, foreground="black"), patheffects.Normal()]


def _step_colours(n: int) -> np.ndarray:
    """RGBA colour of each of ``n`` steps: magenta (early) to yellow (late)."""
    from matplotlib import colormaps

    return colormaps[_CMAP](np.linspace(0.0, 1.0, n))


def _source_panel(ax: Any, r: Rollout, upto: int | None = None) -> None:
    """The source image with the goal boxes (dashed) and the path of the view's centre; with ``upto``
    None every box coloured by step with a dot at its centre, numbered where there is room (steps in a
    row at one centre share a number, ``"2-7"``), else the boxes up to step ``upto`` as a faint trail
    and that step's box bold."""
    hw = r.frame.shape[:2]
    ax.imshow(r.frame)
    ax.set_axis_off()
    last = len(r.boxes) - 1 if upto is None else upto
    centres = np.array([((b[0] + b[2]) / 2 * hw[1], (b[1] + b[3]) / 2 * hw[0]) for b in r.boxes[: last + 1]])
    ax.plot(centres[:, 0], centres[:, 1], color="white", linewidth=1.2, path_effects=_outline(1.2))
    colours = _step_colours(len(r.boxes))
    first = 0  # of the steps in a row at this centre
    placed: list[tuple[float, float]] = []
    for t in range(last + 1):
        if upto is None:
            _draw_box(ax, r.boxes[t], hw, colours[t], linewidth=1.8)
            if t < last and np.allclose(centres[t + 1], centres[t], atol=0.5):
                continue
            label, first = (str(t) if first == t else f"{first}-{t}"), t + 1
            x, y = centres[t]
            ax.plot(x, y, "o", markersize=5, color=colours[t], markeredgecolor="black", markeredgewidth=0.6)
            if any(abs(x - u) < 0.07 * hw[1] and abs(y - v) < 0.045 * hw[0] for u, v in placed):
                continue  # no room for its number: the dot's colour tells the step
            placed.append((x, y))
            tag = {"boxstyle": "round,pad=0.15", "facecolor": colours[t], "linewidth": 0.5}
            ax.text(x, y - 0.02 * hw[0], label, fontsize=7, ha="center", va="bottom", bbox=tag)
        elif t < last:
            _draw_box(ax, r.boxes[t], hw, "white", linewidth=0.8, alpha=0.5)
    if upto is not None:
        _draw_box(ax, r.boxes[last], hw, _CURRENT, linewidth=2.5)
    for b in r.goal_boxes:  # on top: a goal box may be small
        _draw_box(ax, b, hw, _GOAL, linewidth=2.0, linestyle="--")


def _goal_line(r: Rollout) -> str:
    iou = f"IoU with the goal {r.ious[0]:.2f} at the reset, {r.ious[-1]:.2f} at the end"
    found = ", found (the episode ends)" if r.found else ""
    return f'goal (dashed cyan boxes): {r.goal_name}, "{r.goal_caption}"; {iou}{found}'


def gallery_figure(r: Rollout) -> Figure:
    """One strip: the source image with the rollout's boxes, beside the views the agent saw, titled
    with the env id, the policy and what is drawn. A :class:`matplotlib.figure.Figure`."""
    from matplotlib.figure import Figure

    n = len(r.views)
    cols = max(3, (n + 1) // 2)
    fig = Figure(figsize=(4.4 + 1.35 * cols, 4.8), layout="constrained")
    left, right = fig.subfigures(1, 2, width_ratios=[4.4, 1.35 * cols])
    _source_panel(left.subplots(), r)
    left.suptitle(
        f"the {r.source}, with the view's box after each step\n"
        "(a dot at its centre, numbered where there is room)",
        fontsize=9,
    )
    colours = _step_colours(n)
    axes = right.subplots(2, cols, squeeze=False).ravel()
    for t, ax in enumerate(axes):
        ax.set_xticks([])
        ax.set_yticks([])
        if t >= n:
            ax.set_axis_off()
            continue
        ax.imshow(r.views[t], interpolation="nearest")
        action = f"\n{r.actions[t - 1]}" if t and r.actions else ""
        ax.set_title("reset" if t == 0 else f"step {t}{action}", fontsize=8)
        for spine in ax.spines.values():
            spine.set(edgecolor=colours[t], linewidth=3)
    size = r.views[0].shape[0]
    augmented = "" if r.goal_name is not None else ", with the augmentations the actions set"
    right.suptitle(
        f"the {size}x{size} views the agent saw, in order{augmented}\n(frame colour = box colour)", fontsize=9
    )
    title = f"{r.env_id}: {r.policy}, {n - 1} steps; colours go from magenta (early) to yellow (late)"
    if r.goal_name is not None:
        title += "\n" + _goal_line(r)
    chars = int(13 * fig.get_figwidth())  # about what fits at 10 points
    fig.suptitle("\n".join(textwrap.fill(line, chars) for line in title.split("\n")), fontsize=10)
    return fig


def _gif_frame(r: Rollout, t: int, episode: int, dpi: int) -> Image.Image:
    """Step ``t`` of a search rollout: the image with the moving box, and the current view."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.6), layout="constrained")
    left, right = fig.subplots(1, 2)
    _source_panel(left, r, upto=t)
    left.set_title(f"{r.source}: view box yellow,\ngoal objects dashed cyan", fontsize=8)
    right.imshow(r.views[t], interpolation="nearest")
    right.set_axis_off()
    status = "reset" if t == 0 else f"step {t}, reward {r.rewards[t - 1]:+.2f}"
    end = t == len(r.views) - 1
    found = ": FOUND" if r.found and end else ", not found: the animation cuts here" if end else ""
    right.set_title(f"what the agent sees ({status})\nIoU with the goal {r.ious[t]:.2f}{found}", fontsize=8)
    fig.suptitle(
        f"{r.env_id}, episode {episode + 1}: find a {r.goal_name}\n({r.policy}; not a trained agent)",
        fontsize=9,
    )
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return Image.open(buf).convert("RGB")


def rollout_gif(cfg: FigureConfig, path: Path, env_id: str = "ImageSearch-v0") -> int:
    """Write the animated search rollout (``cfg.gif_episodes`` episodes); returns its frame count."""
    env = gym.make(env_id, source=SceneSource(n_images=cfg.scenes), text_info=True)
    frames: list[Image.Image] = []
    durations: list[int] = []
    for episode in range(cfg.gif_episodes):
        r = rollout(env_id, cfg.gif_steps, cfg.seed, episode=episode, env=env)
        for t in range(len(r.views)):
            frames.append(_gif_frame(r, t, episode, dpi=max(20, cfg.dpi * 4 // 5)))
            durations.append(1200 if t == len(r.views) - 1 else 300)
    env.close()
    # One palette for every frame, from a strip of up to eight of them.
    sample = frames[:: max(1, len(frames) // 8)]
    strip = Image.new("RGB", (frames[0].width, frames[0].height * len(sample)))
    for k, f in enumerate(sample):
        strip.paste(f, (0, k * f.height))
    palette = strip.quantize(colors=192)
    quantized = [f.quantize(palette=palette, dither=Image.Dither.NONE) for f in frames]
    quantized[0].save(
        path, save_all=True, append_images=quantized[1:], duration=durations, loop=0, optimize=True
    )
    return len(frames)


def make_figures(cfg: FigureConfig) -> list[str]:
    """Draw every picture into ``cfg.out``; returns the summary lines (each file and its size, the
    reports skipped and the value maps found)."""
    cfg.out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for k, env_id in enumerate(cfg.env_ids):
        fig = gallery_figure(rollout(env_id, cfg.steps, cfg.seed + k, cfg.scenes))
        written.append(cfg.out / f"gallery-{env_id}.png")
        fig.savefig(written[-1], dpi=cfg.dpi)
    written.append(cfg.out / "rollout-ImageSearch-v0.gif")
    frames = rollout_gif(cfg, written[-1])
    skipped = []
    reports = sorted(Path(p) for p in glob.glob(cfg.results))
    for path in reports:
        record = json.loads(path.read_text())
        if record.get("format") != RESULTS_FORMAT:
            skipped.append(f"skipped {path} (format {record.get('format', 1)}, not {RESULTS_FORMAT})")
            continue
        for name, fig in record_figures(record).items():
            written.append(cfg.out / f"results-{path.parent.name}-{name}.png")
            fig.savefig(written[-1], dpi=cfg.dpi)
    lines = [f"{_shown(p)} ({p.stat().st_size / 1024:.0f} KiB)" for p in written]
    lines[len(cfg.env_ids)] += f", {frames} frames"
    maps = sorted(m for r in reports for m in (r.parent / "valuemaps").glob("*.png"))
    return lines + skipped + [f"value map (made by `vpt valuemap`, not copied): {_shown(m)}" for m in maps]


def _shown(path: Path) -> str:
    """``path`` relative to the repository where it is inside it."""
    return str(path.resolve().relative_to(ROOT)) if path.resolve().is_relative_to(ROOT) else str(path)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = FigureConfig()
    parser.add_argument("--out", type=Path, default=defaults.out, help="folder for the pictures")
    parser.add_argument("--results", default=defaults.results, help="glob of results.json files to plot")
    parser.add_argument("--steps", type=int, help=f"steps of each gallery rollout ({defaults.steps})")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--gif-episodes", type=int, help=f"episodes in the GIF ({defaults.gif_episodes})")
    parser.add_argument("--small", action="store_true", help="small and short (the tests)")
    args = parser.parse_args(argv)
    for flag, value in (("--steps", args.steps), ("--gif-episodes", args.gif_episodes)):
        if value is not None and value < 1:
            parser.error(f"{flag} must be a positive int, got {value}")
    cfg = FigureConfig.small(args.out) if args.small else replace(defaults, out=args.out)
    cfg = replace(cfg, results=args.results, seed=args.seed)
    if args.steps is not None:
        cfg = replace(cfg, steps=args.steps)
    if args.gif_episodes is not None:
        cfg = replace(cfg, gif_episodes=args.gif_episodes)
    start = time.perf_counter()
    for line in make_figures(cfg):
        print(line)
    print(f"done in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
