"""The steering API, worker and shared runs, on the tiny default store (TestClient)."""

import threading

import pytest

from qscope.steer.engine import Row
from qscope.steer.worker import SteerJob, SteerWorker
from tests.helpers.apps import app_client, app_settings

SAE = "SAE-Res-mini-qwen-W512-L0_16__layer1"


@pytest.fixture(scope="module")
def client(tiny_db, tmp_path_factory, one_torch_thread):
    settings = app_settings(
        tmp_path_factory.mktemp("app"),
        steer_max_new_tokens=16,
        steer_max_features=2,
        steer_max_strength=50,
        rate_steer_per_min=0,  # rates: tests/unit/web/test_security.py
    )
    with app_client([tiny_db], settings) as c:
        yield c


def spec(**kw):
    return {
        "prompt": "The cat sat on the",
        "features": [{"sae_id": SAE, "feature": 40, "mode": "add", "strength": 4.0}],
        "temperature": 0.8,
        "seed": 5,
        "max_new_tokens": 8,
        **kw,
    }


def test_api_steer_returns_both_completions(client):
    r = client.post("/api/steer", json=spec())
    assert r.status_code == 200, r.text
    body = r.json()
    for name in ("default", "steered"):
        assert len(body[name]["tokens"]) == 8
        assert body[name]["text"] == "".join(t["text"] for t in body[name]["tokens"])
        assert all(0 < t["prob"] <= 1 for t in body[name]["tokens"])
    zero = client.post("/api/steer", json=spec(features=[{"sae_id": SAE, "feature": 40, "strength": 0}])).json()
    assert zero["default"]["text"] == zero["steered"]["text"] == body["default"]["text"]


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"max_new_tokens": 17}, "at most 16"),
        ({"features": [{"sae_id": SAE, "feature": f} for f in range(3)]}, "3 features given; at most 2"),
        ({"features": [{"sae_id": SAE, "feature": 1, "strength": 51}]}, "outside"),
        ({"features": [{"sae_id": "nope", "feature": 1}]}, "no SAE"),
        ({"prompt": ""}, "empty"),
        ({"temperature": -1}, "temperature"),
    ],
)
def test_limits_give_422_with_a_message(client, change, says):
    r = client.post("/api/steer", json=spec(**change))
    assert r.status_code == 422
    assert says in r.json()["error"]


def test_full_queue_gives_503_with_retry_after(client):
    steering = client.app.state.steering
    real = steering.worker
    idle = SteerWorker(queue_size=1)
    idle.start = lambda: None  # no thread: what is queued stays queued
    idle.waiting.add("another client", object())
    steering.worker = idle
    try:
        r = client.post("/api/steer", json=spec())
    finally:
        steering.worker = real
    assert r.status_code == 503 and r.headers["Retry-After"] == "2"
    assert "full" in r.json()["error"]


def test_stream_sends_tokens_then_done(client):
    with client.stream("POST", "/api/steer/stream", json=spec()) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        text = "".join(r.iter_text())
    assert text.count("event: token") == 16 and text.rstrip().splitlines()[-2] == "event: done"


def test_shared_run_reloads_with_the_same_spec_and_outputs(client):
    first = client.post("/api/steer", json=spec()).json()
    r = client.post("/api/steer/share", json={"run": first["run"]})
    assert r.status_code == 200
    saved = r.json()
    again = client.get(saved["url"] + ".json").json()
    assert again["spec"] == saved["spec"] and again["spec"]["features"][0]["feature"] == 40
    assert again["result"]["steered"] == first["steered"] and again["result"]["default"] == first["default"]
    page = client.get(saved["url"])
    assert page.status_code == 200 and "Run again" in page.text
    assert client.get("/steer/nope").status_code == 404
    assert client.post("/api/steer/share", json={"run": "nope"}).status_code == 404


def test_steer_page_prefills_the_feature(client):
    r = client.get(f"/steer?sae_id={SAE}&feature=40")
    assert r.status_code == 200 and '"feature": 40' in r.text
    assert "/api/steer" in client.get("/-/openapi.json").text


def test_worker_coalesces_queued_jobs_and_cancels_rows(client):
    live = client.app.state.live
    lm, _ = live.get(next(iter(live.models))).load()
    p = lm.tokenizer("The cat", add_special_tokens=False)["input_ids"]
    done: dict[int, object] = {}

    def job(i, cancel_after=None):
        cancel = threading.Event()

        def emit(kind, data):
            if kind == "token" and cancel_after is not None and data["i"] + 1 >= cancel_after:
                cancel.set()  # as a disconnected client does
            if kind == "done":
                done[i] = data

        rows = [Row(p, max_new_tokens=6, cancel=cancel), Row(p, max_new_tokens=6, cancel=cancel)]
        return SteerJob(lm.model, lm.tokenizer, rows, emit, cancel=cancel)

    worker = SteerWorker(queue_size=4)
    for j in (job(0), job(1, cancel_after=2), job(2)):
        worker.submit(j, start=False)
    batch = worker.take_batch()
    assert len(batch) == 3
    worker.run_batch(batch)
    assert worker.batches == 1
    assert len(done[0].steered.tokens) == 6 and len(done[2].default.tokens) == 6
    assert done[1].default.stopped == "cancelled" and len(done[1].default.tokens) == 2
