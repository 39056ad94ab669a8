"""The arms of an evaluation against each other, computed from the sweep table and nothing else: is the SAE
feature the right tool, or does DiffMean, prompting alone or a control do as well?

Every arm that was run takes part: the SAE intervention, prompt + SAE, the candidate features (`qscope fix`),
DiffMean, prompt-only, random features, negated, and no steering (the zero-strength row is the unsteered one again
and is left out). On the verdict's measure (reads or writes), each arm's *best point* is its point with the best
mean in the goal's direction among those whose perplexity ratio to the unsteered rows is at most the fluency bound;
an arm with no such point is listed last (its most fluent point) and is not ranked. The best arm is the first; an
arm whose 95% interval overlaps the best's is *as good as* it, the rest it beats (its interval entirely on the
goal's side).

The sentence says where the SAE feature stands: "the SAE feature works and does best, as good as DiffMean",
"the SAE feature is as good as prompting alone", "DiffMean does better than the SAE feature", "prompting alone
does better than the SAE feature", ..., with the two intervals and the arms it was compared with.
"""

from __future__ import annotations

from collections.abc import Sequence

from qscope.steer.evaluate import arms as a
from qscope.steer.evaluate.result import ArmBest, ArmComparison, PointSummary
from qscope.steer.evaluate.verdict import beats, iv_text, measure_of

NAMES = {
    a.INTERVENTION: "the SAE feature",
    a.PROMPT_STEER: "the SAE feature with the instruction",
    a.DIFFMEAN: "DiffMean",
    a.PROMPT_ONLY: "prompting alone",
    a.RANDOM: "random features",
    a.NEGATED: "the negated SAE feature",
    a.UNSTEERED: "no steering",
}


def _fluent(p: PointSummary, max_ppl_ratio: float) -> bool:
    return p.ppl_ratio.mean is not None and p.ppl_ratio.mean <= max_ppl_ratio


def arm_order(table: Sequence[PointSummary]) -> list[str]:
    """The arms of a table in their fixed order, the candidates (in their own order) after the SAE intervention's
    instructed twin."""
    found = list(dict.fromkeys(p.arm for p in table))
    candidates = [arm for arm in found if a.candidate_index(arm) is not None]
    at = a.ARMS.index(a.PROMPT_STEER) + 1
    return [arm for arm in (*a.ARMS[:at], *candidates, *a.ARMS[at:]) if arm in found]


def arm_bests(
    table: Sequence[PointSummary], goal: str, max_ppl_ratio: float, measure: str, names: dict[str, str] | None = None
) -> list[ArmBest]:
    """Each arm at its best point (see the module docstring): best first, then the arms with no fluent point.
    `names`: the arms in words where NAMES has none (the candidates')."""
    of = measure_of(measure)
    sign = 1.0 if goal == "increase" else -1.0
    ranked, unfluent = [], []
    arms = arm_order(table)
    names = {**NAMES, **(names or {})}
    for arm in arms:
        pts = [p for p in table if p.arm == arm and of(p).n > 0 and not (arm == a.INTERVENTION and p.strength == 0)]
        if not pts:
            continue
        fluent = [p for p in pts if _fluent(p, max_ppl_ratio)]
        if fluent:
            best = max(fluent, key=lambda p: sign * (of(p).mean or 0.0))
            ranked.append(_best(arm, names.get(arm, arm), best, of, True))
        else:
            best = min(pts, key=lambda p: p.ppl_ratio.mean if p.ppl_ratio.mean is not None else float("inf"))
            unfluent.append(_best(arm, names.get(arm, arm), best, of, False))
    order = {arm: i for i, arm in enumerate(arms)}
    ranked.sort(key=lambda b: (-sign * (b.score.mean or 0.0), order[b.arm]))
    return ranked + unfluent


def _best(arm: str, name: str, p: PointSummary, of, fluent: bool) -> ArmBest:
    return ArmBest(arm=arm, name=name, strength=p.strength, score=of(p), ppl_ratio=p.ppl_ratio.mean, fluent=fluent)


def _at(b: ArmBest) -> str:
    where = f" at strength {b.strength:g}" if b.strength is not None else ""
    return f"{b.name} {iv_text(b.score)}{where}"


def _join(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def compare_arms(
    table: Sequence[PointSummary],
    goal: str,
    max_ppl_ratio: float,
    measure: str = "reads",
    works: bool = False,
    names: dict[str, str] | None = None,
) -> ArmComparison:
    """The arms ranked and the sentence (see the module docstring); `works`: the verdict says the SAE feature
    works (beats every control within the fluency bound); `names`: the candidates' arms in words."""
    bests = arm_bests(table, goal, max_ppl_ratio, measure, names)
    ranked = [b for b in bests if b.fluent]
    base = dict(goal=goal, measure=measure, max_ppl_ratio=max_ppl_ratio, arms=bests)
    bound = f"perplexity at most {max_ppl_ratio:g}x the unsteered"
    if not ranked:
        sentence = f"no arm keeps {bound}, so none is ranked"
        return ArmComparison(best=None, as_good=[], sentence=sentence, **base)
    top = ranked[0]
    tied = [b for b in ranked[1:] if not beats(top.score, b.score, goal)]
    sae = next((b for b in bests if b.arm == a.INTERVENTION), None)
    subject = "the SAE feature works and" if works else "the SAE feature"
    if top.arm == a.INTERVENTION:
        lead = f"{subject} does best" + (f", as good as {_join([b.name for b in tied])}" if tied else "")
        figures = _at(top)
    elif sae is None or not sae.fluent:
        lead = f"{top.name} does best; the SAE feature never keeps {bound}"
        figures = _at(top)
    elif sae in tied:
        lead = f"{subject} is as good as {top.name}"
        figures = f"{_at(top)}; {_at(sae)}"
    else:
        lead = f"{top.name} does better than the SAE feature"
        figures = f"{_at(top)}; {_at(sae)}"
    others = [b.name for b in bests if b is not top]
    compared = f"; compared, at {bound}, with {_join(others)}" if others else ""
    sentence = f"{lead} ({measure}: {figures}){compared}"
    return ArmComparison(best=top.arm, as_good=[b.arm for b in tied], sentence=sentence, **base)
