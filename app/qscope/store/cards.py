"""Feature cards: everything one feature's dashboard shows, packed into one value at harvest time.

The normalised tables (features, contexts, logits, neighbors) are for people who query the store with SQL; a
dashboard built from them takes four or five lookups of ~1-2 ms each. The ``cards`` table holds the same facts
once more, one row per feature, so that the server reads one BLOB (stored uncompressed by DuckDB, so that one
row is read without decompressing its neighbors) and decodes it in Python.

A card is ``zlib(header_length:uint32le, header JSON, token_ids int32[T], acts float32[T])`` where the header is

    {"row": CardRow, "contexts": [CardContext, ...], "logits": [CardLogit, ...], "neighbors": [CardNeighbor, ...]}

each section written as a JSON array of its fields in the order of its NamedTuple below (compact: a card is
read on every page), and the contexts' token ids and activations follow, concatenated in header order
(``length`` of each).
Contexts are ordered top contexts first by rank, then interval samples by bin (strongest bin first) and rank;
logits positive first by rank; neighbors in their SAE's order by rank. Neighbors' labels are not in the
card (an SAE is written before the SAEs after it are known): the server reads them from ``features``.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

Columns = dict[str, np.ndarray]
CARD_VERSION = 1
_ZLIB_LEVEL = 1  # the cards are read far more often than written; level 1 keeps the harvest's write cheap


class CardRow(NamedTuple):
    """The feature's summary: the dashboard's header and histogram."""

    density: float | None
    mean_act: float | None
    max_act: float | None
    n_fired: int
    label: str
    top_tokens: list[int]  # token ids most often at the max
    hist: list[int]  # counts per bin of the SAE's hist_edges
    interval_width: float | None


class CardContext(NamedTuple):
    """One example context (its tokens and activations follow the header)."""

    kind: int  # 0 top, 1 interval
    bin: int  # interval bin, -1 for a top context
    rank: int
    act: float  # at the marked token
    window: int
    pos: int  # of the marked token
    length: int  # tokens in the context


class CardLogit(NamedTuple):
    """One logit effect."""

    sign: int  # +1 promoted, -1 suppressed
    rank: int
    token_id: int
    value: float


class CardNeighbor(NamedTuple):
    """One nearest feature by decoder cosine."""

    other_sae_id: str
    other_feature: int
    cosine: float
    rank: int


@dataclass
class Card:
    """A decoded card: its sections, and each context's tokens and activations."""

    row: CardRow
    contexts: list[CardContext]
    logits: list[CardLogit]
    neighbors: list[CardNeighbor]
    token_ids: list[list[int]]  # one list per context
    acts: list[list[float]]


def encode_card(header: dict, token_ids_T: np.ndarray, acts_T: np.ndarray) -> bytes:
    head = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    body = b"".join(
        [len(head).to_bytes(4, "little"), head, token_ids_T.astype("<i4").tobytes(), acts_T.astype("<f4").tobytes()]
    )
    return zlib.compress(body, _ZLIB_LEVEL)


def decode_card(blob: bytes) -> Card:
    body = zlib.decompress(blob)
    n = int.from_bytes(body[:4], "little")
    h = json.loads(body[4 : 4 + n])
    lengths = [c[6] for c in h["contexts"]]
    total = sum(lengths)
    ids = np.frombuffer(body, "<i4", total, 4 + n).tolist()
    acts = np.frombuffer(body, "<f4", total, 4 + n + 4 * total).tolist()
    starts = np.cumsum([0, *lengths]).tolist()
    return Card(
        row=CardRow(*h["row"]),
        contexts=[CardContext(*c) for c in h["contexts"]],
        logits=[CardLogit(*x) for x in h["logits"]],
        neighbors=[CardNeighbor(*x) for x in h["neighbors"]],
        token_ids=[ids[a:b] for a, b in zip(starts, starts[1:], strict=False)],
        acts=[acts[a:b] for a, b in zip(starts, starts[1:], strict=False)],
    )


def _bounds(feature_R: np.ndarray, n_features: int) -> np.ndarray:
    """Row ranges per feature of a table sorted by feature: rows bounds[f]:bounds[f+1] belong to feature f."""
    return np.searchsorted(feature_R, np.arange(n_features + 1), side="left")


def _finite(x: float) -> float | None:
    return x if np.isfinite(x) else None


def build_cards(
    features: Columns,
    contexts: Columns,
    logits: Columns,
    neighbors: Columns,
) -> np.ndarray:
    """One card per row of `features`, in that order (an object array of bytes). `logits` and `neighbors`
    sorted by feature (as qscope.store.writer inserts them); `contexts` in any order."""
    F = len(features["feature"])
    out = np.empty(F, dtype=object)
    if F:
        out[:] = CardBuilder(features, contexts, logits, neighbors).build(0, F)
    return out


class CardBuilder:
    """The tables of one SAE sorted once for card building; build(a, b) makes the cards of features rows a..b
    (qscope.store.card_pool builds ranges on several processes)."""

    def __init__(self, features: Columns, contexts: Columns, logits: Columns, neighbors: Columns) -> None:
        self.features, self.logits, self.neighbors = features, logits, neighbors
        n = int(features["feature"].max()) + 1 if len(features["feature"]) else 0
        order = np.lexsort((contexts["rank"], -contexts["bin"], contexts["kind"], contexts["feature"]))
        ctx = {k: v[order] for k, v in contexts.items()}
        self.ctx, self.cb = ctx, _bounds(ctx["feature"], n)
        self.lb = _bounds(logits["feature"], n) if logits else None
        self.nb = _bounds(neighbors["feature"], n) if neighbors else None
        self.meta_E7 = np.stack(
            [ctx[k].astype(np.float64) for k in ("kind", "bin", "rank", "act", "window", "pos", "length")], 1
        )
        self.keep_EW = np.arange(ctx["token_ids"].shape[1])[None, :] < ctx["length"][:, None]

    def build(self, a: int, b: int) -> list[bytes]:
        """The cards of features rows a..b, in row order."""
        ctx, cb, out = self.ctx, self.cb, []
        for i in range(a, b):
            f = int(self.features["feature"][i])
            c0, c1 = cb[f], cb[f + 1]
            header = {
                "row": _row(self.features, i),
                "contexts": [_context_meta(r) for r in self.meta_E7[c0:c1]],
                "logits": _logit_rows(self.logits, self.lb, f),
                "neighbors": _neighbor_rows(self.neighbors, self.nb, f),
            }
            keep = self.keep_EW[c0:c1]
            out.append(encode_card(header, ctx["token_ids"][c0:c1][keep], ctx["acts"][c0:c1][keep]))
        return out


def _row(features: Columns, i: int) -> CardRow:
    density, mean_act, max_act = (_finite(float(features[k][i])) for k in ("density", "mean_act", "max_act"))
    return CardRow(
        density,
        mean_act,
        max_act,
        int(features["n_fired"][i]),
        str(features["label"][i]),
        [int(t) for t in features["top_tokens"][i] if t >= 0],
        features["hist"][i].tolist(),
        _finite(float(features["interval_width"][i])),
    )


def _context_meta(r: np.ndarray) -> CardContext:
    kind, b, rank, act, window, pos, length = r.tolist()
    return CardContext(int(kind), int(b), int(rank), float(np.float32(act)), int(window), int(pos), int(length))


def _logit_rows(logits: Columns, bounds: np.ndarray | None, f: int) -> list[CardLogit]:
    if bounds is None:
        return []
    a, b = bounds[f], bounds[f + 1]
    return [
        CardLogit(int(s), int(r), int(t), float(v))
        for s, r, t, v in zip(
            logits["sign"][a:b], logits["rank"][a:b], logits["token_id"][a:b], logits["value"][a:b], strict=True
        )
    ]


def _neighbor_rows(neighbors: Columns, bounds: np.ndarray | None, f: int) -> list[CardNeighbor]:
    if bounds is None:
        return []
    a, b = bounds[f], bounds[f + 1]
    rows = zip(
        neighbors["other_sae_id"][a:b],
        neighbors["other_feature"][a:b],
        neighbors["cosine"][a:b],
        neighbors["rank"][a:b],
        strict=True,
    )
    return [CardNeighbor(str(s), int(o), float(c), int(r)) for s, o, c, r in rows]
