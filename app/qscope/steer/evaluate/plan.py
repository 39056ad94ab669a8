"""Preparing an evaluation: the prompt set read and tokenized, the sweep, the random controls, every row's
edits resolved and the limits checked, all before anything is queued (bad input fails at once, with a 422).

Rows are ordered for batching: by prompt (shortest first, so a batch pads little), then point, then seed, so
that the seeds of one point sit in the same batch and share its prompt pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from qscope.steer.edits import Edit, resolve_edits
from qscope.steer.evaluate import arms
from qscope.steer.evaluate.request import ConceptFeature, EvalLimits, EvalRequest, read_prompts
from qscope.steer.evaluate.target import Target
from qscope.steer.evaluate.writes import FeatureProfile, Measure, choose
from qscope.steer.spec import OFF_MODES, SpecError, SteerLimits
from qscope.steer.worker import encode_prompt


@dataclass(frozen=True)
class PlannedRow:
    point: arms.Point
    prompt: int  # index into Plan.prompts
    seed: int


@dataclass
class Plan:
    request: EvalRequest  # its prompts written out as a list
    prompts: list[str]
    prompt_ids: list[list[int]]
    instructed_ids: list[list[int]]  # with the instruction prefixed (empty lists when there is none)
    sweep: list[float]
    seeds: list[int]
    goal: str
    concept: ConceptFeature
    controls: list[list]  # the random sets (FeatureSteer lists)
    edits: dict[arms.Point, dict[str, list[Edit]]]
    rows: list[PlannedRow]
    notes: list[str]
    measure: Measure = "reads"  # what the verdict goes by (qscope.steer.evaluate.writes)
    measure_reason: str = ""
    profile: FeatureProfile = field(default_factory=FeatureProfile)  # its promoted tokens and sharpnesses


def _goal(req: EvalRequest, concept: ConceptFeature) -> str:
    if req.goal != "auto":
        return req.goal
    for f in req.spec.features:
        if (f.sae_id, f.feature) == (concept.sae_id, concept.feature):
            return "decrease" if f.mode in OFF_MODES or f.strength < 0 else "increase"
    return "increase"


def _tokenize(req: EvalRequest, target: Target, texts: Sequence[str], steer_limits: SteerLimits) -> list[list[int]]:
    out, tok = [], target.lm.require_tokenizer()
    for i, text in enumerate(texts):
        try:
            ids = encode_prompt(tok, req.spec.with_prompt(text, chat=req.chat))
            steer_limits.check_prompt(len(ids))
        except SpecError as e:
            raise SpecError(f"prompt {i + 1}: {e}") from None
        out.append(ids)
    return out


def prepare(
    req: EvalRequest, target: Target, limits: EvalLimits, steer_limits: SteerLimits, builtin: dict[str, list[str]]
) -> Plan:
    """The plan of `req` on `target`; SpecError (422) for anything over a limit or naming what does not exist."""
    prompts = read_prompts(req, builtin, limits.max_prompt_chars)
    limits.check(req, len(prompts))  # first: what follows is sized by the request
    features = req.spec.features
    seeds = [req.spec.seed + i for i in range(1 if req.spec.temperature == 0 else req.seeds)]
    sweep = arms.sweep(req.strengths, features)
    points = arms.points(sweep, features, req.random_controls, bool(req.instruction))
    limits.check_rows(len(prompts), len(seeds), len(points))
    steer_limits.check(req.spec.with_prompt(prompts[0]))
    for s in sweep:
        if abs(s) > steer_limits.max_strength:
            raise SpecError(f"strength {s:g} of the sweep is outside ±{steer_limits.max_strength:g}")
    concept = req.concept or ConceptFeature(sae_id=features[0].sae_id, feature=features[0].feature)
    _check_feature(target, concept.sae_id, concept.feature, scaled=False)
    for f in features:
        _check_feature(target, f.sae_id, f.feature, scaled=f.mode in ("add", "clamp"))
    controls = arms.pick_controls(features, target.saes, target.max_acts, req.random_controls, req.spec.seed)
    max_act = lambda sae_id, feature: float(target.max_acts(sae_id)[feature])  # noqa: E731
    edits = {p: resolve_edits(arms.point_features(p, features, controls), target.saes, max_act) for p in points}
    prompt_ids = _tokenize(req, target, prompts, steer_limits)
    instructed = _tokenize(req, target, [req.instruction + p for p in prompts], steer_limits) if req.instruction else []
    order = sorted(range(len(prompts)), key=lambda i: (len(prompt_ids[i]), i))
    rows = [PlannedRow(p, i, s) for i in order for p in points for s in seeds]
    notes = []
    if req.spec.temperature == 0 and req.seeds > 1:
        notes.append("greedy decoding (temperature 0): one seed per prompt, since every seed gives the same text")
    if all(f.mode in OFF_MODES for f in features):
        notes.append("a spec of ablations only: the sweep is 0 (not steered) and 1 (ablated)")
    request = req.model_copy(
        update={"prompts": prompts, "prompts_text": None, "prompts_file": None, "prompt_set": None}
    )
    goal = _goal(req, concept)
    profile = target.profile(concept.sae_id, concept.feature) if target.profile else FeatureProfile()
    measure, why = choose(req.measure, profile if target.profile else None)
    if measure == "writes" and not profile.weights:
        measure, why = "reads", "the store gives the feature no promoted token, so reads"
    plan = Plan(request, prompts, prompt_ids, instructed, sweep, seeds, goal, concept, controls, edits, rows, notes)
    plan.measure, plan.measure_reason, plan.profile = measure, why, profile
    return plan


def _check_feature(target: Target, sae_id: str, feature: int, scaled: bool) -> None:
    """SpecError for an unknown SAE or feature, or (scaled: its strength is a multiple of its max activation) a
    feature that never fired."""
    sae = target.saes.get(sae_id)
    if sae is None:
        raise SpecError(f"no SAE {sae_id!r} for {target.model_id}; it has {', '.join(target.saes) or 'none'}")
    if not 0 <= feature < sae.d_sae:
        raise SpecError(f"feature {feature} is out of range: {sae_id} has features 0..{sae.d_sae - 1}")
    if scaled and float(target.max_acts(sae_id)[feature]) <= 0:
        raise SpecError(
            f"feature {feature} of {sae_id} never fired in the feature store: it has no max activation "
            "to scale a strength by"
        )
