"""The app database: what people save while using the server (shared steering runs, recipes, notes and lists,
discoveries and detectors), in SQLite by default or Postgres (QSCOPE_APP_DB_URL).

One SQLAlchemy `Base` (one metadata) that every table model uses, so the migrations (qscope.appdb.migrate, the
Alembic revisions in migrations/versions/) see the whole schema; `open_app_db` opens the database and brings its
schema to the newest revision this qscope knows, or refuses one written by a newer qscope."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import StaticPool


class Base(DeclarativeBase):
    """The base of every app-database table (qscope.steer.runs, steer.evaluate.recipes, explain.notes,
    discover.store): one metadata for the whole schema."""


class AppDbError(Exception):
    """An app database this qscope cannot use as it is; the message is one line saying what to do."""


def is_in_memory(url: str) -> bool:
    parsed = make_url(url)
    return parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:")


def is_missing_file(url: str) -> bool:
    """Whether `url` names a SQLite file that does not exist yet (nothing was ever saved)."""
    parsed = make_url(url)
    return parsed.get_backend_name() == "sqlite" and not is_in_memory(url) and not Path(parsed.database or "").is_file()


def shown(url: str) -> str:
    """The URL as a log line may show it (no password)."""
    return make_url(url).render_as_string(hide_password=True)


def make_engine(url: str) -> Engine:
    """An engine on `url` (a SQLite file's folder made), with no schema check.

    An in-memory SQLite database (`sqlite://`) lives in one connection: every thread of the server must share it
    (a connection per thread would each see an empty database without the tables)."""
    if is_in_memory(url):
        return create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        Path(parsed.database or "").parent.mkdir(parents=True, exist_ok=True)
    try:
        return create_engine(url)
    except ModuleNotFoundError as e:  # the URL's driver (psycopg for postgresql+psycopg://) is not installed
        raise AppDbError(f"the app database {shown(url)} needs {e.name}: pip install -e .[postgres]") from e


@contextmanager
def reached(url: str) -> Iterator[None]:
    """Turn a database that cannot be reached (a Postgres server down, a wrong password) into one line."""
    try:
        yield
    except OperationalError as e:
        first = (str(e.orig or e).strip().splitlines() or [type(e).__name__])[0]
        raise AppDbError(f"cannot use the app database {shown(url)}: {first}") from e


@contextmanager
def engine_for(url: str) -> Iterator[Engine]:
    """An engine on `url` for one piece of work (a command's), disposed after it; no schema check. A database that
    cannot be reached is one line (AppDbError, as `reached` says)."""
    engine = make_engine(url)
    try:
        with reached(url):
            yield engine
    finally:
        engine.dispose()


def open_app_db(url: str) -> Engine:
    """An engine on `url` whose schema is at the newest revision (upgraded first if it was behind, or created);
    AppDbError for a database from a newer qscope, which is left as it is."""
    from qscope.appdb.migrate import upgrade

    engine = make_engine(url)
    try:
        upgrade(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine
