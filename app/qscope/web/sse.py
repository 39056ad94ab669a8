"""Server-sent events: the one framing every stream uses (live steering, an evaluation's progress, `/v1`'s chunks),
encoded by FastAPI's own `format_sse_event` and answered as its `EventSourceResponse`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi.sse import EventSourceResponse, format_sse_event

# no cache may keep a stream, and no proxy may buffer it (nginx reads X-Accel-Buffering)
HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}

# what an endpoint that streams declares in its OpenAPI entry
DOCUMENTED: dict[int | str, dict[str, Any]] = {200: {"content": {"text/event-stream": {}}}}


def event(data: Any, kind: str | None = None) -> bytes:
    """One event: `data` as JSON, or a string sent as it is (JSON made already, or `/v1`'s `[DONE]`), named `kind`
    when given."""
    return format_sse_event(data_str=data if isinstance(data, str) else json.dumps(data), event=kind)


def retry(ms: int) -> bytes:
    """How long a browser waits before it reconnects to a stream that ended."""
    return format_sse_event(retry=ms)


def stream(events: AsyncIterator[bytes]) -> EventSourceResponse:
    return EventSourceResponse(events, headers=HEADERS)
