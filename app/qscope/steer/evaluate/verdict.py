"""The verdict of an evaluation, computed from the sweep table and nothing else.

At each non-zero strength s the intervention's concept interval is compared with every control's: unsteered,
the zero-strength row, prompt-only, and the negated and random arms at s. It *beats* them when the intervals do
not overlap in the goal's direction (increase: its lower bound above every control's upper bound). It is
*fluent* when its perplexity ratio to the unsteered rows is at most the threshold. The verdict:

- "works" at the strongest |s| that beats every control and is fluent;
- "works but hurts fluency" when some s beats every control but none of those is fluent (strength: the one
  with the lowest perplexity ratio);
- "no better than controls" otherwise (strength: the one whose concept came closest, and which control held it).
"""

from __future__ import annotations

from collections.abc import Sequence

from qscope.steer.evaluate.arms import INTERVENTION, NEGATED, PROMPT_ONLY, RANDOM, UNSTEERED
from qscope.steer.evaluate.result import Interval, PointSummary, Verdict
from qscope.steer.evaluate.table import find


def controls_at(table: Sequence[PointSummary], s: float) -> list[tuple[str, PointSummary]]:
    """The controls an intervention at strength s must beat: (name, summary), those that were run."""
    found = [
        ("unsteered", find(table, UNSTEERED)),
        ("zero strength", find(table, INTERVENTION, 0.0)),
        ("prompt-only", find(table, PROMPT_ONLY)),
        ("negated", find(table, NEGATED, s)),
        ("random features", find(table, RANDOM, s)),
    ]
    return [(name, p) for name, p in found if p is not None and p.concept.n > 0]


def beats(a: Interval, b: Interval, goal: str) -> bool:
    """Whether interval a lies entirely on the goal's side of interval b."""
    if a.lo is None or a.hi is None or b.lo is None or b.hi is None:
        return False
    return a.lo > b.hi if goal == "increase" else a.hi < b.lo


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def _iv(iv: Interval) -> str:
    return f"{_pct(iv.mean)} [{_pct(iv.lo)}–{_pct(iv.hi)}]"


def _beats_all(table: Sequence[PointSummary], p: PointSummary, goal: str) -> bool:
    return all(beats(p.concept, c.concept, goal) for _, c in controls_at(table, p.strength or 0.0))


def decide(table: Sequence[PointSummary], goal: str, max_ppl_ratio: float) -> Verdict:
    """The verdict (see the module docstring)."""
    steered = [p for p in table if p.arm == INTERVENTION and p.strength and p.concept.n > 0]
    winners = [p for p in steered if _beats_all(table, p, goal)]
    fluent = [p for p in winners if p.ppl_ratio.mean is not None and p.ppl_ratio.mean <= max_ppl_ratio]
    base = dict(goal=goal, max_ppl_ratio=max_ppl_ratio, beats_controls=[p.strength for p in winners])
    if fluent:
        best = max(fluent, key=lambda p: abs(p.strength or 0))
        return Verdict(status="works", strength=best.strength, reason=_works(table, best, goal, max_ppl_ratio), **base)
    if winners:
        best = min(winners, key=lambda p: p.ppl_ratio.mean if p.ppl_ratio.mean is not None else float("inf"))
        reason = (
            f"the concept beats every control at strength {', '.join(f'{p.strength:g}' for p in winners)}, "
            f"but perplexity rises to {best.ppl_ratio.mean:.2f}x the unsteered at best (strength "
            f"{best.strength:g}; threshold {max_ppl_ratio:g}x)"
        )
        return Verdict(status="works but hurts fluency", strength=best.strength, reason=reason, **base)
    return _no_better(table, steered, goal, max_ppl_ratio, base)


def _works(table: Sequence[PointSummary], p: PointSummary, goal: str, max_ppl_ratio: float) -> str:
    controls = controls_at(table, p.strength or 0.0)
    edge = max if goal == "increase" else min
    name, c = edge(controls, key=lambda nc: nc[1].concept.mean or 0.0)
    ratio = p.ppl_ratio.mean or 0.0
    return (
        f"at strength {p.strength:g} the concept feature fired on {_iv(p.concept)} of generated tokens; the "
        f"{'highest' if goal == 'increase' else 'lowest'} control ({name}) {_iv(c.concept)}; perplexity "
        f"{ratio:.2f}x the unsteered (threshold {max_ppl_ratio:g}x)"
    )


def _no_better(table, steered, goal: str, max_ppl_ratio: float, base: dict) -> Verdict:
    if not steered:
        return Verdict(status="no better than controls", strength=None, reason="no steered row was measured", **base)
    key = (lambda p: p.concept.lo or 0.0) if goal == "increase" else (lambda p: -(p.concept.hi or 1.0))
    best = max(steered, key=key)
    held = [name for name, c in controls_at(table, best.strength or 0.0) if not beats(best.concept, c.concept, goal)]
    reason = (
        f"no strength beats every control; the closest, strength {best.strength:g} ({_iv(best.concept)} of "
        f"generated tokens), overlaps {', '.join(held) or 'a control'}"
    )
    return Verdict(status="no better than controls", strength=best.strength, reason=reason, **base)
