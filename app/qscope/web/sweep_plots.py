"""Inline SVG line charts of a steering evaluation's sweep: a measure against strength, one line per arm with its
95% intervals as whiskers, the arms that do not steer (unsteered, prompt-only) as horizontal bands.

Like qscope.web.plots: one <svg> that scales to its container, styled by CSS classes (`.s-<arm>`), numbers and
escaped labels only. Ratios (perplexity / the unsteered row's) are drawn on a log axis: a sweep that reaches 182x
on a linear axis squeezes 1x and the 2x threshold into the bottom pixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from markupsafe import Markup, escape

from qscope.steer.evaluate.result import Interval, PointSummary, percent

W, H = 560, 230
PAD_L, PAD_R, PAD_T, PAD_B = 44, 10, 28, 24
LINES = ("intervention", "negated", "random", "prompt+steering", "diffmean")
BANDS = ("unsteered", "prompt-only")
OFFSET = {"intervention": 0.0, "negated": -0.12, "random": 0.12, "prompt+steering": 0.24, "diffmean": -0.24}


CORE = ("concept", "concept_act", "writes", "ppl", "ppl_ratio")


def _value(p: PointSummary, measure: str) -> Interval:
    return getattr(p, measure) if measure in CORE else p.metrics[measure]


def _bounds(table: Sequence[PointSummary], measure: str, floor: float | None) -> tuple[float, float]:
    vals = [v for p in table for iv in [_value(p, measure)] for v in (iv.lo, iv.hi, iv.mean) if v is not None]
    lo, hi = min(vals, default=0.0), max(vals, default=1.0)
    if floor is not None:
        lo, hi = min(lo, floor), max(hi, floor)
    lo = min(lo, 0.0) if lo >= 0 else lo
    return (lo, hi + (hi - lo) * 0.08) if hi > lo else (lo, lo + 1.0)


def _log_bounds(table: Sequence[PointSummary], measure: str, floor: float | None) -> tuple[float, float]:
    """log10 bounds of a positive measure, 1 (no change) and the threshold always in view."""
    vals = [v for p in table for iv in [_value(p, measure)] for v in (iv.lo, iv.hi, iv.mean) if v is not None and v > 0]
    vals += [1.0] + ([floor] if floor is not None and floor > 0 else [])
    lo, hi = math.log10(min(vals)), math.log10(max(vals))
    return (lo, hi + (hi - lo) * 0.08) if hi > lo else (lo - 0.1, lo + 0.1)


LOG_TICKS = [(m, m * 10.0**e) for e in range(-3, 7) for m in (1, 2, 5)]


def _log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks between 10**lo and 10**hi; the decades alone when that would be more than six."""
    ticks = [(m, t) for m, t in LOG_TICKS if lo <= math.log10(t) <= hi]
    return [t for m, t in ticks if m == 1 or len(ticks) <= 6]


def sweep_chart(
    table: Sequence[PointSummary],
    strengths: Sequence[float],
    measure: str,
    *,
    title: str,
    fmt: Callable[[float], str] = lambda v: f"{v:.3g}",
    threshold: float | None = None,
    log: bool = False,
) -> Markup:
    """measure ('concept', 'writes', 'ppl_ratio', ... or a text metric) against the sweep; threshold: a dashed line;
    log: a log10 axis (for a positive measure such as a ratio)."""
    measured = [p for p in table if p.arm in LINES + BANDS and (measure in CORE or measure in p.metrics)]
    lo, hi = _log_bounds(measured, measure, threshold) if log else _bounds(measured, measure, threshold)
    iw, ih, n = W - PAD_L - PAD_R, H - PAD_T - PAD_B, max(len(strengths), 1)

    def x(i: float) -> float:
        return PAD_L + (i + 0.5) * iw / n

    def y(v: float) -> float:
        at = math.log10(max(v, 10.0**lo)) if log else v
        return PAD_T + ih * (1 - (at - lo) / (hi - lo))

    parts = [
        f'<svg class="plot sweep" viewBox="0 0 {W} {H}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]
    ticks = _log_ticks(lo, hi) if log else None
    parts += _axes(10.0**lo if log else lo, 10.0**hi if log else hi, strengths, x, y, fmt, ticks)
    if threshold is not None:
        parts.append(
            f'<line class="threshold" x1="{PAD_L}" x2="{W - PAD_R}" y1="{y(threshold):.1f}" '
            f'y2="{y(threshold):.1f}"><title>threshold {fmt(threshold)}</title></line>'
        )
    for p in measured:
        if p.arm in BANDS:
            parts += _band(p, _value(p, measure), x, y, fmt)
    index = {s: i for i, s in enumerate(strengths)}
    for arm in LINES:
        pts = [(index[p.strength], _value(p, measure)) for p in measured if p.arm == arm and p.strength in index]
        parts += _line(arm, pts, x, y, fmt, strengths)
    parts += _legend([a for a in BANDS + LINES if any(p.arm == a for p in measured)])
    parts.append("</svg>")
    return Markup("".join(parts))


def _axes(lo, hi, strengths, x, y, fmt, ticks: list[float] | None = None) -> list[str]:
    """Axes; `ticks`: the values to label (default: five evenly spaced)."""
    base = y(lo)
    out = [
        f'<line class="axis" x1="{PAD_L}" y1="{base:.1f}" x2="{W - PAD_R}" y2="{base:.1f}"/>',
        f'<line class="axis" x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{base:.1f}"/>',
    ]
    for v in ticks or [lo + (hi - lo) * k / 4 for k in range(5)]:
        out.append(f'<text class="tick" x="{PAD_L - 4}" y="{y(v) + 3:.1f}" text-anchor="end">{escape(fmt(v))}</text>')
    for i, s in enumerate(strengths):
        out.append(f'<text class="tick" x="{x(i):.1f}" y="{H - 8}" text-anchor="middle">{s:g}</text>')
    out.append(f'<text class="tick" x="{W - PAD_R}" y="{H - 8 - 12}" text-anchor="end">strength</text>')
    return out


def _tip(name: str, iv: Interval, fmt) -> str:
    if iv.mean is None:
        return f"{name}: no value"
    return f"{name}: {fmt(iv.mean)} [{fmt(iv.lo)} to {fmt(iv.hi)}], n = {iv.n}"


def _band(p: PointSummary, iv: Interval, x, y, fmt) -> list[str]:
    if iv.mean is None:
        return []
    cls = "s-" + p.arm.replace("+", "-")
    top, bottom = y(iv.hi), y(iv.lo)
    tip = escape(_tip(p.arm, iv, fmt))
    return [
        f'<rect class="band {cls}" x="{PAD_L}" y="{top:.1f}" width="{W - PAD_L - PAD_R}" '
        f'height="{max(bottom - top, 0.5):.1f}"><title>{tip}</title></rect>',
        f'<line class="flat {cls}" x1="{PAD_L}" x2="{W - PAD_R}" y1="{y(iv.mean):.1f}" y2="{y(iv.mean):.1f}">'
        f"<title>{tip}</title></line>",
    ]


def _line(arm: str, pts: list[tuple[int, Interval]], x, y, fmt, strengths) -> list[str]:
    pts = [(i, iv) for i, iv in pts if iv.mean is not None and math.isfinite(iv.mean)]
    if not pts:
        return []
    cls, dx = "s-" + arm.replace("+", "-"), OFFSET[arm]
    path = " ".join(f"{'M' if k == 0 else 'L'}{x(i + dx):.1f},{y(iv.mean):.1f}" for k, (i, iv) in enumerate(pts))
    out = [f'<path class="series {cls}" d="{path}"/>']
    for i, iv in pts:
        cx = x(i + dx)
        tip = escape(_tip(f"{arm} at {strengths[i]:g}", iv, fmt))
        out.append(
            f'<g class="{cls}"><title>{tip}</title><line class="whisker" x1="{cx:.1f}" x2="{cx:.1f}" '
            f'y1="{y(iv.lo):.1f}" y2="{y(iv.hi):.1f}"/><circle class="dot" cx="{cx:.1f}" '
            f'cy="{y(iv.mean):.1f}" r="3"/></g>'
        )
    return out


def _legend(arms: Sequence[str]) -> list[str]:
    out, cx = [], PAD_L
    for arm in arms:
        cls = "s-" + arm.replace("+", "-")
        out.append(
            f'<g class="{cls}"><rect class="key" x="{cx}" y="8" width="10" height="10"/>'
            f'<text class="tick" x="{cx + 14}" y="17">{escape(arm)}</text></g>'
        )
        cx += 22 + 7 * len(arm)
    return out


def ratio(v: float) -> str:
    return f"{v:.2f}x"


def interval_text(iv: Interval | None, fmt: Callable[[float], str] = lambda v: f"{v:.3g}") -> str:
    """'63% [55%–71%]' for the tables."""
    if iv is None or iv.mean is None:
        return "–"
    if iv.lo is None or iv.hi is None:  # one sample: no interval
        return fmt(iv.mean)
    return f"{fmt(iv.mean)} [{fmt(iv.lo)}–{fmt(iv.hi)}]"


def install(env) -> None:
    """The template helpers of the evaluation pages."""
    env.globals.update(
        sweep_chart=sweep_chart,
        percent=percent,
        ratio=ratio,
        ivpct=lambda iv: interval_text(iv, percent),
        ivnum=interval_text,
    )
