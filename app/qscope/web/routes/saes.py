"""`/{model_id}/{sae_id}`: an SAE's features, sorted, filtered and paged; and the random-feature action."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse
from pydantic import BeforeValidator, Field, WithJsonSchema

from qscope.explain.service import ExplanationLine
from qscope.store.queries import DensityHistogram, FeatureList, SortKey
from qscope.store.schema import SaeInfo
from qscope.web import urls
from qscope.web.catalog import NotFound
from qscope.web.deps import CatalogDep
from qscope.web.errors import Unprocessable
from qscope.web.render import render
from qscope.web.twins import TwinRoute, wants_json

router = APIRouter(route_class=TwinRoute)


@dataclass
class SaePage:
    model_id: str
    sae: SaeInfo
    features: FeatureList
    density: DensityHistogram
    params: dict  # the filter, sort and page as given (normalised)
    page: int
    pages: int
    urls: dict  # prev, next, json, random
    explanations: dict[int, ExplanationLine] = field(default_factory=dict)  # feature -> its explanation, if any


def _blank(value: object) -> object:
    return None if isinstance(value, str) and not value.strip() else value


# A density bound: a fraction between 0 and 1, or '' for none (plain HTML forms send empty fields)
Density = Annotated[
    Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None,
    BeforeValidator(_blank),
    WithJsonSchema({"anyOf": [{"type": "number", "minimum": 0, "maximum": 1}, {"type": "string", "maxLength": 0}]}),
]


@router.get("/-/random/{model_id}/{sae_id}")
def random_feature(request: Request, model_id: str, sae_id: str, catalog: CatalogDep):
    served = catalog.sae(model_id, sae_id)
    with served.store.reader() as r:
        feature = r.random_feature(sae_id)
    if feature is None:
        raise NotFound(f"{sae_id} has no feature that fired.", [(sae_id, urls.sae(model_id, sae_id))])
    # asked for as its .json twin: to the feature's .json twin, so the answer is JSON as the schema says
    return RedirectResponse(urls.feature(model_id, sae_id, feature, json=wants_json(request)), status_code=302)


@router.get("/{model_id}/{sae_id}")
def sae_page(
    request: Request,
    model_id: str,
    sae_id: str,
    catalog: CatalogDep,
    sort: SortKey = "index",
    order: Literal["asc", "desc", ""] = "",
    q: Annotated[str, Query(max_length=200)] = "",
    dmin: Annotated[Density, Query(description="Lowest density shown (a fraction)")] = None,
    dmax: Annotated[Density, Query(description="Highest density shown (a fraction)")] = None,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    per_page: Annotated[int, Query(ge=1, le=500)] = 50,
):
    served = catalog.sae(model_id, sae_id)
    low, high = dmin, dmax
    if low is not None and high is not None and low > high:
        raise Unprocessable(f"Bad parameter: dmin ({low}) is above dmax ({high}); the density range is empty.")
    order_given, order = order, order or ("asc" if sort == "index" else "desc")
    with served.store.reader() as r:
        found = r.features(
            sae_id,
            sort=sort,
            desc=order == "desc",
            q=q.strip(),
            dmin=low,
            dmax=high,
            limit=per_page,
            offset=(page - 1) * per_page,
        )
        density = r.density_histogram(sae_id)
    pages = max(1, -(-found.total // per_page))
    params = {"sort": sort, "order": order, "q": q.strip(), "dmin": low, "dmax": high, "per_page": per_page}
    shown = {k: v for k, v in params.items() if v not in (None, "") and not (k == "per_page" and v == 50)}
    if not order_given:
        shown.pop("order")
    if shown.get("sort") == "index":
        shown.pop("sort")
    params["order_given"] = order_given

    def at(p: int, json: bool = False) -> str:
        return urls.sae(model_id, sae_id, json=json, **shown, page=p if p > 1 else None)

    links = {
        "prev": at(page - 1) if page > 1 else None,
        "next": at(page + 1) if page < pages else None,
        "json": at(page, json=True),
        "self": at(page),
        "random": urls.random_feature(model_id, sae_id),
    }
    lines = request.app.state.explained.lines(served.store, model_id, sae_id, [r.feature for r in found.rows])
    data = SaePage(model_id, served.sae, found, density, params, page, pages, links, lines)
    return render(request, "sae.html", {"p": data}, data=data, partial="_feature_table.html")
