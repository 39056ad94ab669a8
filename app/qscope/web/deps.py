"""Typed dependencies of the routes: what create_app put on app.state."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from qscope.config import Settings
from qscope.live.runner import Limits, LiveModels
from qscope.search.searcher import Searcher
from qscope.steer.service import Steering
from qscope.web.catalog import Catalog


def get_catalog(request: Request) -> Catalog:
    return request.app.state.catalog


def get_searcher(request: Request) -> Searcher:
    return request.app.state.searcher


def get_live(request: Request) -> LiveModels:
    return request.app.state.live


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_limits(request: Request) -> Limits:
    return request.app.state.limits


def get_steering(request: Request) -> Steering:
    return request.app.state.steering


CatalogDep = Annotated[Catalog, Depends(get_catalog)]
SearcherDep = Annotated[Searcher, Depends(get_searcher)]
LiveDep = Annotated[LiveModels, Depends(get_live)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
LimitsDep = Annotated[Limits, Depends(get_limits)]
SteeringDep = Annotated[Steering, Depends(get_steering)]
