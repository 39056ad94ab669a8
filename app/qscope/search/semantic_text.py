"""What the semantic index embeds for a feature: its label, top tokens and the tokens it promotes most."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from qscope.store.queries import Store


@dataclass
class FeatureText:
    """What the semantic index embeds for one feature."""

    sae_id: str
    feature: int
    text: str


def feature_text(label: str, top_tokens: list[str], promoted: list[str]) -> str:
    """'label words; tokens: a b c; promotes: x y z' (the label's arrows and dots are display marks)."""
    tops = " ".join(t.strip() for t in top_tokens if t.strip())
    logits = " ".join(t.strip() for t in promoted if t.strip())
    words = (label or "").replace("·", " ").replace("→", " ").split()
    return f"{' '.join(words)}; tokens: {tops}; promotes: {logits}"


def feature_texts(store: Store, rows: Iterable[tuple]) -> list[FeatureText]:
    """FeatureTexts from (sae_id, feature, label, top token ids, promoted token ids) rows (Reader.embedding_inputs)."""
    return [
        FeatureText(sae_id, f, feature_text(label, store.decode(top or []), store.decode(logit_ids or [])))
        for sae_id, f, label, top, logit_ids in rows
    ]
