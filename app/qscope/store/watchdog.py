"""One thread that interrupts DuckDB cursors that run past their deadline.

DuckDB has no statement timeout. A timer thread per request costs a thread start on every page (about a
tenth of a feature page's time when profiled); this keeps one daemon thread and a heap of deadlines instead.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable


class Watchdog:
    """`arm(interrupt, seconds)` returns a ticket; `disarm(ticket)` before the deadline cancels the call.
    Deadlines are on `clock`; tests pass one they move by hand (the thread waits at most the time left on that
    clock before it looks again, so it notices the move)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._heap: list[tuple[float, int]] = []
        self._armed: dict[int, Callable[[], object]] = {}
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def arm(self, interrupt: Callable[[], object], seconds: float) -> int:
        ticket = next(self._seq)
        with self._cond:
            self._armed[ticket] = interrupt
            heapq.heappush(self._heap, (self.clock() + seconds, ticket))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="query-watchdog", daemon=True)
                self._thread.start()
            self._cond.notify()
        return ticket

    def disarm(self, ticket: int) -> None:
        with self._cond:
            self._armed.pop(ticket, None)

    def pending(self) -> int:
        """Tickets armed, neither disarmed nor fired (a firing one counts until its interrupt has returned)."""
        with self._cond:
            return len(self._armed)

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._heap and self._heap[0][1] not in self._armed:
                    heapq.heappop(self._heap)  # disarmed: drop without waiting for its deadline
                if not self._heap:
                    self._cond.wait()
                    continue
                deadline, ticket = self._heap[0]
                wait = deadline - self.clock()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
                interrupt = self._armed.get(ticket)
            if interrupt is not None:
                interrupt()
                with self._cond:  # pending until it has been interrupted (tests wait for that)
                    self._armed.pop(ticket, None)


WATCHDOG = Watchdog()
