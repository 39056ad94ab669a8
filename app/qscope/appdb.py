"""The app database: what people save while using the server (shared steering runs, recipes, notes and lists,
discoveries and detectors), in SQLite by default or Postgres (Settings.app_db_url). Each feature keeps its own
tables (its own SQLAlchemy metadata); this module opens the database for it."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, MetaData, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool


def open_app_db(url: str, metadata: MetaData) -> Engine:
    """An engine on `url` with `metadata`'s tables created if missing (and a SQLite file's folder made).

    An in-memory SQLite database (`sqlite://`) lives in one connection: every thread of the server must share it
    (a connection per thread would each see an empty database without the tables)."""
    parsed = make_url(url)
    in_memory = parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:")
    if parsed.get_backend_name() == "sqlite" and not in_memory:
        Path(parsed.database or "").parent.mkdir(parents=True, exist_ok=True)
    if in_memory:
        engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        engine = create_engine(url)
    metadata.create_all(engine)
    return engine
