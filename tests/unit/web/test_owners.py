"""Owners of what people write (qscope.explain.owners, the notes and lists routes), on the small hostile store with a
real SQLite app database: a note or list is changed only with the owner secret handed out when it was made, a list
is added to only by its owner, rows written before owners existed still show and cannot be changed, writes are
rate-limited, /lists comes a page at a time, and searching lists costs the same few queries however many exist."""

from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event
from sqlalchemy.orm import Session

from qscope.explain.notes import ListItem
from qscope.explain.notes_tables import ListRow, NoteRow
from qscope.web.routes.lists import PAGE_SIZE
from tests.helpers.apps import app_client, app_settings
from tests.helpers.stores import SAE_ID, write_small_store

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
NOTE = {"sae_id": SAE_ID, "feature": 1, "text": "fires on brackets"}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_small_store(tmp_path_factory.mktemp("owners") / "evil.duckdb")


def make_client(store, tmp_path_factory, **overrides) -> TestClient:
    return app_client([store], app_settings(tmp_path_factory.mktemp("app"), **overrides), follow_redirects=False)


@pytest.fixture(scope="module")
def client(store, tmp_path_factory):
    with make_client(store, tmp_path_factory, rate_write_per_min=0) as c:
        yield c


def owner(secret: str) -> dict:
    return {"X-Owner-Secret": secret}


def test_a_note_is_edited_and_deleted_with_its_secret_only(client):
    made = client.post("/api/notes", json=NOTE).json()
    secret, url = made["owner_secret"], f"/api/notes/{made['id']}"
    assert len(secret) >= 32 and secret not in client.get(made["url"] + ".json").text  # shown once, never again
    for headers, says in [({}, "needs its owner secret"), (owner("x" * 32), "not the owner secret")]:
        r = client.patch(url, json={"text": "defaced"}, headers=headers)
        assert r.status_code == 403 and says in r.json()["error"], r.text
        assert client.delete(url, headers=headers).status_code == 403
    assert client.patch(url, json={"text": "x"}, headers=owner("y" * 101)).status_code == 422  # bounded header
    assert client.get(made["url"] + ".json").json()["note"]["text"] == "fires on brackets"
    r = client.patch(url, json={"text": " fires on ( and ) ", "kind": "explanation"}, headers=owner(secret))
    assert r.status_code == 200, r.text
    note = client.get(made["url"] + ".json").json()["note"]
    assert (note["text"], note["kind"], note["author"]) == ("fires on ( and )", "explanation", "")
    assert note["edited_at"] and note["owned"] is True
    assert client.patch(url, json={"text": "  "}, headers=owner(secret)).status_code == 422
    assert client.delete(url, headers=owner(secret)).status_code == 204
    assert client.get(made["url"]).status_code == 404
    assert client.delete(url, headers=owner(secret)).status_code == 404


def test_a_list_is_renamed_added_to_and_deleted_by_its_owner_only(client):
    mine = client.post("/api/lists", json={"name": "mine"}).json()
    theirs = client.post("/api/lists", json={"name": "theirs", "features": [{"sae_id": SAE_ID, "feature": 0}]}).json()
    item = {"sae_id": SAE_ID, "feature": 1, "note": "pushed in"}
    # another list's secret, none, a wrong one: refused, and nothing added
    for headers in (owner(mine["owner_secret"]), {}, owner("nope")):
        assert client.post(f"/api/lists/{theirs['id']}/items", json=item, headers=headers).status_code == 403
    form = {"list_id": theirs["id"], "sae_id": SAE_ID, "feature": "1", "owner_secret": mine["owner_secret"]}
    r = client.post("/-/lists/items", data=form, headers=FORM)
    assert r.status_code == 403 and "not the owner secret" in r.text
    assert len(client.get(theirs["url"] + ".json").json()["rows"]) == 1
    r = client.post(f"/api/lists/{theirs['id']}/items", json=item, headers=owner(theirs["owner_secret"]))
    assert r.status_code == 200 and [f["feature"] for f in r.json()["features"]] == [0, 1]
    assert client.patch(f"/api/lists/{theirs['id']}", json={"name": "taken"}).status_code == 403
    r = client.patch(f"/api/lists/{theirs['id']}", json={"name": " renamed "}, headers=owner(theirs["owner_secret"]))
    assert r.status_code == 200 and r.json()["name"] == "renamed"
    assert client.delete(f"/api/lists/{theirs['id']}", headers=owner(mine["owner_secret"])).status_code == 403
    assert client.delete(f"/api/lists/{theirs['id']}", headers=owner(theirs["owner_secret"])).status_code == 204
    assert client.get(theirs["url"]).status_code == 404
    assert client.get(f"/evil/{SAE_ID}/1").status_code == 200  # its items went with it
    assert client.get(mine["url"]).status_code == 200


def test_a_form_made_list_hands_its_secret_in_the_fragment(client):
    r = client.post("/-/lists", data={"name": "by form"}, headers=FORM)
    page, fragment = r.headers["location"].split("#")
    kind, list_id, key = fragment.removeprefix("keep=").split(".")
    assert (kind, page) == ("list", f"/lists/{list_id}")
    form = {"list_id": list_id, "sae_id": SAE_ID, "feature": "0", "owner_secret": key}
    assert client.post("/-/lists/items", data=form, headers=FORM).status_code == 303
    html = client.get(page).text  # the owner's actions are on the page, hidden until the browser shows its secret
    assert 'hidden data-owner-only data-owner-delete data-kind="list"' in html and key not in html


def test_rows_written_before_owners_show_and_cannot_be_changed(client):
    notes = client.app.state.explained.notes
    with Session(notes.engine) as session, session.begin():
        now = datetime.now(UTC)
        session.add(NoteRow(id="oldnote", created_at=now, model_id="evil", sae_id=SAE_ID, feature=0, kind="note",
                            text="an old note", author=""))  # fmt: skip
        session.add(ListRow(id="oldlist", created_at=now, name="an old list", description=""))
    assert (
        "an old note" in client.get("/notes/oldnote").text
        and "before owner secrets" in client.get("/notes/oldnote").text
    )
    assert "an old list" in client.get("/lists/oldlist").text
    for method, url in [
        ("PATCH", "/api/notes/oldnote"),
        ("DELETE", "/api/notes/oldnote"),
        ("PATCH", "/api/lists/oldlist"),
    ]:
        r = client.request(
            method, url, json={"text": "x", "name": "x"} if method == "PATCH" else None, headers=owner("a" * 32)
        )
        assert r.status_code == 403 and "before owner secrets" in r.json()["error"]
    r = client.post("/api/lists/oldlist/items", json={"sae_id": SAE_ID, "feature": 0}, headers=owner("a" * 32))
    assert r.status_code == 403


def test_writes_are_rate_limited_per_client(store, tmp_path_factory):
    with make_client(store, tmp_path_factory, rate_write_per_min=6, rate_write_burst=3) as c:
        codes = [c.post("/api/notes", json=NOTE).status_code for _ in range(3)]
        r = c.post("/-/lists", data={"name": "one too many"}, headers=FORM)
        assert codes == [201, 201, 201] and r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert "writes of notes and lists" in r.text and c.get("/lists.json").json()["total"] == 0
        assert c.delete("/api/notes/whatever").status_code == 429  # edits and deletes take from the same bucket
        assert c.get(f"/evil/{SAE_ID}/1").status_code == 200  # reading is not limited
        other = TestClient(c.app, client=("203.0.113.9", 5000))  # another address has its own bucket
        assert other.post("/api/notes", json=NOTE).status_code == 201


def test_lists_come_a_page_at_a_time(store, tmp_path_factory):
    with make_client(store, tmp_path_factory) as c:
        notes = c.app.state.explained.notes
        for i in range(2 * PAGE_SIZE + 7):
            notes.create_list(f"list {i:03d}", "", [])
        first = c.get("/lists.json").json()
        assert len(first["lists"]) == PAGE_SIZE and first["lists"][0]["name"] == f"list {2 * PAGE_SIZE + 6:03d}"
        assert (first["page"], first["pages"], first["total"]) == (1, 3, 2 * PAGE_SIZE + 7)
        assert first["urls"]["next"] == "/lists?page=2" and "prev" not in first["urls"]
        last = c.get("/lists.json", params={"page": 3}).json()
        assert [x["name"] for x in last["lists"]] == [f"list {i:03d}" for i in range(6, -1, -1)]
        assert last["urls"]["prev"] == "/lists?page=2" and "next" not in last["urls"]
        assert c.get("/lists.json", params={"page": 9}).json()["lists"] == []
        assert c.get("/lists", params={"page": 0}).status_code == 422
        html = c.get("/lists", params={"page": 2}).text
        assert 'rel="next" href="/lists?page=3"' in html and 'rel="prev" href="/lists"' in html
        assert html.count('href="/lists/') == PAGE_SIZE


def test_searching_lists_costs_a_few_queries_however_many_there_are(store, tmp_path_factory):
    with make_client(store, tmp_path_factory) as c:
        notes = c.app.state.explained.notes
        for i in range(60):
            notes.create_list(f"list {i}", "plain", [ListItem("evil", SAE_ID, 0, "nothing here")])
        notes.create_list("odd one", "", [ListItem("evil", SAE_ID, 1, "zebra stripes")])
        statements = []
        event.listen(notes.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
        found_notes, found_lists = notes.search("zebra")
        assert [x.name for x in found_lists] == ["odd one"] and found_notes == []
        assert len(statements) <= 3, statements
        assert [x.name for x in notes.search("plain")[1]][:2] == ["list 59", "list 58"]
        assert c.get("/search.json", params={"q": "zebra", "kind": "text"}).json()["user_lists"][0]["name"] == "odd one"
