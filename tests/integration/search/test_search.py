"""Search: the offline sentence embedder, the semantic index cache beside the store, and /search merging the
three kinds (semantic, text, fires) on the harvested tiny default."""

import os

import numpy as np
import pytest
from fastapi.testclient import TestClient

import qscope.search.semantic as search
from qscope.config import Settings
from qscope.search.embedder import Embedder
from qscope.search.semantic import index_paths, load_or_build_index
from qscope.store.queries import Store
from qscope.web import create_app
from tests.helpers.stores import write_small_store

HX = {"HX-Request": "true"}


@pytest.fixture(scope="module")
def embedder():
    return Embedder()


def test_embedder_loads_offline_and_ranks_by_meaning(embedder):
    assert Embedder.folder() is not None
    v = embedder.embed(["integers and digits", "numbers", "a cat on a mat"])
    assert v.shape == (3, 384) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2]


def test_index_is_cached_beside_the_store_and_rebuilt_when_it_changes(embedder, tmp_path, monkeypatch):
    path = write_small_store(tmp_path / "small.duckdb")
    store = Store(path)
    first = load_or_build_index(store, embedder)
    npy, sidecar = index_paths(store, None)
    assert npy == tmp_path / "small.duckdb.search.npy" and npy.is_file() and sidecar.is_file()
    assert first.keys == [("evil__layer0", 0), ("evil__layer0", 1)]

    calls = []
    real = embedder.embed
    monkeypatch.setattr(embedder, "embed", lambda texts, **kw: calls.append(len(texts)) or real(texts, **kw))
    again = load_or_build_index(store, embedder)
    assert calls == [] and np.allclose(again.vectors, first.vectors, atol=1e-3)  # read back, not embedded
    store.close()

    os.utime(path, ns=(1, 1))  # the file changed: its signature no longer matches the cache
    changed = Store(path)
    load_or_build_index(changed, embedder)
    assert calls == [2]
    changed.close()


def test_index_goes_to_the_cache_dir_when_the_folder_is_read_only(embedder, tmp_path, monkeypatch):
    path = write_small_store(tmp_path / "ro" / "small.duckdb")
    store = Store(path)
    monkeypatch.setattr(search.os, "access", lambda p, mode: False)  # root ignores chmod, so ask access()
    load_or_build_index(store, embedder, tmp_path / "cache")
    npy, _ = index_paths(store, tmp_path / "cache")
    assert npy.parent == tmp_path / "cache" and npy.is_file()
    assert not (tmp_path / "ro" / "small.duckdb.search.npy").exists()
    store.close()


@pytest.fixture(scope="module")
def client(tiny_db, tmp_path_factory):
    settings = Settings(device="cpu", cache_dir=tmp_path_factory.mktemp("cache"))
    with TestClient(create_app([tiny_db], settings, warm_search=False)) as c:
        yield c


def test_search_merges_three_kinds_full_partial_and_json(client):
    q = "return"
    full = client.get("/search", params={"q": q})
    assert full.status_code == 200 and full.headers["vary"] == "HX-Request"
    assert full.text.lstrip().startswith("<!doctype html>") and 'class="grid results"' in full.text
    part = client.get("/search", params={"q": q}, headers=HX)
    assert part.status_code == 200 and "<header" not in part.text and 'class="grid results"' in part.text
    data = client.get("/search.json", params={"q": q}).json()
    assert data["q"] == q and data["kinds"] == ["explanation", "semantic", "text", "fires"] and data["notes"] == []
    kinds = {f["kind"] for h in data["hits"] for f in h["found"]}
    assert kinds == {"semantic", "text", "fires"}
    scores = [h["score"] for h in data["hits"]]
    assert scores == sorted(scores, reverse=True)
    for h in data["hits"]:
        for f in h["found"]:
            assert {"semantic": "cosine", "text": "match", "fires": "in the harvest"}[f["kind"]] in f["detail"]
    assert 'class="badge semantic"' in full.text and 'class="badge fires"' in full.text


def test_search_kinds_one_at_a_time(client):
    text = client.get("/search.json", params={"q": "the", "kind": "text"}).json()
    assert text["hits"] and all([f["kind"] for f in h["found"]] == ["text"] for h in text["hits"])
    assert all("the" in h["row"]["label"].lower() or "top token" in h["found"][0]["detail"] for h in text["hits"])
    fires = client.get("/search.json", params={"q": "import os", "kind": "fires", "limit": 5}).json()
    assert 0 < len(fires["hits"]) <= 5
    assert all(h["found"][0]["kind"] == "fires" for h in fires["hits"])


def test_search_empty_and_bad_parameters(client):
    r = client.get("/search")
    assert r.status_code == 200 and "Type a concept" in r.text
    assert client.get("/search.json").json()["hits"] == []
    for query in ("q=x&limit=0", "q=x&limit=101", "q=x&kind=bogus"):
        r = client.get(f"/search?{query}")
        assert r.status_code == 422 and "Bad parameter" in r.text, query
    r = client.get("/search.json", params={"q": "y" * 5000})  # too long to run the model on: the others still run
    assert r.status_code == 200 and r.json()["kinds"] == ["explanation", "semantic", "text", "fires"]
    assert [n.split(" did not run")[0] for n in r.json()["notes"]] == ["Running the model on your query"]
    assert "at most" in r.json()["notes"][0]
