"""From measured rows to the sweep table (one line per arm and strength) and the example outputs."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

from qscope.steer.evaluate.arms import INTERVENTION, RANDOM, UNSTEERED
from qscope.steer.evaluate.measures import interval
from qscope.steer.evaluate.result import Example, Examples, Interval, PointSummary, RowResult

N_EXAMPLES = 3


def _iv(values: Sequence[float | None], transform=None) -> Interval:
    got = interval([v for v in values if v is not None])
    if got.n == 0:
        return Interval(mean=None, lo=None, hi=None, n=0)
    f = transform or (lambda x: x)
    return Interval(mean=f(got.mean), lo=f(got.lo), hi=f(got.hi), n=got.n)


def _exp(x: float) -> float:
    return math.exp(min(x, 700.0))


def log_ratios(rows: Sequence[RowResult]) -> dict[int, float | None]:
    """Per row (by position in `rows`): its NLL minus the unsteered row's of the same prompt and seed."""
    base = {(r.prompt, r.seed): r.nll for r in rows if r.arm == UNSTEERED}
    out: dict[int, float | None] = {}
    for i, r in enumerate(rows):
        ref = base.get((r.prompt, r.seed))
        out[i] = r.nll - ref if r.nll is not None and ref is not None else None
    return out


def summarize(rows: Sequence[RowResult]) -> list[PointSummary]:
    """One PointSummary per (arm, strength) in the order the rows came (the random sets pooled)."""
    ratios = log_ratios(rows)
    groups: dict[tuple[str, float | None], list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        groups[(r.arm, r.strength)].append(i)
    table = []
    for (arm, strength), idx in groups.items():
        rs = [rows[i] for i in idx]
        names = list(dict.fromkeys(k for r in rs for k in r.metrics))
        table.append(
            PointSummary(
                arm=arm,
                strength=strength,
                rows=len(rs),
                concept=_iv([r.concept for r in rs]),
                concept_act=_iv([r.concept_act for r in rs]),
                writes=_iv([r.writes for r in rs]),
                ppl=_iv([r.nll for r in rs], _exp),
                ppl_ratio=_iv([ratios[i] for i in idx], _exp),
                metrics={k: _iv([r.metrics.get(k) for r in rs]) for k in names},
            )
        )
    return table


def find(table: Sequence[PointSummary], arm: str, strength: float | None = None) -> PointSummary | None:
    return next((p for p in table if p.arm == arm and p.strength == strength), None)


def examples(
    rows: Sequence[RowResult], prompts: Sequence[str], strength: float | None, goal: str, measure: str = "reads"
) -> Examples:
    """The intervention's outputs at `strength` that express the concept most and least (by the goal, on the
    verdict's measure: reads = `concept`, writes), each beside the unsteered output of the same prompt and seed."""
    base = {(r.prompt, r.seed): r for r in rows if r.arm == UNSTEERED}
    ratios = log_ratios(rows)
    at = [(i, r) for i, r in enumerate(rows) if r.arm == INTERVENTION and r.strength == strength and r.n_tokens]
    sign = -1.0 if goal == "decrease" else 1.0
    attr = "writes" if measure == "writes" else "concept"

    def value(r: RowResult) -> float:
        v = getattr(r, attr)
        return sign * v if v is not None else -math.inf

    at.sort(key=lambda ir: value(ir[1]), reverse=True)

    def example(i: int, r: RowResult) -> Example:
        ref = base.get((r.prompt, r.seed))
        ratio = ratios[i]
        return Example(
            prompt=prompts[r.prompt],
            seed=r.seed,
            strength=r.strength,
            text=r.text,
            unsteered=ref.text if ref else "",
            concept=r.concept,
            writes=r.writes,
            ppl_ratio=_exp(ratio) if ratio is not None else None,
        )

    best = [example(i, r) for i, r in at[:N_EXAMPLES]]
    worst = [example(i, r) for i, r in reversed(at[-N_EXAMPLES:])] if len(at) > N_EXAMPLES else []
    return Examples(strength=strength, best=best, worst=worst)


def random_features(rows: Sequence[RowResult]) -> int:
    """How many random control sets the rows hold."""
    return len({r.control for r in rows if r.arm == RANDOM})
