"""A store's `meta` table: what was harvested, from which model, with which settings. One reader of it for the
server, the startup checks, `qscope demo` and the release runner."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb

from qscope.store.schema import SCHEMA_VERSION


def meta_of(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """The meta table of an open store as {key: value}."""
    return dict(con.execute("SELECT key, value FROM meta").fetchall())


def read_meta(path: str | Path) -> dict[str, str] | None:
    """The meta table of the store at `path`, or None when it is not a readable store."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error:
        return None
    try:
        return meta_of(con)
    except duckdb.Error:
        return None
    finally:
        con.close()


def settings_of(meta: dict[str, str]) -> dict[str, Any]:
    """The harvest settings a store records (HarvestOptions.settings() as written)."""
    return json.loads(meta.get("settings") or "{}")


def model_source(meta: dict[str, str]) -> str | None:
    """The model folder or hub id the harvest ran (what live runs load)."""
    return meta.get("model") or settings_of(meta).get("model")


def version_problem(path: str | Path, version: str | None) -> str | None:
    """Why this qscope cannot read a store of schema `version`, in one line that says what to run; None when it
    can. An older (or unreadable) version is harvested again; a newer one needs a newer qscope."""
    if version == str(SCHEMA_VERSION):
        return None
    if version is not None and version.isdigit() and int(version) > SCHEMA_VERSION:
        return (
            f"{path} is a feature store of schema version {version}, written by a newer qscope (this one reads "
            f"version {SCHEMA_VERSION}): upgrade qscope to serve it (pip install -U qscope), or harvest it again "
            "with this one"
        )
    return (
        f"{path} is a feature store of schema version {version or 'unknown'}, older than the version "
        f"{SCHEMA_VERSION} this qscope reads: run `qscope harvest` again to rewrite it"
    )


def is_current(path: str | Path) -> bool:
    """Whether `path` is a feature store this qscope reads (right schema version); False for anything else."""
    meta = read_meta(path)
    return meta is not None and meta.get("schema_version") == str(SCHEMA_VERSION)
