"""The explainer's client against endpoints that misbehave on purpose (stdlib HTTP servers on loopback): down,
slow, rate-limited, answering garbage or refusing; retries with backoff, and one clear message when it gives up.
A well-behaved endpoint is qscope serve itself (tests/e2e/test_explain.py)."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from qscope.explain.client import ExplainerError, OpenAIChat
from tests.helpers.server import free_port

OK = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": "cats"}}]}).encode()


def endpoint(answers: list):
    """A server answering each POST with the next of `answers`: (status, headers, body, delay_s)."""
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            seen.append(
                (
                    self.path,
                    json.loads(self.rfile.read(int(self.headers["Content-Length"]))),
                    self.headers.get("Authorization"),
                )
            )
            status, headers, body, delay = answers.pop(0) if answers else (200, {}, OK, 0)
            time.sleep(delay)
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/v1", seen


@pytest.fixture
def sleeps():
    return []


def chat(url, sleeps, **kw):
    return OpenAIChat(
        url, "m", kw.pop("key", None), retries=kw.pop("retries", 3), backoff_s=0.01, sleep=sleeps.append, **kw
    )


def test_rate_limited_then_answers_honouring_retry_after(sleeps):
    server, url, seen = endpoint(
        [(429, {"Retry-After": "2"}, b'{"error": {"message": "slow down"}}', 0), (503, {}, b"busy", 0)]
    )
    try:
        text = chat(url, sleeps, key="sk-x").chat([{"role": "user", "content": "hi"}], max_tokens=7, seed=3)
    finally:
        server.shutdown()
    assert text == "cats" and len(seen) == 3
    assert 2.0 <= sleeps[0] <= 2.5 and 0.01 <= sleeps[1] <= 0.03  # the server's Retry-After, then the backoff
    path, body, auth = seen[-1]
    assert path == "/v1/chat/completions" and auth == "Bearer sk-x"
    assert body == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 7,
        "temperature": 0.0,
        "seed": 3,
    }


def test_garbage_is_retried_then_reported(sleeps):
    garbage = [(200, {}, b"<html>oops</html>", 0)] * 4
    server, url, seen = endpoint(list(garbage))
    try:
        with pytest.raises(ExplainerError) as err:
            chat(url, sleeps).chat([{"role": "user", "content": "hi"}])
    finally:
        server.shutdown()
    assert len(seen) == 4 and err.value.retryable
    assert "not a chat completion: '<html>oops</html>'" in str(err.value) and "tried 4 times" in str(err.value)
    assert sleeps == sorted(sleeps) and len(sleeps) == 3  # exponential backoff between the tries


def test_a_refused_request_is_not_retried(sleeps):
    body = json.dumps({"error": {"message": "max_tokens is 9999; at most 256", "type": "invalid_request_error"}})
    server, url, seen = endpoint([(400, {}, body.encode(), 0)])
    try:
        with pytest.raises(ExplainerError) as err:
            chat(url, sleeps).chat([{"role": "user", "content": "hi"}])
    finally:
        server.shutdown()
    assert len(seen) == 1 and sleeps == [] and not err.value.retryable
    assert "refused the request (400): max_tokens is 9999; at most 256" in str(err.value)


def test_slow_and_down_endpoints(sleeps):
    server, url, seen = endpoint([(200, {}, OK, 1.0)])
    try:
        assert chat(url, sleeps, timeout_s=0.3, retries=1).chat([{"role": "user", "content": "hi"}]) == "cats"
    finally:
        server.shutdown()
    assert len(seen) == 2 and len(sleeps) == 1  # the slow answer timed out, the retry was answered
    down = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(ExplainerError) as err:
        chat(down, sleeps, retries=2).chat([{"role": "user", "content": "hi"}])
    assert "did not answer" in str(err.value) and "tried 3 times" in str(err.value) and err.value.retryable
