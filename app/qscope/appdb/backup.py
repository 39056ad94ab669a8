"""Backup and restore of the app database as a JSON-lines file (`qscope app-db export FILE` / `import FILE`): one
header line with the schema revision and the tables, then one line per row. Any backend to any backend, so a
user moves from SQLite to Postgres, or to a new machine, without losing a row.

The tables are read from the database itself (reflected), not from the models, so every table of the revision
travels, in foreign-key order. An import goes into an empty database only: it is brought to the export's
revision, the rows are written in one transaction, and it is then upgraded to the newest revision.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Connection, DateTime, Engine, MetaData, Table, func, insert, select, text

from qscope.appdb import AppDbError, shown
from qscope.appdb.migrate import check_known, current, has_tables, head, known, migrate_to, revision_of

FORMAT = "qscope-app-db"
VERSION_TABLE = "alembic_version"
BATCH = 500


def _tables(conn: Connection) -> list[Table]:
    meta = MetaData()
    meta.reflect(conn)
    return [t for t in meta.sorted_tables if t.name != VERSION_TABLE]


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        # in UTC, offset written: the app writes UTC times, which SQLite gives back without their zone
        return (value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # JSON has no NaN or infinity: kept as text, read back by _typed
    return value


def export_rows(engine: Engine, out: IO[str]) -> dict[str, int]:
    """Write the header and every row; {table: rows written}. AppDbError when there is nothing to export."""
    url = engine.url.render_as_string(hide_password=False)
    with engine.connect() as conn:
        revision = revision_of(conn)
        check_known(revision, url)
        if revision is None:
            raise AppDbError(
                f"the app database {shown(url)} has no revision (empty, or from before migrations): "
                "run `qscope app-db upgrade` first"
            )
        tables = _tables(conn)
        counts = {t.name: conn.scalar(select(func.count()).select_from(t)) or 0 for t in tables}
        header = {"format": FORMAT, "revision": revision, "tables": counts}
        out.write(json.dumps(header) + "\n")
        for table in tables:
            order = list(table.primary_key.columns) or list(table.columns)
            rows = conn.execution_options(yield_per=BATCH).execute(select(table).order_by(*order))
            for row in rows.mappings():
                line = {"table": table.name, "row": {k: _plain(v) for k, v in row.items()}}
                out.write(json.dumps(line, ensure_ascii=False) + "\n")
    return counts


def export_file(engine: Engine, path: Path) -> dict[str, int]:
    tmp = path.with_name(path.name + ".part")
    with tmp.open("w", encoding="utf-8") as out:
        counts = export_rows(engine, out)
    tmp.replace(path)  # a file named FILE is always a whole export
    return counts


def _typed(table: Table, row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, value in row.items():
        column = table.columns[name]
        if isinstance(column.type, DateTime) and isinstance(value, str):
            value = datetime.fromisoformat(value)
        elif value in ("nan", "inf", "-inf") and column.type.python_type is float:
            value = float(value)
        out[name] = value
    return out


def _read(lines: Iterator[str], path: Path) -> tuple[dict, Iterator[tuple[str, dict]]]:
    try:
        header = json.loads(next(lines))
    except (StopIteration, ValueError) as e:
        raise AppDbError(f"{path} is not a qscope app-db export (no header line)") from e
    if not isinstance(header, dict) or header.get("format") != FORMAT or not isinstance(header.get("revision"), str):
        raise AppDbError(f"{path} is not a qscope app-db export (its first line is not the header)")

    def rows() -> Iterator[tuple[str, dict]]:
        for n, line in enumerate(lines, start=2):
            try:
                item = json.loads(line)
                yield item["table"], item["row"]
            except (ValueError, KeyError, TypeError) as e:
                raise AppDbError(f"{path} line {n} is not a row of an export ({e})") from e

    return header, rows()


def _empty(engine: Engine, url: str) -> None:
    with engine.connect() as conn:
        if not has_tables(conn):
            return
        for table in _tables(conn):
            if conn.scalar(select(func.count()).select_from(table)):
                raise AppDbError(
                    f"the app database {shown(url)} is not empty (table {table.name} has rows): import into a new "
                    "database, or a new SQLite file"
                )


def _reset_sequences(conn: Connection, tables: list[Table]) -> None:
    """Postgres hands out serial ids from a sequence that rows written with their ids did not move."""
    if conn.dialect.name != "postgresql":
        return
    for table in tables:
        for column in table.primary_key.columns:
            if column.autoincrement is True or (column.autoincrement == "auto" and column.type.python_type is int):
                seq = conn.scalar(text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": table.name, "c": column.name})
                if seq:
                    last = conn.scalar(select(func.max(column)))
                    setval = text("SELECT setval(:s, :v, :called)")
                    conn.execute(setval, {"s": seq, "v": last or 1, "called": bool(last)})


def import_file(engine: Engine, path: Path) -> dict[str, int]:
    """Write every row of the export at `path` into the empty database; {table: rows written}."""
    url = engine.url.render_as_string(hide_password=False)
    with path.open(encoding="utf-8") as f:
        header, rows = _read(iter(f), path)
        revision = header["revision"]
        if revision not in known():
            raise AppDbError(
                f"{path} is an export at revision {revision}, which this qscope does not know (made by a newer "
                "qscope): upgrade qscope to import it"
            )
        _empty(engine, url)
        migrate_to(engine, revision)  # the export's schema (an empty database ahead of it is taken back)
        counts: dict[str, int] = {}
        with engine.begin() as conn:
            tables = {t.name: t for t in _tables(conn)}
            batch: list[dict] = []
            batch_table: Table | None = None
            for name, row in rows:
                if name not in tables:
                    raise AppDbError(f"{path} has rows of a table {name!r} that revision {revision} does not have")
                table = tables[name]
                if batch_table is not None and (table is not batch_table or len(batch) >= BATCH):
                    conn.execute(insert(batch_table), batch)
                    batch = []
                batch_table = table
                batch.append(_typed(table, row))
                counts[name] = counts.get(name, 0) + 1
            if batch_table is not None and batch:
                conn.execute(insert(batch_table), batch)
            expected = {k: v for k, v in header.get("tables", {}).items() if v}
            if counts != expected:  # raised inside the transaction: nothing is written
                raise AppDbError(f"{path} is incomplete: its header counts {expected} rows, the file holds {counts}")
            _reset_sequences(conn, list(tables.values()))
    if current(engine) != head():
        migrate_to(engine, head())
    return counts
