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
    """`arm(interrupt, seconds)` returns a ticket; `disarm(ticket)` before the deadline cancels the call."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int]] = []
        self._armed: dict[int, Callable[[], object]] = {}
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def arm(self, interrupt: Callable[[], object], seconds: float) -> int:
        ticket = next(self._seq)
        with self._cond:
            self._armed[ticket] = interrupt
            heapq.heappush(self._heap, (time.monotonic() + seconds, ticket))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="query-watchdog", daemon=True)
                self._thread.start()
            self._cond.notify()
        return ticket

    def disarm(self, ticket: int) -> None:
        with self._cond:
            self._armed.pop(ticket, None)

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._heap and self._heap[0][1] not in self._armed:
                    heapq.heappop(self._heap)  # disarmed: drop without waiting for its deadline
                if not self._heap:
                    self._cond.wait()
                    continue
                deadline, ticket = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
                interrupt = self._armed.pop(ticket, None)
            if interrupt is not None:
                interrupt()


WATCHDOG = Watchdog()
