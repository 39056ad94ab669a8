"""One store's feature summaries held in memory for search: result rows without a query per hit, and the
text index (app.search_index.TextIndex) over labels and top tokens."""

from __future__ import annotations

import numpy as np

from app.search_index import TextIndex, key_columns
from app.store.queries import FeatureRow, Store

INDEX_QUERY_TIMEOUT_S = 3600.0  # the index builds read every feature of a store, in the background


class FeatureTable:
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
        return FeatureRow(self.sae_ids[self.sae_idx_N[i]], int(self.feature_N[i]), density, mean_act, max_act,
                          int(n_fired), self.labels[i], top)  # fmt: skip

    def matches(self, q: str, token_ids: list[int], n: int) -> list[tuple[str, int, str]]:
        """(sae_id, feature, why) of the best n matches."""
        by_label = self.index.best(self.index.label_rows(q), n)
        by_token = self.index.best(np.setdiff1d(self.index.token_rows(token_ids), by_label), n - len(by_label))
        hits = [(i, "label") for i in by_label] + [(i, "top token") for i in by_token]
        return [(self.sae_ids[self.sae_idx_N[i]], int(self.feature_N[i]), why) for i, why in hits[:n]]
