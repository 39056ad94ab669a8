"""HTTP as the standards and the schema say, on a small store written by the real writer: HEAD answers like GET
without a body, a 405 says what is allowed, only a real `embed=1` parameter on a feature page lets other sites
frame it, each feature has one URL, and the OpenAPI schema types what the server parses (numbers, an integer
feature, a prompt that may not be empty)."""

import pytest
from fastapi.testclient import TestClient

from qscope.config import Settings
from qscope.web import create_app
from tests.helpers.stores import SAE_ID, write_small_store

SAE_URL = f"/evil/{SAE_ID}"


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    store = write_small_store(tmp_path_factory.mktemp("protocol") / "evil.duckdb")
    settings = Settings(device="cpu", cache_dir=tmp_path_factory.mktemp("cache"))
    with TestClient(create_app([store], settings, warm_search=False), raise_server_exceptions=False) as c:
        # /-/health says search_ready: built first, so that it cannot change between a GET and its HEAD
        assert c.app.state.searcher.wait_ready(60)
        yield c


# 9. framing


def frame(r) -> str:
    return r.headers["content-security-policy"].split("frame-ancestors", 1)[1].split(";")[0].strip()


@pytest.mark.parametrize(
    "path",
    [
        "/steer?x=embed=1",
        "/search?q=embed=1",
        f"{SAE_URL}/0?x=embed=1",
        f"{SAE_URL}/0?notembed=1",
        f"{SAE_URL}?embed=1",  # the SAE list is not an embeddable card
        "/?embed=1",
        "/inspect?embed=1",
        f"{SAE_URL}/0?embed=0",
    ],
)
def test_only_a_real_embed_parameter_on_a_card_relaxes_framing(client, path):
    r = client.get(path)
    assert frame(r) == "'self'", (path, r.status_code, r.headers["content-security-policy"])


def test_an_embedded_card_may_be_framed(client):
    r = client.get(f"{SAE_URL}/0?embed=1")
    assert r.status_code == 200 and frame(r) == "*"
    assert frame(client.get(f"{SAE_URL}/9?embed=1")) == "'self'"  # an error page is not a card


# 11. HEAD, 405 and Allow, the schema


@pytest.mark.parametrize(
    "path", ["/", "/.json", SAE_URL, f"{SAE_URL}/0", f"{SAE_URL}/0.json", "/-/health", "/-/openapi.json", "/steer"]
)
def test_head_answers_like_get_without_a_body(client, path):
    get, head = client.get(path), client.head(path)
    assert head.status_code == get.status_code == 200, (path, head.status_code)
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]
    assert head.headers["content-length"] == get.headers["content-length"]


def test_head_of_a_missing_page_is_a_404_without_a_body(client):
    r = client.head("/evil/nope/1")
    assert r.status_code == 404 and r.content == b""


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/", {"GET", "HEAD"}),
        ("DELETE", f"{SAE_URL}/0", {"GET", "HEAD"}),
        ("POST", "/-/health", {"GET", "HEAD"}),
        ("PUT", "/api/steer", {"POST"}),
        ("DELETE", "/api/steer/share", {"POST"}),
        ("HEAD", "/api/steer", {"POST"}),  # a POST-only path is not a page /{model_id}/{sae_id} that is missing
        ("GET", "/api/steer", {"POST"}),
        ("HEAD", "/api/attribute", {"POST"}),
        ("HEAD", "/v1/chat/completions", {"POST"}),
        ("GET", "/api/jobs/abc/cancel", {"POST"}),
    ],
)
def test_405_says_what_is_allowed(client, method, path, allowed):
    r = client.request(method, path)
    assert r.status_code == 405, (method, path, r.status_code)
    assert {m.strip() for m in r.headers["allow"].split(",")} == allowed


def test_the_schema_types_what_the_server_parses(client):
    schema = client.get("/-/openapi.json").json()
    params = {p["name"]: p["schema"] for p in schema["paths"]["/{model_id}/{sae_id}"]["get"]["parameters"]}
    for name in ("dmin", "dmax"):
        numbers = [s for s in params[name]["anyOf"] if s.get("type") == "number"]
        assert numbers == [{"type": "number", "minimum": 0, "maximum": 1}], params[name]
    feature_path = next(p for p in schema["paths"] if p.startswith("/{model_id}/{sae_id}/{") and "json" not in p)
    params = {p["name"]: p["schema"] for p in schema["paths"][feature_path]["get"]["parameters"]}
    assert params["feature"]["type"] == "integer" and params["feature"]["minimum"] == 0
    spec = schema["components"]["schemas"]["SteerSpec"]
    ways = spec["anyOf"]
    assert {"prompt"} in [set(w["required"]) for w in ways] and {"messages"} in [set(w["required"]) for w in ways]
    by_prompt = next(w for w in ways if w["required"] == ["prompt"])
    assert by_prompt["properties"]["prompt"]["minLength"] == 1
    by_messages = next(w for w in ways if w["required"] == ["messages"])
    assert by_messages["properties"]["messages"]["minItems"] == 1


def test_the_schema_lists_each_pages_json_twin(client):
    """Every page answers at its path + `.json`; the schema lists each twin as a path of its own that gives JSON
    (routers included into the app are walked too), the home page's at `/.json`."""
    paths = client.get("/-/openapi.json").json()["paths"]
    pages = ["/", "/search", "/inspect", "/steer", "/{model_id}/{sae_id}", "/{model_id}/{sae_id}/{feature}"]
    for page in pages:
        twin = paths.get(page + ".json")
        assert twin is not None, (page, sorted(paths))
        assert "application/json" in twin["get"]["responses"]["200"]["content"], page
    assert ".json" not in paths and "/api/steer.json" not in paths
    assert client.get("/.json").status_code == 200


def test_blank_and_numeric_density_bounds(client):
    assert client.get(f"{SAE_URL}?dmin=&dmax=").status_code == 200  # what an HTML form sends
    assert client.get(f"{SAE_URL}.json?dmin=0.02").json()["features"]["total"] == 1
    for bad in ("nan", "inf", "abc", "2"):
        r = client.get(f"{SAE_URL}.json?dmin={bad}")
        assert r.status_code == 422 and "dmin" in r.json()["error"], (bad, r.text)


# 12. one URL per feature


@pytest.mark.parametrize("segment", ["+1", "%201", "1%20", "0_1", "\u0661", "1.0", "-0", "1e0", "%EF%BC%91"])
def test_lenient_spellings_of_a_feature_are_not_pages(client, segment):
    for suffix in ("", ".json"):
        r = client.get(f"{SAE_URL}/{segment}{suffix}", follow_redirects=False)
        assert r.status_code == 404, (segment, suffix, r.status_code)


def test_leading_zeros_redirect_to_the_one_url(client):
    r = client.get(f"{SAE_URL}/001?embed=1", follow_redirects=False)
    assert r.status_code == 301 and r.headers["location"] == f"{SAE_URL}/1?embed=1"
    r = client.get(f"{SAE_URL}/01.json", follow_redirects=False)
    assert r.status_code == 301 and r.headers["location"] == f"{SAE_URL}/1.json"
    assert client.get(f"{SAE_URL}/1").status_code == 200 and client.get(f"{SAE_URL}/0").status_code == 200
