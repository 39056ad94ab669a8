"""What the server tells strangers about its disk: pages, `.json` twins and 503 bodies name the model, corpus and
SAE files relative to the store's folder (or by name), never by absolute path, unless the operator turns
Settings.show_paths on. The store is written by the real writer and records files that are not there."""

import pytest
from fastapi.testclient import TestClient

from qscope.config import Settings
from qscope.store.paths import shown_message, shown_path
from qscope.store.writer import write_store
from qscope.web import create_app
from tests.helpers.stores import SAE_ID, VOCAB, hostile_tables

PAGES = [
    "/",
    "/.json",
    f"/evil/{SAE_ID}",
    f"/evil/{SAE_ID}.json",
    f"/evil/{SAE_ID}/0",
    f"/evil/{SAE_ID}/0.json",
    "/inspect?text=hello",
    "/inspect.json?text=hello",
    "/search.json?q=hello&kind=fires",
    "/steer",
]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("server-disk")
    tables = hostile_tables()
    tables.info["source"] = str(folder / "saes" / "layer0.sae.pt")
    meta = {
        "schema_version": "1",
        "model_id": "evil",
        "model": str(folder / "models" / "evil"),
        "corpus": "/x/y/c.jsonl",
    }
    write_store(folder / "evil.duckdb", meta, [tables], VOCAB)
    return folder / "evil.duckdb"


def client_for(store, tmp_path_factory, **settings) -> TestClient:
    s = Settings(device="cpu", cache_dir=tmp_path_factory.mktemp("cache"), rate_inspect_per_min=0, **settings)
    return TestClient(create_app([store], s, warm_search=False), raise_server_exceptions=False)


def test_pages_and_errors_name_no_absolute_path(store, tmp_path_factory):
    folder = str(store.parent)
    with client_for(store, tmp_path_factory) as c:
        for path in PAGES:
            r = c.get(path)
            assert r.status_code in (200, 503), (path, r.status_code)
            assert folder not in r.text and "/x/y" not in r.text, (path, r.text[:500])
        r = c.post("/api/steer", json={"prompt": "hi"})
        assert r.status_code == 503 and folder not in r.text, r.text
        assert "models/evil" in r.json()["error"]  # named relative to the store's folder
        home = c.get("/.json").json()
        assert home["stores"][0]["model"] == "models/evil" and home["stores"][0]["corpus"] == "c.jsonl"
        assert home["models"][0]["saes"][0]["sae"]["source"] == "saes/layer0.sae.pt"


def test_an_operator_may_show_them(store, tmp_path_factory):
    with client_for(store, tmp_path_factory, show_paths=True) as c:
        assert str(store.parent / "models" / "evil") in c.get("/.json").text
        assert str(store.parent) in c.post("/api/steer", json={"prompt": "hi"}).text


def test_shown_path_and_message(tmp_path):
    store = tmp_path / "s.duckdb"
    assert shown_path(str(tmp_path / "m" / "model"), store) == "m/model"
    assert shown_path("/srv/other/model.bin", store) == "model.bin"
    assert shown_path("data/demo/model", store) == "data/demo/model"  # relative, as the harvest was given it
    assert shown_path("../../etc/passwd", store) == "passwd"
    assert shown_path("Qwen/Qwen3-0.6B", store) == "Qwen/Qwen3-0.6B"
    message = f"cannot load {tmp_path}/m/pytorch_model.bin: see /usr/lib/python3/x.py, 8/10 done, /nonexistent"
    assert shown_message(message, store) == "cannot load m/pytorch_model.bin: see x.py, 8/10 done, nonexistent"
