"""Atomic checkpoints that load with ``torch.load(weights_only=True)``, and RNG capture.

A checkpoint is a plain dict of tensors, dicts, lists, ints, floats, bools,
strings and None, so it loads with the safe unpickler. :func:`save_checkpoint`
writes to a temporary file in the same directory, fsyncs it and renames it
over the target, so a crash mid-save leaves the previous file intact.
:func:`capture_rng` / :func:`restore_rng` turn every random state that a
training step consumes (python ``random``, numpy, torch CPU and CUDA, and
named ``torch.Generator`` s such as a sampler's) into such plain values.

Example:
    >>> import tempfile, torch
    >>> from agents.checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint
    >>> g = torch.Generator().manual_seed(0)
    >>> d = tempfile.mkdtemp()
    >>> path = save_checkpoint(f"{d}/latest.pt", {"step": 3, "rng": capture_rng({"sampler": g})})
    >>> a = torch.rand(2, generator=g)
    >>> state = load_checkpoint(path)
    >>> restore_rng(state["rng"], {"sampler": g})
    >>> state["step"], torch.equal(torch.rand(2, generator=g), a)
    (3, True)
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "LATEST",
    "capture_rng",
    "latest_checkpoint",
    "load_checkpoint",
    "restore_rng",
    "save_checkpoint",
]

#: File name of the most recent checkpoint in a run directory.
LATEST = "latest.pt"
_STEP_FILE = re.compile(r"^step_(\d+)\.pt$")


def _fsync_dir(path: Path) -> None:
    # The rename itself must reach the disk too; not every platform lets us open a directory.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _atomic_save(obj: Any, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any], *, keep: int = 0) -> Path:
    """Write ``state`` to ``path`` atomically (temp file, flush + fsync, ``os.replace``).

    Args:
        path: target file, e.g. ``out_dir / "latest.pt"``; its directory is created.
        state: a dict of tensors, dicts, lists, tuples, ints, floats, bools,
            strings and None (what ``torch.load(weights_only=True)`` accepts).
        keep: if > 0 and ``state["step"]`` is an int, also keep a copy
            ``step_{step:08d}.pt`` next to ``path`` and delete all but the
            ``keep`` newest such copies.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
        raise ValueError(f"keep must be an int >= 0, got {keep!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_save(state, path)
    step = state.get("step")
    if keep > 0 and isinstance(step, int):
        copy = path.parent / f"step_{step:08d}.pt"
        # A hard link costs no second write; fall back to a copy where links are not supported.
        tmp = path.parent / f".{copy.name}.link"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        try:
            os.link(path, tmp)
            os.replace(tmp, copy)
        except OSError:
            _atomic_save(state, copy)
        olds = sorted(
            (int(m.group(1)), p) for p in path.parent.iterdir() if (m := _STEP_FILE.match(p.name))
        )
        for _, p in olds[:-keep]:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
    return path


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with the safe unpickler (``weights_only=True``).

    Args:
        path: a file written by :func:`save_checkpoint`.
        map_location: where tensors are loaded (default CPU; the caller moves them).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a readable checkpoint (truncated, corrupt, or
            holding objects the safe unpickler refuses).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # corrupt bytes surface as many types from the unpickler
        raise ValueError(f"{path} is not a readable checkpoint ({type(err).__name__}: {err})") from err


def latest_checkpoint(out_dir: str | os.PathLike[str]) -> Path | None:
    """``out_dir / "latest.pt"`` if it exists, else None."""
    path = Path(out_dir) / LATEST
    return path if path.is_file() else None


def capture_rng(generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    """Every random state a training step may consume, as plain values.

    Args:
        generators: named ``torch.Generator`` s to capture as well (e.g.
            ``{"sampler": sampler.generator}``).

    Returns:
        ``{"python": {...}, "numpy": {...}, "torch": Tensor, "cuda": [Tensor, ...],
        "generators": {name: Tensor}}`` (``"cuda"`` empty without CUDA).
    """
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "python": {
            "version": int(version),
            "state": list(internal),
            "gauss": [] if gauss is None else [gauss],
        },
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generators": {k: g.get_state() for k, g in (generators or {}).items()},
    }


def restore_rng(state: dict[str, Any], generators: dict[str, torch.Generator] | None = None) -> None:
    """Restore a :func:`capture_rng` state (in place).

    Args:
        state: the dict :func:`capture_rng` returned (possibly after a save/load).
        generators: the named generators to restore; each name must be in ``state``.

    Raises:
        KeyError: a generator name is missing from ``state``.
    """
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"][0] if py["gauss"] else None))
    npst = state["numpy"]
    np.random.set_state(
        (
            npst["name"],
            npst["keys"].numpy().astype(np.uint32),
            npst["pos"],
            npst["has_gauss"],
            npst["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    if torch.cuda.is_available() and state["cuda"]:
        # A run resumed on fewer devices restores the ones it has.
        for i, s in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s.cpu(), i)
    saved = state["generators"]
    for name, g in (generators or {}).items():
        if name not in saved:
            raise KeyError(f"no RNG state for generator {name!r} in the checkpoint (has {sorted(saved)})")
        g.set_state(saved[name].cpu())
