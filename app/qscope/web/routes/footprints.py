"""Footprints: the `/footprints` page (one or two datasets, demo sets, a footprint file to draw, recent ones),
`POST /api/footprints` (a job, or the result with `wait`), `POST /api/footprints/upload` (a file written by
`qscope footprint`), and saved comparisons at `/footprints/{id}` (+ `.json`)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from qscope.discover.footprint_runs import FootprintRecord
from qscope.discover.requests import FootprintRequest, FootprintUpload, datasets
from qscope.discover.store import Listed
from qscope.jobs import QueueFull
from qscope.web import rates, urls
from qscope.web.catalog import NotFound
from qscope.web.deps import CatalogDep, LiveDep
from qscope.web.discover_plots import overlap_bar
from qscope.web.discovering import (
    JOB_POST,
    DiscoveringDep,
    bad_input,
    busy,
    served_async,
)
from qscope.web.render import jsonable, render
from qscope.web.routes.discover import DemoInfo, demo_infos, job_answer, prefill
from qscope.web.security import client_key
from qscope.web.twins import TwinRoute

router = APIRouter(route_class=TwinRoute)  # pages: each answers at its path + .json too
api = APIRouter()  # the JSON API (no twins)


@dataclass
class FootprintsPage:
    model_id: str
    models: list[str]
    demos: list[DemoInfo]
    demo: str | None
    a: str
    b: str
    name_a: str
    name_b: str
    limits: dict
    recent: list[Listed]


@router.get("/footprints")
def footprints_page(
    request: Request,
    catalog: CatalogDep,
    live: LiveDep,
    discovering: DiscoveringDep,
    demo: str | None = None,
    model_id: str | None = None,
    n: Annotated[int, Query(ge=4, le=1000)] = 200,
):
    model_id = catalog.model_id_or_first(model_id)
    a, b, name_a, name_b = prefill(live, model_id, demo, n, request.app.state.settings.runtime.seed)
    limits = {
        "max_examples": discovering.limits.max_examples,
        "max_file_bytes": discovering.limits.max_file_bytes,
        "max_file_rows": discovering.upload_bounds.max_rows,
    }
    page = FootprintsPage(
        model_id,
        [m.model_id for m in catalog],
        demo_infos(live, model_id, "footprints"),
        demo,
        a,
        b,
        name_a,
        name_b,
        limits,
        discovering.recent("footprint", 20),
    )
    return render(request, "footprints.html", {"p": page}, data=page)


@api.post(
    "/api/footprints",
    tags=["footprints"],
    **JOB_POST,
    summary="Footprints of one or two datasets and their comparison (a job, or the result with wait)",
    dependencies=[rates.MODEL_RUN],
)
async def footprints_api(
    body: FootprintRequest, request: Request, catalog: CatalogDep, live: LiveDep, discovering: DiscoveringDep
):
    with bad_input():
        model = await served_async(catalog, live, body.model_id)
        a, b, names, notes = datasets(body, discovering.limits, model.corpus_dir)
    try:
        client = client_key(request.scope)
        job = discovering.start_footprint(model, a, b, names, notes, body.by, body.share, body.top, client)
    except QueueFull as e:
        return busy(e)
    return await job_answer(request, job, body.wait, discovering.footprint, urls.footprint)


@api.post(
    "/api/footprints/upload",
    tags=["footprints"],
    summary="Draw a footprint file written by `qscope footprint` (.parquet or .duckdb, base64)",
    dependencies=[rates.MODEL_RUN],
)
async def upload_footprint(body: FootprintUpload, discovering: DiscoveringDep):
    with bad_input():
        rec = await asyncio.to_thread(discovering.footprint_from_file, body.name, body.data_b64)
    return JSONResponse(jsonable({"url": urls.footprint(rec.id), **rec.model_dump()}))


@dataclass
class FootprintPage:
    rec: FootprintRecord
    drawing: object  # Markup of the overlap bar, or None for one dataset
    json_url: str


@router.get("/footprints/{footprint_id}")
def footprint_page(request: Request, footprint_id: str, discovering: DiscoveringDep):
    rec = discovering.footprint(footprint_id)
    if rec is None:
        raise NotFound(f"No saved footprint {footprint_id!r}.", [("footprints", urls.footprints())], what="pages")
    c = rec.comparison
    drawing = overlap_bar(c.name_a, c.name_b, c.n_only_a, c.shared, c.n_only_b) if c else None
    page = FootprintPage(rec, drawing, urls.footprint(rec.id, json=True))
    return render(request, "footprint.html", {"p": page, "model_id": rec.model_id}, data=rec.model_dump())


router.include_router(api)
