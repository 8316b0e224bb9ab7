"""The rules of a run directory: one live writer (a lock), one run (what must match to resume).

**The lock.** A process that trains into a directory holds ``<out_dir>/.lock``: an exclusive
``fcntl.flock`` on that file, which names the holder (pid, host, start time). A second writer is
refused with :class:`RunDirectoryLocked` naming the holder. The kernel drops the lock when the
holder exits, however it exits (``kill -9`` included), so a lock file left by a dead process is
stale by construction: the next run takes it over. The holder deletes the file on a clean exit.
The lock is re-entrant within one thread (``pretrain`` holds it around ``Trainer.fit``, which
takes it too); under DDP only rank 0 takes it. On a file system without ``flock`` the run goes on
unlocked, with a warning.

**The identity.** A resumed run must be the same run: every config field that changes the
numbers must match the stored one (:func:`config_differences`). :data:`NON_NUMERIC_FIELDS` are the
fields that change no number of a run; :data:`RESUMABLE_FIELDS` may change on resume
(``steps``: a run may be extended or cut short; the schedule follows the new length from the
resume step on, and ``run.json`` records where the length changed).

Example:
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> with hold(d):
    ...     with hold(d):  # re-entrant in one thread
    ...         holder(d)["pid"] == os.getpid()
    True
    >>> holder(d) is None  # released, the file removed
    True
    >>> config_differences({"train": {"lr": 0.1, "out_dir": "a"}}, {"train": {"lr": 0.2, "out_dir": "b"}})
    [('train.lr', 0.1, 0.2)]
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import threading
import time
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # not POSIX: no flock
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "LEGACY_VALUES",
    "LOCK_FILE",
    "NON_NUMERIC_FIELDS",
    "RESUMABLE_FIELDS",
    "RunDirectoryLocked",
    "config_differences",
    "describe",
    "hold",
    "holder",
    "with_legacy_fields",
]

#: Name of the lock file in a run directory.
LOCK_FILE = ".lock"

#: Config fields (of DataConfig, SystemConfig and TrainConfig) that change no number of a run: the
#: machine (``device``, ``threads``), where and how often it writes (``out_dir``, ``log_every``,
#: ``checkpoint_every``, ``keep_checkpoints``, ``progress``), when one call stops early
#: (``max_time_s``), whether a bad image raises or is skipped (``strict``: a run that reads the
#: same images computes the same numbers) and what ``pretrain`` fills in from the source
#: (``num_classes``).
NON_NUMERIC_FIELDS = frozenset({
    "device", "threads", "out_dir", "log_every", "checkpoint_every", "keep_checkpoints", "progress",
    "max_time_s", "strict", "num_classes",
})  # fmt: skip

#: The values that reproduce a record written before these fields existed, where the field's
#: default changed behaviour (issue 19: the bases' own crops). A field a record lacks is compared as
#: this value, and :func:`with_legacy_fields` fills it in; a lacking field not listed here is taken to
#: keep its old behaviour at its default.
LEGACY_VALUES: dict[str, dict[str, Any]] = {
    "data": {"caption_view_scale": None, "dino_global_scale": None},
}

#: Fields that may change when a run resumes: ``steps`` (the run is extended or cut short).
RESUMABLE_FIELDS = frozenset({"steps"})


class RunDirectoryLocked(OSError):
    """Another live process writes to this run directory."""


def _plain(value: Any) -> Any:
    """``value`` as JSON gives it back (tuples become lists), for comparing stored and given."""
    return json.loads(json.dumps(value, default=list))


def config_differences(
    old: dict[str, Any], new: dict[str, Any], ignore: Iterable[str] = NON_NUMERIC_FIELDS
) -> list[tuple[str, Any, Any]]:
    """The fields where two run records (``{"data": {...}, "system": {...}, "train": {...}}``) differ.

    Compared: the fields both records have, in every part both have, except ``ignore``; a field one
    side lacks (added to a config since the other was written) is compared as its
    :data:`LEGACY_VALUES` entry where it has one, and is otherwise taken to keep its old behaviour.

    Args:
        old: the stored record (``run.json``, or a checkpoint's configs).
        new: the record given now.
        ignore: field names not compared (default :data:`NON_NUMERIC_FIELDS`).

    Returns:
        ``[("part.field", old value, new value), ...]`` in part then field order; empty if they match.
    """
    skip = frozenset(ignore)
    old, new = with_legacy_fields(old), with_legacy_fields(new)
    out = []
    for part in sorted(set(old) & set(new)):
        a, b = old[part], new[part]
        if not (isinstance(a, dict) and isinstance(b, dict)):
            continue
        for key in sorted(set(a) & set(b) - skip):
            va, vb = _plain(a[key]), _plain(b[key])
            if va != vb:
                out.append((f"{part}.{key}", va, vb))
    return out


def with_legacy_fields(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` (``{"data": {...}, ...}``) with the :data:`LEGACY_VALUES` of the fields it lacks."""
    out = dict(record)
    for part, values in LEGACY_VALUES.items():
        if isinstance(out.get(part), dict):
            out[part] = {**values, **out[part]}
    return out


def describe(diffs: list[tuple[str, Any, Any]]) -> str:
    """``config_differences`` as text: ``"train.lr=0.001 (given 0.002), ..."``."""
    return ", ".join(f"{k}={a!r} (given {b!r})" for k, a, b in diffs)


# -- the lock -------------------------------------------------------------------------------------

_held: dict[str, tuple[int, int, int]] = {}  # real path -> (fd, owning thread, depth)
_held_guard = threading.Lock()


def holder(out_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """What the lock file of ``out_dir`` says about its holder (``pid``, ``host``, ``started``),
    or None without one. The file may be stale: only :func:`hold` knows whether it is held."""
    try:
        info = json.loads((Path(out_dir) / LOCK_FILE).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _describe(info: dict[str, Any] | None) -> str:
    if not info:
        return "holder unknown"
    return f"pid {info.get('pid')} on host {info.get('host')!r}, since {info.get('started')}"


def _try_lock(path: Path) -> int | None:
    """An fd holding the flock of ``path`` (created if needed); None when flock is unsupported.

    Raises:
        RunDirectoryLocked: another process holds it.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise RunDirectoryLocked(
                    errno.EBUSY,
                    f"{path.parent} is in use by another run ({_describe(holder(path.parent))}); "
                    "wait for it to finish or stop it, or pass another --out-dir",
                ) from None
            warnings.warn(
                f"cannot lock {path} ({err}); a second process writing to {path.parent} will not be detected",
                RuntimeWarning,
                stacklevel=4,
            )
            return None
        # A holder that released deletes the file: if ours is no longer the one at `path`, the lock
        # we got guards nothing. Try again on the file now there.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


@contextlib.contextmanager
def hold(out_dir: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the lock of run directory ``out_dir`` (created if needed) for the ``with`` block.

    Re-entrant within one thread; another thread or process is refused.

    Raises:
        RunDirectoryLocked: another process (or thread) holds it, named in the message.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(out)
    me = threading.get_ident()
    with _held_guard:
        if key in _held:
            fd, owner, depth = _held[key]
            if owner != me:
                raise RunDirectoryLocked(
                    errno.EBUSY, f"{out} is in use by another thread of this process (pid {os.getpid()})"
                )
            _held[key] = (fd, owner, depth + 1)
            nested = True
        else:
            nested = False
    if nested:
        try:
            yield
        finally:
            with _held_guard:
                fd, owner, depth = _held[key]
                _held[key] = (fd, owner, depth - 1)
        return
    path = out / LOCK_FILE
    fd = _try_lock(path) if fcntl is not None else None
    if fd is not None:
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
    with _held_guard:
        _held[key] = (-1 if fd is None else fd, me, 1)
    try:
        yield
    finally:
        with _held_guard:
            del _held[key]
        if fd is not None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # while still held: no one else can have locked this file
            os.close(fd)
