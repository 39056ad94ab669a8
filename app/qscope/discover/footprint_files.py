"""Footprint files: the per-feature statistics of one or two datasets, written as Parquet or DuckDB and read back.

One row per feature that fired on either dataset: sae_id, feature, label, fire_a, mass_a, in_a and, with a
second dataset, fire_b, mass_b, in_b (fire: share of the examples it fires on; mass: share of the activation
mass; in: whether it is in that dataset's footprint at the file's settings). The settings and sizes travel as
JSON: in the Parquet key-value metadata under "qscope", or in the DuckDB table `meta`. Features absent from the
file fired on neither dataset, so reading the rows back gives the same footprints and comparison. Files are
written beside their destination and renamed into place: a reader never sees half a file. Reading treats the
file as a stranger's upload (qscope.store.untrusted): its tables' named columns only, within bounds.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np

from qscope.discover.footprints import By, Stats, members
from qscope.store import untrusted
from qscope.store.untrusted import Bounds, Column

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


FOOTPRINT_COLUMNS = [
    Column("sae_id", "text", max_bytes=200),
    Column("feature", "integer"),
    Column("label", "text", required=False, max_bytes=2000),
    Column("fire_a", "real"),
    Column("mass_a", "real"),
    Column("fire_b", "real", required=False),
    Column("mass_b", "real", required=False),
]
META_COLUMNS = [Column("key", "text", max_bytes=100), Column("value", "text", max_bytes=1_000_000)]


def read(path: Path, name: str | None = None, bounds: Bounds | None = None) -> FootprintFile:
    """A footprint file written by `write` (FootprintFileError for anything else), `name` naming it in messages.

    The file is read as data from a stranger (qscope.store.untrusted): its tables only, within `bounds`."""
    path = Path(path)
    name = name or path.name
    try:
        if path.suffix == ".duckdb":
            tables = untrusted.read_duckdb(path, name, {"meta": META_COLUMNS, "footprint": FOOTPRINT_COLUMNS}, bounds)
            found = [v for k, v in zip(tables["meta"]["key"], tables["meta"]["value"], strict=True) if k == "qscope"]
            cols = tables["footprint"]
            what = "a DuckDB file"
        elif path.suffix == ".parquet":
            cols, kv = untrusted.read_parquet(path, name, FOOTPRINT_COLUMNS, bounds)
            found = [kv["qscope"]] if "qscope" in kv else []
            what = "a Parquet file"
        else:
            raise FootprintFileError(f"{name}: give a .parquet or .duckdb footprint file")
    except untrusted.UntrustedFileError as e:
        raise FootprintFileError(str(e)) from e
    if not found:
        raise FootprintFileError(f"{name}: {what}, but not a footprint written by qscope (no 'qscope' metadata)")
    return _rebuild(cols, _checked_meta(name, found[0]), name)


def _checked_meta(name: str, text: str) -> dict:
    """The settings a footprint file carries, each of the type and within the bounds the record needs."""
    try:
        meta = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise FootprintFileError(f"{name}: its qscope metadata is not JSON") from e
    if not isinstance(meta, dict):
        raise FootprintFileError(f"{name}: its qscope metadata is not a JSON object")

    def text_of(key: str, default: str, longest: int = 200) -> str:
        value = meta.get(key, default)
        if not isinstance(value, str) or len(value) > longest:
            raise FootprintFileError(f"{name}: metadata {key!r} should be text of at most {longest} characters")
        return value

    def count_of(key: str) -> int:
        value = meta.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 53:
            raise FootprintFileError(f"{name}: metadata {key!r} should be a count (a whole number >= 0)")
        return value

    def texts_of(key: str, most: int, longest: int) -> list[str]:
        value = meta.get(key, [])
        if not (isinstance(value, list) and len(value) <= most and all(isinstance(v, str) for v in value)):
            raise FootprintFileError(f"{name}: metadata {key!r} should be a list of at most {most} texts")
        return [v[:longest] for v in value]

    share = meta.get("share", 0.2)
    if not isinstance(share, (int, float)) or isinstance(share, bool) or not 0 < share <= 1:
        raise FootprintFileError(f"{name}: metadata 'share' should be a number in (0, 1]")
    by = meta.get("by", "examples")
    if by not in ("examples", "mass"):
        raise FootprintFileError(f"{name}: metadata 'by' should be 'examples' or 'mass'")
    checked = {
        "model_id": text_of("model_id", ""),
        "notes": texts_of("notes", 100, 1000),
        "by": by,
        "share": float(share),
        "name_a": text_of("name_a", "A"),
        "saes": texts_of("saes", 10_000, 200),
    }
    checked |= {k: count_of(k) for k in ("n_examples_a", "n_tokens_a", "n_examples_b", "n_tokens_b")}
    if "name_b" in meta:
        checked["name_b"] = text_of("name_b", "B")
    return checked


def _rebuild(cols: dict[str, list], meta: dict, name: str) -> FootprintFile:
    if ("fire_b" in cols) != ("mass_b" in cols):
        raise FootprintFileError(f"{name}: a second dataset needs both fire_b and mass_b")
    keys = list(zip(cols["sae_id"], cols["feature"], strict=True))
    if len(set(keys)) != len(keys):
        raise FootprintFileError(f"{name}: a feature appears in more than one row")
    share_columns: tuple[str, ...] = ("fire_a", "mass_a", "fire_b", "mass_b")
    shares = {c: np.asarray(cols[c], np.float64) for c in share_columns if c in cols}
    for column, values in shares.items():
        if values.size and not (values.min() >= 0 and values.max() <= 1 + 1e-6):
            raise FootprintFileError(f"{name}: column {column} holds shares outside [0, 1]")
    rank = {s: i for i, s in enumerate(meta["saes"] or sorted({k[0] for k in keys}))}
    order = sorted(range(len(keys)), key=lambda i: (rank.get(keys[i][0], 0), keys[i][1]))
    keys = [keys[i] for i in order]
    label_col = cols.get("label") or [""] * len(order)
    labels = {keys[j]: label_col[i] for j, i in enumerate(order)}

    def side(set_name: str, tag: str) -> Stats:
        fire, mass = shares[f"fire_{tag}"][order], shares[f"mass_{tag}"][order]
        return Stats(set_name, keys, fire, mass, meta[f"n_examples_{tag}"], meta[f"n_tokens_{tag}"])

    a = side(meta["name_a"], "a")
    b = side(meta.get("name_b", "B"), "b") if "fire_b" in cols else None
    return FootprintFile(a, b, meta["by"], meta["share"], labels, meta)
