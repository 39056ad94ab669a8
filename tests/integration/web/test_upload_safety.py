"""Footprint uploads are data, never code (issue 22, items 1, 2, 12): hostile DuckDB and Parquet files built here
with real DuckDB and sent through the real app. A view over read_text or glob, a macro, a range(6,000,000) view,
a computed column, too many rows, non-finite numbers: each is a 422 naming the file, nothing of the server's
files reaches the answer or the app database, and no message shows a server path. The reader's own bounds (time,
address space) are checked on qscope.store.untrusted directly."""

import base64
import sqlite3
import tempfile

import duckdb
import numpy as np
import pytest
from fastapi.testclient import TestClient

from qscope.config import Settings
from qscope.discover import footprint_files
from qscope.discover.footprints import Stats
from qscope.store import untrusted
from qscope.web import create_app

MAX_ROWS = 1000
PLANTED = "TOP-PLANTED-7f3c9a"
META = """CREATE TABLE meta AS SELECT 'qscope' AS key, '{"model_id": "m", "name_a": "A"}' AS value"""
FOOTPRINT = (
    "CREATE TABLE footprint AS SELECT 'SAE-x' AS sae_id, range::INTEGER AS feature, 'l' AS label, "
    "0.5::DOUBLE AS fire_a, 0.001::DOUBLE AS mass_a FROM range({n})"
)


@pytest.fixture(scope="module")
def app_db(tmp_path_factory):
    return tmp_path_factory.mktemp("appdb") / "app.db"


@pytest.fixture(scope="module")
def client(tiny_db, app_db):
    settings = Settings(
        app_db_url=f"sqlite:///{app_db}",
        device="cpu",
        discover_max_file_bytes=3_000_000,
        discover_max_file_rows=MAX_ROWS,
        discover_max_body_bytes=5_000_000,
        rate_inspect_per_min=0,  # every upload here is a footprint read; the per-client rate is tested elsewhere
    )
    with TestClient(create_app([tiny_db], settings, warm_search=False)) as c:
        yield c


def duckdb_file(path, *statements: str):
    con = duckdb.connect(str(path))
    try:
        for sql in statements:
            con.execute(sql)
    finally:
        con.close()
    return path


def upload(client, path, name: str | None = None):
    data = base64.b64encode(path.read_bytes()).decode()
    return client.post("/api/footprints/upload", json={"name": name or path.name, "data_b64": data})


def saved_text(app_db) -> str:
    """Everything the app database holds, as text (it is not made until something is saved)."""
    if not app_db.exists():
        return ""
    con = sqlite3.connect(app_db)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return "\n".join(str(row) for t in tables for row in con.execute(f'SELECT * FROM "{t}"'))
    finally:
        con.close()


def assert_refused(r, *words: str, hidden: tuple[str, ...] = ()):
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    for word in words:
        assert word in error, error
    for text in (*hidden, tempfile.gettempdir() + "/", "upload.duckdb", "upload.parquet"):
        assert text not in r.text, r.text


@pytest.fixture
def secret_file(tmp_path):
    planted_file = tmp_path / "secret.txt"
    planted_file.write_text(PLANTED)
    return planted_file


def test_a_view_over_a_server_file_is_refused_and_nothing_of_it_is_kept(client, app_db, tmp_path, secret_file):
    path = duckdb_file(
        tmp_path / "fp.duckdb",
        f"CREATE VIEW meta AS SELECT 'qscope' AS key, json_object('model_id', "
        f"(SELECT content FROM read_text('{secret_file}')), 'name_a', 'A') AS value",
        FOOTPRINT.format(n=4),
    )
    assert_refused(upload(client, path), "fp.duckdb", "views", hidden=(PLANTED, str(secret_file)))
    assert PLANTED not in saved_text(app_db) and PLANTED not in client.get("/footprints.json").text


def test_a_glob_view_lists_no_folder(client, app_db, tmp_path):
    folder = tmp_path / "private"
    folder.mkdir()
    (folder / f"{PLANTED}.key").write_text("x")
    path = duckdb_file(
        tmp_path / "fp.duckdb",
        META,
        "CREATE VIEW footprint AS SELECT file AS sae_id, 1 AS feature, file AS label, 0.5::DOUBLE AS fire_a, "
        f"0.5::DOUBLE AS mass_a FROM glob('{folder}/*')",
    )
    assert_refused(upload(client, path), "views", hidden=(PLANTED, str(folder)))
    assert PLANTED not in saved_text(app_db)


def test_a_view_of_six_million_rows_is_refused_at_once(client, tmp_path):
    path = duckdb_file(
        tmp_path / "fp.duckdb",
        META,
        "CREATE VIEW footprint AS SELECT 'SAE-x' AS sae_id, range::INTEGER AS feature, '' AS label, "
        "0.1::DOUBLE AS fire_a, 0.1::DOUBLE AS mass_a FROM range(6000000)",
    )
    assert path.stat().st_size < 3_000_000
    assert_refused(upload(client, path), "views")


def test_macros_and_computed_columns_are_refused(client, tmp_path, secret_file):
    macro = duckdb_file(
        tmp_path / "macro.duckdb",
        META,
        FOOTPRINT.format(n=4),
        f"CREATE MACRO leak() AS TABLE SELECT * FROM read_text('{secret_file}')",
    )
    assert_refused(upload(client, macro), "macro.duckdb", "macros", hidden=(PLANTED,))
    computed = duckdb_file(
        tmp_path / "computed.duckdb",
        META,
        "CREATE TABLE footprint (sae_id VARCHAR, feature INTEGER, label VARCHAR "
        "GENERATED ALWAYS AS (repeat('x', 100000000)), fire_a DOUBLE, mass_a DOUBLE)",
        "INSERT INTO footprint (sae_id, feature, fire_a, mass_a) VALUES ('SAE-x', 1, 0.5, 0.5)",
    )
    assert_refused(upload(client, computed), "label", "generated")


def test_a_table_with_too_many_rows_is_refused(client, app_db, tmp_path):
    before = saved_text(app_db)
    path = duckdb_file(tmp_path / "fp.duckdb", META, FOOTPRINT.format(n=MAX_ROWS + 1))
    assert_refused(upload(client, path), f"more than {MAX_ROWS:,} rows")
    parquet = tmp_path / "fp.parquet"
    rows = FOOTPRINT.format(n=MAX_ROWS + 1).removeprefix("CREATE TABLE footprint AS ")
    con = duckdb.connect()
    con.execute(f"COPY ({rows}) TO '{parquet}' (FORMAT parquet, KV_METADATA {{qscope: '{{\"model_id\": \"m\"}}'}})")
    con.close()
    assert_refused(upload(client, parquet), "fp.parquet", f"more than {MAX_ROWS:,} rows")
    assert saved_text(app_db) == before  # nothing saved


def test_wrong_types_and_non_finite_numbers_are_refused(client, tmp_path):
    nan = duckdb_file(tmp_path / "nan.duckdb", META, FOOTPRINT.format(n=4).replace("0.5::DOUBLE", "'nan'::DOUBLE"))
    assert_refused(upload(client, nan), "fire_a", "non-finite")
    typed = duckdb_file(tmp_path / "typed.duckdb", META, FOOTPRINT.format(n=4).replace("0.5::DOUBLE", "'0.5'"))
    assert_refused(upload(client, typed), "fire_a", "VARCHAR")
    deep = duckdb_file(
        tmp_path / "deep.duckdb",
        "CREATE TABLE meta AS SELECT 'qscope' AS key, repeat('[', 100000) AS value",
        FOOTPRINT.format(n=4),
    )
    assert_refused(upload(client, deep), "metadata")


def test_damaged_files_name_no_server_path(client, tmp_path):
    for name in ("fp.duckdb", "fp.parquet"):
        junk = tmp_path / name
        junk.write_bytes(b"junk" * 1000)
        assert_refused(upload(client, junk), name)
    long_name = upload(client, junk, "x" * 300 + ".parquet")
    assert long_name.status_code == 422 and "name" in long_name.json()["error"]


def test_honest_duckdb_and_parquet_uploads_are_drawn(client, tmp_path):
    keys = [("SAE-x", f) for f in range(4)]
    a = Stats("code", keys, np.array([0.5, 0.3, 0.0, 0.0]), np.array([0.6, 0.4, 0.0, 0.0]), 10, 100)
    b = Stats("prose", keys, np.array([0.5, 0.0, 0.4, 0.0]), np.array([0.5, 0.0, 0.5, 0.0]), 10, 100)
    for suffix in (".duckdb", ".parquet"):
        path = footprint_files.write(
            tmp_path / f"fp{suffix}", a, b, "examples", 0.2, {keys[1]: "one"}, {"model_id": "m"}
        )
        r = upload(client, path)
        assert r.status_code == 200, r.text
        c = r.json()["comparison"]
        assert c["overlap"] == pytest.approx(1 / 3) and c["only_a"][0]["label"] == "one"
    assert f"{MAX_ROWS:,} rows" in client.get("/footprints").text  # the page states the bound


def test_the_reader_is_stopped_past_its_time_and_memory(tmp_path):
    path = duckdb_file(tmp_path / "fp.duckdb", META, FOOTPRINT.format(n=50_000))
    tables = {"footprint": footprint_files.FOOTPRINT_COLUMNS}
    with pytest.raises(untrusted.UntrustedFileError, match="took longer than 0.05 s") as slow:
        untrusted.read_duckdb(path, "fp.duckdb", tables, untrusted.Bounds(seconds=0.05))
    too_big = "fp.duckdb (could not be read|: reading it needs more memory)"
    with pytest.raises(untrusted.UntrustedFileError, match=too_big) as big:
        untrusted.read_duckdb(path, "fp.duckdb", tables, untrusted.Bounds(address_space_mb=64))
    for e in (slow, big):
        assert str(tmp_path) not in str(e.value)
    assert len(untrusted.read_duckdb(path, "fp.duckdb", tables)["footprint"]["feature"]) == 50_000
