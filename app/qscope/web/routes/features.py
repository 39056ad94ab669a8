"""`/{model_id}/{sae_id}/{feature}`: a feature's dashboard (and `?embed=1`, a bare card that other sites may frame).

A feature has one URL: its index in ASCII digits without leading zeros. Leading zeros redirect there; any other
spelling Python's int() would take (`+5`, ` 5`, `1_0`, other scripts' digits) is not a page (404).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import RedirectResponse
from pydantic import WithJsonSchema

from qscope.explain.service import FeatureWords
from qscope.store.queries import FeatureDetail, Neighbor
from qscope.store.schema import SaeInfo
from qscope.tokens import visible
from qscope.web import urls
from qscope.web.catalog import Catalog, NotFound, ServedSae
from qscope.web.deps import CatalogDep
from qscope.web.render import render
from qscope.web.security import csp
from qscope.web.twins import TwinRoute, wants_json

router = APIRouter(route_class=TwinRoute)
DIGITS = re.compile(r"[0-9]+")
FeatureSegment = Annotated[
    str,
    Path(description="Feature index (0 to the SAE's width - 1), in digits."),
    WithJsonSchema({"type": "integer", "minimum": 0}),
]


@dataclass
class NeighborGroup:
    """The nearest features in one SAE, under a heading (cosines of different SAEs do not compare)."""

    heading: str  # 'this SAE (layer 1)', 'layer 0'
    sae_id: str
    rows: list[tuple[Neighbor, str]]  # (neighbor, its dashboard URL), nearest first


@dataclass
class FeaturePage:
    model_id: str
    sae: SaeInfo
    detail: FeatureDetail
    urls: dict  # self, json, embed, sae, steer, evaluate, random, prev, next
    neighbor_urls: list[str]  # one per detail.neighbors
    summary: str  # one line for link previews: label, density, top tokens
    neighbor_groups: list[NeighborGroup]  # detail.neighbors by SAE: this one first, then the other layers
    words: FeatureWords | None = None  # its automatic explanation and scores, people's notes and lists


def _neighbor_groups(
    catalog: Catalog, sae: SaeInfo, neighbors: list[Neighbor], links: list[str]
) -> list[NeighborGroup]:
    groups: dict[str, NeighborGroup] = {}
    for n, url in zip(neighbors, links, strict=True):
        if n.sae_id not in groups:
            other = catalog.find_sae(n.sae_id)
            layer = other.sae.layer if other else None
            where = f"layer {layer}" if layer is not None else n.sae_id
            heading = f"this SAE ({where})" if n.sae_id == sae.sae_id else where
            if other and n.sae_id != sae.sae_id and layer == sae.layer:
                heading = f"{where}, {n.sae_id}"  # another SAE of the same layer
            groups[n.sae_id] = NeighborGroup(heading, n.sae_id, [])
        groups[n.sae_id].rows.append((n, url))
    return list(groups.values())


def _parse_feature(segment: str, model_id: str, sae: SaeInfo) -> int:
    if not DIGITS.fullmatch(segment):
        raise NotFound(
            f"No feature {segment!r} in {sae.sae_id}: its features are 0 to {sae.d_sae - 1}, written in digits 0-9.",
            [("all features", urls.sae(model_id, sae.sae_id))],
        )
    return int(segment)


def _neighbor_url(catalog: Catalog, model_id: str, sae_id: str, feature: int) -> str:
    served = catalog.find_sae(sae_id)
    return urls.feature(served.sae.model_id if served else model_id, sae_id, feature)


@router.get("/{model_id}/{sae_id}/{feature}")
def feature_page(
    request: Request, model_id: str, sae_id: str, feature: FeatureSegment, catalog: CatalogDep, embed: bool = False
):
    served = catalog.sae(model_id, sae_id)
    index = _parse_feature(feature, model_id, served.sae)
    if feature != str(index):  # leading zeros: the one URL of this feature
        query = f"?{request.url.query}" if request.url.query else ""
        return RedirectResponse(urls.feature(model_id, sae_id, index, json=wants_json(request)) + query, 301)
    return _feature_page(request, model_id, served, index, catalog, embed)


def _feature_page(request: Request, model_id: str, served: ServedSae, feature: int, catalog: Catalog, embed: bool):
    sae_id = served.sae.sae_id
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
    words = request.app.state.explained.words(served.store, model_id, sae_id, feature)
    groups = _neighbor_groups(catalog, served.sae, detail.neighbors, neighbor_urls)
    data = FeaturePage(model_id, served.sae, detail, links, neighbor_urls, summary, groups, words)
    template = "feature_embed.html" if embed else "feature.html"
    response = render(request, template, {"p": data}, data=data, partial=None if embed else "_dashboard.html")
    if embed and not wants_json(request):
        response.headers["Content-Security-Policy"] = csp(frame="*")  # the card is made to be framed anywhere
    return response
