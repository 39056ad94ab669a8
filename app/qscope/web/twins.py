"""The `.json` twin of every page, in one place: a route class that matches `/x.json` as `/x` and marks the
request as asking for JSON (as Datasette's router parses a format suffix). Page routes are declared once,
without `.json`; `render()` answers JSON when `wants_json(request)`."""

from __future__ import annotations

from fastapi import Request
from fastapi.routing import APIRoute
from starlette.routing import Match
from starlette.types import Scope

SUFFIX = ".json"
FORMAT_KEY = "qscope.format"  # set in the request scope when a page was asked for as its .json twin


class TwinRoute(APIRoute):
    """A page route that also answers at its path + `.json`."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        path = scope.get("path", "")
        if scope.get("type") == "http" and path.endswith(SUFFIX) and len(path) > len(SUFFIX):
            bare = path[: -len(SUFFIX)]
            match, child = super().matches({**scope, "path": bare if bare != "" else "/"})
            if match != Match.NONE:
                return match, {**child, FORMAT_KEY: "json"}
        return super().matches(scope)


def wants_json(request: Request) -> bool:
    """Whether the request asked for a `.json` twin (a page matched through TwinRoute, or any path ending in
    `.json` that matched no page: its error answers in JSON too)."""
    return request.scope.get(FORMAT_KEY) == "json" or request.url.path.endswith(SUFFIX)
