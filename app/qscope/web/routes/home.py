"""`/`: the models and SAEs served, with their sizes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Request

from qscope.store.paths import shown_path
from qscope.store.schema import SaeInfo
from qscope.web import urls
from qscope.web.deps import CatalogDep, SettingsDep
from qscope.web.render import render
from qscope.web.twins import TwinRoute

router = APIRouter(route_class=TwinRoute)


@dataclass
class SaeSummary:
    sae: SaeInfo
    url: str
    live: int  # features that fired
    db: str  # the store file


@dataclass
class ModelSummary:
    model_id: str
    n_features: int
    saes: list[SaeSummary]


@dataclass
class Home:
    models: list[ModelSummary]
    stores: list[dict]


@router.get("/")
def home_page(request: Request, catalog: CatalogDep, settings: SettingsDep):
    def shown(path: str | None, store: Path) -> str | None:
        return path if settings.show_paths else shown_path(path, store)

    models = [
        ModelSummary(
            m.model_id,
            m.n_features,
            [
                SaeSummary(s.sae, urls.sae(m.model_id, s.sae.sae_id), s.sae.d_sae - s.sae.dead, s.store.path.name)
                for s in m.saes
            ],
        )
        for m in catalog
    ]
    stores = [
        {
            "file": st.path.name,
            "bytes": st.path.stat().st_size,
            "tokens": st.meta.get("tokens"),
            "corpus": shown(st.meta.get("corpus"), st.path),
            "created_at": st.meta.get("created_at"),
            "model": shown(st.model_source, st.path),
        }
        for st in catalog.stores
    ]
    data = Home(models, stores)
    return render(request, "index.html", {"home": data}, data=data)
