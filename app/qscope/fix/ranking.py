"""The interventions of a fix ranked: the evaluation's comparison of arms (qscope.steer.evaluate.compare) kept
for the arms that are interventions (the SAE features and DiffMean; controls and prompting are not), in its
order, each with its own verdict against the evaluation's controls. Nothing here is set by hand: the order,
the standing and the verdict are all computed from the evaluation's table."""

from __future__ import annotations

from collections.abc import Sequence

from qscope.fix.result import Candidate, Intervention, Standing
from qscope.steer.evaluate import arms
from qscope.steer.evaluate.result import ArmComparison, PointSummary
from qscope.steer.evaluate.verdict import beats, decide, iv_text


def is_intervention(arm: str) -> bool:
    return arm in (arms.INTERVENTION, arms.DIFFMEAN) or arms.candidate_index(arm) is not None


def rank(table: Sequence[PointSummary], c: ArmComparison | None, candidates: Sequence[Candidate]) -> list[Intervention]:
    """The interventions in the order of the evaluation's comparison `c` of the arms of its `table`: rank 1, 2,
    ... for those within the fluency bound."""
    if c is None:
        return []
    by_arm = {x.arm: x for x in candidates}
    out: list[Intervention] = []
    first = None  # the best intervention's ArmBest
    n = 0
    for b in c.arms:
        if not is_intervention(b.arm):
            continue
        v = decide(table, c.goal, c.max_ppl_ratio, c.measure, arm=b.arm)
        standing: Standing
        if not b.fluent:
            standing = "not fluent"
        elif first is None:
            first, standing = b, "best"
        else:  # the comparison's rule: as good as the best while their intervals overlap
            standing = "worse than the best" if beats(first.score, b.score, c.goal) else "as good as the best"
        n += b.fluent
        cand = by_arm.get(b.arm)
        out.append(
            Intervention(
                rank=n if b.fluent else None,
                arm=b.arm,
                name=b.name if cand is None else f"{cand.sae_id.rsplit('__', 1)[-1]} #{cand.feature}",
                kind="diffmean" if b.arm == arms.DIFFMEAN else "feature",
                sae_id=cand.sae_id if cand else None,
                feature=cand.feature if cand else None,
                label=cand.label if cand else "",
                strength=b.strength,
                score=b.score,
                ppl_ratio=b.ppl_ratio,
                fluent=b.fluent,
                standing=standing,
                verdict=v.status,
                reason=v.reason,
            )
        )
    return out


def headline(ranked: Sequence[Intervention], best_overall: str | None, overall_name: str, goal: str) -> str:
    """The fix in one sentence, from the ranking."""
    best = next((x for x in ranked if x.rank == 1), None)
    if best is None:
        return "no intervention keeps perplexity within the bound: none is ranked, so there is nothing to recommend"
    how = "raises" if goal == "increase" else "lowers"
    tied = [x.name for x in ranked if x.standing == "as good as the best"]
    also = f", as good as {', '.join(tied)}" if tied else ""
    at = f" at strength {best.strength:g}" if best.strength is not None else ""
    lead = f"{best.name} does best{at}{also} ({iv_text(best.score)}); its verdict: {best.verdict}"
    if best.verdict != "works":
        lead += f", so it {how} the behaviour no more clearly than the controls at a fluent strength"
    if best_overall is not None and not is_intervention(best_overall):
        lead += f"; {overall_name}, not an intervention, does best of all the arms"
    return lead
