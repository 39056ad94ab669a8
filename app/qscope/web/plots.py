"""Inline SVG plots drawn on the server: bar histograms of activations and of feature densities.

Each function returns Markup holding one <svg> that scales to its container (viewBox), styled by the page's
CSS classes (.bar, .axis, .tick). Only numbers and escaped labels go into the markup.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from markupsafe import Markup, escape

PAD_L, PAD_R, PAD_T, PAD_B = 36, 8, 8, 22


def _fmt_count(n: float) -> str:
    if n >= 1e6:
        return f"{n / 1e6:.3g}M"
    if n >= 1e3:
        return f"{n / 1e3:.3g}k"
    return f"{n:g}"


def bar_chart(
    counts: Sequence[float],
    ticks: Sequence[tuple[float, str]],
    *,
    width: int = 560,
    height: int = 140,
    title: str = "",
    bar_title: Callable[[int], str] | None = None,
    log_y: bool = False,
) -> Markup:
    """Equal-width bars; ticks are (position in bar units from the left edge, label)."""
    n = max(len(counts), 1)
    iw, ih = width - PAD_L - PAD_R, height - PAD_T - PAD_B
    scale: Callable[[float], float] = (lambda c: math.log1p(c)) if log_y else (lambda c: c)
    top = max((scale(c) for c in counts), default=0.0) or 1.0
    bw = iw / n
    parts = [
        f'<svg class="plot" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]
    for i, c in enumerate(counts):
        if c <= 0:
            continue
        h = ih * scale(c) / top
        tip = escape(bar_title(i)) if bar_title else _fmt_count(c)
        parts.append(
            f'<rect class="bar" x="{PAD_L + i * bw + 0.5:.1f}" y="{PAD_T + ih - h:.1f}" '
            f'width="{max(bw - 1, 0.8):.1f}" height="{h:.1f}"><title>{tip}</title></rect>'
        )
    base = PAD_T + ih
    parts.append(f'<line class="axis" x1="{PAD_L}" y1="{base}" x2="{width - PAD_R}" y2="{base}"/>')
    for pos, label in ticks:
        x = PAD_L + pos * bw
        parts.append(f'<line class="axis" x1="{x:.1f}" y1="{base}" x2="{x:.1f}" y2="{base + 4}"/>')
        parts.append(f'<text class="tick" x="{x:.1f}" y="{height - 6}" text-anchor="middle">{escape(label)}</text>')
    top_label = _fmt_count(max(counts, default=0))
    parts.append(f'<text class="tick" x="{PAD_L - 4}" y="{PAD_T + 8}" text-anchor="end">{top_label}</text>')
    parts.append(f'<text class="tick" x="{PAD_L - 4}" y="{base}" text-anchor="end">0</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def activation_histogram(hist: Sequence[int], edges: Sequence[float], **kw) -> Markup:
    """A feature's activations on its log-spaced bins, trimmed to the bins that hold any."""
    nz = [i for i, c in enumerate(hist) if c > 0]
    if not nz or len(edges) < len(hist) + 1:
        return Markup('<p class="muted">no activations recorded</p>')
    lo, hi = max(nz[0] - 1, 0), min(nz[-1] + 2, len(hist))
    counts = list(hist[lo:hi])
    ticks = []
    for j in range(hi - lo + 1):
        e = edges[lo + j]
        exp = math.log2(e) if e > 0 else None
        if exp is not None and abs(exp - round(exp)) < 1e-9 and (hi - lo < 24 or round(exp) % 2 == 0):
            ticks.append((j, f"{e:g}"))

    def tip(i: int) -> str:
        return f"{edges[lo + i]:.3g} to {edges[lo + i + 1]:.3g}: {counts[i]:,} tokens"

    return bar_chart(counts, ticks, title="activation histogram (log-spaced bins)", bar_title=tip, **kw)


def density_histogram(counts: Sequence[int], low: float, step: float, **kw) -> Markup:
    """Features per bin of log10(density)."""
    ticks = []
    for j in range(len(counts) + 1):
        e = low + j * step
        if abs(e - round(e)) < 1e-9:
            ticks.append((j, f"1e{int(round(e))}" if round(e) else "1"))

    def tip(i: int) -> str:
        a, b = 10 ** (low + i * step), 10 ** (low + (i + 1) * step)
        return f"density {a:.2g} to {b:.2g}: {counts[i]:,} features"

    return bar_chart(counts, ticks, title="feature density histogram (log10)", bar_title=tip, **kw)
