"""What a client sends to fix a behaviour (pydantic, so it doubles as the API schema), and the bounds checked
before anything runs.

The examples are a discovery's (qscope.discover.requests.ExamplesIn: pasted, files, or a demo set); the rest sizes
the batched steering evaluation that follows it. Every count is bounded twice: by the field (a 422 from the
schema) and, where the server's settings are lower, by `check` (a 422 naming the setting).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from qscope.discover.discovery import DiscoverOptions
from qscope.discover.examples import ExamplesError
from qscope.discover.requests import ExamplesIn
from qscope.inputs.numbers import Finite
from qscope.steer.evaluate.request import EvalLimits
from qscope.steer.spec import SteerLimits

DEFAULT_STRENGTHS = [0.0, 0.5, 1.0, 2.0]
MAX_PER_SAE = 4
PROMPT_CHARS = 300  # a held-out example steered as a prompt: its first characters (its start, not a whole file)


class FixSettings(BaseModel):
    """The candidates and the evaluation of a fix."""

    goal: Literal["increase", "decrease"] = Field("increase", description="Make the behaviour (set A) more or less.")
    per_sae: int = Field(
        2,
        ge=1,
        le=MAX_PER_SAE,
        description="Candidates per SAE (one SAE per hooked site on mini-Qwen): its top "
        "features for set A, by train AUROC.",
    )
    prompts: list[str] | None = Field(
        None, max_length=64, description="Prompts to steer; default: the examples' held-out test split."
    )
    max_prompts: int = Field(8, ge=2, le=64, description="Most held-out prompts used.")
    strengths: list[Finite] = Field(
        default_factory=lambda: list(DEFAULT_STRENGTHS),
        min_length=2,
        max_length=12,
        description="The sweep: a feature's in multiples of its max activation, DiffMean's in the site's mean "
        "residual norm (as in /api/steer-eval).",
    )
    seeds: int = Field(2, ge=1, le=8)
    random_controls: int = Field(2, ge=0, le=8)
    max_new_tokens: int = Field(24, ge=1, le=256)
    temperature: Finite = Field(0.7, ge=0, le=2)
    max_ppl_ratio: Finite = Field(2.0, gt=1, le=100, description="Fluency bound: perplexity / the unsteered's.")


class FixRequest(ExamplesIn):
    fix: FixSettings = Field(default_factory=FixSettings)
    options: DiscoverOptions = Field(default_factory=DiscoverOptions)
    wait: bool = Field(False, description="Answer when done (with the result) instead of at once (with a job).")


def rows_at_most(s: FixSettings, n_saes: int, n_prompts: int) -> int:
    """The most rows the evaluation can need: prompts x seeds x arm-strength points (every arm of
    qscope.steer.evaluate.arms.points, with per_sae candidates of every SAE and the DiffMean arm)."""
    sweep = list(dict.fromkeys(float(x) for x in s.strengths))
    steered = sum(x != 0 for x in sweep)
    candidates = s.per_sae * n_saes
    points = 1 + len(sweep) + steered * (1 + s.random_controls + (candidates - 1) + 1)
    seeds = 1 if s.temperature == 0 else s.seeds
    return n_prompts * seeds * points


def check(s: FixSettings, limits: EvalLimits, n_saes: int, steer: SteerLimits) -> None:
    """ExamplesError (a 422) for the first bound the settings pass on this server."""
    max_strength = steer.max_strength
    if s.max_new_tokens > steer.max_new_tokens:
        raise ExamplesError(
            f"fix.max_new_tokens: {s.max_new_tokens} asked; at most {steer.max_new_tokens} on this server"
        )
    if s.prompts is not None and len([p for p in s.prompts if p.strip()]) < 2:
        raise ExamplesError("fix.prompts: give at least 2 non-blank prompts (or none: the held-out test split)")
    for i, p in enumerate(s.prompts or []):
        if len(p) > limits.max_prompt_chars:
            raise ExamplesError(
                f"fix.prompts: prompt {i + 1} has {len(p):,} characters; at most {limits.max_prompt_chars:,}"
            )
    n_prompts = min(s.max_prompts, len(s.prompts) if s.prompts is not None else s.max_prompts)
    for name, value, most in (
        ("max_prompts", n_prompts, limits.max_prompts),
        ("seeds", s.seeds, limits.max_seeds),
        ("random_controls", s.random_controls, limits.max_random_controls),
        ("strengths", len(s.strengths), limits.max_strengths),
    ):
        if value > most:
            raise ExamplesError(f"fix.{name}: {value} asked; at most {most} on this server")
    if not any(x != 0 for x in s.strengths):
        raise ExamplesError("fix.strengths: give at least one non-zero strength")
    big = [x for x in s.strengths if abs(x) > max_strength]
    if big:
        raise ExamplesError(f"fix.strengths: {big[0]:g} is outside ±{max_strength:g}")
    if s.per_sae * n_saes > limits.max_candidates:
        raise ExamplesError(
            f"fix.per_sae: {s.per_sae} x {n_saes} SAEs = {s.per_sae * n_saes} candidates; at most "
            f"{limits.max_candidates}"
        )
    rows = rows_at_most(s, n_saes, n_prompts)
    if rows > limits.max_rows:
        raise ExamplesError(
            f"the evaluation could need {rows:,} rows ({n_prompts} prompts x seeds x arm-strength points); at most "
            f"{limits.max_rows:,}: fewer prompts, seeds, strengths, random controls or candidates"
        )
