"""The progress of a long command-line job, phase by phase: the one reporter of the harvest, the demo build,
explain, discover, footprint and steer-eval.

In a terminal each phase gets a rich bar with its count, rate, time so far and time left. Where the output is not
a terminal (a log file, CI, `docker logs`) each phase prints plain lines instead, at a bounded rate: when it
starts, at its first step (so a log shows its pace at once), at each tenth, at least every `every_s` seconds
while it moves, and when it is done. So a phase of any length prints at most a dozen lines plus one per
`every_s`, and a slow one is never silent for long.

A phase runs in stretches: its clock runs inside `run(name)` (a phase may run in several, as the sharded harvest's
phases take turns SAE by SAE), or from its first `update`/`advance` until it is done, so its rate and time left
count the time it really ran. Its total may come late (`add` again, or `update(total=)`) or never (no time left
then). The clock is a parameter: tests pass their own instead of sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskID
from rich.text import Text

PLAIN_EVERY_S = 15.0  # seconds between two plain lines of a moving phase (besides its first, tenths and last)

Advance = Callable[[float], None]
Clock = Callable[[], float]


@dataclass
class Phase:
    """One phase: what is done of how much (total 0: not known), and the seconds it has run."""

    name: str
    total: float
    unit: str
    done: float = 0.0
    done_before: float = 0.0  # done before this job (a resumed pass): not counted in the rate
    info: str = ""  # the caller's own words beside the figures (a loss, a count of failures, a sub-phase)
    seconds: float = 0.0  # run time up to the last tick
    since: float | None = None  # the clock at the last tick while a stretch is open
    implicit: bool = False  # its stretch was opened by an update and closes when the phase is done
    started: bool = False
    finished: bool = False
    stepped: bool = False  # its first step after the start has had its line
    tenth: int = 0  # the tenth of the last plain line
    last_line: float = 0.0  # the clock at the last plain line
    task: TaskID | None = None

    @property
    def is_done(self) -> bool:
        return bool(self.total) and self.done >= self.total * (1 - 1e-9)  # fractions add up

    def rate(self) -> float:
        moved = self.done - self.done_before
        return moved / self.seconds if self.seconds > 0 and moved > 0 else 0.0

    def left(self) -> float | None:
        """Seconds left at the rate so far; None when there is no total or no rate yet."""
        rate = self.rate()
        return max(self.total - self.done, 0.0) / rate if self.total and rate > 0 else None

    def count_text(self) -> str:
        of = f"/{_amount(self.total)}" if self.total else ""
        return _units(f"{_amount(self.done)}{of}", self.unit)

    def rate_text(self) -> str:
        rate = self.rate()
        return _units(_rate(rate), self.unit) + "/s" if rate > 0 else ""

    def left_text(self) -> str:
        if self.is_done:
            return f"{self.seconds:.1f} s"
        left = self.left()
        return f"~{clock_text(left)} left" if left is not None else ""


# A plain line of a phase at an event ("start", "step" or "done"); None: no line.
LineFormat = Callable[[Phase, str], "str | None"]


def counts_line(phase: Phase, event: str) -> str | None:
    """'pass: 4,096/8,192 tokens (50%), 69 tokens/s, ~0:01:00 left' and 'pass: done, 8,192 tokens in 118.2 s
    (69 tokens/s)'; a start before its total is known waits for it."""
    if event == "start" and not phase.total:
        return None
    info = f", {phase.info}" if phase.info else ""
    if event == "done":
        rate = f" ({phase.rate_text()})" if phase.rate_text() else ""
        return f"{phase.name}: done, {_units(_amount(phase.done), phase.unit)} in {phase.seconds:.1f} s{rate}{info}"
    share = f" ({phase.done / phase.total:.0%})" if phase.total else ""
    text = f"{phase.name}: {phase.count_text()}{share}"
    return text + "".join(f", {t}" for t in (phase.rate_text(), phase.left_text()) if t) + info


def elapsed_line(phase: Phase, event: str) -> str | None:
    """'train mini-Qwen: 40/100 loss 3.211 (52s, about 78s left)': the caller's info and the time, once the
    phase has taken a step (a line at its start would have no pace to tell)."""
    if phase.done <= phase.done_before:
        return None
    left = phase.left() or 0.0
    return f"{phase.name}: {phase.count_text()} {phase.info} ({phase.seconds:.0f}s, about {left:.0f}s left)"


class PhaseProgress:
    """The phases of one job. Use as a context manager (it owns the terminal's live display):

        with PhaseProgress(console) as progress:
            progress.add("logit effects", total=n_features, unit="features")
            with progress.run("logit effects") as advance:
                ...; advance(chunk)
            ...
            progress.update("evaluate", done=rows, total=n_rows, info="measuring")  # or by updates alone

    plain: plain lines instead of bars (default: when the console is not a terminal). every_s: the longest
    silence of a moving phase in plain lines. line: the wording of a plain line. clock: the time source.
    `seconds` holds each phase's run time so far.
    """

    def __init__(
        self,
        console: Console,
        plain: bool | None = None,
        every_s: float = PLAIN_EVERY_S,
        line: LineFormat = counts_line,
        clock: Clock = time.perf_counter,
    ) -> None:
        self.console, self.every_s, self.line, self.clock = console, every_s, line, clock
        self.plain = (not console.is_terminal) if plain is None else plain
        self._phases: dict[str, Phase] = {}
        self._bars: Progress | None = None
        if not self.plain:
            self._bars = Progress(
                _Column(lambda p: p.name),
                BarColumn(),
                _Column(Phase.count_text),
                _Column(Phase.rate_text),
                _Column(lambda p: clock_text(self._elapsed(p))),
                _Column(Phase.left_text),
                _Column(lambda p: p.info),
                console=console,
                get_time=clock,
            )

    @classmethod
    def quiet(cls) -> PhaseProgress:
        """Phases that show nothing and only keep the time (work done outside a command, tests)."""
        return cls(Console(quiet=True), plain=True)

    def __enter__(self) -> PhaseProgress:
        if self._bars is not None:
            self._bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for phase in self._phases.values():
            self._stop(phase)
        if self._bars is not None:
            self._bars.stop()

    @property
    def seconds(self) -> dict[str, float]:
        return {name: p.seconds for name, p in self._phases.items()}

    def say(self, text: str, style: str = "") -> None:
        """A line of its own (above the bars in a terminal)."""
        self.console.print(text, style=style or None, markup=False, highlight=False, soft_wrap=True)

    def add(self, name: str, total: float = 0.0, unit: str = "", done: float = 0.0) -> None:
        """Declare a phase of `total` units (0: not known yet; `done` of them done already, e.g. before a resume).
        Declared again, the totals add up (work found on the way)."""
        phase = self._phases.get(name)
        if phase is None:
            phase = self._phases[name] = Phase(name, max(total, 0.0), unit, done, done)
            if self._bars is not None:
                # rich annotates add_task's `completed` as int, but a task's progress is a float (update takes one)
                phase.task = self._bars.add_task(name, total=phase.total or None, completed=done, phase=phase)  # type: ignore[arg-type]
            return
        self._set_total(phase, phase.total + total)

    @contextmanager
    def run(self, name: str) -> Iterator[Advance]:
        """Time one stretch of phase `name` (declared with add); yields advance(n)."""
        phase = self._phases[name]
        opened = self._start(phase, implicit=False)
        try:
            yield lambda n: self.advance(name, n)
        finally:
            if opened:
                self._stop(phase)
            self._show(phase, "step")

    def start(self, name: str) -> None:
        """Start phase `name`'s clock now (declared with add); it runs until the phase is done or the job ends."""
        self._start(self._phases[name], implicit=True)

    def advance(self, name: str, n: float = 1.0, info: str | None = None) -> None:
        """n more units of phase `name` done (declared on the way, unit-less, when new)."""
        phase = self._phases.get(name)
        self.update(name, done=(phase.done if phase else 0.0) + n, info=info)

    def update(self, name: str, done: float | None = None, total: float | None = None, info: str | None = None) -> None:
        """Set what phase `name` has done, its total (0: not known) or its info; a phase not running yet starts."""
        if name not in self._phases:
            self.add(name)
        phase = self._phases[name]
        if total is not None and total != phase.total:
            self._set_total(phase, total)
        if info is not None:
            phase.info = info
        if not phase.started and done is not None:  # its first word: what was done before is not in its rate
            phase.done = phase.done_before = done
        if phase.since is None and not phase.finished:
            self._start(phase, implicit=True)
        if done is not None:
            phase.done = done
        self._show(phase, "step")

    def _set_total(self, phase: Phase, total: float) -> None:
        unknown = not phase.total
        phase.total, phase.finished = max(total, 0.0), False
        if unknown and phase.started and phase.total:
            self._line(phase, "start")  # the start it could not say without a total
        if self._bars is not None and phase.task is not None:
            self._bars.update(phase.task, total=phase.total or None)

    def _start(self, phase: Phase, implicit: bool) -> bool:
        """Open a stretch of the phase (False: one is open already); its first says it started."""
        if phase.since is not None:
            return False
        phase.since, phase.implicit = self.clock(), implicit
        if not phase.started:
            phase.started, phase.tenth = True, self._tenth(phase)
            self._line(phase, "start")
        return True

    def _stop(self, phase: Phase) -> None:
        self._tick(phase)
        phase.since = None

    def _tick(self, phase: Phase) -> None:
        if phase.since is not None:
            now = self.clock()
            phase.seconds += now - phase.since
            phase.since = now

    def _elapsed(self, phase: Phase) -> float:
        return phase.seconds + (self.clock() - phase.since if phase.since is not None else 0.0)

    def _tenth(self, phase: Phase) -> int:
        return int(10 * phase.done / phase.total) if phase.total else 0

    def _show(self, phase: Phase, event: str) -> None:
        self._tick(phase)
        if phase.is_done and phase.implicit and phase.since is not None:
            self._stop(phase)
        if self._bars is not None and phase.task is not None:
            self._bars.update(phase.task, completed=phase.done)
            return
        if phase.finished or not phase.started:
            return
        if phase.is_done:
            phase.finished = True
            self._line(phase, "done")
        elif phase.done > phase.done_before and not phase.stepped:
            phase.stepped = True
            self._line(phase, event)
        elif self._tenth(phase) > phase.tenth or self.clock() - phase.last_line >= self.every_s:
            self._line(phase, event)

    def _line(self, phase: Phase, event: str) -> None:
        if not self.plain:
            return
        phase.last_line, phase.tenth = self.clock(), max(phase.tenth, self._tenth(phase))
        text = self.line(phase, event)
        if text is not None:
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def reporter(self) -> Callable[[str, float, float], None]:
        """report(phase, done, total) as the job functions call it (total 0: not known): a phase per name."""

        def report(name: str, done: float, total: float) -> None:
            self.update(name, done=done, total=total)

        return report


class _Column(ProgressColumn):
    """A column of the bars in words, from the live phase (so the times move between updates)."""

    def __init__(self, text: Callable[[Phase], str]) -> None:
        super().__init__()
        self.text = text

    def render(self, task: Task) -> Text:
        return Text(self.text(task.fields["phase"]))


def clock_text(seconds: float) -> str:
    """'1:02:03' (h:mm:ss)."""
    s = int(seconds + 0.5)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _units(amount: str, unit: str) -> str:
    return f"{amount} {unit}" if unit else amount


def _amount(x: float) -> str:
    return f"{x:,.0f}"


def _rate(rate: float) -> str:
    """Whole units from 10 a second up, one decimal from 1, two figures below (a slow job still shows a pace)."""
    return f"{rate:,.0f}" if rate >= 10 else f"{rate:.1f}" if rate >= 1 else f"{rate:.2g}"
