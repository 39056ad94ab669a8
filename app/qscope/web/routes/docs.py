"""`/-/docs`: the HTTP API as a page of our own, read from the server's OpenAPI schema (`/-/openapi.json`).

It replaces Swagger UI, which loads its script and styles from a CDN: that fails offline, and a page that runs a
third party's script cannot keep the project's CSP. This one is plain HTML under the common CSP (no script): each
operation with its parameters, their types and bounds, its request body's schema and its answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request

from qscope.web.render import render
from qscope.web.twins import TwinRoute

router = APIRouter(route_class=TwinRoute, include_in_schema=False)
METHODS = ("get", "post", "put", "patch", "delete")
BOUNDS = {
    "minimum": ">=",
    "maximum": "<=",
    "exclusiveMinimum": ">",
    "exclusiveMaximum": "<",
    "minLength": "length >=",
    "maxLength": "length <=",
    "minItems": "items >=",
    "maxItems": "items <=",
}


@dataclass
class ApiField:
    name: str
    where: str  # 'path', 'query', 'header' or 'body'
    type: str  # as the schema says it, e.g. 'integer (>= 0)', 'string | null'
    required: bool
    description: str


@dataclass
class ApiOperation:
    method: str
    path: str
    summary: str
    description: str
    fields: list[ApiField]
    body: str  # the request body's schema name, or ''
    responses: list[tuple[str, str]]  # (status, description)


@dataclass
class ApiDocs:
    title: str
    version: str
    openapi_url: str
    operations: list[ApiOperation]
    schemas: dict[str, list[ApiField]]  # each named schema's properties


def type_of(schema: dict[str, Any]) -> str:
    """A schema as one short line: its type (or referenced name), enum values and bounds."""
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " | ".join(type_of(s) for s in schema[key])
    if "enum" in schema:
        return "one of " + ", ".join(repr(v) for v in schema["enum"])
    if "const" in schema:
        return repr(schema["const"])
    kind = str(schema.get("type", "any"))
    if kind == "array" and isinstance(schema.get("items"), dict):
        kind = f"array of {type_of(schema['items'])}"
    bounds = [f"{word} {schema[key]}" for key, word in BOUNDS.items() if key in schema]
    return f"{kind} ({', '.join(bounds)})" if bounds else kind


def _operation(path: str, method: str, op: dict[str, Any]) -> ApiOperation:
    fields = [
        ApiField(p["name"], p["in"], type_of(p.get("schema", {})), bool(p.get("required")), p.get("description", ""))
        for p in op.get("parameters", [])
    ]
    body = ""
    for media in op.get("requestBody", {}).get("content", {}).values():
        body = type_of(media.get("schema", {}))
    responses = [(str(code), str(r.get("description", ""))) for code, r in op.get("responses", {}).items()]
    summary = op.get("summary", "")
    return ApiOperation(method.upper(), path, summary, op.get("description", ""), fields, body, responses)


def api_docs(schema: dict[str, Any], openapi_url: str) -> ApiDocs:
    """The page's content from an OpenAPI schema."""
    ops = [
        _operation(path, method, item[method])
        for path, item in schema.get("paths", {}).items()
        for method in METHODS
        if method in item
    ]
    schemas = {
        name: [
            ApiField(prop, "body", type_of(s), prop in spec.get("required", []), s.get("description", ""))
            for prop, s in spec.get("properties", {}).items()
        ]
        for name, spec in schema.get("components", {}).get("schemas", {}).items()
    }
    info = schema.get("info", {})
    return ApiDocs(info.get("title", ""), info.get("version", ""), openapi_url, ops, schemas)


@router.get("/-/docs")
def docs_page(request: Request):
    docs = api_docs(request.app.openapi(), request.app.openapi_url or "")
    return render(request, "docs.html", {"docs": docs}, data=docs)
