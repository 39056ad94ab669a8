"""Detectors: `POST /api/detectors` fits one on a discovery and saves it; `/detectors` lists them; each has a
permalink `/detectors/{id}` (+ `.json`) with its held-out scores; `POST /api/detect` runs one on new text."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np
from fastapi import APIRouter, Request

from qscope.discover.detector_runs import DetectResult, SavedDetector
from qscope.discover.requests import DetectorRequest, DetectRequest
from qscope.discover.store import Listed
from qscope.web import rates, urls
from qscope.web.catalog import NotFound
from qscope.web.deps import CatalogDep, LiveDep
from qscope.web.discovering import DiscoveringDep, bad_input, served_async
from qscope.web.render import render
from qscope.web.routes.discover import DemoInfo, demo_infos
from qscope.web.twins import TwinRoute

router = APIRouter(route_class=TwinRoute)  # pages: each answers at its path + .json too
api = APIRouter()  # the JSON API (no twins)


class SavedOut(SavedDetector):
    url: str


def _saved(discovering, detector_id: str) -> SavedDetector:
    saved = discovering.detector(detector_id)
    if saved is None:
        raise NotFound(f"No saved detector {detector_id!r}.", [("all detectors", urls.detectors())], what="pages")
    return saved


@api.post(
    "/api/detectors",
    tags=["detectors"],
    response_model=SavedOut,
    summary="Fit a detector (a rule over 1-5 features, L1 logistic regression, or DiffMean / a probe on a "
    "site's residual) on a discovery's train split, score it on its test split and save it",
    dependencies=[rates.MODEL_RUN],
)
async def create_detector(body: DetectorRequest, catalog: CatalogDep, live: LiveDep, discovering: DiscoveringDep):
    d = discovering.discovery(body.discovery)
    if d is None:
        raise NotFound(f"No saved discovery {body.discovery!r}: run one first (POST /api/discover).")
    with bad_input():
        model = await served_async(catalog, live, d.model_id)
        saved = await asyncio.to_thread(discovering.fit_detector, model, d, body.spec, body.name)
    return SavedOut(url=urls.detector(saved.id), **saved.model_dump())


@api.post(
    "/api/detect",
    tags=["detectors"],
    response_model=DetectResult,
    summary="Run a saved detector on texts: per text whether it fired, and the tokens that tripped it",
    dependencies=[rates.MODEL_RUN],
)
async def detect_api(body: DetectRequest, catalog: CatalogDep, live: LiveDep, discovering: DiscoveringDep):
    saved = _saved(discovering, body.detector)
    with bad_input():
        model = await served_async(catalog, live, saved.model_id)
        return await asyncio.to_thread(discovering.detect, model, saved, body.texts)


@dataclass
class TermRow:
    n: int
    term: object  # FittedTerm
    dashboard: str


@dataclass
class DetectorPage:
    saved: SavedDetector
    terms: list[TermRow]
    discovery_url: str | None
    json_url: str
    direction_norm: float | None = None  # direction detectors: |w|


@router.get("/detectors/{detector_id}")
def detector_page(request: Request, detector_id: str, discovering: DiscoveringDep):
    saved = _saved(discovering, detector_id)
    terms = [
        TermRow(n, t, urls.feature(saved.model_id, t.sae_id, t.feature)) for n, t in enumerate(saved.detector.terms)
    ]
    norm = float(np.linalg.norm(saved.detector.direction)) if saved.detector.reads_residual else None
    page = DetectorPage(
        saved,
        terms,
        urls.discovery(saved.discovery) if saved.discovery else None,
        urls.detector(saved.id, json=True),
        norm,
    )
    return render(request, "detector.html", {"p": page}, data=saved.model_dump())


@dataclass
class DetectorsPage:
    detectors: list[Listed]
    model_id: str
    demos: list[DemoInfo]  # demo sets a detector can be built from in one click


@router.get("/detectors")
def detectors_page(request: Request, catalog: CatalogDep, live: LiveDep, discovering: DiscoveringDep):
    model_id = catalog.model_id_or_first(None)
    page = DetectorsPage(discovering.recent("detector", 200), model_id, demo_infos(live, model_id))
    return render(request, "detectors.html", {"p": page}, data=page)


router.include_router(api)
