"""`/{model_id}/{sae_id}/{feature}`: a feature's dashboard (and `?embed=1`, a bare card for other pages)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Request

from qscope.store.queries import FeatureDetail
from qscope.store.schema import SaeInfo
from qscope.tokens import visible
from qscope.web import urls
from qscope.web.catalog import Catalog, NotFound
from qscope.web.deps import CatalogDep
from qscope.web.errors import Unprocessable
from qscope.web.render import render
from qscope.web.twins import TwinRoute

router = APIRouter(route_class=TwinRoute)


@dataclass
class FeaturePage:
    model_id: str
    sae: SaeInfo
    detail: FeatureDetail
    urls: dict  # self, json, embed, sae, steer, evaluate, random, prev, next
    neighbor_urls: list[str]  # one per detail.neighbors
    summary: str  # one line for link previews: label, density, top tokens


def _parse_feature(segment: str) -> int:
    text = segment
    try:
        return int(text)
    except ValueError:
        raise Unprocessable(f"Bad parameter: feature must be a whole number (a feature index), got {text!r}.") from None


def _neighbor_url(catalog: Catalog, model_id: str, sae_id: str, feature: int) -> str:
    served = catalog.find_sae(sae_id)
    return urls.feature(served.sae.model_id if served else model_id, sae_id, feature)


@router.get("/{model_id}/{sae_id}/{feature_seg}")
def feature_page(
    request: Request, model_id: str, sae_id: str, feature_seg: str, catalog: CatalogDep, embed: bool = False
):
    feature = _parse_feature(feature_seg)
    served = catalog.sae(model_id, sae_id)
    catalog.check_feature(served, feature)
    with served.store.reader() as r:
        detail = r.feature(sae_id, feature)
    if detail is None:
        raise NotFound(
            f"{sae_id} has no row for feature {feature} (the harvest did not record it).",
            [("all features", urls.sae(model_id, sae_id))],
        )
    last = served.sae.d_sae - 1
    links = {
        "self": urls.feature(model_id, sae_id, feature),
        "json": urls.feature(model_id, sae_id, feature, json=True),
        "embed": urls.feature(model_id, sae_id, feature, embed=1),
        "sae": urls.sae(model_id, sae_id),
        "steer": urls.steer(sae_id, feature),
        "random": urls.random_feature(model_id, sae_id),
        "evaluate": urls.steer_eval(model_id=model_id, sae_id=sae_id, feature=feature),
        "prev": urls.feature(model_id, sae_id, feature - 1) if feature > 0 else None,
        "next": urls.feature(model_id, sae_id, feature + 1) if feature < last else None,
    }
    row = detail.row
    tops = " ".join(visible(t) for t in row.top_tokens[:5])
    summary = f"{row.label} · density {row.density:.3%} · max {row.max_act:.3g} · top tokens: {tops}"
    neighbor_urls = [_neighbor_url(catalog, model_id, n.sae_id, n.feature) for n in detail.neighbors]
    data = FeaturePage(model_id, served.sae, detail, links, neighbor_urls, summary)
    template = "feature_embed.html" if embed else "feature.html"
    return render(request, template, {"p": data}, data=data, partial=None if embed else "_dashboard.html")
