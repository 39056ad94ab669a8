"""The DuckDB feature store's schema: one file holds every feature of every SAE of one harvest.

Written only by ``qscope harvest`` (under a temporary name, renamed into place when complete); opened read-only
by the server. Every per-feature table is keyed by ``(sae_id, feature)`` and its rows are inserted sorted by
that key, so DuckDB's zone maps read one feature's rows from one place.

Tables
------
meta        key VARCHAR, value VARCHAR           format version, model id, corpus, tokens, ctx, settings (JSON)
saes        one row per SAE                      sae_id, model_id, layer, site, d_in, d_sae, k, architecture,
                                                 format, source (path), tokens (ranked), dead (features never
                                                 fired), hist_edges (the log-spaced histogram bin edges)
features    one row per feature                  density (fraction of ranked tokens with act > 0), mean_act
                                                 (mean over the tokens where it fired), max_act, n_fired,
                                                 label, top_tokens (token ids most often at the max),
                                                 hist (counts per ``saes.hist_edges`` bin), interval_width
                                                 (width of an interval bin, equal for all its bins)
contexts    one row per example context          kind ('top' | 'interval'), bin (interval bin, NULL for top),
                                                 rank (0 = strongest within kind/bin), act (the activation at
                                                 the marked token), window (index of the corpus window), pos
                                                 (position of the marked token within ``token_ids``),
                                                 token_ids INTEGER[], acts FLOAT[] (this feature's activation on
                                                 every token of the context)
logits      top and bottom logit effects         sign (+1 | -1), rank, token_id, value  (W_dec[f] @ W_U)
neighbors   nearest features by decoder cosine   other_sae_id, other_feature, cosine, rank (per other_sae_id)
vocab       token_id INTEGER, token VARCHAR,     so pages decode without the tokenizer: bytes are the token's
            bytes BLOB                           raw bytes (a byte-level token may hold part of a UTF-8
                                                 character), token its text on its own (qscope.tokens:
                                                 whole characters, other bytes as <0xNN>, never U+FFFD)
cards       one row per feature                  card BLOB: the dashboard's rows above, packed into one
                                                 value (format in qscope.store.cards) so a page is one lookup;
                                                 stored uncompressed so a lookup decompresses nothing else
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any

SCHEMA_VERSION = 3  # 2: the cards table; 3: vocab.bytes


def _col(sql: str, **kw: Any) -> Any:
    """A dataclass field that is also a column of its table, with its SQL type.

    Typed like `dataclasses.field`: the value stands in for the annotated type of the field it declares.
    """
    return field(metadata={"sql": sql}, **kw)


@dataclass(frozen=True)
class SaeInfo:
    """One row of the `saes` table: the one definition of its columns (the DDL below is made from it)."""

    sae_id: str = _col("VARCHAR PRIMARY KEY")
    model_id: str = _col("VARCHAR")
    layer: int | None = _col("INTEGER")
    site: str = _col("VARCHAR")
    d_in: int = _col("INTEGER")
    d_sae: int = _col("INTEGER")
    k: int | None = _col("INTEGER")
    architecture: str = _col("VARCHAR")
    format: str = _col("VARCHAR")
    source: str = _col("VARCHAR")  # the SAE file the harvest read
    tokens: int = _col("BIGINT")  # tokens ranked by the harvest
    dead: int = _col("INTEGER")  # features that never fired
    # activation histogram bin edges (log-spaced), len = bins + 1
    hist_edges: list[float] = _col("DOUBLE[]", repr=False)


SAE_COLUMNS = tuple(f.name for f in fields(SaeInfo))
_SAES_DDL = ", ".join(f"{f.name} {f.metadata['sql']}" for f in fields(SaeInfo))

DDL = f"""
CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE saes ({_SAES_DDL});
CREATE TABLE features (
    sae_id VARCHAR, feature INTEGER, density DOUBLE, mean_act DOUBLE, max_act DOUBLE, n_fired BIGINT,
    label VARCHAR, top_tokens INTEGER[], hist BIGINT[], interval_width DOUBLE
);
CREATE TABLE contexts (
    sae_id VARCHAR, feature INTEGER, kind VARCHAR, bin INTEGER, rank INTEGER, act FLOAT, "window" BIGINT,
    pos INTEGER, token_ids INTEGER[], acts FLOAT[]
);
CREATE TABLE logits (sae_id VARCHAR, feature INTEGER, sign TINYINT, rank INTEGER, token_id INTEGER, value FLOAT);
CREATE TABLE neighbors (
    sae_id VARCHAR, feature INTEGER, other_sae_id VARCHAR, other_feature INTEGER, cosine FLOAT, rank INTEGER
);
CREATE TABLE vocab (token_id INTEGER PRIMARY KEY, token VARCHAR, bytes BLOB);
CREATE TABLE cards (sae_id VARCHAR, feature INTEGER, card BLOB USING COMPRESSION uncompressed);
"""

TABLES = tuple(re.findall(r"CREATE TABLE (\w+)", DDL))
