"""Steering under abuse, on the tiny default store: non-finite numbers stay out of specs, results and saved runs;
sharing is de-duplicated and rate-limited; a short request batched with long ones completes at once; a row's
time limit counts from when it starts generating, and the queue wait has a limit of its own."""

import json
import threading
import time
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError
from sqlalchemy.orm import Session

from qscope.steer.edits import Edit
from qscope.steer.engine import Row
from qscope.steer.runs import SteerRun
from qscope.steer.spec import ChatMessage, FeatureSteer, SteerLimits, SteerSpec
from qscope.steer.worker import SteerJob, SteerWorker, make_job
from tests.helpers.apps import app_client, app_settings
from tests.helpers.timing import FakeClock, wait_until

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SAE = "SAE-Res-mini-qwen-W512-L0_16__layer1"


@pytest.fixture(scope="module")
def client(tiny_db, tmp_path_factory):
    settings = app_settings(
        tmp_path_factory.mktemp("app"), steer_max_new_tokens=64, rate_steer_per_min=0, rate_share_per_min=0
    )
    with app_client([tiny_db], settings, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def loaded(client):
    live = client.app.state.live
    return live.get(next(iter(live.models))).load()


def spec(**kw):
    features = [{"sae_id": SAE, "feature": 40, "mode": "add", "strength": 4.0}]
    return {"prompt": "The cat sat on the", "features": features, "temperature": 0, "max_new_tokens": 4, **kw}


# 1. non-finite numbers


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_spec_models_refuse_non_finite_numbers(value):
    with pytest.raises(ValidationError, match="finite"):
        FeatureSteer(sae_id=SAE, feature=1, strength=value)
    for name in ("temperature", "top_p", "frequency_penalty"):
        with pytest.raises(ValidationError):
            SteerSpec(prompt="x", **{name: value})


def test_spec_models_refuse_lone_surrogates():
    with pytest.raises(ValidationError, match="surrogate"):
        SteerSpec(prompt="a\ud800")
    with pytest.raises(ValidationError, match="surrogate"):
        ChatMessage(role="user", content="\udfff")
    assert SteerSpec(prompt="smile \U0001f600").prompt.endswith("\U0001f600")


def test_a_non_finite_probability_never_reaches_json(loaded):
    """An edit that drives the hidden state to NaN (no spec can ask for one now) still gives JSON-safe results."""
    lm, saes = loaded
    sae = saes[SAE]
    ids = lm.tokenizer("The cat", add_special_tokens=False)["input_ids"]
    got: dict[str, object] = {}
    edits = {sae.site: [Edit(sae, 40, "add", float("nan"))]}
    rows = [Row(ids, max_new_tokens=3), Row(ids, edits, max_new_tokens=3)]
    SteerWorker().run_batch([SteerJob(lm.model, lm.tokenizer, rows, lambda k, d: got.setdefault(k, d))])
    done = got["done"]
    json.dumps(done.model_dump(), allow_nan=False)  # raises on NaN or inf
    assert all(0 <= t.prob <= 1 for t in done.steered.tokens)


def test_a_saved_run_holding_nan_does_not_break_its_page(client):
    """A run shared before this fix was stored with null where NaN was (pydantic writes NaN as null)."""
    bad_spec = spec(features=[{"sae_id": SAE, "feature": 40, "mode": "add", "strength": None}])
    token = {"id": 0, "text": "", "prob": None}
    result = {"default": {"text": "", "tokens": [token], "stopped": "eos"}, "steered": {"text": "", "tokens": []}}
    runs = client.app.state.steering.runs
    with Session(runs.engine) as session, session.begin():
        row = SteerRun(
            id="oldnan", created_at=datetime.now(UTC), model_id="", spec=json.dumps(bad_spec), result=json.dumps(result)
        )
        session.add(row)
    for path in ("/steer/oldnan", "/steer/oldnan.json"):
        r = client.get(path)
        assert r.status_code == 404, (path, r.status_code, r.text[:300])
        assert "cannot be shown" in r.text and "strength" in r.text


# 3. sharing


def test_sharing_a_run_twice_gives_one_link_and_one_row(client):
    first = client.post("/api/steer", json=spec()).json()
    links = {client.post("/api/steer/share", json={"run": first["run"]}).json()["url"] for _ in range(20)}
    assert len(links) == 1
    again = client.post("/api/steer", json=spec()).json()  # the same greedy run again: the same content
    assert again["run"] != first["run"]
    assert client.post("/api/steer/share", json={"run": again["run"]}).json()["url"] in links
    with Session(client.app.state.steering.runs.engine) as session:
        assert session.query(SteerRun).filter(SteerRun.id != "oldnan").count() == 1
    assert client.get(links.pop()).status_code == 200


def test_sharing_is_rate_limited(tiny_db, tmp_path_factory):
    settings = app_settings(tmp_path_factory.mktemp("share"), rate_share_per_min=6, rate_share_burst=3)
    with app_client([tiny_db], settings) as c:
        codes = [c.post("/api/steer/share", json={"run": f"nope{i}"}).status_code for i in range(5)]
        assert codes == [404, 404, 404, 429, 429]
        r = c.post("/api/steer/share", json={"run": "nope"})
        assert int(r.headers["retry-after"]) >= 1 and "Too many" in r.json()["error"]
        schema = c.get("/-/openapi.json").json()
        assert "429" in schema["paths"]["/api/steer/share"]["post"]["responses"]


# 7. head-of-line blocking, deadlines and the queue wait


def _job(lm, n_tokens: int, log: list, name: str, timeout_s: float = 60.0) -> SteerJob:
    limits = SteerLimits(max_new_tokens=512, timeout_s=timeout_s)

    def emit(kind, data):
        log.append((name, kind, time.monotonic()))

    s = SteerSpec(prompt="The cat sat", temperature=0, max_new_tokens=n_tokens)
    return make_job(s, lm.model, lm.tokenizer, {}, limits, emit)


def test_a_short_request_completes_before_the_long_ones_in_its_batch(loaded):
    lm, _ = loaded
    log: list = []
    jobs = [_job(lm, 200, log, "long1"), _job(lm, 2, log, "short"), _job(lm, 200, log, "long2")]
    SteerWorker().run_batch(jobs)
    short_done = next(i for i, (name, kind, _) in enumerate(log) if name == "short" and kind == "done")
    long_tokens_before = sum(1 for name, kind, _ in log[:short_done] if name == "long1" and kind == "token")
    assert long_tokens_before <= 2 * 3, long_tokens_before  # two rows, at most a step past the short one's end
    assert [kind for name, kind, _ in log if name == "long1"].count("token") == 400  # no end-of-text this early


def test_the_deadline_counts_from_generation_not_from_the_queue(loaded):
    lm, _ = loaded
    log: list = []
    got: dict = {}
    clock = FakeClock(time.monotonic())  # from the real time: a limit stamped on the real clock would pass too
    job = _job(lm, 6, log, "waited", timeout_s=0.5)
    job.emit = lambda kind, data: got.setdefault(kind, data)
    clock.advance(0.7)  # longer than its time limit, spent waiting before generation
    SteerWorker(clock=clock).run_batch([job])
    assert got["done"].default.stopped == "length" and len(got["done"].default.tokens) == 6


def test_the_queue_wait_has_its_own_limit(loaded):
    lm, _ = loaded
    log: list = []
    clock = FakeClock()
    worker = SteerWorker(queue_size=4, max_wait_s=0.3, clock=clock)
    started = threading.Event()
    release = threading.Event()
    blocker = _job(lm, 2, log, "blocker")
    blocker.emit = lambda kind, data: (started.set(), release.wait(10)) if kind == "token" else None
    worker.submit(blocker)
    assert started.wait(30)
    waiting = _job(lm, 2, log, "waiting")
    worker.submit(waiting)
    clock.advance(0.5)
    release.set()
    wait_until(lambda: any(name == "waiting" and kind in ("done", "error") for name, kind, _ in log))
    kinds = [kind for name, kind, _ in log if name == "waiting"]
    assert kinds == ["error"], kinds


def test_queue_wait_past_its_limit_is_a_503_with_retry_after(client):
    steering = client.app.state.steering
    real = steering.worker
    clock = FakeClock()
    stalled = SteerWorker(queue_size=4, max_wait_s=0.2, clock=clock)
    start = stalled.start
    stalled.start = lambda: None  # no thread yet: the request waits in the queue
    steering.worker = stalled
    answer: dict = {}
    caller = threading.Thread(target=lambda: answer.setdefault("r", client.post("/api/steer", json=spec())))
    try:
        caller.start()
        wait_until(lambda: stalled.queued() > 0)
        clock.advance(0.4)
        start()
        caller.join(30)
    finally:
        steering.worker = real
    r = answer["r"]
    assert r.status_code == 503 and r.headers["retry-after"], r.text
    assert "waited" in r.json()["error"] and "queue" in r.json()["error"]


# round three: a 404 echoes at most a short prefix of the id it was given


def test_a_404_echoes_at_most_a_prefix_of_a_long_id(client):
    long_id = "x" * 60_000
    r = client.post("/api/steer/share", json={"run": long_id})
    assert r.status_code == 404, r.status_code
    error = r.json()["error"]
    assert "x" * 64 + "..." in error and "x" * 65 not in error and len(r.content) < 1_000, len(r.content)
    assert error.startswith("No recent run") and error.endswith("run it again, then share.")  # the rest is intact
    page = client.get("/steer/" + "y" * 7_000)  # a long id in the path (the URL limit is 8,000)
    assert page.status_code == 404 and "y" * 64 + "..." in page.text and "y" * 65 not in page.text
    nothing = client.get("/-/" + "z" * 7_000)
    assert nothing.status_code == 404 and "z" * 65 not in nothing.text
