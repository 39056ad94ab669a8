"""The static embedder (token vectors distilled from all-MiniLM-L6-v2) and the choice between it and MiniLM:
the table built once and cached, vectors that rank by shared meaning, "auto" picking by size and device, and an
index built with it served with queries embedded the same way."""

import json
import shutil

import numpy as np
import pytest
from fastapi.testclient import TestClient

import qscope.search.static as static
from qscope.config import Settings
from qscope.search.embedder import Embedder
from qscope.search.semantic import STATIC_ABOVE, choose_embedder, index_paths, index_store, load_cached_index
from qscope.search.static import StaticEmbedder
from qscope.store.queries import Store
from qscope.web import create_app
from tests.helpers.timing import wait_until


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("static-cache")


@pytest.fixture(scope="module")
def embedder(cache):
    return StaticEmbedder(cache)


def test_static_vectors_rank_by_shared_meaning_and_the_table_is_built_once(embedder, cache, monkeypatch):
    v = embedder.embed(["import os and sys", "from typing import Any", "a cat sat on the mat", "", "import os and sys"])
    assert v.shape == (5, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v[[0, 1, 2, 4]], axis=1), 1, atol=1e-5) and not v[3].any()  # no token: zeros
    assert np.array_equal(v[0], v[4])
    q = embedder.embed(["python import statements"])[0]
    assert v[0] @ q > v[2] @ q and v[1] @ q > v[2] @ q
    table = embedder.table_path()
    assert table.parent == cache and table.is_file() and np.load(table).shape == (30522, 384)
    monkeypatch.setattr(static, "distill", lambda *a: pytest.fail("the cached table is read, not built again"))
    again = StaticEmbedder(cache).embed(["import os and sys"])
    assert np.allclose(again[0], v[0], atol=1e-6)


def test_auto_picks_minilm_unless_a_cpu_would_take_hours():
    auto = choose_embedder("auto", "cpu")
    assert isinstance(auto(STATIC_ABOVE), Embedder) and isinstance(auto(STATIC_ABOVE + 1), StaticEmbedder)
    assert isinstance(choose_embedder("auto", "cuda")(10 * STATIC_ABOVE), Embedder)
    assert isinstance(choose_embedder("static")(10), StaticEmbedder)
    assert isinstance(choose_embedder("minilm")(10 * STATIC_ABOVE), Embedder)
    with pytest.raises(ValueError, match="unknown index embedder 'fast'"):
        choose_embedder("fast")


def test_a_static_index_is_stamped_loaded_and_searched_with_static_queries(tiny_db, cache, tmp_path):
    db = shutil.copy2(tiny_db, tmp_path / "tiny.duckdb")
    n = index_store(db, cache_dir=cache, embedder="static")
    _, sidecar = index_paths(db, None)
    assert json.loads(sidecar.read_text())["embedder"] == StaticEmbedder.name
    store = Store(db)
    index = load_cached_index(store)
    assert index is not None and index.embedder == StaticEmbedder.name and len(index.feature_N) == n > 100
    store.close()
    settings = Settings(device="cpu", cache_dir=cache)
    with TestClient(create_app([db], settings, warm_search=True)) as client:
        ready = lambda: client.get("/-/health").json()["search_ready"]  # noqa: E731
        wait_until(ready, 120, "search to say it was ready", poll_s=0.2)  # the server says when every index is in
        found = client.get("/search.json", params={"q": "import os", "kind": "semantic", "limit": 5}).json()
    assert found["notes"] == [] and 0 < len(found["hits"]) <= 5
    assert all(
        h["found"][0]["kind"] == "semantic" and "(static vectors)" in h["found"][0]["detail"] for h in found["hits"]
    )


def test_the_harvest_says_when_auto_picked_the_static_vectors(tiny_db, cache, tmp_path, monkeypatch, capsys):
    import qscope.search.semantic as semantic
    from qscope.cli.harvest import _indexer

    monkeypatch.setenv("QSCOPE_CACHE_DIR", str(cache))
    monkeypatch.setattr(semantic, "STATIC_ABOVE", 100)  # the tiny store's 892 texts count as a large store
    db = shutil.copy2(tiny_db, tmp_path / "tiny.duckdb")
    from qscope.config import get_settings

    get_settings.cache_clear()
    try:
        n = _indexer("cpu", "auto")(db, lambda done, of: None)
    finally:
        get_settings.cache_clear()
    said = capsys.readouterr().err
    assert n > 100 and "static token vectors" in said and "--index-embedder minilm" in said
    assert semantic.index_embedder(db) == StaticEmbedder.name
