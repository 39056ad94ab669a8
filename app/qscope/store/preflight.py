"""Startup checks of the files a server reads: each feature store, and the model and SAE files it records.

`qscope serve` runs them before it binds, so a missing, truncated or corrupt file stops it with one line that
names the file and says what to do, not a traceback at startup or a 500 on the first page that reads it. The
checks are structural and cheap (DuckDB's block count, zip directories, safetensors headers, JSON configs):
nothing is loaded. A model or SAE that is absent only turns live runs off (the server says so); one that is
present but damaged is an error, since the first /inspect or steering request would fail on it.
"""

from __future__ import annotations

import json
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from qscope.store.meta import meta_of, model_source, version_problem
from qscope.store.schema import TABLES

DUCKDB_HEADERS = 3 * 4096  # the main header and two database headers precede the blocks
WEIGHT_SUFFIXES = (".pt", ".bin", ".safetensors", ".json")


class PreflightError(Exception):
    """A file the server cannot serve; the message is one line naming the file and the fix."""


@dataclass
class StoreFiles:
    """What one feature store records about its inputs."""

    path: Path
    model: str | None
    saes: list[str] = field(default_factory=list)


def check_store(path: Path) -> StoreFiles:
    """Open `path` read-only and check it is a whole qscope feature store; PreflightError if not."""
    if not path.is_file():
        raise PreflightError(f"no feature store at {path}: run `qscope harvest --out {path}` first")
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as e:
        raise PreflightError(f"{path} is not a readable DuckDB file (corrupt or truncated?): {_first_line(e)}") from e
    try:
        _check_size(con, path)
        present = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        missing = [t for t in TABLES if t not in present]
        if missing:
            raise PreflightError(f"{path} is not a qscope feature store (no table {missing[0]})")
        meta = meta_of(con)
        if problem := version_problem(path, meta.get("schema_version")):
            raise PreflightError(problem)
        saes = [r[0] for r in con.execute("SELECT DISTINCT source FROM saes ORDER BY source").fetchall()]
    except duckdb.Error as e:
        raise PreflightError(f"{path} cannot be read (corrupt or truncated?): {_first_line(e)}") from e
    finally:
        con.close()
    return StoreFiles(path, model_source(meta), saes)


def _check_size(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """DuckDB lays blocks out one after another after its headers: a shorter file lost its end."""
    cur = con.execute("PRAGMA database_size")
    values = cur.fetchone()
    assert values is not None, "PRAGMA database_size returns one row"
    row = dict(zip([d[0] for d in cur.description], values, strict=True))
    expected = DUCKDB_HEADERS + int(row["total_blocks"]) * int(row["block_size"])
    size = path.stat().st_size
    if size < expected:
        raise PreflightError(
            f"{path} is truncated: {size:,} bytes of the {expected:,} its header counts; "
            "copy it again or re-run the harvest"
        )


def check_weights(path: Path) -> str | None:
    """Why the weight or config file at `path` is damaged, or None (headers only; no tensor is read)."""
    try:
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".safetensors":
            return _safetensors_problem(path)
        elif path.suffix in (".pt", ".bin"):
            return _torch_problem(path)
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        return f"{path} is damaged (truncated or not a {path.suffix} file): {_first_line(e)}"
    return None


def _torch_problem(path: Path) -> str | None:
    """torch.save writes a zip whose directory is at the end (a truncated file loses it); files from before
    torch 1.6 are a bare pickle (0x80 first), which is left unchecked."""
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            legacy = f.read(1) == b"\x80"
        return None if legacy else f"{path} is damaged: not a torch file (no zip directory: truncated?)"
    with zipfile.ZipFile(path) as z:
        if not any(n.endswith("data.pkl") for n in z.namelist()):
            return f"{path} is a zip file but not a torch checkpoint (no data.pkl)"
    return None


def _safetensors_problem(path: Path) -> str | None:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        (n,) = struct.unpack("<Q", head) if len(head) == 8 else (size,)
        if n > min(size - 8, 100_000_000):
            return f"{path} is damaged: its header length {n:,} does not fit in the file ({size:,} bytes)"
        header = json.loads(f.read(n))
    end = max((int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        return f"{path} is truncated: {size:,} bytes, its header needs {8 + n + end:,}"
    return None


def _files(source: Path) -> list[Path]:
    """The weight and config files of an SAE or model: the file and the configs beside it, or a folder's."""
    if source.is_file():
        configs = [source.with_name(n) for n in ("cfg.json", "config.json", "hyperparams.json")]
        return [source, *(c for c in configs if c.is_file())]
    return sorted(p for p in (*source.glob("*"), *source.glob("*/*")) if p.is_file() and p.suffix in WEIGHT_SUFFIXES)


def check_inputs(files: StoreFiles) -> list[str]:
    """Warnings for a model or SAE that is not on this machine; PreflightError for one that is damaged."""
    name, warnings = files.path.name, []
    local = [("model", files.model)] if files.model and files.model.startswith(("/", ".")) else []
    for what, source in [*local, *(("SAE", s) for s in files.saes)]:
        if not Path(source).exists():
            warnings.append(f"live runs (inspect, steering) are off for {name}: its {what} {source} is not here")
            continue
        for f in _files(Path(source)):
            if problem := check_weights(f):
                raise PreflightError(f"the {what} of {name}: {problem}; restore the file or re-download it")
    return warnings


def preflight(paths: list[Path]) -> list[str]:
    """Check every store and what it records; the warnings to show, or PreflightError for the first problem."""
    warnings: list[str] = []
    for path in paths:
        warnings += check_inputs(check_store(path))
    return list(dict.fromkeys(warnings))


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
