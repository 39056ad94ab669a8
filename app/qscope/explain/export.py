"""Export a store's explanations in bulk (`qscope explain-export`): one row per feature that has an explanation,
automatic or written by a person, with what a reader needs beside it (label, density, max activation) and the
scores. JSON lines, Parquet or CSV, by the output's suffix; written to a temporary name and renamed into place.

The explanations file itself travels with the store: copy ``FILE.duckdb`` and ``FILE.duckdb.explanations.sqlite``
together and a server of the copy shows them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import duckdb

from qscope.explain.notes import NoteStore
from qscope.explain.store import ExplanationReader
from qscope.store.queries import Store

COLUMNS = {
    "model_id": "VARCHAR",
    "sae_id": "VARCHAR",
    "feature": "INTEGER",
    "label": "VARCHAR",
    "density": "DOUBLE",
    "max_act": "DOUBLE",
    "explanation": "VARCHAR",
    "explainer": "VARCHAR",
    "created_at": "VARCHAR",
    "detection": "DOUBLE",
    "detection_n": "INTEGER",
    "fuzzing": "DOUBLE",
    "fuzzing_n": "INTEGER",
    "scorer": "VARCHAR",
    "trust": "VARCHAR",
    "people": "JSON",
}
SUFFIXES = (".jsonl", ".parquet", ".csv")


def export_rows(store: Store, reader: ExplanationReader, notes: NoteStore | None) -> list[dict]:
    """One dict per explained feature (COLUMNS), in (sae_id, feature) order; `people` lists people's explanations
    and notes ({kind, text, author, created_at})."""
    auto = {(e.sae_id, e.feature): e for e in reader.all() if e.sae_id in store.saes}
    people: dict[tuple[str, int], list[dict]] = {}
    for n in notes.all_notes() if notes is not None else []:
        if n.sae_id in store.saes and store.saes[n.sae_id].model_id == n.model_id:
            people.setdefault((n.sae_id, n.feature), []).append(
                {"kind": n.kind, "text": n.text, "author": n.author, "created_at": n.created_at}
            )
    keys = sorted(set(auto) | set(people))
    with store.reader(timeout_s=300) as r:
        rows = r.rows(keys)
    out = []
    for key in keys:
        e, row = auto.get(key), rows.get(key)
        out.append(
            {
                "model_id": store.saes[key[0]].model_id,
                "sae_id": key[0],
                "feature": key[1],
                "label": row.label if row else None,
                "density": row.density if row else None,
                "max_act": row.max_act if row else None,
                "explanation": e.text if e else None,
                "explainer": e.explainer if e else None,
                "created_at": e.created_at if e else None,
                "detection": e.detection if e else None,
                "detection_n": e.detection_n if e else None,
                "fuzzing": e.fuzzing if e else None,
                "fuzzing_n": e.fuzzing_n if e else None,
                "scorer": e.scorer if e else None,
                "trust": e.trust if e else None,  # 'beats chance', 'at chance' or 'unscored'
                "people": people.get(key, []),
            }
        )
    return out


def write_export(rows: list[dict], out: Path) -> None:
    """Write `rows` to `out` (.jsonl, .parquet or .csv), atomically."""
    if out.suffix not in SUFFIXES:
        raise ValueError(f"--out must end in {', '.join(SUFFIXES)}; got {out.name}")
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = out.with_name(out.name + ".tmp.jsonl")
    tmp = out.with_name(out.name + ".tmp")
    try:
        with open(lines, "w") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        if out.suffix == ".jsonl":
            os.replace(lines, out)
            return
        con = duckdb.connect()
        try:
            fmt = "parquet" if out.suffix == ".parquet" else "csv, HEADER"
            cols = ", ".join(f"'{k}': '{v}'" for k, v in COLUMNS.items())
            target = str(tmp).replace("'", "''")  # COPY takes its target as a literal, not a parameter
            sql = f"COPY (SELECT * FROM read_json(?, format = 'newline_delimited', columns = {{{cols}}})) TO '{target}'"
            con.execute(f"{sql} (FORMAT {fmt})", [str(lines)])
        finally:
            con.close()
        os.replace(tmp, out)
    finally:
        lines.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
