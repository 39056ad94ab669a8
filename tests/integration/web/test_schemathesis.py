"""Schemathesis against the app's own OpenAPI schema (/-/openapi.json), in a bounded run: for every operation,
generated requests must get no 5xx and a response whose status, content type, headers and JSON body match what
the schema documents.

Two passes: the schema as served (random ids: mostly 404s and 422s), and the same schema with only the model,
SAE and feature ids narrowed to what the tiny store holds, so that pages render and steering really generates
while every other parameter is generated from the full schema (any strength, empty prompts, chat messages).
Schema-valid requests the app rejects on its own grounds (an empty prompt, an unknown feature) are allowed: the
check is that answers are honest, not that every input is accepted.

Hypothesis generates finite numbers and text without lone surrogates, which JSON can still carry (`NaN`,
`1e999`, `"\ud800"`); a third pass walks the schema and sends exactly those to every number and string a
request can carry, in a body or a query, with odd but valid Unicode besides: each gets a 422 or is handled.
"""

import copy
import json
from collections import Counter

import pytest
from fastapi.testclient import TestClient

from qscope.config import Settings
from qscope.web import create_app

schemathesis = pytest.importorskip("schemathesis", reason="needs schemathesis (pip install -e .[dev])")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis import checks  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]
EXAMPLES = 12  # per operation and pass: about 400 requests in all


@pytest.fixture
def app(tiny_db, tmp_path_factory):
    """A fresh app per test: schemathesis runs its lifespan, whose end closes the stores."""
    tmp = tmp_path_factory.mktemp("schemathesis")
    s = Settings(
        device="cpu",
        cache_dir=tmp / "cache",
        app_db_url=f"sqlite:///{tmp}/app.db",
        rate_steer_per_min=0,
        rate_inspect_per_min=0,
        rate_openai_per_min=0,
        rate_share_per_min=0,
        rate_write_per_min=0,
        steer_max_new_tokens=32,
        steer_timeout_s=20,
    )
    return create_app([tiny_db], s, warm_search=False)


def pinned(app) -> dict:
    """The app's schema with model_id, sae_id and feature narrowed to ones the store holds."""
    raw = copy.deepcopy(app.openapi())
    model_ids = [m.model_id for m in app.state.catalog]
    sae_ids = [s.sae.sae_id for m in app.state.catalog for s in m.saes]
    d_sae = min(s.sae.d_sae for m in app.state.catalog for s in m.saes)
    narrow = {
        "model_id": {"type": "string", "enum": model_ids},
        "sae_id": {"type": "string", "enum": sae_ids},
        "feature_seg": {"type": "string", "pattern": r"^[0-9]{1,3}$"},
        "feature": {"type": "integer", "minimum": 0, "maximum": d_sae - 1},
    }
    for ops in raw["paths"].values():
        for op in ops.values():
            for param in op.get("parameters", []):
                param["schema"] = narrow.get(param["name"], param["schema"])
    schemas = raw["components"]["schemas"]
    schemas["FeatureSteer"]["properties"].update(sae_id=narrow["sae_id"], feature=narrow["feature"])
    schemas["SteerSpec"]["properties"]["model_id"] = narrow["model_id"]
    return raw


def run_operation(op, app, seen: Counter) -> None:
    """EXAMPLES generated cases of one operation, each sent to `app` and checked; statuses go to `seen`."""
    name = f"{op.method.upper()} {op.path}"

    @given(case=op.as_strategy())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,  # the same cases on every run: a failure found here is found again in CI, and fixed
        suppress_health_check=list(HealthCheck),
    )
    def check(case):
        response = case.call_and_validate(checks=CHECKS, app=app)
        seen[name, response.status_code] += 1
        if b"event: error" in response.content:  # a stream is 200 before generation starts; count its failures
            seen[name, "error event"] += 1

    check()


def run_all(schema, app) -> tuple[list[str], Counter]:
    """Every operation of `schema`; (failures, Counter of (operation, status))."""
    failures, seen = [], Counter()
    for result in schema.get_all_operations():
        op = result.ok()
        try:
            run_operation(op, app, seen)
        except BaseException as e:  # noqa: PERF203 (schemathesis's FailureGroup is a BaseExceptionGroup)
            if isinstance(e, KeyboardInterrupt):
                raise
            failures.append(f"{op.method.upper()} {op.path}: {str(e)[:2000]}")
    return failures, seen


def test_schema_as_served(app):
    failures, seen = run_all(schemathesis.openapi.from_asgi("/-/openapi.json", app), app)
    assert not failures, "\n\n".join(failures)
    # random ids reach the handlers and get their 404 (the SAE page: any string is a well-formed id there, while
    # a random feature segment is mostly not a number, so whether one of its 12 cases 404s depends on the seed)
    assert seen["GET /{model_id}/{sae_id}", 404] > 0, seen


def test_schema_pinned_to_the_store(app):
    failures, seen = run_all(schemathesis.openapi.from_dict(pinned(app)), app)
    assert not failures, "\n\n".join(failures)
    for name in (
        "GET /{model_id}/{sae_id}/{feature}",
        "GET /{model_id}/{sae_id}",
        "POST /api/steer",
        "POST /api/steer/stream",
        "GET /inspect.json",
    ):
        assert seen[name, 200] > 0, (name, sorted(seen.items(), key=str))  # the pages rendered, steering generated
    assert seen["POST /api/steer/stream", "error event"] == 0, sorted(seen.items())


ODD_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e999"]  # JSON text python's parser takes as non-finite floats
ODD_STRINGS = ['"\\ud800"', '"ok \\udfff"']  # JSON text of strings with a lone UTF-16 surrogate
ODD_QUERY_NUMBERS = ["NaN", "inf", "-Infinity", "1e999"]
# in a URL: a UTF-8-encoded surrogate (not UTF-8), NUL, bidi override + emoji + combining mark, BOM, the last code
# point, a non-breaking space and a digit of another script
ODD_QUERY_STRINGS = ["%ED%A0%80", "%00", "%E2%80%AE%F0%9F%98%80%CC%81", "%EF%BB%BF", "%F4%8F%BF%BF", "%C2%A0", "%D9%A5"]


def _resolve(schema: dict, components: dict) -> dict:
    while "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def leaves(schema: dict, components: dict, path: tuple = ()) -> set[tuple[tuple, str]]:
    """(path, 'number' | 'string') of every number and string a value of `schema` can hold; a path is keys and
    list indexes (0) from the top."""
    schema = _resolve(schema, components)
    found: set[tuple[tuple, str]] = set()
    for option in schema.get("anyOf", []) + schema.get("oneOf", []):
        found |= leaves(option, components, path)
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        for name, sub in schema.get("properties", {}).items():
            found |= leaves(sub, components, (*path, name))
    elif kind == "array" and isinstance(schema.get("items"), dict):
        found |= leaves(schema["items"], components, (*path, 0))
    elif kind in ("number", "integer"):
        found.add((path, "number"))
    elif kind == "string":
        found.add((path, "string"))
    return found


def body_with(path: tuple, raw: str) -> bytes:
    """A JSON body holding the JSON text `raw` at `path` (objects and one-item lists around it)."""
    text = raw
    for step in reversed(path):
        text = f"[{text}]" if isinstance(step, int) else f"{{{json.dumps(step)}: {text}}}"
    return text.encode()


def place(path: tuple) -> str:
    """A path as the 422 names it: `features[0].strength`."""
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else step)
    return out


def odd_requests(schema: dict, pins: dict) -> list[tuple[str, str, bytes | None, str | None]]:
    """(method, url, body, place) for every number and string of every operation: non-finite numbers and lone
    surrogates in JSON bodies (place: where the 422 must say the problem is), odd values in queries and paths
    (place None: any answer but a 5xx)."""
    components = schema["components"]["schemas"]
    out: list[tuple[str, str, bytes | None, str | None]] = []
    for template, ops in schema["paths"].items():
        for method, op in ops.items():
            params = op.get("parameters", [])
            path = template.format(**{p["name"]: pins.get(p["name"], "x") for p in params if p["in"] == "path"})
            for p in params:
                kinds = {kind for _, kind in leaves(p.get("schema", {}), components)}
                odd = (ODD_QUERY_NUMBERS if "number" in kinds else []) + (
                    ODD_QUERY_STRINGS if "string" in kinds else []
                )
                for value in odd:
                    if p["in"] == "query":
                        out.append((method.upper(), f"{path}?{p['name']}={value}", None, None))
                    elif p["in"] == "path":
                        out.append((method.upper(), template.format(**{**pins, p["name"]: value}), None, None))
            content = op.get("requestBody", {}).get("content", {}).get("application/json")
            for where, kind in sorted(leaves(content["schema"], components) if content else (), key=str):
                for raw in ODD_NUMBERS if kind == "number" else ODD_STRINGS:
                    out.append((method.upper(), path, body_with(where, raw), place(where)))
    return out


def _names_the_place(url: str, r, where: str) -> bool:
    """A refusal that names `where`: a 422 with our Error body, or on the OpenAI-compatible /v1 a 400 with
    OpenAI's."""
    if url.startswith("/v1/"):
        return r.status_code == 400 and where in r.json()["error"]["message"]
    return r.status_code == 422 and where in r.json()["error"]


def test_non_finite_numbers_and_odd_text_everywhere(app):
    """Every number and string of every operation, from the schema: no 5xx anywhere; in a JSON body, a 422 that
    names the place."""
    served = next(iter(app.state.catalog))
    pins = {"model_id": served.model_id, "sae_id": served.saes[0].sae.sae_id, "feature": "0", "run_id": "x"}
    requests = odd_requests(app.openapi(), pins)
    assert sum(1 for r in requests if r[3] is not None) > 40, requests  # the body fields were found
    failures = []
    with TestClient(app, raise_server_exceptions=False) as client:
        for method, url, body, where in requests:
            r = client.request(method, url, content=body, headers={"content-type": "application/json"})
            if r.status_code >= 500 or (where and not _names_the_place(url, r, where)):
                failures.append(f"{method} {url} {body!r}: {r.status_code} {r.text[:300]}")
    assert not failures, "\n".join(failures[:20])
