"""`qscope app-db export FILE` and `import FILE`: the app database 09f5f29 wrote (tests/data) goes from SQLite to
a real Postgres server and back with every row the same, the imported Postgres database keeps taking new rows,
and an import refuses a database that is not empty, a file that is not an export and one from a newer qscope,
writing nothing."""

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qscope.appdb import make_engine
from qscope.appdb.migrate import current, head
from qscope.cli import cli
from qscope.explain.notes import ListItem, NoteStore
from tests.helpers.appdb import OLD


def run(*args: str):
    out = CliRunner().invoke(cli, list(args))
    return out.exit_code, out.output


def rows_in(path: Path) -> tuple[dict, list[str]]:
    """The header and the row lines, sorted (each backend orders text keys by its own collation)."""
    header, *rows = path.read_text(encoding="utf-8").splitlines()
    return json.loads(header), sorted(rows)


@pytest.fixture
def old_url(tmp_path) -> str:
    shutil.copy(OLD, tmp_path / "old.db")
    return f"sqlite:///{tmp_path / 'old.db'}"


def test_sqlite_to_postgres_and_back_keeps_every_row(old_url, postgres_server, tmp_path):
    pg = postgres_server.database()
    assert run("app-db", "upgrade", "--url", old_url)[0] == 0
    code, said = run("app-db", "export", str(tmp_path / "a.jsonl"), "--url", old_url)
    assert code == 0 and "wrote 14 rows of 7 tables" in said, said
    code, said = run("app-db", "import", str(tmp_path / "a.jsonl"), "--url", pg)
    assert code == 0 and "imported 14 rows into 7 tables" in said, said
    assert current(make_engine(pg)) == head()
    assert run("app-db", "export", str(tmp_path / "b.jsonl"), "--url", pg)[0] == 0
    back = f"sqlite:///{tmp_path / 'back.db'}"
    assert run("app-db", "import", str(tmp_path / "b.jsonl"), "--url", back)[0] == 0
    assert run("app-db", "export", str(tmp_path / "c.jsonl"), "--url", back)[0] == 0
    a, b, c = (rows_in(tmp_path / f"{n}.jsonl") for n in "abc")
    assert a == b == c
    assert a[0] == {"format": "qscope-app-db", "revision": head(), "tables": a[0]["tables"]}
    assert sum(a[0]["tables"].values()) == len(a[1]) == 14

    # the imported Postgres database goes on: its serial ids continue after the imported ones
    notes = NoteStore(pg)
    made, secret = notes.create_list("after the move", "", [])  # the imported lists predate owners: nobody adds
    grown = notes.add_item(made.id, ListItem("tiny-demo", "s", 99, "added after the move"), secret)
    assert grown is not None and [i.feature for i in grown.items] == [99]
    notes.close()


def test_import_refuses_and_writes_nothing(old_url, tmp_path):
    assert run("app-db", "upgrade", "--url", old_url)[0] == 0
    assert run("app-db", "export", str(tmp_path / "a.jsonl"), "--url", old_url)[0] == 0
    code, said = run("app-db", "import", str(tmp_path / "a.jsonl"), "--url", old_url)
    assert code == 2 and "is not empty (table" in said and "import into a new database" in said

    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    (tmp_path / "junk.jsonl").write_text('{"hello": 1}\n')
    code, said = run("app-db", "import", str(tmp_path / "junk.jsonl"), "--url", fresh)
    assert code == 2 and "is not a qscope app-db export" in said

    header, *rows = (tmp_path / "a.jsonl").read_text().splitlines()
    newer = json.loads(header) | {"revision": "0999"}
    (tmp_path / "newer.jsonl").write_text("\n".join([json.dumps(newer), *rows]) + "\n")
    code, said = run("app-db", "import", str(tmp_path / "newer.jsonl"), "--url", fresh)
    assert code == 2 and "at revision 0999, which this qscope does not know" in said and "upgrade qscope" in said

    (tmp_path / "cut.jsonl").write_text("\n".join([header, *rows[:-3]]) + "\n")
    code, said = run("app-db", "import", str(tmp_path / "cut.jsonl"), "--url", fresh)
    assert code == 2 and "is incomplete" in said
    assert NoteStore(fresh).all_notes() == []  # the rows before the cut were not kept either


def test_export_of_a_database_never_upgraded_says_to_upgrade(old_url, tmp_path):
    code, said = run("app-db", "export", str(tmp_path / "a.jsonl"), "--url", old_url)
    assert code == 2 and "run `qscope app-db upgrade` first" in said and not (tmp_path / "a.jsonl").exists()


NEXT = '''"""A made-up later revision (tests only): a column on feature_notes."""

import sqlalchemy as sa
from alembic import op

revision = "9002"
down_revision = "0002"


def upgrade() -> None:
    with op.batch_alter_table("feature_notes") as batch:
        batch.add_column(sa.Column("extra", sa.String(20), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("feature_notes") as batch:
        batch.drop_column("extra")
'''


def test_a_later_revision_upgrades_and_an_older_export_imports_across_it(app_db_url, request, tmp_path, monkeypatch):
    """With a revision 0002 added: a database at 0001 is upgraded with its rows, and an export taken at 0001 goes
    into an empty database at 9002 (taken back to 0001 for the rows, then upgraded)."""
    from sqlalchemy import inspect

    from qscope.appdb import migrate
    from qscope.appdb.backup import export_file, import_file
    from qscope.cli.app_db import upgrade_line

    older = f"sqlite:///{tmp_path / 'older.db'}"
    NoteStore(older).add_note("m", "s", 4, "written at 0002")
    export_file(make_engine(older), tmp_path / "at-0002.jsonl")
    NoteStore(app_db_url).add_note("m", "s", 5, "kept across 9002")

    shutil.copytree(migrate.MIGRATIONS, tmp_path / "migrations")
    (tmp_path / "migrations" / "versions" / "9002_extra.py").write_text(NEXT)
    monkeypatch.setattr(migrate, "MIGRATIONS", tmp_path / "migrations")
    migrate.scripts.cache_clear()
    try:
        assert upgrade_line(app_db_url).endswith("upgraded from revision 0002 to revision 9002")
        assert [n.text for n in NoteStore(app_db_url).all_notes()] == ["kept across 9002"]
        assert "extra" in {c["name"] for c in inspect(make_engine(app_db_url)).get_columns("feature_notes")}

        if app_db_url.startswith("sqlite"):
            fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
        else:
            fresh = request.getfixturevalue("postgres_server").database()
        assert migrate.upgrade(make_engine(fresh)).after == "9002"  # an empty database at 9002, as serve leaves it
        assert import_file(make_engine(fresh), tmp_path / "at-0002.jsonl") == {"feature_notes": 1}
        assert migrate.current(make_engine(fresh)) == "9002"
        assert [n.text for n in NoteStore(fresh).all_notes()] == ["written at 0002"]
    finally:
        migrate.scripts.cache_clear()
