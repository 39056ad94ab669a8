"""Steering: the `/steer` page, saved runs at `/steer/{id}` (+ `.json`), and the JSON API under `/api/steer`.

`POST /api/steer` answers with both completions once done; `POST /api/steer/stream` streams them as
server-sent events (`token`, then `done` or `error`), which the page reads. A finished run can be shared
(`POST /api/steer/share`): it is kept in memory for a while under its `run` token, and sharing writes it to
the app database (once: the same run shared again gives the same link). API errors are JSON: 422 (bad spec,
over a limit), 404, 503 (queue full, or queued too long: Retry-After).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field

from qscope.steer.edits import resolve_edits
from qscope.steer.runs import DamagedRun
from qscope.steer.service import Steering
from qscope.steer.spec import SavedRun, ShareRequest, SteerResult, SteerSpec
from qscope.steer.worker import SteerJob, WaitedTooLong, make_job
from qscope.web import rates, sse, urls
from qscope.web.catalog import Catalog, NotFound
from qscope.web.channel import Waiting, channel, next_event, outcome
from qscope.web.deps import CatalogDep, LiveDep, SteeringDep
from qscope.web.errors import Unprocessable, error_response
from qscope.web.render import render
from qscope.web.security import client_key
from qscope.web.twins import TwinRoute

router = APIRouter(route_class=TwinRoute)
api = APIRouter(prefix="/api/steer", tags=["steer"])


class SteerFeature(BaseModel):
    """What the steering page shows about one feature it steers with."""

    model_id: str
    sae_id: str
    feature: int
    label: str
    max_act: float = Field(description="The unit of add and clamp: the largest activation seen in the harvest.")
    dead: bool = Field(description="Never fired in the harvest: add and clamp (multiples of max_act) do nothing.")
    url: str = Field(description="The feature's dashboard.")


def steer_feature(catalog: Catalog, sae_id: str, feature: int) -> SteerFeature:
    """One feature as the steering page shows it (NotFound names what exists)."""
    served = catalog.find_sae(sae_id)
    if served is None:
        raise NotFound(
            f"No SAE {sae_id!r}.", [(s.sae.sae_id, urls.sae(m.model_id, s.sae.sae_id)) for m in catalog for s in m.saes]
        )
    catalog.check_feature(served, feature)
    with served.store.reader() as r:
        row = r.row(sae_id, feature)
    if row is None:
        raise NotFound(f"{sae_id} has no row for feature {feature}.")
    model_id = served.sae.model_id
    return SteerFeature(
        model_id=model_id,
        sae_id=sae_id,
        feature=feature,
        label=row.label,
        max_act=row.max_act,
        dead=not row.max_act > 0,
        url=urls.feature(model_id, sae_id, feature),
    )


def _submit(
    spec: SteerSpec, request: Request, catalog: Catalog, live, steering: Steering, emit
) -> tuple[SteerJob, SteerSpec]:
    """Resolve the spec's model and features, build its job and queue it (as the request's client's)."""
    model_id = catalog.model_id_or_first(spec.model_id)
    spec = spec.model_copy(update={"model_id": model_id})
    runner = live.get(model_id)
    if runner is None:
        raise NotFound(f"No live model for {model_id!r}.")
    lm, saes = runner.load()

    steering.limits.check(spec)  # before any lookup: an oversized spec costs nothing
    edits = resolve_edits(spec.features, saes, catalog.max_act_of(model_id))  # refuses a dead feature
    job = make_job(spec, lm.model, lm.tokenizer, edits, steering.limits, emit, runner.lock)
    job.client = client_key(request.scope)
    steering.worker.submit(job)
    return job, spec


@api.post(
    "",
    response_model=SteerResult,
    summary="Generate default and steered completions (one batch)",
    dependencies=[rates.STEER],
)
async def steer_api(spec: SteerSpec, request: Request, catalog: CatalogDep, live: LiveDep, steering: SteeringDep):
    q, emit = channel()
    job, spec = _submit(spec, request, catalog, live, steering, emit)
    try:
        if (event := await outcome(request, q, Waiting(steering.worker, job))) is None:
            return Response(status_code=499)  # the client left (finally: the job stops)
        kind, data = event
        if kind == "done":
            return steering.remember(spec, data)
        if isinstance(data, WaitedTooLong):
            response = error_response(request, 503, data)
            response.headers["Retry-After"] = str(steering.worker.retry_after_s)
            return response
        return error_response(request, 500, data)
    finally:
        job.cancel.set()  # finished rows ignore it; an abandoned request stops generating


@api.post(
    "/stream",
    summary="The same, streamed as server-sent events (token, done, error)",
    response_class=StreamingResponse,  # not EventSourceResponse: FastAPI would iterate the route itself
    responses=sse.DOCUMENTED,
    dependencies=[rates.STEER],
)
async def steer_stream(spec: SteerSpec, request: Request, catalog: CatalogDep, live: LiveDep, steering: SteeringDep):
    q, emit = channel()
    job, spec = _submit(spec, request, catalog, live, steering, emit)
    waiting = Waiting(steering.worker, job)

    async def events() -> AsyncIterator[bytes]:
        try:
            while True:
                event = await next_event(None, q, waiting)
                assert event is not None  # without a request it waits until the worker sends one
                kind, data = event
                if kind == "done":
                    data = steering.remember(spec, data).model_dump()
                yield sse.event(data, kind)
                if kind in ("done", "error"):
                    return
        finally:
            job.cancel.set()  # the client went away (or all is sent): its rows stop at the next step

    return sse.stream(events())


@api.get(
    "/feature/{sae_id}/{feature}",
    response_model=SteerFeature,
    summary="One feature as the steering page shows it: label, max activation (the unit of add and clamp), dead",
)
def feature_info(sae_id: str, feature: int, catalog: CatalogDep) -> SteerFeature:
    return steer_feature(catalog, sae_id, feature)


@api.post(
    "/share", response_model=SavedRun, summary="Save a finished run; returns its permalink", dependencies=[rates.SHARE]
)
def share(body: ShareRequest, steering: SteeringDep) -> SavedRun:
    found = steering.recall(body.run)
    if found is None:
        raise NotFound(f"No recent run {body.run!r} on this server: run it again, then share.")
    spec, result = found
    result = result.model_copy(update={"run": None})
    run_id = steering.runs.save(spec, result)
    return SavedRun(id=run_id, url=urls.steer_run(run_id), spec=spec, result=result)


@api.get("/{run_id}", response_model=SavedRun, summary="A shared run (the same as /steer/{run_id}.json)")
def saved_run_api(run_id: str, steering: SteeringDep) -> SavedRun:
    found = steering.runs.get(run_id)
    if found is None:
        raise NotFound(f"No saved steering run {run_id!r}: runs are saved with POST /api/steer/share.")
    spec, result = found
    return SavedRun(id=run_id, url=urls.steer_run(run_id), spec=spec, result=result)


def _page(
    request: Request,
    catalog: Catalog,
    steering: Steering,
    spec: SteerSpec,
    result: SteerResult | None = None,
    run_id: str | None = None,
) -> Response:
    saes = {m.model_id: [s.sae.sae_id for s in m.saes] for m in catalog}
    data = SavedRun(id=run_id, url=urls.steer_run(run_id), spec=spec, result=result) if run_id and result else None
    known = []
    for f in spec.features:
        try:
            known.append(steer_feature(catalog, f.sae_id, f.feature).model_dump())
        except (NotFound, Unprocessable):
            continue  # the row says so when the page asks again
    context = {
        "spec": spec,
        "result": result,
        "run_id": run_id,
        "saes": saes,
        "limits": steering.limits,
        "init": {"spec": spec.model_dump(), "saes": saes, "features": known, "limits": asdict(steering.limits)},
    }
    return render(request, "steer.html", context, data=data.model_dump() if data else spec.model_dump())


@router.get("/steer")
def steer_page(
    request: Request,
    catalog: CatalogDep,
    steering: SteeringDep,
    sae_id: str | None = None,
    feature: Annotated[int | None, Query(ge=0)] = None,
    model_id: str | None = None,
    prompt: Annotated[str, Query(max_length=2000, description="A prompt to start from (the form, filled in).")] = "",
):
    features = []
    if sae_id is not None and feature is not None:
        model_id = model_id or next((m.model_id for m in catalog for s in m.saes if s.sae.sae_id == sae_id), None)
        features = [{"sae_id": sae_id, "feature": feature, "mode": "add", "strength": 4.0}]
    spec = SteerSpec(model_id=model_id, prompt=prompt, features=features, max_new_tokens=32)
    return _page(request, catalog, steering, spec)


@router.get("/steer/{run_id}")
def saved_run_page(request: Request, run_id: str, catalog: CatalogDep, steering: SteeringDep):
    try:
        found = steering.runs.get(run_id)
    except DamagedRun as e:
        raise NotFound(f"Saved run {run_id!r} cannot be shown: it holds a value this server refuses ({e}).") from e
    if found is None:
        raise NotFound(f"No saved steering run {run_id!r}.", [("steer", "/steer")], what="pages")
    spec, result = found
    return _page(request, catalog, steering, spec, result, run_id)


router.include_router(api)
