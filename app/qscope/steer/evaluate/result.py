"""What an evaluation gives back (pydantic, so it doubles as the API schema and the recipe's stored form)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from qscope.steer.evaluate.request import ConceptFeature, EvalRequest
from qscope.steer.spec import FeatureSteer

Status = Literal["works", "works but hurts fluency", "no better than controls"]
MeasureName = Literal["reads", "writes"]  # qscope.steer.evaluate.writes


class Interval(BaseModel):
    """A mean over rows with its 95% confidence interval; null where no row had a value."""

    mean: float | None
    lo: float | None
    hi: float | None
    n: int


def percent(v: float | None, digits: int = 0) -> str:
    """A proportion as a percentage, clipped to 0-100%: an interval's normal-approximation bound below 0 (or above
    1) reads 0% (100%), never "-37%" or "-0%"; '–' for none."""
    return "–" if v is None else f"{100 * min(max(v, 0.0), 1.0) + 0.0:.{digits}f}%"


class PointSummary(BaseModel):
    """One arm at one strength, over every prompt and seed (and every random set, for `random`)."""

    arm: str
    strength: float | None
    rows: int
    concept: Interval = Field(description="Fraction of generated tokens where the concept feature fires.")
    concept_act: Interval = Field(description="Mean activation of the concept feature on generated tokens.")
    writes: Interval = Field(
        default_factory=lambda: Interval(mean=None, lo=None, hi=None, n=0),
        description="Share of generated tokens among the concept feature's top promoted tokens, weighted by "
        "logit effect (the strongest 1).",
    )
    ppl: Interval = Field(description="Perplexity under the unsteered model: exp of the mean per-row NLL.")
    ppl_ratio: Interval = Field(
        description="Perplexity / the unsteered row's of the same prompt and seed (geometric mean)."
    )
    metrics: dict[str, Interval] = Field(default_factory=dict, description="Text metrics, per output.")


class Verdict(BaseModel):
    status: Status
    strength: float | None = Field(description="The strongest strength that works (or the one that came closest).")
    goal: Literal["increase", "decrease"]
    measure: MeasureName = Field("reads", description="What it goes by: reads (`concept`) or writes (`writes`).")
    max_ppl_ratio: float
    beats_controls: list[float] = Field(description="Every strength whose measure beats every control.")
    reason: str


class DiffMeanInfo(BaseModel):
    """The DiffMean arm's direction: where it steers, what it came from, its unit (qscope.steer.evaluate.diffmean)."""

    site: str
    sae_id: str = Field(description="The SAE of the first steered feature: the arm steers at its site.")
    source: str = Field(description="In words: a discovery's train split, or two prompt sets given.")
    discovery: str | None = None
    n_with: int
    n_without: int
    residual_norm: float = Field(
        description="Strength 1: the mean residual norm at the site over the evaluation's own prompts' counted "
        "tokens (position 0 and sinks left out)."
    )
    direction_norm: float = Field(description="|mean(with) - mean(without)| before it is made a unit vector.")
    sign: float = Field(description="+1: added (goal increase); -1: subtracted (goal decrease).")
    cosine: float | None = Field(None, description="Cosine with the first steered feature's decoder direction.")


class ArmBest(BaseModel):
    """One arm at its best point within the fluency bound (or, when none is within it, its most fluent point)."""

    arm: str
    name: str = Field(description="The arm in words.")
    strength: float | None
    score: Interval = Field(description="The verdict's measure at that point.")
    ppl_ratio: float | None
    fluent: bool = Field(description="Whether the point keeps perplexity within the bound.")


class ArmComparison(BaseModel):
    """The arms ranked on the verdict's measure among their points within the fluency bound, and the sentence
    computed from the intervals (qscope.steer.evaluate.compare)."""

    goal: Literal["increase", "decrease"]
    measure: MeasureName
    max_ppl_ratio: float
    arms: list[ArmBest] = Field(description="Best first; the arms with no fluent point last.")
    best: str | None = Field(description="The best arm, None when no arm stays within the bound.")
    as_good: list[str] = Field(description="Arms whose interval overlaps the best's: as good as it.")
    sentence: str


class RowResult(BaseModel):
    """One generated row and what was measured on it."""

    arm: str
    strength: float | None
    control: int | None
    prompt: int = Field(description="Index into the prompts.")
    seed: int
    text: str
    token_ids: list[int] = Field(description="The generated token ids (the text is their decoding).")
    n_tokens: int
    stopped: str
    concept: float | None
    concept_act: float | None
    writes: float | None = None
    nll: float | None
    metrics: dict[str, float | None]


class Example(BaseModel):
    prompt: str
    seed: int
    strength: float | None
    text: str
    unsteered: str
    concept: float | None
    writes: float | None = None
    ppl_ratio: float | None


class Examples(BaseModel):
    strength: float | None
    best: list[Example]
    worst: list[Example]


class FileIdentity(BaseModel):
    name: str
    path: str
    sha256: str


class Identity(BaseModel):
    """What the evaluation ran on, by content hash, and the software that ran it."""

    model_id: str
    model: list[FileIdentity]
    saes: list[FileIdentity]
    store: FileIdentity | None
    qscope_version: str
    torch_version: str
    transformers_version: str
    device: str
    dtype: str


class EvalResult(BaseModel):
    request: EvalRequest = Field(description="The request, its prompts written out (run again needs no file).")
    prompts: list[str]
    seeds: list[int]
    strengths: list[float]
    goal: Literal["increase", "decrease"]
    concept: ConceptFeature
    measure: MeasureName = Field("reads", description="What the verdict goes by (qscope.steer.evaluate.writes).")
    measure_reason: str = Field("", description="Why: asked for, or the auto rule's figures.")
    reads_sharpness: float | None = Field(None, description="Share of top contexts marked on its top tokens.")
    writes_sharpness: float | None = Field(None, description="Share of top contexts followed by its top promoted.")
    promoted: dict[int, float] = Field(
        default_factory=dict, description="The writes measure's tokens: id -> logit effect / the strongest one's."
    )
    controls: list[list[FeatureSteer]] = Field(description="The random control sets, feature for feature.")
    table: list[PointSummary]
    verdict: Verdict
    comparison: ArmComparison | None = Field(None, description="The arms against each other (None: saved before).")
    diffmean: DiffMeanInfo | None = Field(None, description="The DiffMean arm's direction, when one was asked for.")
    examples: Examples
    rows: list[RowResult]
    identity: Identity
    seconds: float
    rows_per_s: float
    notes: list[str] = Field(default_factory=list)


def title_of(request: EvalRequest, n_prompts: int) -> str:
    """A recipe's title: its edits, its other candidates, and how many prompts ("add layer1#40 · 8 prompts",
    "add layer1#40 + 3 candidates · 8 prompts")."""
    feats = ", ".join(f"{f.mode} {f.sae_id.rsplit('__', 1)[-1]}#{f.feature}" for f in request.spec.features)
    n = len(request.candidates)
    others = f" + {n} candidate{'s' if n > 1 else ''}" if n else ""
    return f"{feats}{others} · {n_prompts} prompts"
