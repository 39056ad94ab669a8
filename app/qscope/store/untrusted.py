"""Reading a DuckDB or Parquet file that a stranger sent (an upload): data, never code, within bounds.

DuckDB's own security model assumes its data files come from a trusted writer: a DuckDB file can hold views and
macros (queries that run when read: `read_text('/etc/passwd')`, `glob('/')`, `range(10^9)`), and a crafted file
may crash the process or allocate without bound. So the server never opens an upload itself. It runs
`qscope.store.untrusted_reader` in a child process that
- has an address-space and CPU-time limit, no environment but its import path, and is killed past `seconds`;
- opens DuckDB with external access off (no file but the upload, no network, no extension loading) and the
  configuration locked, one thread and `memory_limit`;
- reads base tables only (a file holding any view or macro is refused; generated columns are refused), only the
  columns asked for, each of the asked kind, at most `max_rows` rows, text within its bounds, numbers finite;
and answers with JSON. Messages name the file by the name its sender gave, never by the server's path.
At most `READERS` files are read at once.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)
Kind = Literal["text", "integer", "real", "boolean"]
READERS = 2  # files read at once (each reader may take its address-space limit)
_slots = threading.BoundedSemaphore(READERS)


class UntrustedFileError(ValueError):
    """A file refused or unreadable; the message names it (by its sender's name) and why."""


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind
    required: bool = True
    max_bytes: int = 1000  # text: the longest value accepted (bytes of UTF-8)


@dataclass(frozen=True)
class Bounds:
    max_rows: int = 100_000  # per table
    max_text_bytes: int = 16_000_000  # all text read from the file, summed
    memory_mb: int = 256  # DuckDB's memory limit in the reader
    address_space_mb: int = 1536  # the reader process's whole address space (Python, DuckDB and its threads)
    seconds: float = 20.0  # wall-clock time for the whole read, process start included


@dataclass
class Request:
    path: str
    name: str
    format: Literal["duckdb", "parquet"]
    tables: dict[str, list[Column]]  # parquet: one entry, "" (the file itself)
    kv_metadata: bool = False  # parquet: also answer the key-value metadata (UTF-8 text, bounded)
    bounds: Bounds = field(default_factory=Bounds)


Columns = dict[str, list]  # column name -> its values, one per row


def read_duckdb(path: Path, name: str, tables: dict[str, list[Column]], bounds: Bounds | None = None) -> dict:
    """{table: Columns} of the base tables named, from a DuckDB file someone else wrote."""
    return _run(Request(str(path), name, "duckdb", tables, bounds=bounds or Bounds()))["tables"]


def read_parquet(
    path: Path, name: str, columns: list[Column], bounds: Bounds | None = None
) -> tuple[Columns, dict[str, str]]:
    """(the columns, the key-value metadata) of a Parquet file someone else wrote."""
    out = _run(Request(str(path), name, "parquet", {"": columns}, kv_metadata=True, bounds=bounds or Bounds()))
    return out["tables"][""], out["kv"]


def _run(req: Request) -> dict:
    b = req.bounds
    if not _slots.acquire(timeout=b.seconds):
        raise UntrustedFileError(f"{req.name}: the server is busy reading other files; try again in a minute")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "qscope.store.untrusted_reader"],
            input=json.dumps(asdict(req)),
            capture_output=True,
            text=True,
            timeout=b.seconds,
            cwd=Path(req.path).parent,
            env={"PYTHONPATH": _import_path(), "PYTHONDONTWRITEBYTECODE": "1"},
        )
    except subprocess.TimeoutExpired as e:
        raise UntrustedFileError(f"{req.name}: reading it took longer than {b.seconds:g} s") from e
    finally:
        _slots.release()
    try:
        out = json.loads(done.stdout) if done.returncode == 0 else None
    except json.JSONDecodeError:
        out = None
    if not isinstance(out, dict):
        log.warning("untrusted reader for %s stopped (%s): %s", req.name, done.returncode, done.stderr[-2000:])
        raise UntrustedFileError(
            f"{req.name} could not be read: a damaged file, or one that needs more than the "
            f"{b.address_space_mb:,} MB a file may take"
        )
    if "error" in out:
        raise UntrustedFileError(hide_paths(str(out["error"]), req.path, req.name))
    return out


def _import_path() -> str:
    """This process's import path, absolute (the reader runs in the upload's folder), as PYTHONPATH."""
    return os.pathsep.join(os.path.abspath(p) for p in sys.path if p)


def hide_paths(message: str, path: str, name: str) -> str:
    """The message with the server's path of the file (and its folder) replaced by the sender's name for it."""
    folder = str(Path(path).parent)
    return message.replace(path, name).replace(folder + os.sep, "").replace(folder, "")
