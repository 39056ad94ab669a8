"""The app's OpenAPI schema (/-/openapi.json) made to say what the server really answers.

FastAPI documents every route as `200 application/json` plus its own 422 body. Here, per operation: pages give
`text/html`, and each page's `.json` twin (qscope.web.twins) is listed as a path of its own that gives JSON, as
`/api/` does; every error the app can return (404, 413, 414, 422, 429, 503) is listed with the body it really has
(`Error` in JSON, the error page in HTML). Clients and schema-driven tests rely on this.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import iter_route_contexts

from qscope.web.security import DISCOVER_PATHS, INSPECT_PATHS, STEER_PATHS
from qscope.web.twins import SUFFIX, TwinRoute

ERROR = {
    "type": "object",
    "required": ["status", "error"],
    "properties": {
        "status": {"type": "integer", "description": "The HTTP status, again."},
        "error": {"type": "string", "description": "What went wrong and what to change."},
        "exists": {
            "type": "array",
            "description": "For a 404: pages that do exist.",
            "items": {"type": "object", "properties": {"name": {"type": "string"}, "url": {"type": "string"}}},
        },
    },
}
DESCRIPTION = (
    "SAE features of Qwen models: HTML pages with `.json` twins, the steering API, and discovery "
    "(ranked features from examples, detectors, dataset footprints)."
)
HTML = {"text/html": {"schema": {"type": "string"}}}
ERROR_JSON = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
REASONS = {
    404: "Not found (the body lists what exists)",
    413: "Request body too large",
    414: "URL too long",
    422: "Bad parameter",
    429: "Too many requests from this client (see Retry-After)",
    503: "Busy or unavailable: steering queue full (see Retry-After), model not loadable, query timeout",
}


def _kind(path: str, op: dict[str, Any]) -> str:
    """'json' or 'html'."""
    typed = op["responses"].get("200", {}).get("content", {}).get("application/json", {}).get("schema")
    if path.endswith(SUFFIX) or path.startswith("/api/") or typed:  # a response_model: a JSON-only route
        return "json"
    return "html"


def _add_twins(app: FastAPI, paths: dict[str, Any]) -> None:
    """A `.json` path beside every page path (TwinRoute), with its own operation ids. FastAPI keeps each included
    router as one entry of `app.routes`; `iter_route_contexts` reaches the routes inside, with their full paths."""
    for ctx in iter_route_contexts(app.routes):
        path = ctx.path_format or ""
        if path.startswith("/-/"):  # actions (the random feature is a redirect), not pages: no twin to list
            continue
        if isinstance(ctx.original_route, TwinRoute) and path in paths:
            ops = copy.deepcopy(paths[path])
            for op in ops.values():
                op["operationId"] = op.get("operationId", "") + "_json"
            paths["/" + SUFFIX if path == "/" else path + SUFFIX] = ops  # the home page's twin is /.json


def _document(path: str, method: str, op: dict[str, Any]) -> None:
    kind, responses = _kind(path, op), op["responses"]
    ok = responses.setdefault("200", {"description": "Successful Response"})
    if kind == "html":
        ok["content"] = HTML
    errors = {404, 414, 422, 503}
    if method == "post":
        errors.add(413)
    if path in STEER_PATHS or path in INSPECT_PATHS or (path in DISCOVER_PATHS and method == "post"):
        errors.add(429)
    content = ERROR_JSON if kind == "json" else HTML
    for status in sorted(errors):
        responses[str(status)] = {"description": REASONS[status], "content": content}


def accurate_openapi(app: FastAPI) -> dict[str, Any]:
    """The schema of `app` with the corrections above (built once, then cached on the app)."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes, description=DESCRIPTION)
        schema.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR
        _add_twins(app, schema["paths"])
        for path, ops in schema["paths"].items():
            for method, op in ops.items():
                _document(path, method, op)
        app.openapi_schema = schema
    return app.openapi_schema


def install(app: FastAPI) -> None:
    # replacing app.openapi is how FastAPI documents extending the schema; mypy refuses assigning to a method
    app.openapi = lambda: accurate_openapi(app)  # type: ignore[method-assign]
