"""People's own words on the tiny default (TestClient, a real SQLite app database): notes and explanations on a
feature, lists of features; created by form and by JSON, shown (escaped) beside the automatic explanation,
searchable, and reopened by their permalinks and .json twins."""

import re
import shutil

import pytest
from fastapi.testclient import TestClient

from qscope.config import Settings
from qscope.explain.scoring import Score
from qscope.explain.store import ExplanationWriter, explanations_path
from qscope.web import create_app

SAE = "SAE-Res-mini-qwen-W512-L0_16__layer1"
HOSTILE = '<script>alert("x")</script> & <b>bold</b>'
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture(scope="module")
def client(tiny_db, tmp_path_factory):
    """The app on a copy of the tiny store (an explanations file goes beside it) with its own app database."""
    tmp = tmp_path_factory.mktemp("notes")
    shutil.copy(tiny_db, tmp / "tiny.duckdb")
    app_db = f"sqlite:///{tmp}/app.db"  # writes unlimited here: the rate of writes is tested in test_owners_web.py
    settings = Settings(device="cpu", cache_dir=tmp / "cache", app_db_url=app_db, rate_write_per_min=0)
    with TestClient(create_app([tmp / "tiny.duckdb"], settings, warm_search=False), follow_redirects=False) as c:
        yield c


@pytest.fixture(scope="module")
def model_id(client):
    return next(iter(client.app.state.catalog.models))


def test_no_app_database_until_someone_writes(client, model_id, tmp_path_factory):
    assert client.get(f"/{model_id}/{SAE}/3").status_code == 200
    assert client.get("/lists.json").json()["lists"] == []
    assert client.app.state.explained._notes.opened is None  # pages read nothing, created nothing


def test_a_note_by_form_shows_escaped_on_the_feature_page_and_its_permalink(client, model_id):
    form = {
        "model_id": model_id,
        "sae_id": SAE,
        "feature": "5",
        "kind": "explanation",
        "text": HOSTILE,
        "author": "Ada <i>",
    }
    r = client.post("/-/notes", data=form, headers=FORM)
    # the owner secret travels in the fragment (never sent to a server); static/owners.js keeps it
    assert r.status_code == 303 and re.fullmatch(
        rf"/{model_id}/{SAE}/5#words&keep=note\.[\w-]+\.[\w-]+", r.headers["location"]
    )
    page = client.get(f"/{model_id}/{SAE}/5").text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in page
    assert "<script>alert" not in page and "Ada &lt;i&gt;" in page
    note_url = re.search(r'href="(/notes/[^"]+)">permalink', page).group(1)
    data = client.get(note_url + ".json").json()
    assert data["note"]["text"] == HOSTILE and data["note"]["kind"] == "explanation" and data["note"]["feature"] == 5
    assert data["urls"]["feature"] == f"/{model_id}/{SAE}/5"
    html = client.get(note_url).text
    assert "&lt;script&gt;" in html and "<script>alert" not in html
    sae_page = client.get(f"/{model_id}/{SAE}.json", params={"per_page": 10}).json()
    want = {"text": HOSTILE, "by": "person", "detection": None, "fuzzing": None, "trust": "unscored"}
    assert sae_page["explanations"]["5"] == want  # a person's note is unscored: no trust beyond its words


def test_notes_by_json_and_bad_input(client, model_id):
    r = client.post("/api/notes", json={"sae_id": SAE, "feature": 7, "text": "fires on closing brackets"})
    assert r.status_code == 201 and r.json()["feature_url"] == f"/{model_id}/{SAE}/7"
    assert client.get(r.json()["url"] + ".json").json()["note"]["kind"] == "note"
    for body, status, says in [
        ({"sae_id": SAE, "feature": 7, "text": "   "}, 422, "text is empty"),
        ({"sae_id": SAE, "feature": 7, "text": "x" * 2001}, 422, "text"),
        ({"sae_id": "nope", "feature": 7, "text": "x"}, 404, "nope"),
        ({"sae_id": SAE, "feature": 10**6, "text": "x"}, 404, "out of range"),
    ]:
        r = client.post("/api/notes", json=body)
        assert r.status_code == status and says in r.json()["error"], r.text
    r = client.post("/-/notes", data={"sae_id": SAE, "feature": "x", "text": "t"}, headers=FORM)
    assert r.status_code == 422 and "feature" in r.text and "<!doctype html>" in r.text.lower()
    assert client.get("/notes/nope").status_code == 404 and client.get("/notes/nope.json").status_code == 404


def test_lists_create_show_add_and_reopen(client, model_id):
    body = {
        "name": "Brackets <i>",
        "description": "features on ( and ) & friends",
        "features": [{"sae_id": SAE, "feature": 7, "note": "closing"}, {"sae_id": SAE, "feature": 9}],
    }
    r = client.post("/api/lists", json=body)
    assert r.status_code == 201, r.text
    saved = r.json()
    assert [f["feature"] for f in saved["features"]] == [7, 9] and saved["features"][0]["model_id"] == model_id
    again = client.get(saved["url"] + ".json").json()
    assert again["list"]["name"] == "Brackets <i>" and [r["item"]["note"] for r in again["rows"]] == ["closing", ""]
    html = client.get(saved["url"]).text
    assert "Brackets &lt;i&gt;" in html and "&amp; friends" in html and f"/{model_id}/{SAE}/7" in html
    form = {"list_id": saved["id"], "sae_id": SAE, "feature": "11", "note": "<u>opening</u>"}
    form["owner_secret"] = saved["owner_secret"]
    r = client.post("/-/lists/items", data=form, headers=FORM)
    assert r.status_code == 303 and r.headers["location"] == saved["url"]
    rows = client.get(saved["url"] + ".json").json()["rows"]
    assert [x["item"]["feature"] for x in rows] == [7, 9, 11] and "&lt;u&gt;opening" in client.get(saved["url"]).text
    page = client.get(f"/{model_id}/{SAE}/7").text
    assert f'href="{saved["url"]}">Brackets &lt;i&gt;</a>' in page  # "in lists" on the feature page
    r = client.post(
        "/-/lists",
        data={"name": "From a page", "model_id": model_id, "sae_id": SAE, "feature": "7", "note": "seen"},
        headers=FORM,
    )
    assert (
        r.status_code == 303
        and client.get(r.headers["location"].split("#")[0] + ".json").json()["rows"][0]["item"]["note"] == "seen"
    )
    names = [x["name"] for x in client.get("/lists.json").json()["lists"]]
    assert names == ["From a page", "Brackets <i>"]  # newest first
    assert client.post("/api/lists", json={"name": " "}).status_code == 422
    assert client.post("/api/lists/nope/items", json={"sae_id": SAE, "feature": 1}).status_code == 404
    assert client.get("/lists/nope").status_code == 404


def test_people_words_are_searched_and_ranked_first(client, model_id):
    client.post(
        "/api/notes",
        json={
            "sae_id": SAE,
            "feature": 12,
            "kind": "explanation",
            "text": "quotation marks around strings in Python code",
        },
    )
    data = client.get("/search.json", params={"q": "quotation marks"}).json()
    first = data["hits"][0]
    assert (first["row"]["feature"], first["found"][0]["kind"]) == (12, "explanation")
    assert first["explanation"] == "quotation marks around strings in Python code"
    assert [n["feature"] for n in data["user_notes"]] == [12]
    lists = client.get("/search.json", params={"q": "friends", "kind": "text"}).json()["user_lists"]
    assert [x["name"] for x in lists] == ["Brackets <i>"]  # a list's description is searched too
    html = client.get("/search", params={"q": "quotation"}).text
    assert 'class="badge explanation"' in html and "quotation marks around strings" in html


def test_automatic_explanations_with_markup_are_shown_as_text(client, model_id):
    """An explainer's answer is text whatever it holds: escaped on the feature page, the SAE list and search."""
    store = client.app.state.catalog.stores[0]
    w = ExplanationWriter(explanations_path(store.path))
    w.put_explanation(SAE, 20, '<img src=x onerror="alert(1)"> tags in HTML', "mini <explainer>")
    w.put_scores(SAE, 20, Score(0.85, 20, 0), Score(0.6, 10, 3), "mini")
    w.close()
    page = client.get(f"/{model_id}/{SAE}/20").text
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt; tags in HTML" in page and "<img src=x" not in page
    assert "mini &lt;explainer&gt;" in page and "detection 0.85" in page and "fuzzing 0.60" in page
    assert "3 unreadable" in page
    table = client.get(f"/{model_id}/{SAE}", params={"sort": "index", "page": 1, "per_page": 30}).text
    assert "&lt;img src=x" in table and "<img src=x" not in table and "det 0.85" in table
    data = client.get("/search.json", params={"q": "tags in HTML"}).json()
    assert data["hits"][0]["row"]["feature"] == 20 and data["hits"][0]["found"][0]["kind"] == "explanation"
    html = client.get("/search", params={"q": "tags in HTML"}).text
    assert "&lt;img src=x" in html and "<img src=x" not in html
