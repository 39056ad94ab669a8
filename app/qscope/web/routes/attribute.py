"""Why this token?: `/attribute` (page, htmx panel, `.json` twin) and `POST /api/attribute`.

The token explained is position `pos` of a text, or token `pos` of a steering run's completion (`run`: a shared
run's id or a recent run's token; `side`: default or steered, the steered side replayed with its edits). The
answer ranks the features that pushed the model to that token (qscope.live.attribute_ranked) and carries `suppress`, a
steering spec that turns the top ones off from the prediction position on, by `suppress_mode`: `subtract` (the
default) takes away exactly activation x decoder row, the contribution the attribution estimated; `ablate` divides
that by the encoder gain, so the feature is 0 when encoded again (1.3-2.1x more on the mini-Qwen). The panel's
"Suppress and regenerate" sends it (with the features the user ticks) to POST /api/steer/stream, beside the
original, and says which rule ran.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Annotated, Literal, NamedTuple

from fastapi import APIRouter, Query, Request
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel, Field, field_validator

from qscope.live.attribute_ranked import Why, WhyError, explain
from qscope.live.runner import Limits, LiveModel
from qscope.steer.edits import resolve_edits
from qscope.steer.replay import replay_hooks, suppress_spec
from qscope.steer.service import Steering
from qscope.steer.spec import Completion, SpecError, SteerSpec
from qscope.steer.worker import encode_prompt
from qscope.web import rates, urls
from qscope.web.catalog import Catalog, NotFound
from qscope.web.deps import CatalogDep, LimitsDep, LiveDep, SettingsDep
from qscope.web.errors import Unprocessable
from qscope.web.render import render
from qscope.web.twins import TwinRoute

router = APIRouter(route_class=TwinRoute)
SUPPRESS_TOKENS = 24  # tokens a suppression of a plain text generates (a run keeps its own max_new_tokens)
SUPPRESS_TOP = 3  # features ablated by the ready-made `suppress` spec
SuppressMode = Literal["subtract", "ablate"]  # qscope.steer.spec.OFF_MODES
MAX_SAE_IDS = 64  # distinct SAEs one attribution may name (a repeated one counts once)


class AttributeRequest(BaseModel):
    """What to explain: a token of a text or of a steering run's completion, and the logit to attribute."""

    model_id: str | None = Field(None, description="Model to run; default: the first served (a run: its own).")
    text: str = Field("", description="The text (ignored when `run` is given).")
    run: str | None = Field(None, description="A steering run: a shared run's id or a recent run's `run` token.")
    side: Literal["default", "steered"] = Field("default", description="Which completion of the run.")
    pos: int = Field(
        ge=0,
        description="The token to explain: its position in the text (1..n), or its index in the run's "
        "completion (0..n-1); n: the token the model would produce next.",
    )
    target: str | None = Field(
        None, description="Token whose logit is explained (text of one token, or '#id'); default: the token at pos."
    )
    contrast: str | None = Field(None, description="Explain logit(target) - logit(contrast) instead.")
    sae_id: list[str] = Field(
        default_factory=list,
        description=f"SAEs to attribute over (a repeated one counts once; at most {MAX_SAE_IDS}); default: all the "
        "model's.",
    )
    top: int = Field(20, ge=1, le=100, description="Features listed (each way).")
    suppress_mode: SuppressMode = Field(
        "subtract",
        description="How `suppress` turns features off: subtract (exactly activation x decoder row, what the "
        "attribution estimates) or ablate (divided by the encoder gain: the feature is 0 when encoded again).",
    )

    @field_validator("sae_id")
    @classmethod
    def _distinct(cls, sae_ids: list[str]) -> list[str]:
        """Each SAE once, in the order first given (1,000 repeats of one id are that id), and a bounded number."""
        distinct = list(dict.fromkeys(sae_ids))
        if len(distinct) > MAX_SAE_IDS:
            raise ValueError(f"{len(distinct)} distinct SAEs given; at most {MAX_SAE_IDS}")
        return distinct


class AttributeQuery(AttributeRequest):
    pos: int = Field(1, ge=0, description=AttributeRequest.model_fields["pos"].description)
    panel: bool = Field(False, description="Shown inside another page (the steer page, inspect): no history.")


@dataclass
class Attributed:
    why: Why
    suppress: SteerSpec  # ready for POST /api/steer: the top features turned off from `from_position` on
    suppress_mode: SuppressMode  # the rule `suppress` turns them off by
    ablated: int  # how many ablations `suppress` ends with (the run's own features come first)
    from_position: int  # the token position where the explained token was predicted, in `suppress`'s prompt
    explained: int  # index in a regenerated completion of the explained token
    original: Completion | None  # a run's completion as it ran (a text: the regenerated default row)
    max_ablate: int  # features the steering limits leave for ablations
    url: str  # permalink of this attribution

    @property
    def steered(self) -> set[tuple[str, int]]:
        """The features the explained completion was steered with (`suppress` keeps them first): the panel marks
        them, since a steered feature tops the causes of its own tokens."""
        kept = self.suppress.features[: len(self.suppress.features) - self.ablated]
        return {(f.sae_id, f.feature) for f in kept}


@dataclass
class AttributePage:
    query: dict
    result: Attributed | None


def _runner(live, model_id: str) -> LiveModel:
    runner = live.get(model_id)
    if runner is None:
        raise NotFound(f"No live model for {model_id!r}.")
    return runner


class Source(NamedTuple):
    """What a request explains, resolved: the model, the token ids, the absolute position of the token."""

    runner: LiveModel
    ids: list[int]
    pos: int
    steer: dict | None  # a steered run's edits, replayed
    spec: SteerSpec | None  # a run's spec (None for a text)
    original: Completion | None  # a run's completion


def _run_source(q: AttributeRequest, run: str, catalog: Catalog, live, steering: Steering, limits: Limits) -> Source:
    found = steering.recall(run) or steering.runs.get(run)
    if found is None:
        raise NotFound(
            f"No steering run {run!r} on this server (recent runs are kept for a while; share one to keep it).",
            [("steer", "/steer")],
        )
    spec, result = found
    model_id = catalog.model_id_or_first(spec.model_id)
    runner = _runner(live, model_id)
    lm, saes = runner.load()
    completion = result.steered if q.side == "steered" else result.default
    prompt = encode_prompt(lm.require_tokenizer(), spec)
    ids = prompt + [t.id for t in completion.tokens]
    if q.pos > len(completion.tokens):
        raise WhyError(
            f"pos {q.pos} is outside the {q.side} completion: it has {len(completion.tokens)} tokens "
            f"(0..{len(completion.tokens) - 1}; {len(completion.tokens)}: the next one)"
        )
    if len(ids) > limits.max_tokens:
        raise WhyError(f"the run is {len(ids):,} tokens long; at most {limits.max_tokens:,} are attributed")
    steer = None
    if q.side == "steered" and spec.features:
        steer = replay_hooks(resolve_edits(spec.features, saes, catalog.max_act_of(model_id)), spec.where, len(prompt))
    return Source(runner, ids, len(prompt) + q.pos, steer, spec, completion)


def attributed(q: AttributeRequest, catalog: Catalog, live, steering: Steering, limits: Limits) -> Attributed:
    """The attribution `q` asks for, with its suppression spec; Unprocessable / NotFound for bad input."""
    try:
        if q.run:
            src = _run_source(q, q.run, catalog, live, steering, limits)
        elif q.text:
            runner = _runner(live, catalog.model_id_or_first(q.model_id))
            src = Source(runner, runner.tokenize(q.text, limits), q.pos, None, None, None)
        else:
            raise WhyError("give `text` (and the position of a token in it) or `run` (a steering run)")
        why = explain(
            src.runner,
            src.ids,
            src.pos,
            limits,
            target=q.target,
            contrast=q.contrast,
            sae_ids=q.sae_id,
            steer=src.steer,
            n=q.top,
        )
    except (WhyError, SpecError) as e:
        raise Unprocessable(f"Bad parameter: {e}") from e
    return _with_suppression(q, why, src, steering)


def _with_suppression(q, why: Why, src: Source, steering) -> Attributed:
    keep = q.run is not None and q.side == "steered"
    spec = src.spec
    if spec is None:  # a text: generate on from the very tokens before the explained one
        # the ids themselves, not their text: decoding and tokenizing again can merge tokens ("  " for " ", " ")
        # and the run would start from another context than the one attributed
        prompt_ids = src.ids[: why.pos]
        spec = SteerSpec(
            model_id=src.runner.model_id,
            prompt="".join(why.shown[: why.pos]),
            prompt_ids=prompt_ids,
            temperature=0.0,
            max_new_tokens=min(SUPPRESS_TOKENS, steering.limits.max_new_tokens),
        )
        from_position = why.at
        explained = 0
    else:
        from_position, explained = why.at, q.pos
    room = max(0, steering.limits.max_features - (len(spec.features) if keep else 0))
    top = [(f.sae_id, f.feature) for f in why.features[: min(SUPPRESS_TOP, room)]]
    suppress = suppress_spec(spec, top, from_position, keep, q.suppress_mode)
    params = q.model_dump(exclude={"panel"}, exclude_defaults=True)
    return Attributed(
        why, suppress, q.suppress_mode, len(top), from_position, explained, src.original, room, urls.attribute(**params)
    )


@router.get("/attribute", dependencies=[rates.INSPECT_TEXT])
def attribute_page(
    request: Request,
    q: Annotated[AttributeQuery, Query()],
    catalog: CatalogDep,
    live: LiveDep,
    limits: LimitsDep,
    settings: SettingsDep,
):
    steering: Steering = request.app.state.steering
    limits = replace(limits, max_tokens=settings.live.attribute_max_tokens)
    result = attributed(q, catalog, live, steering, limits) if (q.text or q.run) else None
    page = AttributePage(q.model_dump(), result)
    peak = max((abs(v) for s in result.why.saes for v in s.strip), default=0.0) if result else 0.0
    context = {
        "q": q,
        "r": result,
        "models": [m.model_id for m in catalog],
        "steer_limits": steering.limits,
        "peak": peak or 1.0,
    }
    return render(request, "attribute.html", context, data=jsonable_encoder(page), partial="_attribute.html")


api = APIRouter(prefix="/api", tags=["attribute"])  # JSON only: no .json twin


@api.post(
    "/attribute",
    response_model=Attributed,
    summary="Attribute one token to SAE features (one forward + one backward pass)",
    dependencies=[rates.INSPECT],
)
def attribute_api(
    body: AttributeRequest,
    request: Request,
    catalog: CatalogDep,
    live: LiveDep,
    limits: LimitsDep,
    settings: SettingsDep,
) -> Attributed:
    limits = replace(limits, max_tokens=settings.live.attribute_max_tokens)
    return attributed(body, catalog, live, request.app.state.steering, limits)


router.include_router(api)
