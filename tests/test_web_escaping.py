"""Escaping at the HTML level: tokens and labels holding markup, quotes and '&' render as text on every page.

The store is written by the real writer (qscope.store.writer) with a hand-made vocabulary: a harvest cannot be
asked for these exact tokens.
"""

import numpy as np
import pytest
from fastapi.testclient import TestClient

from qscope.config import Settings
from qscope.harvest.state import HIST_EDGES
from qscope.store.writer import SaeTables, write_store
from qscope.web import create_app

VOCAB = ["<|endoftext|>", "<script>alert(1)</script>", ' "quoted"', " a & b", "'single'", "\n", "  ", "plain"]
LABEL = "<b>bold</b> & \"q\" 's'"
SAE_ID = "evil__layer0"


def _tables() -> SaeTables:
    F, W, H = 2, 6, len(HIST_EDGES) - 1
    hist = np.zeros((F, H), np.int64)
    hist[:, 50] = 3
    info = {
        "sae_id": SAE_ID,
        "model_id": "evil",
        "layer": 0,
        "site": "model.layers.0",
        "d_in": 4,
        "d_sae": F,
        "k": 1,
        "architecture": "topk",
        "format": "qwen-scope",
        "source": "/nonexistent/layer0.sae.pt",
        "tokens": 100,
        "dead": 0,
        "hist_edges": HIST_EDGES.double().tolist(),
    }
    features = {
        "feature": np.arange(F, dtype=np.int32),
        "density": np.array([0.03, 0.01]),
        "mean_act": np.array([1.0, 1.0]),
        "max_act": np.array([2.0, 2.0]),
        "n_fired": np.array([3, 1]),
        "label": np.array([LABEL, "plain"], dtype=object),
        "top_tokens": np.array([[1, 2, 3], [4, 5, -1]], np.int32),
        "hist": hist,
        "interval_width": np.array([0.125, 0.125]),
    }
    ids = np.array([[1, 2, 3, 4, 5, 6], [7, 1, 2, 3, 4, 5]], np.int32)
    acts = np.array([[0.5, 2.0, 1.0, 0.0, 0.3, 0.0], [0.0, 1.0, 2.0, 0.0, 0.0, 0.0]], np.float32)
    contexts = {
        "feature": np.array([0, 1], np.int32),
        "kind": np.array([0, 0], np.int8),
        "bin": np.array([-1, -1], np.int32),
        "rank": np.array([0, 0], np.int32),
        "act": np.array([2.0, 2.0], np.float32),
        "window": np.array([0, 1], np.int64),
        "pos": np.array([1, 2], np.int32),
        "length": np.array([W, W], np.int32),
        "token_ids": ids,
        "acts": acts,
    }
    logits = {
        "feature": np.array([0, 0], np.int32),
        "sign": np.array([1, -1], np.int8),
        "rank": np.array([0, 0], np.int32),
        "token_id": np.array([1, 3], np.int32),
        "value": np.array([0.5, -0.5], np.float32),
    }
    neighbors = {
        "feature": np.array([0], np.int32),
        "other_sae_id": np.array([SAE_ID], dtype=object),
        "other_feature": np.array([1], np.int32),
        "cosine": np.array([0.5], np.float32),
        "rank": np.array([0], np.int32),
    }
    return SaeTables(info, features, contexts, logits, neighbors)


def write_small_store(out):
    """A two-feature store with hostile tokens, written by the real writer (also used by tests/test_search)."""
    write_store(out, {"schema_version": "1", "model_id": "evil", "model": "/nonexistent"}, [_tables()], VOCAB)
    return out


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
    assert r.status_code == 503 and "/nonexistent" in r.text
    r = client.get("/search.json", params={"q": "hello", "kind": "fires"})
    assert r.status_code == 200 and "not on this machine" in r.json()["notes"][0]
