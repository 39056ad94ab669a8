"""The prompts of `qscope explain`, built from a feature's harvested contexts, and the parsing of the answers.

A feature's contexts (qscope.store: top activations, then interval samples per activation bin) are split in two:
the strongest top contexts and one sample of each of the strongest bins are *shown* to the explainer; the rest are
*held out* for scoring, taken in turn from the remaining top contexts and the bins so that they span the whole
activation range. Every context is cut to a window around its marked token.

The harvest keeps a token that is both among a feature's top activations and in an interval bin twice (a top
context and an interval sample of the same window and position), so the split goes by a context's identity
(`context_key`): each context is used once, shown or held out, never both, so a score never counts a text the
explainer saw.

The explainer sees each shown context with the tokens where the feature fires marked <<like this>> and the
activations of its strongest marked tokens on a 0-10 scale (10 = the feature's max activation), and the tokens the
feature promotes and suppresses (its logit effects). It answers one short phrase; `clean_explanation` takes the
first line that says something and drops the wrappers models add ("Explanation:", quotes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from qscope.store.queries import Context, FeatureDetail

MARK_MIN = 0.05  # a token is marked where the feature fires at >= 5% of its max activation
MAX_EXPLANATION_CHARS = 200
LISTED_ACTS = 5  # activations listed under an example: those of its strongest marked tokens

EXPLAINER_SYSTEM = (
    "You are a careful interpretability researcher. You study one feature of a language model: a direction inside "
    "the model that is active on some tokens and not on others. From texts where it is active you write a short "
    "explanation of what it responds to."
)
SCORER_SYSTEM = (
    "You check an explanation of a language-model feature against texts. A feature is active on some tokens and "
    "inactive on others; the explanation says what it responds to. You answer only with a list of 0s and 1s."
)


ContextKey = tuple[int, int, tuple[str, ...]]


def context_key(ctx: Context) -> ContextKey:
    """What identifies a harvested context: its corpus window, the marked token's index in the stored cut, and the
    cut's tokens. The window and the index alone do not: a cut starts `before` tokens ahead of its marked token,
    so every marked token that far into its window has the same index; the tokens tell those apart."""
    return ctx.window, ctx.pos, tuple(ctx.tokens)


@dataclass
class ContextExample:
    """One context window: its tokens and the feature's activation on each (0 where it does not fire)."""

    tokens: list[str]
    acts: list[float]
    key: ContextKey | None = None  # the identity of the context it was cut from (context_key)


@dataclass
class FeatureExamples:
    """What the prompts of one feature are made from."""

    sae_id: str
    feature: int
    max_act: float
    shown: list[ContextExample]  # to the explainer
    held_out: list[ContextExample]  # firing contexts kept for scoring
    promotes: list[str] = field(default_factory=list)
    suppresses: list[str] = field(default_factory=list)


def window(ctx: Context, before: int, after: int) -> ContextExample:
    """The context around its marked token, as text a reader (and the explainer) reads: each token's piece of the
    context (`Context.shown`), so a character split over byte tokens is one whole character, never `<0xE6>`;
    the tokens holding only its first bytes are dropped and their activation goes to the token completing it
    (the feature is as active on the character as on its strongest byte)."""
    lo, hi = max(0, ctx.pos - before), min(len(ctx.tokens), ctx.pos + after + 1)
    pieces, acts = list(ctx.shown[lo:hi]), [float(a) for a in ctx.acts[lo:hi]]
    tokens, kept = [], []
    for i, (piece, tok) in enumerate(zip(pieces, ctx.tokens[lo:hi], strict=True)):
        if piece == "" and tok:  # the first bytes of a character (or of one cut off by the window's edge)
            if i + 1 < len(pieces):
                acts[i + 1] = max(acts[i + 1], acts[i])
            continue
        tokens.append(piece)
        kept.append(acts[i])
    return ContextExample(tokens, kept, context_key(ctx))


def split_examples(
    detail: FeatureDetail,
    n_top: int = 10,
    n_bins: int = 5,
    n_held: int = 10,
    before: int = 12,
    after: int = 4,
    n_logits: int = 10,
) -> FeatureExamples:
    """The shown and held-out examples of a feature (see the module docstring)."""
    seen: set[ContextKey] = set()

    def unseen(contexts: list[Context]) -> list[Context]:
        return [c for c in contexts if c.act > 0 and context_key(c) not in seen]

    def take(c: Context) -> Context:
        seen.add(context_key(c))
        return c

    top = unseen(detail.top)
    shown = [take(c) for c in top[:n_top] if context_key(c) not in seen]  # `seen` grows: a repeat is skipped
    bins = [b for b in (unseen(b.contexts) for b in detail.intervals) if b]
    for b in bins[:n_bins]:  # one sample of each strongest bin, the first one not shown already
        if fresh := unseen(b):
            shown.append(take(fresh[0]))
    rest_top = top[n_top:]
    rest_bins = [list(b) for b in bins]
    held: list[Context] = []
    while len(held) < n_held and (rest_top or any(rest_bins)):  # in turn: top, then one of each bin
        if rest_top and context_key(c := rest_top.pop(0)) not in seen:
            held.append(take(c))
        for b in rest_bins:
            while b and len(held) < n_held:
                if context_key(c := b.pop(0)) not in seen:
                    held.append(take(c))
                    break
    return FeatureExamples(
        detail.row.sae_id,
        detail.row.feature,
        detail.row.max_act,
        [window(c, before, after) for c in shown],
        [window(c, before, after) for c in held],
        [e.token for e in detail.logits_pos[:n_logits]],
        [e.token for e in detail.logits_neg[:n_logits]],
    )


def token_text(tok: str) -> str:
    """A token as prompt text: newlines and tabs written as escapes so that each example stays on one line."""
    return tok.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")


def plain(ex: ContextExample) -> str:
    return "".join(token_text(t) for t in ex.tokens)


def marked(ex: ContextExample, marks: list[bool]) -> str:
    """The text with the tokens where `marks` is true wrapped <<like this>> (runs of marked tokens together)."""
    out, open_ = [], False
    for tok, m in zip(ex.tokens, marks, strict=True):
        if m and not open_:
            out.append("<<")
        elif not m and open_:
            out.append(">>")
        open_ = m
        out.append(token_text(tok))
    return "".join(out) + (">>" if open_ else "")


def firing_marks(ex: ContextExample, max_act: float) -> list[bool]:
    return [a > 0 and a >= MARK_MIN * max_act for a in ex.acts]


def scaled(act: float, max_act: float) -> int:
    return max(0, min(10, round(10 * act / max_act))) if max_act > 0 else 0


def explainer_messages(fx: FeatureExamples) -> list[dict]:
    """The chat messages asking for one feature's explanation."""
    lines = []
    for i, ex in enumerate(fx.shown, 1):
        marks = firing_marks(ex, fx.max_act)
        strongest = sorted((i for i, m in enumerate(marks) if m), key=lambda i: -ex.acts[i])[:LISTED_ACTS]
        acts = ", ".join(
            f"{token_text(ex.tokens[i]).strip() or repr(ex.tokens[i])} {scaled(ex.acts[i], fx.max_act)}"
            for i in sorted(strongest)
        )
        lines.append(f"{i}. {marked(ex, marks)}\n   activations: {acts}")
    effects = ""
    if fx.promotes or fx.suppresses:
        effects = (
            f"\n\nTokens the feature makes more likely next: {_token_list(fx.promotes)}"
            f"\nTokens it makes less likely: {_token_list(fx.suppresses)}"
        )
    user = (
        "Texts where the feature is active, strongest first. The tokens where it is active are marked <<like this>>;"
        " under each text, the activations of its strongest marked tokens on a 0-10 scale (10 is the strongest).\n\n"
        + "\n".join(lines)
        + effects
        + "\n\nIn one short phrase (at most 15 words), what does this feature respond to? Answer with the phrase only."
    )
    return [{"role": "system", "content": EXPLAINER_SYSTEM}, {"role": "user", "content": user}]


def _token_list(tokens: list[str]) -> str:
    return ", ".join(repr(t) for t in tokens) or "none"


_PREFIX = re.compile(r"^(?:explanation|answer|phrase|the feature (?:responds to|fires on))\s*[:\-]\s*", re.I)


def clean_explanation(answer: str) -> str:
    """The explanation in a model's answer: its first line with words in it, without the wrappers models add
    ('Explanation:', quotes, list marks), whitespace collapsed, at most MAX_EXPLANATION_CHARS. '' when there is
    none (the runner asks again)."""
    for line in answer.splitlines():
        text = " ".join(line.split())
        text = _unquote(_PREFIX.sub("", text.lstrip("-*#>•0123456789.) ")).strip())
        if re.search(r"\w{2,}", text):
            return text[:MAX_EXPLANATION_CHARS].rstrip()
    return ""


_QUOTES = {'"': '"', "'": "'", "`": "`", "“": "”", "‘": "’"}


def _unquote(text: str) -> str:
    """The text without quotes that wrap all of it (quotes inside it stay)."""
    while len(text) >= 2 and _QUOTES.get(text[0]) == text[-1]:
        text = text[1:-1].strip()
    return text


def scorer_messages(explanation: str, texts: list[str], kind: str) -> list[dict]:
    """Chat messages asking a scorer about numbered texts: kind 'detection' (is the feature active anywhere in
    the text?) or 'fuzzing' (are the marked tokens ones the explanation describes?)."""
    numbered = "\n".join(f"{i}. {t}" for i, t in enumerate(texts, 1))
    if kind == "detection":
        task = "For each text below, answer 1 if the feature is active on some token of it, else 0."
    else:
        task = (
            "In each text below some tokens are marked <<like this>>. Answer 1 if the marked tokens are ones "
            "the explanation describes, else 0."
        )
    user = (
        f"Explanation of the feature: {explanation}\n\n{task}\n\n{numbered}\n\nAnswer with a list of "
        f"{len(texts)} numbers (0 or 1), one per text in order, like [1, 0, 1]. Nothing else."
    )
    return [{"role": "system", "content": SCORER_SYSTEM}, {"role": "user", "content": user}]


def parse_answers(answer: str, n: int) -> list[bool | None]:
    """The scorer's n verdicts: the 0s and 1s of its first bracketed list (or, without one, of the whole answer),
    in order; None for each verdict that is missing."""
    found = re.search(r"\[([^\]]*)\]", answer)
    digits = re.findall(r"(?<![\d.])[01](?![\d.])", found.group(1) if found else answer)
    verdicts: list[bool | None] = [d == "1" for d in digits[:n]]
    return verdicts + [None] * (n - len(verdicts))
