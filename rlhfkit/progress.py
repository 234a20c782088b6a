"""Progress for long work, on stderr, so stdout stays clean for records.

On a terminal: a rich bar. Anywhere else (``2> log``, nohup, SLURM, CI): a plain line at every
10% of the work and at least every ``RLHFKIT_PROGRESS_SECONDS`` (default 30) seconds, with the
step, rate, ETA and whatever the caller reports (loss, reward), so hours of training are never
silent. ``advance(n, loss=0.4)`` moves it on and updates those fields.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class PlainProgress:
    """Progress lines for logs: every 10% and at least every ``interval`` seconds."""

    def __init__(self, description: str, total: int | None, completed: int = 0, interval: float | None = None,
                 stream=None, clock: Callable[[], float] = time.monotonic):
        self.description, self.total, self.done = description, total, completed
        self.start_done = completed
        self.interval = interval if interval is not None else float(os.environ.get("RLHFKIT_PROGRESS_SECONDS", "30"))
        self.stream = stream or sys.stderr
        self.clock = clock
        self.started = self.last_print = clock()
        self.next_tenth = self._tenth(completed) + 1
        self.fields: dict[str, Any] = {}

    def _tenth(self, done: int) -> int:
        return int(10 * done / self.total) if self.total else 0

    def advance(self, n: int = 1, **fields: Any) -> None:
        self.done += n
        self.fields.update(fields)
        now = self.clock()
        crossed = self.total and self._tenth(self.done) >= self.next_tenth
        if crossed or now - self.last_print >= self.interval:
            self.emit(now)
            self.next_tenth = self._tenth(self.done) + 1

    def emit(self, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        self.last_print = now
        elapsed = now - self.started
        rate = (self.done - self.start_done) / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.description}: {self.done}" + (f"/{self.total} ({self.done / self.total:.0%})" if self.total else "")]
        parts += [f"{k} {_fmt(v)}" for k, v in self.fields.items()]
        parts.append(f"{rate:.3g}/s" if rate >= 0.1 else f"{1 / rate:.3g}s each" if rate > 0 else "")
        if self.total and rate > 0:
            parts.append(f"elapsed {_duration(elapsed)}, ETA {_duration((self.total - self.done) / rate)}")
        self.stream.write(", ".join(p for p in parts if p) + "\n")
        self.stream.flush()


@contextmanager
def task_progress(description: str, total: int | None, completed: int = 0,
                  enabled: bool = True) -> Iterator[Callable[..., None]]:
    """Yield ``advance(n=1, **fields)``: a bar on a terminal, plain lines otherwise."""
    console = Console(stderr=True)
    if not enabled or os.environ.get("RLHFKIT_PROGRESS") == "off":
        yield lambda n=1, **fields: None
        return
    if not console.is_terminal:
        yield PlainProgress(description, total, completed).advance
        return
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
               TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total, completed=completed, info="")
        fields: dict[str, Any] = {}

        def advance(n: int = 1, **new: Any) -> None:
            fields.update(new)
            info = " ".join(f"{k} {_fmt(v)}" for k, v in fields.items())
            progress.update(task, advance=n, info=info)

        yield advance


def note(message: str) -> None:
    """A one-line status message on stderr (a phase starting), terminal or not."""
    Console(stderr=True, highlight=False).print(message, markup=False)
