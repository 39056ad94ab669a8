"""The way a steering job's events reach the request that waits for them: the worker thread emits (kind, data)
pairs into an asyncio queue of the request's event loop, and the request reads them, noticing when its client
has gone. Used by /api/steer and the OpenAI-compatible /v1 routes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi import Request

POLL_S = 0.5  # how often a waiting request checks that its client is still there


def channel() -> tuple[asyncio.Queue, Callable[[str, Any], None]]:
    """An asyncio queue and a thread-safe emit that feeds it from the worker thread."""
    loop = asyncio.get_running_loop()
    q: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def emit(kind: str, data: Any) -> None:
        loop.call_soon_threadsafe(q.put_nowait, (kind, data))

    return q, emit


async def outcome(request: Request, q: asyncio.Queue) -> tuple[str, Any] | None:
    """The job's "done" or "error" event (token events are passed over); None once the client has gone."""
    while (event := await next_event(request, q)) is not None:
        if event[0] in ("done", "error"):
            return event
    return None


async def next_event(request: Request, q: asyncio.Queue) -> tuple[str, Any] | None:
    """The next (kind, data) the worker sent; None once the client has disconnected."""
    while True:
        try:
            return await asyncio.wait_for(q.get(), timeout=POLL_S)
        except TimeoutError:
            if await request.is_disconnected():
                return None
