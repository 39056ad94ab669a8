"""An explanation's trust follows its scores everywhere it shows (issue 29, item 2): one whose scores' 95%
intervals all include chance (0.5) is marked "scores at chance" on the feature page (not the bold headline), in
search rows (which show the scores), in SAE lists and in the export, and never outranks a label in search. On a copy
of the tiny store with two automatic explanations: one at chance, one that beats it."""

import shutil

import pytest
from fastapi.testclient import TestClient

from qscope.config import Settings
from qscope.explain.export import export_rows
from qscope.explain.scoring import Score, interval, trust
from qscope.explain.store import ExplanationReader, ExplanationWriter, explanations_path
from qscope.store.queries import Store
from qscope.web import create_app

SAE = "SAE-Res-mini-qwen-W512-L0_16__layer1"
CHANCE, GOOD, LABELLED = 7, 40, 456  # 456's label starts with "·time"
GIBBERISH = "time time ow the ·of"  # what the toy explainer writes: it says the query's word, at chance


def test_the_rule():
    assert trust(None, None, None, None) == "unscored"
    assert trust(0.5, 20, 0.5, 10) == "at chance"
    assert trust(0.7, 10, 0.6, 10) == "at chance"  # 0.7 on 10 cases: the interval reaches down to 0.40
    assert trust(0.9, 20, 0.5, 10) == "beats chance"
    lo, hi = interval(0.5, 20)
    assert lo < 0.5 < hi and 0.25 < lo and hi < 0.75


@pytest.fixture(scope="module")
def db(tiny_db, tmp_path_factory):
    path = tmp_path_factory.mktemp("trust") / "tiny.duckdb"
    shutil.copy(tiny_db, path)
    w = ExplanationWriter(explanations_path(path))
    w.put_explanation(SAE, CHANCE, GIBBERISH, "mini-explainer")
    w.put_scores(SAE, CHANCE, Score(0.5, 20, 0), Score(0.5, 10, 0), "mini-explainer")
    w.put_explanation(SAE, GOOD, "closing brackets after a call", "mini-explainer")
    w.put_scores(SAE, GOOD, Score(0.9, 20, 0), Score(0.8, 10, 0), "mini-explainer")
    w.close()
    return path


@pytest.fixture(scope="module")
def client(db, tmp_path_factory):
    settings = Settings(app_db_url=f"sqlite:///{tmp_path_factory.mktemp('app')}/app.db", device="cpu")
    with TestClient(create_app([db], settings, warm_search=False)) as c:
        yield c


@pytest.fixture(scope="module")
def model_id(client):
    return client.get("/v1/models").json()["data"][0]["id"]


def test_the_feature_page_marks_it_and_does_not_headline_it(client, model_id):
    page = client.get(f"/{model_id}/{SAE}/{CHANCE}").text
    assert "scores at chance" in page and 'class="expl-text"' not in page and GIBBERISH in page
    assert client.get(f"/{model_id}/{SAE}/{CHANCE}.json").json()["words"]["explanation"]["trust"] == "at chance"
    good = client.get(f"/{model_id}/{SAE}/{GOOD}").text
    assert 'class="expl-text">closing brackets after a call<' in good and "scores at chance" not in good


def test_search_ranks_it_below_a_label_and_shows_its_scores(client):
    got = client.get("/search.json", params={"q": "time", "kind": ["explanation", "text"]}).json()
    order = [h["row"]["feature"] for h in got["hits"]]
    assert CHANCE in order and LABELLED in order, order
    assert order.index(LABELLED) < order.index(CHANCE)  # a label that says the word beats gibberish that does
    texts = [i for i, h in enumerate(got["hits"]) if any(f["kind"] == "text" for f in h["found"])]
    assert order.index(CHANCE) > max(texts)  # below every label match, not only this one
    hit = got["hits"][order.index(CHANCE)]
    assert hit["trust"] == "at chance" and hit["detection"] == 0.5 and hit["found"][0]["at_chance"]
    html = client.get("/search", params={"q": "time", "kind": ["explanation", "text"]}).text
    assert "scores at chance" in html and "det 0.50" in html


def test_lists_and_export_carry_it(client, model_id, db):
    listing = client.get(f"/{model_id}/{SAE}.json", params={"sort": "index", "per_page": 50}).json()
    assert listing["explanations"][str(CHANCE)]["trust"] == "at chance"
    assert listing["explanations"][str(GOOD)]["trust"] == "beats chance"
    assert "scores at chance" in client.get(f"/{model_id}/{SAE}", params={"sort": "index", "per_page": 50}).text
    store = Store(db)
    rows = {r["feature"]: r for r in export_rows(store, ExplanationReader(explanations_path(db)), None)}
    store.close()
    assert rows[CHANCE]["trust"] == "at chance" and rows[GOOD]["trust"] == "beats chance"
