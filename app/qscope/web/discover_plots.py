"""Inline SVG for the discover pages, drawn on the server: a feature's activation on every example (a strip),
and the footprint comparison (only A | shared | only B). Numbers and escaped names only go into the markup."""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

MAX_BARS = 480  # past this many examples, neighbors share a bar (their max), so a page stays light


def _bars(values: Sequence[float], labels: Sequence[int], test: Sequence[bool]) -> tuple[list, int]:
    """[(value, is_a, is_test)] in drawing order (set A, then set B), binned to at most MAX_BARS; and how many
    bars set A takes."""
    out, n_a = [], 0
    for side in (1, 0):
        idx = [i for i in range(len(values)) if (labels[i] == 1) == (side == 1)]
        per = max(1, -(-len(values) // MAX_BARS))
        for start in range(0, len(idx), per):
            group = idx[start : start + per]
            out.append((max(values[i] for i in group), side == 1, any(test[i] for i in group)))
        n_a = len(out) if side == 1 else n_a
    return out, n_a


def strip(
    values: Sequence[float],
    labels: Sequence[int],
    test: Sequence[bool],
    threshold: float | None = None,
    width: int = 240,
    height: int = 28,
) -> Markup:
    """One thin bar per example (set A first, then set B; test examples darker), height by activation, the
    threshold as a line."""
    bars, n_a = _bars(values, labels, test)
    top = max(max(values, default=0.0), threshold or 0.0) or 1.0
    bw = width / max(len(bars), 1)
    parts = [
        f'<svg class="strip" viewBox="0 0 {width} {height}" preserveAspectRatio="none" role="img" '
        f'aria-label="activation on each example">'
    ]
    for j, (v, is_a, is_test) in enumerate(bars):
        if v <= 0:
            continue
        h = (height - 2) * v / top
        cls = ("sa" if is_a else "sb") + (" te" if is_test else "")
        parts.append(
            f'<rect class="{cls}" x="{j * bw:.2f}" y="{height - h:.2f}" width="{max(bw, 0.6):.2f}" height="{h:.2f}"/>'
        )
    parts.append(f'<line class="cut" x1="{n_a * bw:.2f}" y1="0" x2="{n_a * bw:.2f}" y2="{height}"/>')
    if threshold is not None and threshold > 0:
        y = height - (height - 2) * threshold / top
        parts.append(f'<line class="thr" x1="0" y1="{y:.2f}" x2="{width}" y2="{y:.2f}"/>')
    parts.append("</svg>")
    return Markup("".join(parts))


def overlap_bar(
    name_a: str, name_b: str, only_a: int, shared: int, only_b: int, width: int = 720, height: int = 64
) -> Markup:
    """Three segments in proportion: features only A has, both have, only B has; counts written in them."""
    total = max(only_a + shared + only_b, 1)
    parts = [f'<svg class="overlap" viewBox="0 0 {width} {height}" role="img" aria-label="footprint overlap">']
    x = 0.0
    for cls, count, label in (
        ("oa", only_a, f"only {name_a}"),
        ("ob2", shared, "both"),
        ("ob", only_b, f"only {name_b}"),
    ):
        w = width * count / total
        if w > 0:
            parts.append(
                f'<rect class="{cls}" x="{x:.1f}" y="4" width="{w:.1f}" height="{height - 26}">'
                f"<title>{escape(label)}: {count}</title></rect>"
            )
            if w > 40:
                parts.append(
                    f'<text class="seg" x="{x + w / 2:.1f}" y="{(height - 22) / 2 + 9:.1f}" '
                    f'text-anchor="middle">{count}</text>'
                )
        x += w
    parts.append(f'<text class="tick" x="0" y="{height - 4}">{escape(f"only {name_a}: {only_a}")}</text>')
    parts.append(f'<text class="tick" x="{width / 2:.0f}" y="{height - 4}" text-anchor="middle">both: {shared}</text>')
    parts.append(
        f'<text class="tick" x="{width}" y="{height - 4}" text-anchor="end">'
        f"{escape(f'only {name_b}: {only_b}')}</text></svg>"
    )
    return Markup("".join(parts))


def share_bar(value: float, scale: float = 1.0) -> Markup:
    """A small horizontal bar for a share in 0..1 (of `scale`)."""
    pct = 0.0 if scale <= 0 else min(max(value / scale, 0.0), 1.0) * 100
    return Markup(f'<span class="dbar"><span style="width:{pct:.1f}%"></span></span>')
