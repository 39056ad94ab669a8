"""Which methods the app's paths allow: every route (those of included routers too), and the answer to a GET or
HEAD of a path that only takes POST (`/api/steer`, `/v1/completions`): 405 with `Allow`, not the 404 of the
catch-all page routes (`/{model_id}/{sae_id}`) that such a path would otherwise fall through to."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from starlette.routing import BaseRoute, Match, Route
from starlette.types import Scope


def all_routes(routes: Sequence[BaseRoute]) -> Iterator[BaseRoute]:
    """Every route, those of included routers too: FastAPI (0.16x) keeps an included router as one entry of
    app.routes that holds the router (`original_router`), not as copies of its routes."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from all_routes(included.routes)
        else:
            yield route


def without_get(routes: Sequence[BaseRoute]) -> list[Route]:
    """The routes whose path no GET route has (POST-only paths)."""
    with_methods = [r for r in all_routes(routes) if isinstance(r, Route) and r.methods]
    get_paths = {r.path for r in with_methods if "GET" in (r.methods or ())}
    return [r for r in with_methods if r.path not in get_paths]


def allowed_instead(routes: Sequence[Route], scope: Scope) -> list[str]:
    """The methods a path of `routes` (from `without_get`) allows, when this request's path is one of them
    (its method then is not allowed); [] when it is none."""
    allowed: set[str] = set()
    for route in routes:
        if route.matches(scope)[0] != Match.NONE:
            allowed |= route.methods or set()
    return sorted(allowed)
