"""Progress and time of every phase of a harvest: a rich bar per phase in a terminal, plain lines with the rate
and the time left where the output is not a terminal (a log file, CI), and the seconds each phase took.

The phases, in the order a harvest meets them (PHASES): the pass over the corpus, logit effects, neighbors,
labels, cards, the write and the search index. A phase may run in several stretches (the sharded harvest
finishes SAE by SAE, so its phases take turns): its clock runs only inside `Phases.run`, so its rate and time
left count the time it really ran.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

PHASES = ("pass", "logit effects", "neighbors", "labels", "cards", "write", "index")
PLAIN_EVERY_S = 15.0  # seconds between two plain lines of one phase (besides its first and last)

Advance = Callable[[float], None]


@dataclass
class _Phase:
    name: str
    total: float
    unit: str
    done: float = 0.0
    done_before: float = 0.0  # done before this call (a resumed pass): not counted in the rate
    seconds: float = 0.0  # inside run() only
    started: bool = False
    finished: bool = False
    last_line: float = 0.0  # perf_counter of the last plain line
    task: TaskID | None = None

    def rate(self) -> float:
        return (self.done - self.done_before) / self.seconds if self.seconds > 0 else 0.0

    def rate_text(self) -> str:
        return f"{self.rate():,.0f} {self.unit}/s" if self.seconds > 0 and self.done > self.done_before else ""

    def eta_text(self) -> str:
        if self.total and self.done >= self.total * (1 - 1e-9):
            return f"{self.seconds:.1f} s"
        rate = self.rate()
        return f"~{_clock((self.total - self.done) / rate)} left" if rate > 0 else ""


class _Clock:
    """advance(n) of one stretch of a phase: counts n units done and the seconds since the last call."""

    def __init__(self, phase: _Phase, show: Callable[[_Phase], None]) -> None:
        self.phase, self.show, self.t = phase, show, time.perf_counter()

    def tick(self) -> None:
        now = time.perf_counter()
        self.phase.seconds += now - self.t
        self.t = now

    def __call__(self, n: float) -> None:
        self.tick()
        self.phase.done += n
        self.show(self.phase)


def _clock(seconds: float) -> str:
    s = int(seconds + 0.5)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class Phases:
    """The phases of one harvest. Use as a context manager (it owns the terminal's live display):

        with Phases(console) as phases:
            phases.add("logit effects", total=n_features, unit="features")
            with phases.run("logit effects") as advance:
                ...; advance(chunk)

    plain: plain lines instead of bars (default: when the console is not a terminal). every_s: seconds between
    two plain lines of a phase. `seconds` holds each phase's time so far.
    """

    def __init__(self, console: Console, plain: bool | None = None, every_s: float = PLAIN_EVERY_S) -> None:
        self.console, self.every_s = console, every_s
        self.plain = (not console.is_terminal) if plain is None else plain
        self._phases: dict[str, _Phase] = {}
        self._bar: Progress | None = None
        if not self.plain:
            self._bar = Progress(
                TextColumn("{task.description:<13}"),
                BarColumn(),
                TextColumn("{task.completed:,.0f}/{task.total:,.0f} {task.fields[unit]}"),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("{task.fields[eta]}"),
                console=console,
            )

    @classmethod
    def quiet(cls) -> Phases:
        """Phases that show nothing and only keep the time (tables built outside a harvest, tests)."""
        return cls(Console(quiet=True), plain=True)

    def __enter__(self) -> Phases:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    @property
    def seconds(self) -> dict[str, float]:
        return {name: p.seconds for name, p in self._phases.items()}

    def add(self, name: str, total: float, unit: str, done: float = 0.0) -> None:
        """Declare a phase of `total` units (`done` of them done already, e.g. before a resume)."""
        phase = self._phases.get(name)
        if phase is not None:  # declared again (a total learnt on the way): the work adds up
            unknown = phase.total == 0
            phase.total += total
            phase.finished = False
            if unknown and phase.started and phase.total:
                self._line(phase, "started")
        else:
            phase = self._phases[name] = _Phase(name, max(total, 0.0), unit, done, done)
        if self._bar is not None:
            if phase.task is None:
                phase.task = self._bar.add_task(
                    name,
                    total=phase.total,
                    # rich annotates add_task's `completed` as int, but a task's progress is a float (update takes one)
                    completed=done,  # type: ignore[arg-type]
                    unit=unit,
                    rate="",
                    eta="",
                )
            else:
                self._bar.update(phase.task, total=phase.total)

    @contextmanager
    def run(self, name: str) -> Iterator[Advance]:
        """Time one stretch of phase `name` (declare it with add first); yields advance(n)."""
        phase = self._phases[name]
        if not phase.started:
            phase.started = True
            if phase.total:  # else once add() gives it one
                self._line(phase, "started")
        clock = _Clock(phase, self._show)
        try:
            yield clock
        finally:
            clock.tick()
            self._show(phase)

    def _show(self, phase: _Phase) -> None:
        if self._bar is not None and phase.task is not None:
            self._bar.update(phase.task, completed=phase.done, rate=phase.rate_text(), eta=phase.eta_text())
            return
        now = time.perf_counter()
        if phase.total and phase.done >= phase.total * (1 - 1e-9) and not phase.finished:  # fractions add up
            phase.finished = True
            self._line(phase, "done")
        elif now - phase.last_line >= self.every_s and not phase.finished:
            self._line(phase, "")

    def _line(self, phase: _Phase, what: str) -> None:
        if not self.plain:
            return
        phase.last_line = time.perf_counter()
        if what == "done":
            text = f"{phase.name}: done, {phase.done:,.0f} {phase.unit} in {phase.seconds:.1f} s ({phase.rate_text()})"
        else:
            share = f" ({phase.done / phase.total:.0%})" if phase.total else ""
            text = f"{phase.name}: {phase.done:,.0f}/{phase.total:,.0f} {phase.unit}{share}"
            text += "".join(f", {t}" for t in (phase.rate_text(), phase.eta_text()) if t)
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)


def format_phases(seconds: dict[str, float]) -> str:
    """'pass 12.3 s, logit effects 1.2 s, ...' in PHASES order (phases that did not run are left out)."""
    names = [n for n in PHASES if n in seconds] + [n for n in seconds if n not in PHASES]
    return ", ".join(f"{n} {seconds[n]:.1f} s" for n in names)


def scaled(advance: Advance, n: float) -> Advance:
    """advance(n x fraction): a writer's fraction of one SAE, counted in its features."""

    def step(fraction: float) -> None:
        advance(n * fraction)

    return step
