"""Text search over one store's features, held in memory: postings from label words and from top tokens
(`TextIndex`), and the summary rows results show (`TextSearch`), so a search makes no query per hit.

"Every query word starts a word of the label" (words under MIN_PREFIX letters must match whole) and "a top token
equals the query" are dictionary lookups instead of a scan.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence

import numpy as np

from qscope.search.vectors import key_columns
from qscope.store.queries import FeatureRow, Store

INDEX_QUERY_TIMEOUT_S = 3600.0  # the index builds read every feature of a store, in the background
MIN_PREFIX = 3  # shorter query words must match a label word whole
_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class TextIndex:
    """Label words and top tokens -> rows; rows ranked by a score given at build time (density)."""

    def __init__(self, labels: Sequence[str], top_tokens: Sequence[Sequence[int]], rank_score_N: np.ndarray):
        by_word: dict[str, list[int]] = {}
        by_token: dict[int, list[int]] = {}
        for row, (label, tokens) in enumerate(zip(labels, top_tokens, strict=True)):
            for w in set(words(label)):
                by_word.setdefault(w, []).append(row)
            for t in set(tokens):
                by_token.setdefault(int(t), []).append(row)
        self.vocab = sorted(by_word)
        self._by_word = {w: np.asarray(rows, dtype=np.int64) for w, rows in by_word.items()}
        self._by_token = {t: np.asarray(rows, dtype=np.int64) for t, rows in by_token.items()}
        self.score_N = np.asarray(rank_score_N, dtype=np.float64)

    def _mask_for_word(self, w: str) -> np.ndarray:
        """bool [N]: rows with a label word equal to w, or starting with it when w is long enough."""
        mask_N = np.zeros(len(self.score_N), dtype=bool)
        if len(w) < MIN_PREFIX:
            found = self._by_word.get(w)
            if found is not None:
                mask_N[found] = True
            return mask_N
        lo = bisect.bisect_left(self.vocab, w)
        hi = bisect.bisect_left(self.vocab, w + "\uffff")
        for v in self.vocab[lo:hi]:  # a scatter per word: no sort of the union, however many words match
            mask_N[self._by_word[v]] = True
        return mask_N

    def label_rows(self, q: str) -> np.ndarray:
        """Rows whose label has, for every word of q, a word starting with it."""
        qs = words(q)
        if not qs:
            return np.zeros(0, np.int64)
        mask_N = self._mask_for_word(qs[0])
        for w in qs[1:]:
            mask_N &= self._mask_for_word(w)
        return np.flatnonzero(mask_N)

    def token_rows(self, token_ids: Sequence[int]) -> np.ndarray:
        parts = [self._by_token[t] for t in token_ids if t in self._by_token]
        return np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)

    def best(self, rows: np.ndarray, n: int) -> np.ndarray:
        """The n rows with the highest score, highest first (ties by row)."""
        if len(rows) > n:
            rows = rows[np.argpartition(-self.score_N[rows], n - 1)[:n]]
        return rows[np.lexsort((rows, -self.score_N[rows]))]


class TextSearch:
    """One store's feature summaries in memory: the rows search results show (no query per hit), and the text
    index over their labels and top tokens (every query word starts a word of the label; a top token equals
    the query), ranked label matches first, then by density."""

    def __init__(self, store: Store) -> None:
        with store.reader(timeout_s=INDEX_QUERY_TIMEOUT_S) as r:
            cols = r.summary_columns()
        self.store = store
        self.sae_ids, self.sae_idx_N = key_columns(cols["sae_id"])
        self.starts = np.searchsorted(self.sae_idx_N, np.arange(len(self.sae_ids) + 1))
        self.feature_N = cols["feature"].astype(np.int64)
        self.labels = cols["label"]
        width = max((len(t) for t in cols["top_tokens"]), default=0)
        self.top_NK = np.full((len(self.labels), width), -1, dtype=np.int32)
        for i, t in enumerate(cols["top_tokens"]):
            self.top_NK[i, : len(t)] = t
        self.stats_N4 = np.stack([cols[k].astype(np.float64) for k in ("density", "mean_act", "max_act", "n_fired")], 1)
        self.index = TextIndex(self.labels, cols["top_tokens"], self.stats_N4[:, 0])

    def find(self, sae_id: str, feature: int) -> int | None:
        """The row of (sae_id, feature), or None."""
        if sae_id not in self.sae_ids:
            return None
        s = self.sae_ids.index(sae_id)
        a, b = self.starts[s], self.starts[s + 1]
        i = a + int(np.searchsorted(self.feature_N[a:b], feature))
        return i if i < b and self.feature_N[i] == feature else None

    def row(self, i: int) -> FeatureRow:
        density, mean_act, max_act, n_fired = self.stats_N4[i].tolist()
        top = self.store.decode([t for t in self.top_NK[i].tolist() if t >= 0])
        return FeatureRow(
            self.sae_ids[self.sae_idx_N[i]],
            int(self.feature_N[i]),
            density,
            mean_act,
            max_act,
            int(n_fired),
            self.labels[i],
            top,
        )

    def matches(self, q: str, token_ids: list[int], n: int) -> list[tuple[str, int, str]]:
        """(sae_id, feature, why) of the best n matches."""
        by_label = self.index.best(self.index.label_rows(q), n)
        by_token = self.index.best(np.setdiff1d(self.index.token_rows(token_ids), by_label), n - len(by_label))
        hits = [(i, "label") for i in by_label] + [(i, "top token") for i in by_token]
        return [(self.sae_ids[self.sae_idx_N[i]], int(self.feature_N[i]), why) for i, why in hits[:n]]
