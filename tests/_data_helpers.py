"""Helpers shared by the ``vpt_env.data`` tests (``test_readers*.py``, ``test_sources*.py``).

Imported by name (``from _data_helpers import ...``): pytest puts ``tests/`` on ``sys.path``.
The readers' fixtures are solid colours, so that ``_red`` identifies each loaded image.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
from PIL import Image

VIEW = 16


def _save(
    path: Path, rgb: tuple[int, int, int], size: tuple[int, int] = (48, 40), fmt: str | None = None
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path, format=fmt)
    return path


def _red(images: list[np.ndarray]) -> list[int]:
    """The red value of each loaded image's centre pixel: fixtures encode identity there."""
    return [int(im[im.shape[0] // 2, im.shape[1] // 2, 0]) for im in images]


def _make(source: object, **kw: object) -> tuple[gym.Env, list[str]]:
    """``gym.make`` with the RuntimeWarnings it raised."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        env = gym.make("ImageView-v0", source=source, view_size=VIEW, **kw)
    return env, [str(w.message) for w in record if issubclass(w.category, RuntimeWarning)]


def _collect(fn):
    """Run ``fn()``; return its result and the RuntimeWarnings it raised."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        out = fn()
    return out, [str(w.message) for w in record if issubclass(w.category, RuntimeWarning)]


def _step_once(env: gym.Env) -> dict:
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.zeros(env.action_space.shape, np.float32))
    return info


def _assert_rgb_uint8(im: np.ndarray) -> None:
    assert isinstance(im, np.ndarray)
    assert im.dtype == np.uint8
    assert im.ndim == 3 and im.shape[2] == 3
