"""Escaping at the HTML level: tokens and labels holding markup, quotes and '&' render as text on every page.

The store is written by the real writer (qscope.store.writer) with a hand-made vocabulary: a harvest cannot be
asked for these exact tokens.
"""

import pytest
from fastapi.testclient import TestClient

from qscope.config import Settings
from qscope.web import create_app
from tests.helpers.stores import LABEL, SAE_ID, VOCAB, write_small_store  # noqa: F401


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    out = write_small_store(tmp_path_factory.mktemp("evil") / "evil.duckdb")
    settings = Settings(device="cpu", cache_dir=tmp_path_factory.mktemp("cache"))
    with TestClient(create_app([out], settings, warm_search=False)) as c:
        yield c


def assert_escaped(html: str) -> None:
    assert "<script>alert" not in html
    assert "<b>bold</b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html or "&lt;script&gt;" in html


def test_feature_page_escapes_tokens_and_labels(client):
    html = client.get(f"/evil/{SAE_ID}/0").text
    assert_escaped(html)
    assert "&lt;b&gt;bold&lt;/b&gt; &amp;" in html  # the label, as text
    assert "a &amp; b" in html  # a token with '&'
    assert "&#34;quoted&#34;" in html or "&quot;quoted&quot;" in html
    assert "&#39;single&#39;" in html
    # the hover title of a token holds its repr and value, escaped inside the attribute
    assert 'title="&#39;&lt;script&gt;alert(1)&lt;/script&gt;&#39; 0.500"' in html
    assert "↵" in html  # the newline token is visible


def test_list_search_and_embed_escape_too(client):
    query = "?q=%3Cb%3Ebold%3C%2Fb%3E&kind=text"  # the query itself is markup, and matches the label
    for path in (f"/evil/{SAE_ID}", f"/evil/{SAE_ID}/0?embed=1", f"/search{query}", f"/evil/{SAE_ID}/1"):
        r = client.get(path)
        assert r.status_code == 200, path
        assert "<script>alert" not in r.text and "<b>bold</b>" not in r.text, path
    assert "&lt;b&gt;bold&lt;/b&gt;" in client.get(f"/search{query}").text
    assert client.get(f"/search.json{query}").json()["hits"][0]["row"]["label"] == LABEL


def test_json_twin_keeps_the_raw_strings(client):
    data = client.get(f"/evil/{SAE_ID}/0.json").json()
    assert data["detail"]["row"]["label"] == LABEL
    assert data["detail"]["top"][0]["tokens"][0] == "<script>alert(1)</script>"


def test_live_runs_without_the_model_say_why(client):
    r = client.get("/inspect", params={"text": "hello"})
    assert r.status_code == 503 and "the model folder nonexistent" in r.text  # named, not by its absolute path
    r = client.get("/search.json", params={"q": "hello", "kind": "fires"})
    assert r.status_code == 200 and "not on this machine" in r.json()["notes"][0]
