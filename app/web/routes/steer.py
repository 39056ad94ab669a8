"""Steering: the `/steer` page, saved runs at `/steer/{id}` (+ `.json`), and the JSON API under `/api/steer`.

`POST /api/steer` answers with both completions once done; `POST /api/steer/stream` streams them as
server-sent events (`token`, then `done` or `error`), which the page reads. A finished run can be shared
(`POST /api/steer/share`): it is kept in memory for a while under its `run` token, and sharing writes it to
the app database. API errors are JSON: 422 (bad spec, over a limit), 404, 503 (queue full: Retry-After).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse

from qscope.steer.edits import resolve_edits
from qscope.steer.service import Steering
from qscope.steer.spec import SavedRun, ShareRequest, SteerResult, SteerSpec
from qscope.steer.worker import SteerJob, make_job
from qscope.web import urls
from qscope.web.catalog import Catalog, NotFound
from qscope.web.deps import CatalogDep, LiveDep, SteeringDep
from qscope.web.errors import error_response
from qscope.web.render import render
from qscope.web.twins import TwinRoute

router = APIRouter(route_class=TwinRoute)
api = APIRouter(prefix="/api/steer", tags=["steer"])


def _model_id(catalog: Catalog, spec: SteerSpec) -> str:
    models = [m.model_id for m in catalog]
    model_id = spec.model_id or (models[0] if models else "")
    catalog.model(model_id)  # NotFound lists what exists
    return model_id


def _submit(spec: SteerSpec, catalog: Catalog, live, steering: Steering, emit) -> tuple[SteerJob, SteerSpec]:
    """Resolve the spec's model and features, build its job and queue it."""
    model_id = _model_id(catalog, spec)
    spec = spec.model_copy(update={"model_id": model_id})
    runner = live.get(model_id)
    if runner is None:
        raise NotFound(f"No live model for {model_id!r}.")
    lm, saes = runner.load()

    steering.limits.check(spec)  # before any lookup: an oversized spec costs nothing
    edits = resolve_edits(spec.features, saes, catalog.max_act_of(model_id))
    job = make_job(spec, lm.model, lm.tokenizer, edits, steering.limits, emit, runner.lock)
    steering.worker.submit(job)
    return job, spec


def _channel() -> tuple[asyncio.Queue, Callable[[str, Any], None]]:
    """An asyncio queue and a thread-safe emit that feeds it from the worker thread."""
    loop = asyncio.get_running_loop()
    q: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def emit(kind: str, data: Any) -> None:
        loop.call_soon_threadsafe(q.put_nowait, (kind, data))

    return q, emit


@api.post("", response_model=SteerResult, summary="Generate default and steered completions (one batch)")
async def steer_api(spec: SteerSpec, request: Request, catalog: CatalogDep, live: LiveDep, steering: SteeringDep):
    q, emit = _channel()
    job, spec = _submit(spec, catalog, live, steering, emit)
    try:
        while True:
            try:
                kind, data = await asyncio.wait_for(q.get(), timeout=0.5)
            except TimeoutError:
                if await request.is_disconnected():
                    job.cancel.set()
                    return Response(status_code=499)
                continue
            if kind == "done":
                return steering.remember(spec, data)
            if kind == "error":
                return error_response(request, 500, data)
    finally:
        job.cancel.set()  # finished rows ignore it; an abandoned request stops generating


@api.post(
    "/stream",
    summary="The same, streamed as server-sent events (token, done, error)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def steer_stream(spec: SteerSpec, catalog: CatalogDep, live: LiveDep, steering: SteeringDep):
    q, emit = _channel()
    job, spec = _submit(spec, catalog, live, steering, emit)

    async def events() -> AsyncIterator[str]:
        try:
            while True:
                kind, data = await q.get()
                if kind == "done":
                    data = steering.remember(spec, data).model_dump()
                yield f"event: {kind}\ndata: {json.dumps(data)}\n\n"
                if kind in ("done", "error"):
                    return
        finally:
            job.cancel.set()  # the client went away (or all is sent): its rows stop at the next step

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


@api.post("/share", response_model=SavedRun, summary="Save a finished run; returns its permalink")
def share(body: ShareRequest, steering: SteeringDep) -> SavedRun:
    found = steering.recall(body.run)
    if found is None:
        raise NotFound(f"No recent run {body.run!r} on this server: run it again, then share.")
    spec, result = found
    result = result.model_copy(update={"run": None})
    run_id = steering.runs.save(spec, result)
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
    context = {
        "spec": spec,
        "result": result,
        "run_id": run_id,
        "saes": saes,
        "limits": steering.limits,
        "init": {"spec": spec.model_dump(), "saes": saes},
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
):
    features = []
    if sae_id is not None and feature is not None:
        model_id = model_id or next((m.model_id for m in catalog for s in m.saes if s.sae.sae_id == sae_id), None)
        features = [{"sae_id": sae_id, "feature": feature, "mode": "add", "strength": 4.0}]
    spec = SteerSpec(model_id=model_id, prompt="", features=features, max_new_tokens=32)
    return _page(request, catalog, steering, spec)


@router.get("/steer/{run_id}")
def saved_run_page(request: Request, run_id: str, catalog: CatalogDep, steering: SteeringDep):
    found = steering.runs.get(run_id)
    if found is None:
        raise NotFound(f"No saved steering run {run_id!r}.", [("steer", "/steer")], what="pages")
    spec, result = found
    return _page(request, catalog, steering, spec, result, run_id)


router.include_router(api)
