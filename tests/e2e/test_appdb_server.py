"""Concurrent writes from many threads of one `qscope serve` (a real server process, its request threads) to the
app database, on SQLite and on a real Postgres server (tests/helpers/postgres.py): every note and list item lands."""

import json
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from qscope.explain.notes import NoteStore
from tests.helpers.server import serving

SAE = "SAE-Res-mini-qwen-W512-L0_16__layer1"
CLIENTS, EACH = 8, 5


def post(url: str, body: dict, secret: str = "") -> dict:
    headers = {"Content-Type": "application/json"} | ({"X-Owner-Secret": secret} if secret else {})
    req = urllib.request.Request(url, json.dumps(body).encode(), headers)
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(request, tiny_db, tmp_path_factory):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('appdb') / 'app.db'}"
    else:
        url = request.getfixturevalue("postgres_server").database()
    # many writes from one address at once: the per-client write rate is not what is tested here
    with serving(tiny_db, tmp_path_factory, QSCOPE_APP_DB_URL=url, QSCOPE_RATE_WRITE_PER_MIN="0") as base:
        yield base, url


def test_concurrent_writes_from_many_server_threads_all_land(server):
    base, url = server
    shared = post(base + "/api/lists", {"name": "shared", "description": "", "features": []})

    def client(i: int) -> None:
        for j in range(EACH):
            post(base + "/api/notes", {"sae_id": SAE, "feature": i, "text": f"note {i}.{j}"})
            item = {"sae_id": SAE, "feature": 10 * i + j, "note": f"{i}.{j}"}
            post(f"{base}/api/lists/{shared['id']}/items", item, shared["owner_secret"])

    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(client, range(CLIENTS)))
    written = sorted(f"{i}.{j}" for i in range(CLIENTS) for j in range(EACH))
    with urllib.request.urlopen(f"{base}/lists/{shared['id']}.json", timeout=60) as r:
        rows = json.loads(r.read())["rows"]
    assert sorted(row["item"]["note"] for row in rows) == written
    notes = NoteStore(url)
    assert sorted(n.text.removeprefix("note ") for n in notes.all_notes()) == written
    with notes.engine.connect() as conn:
        positions = [p for (p,) in conn.exec_driver_sql("SELECT position FROM feature_list_items")]
    notes.close()
    assert sorted(positions) == list(range(CLIENTS * EACH))  # each item its own place in the list
