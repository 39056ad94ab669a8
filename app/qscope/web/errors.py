"""Error pages: 404s that say what exists, 422s that say which parameter is wrong and why, never a 500 for
bad input. Each answers in the format asked for: HTML, or JSON for a `.json` path. A 404 echoes at most the first
ID_SHOWN characters of an id it was given (`shown`, `bounded`): a 60 KB id is not sent back."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.types import Scope

from qscope.explain.owners import NotOwner
from qscope.jobs import QueueFull
from qscope.live.runner import LiveUnavailable, TextTooLong
from qscope.steer.spec import SpecError
from qscope.store.queries import QueryTimeout
from qscope.web import urls
from qscope.web.catalog import NotFound
from qscope.web.openai_schema import openai_error
from qscope.web.render import is_partial, templates
from qscope.web.twins import wants_json

TITLES = {
    400: "Bad request",
    403: "Refused",
    404: "Not found",
    405: "Method not allowed",
    413: "Request too large",
    414: "URL too long",
    422: "Bad request",
    429: "Too many requests",
    500: "Server error",
    503: "Unavailable",
}


ID_SHOWN = 64  # characters of a user's id an error message echoes
# a quoted value in a message, as f"{value!r}" writes it: 'text' or "text", with backslash escapes inside
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'" + "|" + r'"(?:[^"\\]|\\.)*"')


def shown(value: str) -> str:
    """`value` as an error echoes it: its first ID_SHOWN characters, and "..." when there were more."""
    return value if len(value) <= ID_SHOWN else value[:ID_SHOWN] + "..."


def bounded(message: str) -> str:
    """`message` with each quoted value in it (the ids 404 messages name with !r) cut by `shown`; one home for
    every 404, whichever module wrote its message."""
    return _QUOTED.sub(lambda m: m[0][0] + shown(m[0][1:-1]) + m[0][-1], message)


class Unprocessable(Exception):
    """A request whose parameters are well-formed but unusable; the message tells the user what to change."""


def error_response(
    request: Request, status: int, message: str, exists: Sequence[tuple[str, str]] = (), what: str = ""
) -> Response:
    title = TITLES.get(status, "Error")
    if status == 404:
        message = bounded(message)
    if request.url.path.startswith("/v1/"):  # the OpenAI-compatible API: errors its clients can parse
        # OpenAI answers a request it cannot take with 400, never 422 (the schema documents /v1 that way)
        response: Response = openai_error(400 if status == 422 else status, message)
    elif wants_json(request) or request.url.path.startswith("/api/"):
        body = {"status": status, "error": message, "exists": [{"name": n, "url": u} for n, u in exists]}
        response = JSONResponse(body, status_code=status)
    else:
        # an htmx request gets the error alone, swapped in where its result would have gone (qscope.js lets
        # htmx swap error answers), so the page shows it next to the form that caused it
        context = {"status": status, "title": title, "message": message, "exists": list(exists), "what": what}
        template = "_error.html" if is_partial(request) else "error.html"
        response = templates.TemplateResponse(request, template, context, status_code=status)
    response.headers["Vary"] = "HX-Request"
    return response


def refusal(scope: Scope, status: int, message: str, headers: dict[str, str]) -> Response:
    """The error response of a request refused before routing (qscope.web.security: sizes, methods, bodies,
    cross-site writes)."""
    response = error_response(Request(scope), status, message)
    response.headers.update(headers)
    return response


# pydantic's words for a float field that got something else; the request models' floats are strict and finite
# (qscope.inputs.numbers.Finite), so "NaN" sent as text is told what would do, not that it is not a number
FLOAT_ERRORS = {"float_type", "float_parsing", "finite_number"}


def error_text(err: Any) -> str:
    """What one of pydantic's errors says, in the words every 422 and /v1 400 uses."""
    if err.get("type") in FLOAT_ERRORS:
        return "Input should be a finite number"
    return str(err.get("msg", "invalid"))


def validation_message(exc: RequestValidationError) -> str:
    """'page: must be at least 1; sort: ...' from pydantic's error list."""
    parts = []
    for err in exc.errors():
        loc = [str(x) for x in err.get("loc", ()) if x not in ("query", "path", "body")]
        name = ".".join(loc) or "request"
        given = err.get("input")
        shown = f" (got {given!r})" if isinstance(given, str | int | float) else ""
        parts.append(f"{name}: {error_text(err)}{shown}")
    return "; ".join(parts) or "invalid request"


def install(app: FastAPI) -> None:
    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> Response:
        return error_response(request, 404, exc.message, exc.exists, exc.what)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        return error_response(request, 422, "Bad parameter: " + validation_message(exc))

    @app.exception_handler(Unprocessable)
    @app.exception_handler(TextTooLong)
    async def unprocessable(request: Request, exc: Exception) -> Response:
        return error_response(request, 422, str(exc))

    @app.exception_handler(NotOwner)
    async def not_owner(request: Request, exc: NotOwner) -> Response:
        return error_response(request, 403, str(exc))

    @app.exception_handler(SpecError)
    async def bad_spec(request: Request, exc: SpecError) -> Response:
        return error_response(request, 422, f"Bad parameter: {exc}")

    @app.exception_handler(LiveUnavailable)
    @app.exception_handler(QueryTimeout)
    async def unavailable(request: Request, exc: Exception) -> Response:
        return error_response(request, 503, str(exc))

    @app.exception_handler(QueueFull)
    async def queue_full(request: Request, exc: QueueFull) -> Response:
        response = error_response(request, exc.status, str(exc))  # 503 the queue is full, 429 the client's share
        response.headers["Retry-After"] = str(exc.retry_after_s)
        return response

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 404:
            catalog = request.app.state.catalog
            exists = [(f"model {m.model_id}", urls.home() + "#" + m.model_id) for m in catalog]
            exists += [("search", urls.search()), ("inspect", urls.inspect())]
            return error_response(request, 404, f"Nothing at {shown(request.url.path)}.", exists, "pages that exist")
        response = error_response(request, exc.status_code, str(exc.detail))
        response.headers.update(exc.headers or {})
        if exc.status_code == 405:  # every GET route answers HEAD too (qscope.web.security)
            allowed = [m.strip() for m in response.headers.get("Allow", "").split(",") if m.strip()]
            if "GET" in allowed and "HEAD" not in allowed:
                allowed.append("HEAD")
            response.headers["Allow"] = ", ".join(allowed)
        return response
