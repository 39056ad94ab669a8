"""Per-client rate limits declared on the routes (qscope.web.rates): every route that changes something or runs
the model declares one, each in the bucket it shares with its kin, and routes of one bucket really spend from it.
On the small hostile store (no model: live routes answer 503 after their limit has been taken)."""

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from qscope.web import create_app
from qscope.web.methods import all_routes
from qscope.web.rates import rate_limit_of
from qscope.web.security import UNSAFE_METHODS
from tests.helpers.apps import app_settings
from tests.helpers.stores import write_small_store

# (method, path) -> (bucket, the 429's "Too many <what>"): the buckets routes share, as before route declarations
STEER = ("steer", "steering requests")
INSPECT = ("inspect", "inspect runs")
MODEL_RUN = ("inspect", "model runs")
WRITE = ("write", "writes of notes and lists")
LIMITS = {
    ("POST", "/api/steer"): STEER,
    ("POST", "/api/steer/stream"): STEER,
    ("POST", "/api/steer-eval"): STEER,  # an evaluation counts as one steering request
    ("POST", "/api/recipes/{recipe_id}/run-again"): STEER,  # ... and so does evaluating a recipe again
    ("POST", "/api/steer/share"): ("share", "shares"),
    ("POST", "/v1/chat/completions"): ("openai", "completion requests"),
    ("POST", "/v1/completions"): ("openai", "completion requests"),
    ("GET", "/inspect"): INSPECT,  # with a text (`runs_inspect`)
    ("GET", "/attribute"): INSPECT,  # with a text or run
    ("POST", "/api/attribute"): INSPECT,
    ("GET", "/search"): ("inspect", "searches that run the model"),  # the "fires" kind (`runs_fires`)
    ("POST", "/api/discover"): MODEL_RUN,
    ("POST", "/api/fix"): MODEL_RUN,
    ("POST", "/api/footprints"): MODEL_RUN,
    ("POST", "/api/footprints/upload"): MODEL_RUN,
    ("POST", "/api/detectors"): MODEL_RUN,
    ("POST", "/api/detect"): MODEL_RUN,
    ("GET", "/api/steer-eval/suggest"): MODEL_RUN,  # runs the model on a built-in prompt set
    ("POST", "/-/notes"): WRITE,
    ("POST", "/api/notes"): WRITE,
    ("PATCH", "/api/notes/{note_id}"): WRITE,
    ("DELETE", "/api/notes/{note_id}"): WRITE,
    ("POST", "/-/lists"): WRITE,
    ("POST", "/-/lists/items"): WRITE,
    ("POST", "/api/lists"): WRITE,
    ("POST", "/api/lists/{list_id}/items"): WRITE,
    ("PATCH", "/api/lists/{list_id}"): WRITE,
    ("DELETE", "/api/lists/{list_id}"): WRITE,
}
# routes that change something and take from no bucket, and why
UNLIMITED = {
    ("POST", "/api/jobs/{job_id}/cancel"): "stops a job: runs nothing, writes nothing shared",
    ("POST", "/api/steer-eval/{job_id}/cancel"): "stops an evaluation: runs nothing, writes nothing shared",
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_small_store(tmp_path_factory.mktemp("rates") / "evil.duckdb")


def make_app(store, tmp_path_factory, **overrides):
    return create_app([store], app_settings(tmp_path_factory.mktemp("rates-app"), **overrides), warm_search=False)


def declared(app) -> dict[tuple[str, str], tuple[str, str]]:
    """(method, path) -> (bucket, what) of every route of the app that declares a limit."""
    out = {}
    for route in all_routes(app.routes):
        if isinstance(route, APIRoute) and (limit := rate_limit_of(route.dependant.dependencies)) is not None:
            out |= {(method, route.path_format): (limit.bucket, limit.what) for method in route.methods}
    return out


def test_every_route_that_changes_something_or_runs_the_model_declares_its_limit(store, tmp_path_factory):
    app = make_app(store, tmp_path_factory)
    routes = [r for r in all_routes(app.routes) if isinstance(r, APIRoute)]
    unsafe = {(m, r.path_format) for r in routes for m in r.methods if m in UNSAFE_METHODS}
    missing = unsafe - set(declared(app)) - set(UNLIMITED)
    assert not missing, f"routes that change something declare no rate limit (qscope.web.rates): {sorted(missing)}"
    assert declared(app) == LIMITS  # each in its bucket, with its words; the model-running GETs included
    assert set(UNLIMITED) <= unsafe  # the exemptions name routes that exist


def concrete(path: str) -> str:
    return path.replace("{recipe_id}", "r1").replace("{note_id}", "n1").replace("{list_id}", "l1")


def ask(client: TestClient, method: str, path: str):
    """A request that reaches the route (its body may well be refused after the limit was taken)."""
    params = {"text": "hi", "q": "hi", "kind": "fires"} if method == "GET" else None
    return client.request(method, concrete(path), params=params, json=None if method == "GET" else {})


@pytest.mark.parametrize("bucket", ["steer", "share", "openai", "inspect", "write"])
def test_routes_of_one_bucket_spend_from_it(store, tmp_path_factory, bucket):
    """One token a client: the first route of the bucket spends it, every other route of it is then refused with
    its own words and Retry-After; another bucket's routes are not."""
    rates = {
        f"rate_{b}_{k}": v
        for b in ("steer", "share", "openai", "inspect", "write")
        for k, v in (("per_min", 1), ("burst", 1))
    }
    with TestClient(make_app(store, tmp_path_factory, **rates)) as client:
        ours = [(key, what) for key, (b, what) in LIMITS.items() if b == bucket]
        first, *rest = ours
        assert ask(client, *first[0]).status_code != 429
        for (method, path), what in rest:
            r = ask(client, method, path)
            assert r.status_code == 429, (method, path, r.status_code, r.text[:200])
            assert int(r.headers["retry-after"]) >= 1
            assert f"Too many {what} from your address; try again in" in r.text, (method, path)
        other = next(key for key, (b, _) in LIMITS.items() if b != bucket)
        assert ask(client, *other).status_code != 429
