"""Steering evaluations: the form at `/steer-eval`, a job's page at `/steer-eval/{id}` (+ `.json`: progress, then
the result), and the API: `POST /api/steer-eval` starts a job (202 with its URLs), `GET .../{id}/events` streams
its progress as server-sent events (`progress`, then `end`), `POST .../{id}/cancel` stops it.

A finished evaluation is a recipe at `/recipes/{id}` (qscope.web.routes.recipes), under the same id.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from qscope.discover.service import Discovering
from qscope.steer.evaluate.jobs import Evaluations
from qscope.steer.evaluate.plan import prepare
from qscope.steer.evaluate.prompt_sets import SETS, builtin
from qscope.steer.evaluate.request import DEFAULT_STRENGTHS, EvalRequest
from qscope.steer.evaluate.result import EvalResult
from qscope.steer.evaluate.suggest import suggest
from qscope.steer.evaluate.target import from_live
from qscope.steer.spec import FeatureSteer, SpecError, SteerSpec
from qscope.web import rates, sse, sweep_plots, urls
from qscope.web.catalog import Catalog, NotFound
from qscope.web.deps import CatalogDep, LiveDep, SteeringDep
from qscope.web.discovering import DiscoveringDep
from qscope.web.errors import Unprocessable
from qscope.web.render import render, templates
from qscope.web.security import client_key
from qscope.web.twins import TwinRoute

FINAL = ("done", "failed", "cancelled")
STREAM_S = 15.0  # an event stream closes after this; EventSource reconnects on its own
sweep_plots.install(templates.env)


def get_evaluations(request: Request) -> Evaluations:
    return request.app.state.evaluations


EvaluationsDep = Annotated[Evaluations, Depends(get_evaluations)]


class EvalStarted(BaseModel):
    id: str
    status: str
    rows: int = Field(description="Rows the evaluation generates (prompts x seeds x arm-strength points).")
    url: str = Field(description="The job's page; its .json twin reports progress, then the result.")
    json_url: str
    events_url: str = Field(description="Progress as server-sent events.")
    cancel_url: str
    recipe_url: str = Field(description="Where the recipe will be once the job is done.")


class JobView(BaseModel):
    id: str
    status: str = Field(description="queued | running | done | failed | cancelled")
    model_id: str
    title: str
    progress: dict[str, Any]
    error: str
    position: int = Field(description="Evaluations waiting before this one.")
    url: str
    events_url: str
    cancel_url: str
    recipe_url: str | None = Field(description="Set once the job is done.")
    result: EvalResult | None = Field(None, description="Set once the job is done.")


def start(
    req: EvalRequest,
    request: Request,
    catalog: Catalog,
    live,
    steering,
    evaluations: Evaluations,
    discovering: Discovering | None = None,
) -> EvalStarted:
    """Plan the evaluation (every limit checked, the model loaded) and queue it as the request's client's."""
    model_id = catalog.model_id_or_first(req.spec.model_id)
    runner = live.get(model_id)
    if runner is None:
        raise NotFound(f"No live model for {model_id!r}.")
    req = req.model_copy(update={"spec": req.spec.model_copy(update={"model_id": model_id})})
    target = from_live(runner)
    sets_of = discovering.train_sets if discovering is not None else None  # a DiffMean arm naming a discovery
    plan = prepare(req, target, evaluations.limits, steering.limits, builtin(), sets_of)
    job = evaluations.submit(plan, target, client_key(request.scope))
    return EvalStarted(
        id=job.id,
        status=job.status,
        rows=len(plan.rows),
        url=urls.steer_eval_job(job.id),
        json_url=urls.steer_eval_job(job.id, json=True),
        events_url=urls.steer_eval_events(job.id),
        cancel_url=urls.steer_eval_cancel(job.id),
        recipe_url=urls.recipe(job.id),
    )


def job_view(evaluations: Evaluations, job_id: str, with_result: bool = True) -> JobView:
    """A job of this server (live progress) or, past that, as the app database has it; NotFound for neither."""
    job = evaluations.jobs.get(job_id)
    if job is not None:
        status, model_id, title, progress, error = (
            job.status,
            job.target.model_id,
            job.title,
            asdict(job.progress),
            job.error,
        )
        position = evaluations.position(job)
    else:
        info = evaluations.store.job(job_id)
        if info is None:
            raise NotFound(f"No steering evaluation {job_id!r}.", [("recipes", urls.recipes())], what="pages")
        status, model_id, progress, error, position = info.status, info.model_id, info.progress, info.error, 0
        title = ""
    result = evaluations.store.recipe(job_id) if status == "done" and with_result else None
    return JobView(
        id=job_id,
        status=status,
        model_id=model_id,
        title=title,
        progress=progress,
        error=error,
        position=position,
        url=urls.steer_eval_job(job_id),
        events_url=urls.steer_eval_events(job_id),
        cancel_url=urls.steer_eval_cancel(job_id),
        recipe_url=urls.recipe(job_id) if status == "done" else None,
        result=result,
    )


router = APIRouter(route_class=TwinRoute)
api = APIRouter(prefix="/api/steer-eval", tags=["steer-eval"])


@api.post(
    "",
    status_code=202,
    response_model=EvalStarted,
    summary="Start a steering evaluation (a job)",
    dependencies=[rates.STEER],
)
def start_eval(
    req: EvalRequest,
    request: Request,
    catalog: CatalogDep,
    live: LiveDep,
    steering: SteeringDep,
    evaluations: EvaluationsDep,
    discovering: DiscoveringDep,
) -> EvalStarted:
    return start(req, request, catalog, live, steering, evaluations, discovering)


class Suggestion(BaseModel):
    prompt_set: str
    model_id: str
    feature: FeatureSteer = Field(description="The feature that separates the set's probe texts from its prompts.")
    label: str
    url: str


@api.get(
    "/suggest",
    response_model=Suggestion,
    summary="The steer a built-in prompt set was made for, on a model",
    dependencies=[rates.MODEL_RUN],  # it runs the model on the set's prompts
)
def suggest_feature(prompt_set: str, catalog: CatalogDep, live: LiveDep, model_id: str | None = None) -> Suggestion:
    if prompt_set not in SETS or not SETS[prompt_set].probe:
        named = [s.name for s in SETS.values() if s.probe]
        raise SpecError(f"no built-in prompt set {prompt_set!r} with a steer; there are: {', '.join(named)}")
    model_id = catalog.model_id_or_first(model_id)
    runner = live.get(model_id)
    if runner is None:
        raise NotFound(f"No live model for {model_id!r}.")
    feature = suggest(from_live(runner), SETS[prompt_set])
    label = catalog.sae(model_id, feature.sae_id).store.label(feature.sae_id, feature.feature)
    url = urls.feature(model_id, feature.sae_id, feature.feature)
    return Suggestion(prompt_set=prompt_set, model_id=model_id, feature=feature, label=label, url=url)


@api.post("/{job_id}/cancel", response_model=JobView, summary="Cancel a queued or running evaluation")
def cancel_eval(job_id: str, evaluations: EvaluationsDep) -> JobView:
    """Idempotent: a finished job is answered as it is."""
    view = job_view(evaluations, job_id, with_result=False)
    if view.status not in FINAL and not evaluations.cancel(job_id):
        raise NotFound(f"The evaluation {job_id!r} runs in another server process; cancel it there.")
    return job_view(evaluations, job_id, with_result=False)


@api.get(
    "/{job_id}/events",
    summary="Progress as server-sent events: progress ..., then end",
    response_class=StreamingResponse,  # not EventSourceResponse: FastAPI would iterate the route itself
    responses=sse.DOCUMENTED,
)
async def eval_events(job_id: str, evaluations: EvaluationsDep):
    job_view(evaluations, job_id, with_result=False)  # 404 before the stream starts

    async def events() -> AsyncIterator[bytes]:
        seen, until = None, time.monotonic() + STREAM_S
        yield sse.retry(1000)
        while time.monotonic() < until:  # then the browser reconnects: a stopping server never waits long for us
            view = await asyncio.to_thread(job_view, evaluations, job_id, False)
            state = (view.status, json.dumps(view.progress, sort_keys=True))
            if state != seen:
                seen = state
                yield sse.event(view.model_dump_json(exclude={"result"}), "progress")
            if view.status in FINAL:
                yield sse.event(view.model_dump_json(exclude={"result"}), "end")
                return
            await asyncio.sleep(0.4)

    return sse.stream(events())


def _initial_spec(
    catalog: Catalog, spec: str | None, sae_id: str | None, feature: int | None, model_id: str | None
) -> SteerSpec:
    if spec:
        try:
            return SteerSpec.model_validate_json(spec)
        except ValueError as e:
            raise Unprocessable(f"Bad parameter: spec is not a steering spec: {e}") from None
    features = []
    if sae_id is not None and feature is not None:
        model_id = model_id or next((m.model_id for m in catalog for s in m.saes if s.sae.sae_id == sae_id), None)
        features = [FeatureSteer(sae_id=sae_id, feature=feature, mode="add", strength=1.0)]
    return SteerSpec(model_id=model_id, features=features, max_new_tokens=24, temperature=0.7)


@router.get("/steer-eval")
def eval_form(
    request: Request,
    catalog: CatalogDep,
    steering: SteeringDep,
    evaluations: EvaluationsDep,
    spec: str | None = None,
    sae_id: str | None = None,
    feature: Annotated[int | None, Query(ge=0)] = None,
    model_id: str | None = None,
    discovery: Annotated[str | None, Query(max_length=64)] = None,
):
    initial = _initial_spec(catalog, spec, sae_id, feature, model_id)
    saes = {m.model_id: [s.sae.sae_id for s in m.saes] for m in catalog}
    defaults = EvalRequest(spec=initial, prompt_set=next(iter(SETS)))
    init = {"request": defaults.model_dump(), "saes": saes}
    context = {
        "spec": initial,
        "saes": saes,
        "sets": list(SETS.values()),
        "limits": evaluations.limits,
        "steer_limits": steering.limits,
        "strengths": DEFAULT_STRENGTHS,
        "init": init,
        "discovery": discovery or "",  # the DiffMean arm's discovery, from a discovery's page
    }
    return render(request, "steer_eval.html", context, data=defaults.model_dump())


@router.get("/steer-eval/{job_id}")
def eval_job_page(request: Request, job_id: str, evaluations: EvaluationsDep):
    view = job_view(evaluations, job_id)
    return render(request, "steer_eval_job.html", {"job": view, "r": view.result}, data=view.model_dump())


router.include_router(api)
