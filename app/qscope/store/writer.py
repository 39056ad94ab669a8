"""Write a harvest into one DuckDB feature store (schema in qscope.store.schema), atomically.

The file is built as ``FILE.duckdb.tmp`` (a stale one is deleted first), checkpointed, closed and renamed into
place with ``os.replace``: a reader sees the old file or the complete new one, never half a file, and on any
error the temporary file is removed and nothing is left at ``FILE.duckdb``. ``store_writer`` takes the SAEs one
at a time (a large harvest never holds every SAE's tables at once); ``write_store`` takes them all.

Rows go in from numpy without pandas or pyarrow: a dict of 1-D arrays is registered as a DuckDB relation and
inserted with one ``INSERT ... SELECT``; a fixed-width 2-D array [rows, W] travels as W columns that SQL
assembles into a list (``list_slice([c0, ..., cW-1], 1, length)`` for ragged ones). SAEs are written in
``sae_id`` order and each table's rows sorted by feature, so every table is sorted by (sae_id, feature).
Each SAE also gets one card per feature (qscope.store.cards): its dashboard in one value.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import duckdb
import numpy as np

from qscope.store.cards import build_cards
from qscope.store.schema import DDL, SAE_COLUMNS, SCHEMA_VERSION
from qscope.tokens import show_bytes

ROWS_PER_INSERT = 500_000  # bounds the memory of one INSERT's spread columns
Columns = dict[str, np.ndarray]


@dataclass
class SaeTables:
    """Everything the store holds about one SAE, as numpy columns (one entry per row)."""

    info: dict[str, Any]  # the `saes` row: a value for every column of SaeInfo
    features: Columns  # feature, density, mean_act, max_act, n_fired, label (str objects), top_tokens [F, n]
    #                    (-1 pads), hist [F, H], interval_width
    contexts: Columns  # feature, kind (0 top, 1 interval), bin (-1: none), rank, act, window, pos, length,
    #                    token_ids [E, W] and acts [E, W], both left-aligned, `length` entries valid
    logits: Columns = field(default_factory=dict)  # feature, sign, rank, token_id, value
    neighbors: Columns = field(default_factory=dict)  # feature, other_sae_id (str objects), other_feature,
    #                                                   cosine, rank
    cards: np.ndarray | None = None  # one card per row of `features` sorted by feature (built here when None)


Vocab = Sequence[str | bytes]  # per token id: its raw bytes, or a text whose UTF-8 bytes are the token


class SaeTablesLike(Protocol):
    """What the writer reads of one SAE: a SaeTables, or any object with the same attributes (the serve
    benchmark's builds its columns when first read)."""

    @property
    def info(self) -> Mapping[str, Any]: ...
    @property
    def features(self) -> Columns: ...
    @property
    def contexts(self) -> Columns: ...
    @property
    def logits(self) -> Columns: ...
    @property
    def neighbors(self) -> Columns: ...
    @property
    def cards(self) -> np.ndarray | None: ...


Progress = Callable[[float], None]  # the fraction of one SAE's rows written so far


class AddSae(Protocol):
    """What store_writer yields: add one SAE's tables, reporting progress as its rows go in."""

    def __call__(self, tables: SaeTablesLike, progress: Progress | None = None) -> None: ...


def write_store(out: Path, meta: Mapping[str, str], saes: Sequence[SaeTablesLike], vocab: Vocab) -> int:
    """Write the store at `out` atomically; returns its size in bytes."""
    with store_writer(out, meta, vocab) as add:
        for tables in sorted(saes, key=lambda t: t.info["sae_id"]):
            add(tables)
    return Path(out).stat().st_size


@contextmanager
def store_writer(out: Path, meta: Mapping[str, str], vocab: Vocab) -> Iterator[AddSae]:
    """Write a store one SAE at a time (bounded memory: a harvest of many SAEs builds one SAE's tables, adds it,
    drops it). Yields `add(tables, progress=None)`; call it in sae_id order; progress(fraction of this SAE's
    rows) is called as they go in. The file appears at `out`, renamed into place, only when the body ends
    without an error."""
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove(tmp)
    try:
        con = duckdb.connect(str(tmp))
        try:
            con.execute(DDL)
            meta = {**meta, "schema_version": str(SCHEMA_VERSION)}  # the writer owns the layout it writes
            con.executemany("INSERT INTO meta VALUES (?, ?)", [[k, str(v)] for k, v in meta.items()])
            _write_vocab(con, vocab)

            def add(tables: SaeTablesLike, progress: Progress | None = None) -> None:
                _write_sae(con, tables, progress)

            yield add
            con.execute("CHECKPOINT")
        finally:
            con.close()
        _remove(out.with_name(out.name + ".wal"))  # a stale log must not be replayed into the new file
        os.replace(tmp, out)
    except BaseException:
        _remove(tmp)
        raise


def _write_vocab(con: duckdb.DuckDBPyConnection, vocab: Vocab) -> None:
    """The vocab table: each token's bytes, and its text on its own as pages show it (never U+FFFD)."""
    raw = [v if isinstance(v, bytes) else v.encode() for v in vocab]
    cols = {
        "token_id": np.arange(len(raw), dtype=np.int32),
        "token": np.array([show_bytes(b) for b in raw], dtype=object),
        "bytes": np.array(raw, dtype=object),
    }
    _insert(con, "vocab", cols, "token_id, token::VARCHAR, bytes::BLOB")


def _remove(path: Path) -> None:
    for p in (path, path.with_name(path.name + ".wal")):
        p.unlink(missing_ok=True)


def _write_sae(con: duckdb.DuckDBPyConnection, t: SaeTablesLike, progress: Progress | None) -> None:
    info = dict(t.info)
    marks = ", ".join("?" * len(SAE_COLUMNS))
    con.execute(f"INSERT INTO saes ({', '.join(SAE_COLUMNS)}) VALUES ({marks})", [info[c] for c in SAE_COLUMNS])
    sae = [info["sae_id"]]
    total = sum(len(next(iter(c.values()))) for c in (t.features, t.contexts, t.logits, t.neighbors) if c)
    total += len(t.features["feature"])  # the cards

    def done(rows: int) -> None:
        if progress is not None:
            progress(rows / max(total, 1))

    features, (top_sql, hist_sql) = _spread_lists(t.features, ("top_tokens", "hist"))
    _insert(
        con,
        "features",
        features,
        "?::VARCHAR, feature, density, mean_act, max_act, n_fired, label::VARCHAR, "
        f"list_filter({top_sql}, lambda x: x >= 0), {hist_sql}, interval_width",
        sae,
        done,
    )
    contexts, (tok_sql, acts_sql) = _spread_lists(t.contexts, ("token_ids", "acts"))
    _insert(
        con,
        "contexts",
        contexts,
        "?::VARCHAR, feature, CASE kind WHEN 0 THEN 'top' ELSE 'interval' END, nullif(bin, -1), rank, act, "
        f'"window", pos, list_slice({tok_sql}, 1, length), list_slice({acts_sql}, 1, length)',
        sae,
        done,
    )
    logits, neighbors = sorted_by_feature(t.logits), sorted_by_feature(t.neighbors)
    if logits:
        _insert(con, "logits", logits, "?::VARCHAR, feature, sign, rank, token_id, value", sae, done)
    if neighbors:
        _insert(
            con,
            "neighbors",
            neighbors,
            "?::VARCHAR, feature, other_sae_id::VARCHAR, other_feature, cosine, rank",
            sae,
            done,
        )
    features = sorted_by_feature(t.features)
    cards = t.cards if t.cards is not None else build_cards(features, t.contexts, logits, neighbors)
    cols = {"feature": features["feature"], "card": cards}
    _insert(con, "cards", cols, "?::VARCHAR, feature, card::BLOB", sae, done)


def sorted_by_feature(cols: Columns) -> Columns:
    """Rows stably sorted by feature (the order the tables and cards are written in)."""
    if not cols or "feature" not in cols:
        return cols
    order = np.argsort(cols["feature"], kind="stable")
    return {k: v[order] for k, v in cols.items()}


def _spread(name: str, rows_EW: np.ndarray) -> tuple[Columns, str]:
    """A 2-D array as one column per position, and the SQL list expression that puts it back together."""
    cols_WE = np.ascontiguousarray(np.asarray(rows_EW).T)
    names = [f"{name}_{i}" for i in range(cols_WE.shape[0])]
    return dict(zip(names, cols_WE, strict=True)), f"[{', '.join(names)}]"


def _spread_lists(cols: Columns, names: Sequence[str]) -> tuple[Columns, list[str]]:
    """``cols`` with each named 2-D column spread by ``_spread``, and the SQL that rebuilds each list."""
    out = {k: v for k, v in cols.items() if k not in names}
    sqls = []
    for name in names:
        spread, sql = _spread(name, cols[name])
        out |= spread
        sqls.append(sql)
    return out, sqls


def _insert(
    con: duckdb.DuckDBPyConnection,
    table: str,
    cols: Columns,
    select: str,
    params: Sequence[Any] = (),
    done: Callable[[int], None] | None = None,
) -> None:
    """INSERT INTO table SELECT <select> FROM cols, rows sorted by `feature` when there is one; done(rows)
    after each part."""
    n = len(next(iter(cols.values())))
    if n == 0:
        return
    if "feature" in cols:
        order = np.argsort(cols["feature"], kind="stable")
        cols = {k: v[order] for k, v in cols.items()}
    for start in range(0, n, ROWS_PER_INSERT):
        part = {k: np.ascontiguousarray(v[start : start + ROWS_PER_INSERT]) for k, v in cols.items()}
        con.register("_rows", part)
        try:
            con.execute(f"INSERT INTO {table} SELECT {select} FROM _rows", list(params))
        finally:
            con.unregister("_rows")
        if done is not None:
            done(len(part[next(iter(part))]))
