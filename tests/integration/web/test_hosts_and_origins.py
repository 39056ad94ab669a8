"""Who may reach the server and change what it keeps (qscope/web/security.py), on the small hostile store: only the
hosts it serves are answered (a DNS-rebinding name gets 400), and a browser page of another site cannot write
(403, nothing written), while clients that are not browsers (no Origin, as curl and the openai client) still can."""

import os
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from fastapi.testclient import TestClient

from qscope.config import ServerSettings
from qscope.web.security import allowed_hosts
from tests.helpers.apps import app_client, app_settings
from tests.helpers.stores import SAE_ID, write_small_store

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
NEW_LIST = {"name": "from elsewhere"}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_small_store(tmp_path_factory.mktemp("hosts") / "evil.duckdb")


def make_client(store, tmp_path_factory, **overrides) -> TestClient:
    return app_client([store], app_settings(tmp_path_factory.mktemp("app"), **overrides), follow_redirects=False)


@pytest.fixture(scope="module")
def client(store, tmp_path_factory):
    with make_client(store, tmp_path_factory, rate_write_per_min=0) as c:
        yield c


def lists_total(client) -> int:
    return client.get("/lists.json").json()["total"]


def test_allowed_hosts_are_the_served_ones_unless_named():
    local = ["127.0.0.1", "localhost", "[::1]"]
    assert allowed_hosts(ServerSettings(host="127.0.0.1", allowed_hosts=[])) == local
    assert allowed_hosts(ServerSettings(host="0.0.0.0", allowed_hosts=[])) == local  # a bind address is no name
    assert allowed_hosts(ServerSettings(host="::", allowed_hosts=[])) == local
    assert allowed_hosts(ServerSettings(host="fd00::5", allowed_hosts=[])) == [*local, "[fd00::5]"]
    named = ServerSettings(host="10.0.0.5", allowed_hosts=["QScope.example.org"])
    assert allowed_hosts(named) == [*local, "10.0.0.5", "qscope.example.org"]
    assert allowed_hosts(ServerSettings(allowed_hosts=["*"])) == ["*"]


def test_a_foreign_host_gets_400(client):
    """A page on a rebinding name (evil.example resolving to 127.0.0.1) asks with its own name as Host."""
    for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example", "localhost.", "[::2]:8000", "a b"):
        r = client.get(f"/evil/{SAE_ID}/0.json", headers={"Host": host})
        assert r.status_code == 400 and SAE_ID not in r.text, host
        assert r.headers["content-security-policy"]  # answered inside the Guard: its headers still go
    for host in ("127.0.0.1:8000", "localhost", "LOCALHOST:8000", "[::1]:8000", "testserver"):
        assert client.get(f"/evil/{SAE_ID}/0.json", headers={"Host": host}).status_code == 200, host
    assert client.post("/-/lists", data=NEW_LIST, headers={**FORM, "Host": "evil.example"}).status_code == 400


def test_named_hosts_and_any_host(store, tmp_path_factory):
    with make_client(store, tmp_path_factory, host="0.0.0.0", allowed_hosts=["*.example.org"]) as c:
        assert c.get("/.json", headers={"Host": "qscope.example.org"}).status_code == 200
        assert c.get("/.json", headers={"Host": "localhost:8000"}).status_code == 200
        assert c.get("/.json", headers={"Host": "example.net"}).status_code == 400
        assert c.get("/.json", headers={"Host": "testserver"}).status_code == 400  # the names replace nothing local
    with make_client(store, tmp_path_factory, allowed_hosts=["*"]) as c:
        assert c.get("/.json", headers={"Host": "anything.example"}).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "cross-site"},  # a browser that sends no Origin on a form post
        {"Origin": "null"},  # a sandboxed frame or a file
        {"Origin": "http://127.0.0.1:8001"},  # another port of a local host is another origin
        {"Origin": "http://localhost"},  # another local name than the one asked for
    ],
)
def test_cross_site_writes_are_refused_and_write_nothing(client, headers):
    before = lists_total(client)
    r = client.post("/-/lists", data=NEW_LIST, headers={**FORM, **headers})
    assert r.status_code == 403 and "may not send POST requests here" in r.text
    note = {"sae_id": SAE_ID, "feature": 0, "text": "cross-site"}
    r = client.post("/api/notes", json=note, headers=headers)
    assert r.status_code == 403 and "may not send POST" in r.json()["error"]
    assert lists_total(client) == before
    assert "cross-site" not in client.get(f"/evil/{SAE_ID}/0").text


def test_same_origin_pages_and_clients_without_origin_write(client):
    before = lists_total(client)
    same = {"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"}
    assert client.post("/-/lists", data=NEW_LIST, headers={**FORM, **same}).status_code == 303
    assert client.post("/-/lists", data=NEW_LIST, headers={**FORM, "Sec-Fetch-Site": "none"}).status_code == 303
    assert client.post("/api/lists", json=NEW_LIST).status_code == 201  # curl, scripts: no Origin
    assert lists_total(client) == before + 3
    # reading is never refused for its origin (a GET changes nothing)
    assert client.get("/lists.json", headers={"Origin": "https://evil.example"}).status_code == 200


def test_a_named_host_and_a_cors_origin_may_write(store, tmp_path_factory):
    """Behind a proxy that passes its own Host, the browser's Origin is a name the operator gave; an origin CORS
    allows may call the API from its pages."""
    with make_client(
        store,
        tmp_path_factory,
        allowed_hosts=["testserver", "qscope.example.org"],
        cors_origins=["https://app.example"],
    ) as c:
        proxied = {"Host": "127.0.0.1:8000", "Origin": "https://qscope.example.org", "Sec-Fetch-Site": "same-origin"}
        assert c.post("/api/lists", json=NEW_LIST, headers=proxied).status_code == 201
        cors = {"Origin": "https://app.example", "Sec-Fetch-Site": "cross-site"}
        assert c.post("/api/lists", json=NEW_LIST, headers=cors).status_code == 201
        assert c.post("/api/lists", json=NEW_LIST, headers={"Origin": "https://evil.example"}).status_code == 403


def test_the_openai_api_still_answers_clients_without_origin(client):
    """/v1 is for programs (no Origin): refused only for what it is (here: no model to run), never as cross-site."""
    r = client.post("/v1/completions", json={"model": "evil", "prompt": "hi", "max_tokens": 1})
    assert r.status_code != 403, r.text
    r = client.post("/v1/completions", json={"model": "evil", "prompt": "hi"}, headers={"Origin": "https://x.example"})
    assert r.status_code == 403 and "may not send POST" in r.json()["error"]["message"]


def test_the_json_apis_refuse_a_form_body(client):
    """A cross-site page can post a form without asking first, never JSON: the JSON APIs take JSON only."""
    before = lists_total(client)
    for kind in ("application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x"):
        r = client.post("/api/lists", content=b'{"name": "smuggled"}', headers={"Content-Type": kind})
        assert r.status_code == 422, (kind, r.status_code)
    assert lists_total(client) == before


def test_qscope_serve_answers_the_address_it_binds_by_name(tiny_db, tmp_path):
    """A real `qscope serve --host` (uvicorn on another loopback address): that address is a served host, a foreign
    name is not, and the bound address names itself without QSCOPE_ALLOWED_HOSTS."""
    from tests.helpers.server import free_port, qscope_cmd

    port, log = free_port(), tmp_path / "serve.log"
    env = os.environ | {
        "QSCOPE_DEVICE": "cpu",
        "QSCOPE_CACHE_DIR": str(tmp_path / "cache"),
        "QSCOPE_ALLOWED_HOSTS": "[]",
    }
    with open(log, "w") as out:
        cmd = [*qscope_cmd(), "serve", "--db", str(tiny_db), "--host", "127.0.0.2", "--port", str(port)]
        proc = subprocess.Popen(cmd, stdout=out, stderr=out, env=env)
    try:
        base = f"http://127.0.0.2:{port}"
        for _ in range(600):
            assert proc.poll() is None, log.read_text()
            try:
                urllib.request.urlopen(base + "/-/health", timeout=1)
                break
            except urllib.error.HTTPError:
                break  # it answers (and the assertion below says what)
            except OSError:
                time.sleep(0.2)
        assert urllib.request.urlopen(base + "/-/health", timeout=5).status == 200  # Host: 127.0.0.2:port
        asked = urllib.request.Request(base + "/-/health", headers={"Host": "evil.example"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(asked, timeout=5)
        assert refused.value.code == 400
        local = urllib.request.Request(base + "/-/health", headers={"Host": f"localhost:{port}"})
        assert urllib.request.urlopen(local, timeout=5).status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)
