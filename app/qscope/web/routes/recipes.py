"""Recipes: finished steering evaluations. `/recipes` lists them, `/recipes/{id}` shows one (plots, table,
verdict, examples, what it ran on) with a `.json` twin and a Markdown export (`/recipes/{id}.md`);
`POST /api/recipes/{id}/run-again` evaluates the same request again, on the same or another served model.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field

from qscope.steer.evaluate.markdown import to_markdown
from qscope.steer.evaluate.result import EvalResult, title_of
from qscope.web import rates, urls
from qscope.web.catalog import NotFound
from qscope.web.deps import CatalogDep, LiveDep, SteeringDep
from qscope.web.render import render
from qscope.web.routes.steer_eval import EvalStarted, EvaluationsDep, start
from qscope.web.twins import TwinRoute

router = APIRouter()
pages = APIRouter(route_class=TwinRoute)  # the Markdown export is on `router`, declared first: no .json twin
api = APIRouter(prefix="/api/recipes", tags=["steer-eval"])


class RunAgain(BaseModel):
    model_id: str | None = Field(None, description="Served model to run on; default: the recipe's own.")


def _recipe(evaluations, recipe_id: str) -> EvalResult:
    result = evaluations.store.recipe(recipe_id)
    if result is None:
        raise NotFound(f"No recipe {recipe_id!r}.", [("all recipes", urls.recipes())], what="pages")
    return result


def title(result: EvalResult) -> str:
    return title_of(result.request, len(result.prompts))


@pages.get("/recipes")
def recipes_page(request: Request, evaluations: EvaluationsDep):
    items = evaluations.store.recipes()
    rows = [
        {
            "id": r.id,
            "url": urls.recipe(r.id),
            "created_at": r.created_at.isoformat(timespec="seconds"),
            "model_id": r.model_id,
            "title": r.title,
            "verdict": r.verdict,
            "strength": r.strength,
        }
        for r in items
    ]
    return render(request, "recipes.html", {"recipes": rows}, data={"recipes": rows})


@router.get("/recipes/{recipe_id}.md", response_class=PlainTextResponse)
def recipe_markdown(request: Request, recipe_id: str, evaluations: EvaluationsDep):
    result = _recipe(evaluations, recipe_id)
    text = to_markdown(result, title(result), str(request.base_url).rstrip("/") + urls.recipe(recipe_id))
    return PlainTextResponse(text, media_type="text/markdown; charset=utf-8")


@pages.get("/recipes/{recipe_id}")
def recipe_page(request: Request, recipe_id: str, evaluations: EvaluationsDep, catalog: CatalogDep):
    result = _recipe(evaluations, recipe_id)
    context = {"r": result, "recipe_id": recipe_id, "title": title(result), "models": [m.model_id for m in catalog]}
    return render(request, "recipe.html", context, data=result.model_dump())


@api.post(
    "/{recipe_id}/run-again",
    status_code=202,
    response_model=EvalStarted,
    summary="Evaluate a recipe's request again (same prompts and seeds)",
    dependencies=[rates.STEER],
)
def run_again(
    recipe_id: str,
    body: RunAgain,
    request: Request,
    catalog: CatalogDep,
    live: LiveDep,
    steering: SteeringDep,
    evaluations: EvaluationsDep,
) -> EvalStarted:
    req = _recipe(evaluations, recipe_id).request
    if body.model_id:
        req = req.model_copy(update={"spec": req.spec.model_copy(update={"model_id": body.model_id})})
    return start(req, request, catalog, live, steering, evaluations)


router.include_router(pages)
router.include_router(api)
