"""The way a steering job's events reach the request that waits for them: the worker thread emits (kind, data)
pairs into an asyncio queue of the request's event loop, and the request reads them, noticing when its client
has gone. Used by /api/steer and the OpenAI-compatible /v1 routes.

The request also keeps the job's queue-wait limit: when the limit passes and the job has not started, the request
withdraws it (`SteerWorker.expire`, which answers it with a WaitedTooLong error), so a request never waits past
the limit for the worker to come round to it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi import Request

from qscope.steer.worker import SteerJob, SteerWorker

POLL_S = 0.5  # how often a waiting request checks that its client is still there


def channel() -> tuple[asyncio.Queue, Callable[[str, Any], None]]:
    """An asyncio queue and a thread-safe emit that feeds it from the worker thread."""
    loop = asyncio.get_running_loop()
    q: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def emit(kind: str, data: Any) -> None:
        loop.call_soon_threadsafe(q.put_nowait, (kind, data))

    return q, emit


class Waiting:
    """A submitted job's queue-wait limit, kept by the request that waits for it."""

    def __init__(self, worker: SteerWorker, job: SteerJob) -> None:
        self.worker, self.job = worker, job
        self.at = worker.deadline(job)  # on the worker's clock; None: no limit (or checked already)

    def timeout(self, poll_s: float | None) -> float | None:
        """How long to wait for the next event before looking again: until the limit, at most poll_s."""
        if self.at is None:
            return poll_s
        left = max(0.0, self.at - self.worker.clock())
        return left if poll_s is None else min(poll_s, left)

    def check(self) -> None:
        """Past the limit: withdraw the job if it still waits (the worker emits its WaitedTooLong error)."""
        if self.at is not None and self.worker.clock() >= self.at:
            self.at = None  # once: a job that has started runs to its end
            self.worker.expire(self.job)


async def outcome(request: Request, q: asyncio.Queue, waiting: Waiting | None = None) -> tuple[str, Any] | None:
    """The job's "done" or "error" event (token events are passed over); None once the client has gone."""
    while (event := await next_event(request, q, waiting)) is not None:
        if event[0] in ("done", "error"):
            return event
    return None


async def next_event(
    request: Request | None, q: asyncio.Queue, waiting: Waiting | None = None
) -> tuple[str, Any] | None:
    """The next (kind, data) the worker sent; None once the client has disconnected (a streaming response, whose
    request is None here, learns that from its generator being closed)."""
    while True:
        timeout = POLL_S if request is not None else None
        if waiting is not None:
            timeout = waiting.timeout(timeout)
        if timeout is None:
            return await q.get()
        try:
            return await asyncio.wait_for(q.get(), timeout=timeout)
        except TimeoutError:
            if waiting is not None:
                waiting.check()
            if request is not None and await request.is_disconnected():
                return None
