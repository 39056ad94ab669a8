"""Discover: the `/discover` page (two example sets, demo sets, recent discoveries), `POST /api/discover` (a
background job, or the result when `wait` is set) and saved results at `/discover/{id}` (+ `.json`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from qscope.discover.demo import DEMOS, available, demo_examples
from qscope.discover.discovery import DiscoverOptions, Discovery
from qscope.discover.ranking import reading
from qscope.discover.requests import DiscoverRequest, example_set
from qscope.discover.store import Listed
from qscope.jobs import Job, QueueFull
from qscope.web import discover_plots, rates, urls
from qscope.web.catalog import NotFound
from qscope.web.deps import CatalogDep, LiveDep
from qscope.web.discovering import (
    JOB_POST,
    DiscoveringDep,
    bad_input,
    busy,
    corpus_dir,
    job_json,
    served_async,
)
from qscope.web.render import jsonable, render, templates
from qscope.web.security import client_key
from qscope.web.twins import TwinRoute

router = APIRouter(route_class=TwinRoute)  # pages: each answers at its path + .json too
api = APIRouter()  # the JSON API (no twins)
templates.env.globals.update(discover_plots=discover_plots)


@dataclass
class DemoInfo:
    name: str
    title: str
    a_name: str
    b_name: str
    url: str


@dataclass
class DiscoverPage:
    model_id: str
    models: list[str]
    demos: list[DemoInfo]
    demo: str | None
    a: str
    b: str
    name_a: str
    name_b: str
    options: dict
    limits: dict
    recent: list[Listed]
    note: str | None


def demo_infos(live, model_id: str, page: str = "discover") -> list[DemoInfo]:
    build = urls.discover if page == "discover" else urls.footprints
    return [
        DemoInfo(d.name, d.title, d.a_name, d.b_name, build(demo=d.name)) for d in available(corpus_dir(live, model_id))
    ]


def prefill(live, model_id: str, demo: str | None, n: int, seed: int) -> tuple[str, str, str, str]:
    """(a, b, name_a, name_b) of a demo set for the form's text boxes; empty when none is asked for."""
    folder = corpus_dir(live, model_id)
    if not demo:
        return "", "", "", ""
    if demo not in DEMOS or folder is None:
        raise NotFound(
            f"No demo set {demo!r} here.",
            [(d.title, urls.discover(demo=d.name)) for d in available(folder)],
            what="demo sets",
        )
    d, a, b = demo_examples(folder, demo, n, seed)
    return "\n".join(a), "\n".join(b), d.a_name, d.b_name


@router.get("/discover")
def discover_page(
    request: Request,
    catalog: CatalogDep,
    live: LiveDep,
    discovering: DiscoveringDep,
    demo: str | None = None,
    model_id: str | None = None,
    n: Annotated[int, Query(ge=4, le=1000)] = 100,
):
    model_id = catalog.model_id_or_first(model_id)
    seed = request.app.state.settings.runtime.seed
    a, b, name_a, name_b = prefill(live, model_id, demo, n, seed)
    runner = live.get(model_id)
    limits = {
        "max_examples": discovering.limits.max_examples,
        "max_file_bytes": discovering.limits.max_file_bytes,
        "max_tokens": discovering.max_tokens,
    }
    page = DiscoverPage(
        model_id,
        [m.model_id for m in catalog],
        demo_infos(live, model_id),
        demo,
        a,
        b,
        name_a,
        name_b,
        DiscoverOptions(seed=seed).model_dump(),
        limits,
        discovering.recent("discovery", 20),
        runner.problem() if runner else "no live model",
    )
    return render(request, "discover.html", {"p": page}, data=page)


async def wait_for(job: Job, request: Request) -> bool:
    """Wait until the job finishes; False (and the job cancelled) when the client went away first."""
    while not job.finished:
        await asyncio.sleep(0.1)
        if await request.is_disconnected():
            job.cancel.set()
            return False
    return True


@api.post(
    "/api/discover",
    tags=["discover"],
    **JOB_POST,
    summary="Rank the features that tell set A from set B (a job, or the result with wait=true)",
    dependencies=[rates.MODEL_RUN],
)
async def discover_api(
    body: DiscoverRequest, request: Request, catalog: CatalogDep, live: LiveDep, discovering: DiscoveringDep
):
    with bad_input():
        model = await served_async(catalog, live, body.model_id)
        examples = example_set(body, discovering.limits, model.corpus_dir, body.options.seed)
    try:
        job = discovering.start_discovery(model, examples, body.options, client_key(request.scope))
    except QueueFull as e:
        return busy(e)
    return await job_answer(request, job, body.wait, discovering.discovery, urls.discovery)


async def job_answer(
    request: Request, job: Job, wait: bool, saved: Callable[[str], Any], url_of: Callable[[str], str]
) -> Response:
    """202 and the job; or, with `wait`, the job's saved result (`saved(job.result)`) with its permalink."""
    if not wait:
        return JSONResponse(job_json(job), status_code=202)
    if not await wait_for(job, request):
        return Response(status_code=499)
    if job.state != "done":
        return JSONResponse({"status": 500, "error": job.error or job.state, "job": job_json(job)}, status_code=500)
    found = saved(job.result or "")
    if found is None:  # saved by the job a moment ago: only a database removed under the server loses it
        return JSONResponse({"status": 500, "error": "the result was not saved", "job": job_json(job)}, status_code=500)
    return JSONResponse(jsonable({"url": url_of(found.id), **found.model_dump()}))


@dataclass
class RankedFeatureRow:
    """One ranked feature as the result page shows it."""

    rank: int
    score: object  # FeatureScore
    label: str
    dashboard: str
    steer: str
    steer_eval: str


@dataclass
class DiscoveryPage:
    d: Discovery
    a_rows: list[RankedFeatureRow]
    b_rows: list[RankedFeatureRow]
    labels: list[int]
    test: list[bool]
    n_train: int
    n_test: int
    json_url: str
    reading: str  # what the top feature's test AUROC means beside the controls (qscope.discover.ranking.reading)


def _rows(d: Discovery, side: list) -> list[RankedFeatureRow]:
    return [
        RankedFeatureRow(
            i,
            s,
            d.label(s.sae_id, s.feature),
            urls.feature(d.model_id, s.sae_id, s.feature),
            urls.steer(s.sae_id, s.feature),
            urls.steer_eval(sae_id=s.sae_id, feature=s.feature, model_id=d.model_id, discovery=d.id),
        )
        for i, s in enumerate(side, 1)
    ]


@router.get("/discover/{discovery_id}")
def discovery_page(request: Request, discovery_id: str, discovering: DiscoveringDep):
    d = discovering.discovery(discovery_id)
    if d is None:
        raise NotFound(f"No saved discovery {discovery_id!r}.", [("discover", urls.discover())], what="pages")
    page = DiscoveryPage(
        d,
        _rows(d, d.ranking.a_side),
        _rows(d, d.ranking.b_side),
        [e.label for e in d.examples],
        [e.split == "test" for e in d.examples],
        len(d.train),
        len(d.test),
        urls.discovery(d.id, json=True),
        reading(d.ranking),
    )
    return render(request, "discovery.html", {"p": page}, data=d.model_dump())


router.include_router(api)
