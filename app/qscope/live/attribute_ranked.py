"""Why this token?: the attribution of one token of a text or a generation on a store's live model, ranked per
feature and labelled, for the /attribute panel and POST /api/attribute.

Position `pos` names the token explained; the model predicted it at `pos - 1`, so the logits read and the last
position attributed are there (`at`). `pos` may be one past the end: the token the model would produce next.
A feature's attribution here is its sum over the positions where it fires (qscope.live.attribute gives them
one by one); the list keeps the few positions that carry most of it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from transformers import PreTrainedTokenizerBase

from qscope.live.attribute import Attribution, AttributionError, AttributionTarget, HookFn, SaeAttribution, attribute
from qscope.live.runner import Limits, LiveModel, LiveUnavailable

N_POSITIONS = 5  # positions listed per feature
_TOKEN_ID = re.compile(r"#(\d+)")


class WhyError(ValueError):
    """Input an attribution cannot use: the message names the parameter and what to change (HTTP 422)."""


@dataclass
class TokenChoice:
    id: int
    text: str  # as the store's vocabulary spells it
    prob: float | None = None  # the model's probability of it at the explained position
    reads: str | None = None  # the characters it is part of in the text, where it holds part of one


@dataclass
class PositionShare:
    """One position's part of a feature's attribution."""

    pos: int
    token: str  # the token on its own
    text: str  # the characters it is part of in the text (its own text when it holds whole characters)
    act: float
    attr: float


@dataclass
class FeatureCause:
    sae_id: str
    layer: int | None
    feature: int
    label: str
    attribution: float  # summed over the positions where it fires
    activation: float  # at the prediction position `at` (0 when it does not fire there)
    max_act: float | None  # its largest activation in the harvest (None: not in the store)
    positions: list[PositionShare]  # largest |attribution| first


@dataclass
class SaeTerms:
    """One SAE's terms: features + error + bias = total (a first-order estimate beside the actual target)."""

    sae_id: str
    layer: int | None
    active: int  # (position, feature) pairs that fire
    features: float
    error: float
    bias: float
    total: float
    strip: list[float]  # per position 0..at: the attribution of its features
    strip_error: list[float]  # per position: the error term's


@dataclass
class Why:
    model_id: str
    tokens: list[str]  # the sequence up to the explained token (included when it exists), each token on its own
    shown: list[str]  # each token's piece of that text (qscope.tokens.readable: split characters whole)
    chars: list[str]  # each token's characters in that text (qscope.tokens.characters)
    pos: int  # the explained token
    at: int  # where it was predicted (pos - 1)
    target: TokenChoice
    contrast: TokenChoice | None
    value: float  # logit(target) - logit(contrast): the quantity attributed
    top: list[TokenChoice]  # the model's most likely tokens at `at`
    saes: list[SaeTerms]
    features: list[FeatureCause]  # the largest positive attributions, largest first
    against: list[FeatureCause]  # the most negative, most negative first


def resolve_token(tokenizer: PreTrainedTokenizerBase, text: str, vocab_size: int, name: str = "target") -> int:
    """The one token `text` names: '#123' (an id), a string that encodes to exactly one token, or a
    vocabulary entry as written ('Ġthe'); WhyError saying why otherwise."""
    if match := _TOKEN_ID.fullmatch(text.strip()):
        token = int(match.group(1))
        if token >= vocab_size:
            raise WhyError(f"{name}: token id {token} is not in the vocabulary (ids 0..{vocab_size - 1})")
        return token
    if not text:
        raise WhyError(f"{name} is empty: give one token (text, or '#id')")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) == 1:
        return ids[0]
    exact = tokenizer.get_vocab().get(text)
    if exact is not None:
        return exact
    pieces = ", ".join(repr(tokenizer.decode([i])) for i in ids[:8]) + (", …" if len(ids) > 8 else "")
    raise WhyError(
        f"{name} {text!r} is not one token of the vocabulary: it encodes to {len(ids)} tokens "
        f"({pieces}); give one of them (a leading space belongs to the token), or '#id'"
    )


def check_position(pos: int, n_tokens: int, what: str = "the text") -> None:
    if n_tokens == 0:
        raise WhyError(f"{what} has no tokens: there is nothing to explain")
    if pos == 0:
        raise WhyError(f"pos 0 is the first token of {what}: nothing before it predicts it; give 1..{n_tokens}")
    if not 0 < pos <= n_tokens:
        raise WhyError(
            f"pos {pos} is outside {what}: it has {n_tokens} tokens; give 1..{n_tokens} "
            f"({n_tokens} explains the token the model would produce next)"
        )


def explain(
    runner: LiveModel,
    ids: Sequence[int],
    pos: int,
    limits: Limits,
    *,
    target: str | None = None,
    contrast: str | None = None,
    sae_ids: Sequence[str] = (),
    steer: Mapping[str, HookFn] | None = None,
    n: int = 20,
) -> Why:
    """Attribute token `pos` of `ids` (see the module docstring); `steer` replays a steered run's edits."""
    lm, saes = runner.load()
    if unknown := [s for s in sae_ids if s not in saes]:
        raise WhyError(f"sae_id: model {runner.model_id} has no SAE {unknown[0]!r}; it has {', '.join(saes)}")
    chosen = {s: saes[s] for s in sae_ids} if sae_ids else saes
    check_position(pos, len(ids))
    tokenizer = lm.require_tokenizer()
    token = resolve_token(tokenizer, target, lm.vocab_size) if target else (ids[pos] if pos < len(ids) else None)
    other = resolve_token(tokenizer, contrast, lm.vocab_size, "contrast") if contrast else None
    if other is not None and other == token:
        raise WhyError("contrast is the target token itself: their difference is always 0")
    if not runner.lock.acquire(timeout=limits.wait_s):
        raise LiveUnavailable(f"the model is busy (waited {limits.wait_s:g} s for other runs); try again shortly")
    try:
        att = attribute(lm.model, chosen, ids[:pos], AttributionTarget(token, other), steer)
    except AttributionError as e:
        raise WhyError(str(e)) from e
    finally:
        runner.lock.release()
    return _why(runner, list(ids[: pos + 1]), pos, att, n)


def _why(runner: LiveModel, ids: list[int], pos: int, att: Attribution, n: int) -> Why:
    store, at = runner.store, pos - 1
    tokens = store.decode(ids) if ids else []
    chars = store.characters(ids)
    probs = dict(zip(att.top_ids, att.top_probs, strict=True))
    token = att.target.token
    assert token is not None, "attribute() resolves the target token"
    target = TokenChoice(token, store.decode([token])[0], att.prob)
    if pos < len(ids) and ids[pos] == token and chars[pos] != target.text:
        target.reads = chars[pos]
    contrast = None
    if att.target.contrast is not None:
        contrast = TokenChoice(att.target.contrast, store.decode([att.target.contrast])[0])
    top = [TokenChoice(t, store.decode([t])[0], probs[t]) for t in att.top_ids]
    saes = [_summary(s, at + 1) for s in att.saes]
    best, worst = _extremes(att.saes, n)
    rows = _rows(runner, [(att.saes[i].sae_id, f) for i, f, _ in best + worst])

    def causes(found: list[tuple[int, int, float]]) -> list[FeatureCause]:
        return [
            _cause(att.saes[i], f, total, at, tokens, chars, rows.get((att.saes[i].sae_id, f))) for i, f, total in found
        ]

    shown, model_id = store.shown(ids), runner.model_id
    return Why(
        model_id, tokens, shown, chars, pos, at, target, contrast, att.value, top, saes, causes(best), causes(worst)
    )


def _summary(s: SaeAttribution, T: int) -> SaeTerms:
    strip = np.bincount(s.pos, weights=s.attr, minlength=T)
    return SaeTerms(
        s.sae_id, s.layer, len(s.pos), s.features, s.error, s.bias, s.total, strip.tolist(), s.error_T.tolist()
    )


def _extremes(saes: list[SaeAttribution], n: int) -> tuple[list[tuple], list[tuple]]:
    """(sae index, feature, total) of the n largest positive and the n most negative per-feature totals."""
    found = []
    for i, s in enumerate(saes):
        feats, inv = np.unique(s.feature, return_inverse=True)
        totals = np.bincount(inv, weights=s.attr, minlength=len(feats))
        found += [(i, int(f), float(t)) for f, t in zip(feats, totals, strict=True)]
    found.sort(key=lambda x: -x[2])
    best = [x for x in found[:n] if x[2] > 0]
    worst = [x for x in reversed(found[-n:]) if x[2] < 0 and x not in best]
    return best, worst


def _rows(runner: LiveModel, keys: list[tuple[str, int]]) -> dict:
    if not keys:
        return {}
    with runner.store.reader() as r:
        return r.rows(keys)


def _cause(
    s: SaeAttribution, feature: int, total: float, at: int, tokens: list[str], chars: list[str], row
) -> FeatureCause:
    mine = np.flatnonzero(s.feature == feature)
    carry = mine[s.attr[mine] != 0]  # the last layer's features at earlier positions reach no logit: exactly 0
    order = carry[np.argsort(-np.abs(s.attr[carry]), kind="stable")][:N_POSITIONS]
    shares = [
        PositionShare(int(p), tokens[p], chars[p], float(s.act[j]), float(s.attr[j]))
        for j, p in zip(order, s.pos[order], strict=True)
    ]
    here = mine[s.pos[mine] == at]
    act = float(s.act[here[0]]) if len(here) else 0.0
    return FeatureCause(
        s.sae_id, s.layer, feature, row.label if row else "", total, act, row.max_act if row else None, shares
    )
