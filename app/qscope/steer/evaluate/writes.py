"""What a steered feature reads and what it writes, and which of the two an evaluation's verdict goes by.

A feature can be judged on the output in two ways:

- *reads* (the concept as qscope.steer.evaluate.measures reads it back): the share of generated tokens where the
  feature fires when the text runs again through the unsteered model. Right for a feature that detects
  something in its input ("Python code", "a quote's author line").
- *writes*: the share of generated tokens that are among the feature's top promoted tokens (its logit effects,
  W_dec[f] @ W_U, from the feature store), each weighted by its logit effect over the strongest one's, so the
  top token counts 1 and the tenth counts in proportion: writes = sum_k w(token_k) / K over the K generated
  tokens, w = 0 off the list. Right for a feature whose job is to make tokens likely (one that promotes `\\n`
  and `,\\n` raises their share in the output, whether or not it fires on them).

The goal names the measure (`measure`: reads | writes); `auto` picks by comparing how sharp each side of the
feature is, both read from its top contexts in the store, on the same footing (SHARP_TOKENS tokens each):

- reads sharpness: the share of its top contexts whose marked token (where it fires at its max) is one of its
  SHARP_TOKENS most common marked tokens, those counted on the other half of the contexts (the tokens are
  picked on the even ranks and the share taken on the odd ones: picked and scored on the same contexts, five
  tokens would cover most of a few dozen contexts whatever the feature);
- writes sharpness: the share of its top contexts whose next token (the one the model predicted there) is one
  of its SHARP_TOKENS top promoted tokens (picked from the weights, not from these contexts).

`writes` when the writes sharpness is the larger (its logit effects say more about what follows where it fires
than its input tokens say about where it fires), else `reads`; `reads` when the store has no logit effects,
fewer than two top contexts, or none with a next token. On the tiny default store it picks writes for 23 of the
887 live features.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from qscope.store.queries import FeatureDetail

Measure = Literal["reads", "writes"]
WRITE_TOKENS = 10  # promoted tokens the writes measure counts
SHARP_TOKENS = 5  # tokens per side the auto rule compares


@dataclass(frozen=True)
class FeatureProfile:
    """What the store says of the concept feature: its promoted tokens (id -> weight, the strongest 1.0) and the
    two sharpnesses of the auto rule (None where the store cannot tell)."""

    weights: dict[int, float] = field(default_factory=dict)
    reads_sharpness: float | None = None
    writes_sharpness: float | None = None


def write_weights(effects: Sequence[tuple[int, float]], n: int = WRITE_TOKENS) -> dict[int, float]:
    """{token id: logit effect / the strongest one's} for the n strongest positive effects (strongest first)."""
    top = [(t, v) for t, v in effects if v > 0][:n]
    if not top:
        return {}
    peak = max(v for _, v in top)
    return {t: v / peak for t, v in top}


def writes_share(ids: Sequence[int], weights: dict[int, float]) -> float:
    """The weighted share of `ids` among the promoted tokens (see the module docstring); NaN for no ids."""
    if not ids:
        return math.nan
    return math.fsum(weights.get(int(t), 0.0) for t in ids) / len(ids)


def profile_of(detail: FeatureDetail) -> FeatureProfile:
    """The profile of a feature from its store card: logit effects and top contexts."""
    weights = write_weights([(e.token_id, e.value) for e in detail.logits_pos])
    top = [c for c in detail.top if c.act > 0]
    if len(top) < 2:
        return FeatureProfile(weights)
    marked = [c.tokens[c.pos] for c in top]
    common = {t for t, _ in Counter(marked[0::2]).most_common(SHARP_TOKENS)}  # picked on the even ranks
    reads = sum(t in common for t in marked[1::2]) / len(marked[1::2])  # scored on the odd ones
    promoted = {e.token for e in detail.logits_pos[:SHARP_TOKENS] if e.value > 0}
    following = [c.tokens[c.pos + 1] for c in top if c.pos + 1 < len(c.tokens)]
    writes = sum(t in promoted for t in following) / len(following) if following and promoted else None
    return FeatureProfile(weights, reads, writes)


def choose(asked: str, profile: FeatureProfile | None) -> tuple[Measure, str]:
    """The measure the verdict goes by and why: the one asked for, or (auto) the sharper side."""
    if asked in ("reads", "writes"):
        return asked, f"the request asked for {asked}"  # type: ignore[return-value]
    if profile is None or profile.writes_sharpness is None or profile.reads_sharpness is None:
        return "reads", "auto: the store gives no logit effects or no context to compare them with, so reads"
    r, w = profile.reads_sharpness, profile.writes_sharpness
    measure: Measure = "writes" if w > r else "reads"
    return measure, (
        f"auto: {measure}, since the feature's top contexts are followed by one of its {SHARP_TOKENS} top promoted "
        f"tokens {100 * w:.0f}% of the time and marked on one of its {SHARP_TOKENS} most common marked tokens "
        f"{100 * r:.0f}% of the time (counted on the other half of its top contexts)"
    )
