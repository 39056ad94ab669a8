"""Footprint files: the per-feature statistics of one or two datasets, written as Parquet or DuckDB and read back.

One row per feature that fired on either dataset: sae_id, feature, label, fire_a, mass_a, in_a and, with a
second dataset, fire_b, mass_b, in_b (fire: share of the examples it fires on; mass: share of the activation
mass; in: whether it is in that dataset's footprint at the file's settings). The settings and sizes travel as
JSON: in the Parquet key-value metadata under "qscope", or in the DuckDB table `meta`. Features absent from the
file fired on neither dataset, so reading the rows back gives the same footprints and comparison. Files are
written beside their destination and renamed into place: a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np

from qscope.discover.footprints import By, Stats, members

SUFFIXES = (".parquet", ".duckdb")


class FootprintFileError(ValueError):
    """A footprint file that cannot be written or read; the message names it and why."""


@dataclass
class FootprintFile:
    a: Stats
    b: Stats | None
    by: By
    share: float
    labels: dict[tuple[str, int], str]
    meta: dict


def _columns(a: Stats, b: Stats | None, by: By, share: float, labels: dict) -> dict[str, np.ndarray]:
    keep = (a.fire_share > 0) | (a.mass_share > 0)
    if b is not None:
        keep |= (b.fire_share > 0) | (b.mass_share > 0)
    idx = np.flatnonzero(keep)
    cols = {
        "sae_id": np.array([a.keys[i][0] for i in idx], dtype=object),
        "feature": np.array([a.keys[i][1] for i in idx], dtype=np.int32),
        "label": np.array([labels.get(a.keys[i], "") for i in idx], dtype=object),
    }
    for side, s in (("a", a), ("b", b)):
        if s is not None:
            cols |= {
                f"fire_{side}": s.fire_share[idx],
                f"mass_{side}": s.mass_share[idx],
                f"in_{side}": members(s, by, share)[idx],
            }
    return cols


def write(path: Path, a: Stats, b: Stats | None, by: By, share: float, labels: dict, meta: dict) -> Path:
    """Write the footprint(s) to `path` (.parquet or .duckdb), atomically."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise FootprintFileError(f"{path}: give a .parquet or .duckdb file name")
    meta = {
        **meta,
        "by": by,
        "share": share,
        "name_a": a.name,
        "n_examples_a": a.n_examples,
        "n_tokens_a": a.n_tokens,
        "n_features": len(a.keys),
        "saes": list(dict.fromkeys(k[0] for k in a.keys)),
    }
    if b is not None:
        meta |= {"name_b": b.name, "n_examples_b": b.n_examples, "n_tokens_b": b.n_tokens}
    cols = _columns(a, b, by, share, labels)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    select = ", ".join(f"{c}::VARCHAR AS {c}" if cols[c].dtype == object else c for c in cols)
    try:
        con = duckdb.connect(str(tmp) if path.suffix == ".duckdb" else ":memory:")
        try:
            con.register("_rows", cols)
            if path.suffix == ".duckdb":
                con.execute(f"CREATE TABLE footprint AS SELECT {select} FROM _rows ORDER BY sae_id, feature")
                con.execute("CREATE TABLE meta (key VARCHAR, value VARCHAR)")
                con.execute("INSERT INTO meta VALUES ('qscope', ?)", [json.dumps(meta)])
                con.execute("CHECKPOINT")
            else:
                literal = json.dumps(meta).replace("'", "''")
                con.execute(
                    f"COPY (SELECT {select} FROM _rows ORDER BY sae_id, feature) TO '{_sql_path(tmp)}' "
                    f"(FORMAT parquet, KV_METADATA {{qscope: '{literal}'}})"
                )
        finally:
            con.close()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")


def read(path: Path) -> FootprintFile:
    """A footprint file written by `write` (FootprintFileError for anything else)."""
    path = Path(path)
    try:
        if path.suffix == ".duckdb":
            con = duckdb.connect(str(path), read_only=True)
            try:
                row = con.execute("SELECT value FROM meta WHERE key = 'qscope'").fetchone()
                if row is None:
                    raise FootprintFileError(f"{path.name}: a DuckDB file, but not a footprint written by qscope")
                meta = json.loads(row[0])
                cols = con.execute("SELECT * FROM footprint").fetchnumpy()
            finally:
                con.close()
        elif path.suffix == ".parquet":
            con = duckdb.connect()
            try:
                kv = con.execute(f"SELECT key, value FROM parquet_kv_metadata('{_sql_path(path)}')").fetchall()
                found = [v for k, v in kv if bytes(k) == b"qscope"]
                if not found:
                    raise FootprintFileError(f"{path.name}: a Parquet file, but not a footprint written by qscope")
                meta = json.loads(bytes(found[0]).decode())
                cols = con.execute(f"SELECT * FROM read_parquet('{_sql_path(path)}')").fetchnumpy()
            finally:
                con.close()
        else:
            raise FootprintFileError(f"{path.name}: give a .parquet or .duckdb footprint file")
    except (duckdb.Error, TypeError, KeyError, json.JSONDecodeError) as e:
        raise FootprintFileError(f"{path.name} is not a footprint file written by qscope: {e}") from e
    return _rebuild(cols, meta)


def _rebuild(cols: dict, meta: dict) -> FootprintFile:
    saes = meta.get("saes") or sorted(set(cols["sae_id"].tolist()))
    sae_ids, features = cols["sae_id"].tolist(), cols["feature"].astype(np.int64)
    keys = [(s, int(f)) for s, f in zip(sae_ids, features, strict=True)]
    order = sorted(range(len(keys)), key=lambda i: (saes.index(keys[i][0]) if keys[i][0] in saes else 0, keys[i][1]))
    keys = [keys[i] for i in order]
    labels = {keys[j]: str(cols["label"][i] or "") for j, i in enumerate(order)}

    def side(name: str, tag: str) -> Stats:
        fire, mass = (
            np.asarray(cols[f"fire_{tag}"], np.float64)[order],
            np.asarray(cols[f"mass_{tag}"], np.float64)[order],
        )
        return Stats(name, keys, fire, mass, int(meta.get(f"n_examples_{tag}", 0)), int(meta.get(f"n_tokens_{tag}", 0)))

    a = side(meta.get("name_a", "A"), "a")
    b = side(meta.get("name_b", "B"), "b") if "fire_b" in cols else None
    return FootprintFile(a, b, meta.get("by", "examples"), float(meta.get("share", 0.2)), labels, meta)
