"""Concept search over explanations: the automatic ones (`qscope explain`) and the explanations and notes people
wrote, found by their words and by meaning (all-MiniLM-L6-v2 embeddings, as the semantic index).

The texts come from a source given by the app (qscope.explain.service.Explained): a cheap signature that changes
whenever any text changes, and the texts themselves. The embeddings are kept in memory, one per distinct text, so
a new explanation costs one embedding, not a rebuild. A hit is a feature whose text holds every query word (the
start of a word), or whose text is close in meaning (cosine at least MIN_COSINE); the searcher ranks these hits
before those of every other kind.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qscope.search.embedder import Embedder

MIN_COSINE = 0.35  # all-MiniLM-L6-v2: unrelated short texts score about 0-0.25, related ones above 0.4


@dataclass(frozen=True)
class ExplainedText:
    store: Path  # the feature store the feature is in
    sae_id: str
    feature: int
    text: str
    who: str  # 'auto (model name)' or 'note by NAME'
    at_chance: bool = False  # an automatic explanation whose scores do not beat chance: never ranked first


Source = tuple[Callable[[], str], Callable[[], list[ExplainedText]]]  # (signature, texts)


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def holds_words(q_words: list[str], text: str) -> bool:
    words = _words(text)
    return bool(q_words) and all(any(w.startswith(qw) for w in words) for qw in q_words)


class ExplanationSearch:
    def __init__(self, embedder: Embedder, source: Source) -> None:
        self.embedder, (self.signature, self.texts) = embedder, source
        self._sig: str | None = None
        self._entries: list[ExplainedText] = []
        self._vectors_ND = np.zeros((0, 384), np.float32)
        self._cache: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def warm(self) -> None:
        """Embed every text now, in a background thread (a server's start), so the first search does not wait."""
        threading.Thread(target=self._refresh, name="explanation-index", daemon=True).start()

    def _refresh(self) -> None:
        sig = self.signature()
        with self._lock:
            if sig == self._sig:
                return
            entries = self.texts()
            new = list(dict.fromkeys(e.text for e in entries if e.text not in self._cache))
            if new:
                self._cache.update(zip(new, self.embedder.embed(new), strict=True))
            vectors = [self._cache[e.text] for e in entries]
            self._vectors_ND = np.stack(vectors) if vectors else np.zeros((0, 384), np.float32)
            self._entries, self._sig = entries, sig

    def search(self, q: str, limit: int) -> list[tuple[float, ExplainedText, str]]:
        """(rank score, entry, why) of the best text of each feature found, best first."""
        self._refresh()
        with self._lock:
            entries, vectors_ND = self._entries, self._vectors_ND
        if not entries:
            return []
        cos_N = vectors_ND @ self.embedder.embed([q])[0]
        q_words = _words(q)
        best: dict[tuple[Path, str, int], tuple[float, ExplainedText, str]] = {}
        for i, e in enumerate(entries):
            by_words, cos = holds_words(q_words, e.text), float(cos_N[i])
            if not by_words and cos < MIN_COSINE:
                continue
            score = cos + (1.0 if by_words else 0.0)  # a text that says the words comes before one that is close
            if e.at_chance:
                score -= 2.0  # any text worth trusting comes first
            chance = ", scores at chance" if e.at_chance else ""
            why = f"{'words' if by_words else 'meaning'} ({cos:.2f}) in {e.who}{chance}: “{_short(e.text)}”"
            key = (e.store, e.sae_id, e.feature)
            if key not in best or score > best[key][0]:
                best[key] = (score, e, why)
        return sorted(best.values(), key=lambda h: -h[0])[:limit]


def _short(text: str, n: int = 80) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"
