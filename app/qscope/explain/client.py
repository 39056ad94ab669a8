"""The explainer's client: chat completions from any OpenAI-compatible endpoint (qscope serve's own /v1, vLLM,
llama.cpp, Ollama, OpenAI) through the `openai` package's client, with retries.

`endpoint` is the API's base URL, as OpenAI clients take it (``http://127.0.0.1:8000/v1``); requests go to
``{endpoint}/chat/completions`` with the API key, when there is one, as a bearer token. Safe to call from many
threads at once (the openai client is), which is how many requests are kept in flight.

The retries are this module's rather than the client's own (it is made with max_retries=0): an answer that is not
a chat completion is retried too, and the waits go through an injectable `sleep`.

What is retried, with exponential backoff and jitter (or the server's Retry-After): a connection that fails or
times out (the endpoint down or slow), 408, 409, 429 and 5xx answers, and answers that are not a chat completion
(garbage). Other 4xx answers mean the request itself is wrong and are raised at once with the server's message.
Every failure ends as an ExplainerError whose message says what happened, to be reported per feature.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable

import openai

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class ExplainerError(RuntimeError):
    """A request that failed for good; `retryable` says whether trying later may help (endpoint down, busy)."""

    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class ContextTooLong(ExplainerError):
    """The prompt does not fit the explainer's context (OpenAI's `context_length_exceeded`, or the same said in
    words by a server without the code): the caller may cut the prompt and ask again."""


class _Again(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason, self.retry_after = reason, retry_after


class OpenAIChat:
    """Chat completions from an OpenAI-compatible endpoint (see the module docstring)."""

    def __init__(
        self,
        endpoint: str,
        model: str,
        api_key: str | None = None,
        *,
        timeout_s: float = 120.0,
        retries: int = 4,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = endpoint.rstrip("/") + "/chat/completions"
        self.model, self.api_key, self.timeout_s = model, api_key, timeout_s
        # no key: no Authorization header at all (the client needs some key, and would read OPENAI_API_KEY)
        self.headers = {} if api_key else {"Authorization": openai.omit}
        self.client = openai.OpenAI(
            base_url=endpoint.rstrip("/"), api_key=api_key or "unused", max_retries=0, timeout=timeout_s
        )
        self.retries, self.backoff_s, self.max_backoff_s, self.sleep = retries, backoff_s, max_backoff_s, sleep
        self.name = model

    def chat(self, messages: list[dict], *, max_tokens: int = 64, temperature: float = 0.0, seed: int = 0) -> str:
        """The text of the first choice; ExplainerError once the retries are spent or for a request refused."""
        body = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "seed": seed,
        }
        last = ""
        for attempt in range(self.retries + 1):
            try:
                return self._once(body)
            except _Again as e:
                last = e.reason
                if attempt == self.retries:
                    break
                wait = e.retry_after if e.retry_after is not None else self.backoff_s * 2**attempt
                self.sleep(min(self.max_backoff_s, wait) * (1 + 0.25 * random.random()))
        raise ExplainerError(f"{last} (tried {self.retries + 1} times)", retryable=True)

    def _once(self, body: dict) -> str:
        try:
            create = self.client.chat.completions.with_raw_response.create
            raw = create(**body, extra_headers=self.headers).http_response.content
        except openai.APIStatusError as e:
            raw = e.response.content
            message = _error_message(raw)
            if e.status_code == 400 and _too_long(raw, message):
                raise ContextTooLong(f"{self.url} refused the prompt as too long: {message}") from e
            if e.status_code in RETRY_STATUS:
                raise _Again(
                    f"{self.url} answered {e.status_code}: {message}",
                    _retry_after(e.response.headers.get("Retry-After")),
                ) from e
            hint = ""
            if _code(raw) == "model_not_found":  # the endpoint is right: the model id is not one it serves
                hint = f" (--explainer-model {body['model']!r} is not served there; {self.url.rsplit('/', 2)[0]}/models"
                hint += " lists the ids it serves)"
            elif e.status_code in (404, 405):
                hint = " (is --endpoint the API's base URL, ending in /v1?)"
            raise ExplainerError(f"{self.url} refused the request ({e.status_code}): {message}{hint}") from e
        except openai.APIConnectionError as e:  # the endpoint down, or slower than timeout_s
            raise _Again(f"{self.url} did not answer: {e.__cause__ or e}") from e
        return _content(raw, self.url)


def _content(raw: bytes, url: str) -> str:
    try:
        return json.loads(raw)["choices"][0]["message"]["content"] or ""
    except (ValueError, KeyError, IndexError, TypeError) as e:
        shown = raw[:120].decode("utf-8", "replace")
        raise _Again(f"{url} answered something that is not a chat completion: {shown!r}") from e


def _code(raw: bytes) -> str | None:
    """The `code` of an OpenAI error body, if any."""
    try:
        error = json.loads(raw).get("error")
    except (ValueError, AttributeError):
        return None
    return error.get("code") if isinstance(error, dict) else None


def _too_long(raw: bytes, message: str) -> bool:
    return _code(raw) == "context_length_exceeded" or "maximum context length" in message  # vLLM says it in words


def _error_message(raw: bytes) -> str:
    try:
        error = json.loads(raw).get("error")
        return str(error.get("message") if isinstance(error, dict) else error)
    except (ValueError, AttributeError):
        return raw[:200].decode("utf-8", "replace").strip() or "no message"


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
