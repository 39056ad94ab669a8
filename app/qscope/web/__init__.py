"""The explorer web app: `create_app(dbs)` serves one or more feature stores (FastAPI + Jinja2 + htmx).

Routes live in qscope.web.routes, one module per resource; URLs are built in qscope.web.urls; responses go through
qscope.web.render.render (full page, htmx partial or `.json` twin). The stores are opened read-only once here.
qscope.web.security adds the headers and size limits, qscope.web.rates the per-client rates that routes declare;
qscope.web.openapi makes the schema match the responses.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from qscope.config import Settings, get_settings
from qscope.discover.service import Discovering
from qscope.explain.service import Explained
from qscope.fix.service import Fixing
from qscope.live.runner import Limits, LiveModels
from qscope.search.explained import ExplanationSearch
from qscope.search.searcher import Searcher
from qscope.steer.evaluate.jobs import from_settings as evaluations_from_settings
from qscope.steer.service import Steering
from qscope.web import errors, openapi, rates, security, urls
from qscope.web.catalog import Catalog
from qscope.web.render import STATIC_DIR
from qscope.web.routes import (
    attribute,
    detectors,
    discover,
    docs,
    features,
    fix,
    footprints,
    health,
    home,
    inspect,
    jobs,
    lists,
    notes,
    openai_api,
    recipes,
    saes,
    search,
    steer,
    steer_eval,
)


def create_app(
    dbs: Sequence[str | Path],
    settings: Settings | None = None,
    *,
    warm_search: bool = True,
    say: Callable[[str], None] | None = None,
) -> FastAPI:
    """The app for these feature store files. warm_search: build the semantic indexes in the background
    at startup (else on the first search); say: told in one line when search is ready (the CLI prints it)."""
    settings = settings or get_settings()
    catalog = Catalog(dbs, timeout_s=settings.server.query_timeout_s, show_paths=settings.server.show_paths)
    runtime, live_bounds = settings.runtime, settings.live
    live = LiveModels(catalog.stores, device=runtime.device, dtype=runtime.dtype, show_paths=settings.server.show_paths)
    limits = Limits(max_chars=live_bounds.max_chars, max_tokens=live_bounds.max_tokens, wait_s=live_bounds.wait_s)
    searcher = Searcher(catalog.stores, live, limits, cache_dir=settings.paths.cache_dir, on_ready=say)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if warm_search:
            searcher.warm()
            explanation_search.warm()
        yield
        app.state.evaluations.shutdown()  # its unfinished jobs are marked failed, not left "running"
        catalog.close()
        explained.close()

    # the docs page is our own (qscope.web.routes.docs): Swagger UI would load from a CDN
    app = FastAPI(title="qscope", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url="/-/openapi.json")
    app.state.catalog, app.state.live, app.state.searcher = catalog, live, searcher
    app.state.settings, app.state.limits = settings, limits
    app.state.rate_buckets = rates.buckets(settings.rates)  # the routes declare which they take from
    # its worker thread starts with the first steering request
    app.state.steering = Steering(settings.steer, settings.app_db.url)
    # explanations beside each store, notes and lists in the app database; searched as the `explanation` kind
    app.state.explained = explained = Explained(catalog.stores, settings.app_db.url)
    explanation_search = ExplanationSearch(searcher.embedder, (explained.text_signature, explained.texts))
    searcher.explained = explanation_search
    # its job thread starts with the first discovery
    app.state.discovering = Discovering(settings.discover, settings.live.max_chars, settings.app_db.url)
    evaluations = evaluations_from_settings(settings.steer_eval, settings.app_db.url, app.state.steering.worker)
    app.state.evaluations = evaluations
    app.state.fixing = Fixing(app.state.discovering, app.state.evaluations, app.state.steering.limits)
    app.mount(urls.STATIC_PREFIX, StaticFiles(directory=str(STATIC_DIR)), name="static")
    errors.install(app)
    security.install(app, settings.server, settings.discover.max_body_bytes, errors.refusal)
    openapi.install(app)
    # fixed paths first: /search and /-/... must not be taken for /{model_id}/{sae_id}
    for module in (
        home,
        health,
        docs,
        search,
        inspect,
        attribute,
        steer,
        steer_eval,
        recipes,
        openai_api,
        notes,
        lists,
        discover,
        fix,
        detectors,
        footprints,
        jobs,
        saes,
        features,
    ):
        app.include_router(module.router)
    return app


def app_from_env() -> FastAPI:
    """The app for the stores listed (as JSON) in QSCOPE_SERVE_DBS: for `qscope serve --workers N`."""
    return create_app(json.loads(os.environ["QSCOPE_SERVE_DBS"]))
