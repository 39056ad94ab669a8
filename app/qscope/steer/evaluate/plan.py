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
from qscope.steer.evaluate.diffmean import DiffMeanSets, SetsOf, tokenize_sets
from qscope.steer.evaluate.request import ConceptFeature, DiffMeanSource, EvalLimits, EvalRequest, read_prompts
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
    diffmean: DiffMeanSets | None = None  # the DiffMean arm's sets (its edits are made when the run starts)


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
    req: EvalRequest,
    target: Target,
    limits: EvalLimits,
    steer_limits: SteerLimits,
    builtin: dict[str, list[str]],
    sets_of: SetsOf | None = None,
) -> Plan:
    """The plan of `req` on `target`; SpecError (422) for anything over a limit or naming what does not exist.
    `sets_of` reads a discovery's train sets, for a DiffMean arm that names one."""
    prompts = read_prompts(req, builtin, limits.max_prompt_chars)
    limits.check(req, len(prompts))  # first: what follows is sized by the request
    req, diffmean_notes, discovery = _diffmean_texts(req, limits, sets_of)
    features = req.spec.features
    seeds = [req.spec.seed + i for i in range(1 if req.spec.temperature == 0 else req.seeds)]
    sweep = arms.sweep(req.strengths, features)
    points = arms.points(
        sweep, features, req.random_controls, bool(req.instruction), req.diffmean is not None, len(req.candidates)
    )
    limits.check_rows(len(prompts), len(seeds), len(points))
    steer_limits.check(req.spec.with_prompt(prompts[0]))
    for s in sweep:
        if abs(s) > steer_limits.max_strength:
            raise SpecError(f"strength {s:g} of the sweep is outside ±{steer_limits.max_strength:g}")
    concept = req.concept or ConceptFeature(sae_id=features[0].sae_id, feature=features[0].feature)
    _check_feature(target, concept.sae_id, concept.feature, scaled=False)
    for f in [*features, *req.candidates]:
        _check_feature(target, f.sae_id, f.feature, scaled=f.mode in ("add", "clamp"))
    controls = arms.pick_controls(features, target.saes, target.max_acts, req.random_controls, req.spec.seed)
    max_act = lambda sae_id, feature: float(target.max_acts(sae_id)[feature])  # noqa: E731
    edits = {
        p: resolve_edits(arms.point_features(p, features, controls, req.candidates), target.saes, max_act)
        for p in points
    }
    prompt_ids = _tokenize(req, target, prompts, steer_limits)
    instructed = _tokenize(req, target, [req.instruction + p for p in prompts], steer_limits) if req.instruction else []
    order = sorted(range(len(prompts)), key=lambda i: (len(prompt_ids[i]), i))
    rows = [PlannedRow(p, i, s) for i in order for p in points for s in seeds]
    notes = []
    if req.spec.temperature == 0 and req.seeds > 1:
        notes.append("greedy decoding (temperature 0): one seed per prompt, since every seed gives the same text")
    if all(f.mode in OFF_MODES for f in features):
        notes.append("a spec of ablations only: the sweep is 0 (not steered) and 1 (ablated)")
    diffmean = None
    if req.diffmean is not None and req.diffmean.with_concept and req.diffmean.without_concept:
        tok = target.lm.require_tokenizer()
        src = req.diffmean
        with_ids, without_ids, cut = tokenize_sets(
            tok, src.with_concept or [], src.without_concept or [], steer_limits.max_prompt_tokens
        )
        if cut:
            diffmean_notes.append(f"diffmean: {cut} text(s) cut to their first {steer_limits.max_prompt_tokens} tokens")
        source = f"discovery {discovery} (its train split)" if discovery else "two prompt sets given"
        diffmean = DiffMeanSets(with_ids, without_ids, features[0].sae_id, source, discovery)
    notes += diffmean_notes
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
    plan.diffmean = diffmean
    return plan


def _diffmean_texts(
    req: EvalRequest, limits: EvalLimits, sets_of: SetsOf | None
) -> tuple[EvalRequest, list[str], str | None]:
    """The request with its DiffMean source written out as two text lists (a discovery's train split, each set
    cut to max_prompts texts of max_prompt_chars: run again, it needs no discovery), the notes that say what was
    cut, and the discovery's id; SpecError for a discovery that cannot be read or has fewer than 2 texts a set."""
    src = req.diffmean
    if src is None or src.discovery is None:
        if src is not None:  # kept as written, blank texts aside
            src = src.model_copy(
                update={k: [t for t in getattr(src, k) or [] if t.strip()] for k in ("with_concept", "without_concept")}
            )
        return req.model_copy(update={"diffmean": src}), [], None
    if sets_of is None:
        raise SpecError("diffmean: this server cannot read discoveries; give with_concept and without_concept")
    sets = sets_of(src.discovery)
    if sets is None:
        raise SpecError(f"diffmean: no discovery {src.discovery!r} in this server's app database")
    with_texts, without_texts = sets
    notes = []
    for name, texts in (("with", with_texts), ("without", without_texts)):
        if len(texts) > limits.max_prompts:
            notes.append(
                f"diffmean: the discovery's train split has {len(texts)} texts {name} the concept; the first "
                f"{limits.max_prompts} were used (max_prompts)"
            )
    with_texts, without_texts = with_texts[: limits.max_prompts], without_texts[: limits.max_prompts]
    long = sum(len(t) > limits.max_prompt_chars for t in with_texts + without_texts)
    if long:  # a discovery may hold longer examples than a prompt may be; their tokens are cut in any case
        notes.append(f"diffmean: {long} of the discovery's texts cut to {limits.max_prompt_chars:,} characters")
        with_texts = [t[: limits.max_prompt_chars] for t in with_texts]
        without_texts = [t[: limits.max_prompt_chars] for t in without_texts]
    written = DiffMeanSource(discovery=None, with_concept=with_texts, without_concept=without_texts)
    limits.check_diffmean(written)  # each set 2..max_prompts texts of at most max_prompt_chars
    return req.model_copy(update={"diffmean": written}), notes, src.discovery


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
