"""Read-only queries on one feature store (schema in qscope.store.schema), returning dataclasses.

A `Store` is opened once per process (``duckdb.connect(read_only=True)``; opening costs tens of ms) and keeps
what every page needs in memory: the meta table, the SAEs and the vocabulary. Each request takes its own cursor
with ``store.reader()``: a `Reader` whose queries run under a time limit (DuckDB has no statement timeout, so a
timer interrupts the cursor). The file never changes while it is served, so per-SAE aggregates are cached.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any, Literal, get_args

import duckdb
import numpy as np

from qscope.store.cards import Card, decode_card
from qscope.store.meta import meta_of, model_source, version_problem
from qscope.store.paths import file_signature, missing_store
from qscope.store.schema import SAE_COLUMNS, SaeInfo
from qscope.store.watchdog import WATCHDOG
from qscope.tokens import characters, is_whole, readable

SortKey = Literal["index", "density", "max_act", "mean_act"]  # how an SAE's feature list may be sorted
SORTS = {key: "feature" if key == "index" else key for key in get_args(SortKey)}  # sort key -> column
DENSITY_BINS = 28  # log10(density) from -7 to 0 in quarter decades


class StoreError(RuntimeError):
    """A file that is not a readable feature store; the message names the file and the problem."""


class QueryTimeout(RuntimeError):
    """A query ran past the store's time limit and was interrupted."""


@dataclass
class FeatureRow:
    """One feature's summary line: what lists, search results and the dashboard header show."""

    sae_id: str
    feature: int
    density: float  # fraction of ranked tokens with act > 0
    mean_act: float  # mean over the tokens where it fired
    max_act: float
    n_fired: int
    label: str
    top_tokens: list[str]  # tokens most often at the max of the top contexts


@dataclass
class FeatureList:
    rows: list[FeatureRow]
    total: int  # rows matching the filter, over all pages


@dataclass
class Context:
    kind: str  # 'top' | 'interval'
    bin: int | None
    rank: int
    act: float  # activation at the marked token
    window: int  # corpus window it was cut from
    pos: int  # index of the marked token in `tokens`
    tokens: list[str]  # each token's text on its own (bytes of a partial character as <0xNN>)
    acts: list[float]  # the feature's activation on every token
    shown: list[str]  # each token's piece of the context's text (qscope.tokens.readable): what pages show


@dataclass
class IntervalBin:
    bin: int
    low: float
    high: float
    contexts: list[Context]


@dataclass
class LogitEffect:
    token_id: int
    token: str
    value: float


@dataclass
class Neighbor:
    sae_id: str
    feature: int
    cosine: float
    label: str


@dataclass
class FeatureDetail:
    row: FeatureRow
    hist: list[int]  # counts per bin of SaeInfo.hist_edges
    interval_width: float
    top: list[Context]
    intervals: list[IntervalBin]  # strongest bin first
    logits_pos: list[LogitEffect]
    logits_neg: list[LogitEffect]
    neighbors: list[Neighbor]


@dataclass
class DensityHistogram:
    """Features per quarter decade of log10(density), from 1e-7 to 1; dead features counted apart."""

    counts: list[int]
    low: float  # log10 of the first edge
    step: float  # width of a bin in log10 units
    dead: int


class Store:
    """One feature store file, opened read-only; `reader()` gives a request its cursor."""

    def __init__(self, path: str | Path, timeout_s: float = 5.0, threads: int = 1) -> None:
        self.path = Path(path).resolve()
        if not self.path.is_file():
            raise StoreError(missing_store(self.path, path))
        try:
            self.con = duckdb.connect(str(self.path), read_only=True)
            # one thread per query: a page's lookups are small, and requests run side by side. SET, not a
            # connect() config: DuckDB refuses a second connection to a file with a different config
            self.con.execute(f"SET threads = {int(threads)}")
            self.meta = meta_of(self.con)
            _check_version(self.path, self.meta.get("schema_version"))
            self.saes = _read_saes(self.con)
            self.vocab, self.vocab_bytes = _read_vocab(self.con)
            self._whole = [is_whole(b) for b in self.vocab_bytes]
            self.card_rowids = _card_rowids(self.con)
        except duckdb.Error as e:
            raise StoreError(f"{self.path} is not a qscope feature store: {e}") from e
        self.timeout_s = timeout_s
        self.signature = file_signature(self.path)
        self._token_index: dict[str, list[int]] | None = None
        self._cache: dict[tuple, object] = {}
        self._lock = threading.Lock()

    @property
    def model_ids(self) -> list[str]:
        return sorted({s.model_id for s in self.saes.values()})

    @property
    def model_source(self) -> str | None:
        """The model folder or hub id the harvest ran, for live runs (/inspect, search by firing)."""
        return model_source(self.meta)

    def decode(self, ids: Sequence[int]) -> list[str]:
        vocab, n = self.vocab, len(self.vocab)
        if len(ids) > 1 and 0 <= min(ids) and max(ids) < n:
            return list(itemgetter(*ids)(vocab))  # the common case, in C
        return [vocab[i] if 0 <= i < n else f"<{i}>" for i in ids]

    def shown(self, ids: Sequence[int], cut: bool = False) -> list[str]:
        """Each token's piece of the text the ids make together: characters split over tokens shown whole on
        the token that completes them (qscope.tokens.readable; cut: a context cut from a window, whose edges may
        cut a character); the same as `decode` when no token splits one."""
        raw = self._split_bytes(ids)
        return self.decode(ids) if raw is None else readable(raw, cut)

    def characters(self, ids: Sequence[int]) -> list[str]:
        """For each token, the characters it is part of in the text the ids make ('日' for either half of a 日
        split over two tokens: qscope.tokens.characters); the same as `decode` when no token splits one."""
        raw = self._split_bytes(ids)
        return self.decode(ids) if raw is None else characters(raw)

    def _split_bytes(self, ids: Sequence[int]) -> list[bytes] | None:
        """The tokens' raw bytes, or None when every token holds whole characters (their text says it all)."""
        whole, n = self._whole, len(self._whole)
        if all(0 <= i < n and whole[i] for i in ids):
            return None
        raw = self.vocab_bytes
        return [raw[i] if 0 <= i < n else f"<{i}>".encode() for i in ids]

    def token_ids_matching(self, text: str) -> list[int]:
        """Ids of the tokens that are `text` once stripped of whitespace and lower-cased."""
        if self._token_index is None:
            index: dict[str, list[int]] = {}
            for i, tok in enumerate(self.vocab):
                index.setdefault(tok.strip().lower(), []).append(i)
            self._token_index = index
        return self._token_index.get(text.strip().lower(), []) if text.strip() else []

    @contextmanager
    def reader(self, timeout_s: float | None = None) -> Iterator[Reader]:
        """A cursor for one request; interrupted (QueryTimeout) when it runs past timeout_s (default: the
        store's limit for requests; background work such as index builds gives a longer one)."""
        cur = self.con.cursor()
        timeout_s = timeout_s or self.timeout_s
        ticket = WATCHDOG.arm(cur.interrupt, timeout_s)
        try:
            yield Reader(self, cur)
        except duckdb.InterruptException as e:
            raise QueryTimeout(f"a query on {self.path.name} ran past {timeout_s:g} s and was stopped") from e
        finally:
            WATCHDOG.disarm(ticket)
            cur.close()

    def cached(self, key: tuple, compute):
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        value = compute()
        with self._lock:
            self._cache[key] = value
        return value

    def labels(self, sae_id: str) -> list[str]:
        """Every label of one SAE, indexed by feature (read once, on first use: neighbor lists name features
        of other SAEs, and one list lookup beats a query per page)."""

        def read() -> list[str]:
            cur = self.con.cursor()
            try:
                rows = cur.execute("SELECT feature, label FROM features WHERE sae_id = ?", [sae_id]).fetchall()
            finally:
                cur.close()
            out = [""] * (max((f for f, _ in rows), default=-1) + 1)
            for f, label in rows:
                out[f] = label or ""
            return out

        return self.cached(("labels", sae_id), read)

    def label(self, sae_id: str, feature: int) -> str:
        labels = self.labels(sae_id) if sae_id in self.saes else []
        return labels[feature] if 0 <= feature < len(labels) else ""

    def close(self) -> None:
        self.con.close()


def _check_version(path: Path, version: str | None) -> None:
    if problem := version_problem(path, version):
        raise StoreError(problem)


def _read_saes(con: duckdb.DuckDBPyConnection) -> dict[str, SaeInfo]:
    rows = con.execute(f"SELECT {', '.join(SAE_COLUMNS)} FROM saes ORDER BY model_id, layer, sae_id").fetchall()
    return {row[0]: SaeInfo(*row) for row in rows}


def _card_rowids(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """{sae_id: rowid of its feature 0's card} when the cards table holds every feature 0..n-1 of each SAE in
    (sae_id, feature) order, as the writer inserts them: a rowid lookup skips filtering the sae_id column of
    a whole row group (measured 1.4 vs 3.0 ms at 1M features). Empty when the layout is anything else."""
    rows = con.execute(
        "SELECT sae_id, count(*), min(feature), max(feature), min(rowid), max(rowid) FROM cards "
        "GROUP BY sae_id ORDER BY sae_id"
    ).fetchall()
    out, start = {}, 0
    for sae_id, n, lo, hi, first, last in rows:
        if lo != 0 or hi != n - 1 or first != start or last != start + n - 1:
            return {}
        out[sae_id], start = start, start + n
    return out


def _read_vocab(con: duckdb.DuckDBPyConnection) -> tuple[list[str], list[bytes]]:
    """Each token's text on its own and its raw bytes, indexed by token id."""
    rows = con.execute("SELECT token_id, token, bytes FROM vocab ORDER BY token_id").fetchall()
    n = rows[-1][0] + 1 if rows else 0
    vocab, raw = [""] * n, [b""] * n
    for token_id, token, data in rows:
        raw[token_id] = bytes(data) if data is not None else (token or "").encode()
        vocab[token_id] = token or ""
    return vocab, raw


_ROW_COLS = "sae_id, feature, density, mean_act, max_act, n_fired, label, top_tokens"


class Reader:
    """The queries of one request, on its own cursor."""

    def __init__(self, store: Store, cur: duckdb.DuckDBPyConnection) -> None:
        self.store, self.cur = store, cur

    def _scalar(self, sql: str, params: Sequence[object]) -> Any:
        """The one value of a query that always returns one row (an aggregate such as count or min)."""
        row = self.cur.execute(sql, params).fetchone()
        assert row is not None, f"an aggregate query returned no row: {sql}"
        return row[0]

    def _row(self, r: tuple) -> FeatureRow:
        return FeatureRow(
            sae_id=r[0],
            feature=r[1],
            density=r[2] or 0.0,
            mean_act=r[3] or 0.0,
            max_act=r[4] or 0.0,
            n_fired=r[5] or 0,
            label=r[6] or "",
            top_tokens=self.store.decode(r[7] or []),
        )

    def features(
        self,
        sae_id: str,
        *,
        sort: SortKey = "index",
        desc: bool = False,
        q: str = "",
        dmin: float | None = None,
        dmax: float | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> FeatureList:
        """One page of an SAE's features, filtered by label text and density range."""
        where = ["sae_id = ?"]
        params: list[object] = [sae_id]
        if q:
            where.append("label ILIKE ? ESCAPE '\\'")
            params.append(f"%{_escape_like(q)}%")
        if dmin is not None:
            where.append("density >= ?")
            params.append(dmin)
        if dmax is not None:
            where.append("density <= ?")
            params.append(dmax)
        cond = " AND ".join(where)
        order = f"{SORTS[sort]} {'DESC' if desc else 'ASC'}, feature"
        rows = self.cur.execute(
            f"SELECT {_ROW_COLS} FROM features WHERE {cond} ORDER BY {order} LIMIT ? OFFSET ?",
            [*params, limit, offset],
        ).fetchall()
        if offset == 0 and len(rows) < limit:
            total = len(rows)
        else:
            total = self._scalar(f"SELECT count(*) FROM features WHERE {cond}", params)
        return FeatureList(rows=[self._row(r) for r in rows], total=total)

    def row(self, sae_id: str, feature: int) -> FeatureRow | None:
        r = self.cur.execute(
            f"SELECT {_ROW_COLS} FROM features WHERE sae_id = ? AND feature = ?", [sae_id, feature]
        ).fetchone()
        return self._row(r) if r else None

    def feature(self, sae_id: str, feature: int, *, interval_per_bin: int = 5) -> FeatureDetail | None:
        """Everything the dashboard of one feature shows, from its card; None when the SAE has no such row."""
        blob = self._card(sae_id, feature)
        if blob is None:
            return None
        card = decode_card(blob)
        c = card.row
        row = self._row((sae_id, feature, c.density, c.mean_act, c.max_act, c.n_fired, c.label, c.top_tokens))
        width = c.interval_width or 0.0
        top, intervals = self._contexts(card, width, interval_per_bin)
        decode = self.store.decode
        pos = [LogitEffect(g.token_id, decode([g.token_id])[0], g.value) for g in card.logits if g.sign > 0]
        neg = [LogitEffect(g.token_id, decode([g.token_id])[0], g.value) for g in card.logits if g.sign < 0]
        nbrs = sorted(card.neighbors, key=lambda n: (n.other_sae_id != sae_id, n.other_sae_id, n.rank))
        neighbors = [
            Neighbor(n.other_sae_id, n.other_feature, n.cosine, self.store.label(n.other_sae_id, n.other_feature))
            for n in nbrs
        ]
        return FeatureDetail(
            row=row,
            hist=c.hist,
            interval_width=width,
            top=top,
            intervals=intervals,
            logits_pos=pos,
            logits_neg=neg,
            neighbors=neighbors,
        )

    def _card(self, sae_id: str, feature: int) -> bytes | None:
        start = self.store.card_rowids.get(sae_id)
        if start is not None and feature >= 0:
            sql = "SELECT sae_id, feature, card FROM cards WHERE rowid = ?"
            r = self.cur.execute(sql, [start + feature]).fetchone()
            if r is not None and r[0] == sae_id and r[1] == feature:  # checked: a rowid is only a layout fact
                return r[2]
        r = self.cur.execute("SELECT card FROM cards WHERE sae_id = ? AND feature = ?", [sae_id, feature]).fetchone()
        return r[0] if r else None

    def _contexts(self, card: Card, width: float, per_bin: int) -> tuple[list[Context], list[IntervalBin]]:
        """The card's contexts (top first, then bins strongest first), at most per_bin per interval bin."""
        top: list[Context] = []
        bins: dict[int, IntervalBin] = {}
        for c, ids, acts in zip(card.contexts, card.token_ids, card.acts, strict=True):
            tokens, shown = self.store.decode(ids), self.store.shown(ids, cut=True)
            if c.kind == 0:
                top.append(Context("top", None, c.rank, c.act, c.window, c.pos, tokens, acts, shown))
            elif c.rank < per_bin:
                ctx = Context("interval", c.bin, c.rank, c.act, c.window, c.pos, tokens, acts, shown)
                bins.setdefault(c.bin, IntervalBin(c.bin, c.bin * width, (c.bin + 1) * width, [])).contexts.append(ctx)
        return top, list(bins.values())

    def random_feature(self, sae_id: str, rng: random.Random | None = None) -> int | None:
        """A random feature that fired at least once (the first live one at or after a random index)."""
        d_sae = self.store.saes[sae_id].d_sae
        start = (rng or random).randrange(max(d_sae, 1))
        sql = "SELECT min(feature) FROM features WHERE sae_id = ? AND n_fired > 0 AND feature {} ?"
        found = self._scalar(sql.format(">="), [sae_id, start])
        if found is None:
            found = self._scalar(sql.format("<"), [sae_id, start])
        return found

    def max_acts(self, sae_id: str) -> np.ndarray:
        """Every feature's max activation [d_sae] (0 where it never fired), for steering evaluations' controls."""
        out = np.zeros(self.store.saes[sae_id].d_sae, dtype=np.float32)
        sql = "SELECT feature, max_act FROM features WHERE sae_id = ? AND n_fired > 0"
        rows = self.cur.execute(sql, [sae_id]).fetchnumpy()
        out[rows["feature"]] = np.nan_to_num(rows["max_act"].astype(np.float32))
        return out

    def density_histogram(self, sae_id: str) -> DensityHistogram:
        def compute() -> DensityHistogram:
            low, step = -7.0, 0.25
            rows = self.cur.execute(
                "SELECT least(greatest(floor((log10(density) - ?) / ?), 0), ?)::INTEGER AS b, count(*) "
                "FROM features WHERE sae_id = ? AND density > 0 GROUP BY b",
                [low, step, DENSITY_BINS - 1, sae_id],
            ).fetchall()
            counts = [0] * DENSITY_BINS
            for b, n in rows:
                counts[b] = n
            dead = self._scalar("SELECT count(*) FROM features WHERE sae_id = ? AND NOT density > 0", [sae_id])
            return DensityHistogram(counts=counts, low=low, step=step, dead=dead)

        return self.store.cached(("density_hist", sae_id), compute)

    def text_matches(self, q: str, limit: int = 20) -> list[tuple[FeatureRow, str]]:
        """Features whose label holds `q`, or whose top tokens include a token equal to `q`: (row, why)."""
        ids = self.store.token_ids_matching(q)
        rows = self.cur.execute(
            f"SELECT {_ROW_COLS}, label ILIKE ? ESCAPE '\\' AS by_label FROM features "
            "WHERE label ILIKE ? ESCAPE '\\' OR list_has_any(top_tokens, ?::INTEGER[]) "
            "ORDER BY by_label DESC, density DESC LIMIT ?",
            [f"%{_escape_like(q)}%", f"%{_escape_like(q)}%", ids, limit],
        ).fetchall()
        return [(self._row(r), "label" if r[8] else "top token") for r in rows]

    def rows(self, keys: Sequence[tuple[str, int]]) -> dict[tuple[str, int], FeatureRow]:
        """Summary rows for (sae_id, feature) keys of this store, one query per SAE."""
        out: dict[tuple[str, int], FeatureRow] = {}
        by_sae: dict[str, list[int]] = {}
        for sae_id, f in keys:
            by_sae.setdefault(sae_id, []).append(int(f))
        for sae_id, fs in by_sae.items():
            marks = ", ".join("?" * len(fs))
            for r in self.cur.execute(
                f"SELECT {_ROW_COLS} FROM features WHERE sae_id = ? AND feature IN ({marks})", [sae_id, *fs]
            ).fetchall():
                out[(r[0], r[1])] = self._row(r)
        return out

    def summary_columns(self) -> dict:
        """Every feature's summary row as columns, in (sae_id, feature) order, for the in-memory search tables:
        sae_id and label (lists of str), top_tokens (list of lists), feature, density, mean_act, max_act, n_fired."""
        cols = self.cur.execute(
            "SELECT sae_id, feature, coalesce(label, '') AS label, coalesce(top_tokens, []) AS top_tokens, "
            "coalesce(density, 0) AS density, coalesce(mean_act, 0) AS mean_act, coalesce(max_act, 0) AS max_act, "
            "coalesce(n_fired, 0) AS n_fired FROM features ORDER BY sae_id, feature"
        ).fetchnumpy()
        out: dict[str, Any] = {k: np.asarray(cols[k]) for k in ("feature", "density", "mean_act", "max_act", "n_fired")}
        out |= {
            "sae_id": cols["sae_id"].tolist(),
            "label": cols["label"].tolist(),
            "top_tokens": [list(t) for t in cols["top_tokens"]],
        }
        return out

    def embedding_inputs(self, n_logits: int = 5) -> list[tuple]:
        """(sae_id, feature, label, top token ids, top promoted token ids) of every live feature, in (sae_id,
        feature) order: what qscope.search.semantic_text makes each feature's embedded text from."""
        return self.cur.execute(
            "WITH lg AS (SELECT sae_id, feature, list(token_id ORDER BY rank) AS ids FROM logits "
            "WHERE sign > 0 AND rank < ? GROUP BY sae_id, feature) "
            "SELECT f.sae_id, f.feature, f.label, f.top_tokens, lg.ids FROM features f "
            "LEFT JOIN lg USING (sae_id, feature) WHERE f.n_fired > 0 ORDER BY f.sae_id, f.feature",
            [n_logits],
        ).fetchall()


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
