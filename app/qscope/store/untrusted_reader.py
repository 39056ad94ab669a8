"""The child process of `qscope.store.untrusted`: reads one uploaded DuckDB or Parquet file, within bounds.

Run as `python -m qscope.store.untrusted_reader` with a request (JSON) on stdin; answers {"tables": ...} or
{"error": message} on stdout. It limits its own address space and CPU time before it imports DuckDB, and only
ever runs the queries below: nothing the file holds is executed (views and macros are refused, not read).
"""

from __future__ import annotations

import json
import resource
import sys

from qscope.store.untrusted import hide_paths

FAMILIES = {
    "text": {"VARCHAR"},
    "integer": {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT"},
    "real": {"FLOAT", "DOUBLE"},
    "boolean": {"BOOLEAN"},
}
KV_ROWS, KV_BYTES = 64, 1_000_000  # parquet key-value metadata: entries, and bytes of each value


class FileRefused(Exception):
    """The file is not what was asked for; the message says why."""


def _limit_resources(bounds: dict) -> None:
    mb = 1 << 20
    resource.setrlimit(resource.RLIMIT_AS, (bounds["address_space_mb"] * mb,) * 2)
    cpu = int(bounds["seconds"]) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))  # it writes no file (DuckDB may not spill either)


def _connect(req: dict):
    import duckdb

    config: dict[str, str | bool | int | float | list[str]] = {
        "threads": 1,
        "memory_limit": f"{int(req['bounds']['memory_mb'])}MB",
        "autoload_known_extensions": False,
        "autoinstall_known_extensions": False,
        "allow_community_extensions": False,
    }
    if req["format"] == "duckdb":
        locked = config | {"enable_external_access": False, "lock_configuration": True}
        return duckdb.connect(req["path"], read_only=True, config=locked)
    con = duckdb.connect(":memory:", config=config)
    con.execute("SET allowed_paths = ?", [[req["path"]]])  # the one file read_parquet may open
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _source(con, req: dict, table: str) -> tuple[str, dict[str, tuple[str, bool]]]:
    """(the FROM clause, {column: (type, generated)}) of one table of the file."""
    if req["format"] == "parquet":
        source = "read_parquet('" + req["path"].replace("'", "''") + "')"
        described = con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
        return source, {row[0]: (row[1], False) for row in described}
    found = con.execute(
        "SELECT column_name, data_type, is_generated FROM duckdb_columns() "
        "WHERE database_name = current_database() AND schema_name = 'main' AND table_name = ?",
        [table],
    ).fetchall()
    kinds = con.execute(
        "SELECT 1 FROM duckdb_tables() WHERE database_name = current_database() AND schema_name = 'main' "
        "AND table_name = ? AND NOT temporary",
        [table],
    ).fetchall()
    if not kinds:
        raise FileRefused(f"it has no table {table!r}")
    return f"main.{_quote(table)}", {c: (t, bool(g)) for c, t, g in found}


def _refuse_code(con) -> None:
    """A DuckDB file holding any view or macro is refused: reading it would run the sender's query."""
    views = con.execute(
        "SELECT view_name FROM duckdb_views() WHERE NOT internal AND database_name = current_database()"
    ).fetchall()
    if views:
        raise FileRefused(f"it holds views ({', '.join(v[0] for v in views[:5])}); only tables are read")
    macros = con.execute(
        "SELECT function_name FROM duckdb_functions() WHERE NOT internal AND database_name = current_database()"
    ).fetchall()
    if macros:
        raise FileRefused(f"it holds macros ({', '.join(m[0] for m in macros[:5])}); only tables are read")


def _read_table(con, req: dict, table: str, columns: list[dict], budget: list[int]) -> dict[str, list]:
    source, have = _source(con, req, table)
    what = f"table {table!r}" if table else "the file"
    names = []
    for col in columns:
        name, kind = col["name"], col["kind"]
        if name not in have:
            if col["required"]:
                raise FileRefused(f"{what} has no column {name!r}")
            continue
        typ, generated = have[name]
        if generated:
            raise FileRefused(f"column {name!r} of {what} is computed (generated); only stored values are read")
        if typ not in FAMILIES[kind]:
            raise FileRefused(f"column {name!r} of {what} is {typ}; it should hold {kind} values")
        names.append(name)
    max_rows = int(req["bounds"]["max_rows"])
    n = con.execute(f"SELECT count(*) FROM (SELECT 1 FROM {source} LIMIT {max_rows + 1})").fetchone()[0]
    if n > max_rows:
        raise FileRefused(f"{what} has more than {max_rows:,} rows")
    head = f"(SELECT * FROM {source} LIMIT {max_rows})"
    for col in columns:
        if col["name"] not in names:
            continue
        q = _quote(col["name"])
        if col["kind"] == "text":
            longest, total = con.execute(f"SELECT max(strlen({q})), sum(strlen({q})) FROM {head}").fetchone()
            if (longest or 0) > col["max_bytes"]:
                raise FileRefused(f"column {col['name']!r} of {what} holds a value over {col['max_bytes']:,} bytes")
            budget[0] -= int(total or 0)
            if budget[0] < 0:
                raise FileRefused(f"it holds more than {req['bounds']['max_text_bytes']:,} bytes of text")
        else:
            nulls = con.execute(f"SELECT count(*) - count({q}) FROM {head}").fetchone()[0]
            if nulls:
                raise FileRefused(f"column {col['name']!r} of {what} has {nulls:,} empty (NULL) values")
        if col["kind"] == "real":
            bad = con.execute(f"SELECT count(*) FROM {head} WHERE NOT isfinite({q})").fetchone()[0]
            if bad:
                raise FileRefused(f"column {col['name']!r} of {what} holds {bad:,} non-finite numbers (NaN or inf)")
    cast = {"text": "coalesce({}, '')", "integer": "{}::BIGINT", "real": "{}::DOUBLE", "boolean": "{}"}
    kind_of = {c["name"]: c["kind"] for c in columns}
    select = ", ".join(cast[kind_of[n]].format(_quote(n)) for n in names)
    rows = con.execute(f"SELECT {select} FROM {head}").fetchall() if names else []
    return {n: [r[i] for r in rows] for i, n in enumerate(names)}


def _kv_metadata(con, req: dict) -> dict[str, str]:
    path = req["path"].replace("'", "''")
    rows = con.execute(
        f"SELECT key, value, octet_length(value) FROM parquet_kv_metadata('{path}') LIMIT {KV_ROWS + 1}"
    ).fetchall()
    if len(rows) > KV_ROWS or any((size or 0) > KV_BYTES for *_, size in rows):
        raise FileRefused(f"its key-value metadata is over {KV_ROWS} entries or {KV_BYTES:,} bytes an entry")
    return {bytes(k).decode(errors="replace"): bytes(v).decode(errors="replace") for k, v, _ in rows}


def read(req: dict) -> dict:
    con = _connect(req)
    try:
        if req["format"] == "duckdb":
            _refuse_code(con)
        budget = [int(req["bounds"]["max_text_bytes"])]
        tables = {t: _read_table(con, req, t, cols, budget) for t, cols in req["tables"].items()}
        kv = _kv_metadata(con, req) if req.get("kv_metadata") else {}
    finally:
        con.close()
    return {"tables": tables, "kv": kv}


def main() -> None:
    req = json.loads(sys.stdin.read(1 << 20))
    _limit_resources(req["bounds"])
    import duckdb

    try:
        out = read(req)
    except FileRefused as e:
        out = {"error": f"{req['name']}: {e}"}
    except (duckdb.OutOfMemoryException, MemoryError):
        out = {"error": f"{req['name']}: reading it needs more memory than a file may take"}
    except duckdb.Error as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__  # the rest quotes our SQL
        out = {"error": f"{req['name']} is not a readable {req['format']} file: {first}"}
    if "error" in out:  # the sender's name for the file, never the server's path
        out["error"] = hide_paths(out["error"], req["path"], req["name"])
    sys.stdout.write(json.dumps(out))


if __name__ == "__main__":
    main()
