"""What /inspect shows about live runs: the token x feature view of one text, and the comparison of two sets.

Both rank features by activation relative to the feature's harvested max (so a rare, weak-but-telling feature
is not drowned by a dense, strong one) over the tokens the harvest would rank (no position 0, no sinks).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qscope.live.runner import TextRun
from qscope.store.queries import FeatureRow, Store

SET_SEPARATOR = "---"  # a line holding only this separates the texts of one set in compare mode


@dataclass
class FeatureOnText:
    model_id: str
    row: FeatureRow
    acts: list[float]  # activation on every token of the text
    max: float  # over ranked tokens
    rel: float  # max / the feature's harvested max_act
    argmax: int


@dataclass
class TokenTop:
    sae_id: str
    feature: int
    act: float
    rel: float
    label: str


@dataclass
class Analysis:
    model_id: str
    text: str
    tokens: list[str]  # each token's text on its own (shown on hover)
    ranked: list[bool]
    features: list[FeatureOnText]  # strongest first
    per_token: list[list[TokenTop]]  # each token's strongest features
    strength: list[float]  # per token: its strongest feature's relative activation, over the text's peak (0..1)
    shown: list[str]  # each token's piece of the text (qscope.tokens.readable)


@dataclass
class Difference:
    model_id: str
    row: FeatureRow
    mean_a: float  # mean over set A's texts of the max activation on the text
    mean_b: float
    rel_diff: float  # (mean_a - mean_b) / the feature's harvested max_act


@dataclass
class TextSetComparison:
    model_id: str
    texts_a: list[str]
    texts_b: list[str]
    features: list[Difference]  # largest |rel_diff| first


def split_set(text: str) -> list[str]:
    """The texts of one compare side: separated by lines holding only '---'; blank ones dropped."""
    parts: list[str] = []
    cur: list[str] = []
    for line in text.splitlines():
        if line.strip() == SET_SEPARATOR:
            parts.append("\n".join(cur))
            cur = []
        else:
            cur.append(line)
    parts.append("\n".join(cur))
    return [p.strip("\n") for p in parts if p.strip()]


def _dense(run: TextRun) -> dict[tuple[str, int], np.ndarray]:
    """(sae_id, feature) -> float32 [T] activations, for every feature that fired anywhere in the run."""
    out: dict[tuple[str, int], np.ndarray] = {}
    for a in run.acts:
        for pos, f, act in zip(a.pos, a.feature, a.act, strict=True):
            out.setdefault((a.sae_id, int(f)), np.zeros(len(run.tokens), np.float32))[pos] = act
    return out


def _rows(store: Store, keys) -> dict[tuple[str, int], FeatureRow]:
    with store.reader() as r:
        return r.rows(list(keys))


def analyze(run: TextRun, store: Store, n_features: int = 24, per_token: int = 8) -> Analysis:
    dense = _dense(run)
    rows = _rows(store, dense)
    ranked_T = np.asarray(run.ranked, dtype=bool)
    found = []
    for key, acts_T in dense.items():
        row = rows.get(key)
        if row is None:
            continue
        masked_T = np.where(ranked_T, acts_T, 0.0)
        top = float(masked_T.max())
        rel = top / row.max_act if row.max_act > 0 else 0.0
        found.append(FeatureOnText(run.model_id, row, acts_T.tolist(), top, rel, int(masked_T.argmax())))
    found.sort(key=lambda f: (-f.rel, -f.max))
    tops: list[list[TokenTop]] = [[] for _ in run.tokens]
    for key, acts_T in dense.items():
        row = rows.get(key)
        for pos in np.flatnonzero(acts_T):
            rel = float(acts_T[pos]) / row.max_act if row and row.max_act > 0 else 0.0
            tops[pos].append(TokenTop(key[0], key[1], float(acts_T[pos]), rel, row.label if row else ""))
    per_tok = [sorted(t, key=lambda x: -x.rel)[:per_token] for t in tops]
    # shading over ranked tokens only: position 0 and sinks would otherwise saturate the scale
    strong = [t[0].rel if t and ok else 0.0 for t, ok in zip(per_tok, run.ranked, strict=True)]
    peak = max(strong, default=0.0) or 1.0
    strength = [min(s / peak, 1.0) for s in strong]
    return Analysis(run.model_id, run.text, run.tokens, run.ranked, found[:n_features], per_tok, strength, run.shown)


def _max_per_text(run: TextRun) -> dict[tuple[str, int], float]:
    ranked_T = np.asarray(run.ranked, dtype=bool)
    return {k: float(np.where(ranked_T, v, 0.0).max()) for k, v in _dense(run).items()}


def compare(runs_a: list[TextRun], runs_b: list[TextRun], store: Store, n: int = 30) -> TextSetComparison:
    """Features whose activation (max per text, mean over the set) differs most between the two sets."""
    maxes_a = [_max_per_text(r) for r in runs_a]
    maxes_b = [_max_per_text(r) for r in runs_b]
    keys = set().union(*maxes_a, *maxes_b)
    rows = _rows(store, keys)
    diffs = []
    for key in keys:
        row = rows.get(key)
        if row is None or row.max_act <= 0:
            continue
        mean_a = sum(m.get(key, 0.0) for m in maxes_a) / max(len(maxes_a), 1)
        mean_b = sum(m.get(key, 0.0) for m in maxes_b) / max(len(maxes_b), 1)
        model_id = store.saes[key[0]].model_id
        diffs.append(Difference(model_id, row, mean_a, mean_b, (mean_a - mean_b) / row.max_act))
    diffs.sort(key=lambda d: (-abs(d.rel_diff), d.row.sae_id, d.row.feature))
    model_id = runs_a[0].model_id if runs_a else (runs_b[0].model_id if runs_b else "")
    return TextSetComparison(model_id, [r.text for r in runs_a], [r.text for r in runs_b], diffs[:n])
