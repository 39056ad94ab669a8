"""Progress of an explain run: a bar in a terminal, plain lines with rate and ETA in a log (every few seconds).

Per-feature failures are printed as they happen, one line each, in both cases.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

LOG_EVERY_S = 5.0


class RunProgress:
    """Counts finished features; `advance` after each, `say` for a line of its own."""

    def __init__(self, console: Console, total: int, what: str = "explain") -> None:
        self.console, self.total, self.what = console, total, what
        self.done = self.failed = 0
        self.start = self._last = time.monotonic()
        self.bar: Progress | None = None
        if console.is_terminal:
            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=console,
            )
            self.task = self.bar.add_task(what, total=total, rate="")
            self.bar.start()

    def say(self, text: str, style: str = "") -> None:
        self.console.print(text, style=style or None, markup=False, highlight=False, soft_wrap=True)

    @property
    def per_min(self) -> float:
        return 60 * self.done / max(time.monotonic() - self.start, 1e-9)

    def advance(self, ok: bool) -> None:
        self.done += 1
        self.failed += not ok
        rate = f"{self.per_min:.1f} features/min" + (f", {self.failed} failed" if self.failed else "")
        if self.bar is not None:
            self.bar.update(self.task, advance=1, rate=rate)
            return
        now = time.monotonic()
        if now - self._last >= LOG_EVERY_S or self.done == self.total:
            self._last = now
            left = (self.total - self.done) / (self.per_min / 60) if self.done else float("nan")
            eta = f"ETA {left:.0f} s" if left == left else "ETA unknown"
            self.say(f"{self.what}: {self.done}/{self.total} features, {rate}, {eta}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
