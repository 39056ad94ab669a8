"""The OpenAI-compatible API, driven by the official `openai` package against a real `qscope serve` process on the
tiny default: chat and text completions, whole and streamed, steering in the body, and the errors OpenAI clients
raise for limits, unknown models, a full queue and the rate limit."""

import threading
import time

import httpx
import pytest

from tests.helpers.server import serving
from tests.helpers.timing import wait_until

openai = pytest.importorskip("openai", reason="needs the openai package (pip install -e .[dev])")

pytestmark = pytest.mark.slow

SAE = "SAE-Res-mini-qwen-W512-L0_16__layer1"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a river."}]
SERVER_ENV = {
    "QSCOPE_STEER_MAX_NEW_TOKENS": "1500",
    "QSCOPE_STEER_QUEUE_SIZE": "2",
    "QSCOPE_STEER_MAX_FEATURES": "2",
    "QSCOPE_STEER_MAX_STRENGTH": "50",
    "QSCOPE_STEER_TIMEOUT_S": "60",
    "QSCOPE_OPENAI_MAX_PROMPT_TOKENS": "2000",
    "OMP_NUM_THREADS": "1",  # a small model on a shared CPU: one thread, not two that spin-wait
}


@pytest.fixture(scope="module")
def server(tiny_db, tmp_path_factory):
    app_db = tmp_path_factory.mktemp("appdb") / "app.db"
    with serving(tiny_db, tmp_path_factory, QSCOPE_APP_DB_URL=f"sqlite:///{app_db}", **SERVER_ENV) as base:
        yield base


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def model(client) -> str:
    models = client.models.list().data
    assert len(models) == 1 and models[0].object == "model" and models[0].owned_by == "qscope"
    assert client.models.retrieve(models[0].id).id == models[0].id
    return models[0].id


def steering(strength: float, feature: int = 40) -> dict:
    return {"steering": {"features": [{"sae_id": SAE, "feature": feature, "mode": "add", "strength": strength}]}}


DEAD = 37  # never fired in the tiny store's harvest: an add of it would change nothing


def test_chat_completion_whole_and_streamed_agree(client, model):
    kw = dict(model=model, messages=MESSAGES, max_tokens=12, temperature=0.8, seed=7)
    whole = client.chat.completions.create(**kw)
    assert whole.object == "chat.completion" and whole.model == model
    choice = whole.choices[0]
    assert choice.message.role == "assistant" and choice.finish_reason in ("stop", "length")
    assert whole.usage.completion_tokens <= 12 and whole.usage.prompt_tokens > 5
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens
    chunks = list(client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == choice.message.content
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == [choice.finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_text_completion_whole_streamed_n_and_echo(client, model):
    kw = dict(model=model, prompt="The cat sat on the", max_tokens=10, temperature=0.9, seed=3)
    whole = client.completions.create(**kw, n=3)
    assert whole.object == "text_completion" and [c.index for c in whole.choices] == [0, 1, 2]
    assert len({c.text for c in whole.choices}) > 1  # seeds 3, 4, 5: different samples
    streamed = list(client.completions.create(**kw, n=3, stream=True))
    for c in whole.choices:
        assert "".join(ch.choices[0].text for ch in streamed if ch.choices[0].index == c.index) == c.text
    single = client.completions.create(**kw)
    assert single.choices[0].text == whole.choices[0].text  # row 0 samples with the seed itself
    echoed = client.completions.create(**kw, echo=True)
    assert echoed.choices[0].text == "The cat sat on the" + single.choices[0].text


def test_stop_strings_cut_the_text(client, model):
    kw = dict(model=model, prompt="def add(x, y):\n", max_tokens=24, temperature=0)
    free = client.completions.create(**kw).choices[0].text
    stop = free.strip()[2:4]  # two characters the free text holds
    assert stop and stop in free
    cut = client.completions.create(**kw, stop=[stop, "never-there"]).choices[0]
    assert cut.text == free[: free.index(stop)] and cut.finish_reason == "stop"
    streamed = client.completions.create(**kw, stop=stop, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == cut.text


def test_steering_at_strength_zero_changes_nothing(client, model):
    kw = dict(model=model, messages=MESSAGES, max_tokens=16, temperature=0.8, seed=11)
    plain = client.chat.completions.create(**kw).choices[0].message.content
    zero = client.chat.completions.create(**kw, extra_body=steering(0.0)).choices[0].message.content
    strong = client.chat.completions.create(**kw, extra_body=steering(40.0)).choices[0].message.content
    assert zero == plain and strong != plain
    streamed = client.chat.completions.create(**kw, extra_body=steering(40.0), stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == strong


@pytest.mark.parametrize(
    ("change", "param", "says"),
    [
        ({"max_tokens": 1501}, None, "at most 1500"),
        ({"n": 9}, "n", "less than or equal to 8"),
        ({"extra_body": steering(51.0)}, None, "outside"),
        ({"extra_body": steering(4.0, DEAD)}, None, "never fired in the harvest"),  # as /api/steer: refused
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0.role", "Input should be"),
        ({"presence_penalty": 0.5}, "presence_penalty", "not supported"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
        ({"messages": [{"role": "user", "content": "the cat " * 1500}]}, None, "at most 2000 are run"),
        ({"max_tokens": "5"}, "max_tokens", "valid integer"),  # integers are strict: no text, float or bool
        ({"max_tokens": 2.0}, "max_tokens", "valid integer"),
        ({"max_tokens": True}, "max_tokens", "valid integer"),
        ({"temperature": "NaN"}, "temperature", "finite number"),  # not "<= 2"
    ],
)
def test_bad_fields_raise_bad_request(client, model, change, param, says):
    kw = dict(model=model, messages=MESSAGES, max_tokens=4) | change
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(**kw)
    assert err.value.status_code == 400 and says in err.value.message and err.value.param == param
    assert err.value.type == "invalid_request_error"


def test_a_prompt_past_the_context_raises_context_length_exceeded(client, model):
    """The tiny model's context is 1,024 tokens (max_position_embeddings): a 1,201-token prompt (under the 2,000-token
    prompt limit) is refused as OpenAI does, and so is a 601-token one asking for 500 more; /v1/models says the
    context, and with no max_tokens a prompt that fits runs to the context's end at most."""
    assert client.models.retrieve(model).model_extra["max_model_len"] == 1024
    for prompt, max_tokens in (("the cat " * 400, None), ("the cat " * 200, 500)):
        with pytest.raises(openai.BadRequestError) as err:
            client.completions.create(model=model, prompt=prompt, **({"max_tokens": max_tokens} if max_tokens else {}))
        assert err.value.code == "context_length_exceeded" and err.value.param == "prompt"
        assert "maximum context length is 1024 tokens" in err.value.message
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "the cat " * 400}])
    assert err.value.code == "context_length_exceeded" and err.value.param == "messages"
    fits = client.completions.create(model=model, prompt="the cat " * 340, max_tokens=2, temperature=0)
    assert fits.usage.prompt_tokens == 1021 and fits.usage.completion_tokens <= 2


def test_unknown_model_raises_not_found(client, model):
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-nope", messages=MESSAGES)
    assert err.value.code == "model_not_found" and model in err.value.message
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-nope")


def steer_waiting(base: str) -> int:
    """Requests waiting in the server's steering queue, as its /-/health tells."""
    return httpx.get(base + "/-/health", timeout=30).json()["steer_waiting"]


def test_full_queue_raises_a_retryable_error(server, client, model):
    """One long generation holds the worker, two requests fill the queue (size 2), the next is refused."""
    long = client.completions.create(
        model=model, prompt="The", max_tokens=1020, temperature=0, frequency_penalty=-2.0, stream=True
    )  # repeats itself: never ends early (1,020 tokens: as many as the tiny model's 1,024-token context holds)
    next(iter(long))  # generating: the worker is busy
    answers: list = []

    def queued():
        try:
            answers.append(client.completions.create(model=model, prompt="The", max_tokens=1).choices[0].finish_reason)
        except openai.APIStatusError as e:
            answers.append(e)

    threads = [threading.Thread(target=queued) for _ in range(2)]
    for t in threads:
        t.start()
    wait_until(lambda: steer_waiting(server) == 2)  # both queued behind the long one
    with pytest.raises(openai.InternalServerError) as err:
        client.completions.create(model=model, prompt="The", max_tokens=1)
    assert err.value.status_code == 503 and err.value.response.headers["retry-after"] == "2"
    assert "queue is full" in err.value.message
    long.close()  # the client goes away: the long rows stop, the queued ones run
    for t in threads:
        t.join(timeout=60)
    assert answers == ["length", "length"]


def test_rate_limit_raises_rate_limit_error(tiny_db, tmp_path_factory):
    env = {"QSCOPE_RATE_OPENAI_PER_MIN": "1", "QSCOPE_RATE_OPENAI_BURST": "1"}
    with serving(tiny_db, tmp_path_factory, **env) as base:
        c = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=120)
        model = c.models.list().data[0].id
        c.completions.create(model=model, prompt="The", max_tokens=2)
        with pytest.raises(openai.RateLimitError) as err:
            c.completions.create(model=model, prompt="The", max_tokens=2)
    assert err.value.status_code == 429 and int(err.value.response.headers["retry-after"]) > 0
    assert "Too many completion requests" in err.value.message and err.value.code == "rate_limit_exceeded"


def _hold_the_worker(c, model: str):
    """A streamed generation that repeats itself (never ends early): the worker is busy until it is closed."""
    long = c.completions.create(
        model=model, prompt="The", max_tokens=1020, temperature=0, frequency_penalty=-2.0, stream=True
    )
    next(iter(long))  # generating
    return long


def test_a_request_queued_past_the_wait_limit_gets_503_with_retry_after_at_the_limit(tiny_db, tmp_path_factory):
    env = {**SERVER_ENV, "QSCOPE_STEER_QUEUE_WAIT_S": "1"}
    with serving(tiny_db, tmp_path_factory, **env) as base:
        c = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=120)
        model = c.models.list().data[0].id
        long = _hold_the_worker(c, model)
        started = time.monotonic()
        with pytest.raises(openai.InternalServerError) as err:
            c.completions.create(model=model, prompt="The", max_tokens=1)
        waited = time.monotonic() - started
        long.close()
    assert err.value.status_code == 503 and err.value.response.headers["retry-after"] == "2"
    assert "waited" in err.value.message and "queue" in err.value.message
    assert err.value.body["type"] == "server_error" and err.value.code == "overloaded"  # OpenAI's error body
    assert waited < 10, waited  # answered when the limit passed, not when the long generation ended (60 s)


def test_one_client_flooding_leaves_room_and_turns_for_another(tiny_db, tmp_path_factory):
    """Client A holds the worker and sends as many requests as the queue holds; it gets its share (3), the rest
    429; client B (another address, via the trusted proxy header) is admitted and served before A's last ones."""
    env = {
        **SERVER_ENV,
        "QSCOPE_STEER_QUEUE_SIZE": "6",
        "QSCOPE_STEER_QUEUE_PER_CLIENT": "3",
        "QSCOPE_STEER_MAX_BATCH_ROWS": "1",  # one request per batch: the order they are served in shows
    }
    with serving(tiny_db, tmp_path_factory, **env) as base:

        def client(address: str):
            headers = {"X-Forwarded-For": address}
            return openai.OpenAI(
                base_url=base + "/v1", api_key="unused", max_retries=0, timeout=120, default_headers=headers
            )

        a, b = client("10.0.0.1"), client("10.0.0.2")
        model = a.models.list().data[0].id
        long = _hold_the_worker(a, model)
        finished: list[str] = []
        refused: list[int] = []

        def ask(c, name: str):
            try:
                c.completions.create(model=model, prompt="The", max_tokens=1)
                finished.append(name)
            except openai.APIStatusError as e:
                refused.append(e.status_code)

        flood = [threading.Thread(target=ask, args=(a, f"a{i}")) for i in range(6)]
        for t in flood:
            t.start()
        wait_until(lambda: len(refused) >= 3, 30, "A's share to be full")
        other = threading.Thread(target=ask, args=(b, "b"))
        other.start()
        wait_until(lambda: steer_waiting(base) == 4)  # B's request is queued behind A's three
        long.close()
        for t in [*flood, other]:
            t.join(60)
    assert refused == [429, 429, 429]
    assert "b" in finished and len(finished) == 4, finished
    assert finished.index("b") <= 1, finished  # served in turn, not after the whole flood


def test_an_unknown_long_model_name_is_echoed_short(client):
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="m" * 50_000, messages=MESSAGES)
    assert "m" * 64 + "..." in err.value.message and "m" * 65 not in err.value.message
