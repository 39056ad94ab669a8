"""`/{model_id}/{sae_id}`: an SAE's features, sorted, filtered and paged; and the random-feature action."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse

from qscope.store.queries import DensityHistogram, FeatureList, SortKey
from qscope.store.schema import SaeInfo
from qscope.web import urls
from qscope.web.catalog import NotFound
from qscope.web.deps import CatalogDep
from qscope.web.errors import Unprocessable
from qscope.web.render import render
from qscope.web.twins import TwinRoute

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


def _density(name: str, text: str) -> float | None:
    """A density bound from the query ('' means none: plain HTML forms send empty fields)."""
    if not text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        raise Unprocessable(f"Bad parameter: {name} must be a number between 0 and 1, got {text!r}.") from None
    if not 0 <= value <= 1:
        raise Unprocessable(f"Bad parameter: {name} is a density, a fraction between 0 and 1; got {value:g}.")
    return value


@router.get("/-/random/{model_id}/{sae_id}")
def random_feature(model_id: str, sae_id: str, catalog: CatalogDep):
    served = catalog.sae(model_id, sae_id)
    with served.store.reader() as r:
        feature = r.random_feature(sae_id)
    if feature is None:
        raise NotFound(f"{sae_id} has no feature that fired.", [(sae_id, urls.sae(model_id, sae_id))])
    return RedirectResponse(urls.feature(model_id, sae_id, feature), status_code=302)


@router.get("/{model_id}/{sae_id}")
def sae_page(
    request: Request,
    model_id: str,
    sae_id: str,
    catalog: CatalogDep,
    sort: SortKey = "index",
    order: Literal["asc", "desc", ""] = "",
    q: Annotated[str, Query(max_length=200)] = "",
    dmin: Annotated[str, Query(max_length=40)] = "",
    dmax: Annotated[str, Query(max_length=40)] = "",
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    per_page: Annotated[int, Query(ge=1, le=500)] = 50,
):
    served = catalog.sae(model_id, sae_id)
    low, high = _density("dmin", dmin), _density("dmax", dmax)
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
    data = SaePage(model_id, served.sae, found, density, params, page, pages, links)
    return render(request, "sae.html", {"p": data}, data=data, partial="_feature_table.html")
