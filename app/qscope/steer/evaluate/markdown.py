"""A recipe as Markdown: the verdict, the spec, the sweep table, examples, prompts and the identity of what it
ran on. Text only; the page at /recipes/{id} draws the plots.

Every text a person or the model wrote (prompts, the instruction, generated examples, names, notes) goes in
through `_text`, so HTML in it stays text wherever the Markdown is rendered (`<script>` arrives as `&lt;script&gt;`)
and Markdown in it makes no link, image, code span, emphasis or table cell."""

from __future__ import annotations

from qscope.steer.evaluate.result import EvalResult, Interval, percent


def _pct(iv: Interval) -> str:
    if iv.mean is None:
        return "–"
    return f"{percent(iv.mean, 1)} [{percent(iv.lo or 0.0, 1)[:-1]}, {percent(iv.hi or 0.0, 1)[:-1]}]"


def _num(iv: Interval) -> str:
    if iv.mean is None:
        return "–"
    return f"{iv.mean:.3g} [{iv.lo:.3g}, {iv.hi:.3g}]"


def _share(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def _promoted(result: EvalResult) -> str:
    if not result.promoted:
        return "the store gives it none"
    return f"{len(result.promoted)} tokens, ids " + ", ".join(f"{t} ({w:.2f})" for t, w in result.promoted.items())


_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}  # HTML (tags, comments, entities) stays text
_MARKUP = set("\\`*_[]|")  # links and images need [ ], code spans `, emphasis * _, table cells |


def _text(text: str) -> str:
    """User or model text as inline Markdown that renders as exactly that text, on one line."""
    out = []
    for ch in text:
        out.append(_ENTITIES.get(ch) or ("\\" + ch if ch in _MARKUP else ch))
    return "".join(out).replace("\r\n", "\n").replace("\n", " ⏎ ").replace("\r", " ⏎ ")


def to_markdown(result: EvalResult, title: str, url: str = "") -> str:
    """The whole recipe as one Markdown document."""
    v, spec = result.verdict, result.request.spec
    works = v.strength is not None and v.status != "no better than controls"
    strength = f" at strength {v.strength:g}" if works else ""
    verdict = (
        f"**Verdict: {v.status}{strength}** (goal: {v.goal} the concept, measured by what the feature "
        f"{v.measure}). {v.reason}."
    )
    lines = [f"# Recipe: {_text(title)}", "", verdict, ""]
    if url:
        lines += [f"Permalink: {url} (JSON: {url}.json)", ""]
    lines += ["## Intervention", "", "| SAE | feature | mode | strength sign |", "|---|---|---|---|"]
    lines += [
        f"| {_text(f.sae_id)} | {f.feature} | {f.mode} | {'-' if f.strength < 0 else '+'} |" for f in spec.features
    ]
    lines += [
        "",
        f"Concept read back: feature {result.concept.feature} of {result.concept.sae_id}. Sweep: "
        f"{', '.join(f'{s:g}' for s in result.strengths)}. Seeds: {', '.join(map(str, result.seeds))}. "
        f"Where: {spec.where}; temperature {spec.temperature:g}, top-p {spec.top_p:g}, "
        f"{spec.max_new_tokens} new tokens. Fluency threshold: perplexity at most "
        f"{result.request.max_ppl_ratio:g}x the unsteered.",
        "",
        f"Measures: *reads* = the share of generated tokens where the concept feature fires (read back through the "
        f"unsteered model); *writes* = the share of generated tokens among its top promoted tokens, weighted by "
        f"logit effect ({_promoted(result)}). The verdict goes by **{v.measure}**: {result.measure_reason}.",
        "",
    ]
    if result.request.instruction:
        lines += [f"Instruction (prompt-only arms): {_text(result.request.instruction)}", ""]
    for i, c in enumerate(result.controls):
        lines.append(f"Random control set {i + 1}: " + ", ".join(f"{f.sae_id}#{f.feature}" for f in c))
    lines += _diffmean(result) + _comparison(result)
    lines += [
        "",
        "## Sweep",
        "",
        "| arm | strength | rows | reads (fires) | mean activation | writes (promoted) | perplexity "
        "| ppl / unsteered |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in result.table:
        s = "–" if p.strength is None else f"{p.strength:g}"
        lines.append(
            f"| {p.arm} | {s} | {p.rows} | {_pct(p.concept)} | {_num(p.concept_act)} | {_pct(p.writes)} | "
            f"{_num(p.ppl)} | {_num(p.ppl_ratio)} |"
        )
    names = list(dict.fromkeys(k for p in result.table for k in p.metrics))
    if names:
        lines += ["", "| arm | strength | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
        for p in result.table:
            s = "–" if p.strength is None else f"{p.strength:g}"
            lines.append(
                f"| {p.arm} | {s} | " + " | ".join(_num(p.metrics[k]) if k in p.metrics else "–" for k in names) + " |"
            )
    lines += _examples(result)
    lines += ["", "## Prompts", ""] + [f"{i + 1}. {_text(p)}" for i, p in enumerate(result.prompts)]
    ident = result.identity
    lines += ["", "## Ran on", "", f"- model `{ident.model_id}` ({ident.device}, {ident.dtype})"]
    lines += [f"  - `{f.name}` sha256 `{f.sha256}`" for f in ident.model]
    lines += [f"- SAE `{f.name}`: `{f.path}` sha256 `{f.sha256}`" for f in ident.saes]
    if ident.store:
        lines.append(f"- feature store `{ident.store.name}` sha256 `{ident.store.sha256}`")
    lines += [
        f"- qscope {ident.qscope_version}, torch {ident.torch_version}, transformers "
        f"{ident.transformers_version}; {len(result.rows)} rows in {result.seconds:.1f} s "
        f"({result.rows_per_s:.1f} rows/s)"
    ]
    lines += [f"- note: {_text(n)}" for n in result.notes]
    return "\n".join(lines) + "\n"


def _examples(result: EvalResult) -> list[str]:
    ex = result.examples
    if not ex.best:
        return []
    out = ["", f"## Examples at strength {ex.strength:g}" if ex.strength is not None else "## Examples", ""]
    for name, items in (("Most", ex.best), ("Least", ex.worst)):
        if items:
            out += [
                f"{name} concept ({result.verdict.measure}):",
                "",
                "| prompt | steered | unsteered | reads | writes |",
                "|---|---|---|---|---|",
            ]
            out += [
                f"| {_text(e.prompt)} | {_text(e.text)} | {_text(e.unsteered)} | {_share(e.concept)} | "
                f"{_share(e.writes)} |"
                for e in items
            ]
            out.append("")
    return out


def _diffmean(result: EvalResult) -> list[str]:
    dm = result.diffmean
    if dm is None:
        return []
    cosine = (
        f"; cosine with the first steered feature's decoder direction {dm.cosine:.2f}" if dm.cosine is not None else ""
    )
    return [
        "",
        f"DiffMean arm: mean(residual | with) - mean(residual | without) at {_text(dm.site)} ({_text(dm.source)}: "
        f"{dm.n_with} texts with the concept, {dm.n_without} without), {'added' if dm.sign > 0 else 'subtracted'}; "
        f"strength 1 = {dm.residual_norm:.4g}, the mean residual norm there over the evaluation's prompts; "
        f"|difference| {dm.direction_norm:.4g}{cosine}.",
    ]


def _comparison(result: EvalResult) -> list[str]:
    c = result.comparison
    if c is None:
        return []
    out = [
        "",
        "## Arms compared",
        "",
        f"**{_text(c.sentence)}.**",
        "",
        f"Each arm at its best {c.measure} ({c.goal}) among its points with perplexity at most "
        f"{c.max_ppl_ratio:g}x the unsteered; an interval that overlaps the best's is as good as it.",
        "",
        "| rank | arm | strength | measure | ppl / unsteered | within the bound |",
        "|---|---|---|---|---|---|",
    ]
    for i, b in enumerate(c.arms):
        s = "–" if b.strength is None else f"{b.strength:g}"
        ratio = "–" if b.ppl_ratio is None else f"{b.ppl_ratio:.2f}"
        rank = str(i + 1) if b.fluent else "–"
        mark = " (as good as the best)" if b.arm in c.as_good else ""
        out.append(f"| {rank} | {b.name}{mark} | {s} | {_pct(b.score)} | {ratio} | {'yes' if b.fluent else 'no'} |")
    return out
