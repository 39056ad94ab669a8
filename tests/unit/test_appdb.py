"""The app database opened by qscope.appdb, on SQLite and on a real Postgres server (tests/helpers/postgres.py): the
revisions make exactly the models' schema, a database from before migrations is adopted with its rows, one from
a newer qscope is refused and left alone, and many threads opening and writing a new database at once lose
nothing. An in-memory database is one database in every thread; a file database gets its folder."""

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, inspect, select, text

from qscope.appdb import AppDbError, Base, make_engine, open_app_db
from qscope.appdb.migrate import current, first_schema, head
from qscope.discover.store import DiscoverStore
from qscope.explain.notes import ListItem, NoteStore

# the modules above and these register every table model on Base.metadata
from qscope.steer.evaluate.recipes import RecipeStore  # noqa: F401
from qscope.steer.runs import RunStore  # noqa: F401


def test_in_memory_database_is_one_database_across_threads():
    store = NoteStore("sqlite://")
    store.add_note("m", "s", 1, "written here")
    seen: list = []
    t = threading.Thread(target=lambda: seen.extend(n.text for n in store.all_notes()))
    t.start()
    t.join()
    assert seen == ["written here"]


def test_file_database_gets_its_folder(tmp_path):
    url = f"sqlite:///{tmp_path}/a/b/app.db"
    NoteStore(url).add_note("m", "s", 2, "kept")
    assert (tmp_path / "a" / "b" / "app.db").is_file()
    assert [n.text for n in NoteStore(url).all_notes()] == ["kept"]


def test_the_revisions_make_exactly_the_models_schema(app_db_url):
    """Fails when a model changes without a revision that makes the same change (docs/app-db.md)."""
    engine = open_app_db(app_db_url)
    assert current(engine) == head()
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    assert set(Base.metadata.tables) == set(first_schema().tables)


def test_a_database_from_before_migrations_is_adopted_with_its_rows(app_db_url):
    # as qscope made it before migrations: only the tables of the features used (create_all), no alembic_version
    old = first_schema()
    engine = make_engine(app_db_url)
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    with engine.begin() as conn:
        for name in ("steer_runs", "feature_notes"):
            old.tables[name].create(conn)
        conn.execute(
            insert(old.tables["feature_notes"]),
            {"id": "n1", "created_at": when, "model_id": "m", "sae_id": "s", "feature": 3, "kind": "note"}
            | {"text": "from before", "author": "Ada"},
        )
        run = {"id": "r1", "created_at": when, "model_id": "m", "spec": "{}", "result": "{}"}
        conn.execute(insert(old.tables["steer_runs"]), run)
    assert current(engine) is None
    notes = NoteStore(app_db_url)
    assert current(engine) == head()
    found = notes.note("n1")
    assert found is not None and (found.text, found.feature, found.author) == ("from before", 3, "Ada")
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(old.tables["steer_runs"])) == 1
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    DiscoverStore(app_db_url).save("discovery", "d1", "m", "made after", "{}")  # a table that was missing


def _tables_and_version(engine) -> tuple[list[str], str | None, int]:
    with engine.connect() as conn:
        version = conn.scalar(text("SELECT version_num FROM alembic_version"))
        notes = conn.scalar(text("SELECT count(*) FROM feature_notes"))
    return sorted(inspect(engine).get_table_names()), version, notes


def test_a_database_from_a_newer_qscope_is_refused_and_left_alone(app_db_url):
    engine = open_app_db(app_db_url)
    NoteStore(app_db_url).add_note("m", "s", 1, "mine")
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    before = _tables_and_version(engine)
    with pytest.raises(AppDbError, match=r"revision 9999, which this qscope does not know .*upgrade qscope.*nothing"):
        NoteStore(app_db_url)
    assert _tables_and_version(engine) == before == (before[0], "9999", 1)


def test_a_table_unlike_the_first_schemas_is_refused(app_db_url):
    engine = make_engine(app_db_url)
    with engine.begin() as conn:
        Table("feature_notes", MetaData(), Column("id", Integer, primary_key=True), Column("words", String(9))).create(
            conn
        )
    with pytest.raises(AppDbError, match=r"no revision, and its table feature_notes is not the one qscope made"):
        NoteStore(app_db_url)
    assert inspect(engine).get_table_names() == ["feature_notes"]  # nothing made, nothing stamped


def test_many_threads_open_and_write_a_new_database_at_once(app_db_url):
    """Each thread opens its own store on the same empty database at the same moment: one migrates while the
    others wait for it (SQLite: BEGIN IMMEDIATE; Postgres: an advisory lock), then all write side by side."""
    threads, each = 6, 5
    start = threading.Barrier(threads)

    def work(i: int) -> str:
        start.wait()
        store = NoteStore(app_db_url)
        for j in range(each):
            store.add_note("m", "s", i, f"note {i}.{j}")
        lst, secret = store.create_list(f"list {i}", "", [])
        for j in range(each):
            store.add_item(lst.id, ListItem("m", "s", j, f"item {j}"), secret)
        store.close()
        return lst.id

    with ThreadPoolExecutor(threads) as pool:
        list_ids = list(pool.map(work, range(threads)))
    store = NoteStore(app_db_url)
    written = sorted(f"note {i}.{j}" for i in range(threads) for j in range(each))
    assert sorted(n.text for n in store.all_notes()) == written
    for list_id in list_ids:
        found = store.get_list(list_id)
        assert found is not None and [it.note for it in found.items] == [f"item {j}" for j in range(each)]
