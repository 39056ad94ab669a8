"""Steering specs: what a request asks for (pydantic, so it doubles as the API schema) and the limits it is
checked against. Nothing here touches torch.

Units: `add` strength is a multiple of the feature's max activation in the harvest (1.0 = as strong as it ever
fired); `clamp` sets the activation to strength x max_act; `multiply` scales the activation by strength;
`ablate` clamps it to 0 (strength ignored); `subtract` takes the feature's own contribution away from the residual,
activation x decoder row, which is what an attribution estimates (strength ignored; weaker than ablate, after which
the feature is 0 even when the edited residual is encoded again).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from qscope.inputs.numbers import Finite  # every float of a request is finite: NaN would reach the logits
from qscope.tokens import has_surrogate

Mode = Literal["add", "clamp", "multiply", "ablate", "subtract"]
OFF_MODES: tuple[Mode, ...] = ("ablate", "subtract")  # modes that turn a feature off (strength unused)
Where = Literal["prompt", "generated", "both"]
MAX_PROMPT_IDS = 100_000  # a bound on the list a request may send; SteerLimits.max_prompt_tokens is the real one


def _text(value: str) -> str:
    if has_surrogate(value):  # JSON's "\ud800" decodes to one; no tokenizer or UTF-8 encoder takes it
        raise ValueError("holds a lone UTF-16 surrogate, which is not text")
    return value


Text = Annotated[str, AfterValidator(_text)]


class SpecError(ValueError):
    """A spec that is well-formed but over a limit or naming something that does not exist (HTTP 422)."""


class FeatureSteer(BaseModel):
    sae_id: str = Field(description="The SAE the feature belongs to (its layer is where the hook goes).")
    feature: int = Field(ge=0, description="Feature index in that SAE.")
    mode: Mode = Field(
        "add",
        description="add | clamp | multiply | ablate (to 0 when the edited state is encoded again) | subtract "
        "(take away exactly activation x decoder row: what an attribution estimates).",
    )
    strength: Finite = Field(
        1.0,
        description="add/clamp: multiple of the feature's max activation; multiply: factor; ablate, subtract: unused.",
    )
    from_position: int = Field(
        0,
        ge=0,
        le=1_000_000,
        description="Steer only at token positions >= this (0: the first prompt token); `where` also holds.",
    )


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: Text


class SteerSpec(BaseModel):
    """One steering request: a prompt, the features to steer with, sampling settings and where to steer."""

    # the schema says what check() refuses: an empty prompt without messages
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": ["prompt"], "properties": {"prompt": {"minLength": 1}}},
                {"required": ["messages"], "properties": {"messages": {"type": "array", "minItems": 1}}},
                {"required": ["prompt_ids"], "properties": {"prompt_ids": {"type": "array", "minItems": 1}}},
            ]
        },
    )

    model_id: str | None = Field(None, description="Model to run; default: the first one served.")
    prompt: Text = Field("", description="Raw prompt text (ignored when `messages` is given).")
    messages: list[ChatMessage] | None = Field(
        None, description="Chat messages, rendered with the model's chat template (needs one)."
    )
    prompt_ids: list[Annotated[int, Field(ge=0)]] | None = Field(
        None,
        max_length=MAX_PROMPT_IDS,
        description="The prompt as token ids, run exactly as given (`prompt` and `messages` then only label it): "
        "what a suppression regenerates from, since decoding ids and tokenizing the text again can give other "
        "tokens.",
    )
    features: list[FeatureSteer] = Field(default_factory=list)
    where: Where = Field("both", description="Steer the prompt's positions, the generated ones, or both.")
    temperature: Finite = Field(0.7, ge=0, le=5, description="0 means greedy.")
    top_p: Finite = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="Both rows sample with this seed.")
    max_new_tokens: int = Field(32, ge=1, description="Tokens to generate per row.")
    frequency_penalty: Finite = Field(0.0, ge=-2, le=2, description="Subtracted per earlier occurrence.")

    def with_prompt(self, prompt: str, chat: bool = False) -> SteerSpec:
        """This spec with another prompt (sent as one user message through the chat template when `chat`), validated
        again as a request would be; SpecError says what is wrong with the prompt."""
        messages = [{"role": "user", "content": prompt}] if chat else None
        try:
            return SteerSpec.model_validate(
                {**self.model_dump(), "prompt": prompt, "messages": messages, "prompt_ids": None}
            )
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            raise SpecError(f"{where}: {first['msg']}") from None


class TokenOut(BaseModel):
    id: int
    text: str = Field(
        description="This token's piece of the completion: a character split over tokens comes with the token that "
        "completes it ('' on the tokens before); a byte that completes nothing as <0xNN>."
    )
    prob: float = Field(description="The model's probability of this token (softmax of the raw logits).")
    value: str = Field("", description="The token's own text (its bytes alone; a partial character as <0xNN>).")


class Completion(BaseModel):
    text: str
    tokens: list[TokenOut]
    stopped: str = Field("length", description="length | eos | timeout | cancelled")


class SteerResult(BaseModel):
    default: Completion
    steered: Completion
    run: str | None = Field(None, description="Token for POST /api/steer/share (kept a while by this server).")


class ShareRequest(BaseModel):
    run: str = Field(description="The `run` token of a finished request.")


class SavedRun(BaseModel):
    id: str
    url: str
    spec: SteerSpec
    result: SteerResult


@dataclass(frozen=True)
class SteerLimits:
    """Bounds on one request (from Settings)."""

    max_prompt_tokens: int = 512
    max_new_tokens: int = 256
    max_features: int = 8
    max_strength: float = 200.0
    timeout_s: float = 60.0

    def check(self, spec: SteerSpec) -> None:
        """Raise SpecError saying which limit the spec passes (the prompt's length is checked once tokenized)."""
        if spec.max_new_tokens > self.max_new_tokens:
            raise SpecError(f"max_new_tokens is {spec.max_new_tokens}; at most {self.max_new_tokens} per request")
        if len(spec.features) > self.max_features:
            raise SpecError(f"{len(spec.features)} features given; at most {self.max_features} per request")
        for f in spec.features:
            if abs(f.strength) > self.max_strength:
                raise SpecError(f"strength {f.strength:g} of feature {f.feature} is outside ±{self.max_strength:g}")
        if not spec.messages and not spec.prompt and not spec.prompt_ids:
            raise SpecError("the prompt is empty: type a prompt to generate from (in the API: `prompt` or `messages`)")

    def check_prompt(self, n_tokens: int) -> None:
        if n_tokens > self.max_prompt_tokens:
            raise SpecError(f"the prompt is {n_tokens} tokens long; at most {self.max_prompt_tokens} are run")
        if n_tokens == 0:
            raise SpecError("the prompt is empty once tokenized")
