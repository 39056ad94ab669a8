"""`/inspect`: run the model and SAEs on a text (token x feature view) or compare two sets of texts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request

from qscope.live.inspect import Analysis, TextSetComparison, analyze, compare, split_set
from qscope.web import rates, urls
from qscope.web.catalog import NotFound
from qscope.web.deps import CatalogDep, LimitsDep, LiveDep, SettingsDep
from qscope.web.errors import Unprocessable
from qscope.web.render import render
from qscope.web.twins import TwinRoute

router = APIRouter(route_class=TwinRoute)


@dataclass
class InspectPage:
    mode: str  # 'analyze' | 'compare'
    model_id: str
    models: list[str]
    text: str
    a: str
    b: str
    analysis: Analysis | None
    comparison: TextSetComparison | None
    note: str | None  # why live runs are not available here, if they are not
    max_chars: int  # the longest text a run takes (the page counts as you type)


def _check_len(name: str, text: str, max_chars: int) -> None:
    if len(text) > max_chars:
        what = "the text" if name == "text" else f"text {name.upper()}"
        raise Unprocessable(
            f"{what.capitalize()} is {len(text):,} characters long; this server runs at most {max_chars:,}. "
            f"Shorten it and run again. (parameter {name})"
        )


@router.get("/inspect", dependencies=[rates.INSPECT_TEXT])
def inspect_page(
    request: Request,
    catalog: CatalogDep,
    live: LiveDep,
    limits: LimitsDep,
    settings: SettingsDep,
    text: str = "",
    mode: Literal["analyze", "compare"] = "analyze",
    a: str = "",
    b: str = "",
    model_id: str | None = None,
    top: Annotated[int, Query(ge=1, le=100)] = 24,
):
    models = [m.model_id for m in catalog]
    model_id = model_id or models[0]
    catalog.model(model_id)
    runner = live.get(model_id)
    if runner is None:
        raise NotFound(f"No live model for {model_id!r}.", [(m, urls.inspect(model_id=m)) for m in models])
    for name, value in (("text", text), ("a", a), ("b", b)):
        _check_len(name, value, limits.max_chars)
    analysis = comparison = None
    note = runner.problem()
    if mode == "analyze" and text.strip():
        analysis = analyze(runner.run(text, limits), runner.store, n_features=top)
    elif mode == "compare" and (a.strip() or b.strip()):
        sets = split_set(a), split_set(b)
        for name, texts in zip("ab", sets, strict=True):
            if len(texts) > settings.live.max_texts:
                raise Unprocessable(
                    f"Set {name.upper()} holds {len(texts)} texts; at most {settings.live.max_texts} are compared. "
                    f"(parameter {name})"
                )
        runs_a, runs_b = ([runner.run(t, limits) for t in texts] for texts in sets)
        comparison = compare(runs_a, runs_b, runner.store, n=top)
    data = InspectPage(mode, model_id, models, text, a, b, analysis, comparison, note, limits.max_chars)
    return render(request, "inspect.html", {"p": data}, data=data, partial="_inspect_result.html")
