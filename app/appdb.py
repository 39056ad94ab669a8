"""The app database: what people save while using the server (shared steering runs, recipes, notes and lists,
discoveries and detectors), in SQLite by default or Postgres (Settings.app_db_url). Each feature keeps its own
tables (its own SQLAlchemy metadata); this module opens the database for it."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, MetaData, create_engine
from sqlalchemy.engine import make_url


def open_app_db(url: str, metadata: MetaData) -> Engine:
    """An engine on `url` with `metadata`'s tables created if missing (and a SQLite file's folder made)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url)
    metadata.create_all(engine)
    return engine
