"""Progress of long work on stderr: a bar on a terminal, a plain line now and then in a log.

One helper for every long loop of ``vpt_env`` and ``agents`` (training, rendering probe views,
extracting features, fitting probes, reading images, rollouts, PPO). Where stderr is a terminal
it draws a tqdm bar; where it is not (a log file, a pipe) it writes one plain line every
``interval_s`` seconds, and a last line when the work ends if it wrote any, so a short job
leaves a log untouched. stdout is never written: tables printed there stay clean.

Example:
    >>> import io
    >>> log, ticks = io.StringIO(), iter([0.0, 4.0, 11.0, 15.0, 23.0, 25.0])
    >>> with Progress(4, "probe", unit="epochs", stream=log, clock=lambda: next(ticks)) as bar:
    ...     for _ in range(4):
    ...         bar.update()
    >>> print(log.getvalue(), end="")
    probe: 2/4 epochs (50%), 11 s, about 11 s left
    probe: 4/4 epochs (100%), 23 s
    probe: done, 4/4 epochs in 25 s
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO, TypeVar

__all__ = ["INTERVAL_S", "Progress", "format_seconds", "is_terminal", "ppo_callback", "track"]

#: Seconds between two plain lines when stderr is not a terminal.
INTERVAL_S = 10.0

T = TypeVar("T")


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is an interactive terminal (False for files, pipes and captures)."""
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (ValueError, OSError):  # a closed stream
        return False


def format_seconds(seconds: float) -> str:
    """``"42 s"``, ``"3 min 05 s"`` or ``"1 h 02 min"``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class Progress:
    """Progress of one piece of work: ``update`` as it advances, ``close`` (or ``with``) at the end.

    Args:
        total: units of work in all (None: unknown; the lines then give no percentage).
        desc: what is being done, first on every line (``"training"``, ``"linear probe"``).
        unit: name of one unit (``"steps"``, ``"images"``).
        enabled: False draws and writes nothing.
        initial: units already done (a resumed run).
        interval_s: seconds between plain lines when ``stream`` is not a terminal (None:
            :data:`INTERVAL_S`, read at construction).
        stream: where to write; None: ``sys.stderr`` at construction.
        clock: seconds of a monotonic clock (tests pass a fake one).

    Attributes:
        mode: ``"bar"`` (a terminal), ``"lines"`` (anything else) or ``"off"`` (not enabled).
        n: units done so far.
    """

    def __init__(
        self,
        total: int | None,
        desc: str,
        *,
        unit: str = "it",
        enabled: bool = True,
        initial: int = 0,
        interval_s: float | None = None,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        interval_s = INTERVAL_S if interval_s is None else interval_s
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s!r}")
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.stream = sys.stderr if stream is None else stream
        self.mode = "off" if not enabled else "bar" if is_terminal(self.stream) else "lines"
        self.interval_s, self.clock = float(interval_s), clock
        self.postfix: dict[str, Any] = {}
        self._bar: Any = None
        self._initial = initial
        self._start = self._last = clock() if self.mode == "lines" else 0.0
        self._wrote = False
        self._closed = False
        if self.mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(
                total=total, initial=initial, desc=desc, unit=f" {unit}", file=self.stream, dynamic_ncols=True
            )

    def update(self, n: int = 1) -> None:
        """``n`` more units done."""
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.mode == "lines":
            now = self.clock()
            if now - self._last >= self.interval_s:
                self._last = now
                self._line(self._status(now))

    def set_postfix(self, **values: Any) -> None:
        """Figures shown after the count (``loss="0.412"``), on the bar and on later lines."""
        self.postfix = dict(values)
        if self._bar is not None:
            self._bar.set_postfix(values, refresh=False)

    def close(self, failed: bool = False) -> None:
        """End the bar; in lines mode, a last line if any was written: ``done`` when the count
        reached its total (or there is none) and nothing failed, else ``stopped``. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self.mode == "lines" and self._wrote:
            count = f"{self.n}/{self.total}" if self.total is not None else str(self.n)
            elapsed = format_seconds(self.clock() - self._start)
            short = self.total is not None and self.n < self.total
            word = "stopped at" if failed or short else "done,"
            self._line(f"{word} {count} {self.unit} in {elapsed}{self._postfix()}")

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(failed=exc_type is not None)

    def _postfix(self) -> str:
        return "".join(f", {k} {v}" for k, v in self.postfix.items())

    def _status(self, now: float) -> str:
        elapsed = now - self._start
        if not self.total:
            return f"{self.n} {self.unit}, {format_seconds(elapsed)}{self._postfix()}"
        pct = 100 * self.n / self.total
        text = f"{self.n}/{self.total} {self.unit} ({pct:.0f}%), {format_seconds(elapsed)}"
        done = self.n - self._initial
        if 0 < done and self.n < self.total:
            text += f", about {format_seconds(elapsed / done * max(self.total - self.n, 0))} left"
        return text + self._postfix()

    def _line(self, text: str) -> None:
        self._wrote = True
        self.stream.write(f"{self.desc}: {text}\n")
        self.stream.flush()


def track(iterable: Iterable[T], desc: str, total: int | None = None, **kwargs: Any) -> Iterator[T]:
    """Yield the items of ``iterable`` while a :class:`Progress` counts them (``total``: None takes
    ``len(iterable)`` where it has one; ``kwargs`` go to :class:`Progress`)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with Progress(total, desc, **kwargs) as bar:
        for item in iterable:
            yield item
            bar.update()


def ppo_callback(total: int, desc: str = "PPO", **kwargs: Any) -> Any:
    """A Stable-Baselines3 callback that counts env steps in a :class:`Progress` (pass it to
    ``model.learn(callback=...)``; ``kwargs`` go to :class:`Progress`)."""
    from stable_baselines3.common.callbacks import BaseCallback

    class _ProgressCallback(BaseCallback):
        def _on_training_start(self) -> None:
            self.bar = Progress(total, desc, unit="steps", **kwargs)

        def _on_step(self) -> bool:
            self.bar.update(self.training_env.num_envs)
            return True

        def _on_training_end(self) -> None:
            self.bar.close()

    return _ProgressCallback()
