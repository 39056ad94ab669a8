"""Fix a behaviour: the `/fix` page (two example sets or a demo set, a goal), `POST /api/fix` (a background job of
the discover job runner: its status and cancel at /api/jobs/{id}; or the result when `wait` is set) and saved
results at `/fix/{id}` (+ `.json`). The flow is qscope.fix's."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from qscope.discover.demo import available
from qscope.discover.discovery import DiscoverOptions
from qscope.discover.requests import example_set
from qscope.discover.store import Listed
from qscope.fix.request import DEFAULT_STRENGTHS, MAX_PER_SAE, FixRequest, FixSettings, check
from qscope.fix.result import FixResult
from qscope.fix.service import Fixing
from qscope.jobs import QueueFull
from qscope.steer.evaluate.target import from_live
from qscope.web import rates, urls
from qscope.web.catalog import NotFound
from qscope.web.deps import CatalogDep, LiveDep
from qscope.web.discovering import JOB_POST, DiscoveringDep, bad_input, busy, corpus_dir, served_async
from qscope.web.errors import Unprocessable
from qscope.web.render import render
from qscope.web.routes.discover import DemoInfo, job_answer, prefill, wait_for
from qscope.web.security import client_key
from qscope.web.twins import TwinRoute

router = APIRouter(route_class=TwinRoute)  # pages: each answers at its path + .json too
api = APIRouter()


def get_fixing(request: Request) -> Fixing:
    return request.app.state.fixing


FixingDep = Annotated[Fixing, Depends(get_fixing)]


@dataclass
class FixPage:
    model_id: str
    models: list[str]
    demos: list[DemoInfo]
    demo: str | None
    a: str
    b: str
    name_a: str
    name_b: str
    goal: str
    settings: dict
    options: dict
    limits: dict
    recent: list[Listed]
    note: str | None


@router.get("/fix")
def fix_page(
    request: Request,
    catalog: CatalogDep,
    live: LiveDep,
    discovering: DiscoveringDep,
    fixing: FixingDep,
    demo: str | None = None,
    model_id: str | None = None,
    n: Annotated[int, Query(ge=4, le=1000)] = 30,
    goal: Annotated[str, Query(pattern="^(increase|decrease)$")] = "increase",
):
    model_id = catalog.model_id_or_first(model_id)
    seed = request.app.state.settings.runtime.seed
    a, b, name_a, name_b = prefill(live, model_id, demo, n, seed)
    runner = live.get(model_id)
    demos = [
        DemoInfo(d.name, d.title, d.a_name, d.b_name, urls.fix(demo=d.name, n=n))
        for d in available(corpus_dir(live, model_id))
    ]
    ev = fixing.evaluations.limits
    limits = {
        "max_examples": discovering.limits.max_examples,
        "max_file_bytes": discovering.limits.max_file_bytes,
        "max_tokens": discovering.max_tokens,
        "max_prompts": ev.max_prompts,
        "max_seeds": ev.max_seeds,
        "max_rows": ev.max_rows,
        "max_per_sae": MAX_PER_SAE,
    }
    page = FixPage(
        model_id,
        [m.model_id for m in catalog],
        demos,
        demo,
        a,
        b,
        name_a,
        name_b,
        goal,
        FixSettings(goal=goal).model_dump() | {"strengths_text": ", ".join(f"{s:g}" for s in DEFAULT_STRENGTHS)},
        DiscoverOptions(seed=seed).model_dump(),
        limits,
        fixing.recent(20),
        runner.problem() if runner else "no live model",
    )
    return render(request, "fix.html", {"p": page}, data=page)


@api.post(
    "/api/fix",
    tags=["fix"],
    **JOB_POST,
    summary="Fix a behaviour: discover it, evaluate its top features and DiffMean as steers, rank them (a job)",
    dependencies=[rates.MODEL_RUN],
)
async def fix_api(
    body: FixRequest,
    request: Request,
    catalog: CatalogDep,
    live: LiveDep,
    discovering: DiscoveringDep,
    fixing: FixingDep,
):
    with bad_input():
        model = await served_async(catalog, live, body.model_id)
        examples = example_set(body, discovering.limits, model.corpus_dir, body.options.seed)
        check(body.fix, fixing.evaluations.limits, len(model.saes), fixing.steer_limits)
    runner = live.get(model.model_id)
    if runner is None:
        raise NotFound(f"No live model for {model.model_id!r}.")
    target = await asyncio.to_thread(from_live, runner)
    try:
        job = fixing.start(model, target, examples, body.options, body.fix, client_key(request.scope))
    except QueueFull as e:
        return busy(e)
    if body.wait:
        if not await wait_for(job, request):
            return Response(status_code=499)
        if job.state == "failed" and (why := fixing.refused(job.id)):
            raise Unprocessable(f"Bad parameter: {why}")
    return await job_answer(request, job, body.wait, fixing.fix, urls.fix_result)


@dataclass
class FixResultPage:
    r: FixResult
    json_url: str
    discovery_url: str
    recipe_url: str | None
    links: dict[str, dict[str, str]]  # arm -> {dashboard, steer_eval}


@router.get("/fix/{fix_id}")
def fix_result_page(request: Request, fix_id: str, fixing: FixingDep):
    r = fixing.fix(fix_id)
    if r is None:
        raise NotFound(f"No saved fix {fix_id!r}.", [("fix", urls.fix())], what="pages")
    links = {
        x.arm: {
            "dashboard": urls.feature(r.model_id, x.sae_id, x.feature),
            "steer_eval": urls.steer_eval(
                sae_id=x.sae_id, feature=x.feature, model_id=r.model_id, discovery=r.discovery
            ),
        }
        for x in r.interventions
        if x.sae_id is not None and x.feature is not None
    }
    page = FixResultPage(
        r,
        urls.fix_result(r.id, json=True),
        urls.discovery(r.discovery),
        urls.recipe(r.recipe) if r.recipe else None,
        links,
    )
    return render(request, "fix_result.html", {"p": page}, data=r.model_dump())


router.include_router(api)
