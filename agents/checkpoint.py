"""Atomic checkpoints that load with ``torch.load(weights_only=True)``, and RNG capture.

A checkpoint is a plain dict of tensors, dicts, lists, ints, floats, bools,
strings and None, so it loads with the safe unpickler. :func:`save_checkpoint`
writes to a temporary file in the same directory (``.<name>.<random>.tmp``), fsyncs it and
renames it over the target, so a crash mid-save leaves the previous file intact; the temporary
files a killed writer leaves are removed by :func:`remove_temporaries`. A write that fails for
lack of space raises the ``OSError`` (``No space left on device``), not torch's internal error.
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
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "LATEST",
    "atomic_write",
    "capture_rng",
    "keep_step_copy",
    "latest_checkpoint",
    "load_checkpoint",
    "remove_checkpoints",
    "remove_temporaries",
    "restore_rng",
    "save_checkpoint",
    "step_checkpoints",
]

#: File name of the most recent checkpoint in a run directory.
LATEST = "latest.pt"
_STEP_FILE = re.compile(r"^step_(\d+)\.pt$")
#: Temporary files of :func:`atomic_write` (and the hard-link temporaries of earlier versions).
_TEMPORARY = re.compile(r"^\..+\.tmp$|^\.step_\d+\.pt\.link$")


def _fsync_dir(path: Path) -> None:
    # The rename itself must reach the disk too; not every platform lets us open a directory.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class _Writer:
    """A binary file that remembers the ``OSError`` of a failed write.

    ``torch.save`` turns a failed write into a ``RuntimeError`` that hides its cause (``unexpected
    pos 704 vs 598`` where the disk was full); :func:`atomic_write` raises the remembered error.
    """

    def __init__(self, f: Any) -> None:
        self.f = f
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self.f.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.f.flush()


def atomic_write(path: str | os.PathLike[str], write: Callable[[Any], None]) -> Path:
    """Write a file atomically: ``write(f)`` fills a temporary file beside ``path`` (a binary file
    object), which is flushed, fsynced and renamed over ``path``.

    A crash leaves ``path`` as it was (and at worst a ``.<name>.<random>.tmp`` file, which
    :func:`remove_temporaries` deletes). A write that fails with an ``OSError`` (a full disk) raises
    it, naming ``path``, whatever ``write`` made of it.

    Args:
        path: the target file; its directory must exist.
        write: called once with the open temporary file.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for open()
    writer = None
    try:
        with os.fdopen(fd, "wb") as f:
            writer = _Writer(f)
            write(writer)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        cause = writer.error if writer is not None and writer.error is not None else err
        if isinstance(cause, OSError):
            raise OSError(cause.errno, f"writing {path}: {cause.strerror or cause}") from err
        raise
    _fsync_dir(path.parent)
    return path


def _atomic_save(obj: Any, path: Path) -> None:
    atomic_write(path, lambda f: torch.save(obj, f))


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
        keep_step_copy(path, step, keep, state)
    return path


def keep_step_copy(
    path: str | os.PathLike[str], step: int, keep: int, state: dict[str, Any] | None = None
) -> Path:
    """Make ``step_{step:08d}.pt`` beside ``path`` a copy of it (a hard link where the file system
    allows, else ``state`` or ``path`` written again) and delete all but the ``keep`` newest copies.

    A resumed run calls it for the checkpoint it loads: a kill between writing ``latest.pt`` and
    its copy would otherwise leave the run without that step's copy.

    Returns:
        The copy's path.
    """
    path = Path(path)
    copy = path.parent / f"step_{step:08d}.pt"
    # A hard link costs no second write; fall back to a copy where links are not supported.
    tmp = path.parent / f".{copy.name}.{secrets.token_hex(4)}.tmp"
    try:
        os.link(path, tmp)
        os.replace(tmp, copy)
    except OSError:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        _atomic_save(state if state is not None else load_checkpoint(path), copy)
    for p in step_checkpoints(path.parent)[:-keep]:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    return copy


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


def step_checkpoints(out_dir: str | os.PathLike[str]) -> list[Path]:
    """The ``step_XXXXXXXX.pt`` copies in ``out_dir``, oldest step first."""
    found = [(int(m.group(1)), p) for p in Path(out_dir).iterdir() if (m := _STEP_FILE.match(p.name))]
    return [p for _, p in sorted(found)]


def remove_temporaries(out_dir: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files that writers killed mid-write left in ``out_dir``
    (``.<name>.<random>.tmp`` of :func:`atomic_write`, and the ``.step_XXXXXXXX.pt.link`` of
    earlier versions). Only for a directory no live process writes to.

    Returns:
        The deleted paths.
    """
    gone = []
    for p in Path(out_dir).iterdir():
        if _TEMPORARY.match(p.name) and p.is_file():
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                gone.append(p)
    return gone


def remove_checkpoints(out_dir: str | os.PathLike[str]) -> list[Path]:
    """Delete every checkpoint of ``out_dir`` (``latest.pt``, the step copies, temporaries),
    so that a run started over there finds nothing of the old one.

    Returns:
        The deleted paths.
    """
    out = Path(out_dir)
    gone = remove_temporaries(out)
    for p in [out / LATEST, *step_checkpoints(out)]:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            gone.append(p)
    return gone


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
