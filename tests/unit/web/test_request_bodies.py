"""JSON request bodies are checked before any route sees them (app/qscope/web/bodies.py, run by the Guard): a body that
is not UTF-8, not JSON, nested past reason, or holds a non-finite number (NaN, Infinity, 1e999) or a lone UTF-16
surrogate gets a 422 that says where, on every JSON route. No model is needed: the store's model is absent."""

import json

import pytest
from fastapi.testclient import TestClient

from qscope.config import Settings
from qscope.web import create_app
from qscope.web.bodies import body_problem
from tests.helpers.stores import SAE_ID, write_small_store

JSON = {"content-type": "application/json"}
ROUTES = ("/api/steer", "/api/steer/stream", "/api/steer/share")


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    store = write_small_store(tmp_path_factory.mktemp("bodies") / "evil.duckdb")
    settings = Settings(device="cpu", cache_dir=tmp_path_factory.mktemp("cache"), rate_steer_per_min=0)
    with TestClient(create_app([store], settings, warm_search=False), raise_server_exceptions=False) as c:
        yield c


def steer_body(strength: str = "1.0", prompt: str = '"hi"') -> bytes:
    feature = f'{{"sae_id": "{SAE_ID}", "feature": 0, "strength": {strength}}}'
    return f'{{"prompt": {prompt}, "features": [{feature}]}}'.encode()


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999", "-1e400"])
@pytest.mark.parametrize("path", ROUTES[:2])
def test_non_finite_numbers_are_refused(client, path, number):
    r = client.post(path, content=steer_body(strength=number), headers=JSON)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert "features[0].strength" in error and "finite" in error, error


@pytest.mark.parametrize("number", ['"NaN"', '"1.5"', '"inf"', "true"])
@pytest.mark.parametrize("path", ROUTES[:2])
def test_numbers_sent_as_text_or_booleans_are_refused(client, path, number):
    """JSON's NaN is caught before the route; pydantic's lax float took the string "NaN" (and true as 1.0)."""
    r = client.post(path, content=steer_body(strength=number), headers=JSON)
    assert r.status_code == 422, r.text
    assert "features.0.strength: Input should be a finite number" in r.json()["error"]


@pytest.mark.parametrize("text", [r'"\ud800"', r'"a\udfff b"', r'"\ud83d"', r'"x\ud83d\ud83d\ude00"'])
@pytest.mark.parametrize("path", ROUTES[:2])
def test_lone_surrogates_are_refused(client, path, text):
    r = client.post(path, content=steer_body(prompt=text), headers=JSON)
    assert r.status_code == 422, r.text
    assert "prompt" in r.json()["error"] and "surrogate" in r.json()["error"]
    messages = f'{{"messages": [{{"role": "user", "content": {text}}}]}}'.encode()
    r = client.post(path, content=messages, headers=JSON)
    assert r.status_code == 422 and "messages[0].content" in r.json()["error"], r.text


def test_a_surrogate_pair_is_text(client):
    r = client.post("/api/steer", content=steer_body(prompt=r'"smile \ud83d\ude00"'), headers=JSON)
    assert r.status_code == 503, r.text  # passed the checks; the model is absent here
    r = client.post("/api/steer", content=steer_body(prompt=r'"\\ud800 is six characters"'), headers=JSON)
    assert r.status_code == 503, r.text  # an escaped backslash: the text holds a backslash, no surrogate


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"\xff\xfe{", "UTF-8"),
        (b'{"prompt": "\xff"}', "UTF-8"),
        (b"{bad", "not JSON"),
        (b"[" * 5000 + b"]" * 5000, "nested"),
    ],
)
@pytest.mark.parametrize("path", ROUTES)
def test_unparseable_bodies_get_a_documented_422(client, path, body, says):
    r = client.post(path, content=body, headers=JSON)
    assert r.status_code == 422, (r.status_code, r.text[:300])
    assert says in r.json()["error"]
    documented = client.get("/-/openapi.json").json()["paths"][path]["post"]["responses"]
    assert "422" in documented and "400" not in documented


def test_other_content_types_still_reach_the_route(client):
    r = client.post("/api/steer", content=b"prompt=hi", headers={"content-type": "text/plain"})
    assert r.status_code == 422  # FastAPI's own: a JSON object was expected


def test_body_problem_names_the_place():
    assert body_problem(b'{"a": [1, {"b": NaN}]}') == "Bad parameter: a[1].b is NaN; give a finite number."
    assert "a[0] holds a lone UTF-16 surrogate" in body_problem(json.dumps({"a": ["\ud800"]}).encode())
    assert "key 'x\\udc00'" in body_problem(b'{"x\\udc00": 1}')
    assert body_problem(b'{"a": 1e308, "b": "\\ud83d\\ude00", "c": "\\\\ud800"}') is None
