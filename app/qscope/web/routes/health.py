"""`/-/health`: a cheap liveness answer for container healthchecks, load balancers and `qscope health`."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from qscope.web.deps import CatalogDep

router = APIRouter()


class Health(BaseModel):
    status: str = Field(description="'ok' whenever the server answers.")
    stores: int = Field(description="Feature stores served.")
    models: list[str] = Field(description="model_id of every model served.")
    steer_waiting: int = Field(description="Steering requests waiting in the worker's queue.")
    search_ready: bool = Field(
        description="Every search index is built or loaded (until then text search scans and semantic search may "
        "leave a store out)."
    )


@router.get("/-/health", response_model=Health, summary="Liveness: the server answers and what it serves")
def health(request: Request, catalog: CatalogDep) -> Health:
    waiting = request.app.state.steering.worker.queued()
    models, ready = [m.model_id for m in catalog], request.app.state.searcher.ready()
    return Health(status="ok", stores=len(catalog.stores), models=models, steer_waiting=waiting, search_ready=ready)
