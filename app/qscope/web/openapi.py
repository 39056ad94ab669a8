"""The app's OpenAPI schema (/-/openapi.json) made to say what the server really answers.

FastAPI documents every route as `200 application/json` plus its own 422 body. Here, per operation: pages give
`text/html`, and each page's `.json` twin (qscope.web.twins) is listed as a path of its own that gives JSON, as
`/api/` does; every error the app can return (403, 404, 413, 414, 422, 429, 503) is listed with the body it really has
(`Error` in JSON, the error page in HTML). The steering request's bounds are this server's limits (Settings).
Clients and schema-driven tests rely on this.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from qscope.web.methods import all_routes
from qscope.web.rates import rate_limit_of
from qscope.web.security import UNSAFE_METHODS
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
MARKDOWN = {"text/markdown": {"schema": {"type": "string"}}}
ERROR_JSON = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
OPENAI_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
    "description": "OpenAI's error body (the /v1 routes).",
}
REASONS = {
    400: "Bad or over-limit field (OpenAI's invalid_request_error; `param` names the field)",
    403: "Refused: sent by a page of another site, or without the owner secret of what it changes",
    404: "Not found (the body lists what exists)",
    413: "Request body too large",
    414: "URL too long",
    422: "Bad parameter",
    429: "Too many requests from this client (see Retry-After)",
    503: "Busy or unavailable: steering queue full (see Retry-After), model not loadable, query timeout",
}


def _kind(path: str, op: dict[str, Any]) -> str:
    """'json', 'html' or 'markdown' (an export ending in .md)."""
    if path.endswith(".md"):
        return "markdown"
    typed = op["responses"].get("200", {}).get("content", {}).get("application/json", {}).get("schema")
    if path.endswith(SUFFIX) or path.startswith("/api/") or typed:  # a response_model: a JSON-only route
        return "json"
    return "html"


def _add_twins(app: FastAPI, paths: dict[str, Any]) -> None:
    """A `.json` path beside every page path (TwinRoute), with its own operation ids."""
    for route in all_routes(app.routes):
        if isinstance(route, TwinRoute) and route.path_format in paths:
            ops = copy.deepcopy(paths[route.path_format])
            for op in ops.values():
                op["operationId"] = op.get("operationId", "") + "_json"
            paths[route.path_format + SUFFIX] = ops  # "/" + ".json": the home page answers at /.json


def _rated(app: FastAPI) -> set[tuple[str, str]]:
    """(path, method) of every operation that declares a rate limit (qscope.web.rates), `.json` twins included."""
    rated = set()
    for route in all_routes(app.routes):
        if isinstance(route, APIRoute) and rate_limit_of(route.dependant.dependencies) is not None:
            paths = [route.path_format, *([route.path_format + SUFFIX] if isinstance(route, TwinRoute) else [])]
            rated |= {(path, method.lower()) for path in paths for method in route.methods or ()}
    return rated


def _document(path: str, method: str, op: dict[str, Any], rated: bool) -> None:
    kind, responses = _kind(path, op), op["responses"]
    ok = responses.setdefault("200", {"description": "Successful Response"})
    if kind == "html":
        ok["content"] = HTML
    elif kind == "markdown":
        ok["content"] = MARKDOWN
    errors = {404, 414, 422, 503}
    unsafe = method.upper() in UNSAFE_METHODS
    if unsafe:
        errors |= {403, 413}
    if rated:
        errors.add(429)
    content = ERROR_JSON if kind == "json" else HTML  # a Markdown export's errors are the error page
    if path.startswith("/v1/"):  # OpenAI's statuses and error body
        errors = (errors - {422}) | {400}
        responses.pop("422", None)  # FastAPI's own validation body: /v1 answers it as a 400
        content = {"application/json": {"schema": {"$ref": "#/components/schemas/OpenAIError"}}}
    for status in sorted(errors):
        responses[str(status)] = {"description": REASONS[status], "content": content}


def _limits(schemas: dict[str, Any], limits: Any) -> None:
    """The steering limits of this server (qscope.steer.spec.SteerLimits) as bounds in the request schemas."""
    if "SteerSpec" not in schemas or "FeatureSteer" not in schemas:
        return
    spec = schemas["SteerSpec"]["properties"]
    spec["max_new_tokens"]["maximum"] = limits.max_new_tokens
    spec["features"]["maxItems"] = limits.max_features
    strength = schemas["FeatureSteer"]["properties"]["strength"]
    strength.update(minimum=-limits.max_strength, maximum=limits.max_strength)


def accurate_openapi(app: FastAPI) -> dict[str, Any]:
    """The schema of `app` with the corrections above (built once, then cached on the app)."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes, description=DESCRIPTION)
        schema.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR
        _limits(schema["components"]["schemas"], app.state.steering.limits)
        schema["components"]["schemas"]["OpenAIError"] = OPENAI_ERROR
        _add_twins(app, schema["paths"])
        rated = _rated(app)
        for path, ops in schema["paths"].items():
            for method, op in ops.items():
                _document(path, method, op, (path, method) in rated)
        app.openapi_schema = schema
    return app.openapi_schema


def install(app: FastAPI) -> None:
    # replacing app.openapi is how FastAPI documents extending the schema; mypy refuses assigning to a method
    app.openapi = lambda: accurate_openapi(app)  # type: ignore[method-assign]
