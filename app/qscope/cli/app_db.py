"""`qscope app-db current|upgrade|export|import`: where the app database's schema stands, bringing it to this
qscope's newest revision, and backing it up to a file or restoring it (any backend to any backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from qscope.cli.app import QTyper, cli, say
from qscope.config import get_settings

app_db_cli = QTyper(no_args_is_help=True, help="The app database: its schema revision, upgrade, backup and restore.")
cli.add_typer(app_db_cli, name="app-db")

UrlOption = Annotated[
    str | None, typer.Option("--url", help="SQLAlchemy URL of the app database (default: QSCOPE_APP_DB_URL).")
]


def _url(url: str | None) -> str:
    return url or get_settings().app_db.url


def upgrade_line(url: str, create: bool = False) -> str:
    """Upgrade the app database at `url` and say so in one line (`qscope serve` prints it at start); a SQLite
    file nobody has written yet is made only when `create`. AppDbError for a database from a newer qscope."""
    from qscope.appdb import engine_for, is_missing_file, shown
    from qscope.appdb.migrate import head, upgrade

    if is_missing_file(url) and not create:
        return f"app database {shown(url)}: none yet (made at revision {head()} when something is first saved)"
    with engine_for(url) as engine:
        done = upgrade(engine)
    if done.before == done.after:
        return f"app database {shown(url)}: at revision {done.after} (the newest)"
    was = "tables from before migrations" if done.adopted else f"revision {done.before or 'none (empty)'}"
    return f"app database {shown(url)}: upgraded from {was} to revision {done.after}"


def _fail(err: Exception) -> typer.Exit:
    say(f"error: {err}", "red")
    return typer.Exit(2)


@app_db_cli.command("current")
def current_cmd(url: UrlOption = None) -> None:
    """Say which schema revision the app database is at, and whether `qscope app-db upgrade` has work to do."""
    from qscope.appdb import AppDbError, engine_for, is_missing_file, shown
    from qscope.appdb.migrate import has_tables, head, known, revision_of

    url = _url(url)
    if is_missing_file(url):
        say(f"app database {shown(url)}: none yet (qscope makes it at revision {head()} when something is saved)")
        return
    try:
        with engine_for(url) as engine, engine.connect() as conn:
            revision = revision_of(conn)
            old_tables = revision is None and has_tables(conn)
    except AppDbError as err:
        raise _fail(err) from err
    if revision == head():
        say(f"app database {shown(url)}: at revision {revision} (the newest this qscope knows)")
    elif revision is not None and revision not in known():
        say(f"app database {shown(url)}: at revision {revision}, newer than this qscope ({head()}): upgrade qscope")
        raise typer.Exit(1)
    else:
        was = "tables from before migrations" if old_tables else f"revision {revision or 'none (empty)'}"
        say(f"app database {shown(url)}: at {was}; `qscope app-db upgrade` brings it to {head()}")


@app_db_cli.command("upgrade")
def upgrade_cmd(url: UrlOption = None) -> None:
    """Bring the app database to this qscope's newest schema revision (`qscope serve` does this at start)."""
    from qscope.appdb import AppDbError

    try:
        say(upgrade_line(_url(url), create=True))
    except AppDbError as err:
        raise _fail(err) from err


@app_db_cli.command("export")
def export_cmd(
    file: Annotated[Path, typer.Argument(help="The JSON-lines file to write (every table, with the revision).")],
    url: UrlOption = None,
) -> None:
    """Back up every table of the app database to FILE (restore with `qscope app-db import FILE`)."""
    from qscope.appdb import AppDbError, engine_for, is_missing_file, shown
    from qscope.appdb.backup import export_file

    url = _url(url)
    if is_missing_file(url):
        raise _fail(AppDbError(f"no app database at {shown(url)}: nothing to export"))
    try:
        with engine_for(url) as engine:
            counts = export_file(engine, file)
    except AppDbError as err:
        raise _fail(err) from err
    say(f"wrote {sum(counts.values())} rows of {len(counts)} tables to {file}")


@app_db_cli.command("import")
def import_cmd(
    file: Annotated[Path, typer.Argument(help="A file written by `qscope app-db export`.")],
    url: UrlOption = None,
) -> None:
    """Restore FILE into an empty app database (SQLite or Postgres), then upgrade it to the newest revision."""
    from qscope.appdb import AppDbError, engine_for, shown
    from qscope.appdb.backup import import_file

    url = _url(url)
    if not file.is_file():
        raise _fail(AppDbError(f"no file {file}"))
    try:
        with engine_for(url) as engine:
            counts = import_file(engine, file)
    except AppDbError as err:
        raise _fail(err) from err
    say(f"imported {sum(counts.values())} rows into {len(counts)} tables of {shown(url)}")
