"""The app database's schema revisions (Alembic, configured here in code: no alembic.ini).

The revisions live in migrations/versions/ inside the package, so they ship in the wheel. `upgrade` brings a
database to the newest one, in one transaction that also keeps a second process out while it runs (SQLite:
BEGIN IMMEDIATE; Postgres: an advisory lock). A database made before migrations (tables, no alembic_version) is
adopted: its tables are checked against revision 0001's and it is upgraded from there. A database at a
revision this qscope does not know was written by a newer qscope: it is refused and left untouched.
How to add a revision: docs/app-db.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, MetaData, create_engine, event, inspect, text
from sqlalchemy.pool import NullPool

from qscope.appdb import AppDbError, is_in_memory, shown

MIGRATIONS = Path(__file__).parent / "migrations"
FIRST = "0001"
LOCK_KEY = 0x71_73_63_6F_70_65  # "qscope": the Postgres advisory lock held while a migration runs


@dataclass(frozen=True)
class Upgraded:
    before: str | None  # the revision found (None: no schema yet, or one from before migrations)
    after: str
    adopted: bool = False  # tables from before migrations were found and kept


def config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    cfg.attributes["connection"] = connection
    return cfg


@cache
def scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(config())


def head() -> str:
    found = scripts().get_current_head()
    assert found is not None, "the app database has at least one revision"
    return found


def known() -> list[str]:
    """Every revision this qscope knows, oldest first."""
    return [s.revision for s in reversed(list(scripts().walk_revisions()))]


def first_schema() -> MetaData:
    """Revision 0001's tables (what a database from before migrations may hold)."""
    module = scripts().get_revision(FIRST).module
    return module.metadata


def revision_of(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def has_tables(conn: Connection) -> bool:
    return bool(set(inspect(conn).get_table_names()) & set(first_schema().tables))


def check_known(revision: str | None, url: str) -> None:
    """AppDbError when `revision` is one a newer qscope wrote."""
    if revision is not None and revision not in known():
        raise AppDbError(
            f"the app database {shown(url)} is at revision {revision}, which this qscope does not know (it was "
            f"written by a newer qscope, whose newest is past {head()}): upgrade qscope to use it; nothing was changed"
        )


def check_first_schema(conn: Connection, url: str) -> None:
    """A database from before migrations: each of its tables must have revision 0001's columns."""
    found = inspect(conn)
    present = set(found.get_table_names())
    for table in first_schema().sorted_tables:
        if table.name in present:
            columns = {c["name"] for c in found.get_columns(table.name)}
            if columns != set(table.columns.keys()):
                raise AppDbError(
                    f"the app database {shown(url)} has no revision, and its table {table.name} is not the one "
                    f"qscope made before migrations (columns {sorted(columns)}): restore it from a backup "
                    "(qscope app-db export/import); nothing was changed"
                )


def _lock(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})


def _migrating_engine(engine: Engine) -> tuple[Engine, bool]:
    """The engine to migrate on: for a SQLite file, one of its own whose transactions are real and begin with
    BEGIN IMMEDIATE (pysqlite would run each CREATE TABLE outside a transaction and take no lock until the
    first insert); True when it is a new engine to dispose of."""
    url = engine.url.render_as_string(hide_password=False)
    if engine.dialect.name != "sqlite" or is_in_memory(url):
        return engine, False
    own = create_engine(url, poolclass=NullPool)

    @event.listens_for(own, "connect")
    def _autocommit(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # the driver begins nothing by itself: the "begin" hook does

    @event.listens_for(own, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return own, True


def migrate_to(engine: Engine, target: str) -> Upgraded:
    """Upgrade (or, for `qscope app-db import` into an empty database, downgrade) to `target`."""
    url = engine.url.render_as_string(hide_password=False)
    runner, own = _migrating_engine(engine)
    try:
        with runner.begin() as conn:
            _lock(conn)
            before = revision_of(conn)
            check_known(before, url)
            adopted = before is None and has_tables(conn)
            if adopted:
                check_first_schema(conn, url)
            if before != target:
                order = known()
                if before is not None and order.index(before) > order.index(target):
                    command.downgrade(config(conn), target)
                else:
                    command.upgrade(config(conn), target)
    finally:
        if own:
            runner.dispose()
    return Upgraded(before, target, adopted)


def upgrade(engine: Engine) -> Upgraded:
    """Bring the database to the newest revision (nothing to do when it is there)."""
    url = engine.url.render_as_string(hide_password=False)
    with engine.connect() as conn:  # the common case, at head already, reads one row and takes no lock
        now = revision_of(conn)
    check_known(now, url)
    if now == head():
        return Upgraded(now, now)
    return migrate_to(engine, head())


def current(engine: Engine) -> str | None:
    """The database's revision (None: none yet, or tables from before migrations)."""
    with engine.connect() as conn:
        return revision_of(conn)
