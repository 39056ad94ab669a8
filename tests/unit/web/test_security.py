"""Hardening of the web app (qscope/web/security.py) on a small hostile store written by the real writer: the CSP and
other headers, no inline script anywhere, size limits (413, 414), per-client rate limits (429 + Retry-After),
CORS off by default, SQL that stays parameterised under hostile input, a read-only store, no secret in the repo.
No model is needed: the store's model is absent, so live routes answer 503 after the guards have run."""

import re
import subprocess
from html.parser import HTMLParser

import duckdb
import pytest
from fastapi.testclient import TestClient

from qscope.config import Settings
from qscope.web import create_app
from qscope.web.rates import RateLimiter
from tests.helpers import ROOT
from tests.helpers.stores import SAE_ID, write_small_store

PAGES = [
    "/",
    f"/evil/{SAE_ID}",
    f"/evil/{SAE_ID}/0",
    f"/evil/{SAE_ID}/0?embed=1",
    "/search?q=%3Cscript%3E",
    "/inspect",
    "/inspect?text=hi",
    "/steer",
    f"/steer?sae_id={SAE_ID}&feature=0",
    "/nope/nothing",
]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_small_store(tmp_path_factory.mktemp("sec") / "evil.duckdb")


def make_client(store, tmp_path_factory, **overrides) -> TestClient:
    settings = Settings(device="cpu", cache_dir=tmp_path_factory.mktemp("cache"), **overrides)
    return TestClient(create_app([store], settings, warm_search=False))


@pytest.fixture(scope="module")
def client(store, tmp_path_factory):
    with make_client(store, tmp_path_factory, rate_inspect_per_min=0, rate_steer_per_min=0) as c:
        yield c


class ScriptFinder(HTMLParser):
    """Collects inline scripts, event-handler attributes, javascript: URLs and <style> elements."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script" and "src" not in attrs and attrs.get("type") != "application/json":
            self.found.append("inline <script>")
        if tag == "style":
            self.found.append("<style> element")
        self.found += [f"{tag} {name}=" for name in attrs if name.startswith("on")]
        self.found += [f"{tag} {k}=javascript:" for k, v in attrs.items() if (v or "").strip().startswith("javascript")]


def inline_code(html: str) -> list[str]:
    finder = ScriptFinder()
    finder.feed(html)
    return finder.found


def test_every_page_has_the_csp_and_no_inline_script(client):
    for path in PAGES:
        r = client.get(path)
        csp = r.headers["content-security-policy"]
        script_src = re.search(r"script-src ([^;]*)", csp).group(1)
        assert script_src == "'self'", (path, csp)
        assert "unsafe-eval" not in csp and "style-src 'self'" in csp and "object-src 'none'" in csp
        assert r.headers["x-content-type-options"] == "nosniff"
        assert inline_code(r.text) == [], (path, inline_code(r.text))
    for path in ("/.json", "/-/static/qscope.css", "/-/health"):
        assert "script-src 'self'" in client.get(path).headers["content-security-policy"], path


def test_templates_hold_no_inline_script_or_style_element():
    for path in sorted((ROOT / "templates").glob("*.html")):
        text = path.read_text()
        assert inline_code(text) == [], (path.name, inline_code(text))
        assert not re.search(r"\son[a-z]+\s*=", text), path.name


def test_only_embed_cards_may_be_framed_elsewhere(client):
    assert "frame-ancestors 'self'" in client.get(f"/evil/{SAE_ID}/0").headers["content-security-policy"]
    assert "frame-ancestors *" in client.get(f"/evil/{SAE_ID}/0?embed=1").headers["content-security-policy"]


def test_docs_page_loads_nothing_from_elsewhere(client):
    """The API docs are a page of our own under the common CSP: no CDN, no script of another origin, and they
    list what the schema holds (Swagger UI, loaded from a CDN, failed offline)."""
    r = client.get("/-/docs")
    csp = r.headers["content-security-policy"]
    assert r.status_code == 200 and "script-src 'self';" in csp and "http" not in csp, csp
    loaded = re.findall(r"""(?:src|href)=["']([^"']+)""", r.text)
    assert loaded and all(u.startswith(("/", "#")) for u in loaded), [u for u in loaded if not u.startswith("/")]
    assert "POST /api/steer" in r.text and "SteerSpec" in r.text and "strength" in r.text
    assert inline_code(r.text) == []
    twin = client.get("/-/docs.json").json()
    assert any(op["path"] == "/api/steer" and op["method"] == "POST" for op in twin["operations"])
    assert "/-/docs" not in client.get("/-/openapi.json").json()["paths"]


def test_oversized_bodies_and_urls_are_refused(client):
    r = client.post("/api/steer", content=b"{" + b" " * 70_000 + b"}", headers={"content-type": "application/json"})
    assert r.status_code == 413 and "64,000 bytes" in r.json()["error"]
    chunks = (b" " * 10_000 for _ in range(10))  # no Content-Length: counted as it arrives
    r = client.post("/api/steer", content=chunks, headers={"content-type": "application/json"})
    assert r.status_code == 413
    r = client.get("/search", params={"q": "x" * 9_000})
    assert r.status_code == 414 and "414" in r.text and "<script>" not in r.text
    r = client.post("/api/steer", json={"prompt": "fine"})  # a small body goes through to the route
    assert r.status_code not in (413, 414)


def test_rate_limits_per_client_on_model_routes(store, tmp_path_factory):
    with make_client(
        store, tmp_path_factory, rate_inspect_per_min=6, rate_inspect_burst=2, rate_steer_per_min=6, rate_steer_burst=1
    ) as c:
        assert [c.get("/inspect", params={"text": "hi"}).status_code for _ in range(3)] == [503, 503, 429]
        r = c.get("/inspect.json", params={"text": "hi"})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1 and "Too many" in r.json()["error"]
        assert c.get("/inspect").status_code == 200  # the empty form runs nothing: not counted
        assert c.get(f"/evil/{SAE_ID}/0").status_code == 200  # browsing is not limited
        assert c.post("/api/steer", json={"prompt": "x"}).status_code != 429
        r = c.post("/api/steer/stream", json={"prompt": "x"})
        assert r.status_code == 429 and r.headers["retry-after"]
        other = TestClient(c.app, client=("203.0.113.9", 5000))  # another address has its own bucket
        assert other.get("/inspect", params={"text": "hi"}).status_code == 503


def test_searches_that_run_the_model_are_limited_like_inspect(store, tmp_path_factory):
    """/search runs the model for its "fires" kind (asked for, or all kinds by default): it takes from the same
    per-client bucket as /inspect; a search of text only, or an empty one, runs no model and is not counted."""
    with make_client(store, tmp_path_factory, rate_inspect_per_min=6, rate_inspect_burst=2) as c:
        for _ in range(5):
            assert c.get("/search", params={"q": "hi", "kind": "text"}).status_code == 200
            assert c.get("/search").status_code == 200
        codes = [c.get("/search", params={"q": f"long query {i}", "kind": "fires"}).status_code for i in range(3)]
        assert codes == [200, 200, 429], codes
        r = c.get("/search.json", params={"q": "hi"})  # no kind: all of them, fires included
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1 and "run the model" in r.json()["error"]
        assert c.get("/inspect", params={"text": "hi"}).status_code == 429  # one bucket for every model run
        assert c.get("/search", params={"q": "hi", "kind": ["text", "semantic"]}).status_code == 200


def test_rate_limiter_refills_and_forgets_idle_clients():
    now = [0.0]
    limiter = RateLimiter(per_min=60, burst=2, max_clients=3, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(3)][:2] == [0.0, 0.0]
    assert limiter.take("a") == pytest.approx(1.0)  # one token a second
    now[0] += 1.0
    assert limiter.take("a") == 0.0
    for i in range(10):
        limiter.take(f"client{i}")
        now[0] += 5
    assert len(limiter._buckets) <= 3  # bounded, whatever the number of addresses
    assert RateLimiter(per_min=0, burst=1).take("a") == 0.0  # 0: no limit


def test_cors_is_off_by_default_and_on_for_named_origins(client, store, tmp_path_factory):
    preflight = {"Origin": "https://elsewhere.example", "Access-Control-Request-Method": "POST"}
    r = client.options("/api/steer", headers=preflight)
    assert "access-control-allow-origin" not in r.headers
    assert "access-control-allow-origin" not in client.get("/.json", headers={"Origin": "https://x.example"}).headers
    with make_client(store, tmp_path_factory, cors_origins=["https://elsewhere.example"]) as c:
        r = c.options("/api/steer", headers=preflight)
        assert r.headers["access-control-allow-origin"] == "https://elsewhere.example"
        r = c.get("/.json", headers={"Origin": "https://other.example"})
        assert "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize("q", ["' OR '1'='1", "%", "_", "\\", "'; DROP TABLE features; --", "\x00"])
def test_hostile_filters_stay_data(client, q):
    r = client.get(f"/evil/{SAE_ID}.json", params={"q": q})
    assert r.status_code in (200, 422), r.text[:300]
    if r.status_code == 200:
        assert r.json()["features"]["total"] == 0, q  # no label contains these characters: nothing matches
    assert client.get("/search.json", params={"q": q, "kind": "text"}).status_code in (200, 422)
    assert client.get(f"/evil/{SAE_ID}.json").json()["features"]["total"] == 2  # the table is still there


def test_sort_and_order_take_only_known_values(client):
    assert client.get(f"/evil/{SAE_ID}", params={"sort": "density; DROP TABLE features"}).status_code == 422
    assert client.get(f"/evil/{SAE_ID}", params={"order": "asc, (SELECT 1)"}).status_code == 422


def test_the_server_cannot_write_its_store(client, store):
    before = store.stat().st_mtime_ns
    con = client.app.state.catalog.stores[0].con
    with pytest.raises(duckdb.Error, match="(?i)read.only"):
        con.execute("CREATE TABLE pwned (i INTEGER)")
    for path in PAGES:
        client.get(path)
    assert store.stat().st_mtime_ns == before


SECRET = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----|\bhf_[A-Za-z0-9]{30,}|\bAKIA[0-9A-Z]{16}\b|\bgh[pousr]_[A-Za-z0-9]{30,}"
    r"|\bsk-[A-Za-z0-9]{20,}|(?i:password|passwd|secret)\s*[:=]\s*[\"']?(?!\$\{)[A-Za-z0-9+/_\-]{6,}"
)


def test_no_secret_is_committed():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    found = []
    for name in files:
        path = ROOT / name
        if not path.is_file() or path.suffix in (".png", ".svg", ".js") or path.stat().st_size > 2_000_000:
            continue
        for match in SECRET.finditer(path.read_text(errors="replace")):
            found.append(f"{name}: {match.group(0)[:40]}")
    assert found == []
    ignored = subprocess.run(["git", "check-ignore", ".env"], cwd=ROOT, capture_output=True, text=True).stdout
    assert ignored.strip() == ".env"  # where docker compose reads the database password from
