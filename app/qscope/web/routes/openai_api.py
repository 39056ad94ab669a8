"""The OpenAI-compatible API of `qscope serve`: GET /v1/models, POST /v1/chat/completions, POST /v1/completions,
answered whole or streamed (server-sent events in OpenAI's chunk format, ending with `data: [DONE]`).

Every completion goes through the steering worker as a job of only the rows asked for (qscope.steer.rows): it is
batched with the other requests of the moment, obeys the steering limits, and a full queue answers 503 with
Retry-After. Steering is the body's extra `steering` field (qscope.web.openai_schema). Errors carry OpenAI's
body so OpenAI clients raise their usual exceptions: 400 for a bad or over-limit field, 404 for an unknown model,
429 over the rate (qscope.web.security), 503 busy.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from openai.types import Completion, CompletionChoice, CompletionUsage, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from qscope.jobs import QueueFull
from qscope.live.runner import LiveUnavailable
from qscope.steer.edits import resolve_edits
from qscope.steer.rows import FinishedRow, RowsCollector, make_rows_job
from qscope.steer.service import Steering
from qscope.steer.spec import SpecError, SteerSpec
from qscope.steer.worker import SteerJob, WaitedTooLong
from qscope.web import rates, sse
from qscope.web.catalog import Catalog, ModelEntry, NotFound
from qscope.web.channel import Waiting, channel, next_event, outcome
from qscope.web.deps import CatalogDep, LiveDep, SteeringDep
from qscope.web.errors import bounded, error_text
from qscope.web.openai_schema import (
    ChatRequest,
    CompletionRequest,
    ContextLengthExceeded,
    ParamError,
    Sampling,
    openai_error,
)
from qscope.web.security import client_key


class OpenAIErrorRoute(APIRoute):
    """/v1 routes answer every error in OpenAI's error body."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as e:
                errs = e.errors()
                params = [".".join(str(x) for x in err["loc"] if x != "body") or "body" for err in errs]
                text = "; ".join(f"{p}: {error_text(err)}" for p, err in zip(params, errs, strict=True))
                return openai_error(400, f"Bad parameter: {text}", param=params[0] if params else None)
            except ContextLengthExceeded as e:
                return openai_error(400, str(e), param=e.param, code=e.code)
            except ParamError as e:
                return openai_error(400, str(e), param=e.param)
            except SpecError as e:
                return openai_error(400, str(e))
            except NotFound as e:
                return openai_error(404, bounded(e.message), param="model", code="model_not_found")
            except QueueFull as e:  # 503 the queue is full, 429 this client's share of it
                return openai_error(e.status, str(e), headers={"Retry-After": str(e.retry_after_s)})
            except LiveUnavailable as e:
                return openai_error(503, str(e))

        return route


router = APIRouter(prefix="/v1", route_class=OpenAIErrorRoute, tags=["openai"])


def _entry(catalog: Catalog, model_id: str) -> ModelEntry:
    try:
        return catalog.model(model_id)
    except NotFound as e:
        served = ", ".join(m.model_id for m in catalog) or "none"
        raise NotFound(f"The model {model_id!r} does not exist on this server; it serves: {served}.") from e


def context_length(model: Any) -> int | None:
    """The served model's context in tokens: its config's max_position_embeddings (None when it has none)."""
    value = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else None


def _card(entry: ModelEntry, live) -> dict:
    created = min(int(s.store.path.stat().st_mtime) for s in entry.saes) if entry.saes else 0
    card = Model(id=entry.model_id, object="model", created=created, owned_by="qscope").model_dump(mode="json")
    runner = live.get(entry.model_id)
    try:  # vLLM's name for the context, which explainers read to fit their prompts
        card["max_model_len"] = context_length(runner.load()[0].model) if runner is not None else None
    except LiveUnavailable:
        card["max_model_len"] = None
    return card


@router.get("/models", summary="The models served (OpenAI's model list; max_model_len once a model is loaded)")
def list_models(catalog: CatalogDep, live: LiveDep) -> dict:
    return {"object": "list", "data": [_card(m, live) for m in catalog]}


@router.get("/models/{model_id:path}", summary="One served model")
def get_model(model_id: str, catalog: CatalogDep, live: LiveDep) -> dict:
    return _card(_entry(catalog, model_id), live)


STREAMED: dict[int | str, dict[str, Any]] = {200: {"content": {"application/json": {}, "text/event-stream": {}}}}


@router.post(
    "/chat/completions",
    summary="Chat completions (OpenAI), optionally steered and streamed",
    response_class=Response,
    responses=STREAMED,
    dependencies=[rates.COMPLETIONS],
)
async def chat_completions(
    body: ChatRequest, request: Request, catalog: CatalogDep, live: LiveDep, steering: SteeringDep
) -> Response:
    spec = body.to_spec(steering.limits.max_new_tokens)
    return await _complete(request, body, spec, catalog, live, steering, chat=True)


@router.post(
    "/completions",
    summary="Text completions (OpenAI), optionally steered and streamed",
    response_class=Response,
    responses=STREAMED,
    dependencies=[rates.COMPLETIONS],
)
async def completions(
    body: CompletionRequest, request: Request, catalog: CatalogDep, live: LiveDep, steering: SteeringDep
) -> Response:
    # OpenAI's default for text completions is 16 tokens
    spec = body.to_spec(min(16, steering.limits.max_new_tokens))
    echo = spec.prompt if body.echo else ""
    return await _complete(request, body, spec, catalog, live, steering, chat=False, echo=echo)


@dataclass
class Head:
    """What every chunk and the final answer of one request repeat."""

    id: str
    created: int
    model: str
    chat: bool
    prompt_tokens: int

    def body(self, choices: list[dict], chunk: bool = False, usage: CompletionUsage | None = None) -> dict:
        """The answer, or one chunk of a stream, as openai.types has it (only the fields given are sent)."""
        fields: dict[str, Any] = {
            "id": self.id,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": choices,
        }
        if usage is not None:
            fields["usage"] = usage
        if self.chat:
            kind = ChatCompletionChunk if chunk else ChatCompletion
            obj = "chat.completion.chunk" if chunk else "chat.completion"
            return kind.model_validate(fields | {"object": obj}).model_dump(mode="json", exclude_unset=True)
        if any(c["finish_reason"] is None for c in choices):
            # a text chunk before its end: OpenAI streams it with finish_reason null, which its Completion type
            # (made for whole answers) does not allow, so it is built unchecked, as the openai client reads it
            parts = [CompletionChoice.model_construct(**c) for c in choices]
            chunk_obj = Completion.model_construct(**(fields | {"object": "text_completion", "choices": parts}))
            return chunk_obj.model_dump(mode="json", exclude_unset=True)
        return Completion.model_validate(fields | {"object": "text_completion"}).model_dump(
            mode="json", exclude_unset=True
        )

    def usage(self, choices: list[FinishedRow]) -> CompletionUsage:
        done, prompt = sum(c.tokens for c in choices), self.prompt_tokens
        return CompletionUsage(prompt_tokens=prompt, completion_tokens=done, total_tokens=prompt + done)


def _fit_context(job: SteerJob, context: int | None, asked: int | None, chat: bool) -> None:
    """Refuse a prompt past the model's context, or one whose asked-for tokens (`asked`: max_tokens as sent)
    would run past it, as OpenAI does; with no max_tokens sent, the completion stops at the context's end."""
    if context is None:
        return
    prompt = len(job.rows[0].prompt_ids)
    if prompt >= context or (asked is not None and prompt + asked > context):
        raise ContextLengthExceeded(context, prompt, asked, "messages" if chat else "prompt")
    for row in job.rows:
        row.max_new_tokens = min(row.max_new_tokens, context - prompt)


def _job(spec: SteerSpec, n: int, catalog: Catalog, live, steering: Steering, emit, max_prompt_tokens: int) -> SteerJob:
    """The rows job of a request: its model loaded, its steering features resolved (a dead feature refused, as
    /api/steer does), its limits checked."""
    _entry(catalog, spec.model_id or "")
    steering.limits.check(spec)  # before anything loads: an oversized request costs nothing
    runner = live.get(spec.model_id)
    if runner is None:
        raise NotFound(f"No live model for {spec.model_id!r}.")
    lm, saes = runner.load()

    edits = resolve_edits(spec.features, saes, catalog.max_act_of(spec.model_id or ""))
    limits = replace(steering.limits, max_prompt_tokens=max_prompt_tokens)  # API clients send longer prompts
    return make_rows_job(spec, lm.model, lm.tokenizer, edits, limits, n, emit, runner.lock)


async def _complete(
    request: Request,
    body: Sampling,
    spec: SteerSpec,
    catalog: Catalog,
    live,
    steering: Steering,
    *,
    chat: bool,
    echo: str = "",
) -> Response:
    n = body.n or 1
    q, out = channel()
    collector = RowsCollector(n, body.stops(), out)
    job = _job(
        spec, n, catalog, live, steering, collector.feed, request.app.state.settings.steer.openai_max_prompt_tokens
    )
    asked = getattr(body, "max_completion_tokens", None) or body.max_tokens
    _fit_context(job, context_length(job.model), asked, chat)
    collector.job = job  # before it queues: a stop string met at the first token must already stop the row
    job.client = client_key(request.scope)
    steering.worker.submit(job)
    waiting = Waiting(steering.worker, job)
    head = Head(
        f"{'chatcmpl' if chat else 'cmpl'}-{secrets.token_hex(12)}",
        int(time.time()),
        spec.model_id or "",
        chat,
        len(job.rows[0].prompt_ids),
    )
    if body.stream:
        usage = bool(body.stream_options and body.stream_options.include_usage)
        return sse.stream(_stream(q, waiting, head, n, usage, echo))
    return await _whole(request, q, waiting, head, echo)


def _choice(head: Head, c: FinishedRow, echo: str) -> dict:
    if head.chat:
        message = {"role": "assistant", "content": c.text, "refusal": None}
        return {"index": c.index, "message": message, "logprobs": None, "finish_reason": c.finish_reason}
    return {"index": c.index, "text": echo + c.text, "logprobs": None, "finish_reason": c.finish_reason}


async def _whole(request: Request, q: asyncio.Queue, waiting: Waiting, head: Head, echo: str) -> Response:
    try:
        if (event := await outcome(request, q, waiting)) is None:
            return Response(status_code=499)  # the client left (finally: the job stops)
        kind, data = event
        if kind == "done":
            choices = [_choice(head, c, echo) for c in data]
            return _json(head.body(choices, usage=head.usage(data)))
        if isinstance(data, WaitedTooLong):  # busy, as a full queue is: worth retrying
            return openai_error(503, data, headers={"Retry-After": str(waiting.worker.retry_after_s)})
        return openai_error(500, data)
    finally:
        waiting.job.cancel.set()  # finished rows ignore it; an abandoned request stops generating


def _json(body: dict) -> Response:
    return Response(json.dumps(body), media_type="application/json")


def _delta(head: Head, index: int, text: str | None = None, finish: str | None = None, first: bool = False) -> dict:
    if head.chat:
        delta = {"role": "assistant", "content": ""} if first else ({"content": text} if text is not None else {})
        return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
    return {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish}


async def _stream(
    q: asyncio.Queue, waiting: Waiting, head: Head, n: int, usage: bool, echo: str
) -> AsyncIterator[bytes]:
    """OpenAI's chunks: the role (chat) or the echoed prompt first, text deltas, a finish chunk per choice,
    the usage chunk when asked for, then [DONE]. (A queue-wait error comes as an error event: the 200 is sent.)"""
    try:
        for i in range(n):
            if head.chat or echo:
                yield sse.event(head.body([_delta(head, i, echo, first=head.chat)], chunk=True))
        while True:
            event = await next_event(None, q, waiting)
            assert event is not None  # without a request it waits until the worker sends one
            kind, data = event
            if kind == "delta":
                yield sse.event(head.body([_delta(head, data[0], data[1])], chunk=True))
            elif kind == "done":
                for c in data:
                    yield sse.event(head.body([_delta(head, c.index, finish=c.finish_reason)], chunk=True))
                if usage:
                    yield sse.event(head.body([], chunk=True, usage=head.usage(data)))
                break
            elif kind == "error":
                yield sse.event({"error": {"message": data, "type": "server_error", "param": None, "code": None}})
                break
        yield sse.event("[DONE]")
    finally:
        waiting.job.cancel.set()  # the client went away (or all is sent): its rows stop at the next step
