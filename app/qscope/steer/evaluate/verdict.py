"""The verdict of an evaluation, computed from the sweep table and nothing else.

The verdict goes by one measure, the request's (qscope.steer.evaluate.writes): *reads* (`concept`, the share of
generated tokens where the feature fires) or *writes* (the weighted share of its top promoted tokens). At each
non-zero strength s the intervention's interval of that measure is compared with every control's: unsteered,
the zero-strength row, prompt-only, and the negated and random arms at s. It *beats* them when the intervals do
not overlap in the goal's direction (increase: its lower bound above every control's upper bound). It is
*fluent* when its perplexity ratio to the unsteered rows is at most the threshold. The verdict:

- "works" at the strongest |s| that beats every control and is fluent;
- "works but hurts fluency" when some s beats every control but none of those is fluent (strength: the one
  with the lowest perplexity ratio);
- "no better than controls" otherwise (strength: the one whose concept came closest, and which control held it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from qscope.steer.evaluate.arms import INTERVENTION, NEGATED, PROMPT_ONLY, RANDOM, UNSTEERED
from qscope.steer.evaluate.result import Interval, PointSummary, Verdict, percent
from qscope.steer.evaluate.table import find

Of = Callable[[PointSummary], Interval]  # the measure's interval of a table line


def measure_of(measure: str) -> Of:
    return (lambda p: p.writes) if measure == "writes" else (lambda p: p.concept)


def controls_at(table: Sequence[PointSummary], s: float, of: Of | None = None) -> list[tuple[str, PointSummary]]:
    """The controls an intervention at strength s must beat: (name, summary), those that were run and measured
    (`of`: the measure's interval; reads by default)."""
    of = of or measure_of("reads")
    found = [
        ("unsteered", find(table, UNSTEERED)),
        ("zero strength", find(table, INTERVENTION, 0.0)),
        ("prompt-only", find(table, PROMPT_ONLY)),
        ("negated", find(table, NEGATED, s)),
        ("random features", find(table, RANDOM, s)),
    ]
    return [(name, p) for name, p in found if p is not None and of(p).n > 0]


def beats(a: Interval, b: Interval, goal: str) -> bool:
    """Whether interval a lies entirely on the goal's side of interval b."""
    if a.lo is None or a.hi is None or b.lo is None or b.hi is None:
        return False
    return a.lo > b.hi if goal == "increase" else a.hi < b.lo


def iv_text(iv: Interval) -> str:
    """A proportion's interval in words: '40% [31%–49%]'."""
    return f"{percent(iv.mean)} [{percent(iv.lo)}–{percent(iv.hi)}]"


def _beats_all(table: Sequence[PointSummary], p: PointSummary, goal: str, of: Of) -> bool:
    return all(beats(of(p), of(c), goal) for _, c in controls_at(table, p.strength or 0.0, of))


def _what(measure: str) -> str:
    return "its promoted tokens made up (weighted)" if measure == "writes" else "the concept feature fired on"


def decide(
    table: Sequence[PointSummary], goal: str, max_ppl_ratio: float, measure: str = "reads", arm: str = INTERVENTION
) -> Verdict:
    """The verdict on `measure` (reads | writes; see the module docstring) of the SAE intervention, or of another
    steered arm (a candidate, DiffMean) against the same controls."""
    of = measure_of(measure)
    steered = [p for p in table if p.arm == arm and p.strength and of(p).n > 0]
    winners = [p for p in steered if _beats_all(table, p, goal, of)]
    fluent = [p for p in winners if p.ppl_ratio.mean is not None and p.ppl_ratio.mean <= max_ppl_ratio]
    base = dict(goal=goal, measure=measure, max_ppl_ratio=max_ppl_ratio, beats_controls=[p.strength for p in winners])
    if fluent:
        best = max(fluent, key=lambda p: abs(p.strength or 0))
        reason = _works(table, best, goal, max_ppl_ratio, measure)
        return Verdict(status="works", strength=best.strength, reason=reason, **base)
    if winners:
        best = min(winners, key=lambda p: p.ppl_ratio.mean if p.ppl_ratio.mean is not None else float("inf"))
        reason = (
            f"the {measure} measure beats every control at strength {', '.join(f'{p.strength:g}' for p in winners)}, "
            f"but perplexity rises to {best.ppl_ratio.mean:.2f}x the unsteered at best (strength "
            f"{best.strength:g}; threshold {max_ppl_ratio:g}x)"
        )
        return Verdict(status="works but hurts fluency", strength=best.strength, reason=reason, **base)
    return _no_better(table, steered, goal, base, measure)


def _works(table: Sequence[PointSummary], p: PointSummary, goal: str, max_ppl_ratio: float, measure: str) -> str:
    of = measure_of(measure)
    controls = controls_at(table, p.strength or 0.0, of)
    edge = max if goal == "increase" else min
    name, c = edge(controls, key=lambda nc: of(nc[1]).mean or 0.0)
    ratio = p.ppl_ratio.mean or 0.0
    return (
        f"at strength {p.strength:g} {_what(measure)} {iv_text(of(p))} of generated tokens; the "
        f"{'highest' if goal == 'increase' else 'lowest'} control ({name}) {iv_text(of(c))}; perplexity "
        f"{ratio:.2f}x the unsteered (threshold {max_ppl_ratio:g}x)"
    )


def _no_better(table, steered, goal: str, base: dict, measure: str) -> Verdict:
    if not steered:
        return Verdict(status="no better than controls", strength=None, reason="no steered row was measured", **base)
    of = measure_of(measure)
    key = (lambda p: of(p).lo or 0.0) if goal == "increase" else (lambda p: -(of(p).hi or 1.0))
    best = max(steered, key=key)
    controls = controls_at(table, best.strength or 0.0, of)
    held = [name for name, c in controls if not beats(of(best), of(c), goal)]
    reason = (
        f"no strength beats every control on the {measure} measure; the closest, strength {best.strength:g} "
        f"({_what(measure)} {iv_text(of(best))} of generated tokens), overlaps {', '.join(held) or 'a control'}"
    )
    return Verdict(status="no better than controls", strength=best.strength, reason=reason, **base)
