"""A real app database from before migrations (tests/data/app-db-09f5f29.sqlite, written by qscope at commit
09f5f29 through its own API: tests/data/make_app_db.py) is upgraded as `qscope serve` upgrades it at start, keeps
every row as it was, and every run, note, list, recipe, discovery and detector shows on its page and its .json
twin, and again once moved to a real Postgres server (tests/helpers/postgres.py). `qscope app-db current|upgrade`
say where a database stands; one from a newer qscope stops `serve`."""

import html
import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from qscope.appdb import make_engine
from qscope.appdb.backup import export_file, import_file
from qscope.appdb.migrate import head
from qscope.cli import cli
from qscope.cli.app_db import upgrade_line
from qscope.config import Settings, get_settings
from qscope.web import create_app
from tests.helpers.appdb import MADE, OLD


def columns_of(path: Path) -> dict[str, list[str]]:
    """Every table's columns (alembic_version aside)."""
    con = sqlite3.connect(path)
    tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    out = {t: [c[1] for c in con.execute(f"PRAGMA table_info({t})")] for t in tables if t != "alembic_version"}
    con.close()
    return out


def rows_of(path: Path, columns: dict[str, list[str]] | None = None) -> dict[str, list]:
    """Every row of every table (alembic_version aside), in a fixed order; only the columns given, when given."""
    columns = columns or columns_of(path)
    con = sqlite3.connect(path)
    out = {t: con.execute(f"SELECT {', '.join(cs)} FROM {t} ORDER BY 1").fetchall() for t, cs in columns.items()}
    con.close()
    return out


def holds(new, old) -> bool:
    """Whether `new` holds everything `old` does, as it was (a dict may have gained keys since)."""
    if isinstance(old, dict):
        return isinstance(new, dict) and all(k in new and holds(new[k], v) for k, v in old.items())
    if isinstance(old, list):
        return (
            isinstance(new, list) and len(new) == len(old) and all(holds(a, b) for a, b in zip(new, old, strict=True))
        )
    return new == old


@pytest.fixture(scope="module")
def upgraded(tmp_path_factory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("old-app-db") / "app.db"
    shutil.copy(OLD, path)
    return path, upgrade_line(f"sqlite:///{path}")  # what `qscope serve` does and prints at start


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def client(request, tiny_db, upgraded, tmp_path_factory):
    """The app on the upgraded database; then on a Postgres database it was moved to (`qscope app-db export`,
    `import`)."""
    tmp = tmp_path_factory.mktemp("served")
    url = f"sqlite:///{upgraded[0]}"
    if request.param == "postgres":
        export_file(make_engine(url), tmp / "moved.jsonl")
        url = request.getfixturevalue("postgres_server").database()
        import_file(make_engine(url), tmp / "moved.jsonl")
    settings = Settings(device="cpu", cache_dir=tmp / "cache", app_db_url=url)
    with TestClient(create_app([tiny_db], settings, warm_search=False)) as c:
        yield c


def test_the_old_database_is_upgraded_with_every_row_kept(upgraded):
    path, line = upgraded
    assert line.endswith(f"upgraded from tables from before migrations to revision {head()}")
    assert rows_of(path, columns_of(OLD)) == rows_of(OLD)  # later revisions add columns; the old ones are kept
    added = {t: [c for c in cs if c not in columns_of(OLD)[t]] for t, cs in columns_of(path).items()}
    for table, cs in added.items():  # and what they add is empty on the old rows (notes and lists: no owner)
        for c in cs:
            assert {r[0] for r in rows_of(path, {table: [c]})[table]} <= {None}, (table, c)
    counts = {t: len(rows) for t, rows in rows_of(OLD).items()}
    assert counts == {
        "discover_records": 3,
        "feature_list_items": 3,
        "feature_lists": 2,
        "feature_notes": 2,
        "steer_eval_jobs": 1,
        "steer_recipes": 1,
        "steer_runs": 2,
    }
    assert upgrade_line(f"sqlite:///{path}").endswith(f"at revision {head()} (the newest)")


def test_every_run_note_and_list_shows_on_its_page_and_twin(client):
    for run in MADE["runs"]:
        page, data = client.get(run["url"]), client.get(run["url"] + ".json").json()
        assert page.status_code == 200 and html.escape(run["prompt"], quote=False) in page.text
        assert data["spec"]["prompt"] == run["prompt"] and data["result"]["steered"]["text"] == run["steered"]
    for note in MADE["notes"]:
        page, data = client.get(note["url"]), client.get(note["url"] + ".json").json()
        assert page.status_code == 200 and html.escape(note["text"], quote=False) in page.text
        assert (data["note"]["text"], data["note"]["feature"]) == (note["text"], note["feature"])
    listed = {x["name"] for x in client.get("/lists.json").json()["lists"]}
    assert listed == {lst["name"] for lst in MADE["lists"]}
    for lst in MADE["lists"]:
        page, data = client.get(lst["url"]), client.get(lst["url"] + ".json").json()
        assert page.status_code == 200 and html.escape(lst["name"], quote=False) in page.text
        assert [r["item"]["feature"] for r in data["rows"]] == lst["features"]
        assert [r["item"]["note"] for r in data["rows"]] == [f"note on {f}" for f in lst["features"]]


def stored(sql: str) -> list[tuple]:
    con = sqlite3.connect(OLD)
    rows = con.execute(sql).fetchall()
    con.close()
    return rows


def test_every_recipe_discovery_and_detector_shows_on_its_page_and_twin(client):
    """Each is stored whole as JSON: its twin gives that JSON back, its page shows its name."""
    for recipe_id, title, result in stored("SELECT id, title, result FROM steer_recipes"):
        page, data = client.get(f"/recipes/{recipe_id}"), client.get(f"/recipes/{recipe_id}.json").json()
        assert page.status_code == 200 and html.escape(title, quote=False) in page.text
        assert holds(data, json.loads(result))  # fields added since may be there too; every stored one is kept
    assert [r["id"] for r in client.get("/recipes.json").json()["recipes"]] == [MADE["recipes"][0]["url"][9:]]
    records = stored("SELECT id, kind, name, body FROM discover_records ORDER BY id")
    assert sorted(k for _, k, _, _ in records) == ["detector", "detector", "discovery"]
    for record_id, kind, name, body in records:
        url = f"/discover/{record_id}" if kind == "discovery" else f"/detectors/{record_id}"
        page, data = client.get(url), client.get(url + ".json").json()
        assert page.status_code == 200 and html.escape(name, quote=False) in page.text
        assert holds({k: v for k, v in data.items() if k != "url"}, json.loads(body))  # (and fields added since)
    detector_ids = {d["id"] for d in client.get("/detectors.json").json()["detectors"]}
    assert detector_ids == {d["id"] for d in MADE["detectors"]}


@pytest.fixture
def old_copy(tmp_path, monkeypatch) -> str:
    shutil.copy(OLD, tmp_path / "app.db")
    url = f"sqlite:///{tmp_path / 'app.db'}"
    monkeypatch.setenv("QSCOPE_APP_DB_URL", url)
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


def test_app_db_current_and_upgrade_say_where_it_stands(old_copy):
    runner = CliRunner()
    before = runner.invoke(cli, ["app-db", "current"])
    assert before.exit_code == 0
    assert "at tables from before migrations; `qscope app-db upgrade` brings it to" in before.output
    done = runner.invoke(cli, ["app-db", "upgrade"])
    assert done.exit_code == 0 and f"upgraded from tables from before migrations to revision {head()}" in done.output
    after = runner.invoke(cli, ["app-db", "current", "--url", old_copy])
    assert after.exit_code == 0 and f"at revision {head()} (the newest this qscope knows)" in after.output


def test_serve_refuses_a_database_from_a_newer_qscope(old_copy, tiny_db, tmp_path):
    CliRunner().invoke(cli, ["app-db", "upgrade"])
    con = sqlite3.connect(tmp_path / "app.db")
    con.execute("UPDATE alembic_version SET version_num = '0999'")
    con.commit()
    con.close()
    before = (tmp_path / "app.db").read_bytes()
    out = CliRunner().invoke(cli, ["serve", "--db", str(tiny_db)])
    assert out.exit_code == 2
    assert "is at revision 0999, which this qscope does not know" in out.output and "upgrade qscope" in out.output
    assert (tmp_path / "app.db").read_bytes() == before
    current = CliRunner().invoke(cli, ["app-db", "current"])
    assert current.exit_code == 1 and "newer than this qscope" in current.output


def test_a_database_out_of_reach_is_one_line(tiny_db, monkeypatch):
    from tests.helpers.server import free_port

    url = f"postgresql+psycopg://qscope:secret@127.0.0.1:{free_port()}/nowhere"  # nothing listens there
    current = CliRunner().invoke(cli, ["app-db", "current", "--url", url])
    assert current.exit_code == 2 and current.output.count("\n") == 1
    assert "error: cannot use the app database postgresql+psycopg://qscope:***@127.0.0.1" in current.output
    monkeypatch.setenv("QSCOPE_APP_DB_URL", url)
    get_settings.cache_clear()
    try:
        out = CliRunner().invoke(cli, ["serve", "--db", str(tiny_db)])
    finally:
        get_settings.cache_clear()
    assert out.exit_code == 2 and "cannot use the app database" in out.output and "secret" not in out.output
