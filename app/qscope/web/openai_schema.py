"""The shapes of the OpenAI-compatible API (/v1): request bodies as OpenAI names their fields, the error body
OpenAI clients parse, and the translation of a request into a SteerSpec for the steering worker.

Sampling fields keep OpenAI's names and ranges: temperature (0-2, default 1; 0 is greedy), top_p, max_tokens
(chat also max_completion_tokens), n, seed, stop (a string or up to 4), frequency_penalty. Numbers are strict: an
integer field takes only a JSON integer (not "5", 2.0 or true), a float field only a finite JSON number. Fields
OpenAI has and this server cannot honour (presence_penalty, logit_bias, logprobs, tools, a JSON response_format)
are refused with a 400 naming the field, never silently ignored; fields that change nothing here (user,
stream_options without usage) are accepted. `steering` is this server's own field: the feature spec of /api/steer.
"""

from __future__ import annotations

import secrets
from typing import Any, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from qscope.inputs.numbers import Finite
from qscope.steer.spec import ChatMessage, FeatureSteer, SpecError, SteerSpec, Where

MAX_N = 8  # completions per request (each is a row of the worker's batch)
MAX_STOPS = 4  # as OpenAI
TYPES = {
    400: "invalid_request_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    414: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    499: "invalid_request_error",
    500: "server_error",
    503: "server_error",
}
CODES = {429: "rate_limit_exceeded", 503: "overloaded"}


def openai_error(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """The error body OpenAI clients parse: {"error": {"message", "type", "param", "code"}}."""
    body = {
        "message": message,
        "type": TYPES.get(status, "invalid_request_error"),
        "param": param,
        "code": code or CODES.get(status),
    }
    return JSONResponse({"error": body}, status_code=status, headers=headers)


class CompletionSteering(BaseModel):
    """Features to steer every completion with (the same spec as POST /api/steer)."""

    features: list[FeatureSteer] = Field(default_factory=list)
    where: Where = Field("both", description="Steer the prompt's positions, the generated ones, or both.")


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool | None = None


class Sampling(BaseModel):
    """Fields shared by chat and text completions (None: OpenAI's default)."""

    model_config = ConfigDict(extra="ignore")  # clients send fields of newer API versions; unknown ones change nothing

    model: str = Field(description="A model id from GET /v1/models.")
    temperature: Finite | None = Field(None, ge=0, le=2, description="Default 1; 0 is greedy.")
    top_p: Finite | None = Field(None, gt=0, le=1)
    n: StrictInt | None = Field(None, ge=1, le=MAX_N, description=f"Completions to generate (at most {MAX_N}).")
    max_tokens: StrictInt | None = Field(None, ge=1)
    seed: StrictInt | None = Field(None, ge=0, le=2**62, description="Completion i samples with seed + i.")
    stop: str | list[str] | None = Field(None, description=f"Up to {MAX_STOPS} strings; text ends before the first.")
    frequency_penalty: Finite | None = Field(None, ge=-2, le=2)
    presence_penalty: Finite | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, Finite] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    steering: CompletionSteering | None = Field(None, description="qscope: features to steer with, as in /api/steer.")

    def stops(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > MAX_STOPS:
            raise ParamError(f"stop has {len(stops)} strings; at most {MAX_STOPS}", "stop")
        return [s for s in stops if s]

    def refuse_unsupported(self) -> None:
        if self.presence_penalty:
            raise ParamError(
                "presence_penalty is not supported by this server (frequency_penalty is)", "presence_penalty"
            )
        if self.logit_bias:
            raise ParamError("logit_bias is not supported by this server", "logit_bias")

    def spec(self, default_max_tokens: int, max_tokens: int | None = None, **prompt: Any) -> SteerSpec:
        """The SteerSpec of this request (prompt= or messages=); the seed is drawn when none is given."""
        steering = self.steering or CompletionSteering()
        return SteerSpec(
            model_id=self.model,
            features=steering.features,
            where=steering.where,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            seed=self.seed if self.seed is not None else _random_seed(),
            max_new_tokens=max_tokens or self.max_tokens or default_max_tokens,
            frequency_penalty=self.frequency_penalty or 0.0,
            **prompt,
        )


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: str
    text: str | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None

    def chat_message(self, i: int) -> ChatMessage:
        content = self.content
        if isinstance(content, list):
            if any(p.type != "text" for p in content):
                raise ParamError("only text content parts are supported", f"messages.{i}.content")
            content = "".join(p.text or "" for p in content)
        role = "system" if self.role == "developer" else self.role  # OpenAI's newer name for system
        return ChatMessage(role=role, content=content or "")


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: StrictInt | None = Field(None, ge=1, description="OpenAI's newer name for max_tokens.")
    logprobs: bool | None = None
    tools: list[Any] | None = None
    response_format: dict[str, Any] | None = None

    def to_spec(self, default_max_tokens: int) -> SteerSpec:
        self.refuse_unsupported()
        if self.logprobs:
            raise ParamError("logprobs are not supported by this server", "logprobs")
        if self.tools:
            raise ParamError("tools are not supported by this server", "tools")
        if self.response_format and self.response_format.get("type", "text") != "text":
            raise ParamError("only the text response_format is supported", "response_format")
        messages = [m.chat_message(i) for i, m in enumerate(self.messages)]
        return self.spec(default_max_tokens, self.max_completion_tokens, messages=messages)


class CompletionRequest(Sampling):
    prompt: str | list[str] = Field(description="One prompt (a string, or a list holding one string).")
    echo: bool | None = False
    suffix: str | None = None
    logprobs: StrictInt | None = None
    best_of: StrictInt | None = None

    def to_spec(self, default_max_tokens: int) -> SteerSpec:
        self.refuse_unsupported()
        if self.suffix:
            raise ParamError("suffix is not supported by this server", "suffix")
        if self.logprobs:
            raise ParamError("logprobs are not supported by this server", "logprobs")
        if self.best_of not in (None, 1, self.n or 1):
            raise ParamError("best_of is not supported by this server (use n)", "best_of")
        prompt = self.prompt
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise ParamError(f"one prompt per request; {len(prompt)} were given", "prompt")
            prompt = prompt[0]
        return self.spec(default_max_tokens, prompt=prompt)


class ParamError(SpecError):
    """A request field this server refuses (400, `param` names the field)."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


class ContextLengthExceeded(ParamError):
    """A prompt (plus the tokens asked for) longer than the served model's context: OpenAI's 400 with code
    `context_length_exceeded`, so a client can tell it from other bad requests and shorten its prompt."""

    code = "context_length_exceeded"

    def __init__(self, context: int, prompt_tokens: int, asked: int | None, param: str) -> None:
        wanted = prompt_tokens + (asked or 1)
        tail = f" ({prompt_tokens} in the prompt, {asked} asked for the completion)" if asked else ""
        super().__init__(
            f"This model's maximum context length is {context} tokens. However, you requested {wanted} tokens"
            f"{tail}. Please reduce the length of the {param} or of the completion.",
            param,
        )


def _random_seed() -> int:
    return secrets.randbelow(2**31)
