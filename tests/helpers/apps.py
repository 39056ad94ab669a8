"""The app under test in-process: its Settings (on the CPU, with its own SQLite app database and cache in a
folder of the test's) and a starlette TestClient on it."""

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from qscope.config import Settings
from qscope.web import create_app


def app_settings(tmp: Path, **overrides: Any) -> Settings:
    """Settings for a test's app: device cpu, app database `tmp`/app.db, cache `tmp`/cache; `overrides` on top."""
    return Settings(device="cpu", cache_dir=tmp / "cache", app_db_url=f"sqlite:///{tmp}/app.db", **overrides)


def app_client(stores: Iterable[Path], settings: Settings, **client_options: Any) -> TestClient:
    """A TestClient on the app serving `stores` (`with` it to run the app's start and stop). The semantic index is
    not warmed at start: a test that searches waits for it, the others do not pay for it."""
    return TestClient(create_app(list(stores), settings, warm_search=False), **client_options)
