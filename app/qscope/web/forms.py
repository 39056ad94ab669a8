"""HTML form bodies (application/x-www-form-urlencoded) read without a multipart parser: the forms of the notes and
lists pages post a few short fields, and a field given twice keeps its last value."""

from __future__ import annotations

from urllib.parse import parse_qsl

from fastapi import Request

from qscope.web.errors import Unprocessable


async def form_fields(request: Request) -> dict[str, str]:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise Unprocessable(f"Bad request: expected a form (application/x-www-form-urlencoded), got {kind or 'none'}.")
    body = (await request.body()).decode("utf-8", "replace")
    return dict(parse_qsl(body, keep_blank_values=True))
