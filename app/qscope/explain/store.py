"""The explanations file of a feature store: ``FILE.duckdb.explanations.sqlite``, beside the store it explains.

Written by `qscope explain` one feature at a time (each explanation and each score is committed as soon as it
exists, so a run that is killed loses only the features in flight and the next run carries on); read by the server
through read-only connections while a run may still be writing. SQLite rather than DuckDB for this file: a DuckDB
file is either one writer or many readers, and the server must keep reading while `qscope explain` writes; the
feature store itself stays read-only and unchanged.

Tables: ``explanations`` (one row per feature: the text, the explainer, the scores and their scorer) and
``failures`` (the last error of each feature that could not be explained or scored, shown by the next run).
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from qscope.explain.scoring import Score, Trust, trust

SUFFIX = ".explanations.sqlite"
DDL = """
CREATE TABLE IF NOT EXISTS explanations (
    sae_id TEXT NOT NULL, feature INTEGER NOT NULL, explanation TEXT NOT NULL, explainer TEXT NOT NULL,
    created_at TEXT NOT NULL, detection REAL, detection_n INTEGER, fuzzing REAL, fuzzing_n INTEGER,
    unreadable INTEGER, scorer TEXT, scored_at TEXT, PRIMARY KEY (sae_id, feature)
);
CREATE TABLE IF NOT EXISTS failures (
    sae_id TEXT NOT NULL, feature INTEGER NOT NULL, stage TEXT NOT NULL, message TEXT NOT NULL, at TEXT NOT NULL,
    PRIMARY KEY (sae_id, feature)
);
"""
COLUMNS = (
    "sae_id, feature, explanation, explainer, created_at, detection, detection_n, fuzzing, fuzzing_n, "
    "unreadable, scorer, scored_at"
)


@dataclass
class Explanation:
    """One feature's explanation and its scores (None until scored)."""

    sae_id: str
    feature: int
    text: str
    explainer: str  # the model that wrote it
    created_at: str
    detection: float | None = None  # balanced accuracy, 0.5 = chance
    detection_n: int | None = None  # cases it was computed on
    fuzzing: float | None = None
    fuzzing_n: int | None = None
    unreadable: int | None = None  # scorer verdicts missing from its answers (counted as 0)
    scorer: str | None = None
    scored_at: str | None = None
    trust: Trust = field(init=False)  # 'beats chance', 'at chance' or 'unscored' (qscope.explain.scoring.trust)

    def __post_init__(self) -> None:
        self.trust = trust(self.detection, self.detection_n, self.fuzzing, self.fuzzing_n)

    @property
    def scored(self) -> bool:
        return self.scored_at is not None


def explanations_path(store_path: str | Path) -> Path:
    """Where the explanations of the store at `store_path` live."""
    p = Path(store_path)
    return p.with_name(p.name + SUFFIX)


def _clear_failure(sae_id: str, feature: int) -> tuple[str, tuple]:
    return "DELETE FROM failures WHERE sae_id = ? AND feature = ?", (sae_id, feature)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class ExplanationWriter:
    """The writing side (one per `qscope explain` run); safe to call from many threads."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.con = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        self.con.executescript(DDL)
        self._lock = threading.Lock()

    def _write(self, *statements: tuple[str, tuple]) -> None:
        with self._lock, self.con:  # one transaction, committed on leaving
            for sql, params in statements:
                self.con.execute(sql, params)

    def put_explanation(self, sae_id: str, feature: int, text: str, explainer: str) -> None:
        """Store (or replace) a feature's explanation; its old scores go (they scored another text)."""
        sql = f"INSERT OR REPLACE INTO explanations ({COLUMNS}) VALUES (?, ?, ?, ?, ?{', NULL' * 7})"
        self._write((sql, (sae_id, feature, text, explainer, _now())), _clear_failure(sae_id, feature))

    def put_scores(self, sae_id: str, feature: int, detection: Score, fuzzing: Score, scorer: str) -> None:
        sql = (
            "UPDATE explanations SET detection = ?, detection_n = ?, fuzzing = ?, fuzzing_n = ?, unreadable = ?, "
            "scorer = ?, scored_at = ? WHERE sae_id = ? AND feature = ?"
        )
        unreadable = detection.unreadable + fuzzing.unreadable
        params = (detection.value, detection.n, fuzzing.value, fuzzing.n, unreadable, scorer, _now(), sae_id, feature)
        self._write((sql, params), _clear_failure(sae_id, feature))

    def put_failure(self, sae_id: str, feature: int, stage: str, message: str) -> None:
        row = (sae_id, feature, stage, message, _now())
        self._write(("INSERT OR REPLACE INTO failures VALUES (?, ?, ?, ?, ?)", row))

    def done(self) -> tuple[set[tuple[str, int]], set[tuple[str, int]]]:
        """(keys explained, keys scored) so far."""
        with self._lock:
            rows = self.con.execute("SELECT sae_id, feature, scored_at FROM explanations").fetchall()
        return {(s, f) for s, f, _ in rows}, {(s, f) for s, f, at in rows if at is not None}

    def get(self, sae_id: str, feature: int) -> Explanation | None:
        with self._lock:
            row = self.con.execute(
                f"SELECT {COLUMNS} FROM explanations WHERE sae_id = ? AND feature = ?", (sae_id, feature)
            ).fetchone()
        return Explanation(*row) if row else None

    def close(self) -> None:
        self.con.close()


class ExplanationReader:
    """The reading side (the server, exports): a short read-only connection per call, so that a run writing the
    file at the same time is never blocked for long and every call sees what has been committed."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def exists(self) -> bool:
        return self.path.is_file()

    @property
    def signature(self) -> str:
        """Changes whenever the file is written ('' while there is none)."""
        if not self.exists():
            return ""
        st = self.path.stat()
        return f"{st.st_size}-{st.st_mtime_ns}"

    def _query(self, sql: str, params: tuple = ()) -> list[tuple]:
        if not self.exists():
            return []
        con = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute(sql, params).fetchall()
        except sqlite3.OperationalError:  # a file being created has no tables yet
            return []
        finally:
            con.close()

    def get(self, sae_id: str, feature: int) -> Explanation | None:
        rows = self._query(f"SELECT {COLUMNS} FROM explanations WHERE sae_id = ? AND feature = ?", (sae_id, feature))
        return Explanation(*rows[0]) if rows else None

    def many(self, sae_id: str, features: list[int]) -> dict[int, Explanation]:
        if not features:
            return {}
        marks = ", ".join("?" * len(features))
        rows = self._query(
            f"SELECT {COLUMNS} FROM explanations WHERE sae_id = ? AND feature IN ({marks})", (sae_id, *features)
        )
        return {r[1]: Explanation(*r) for r in rows}

    def all(self) -> list[Explanation]:
        return [Explanation(*r) for r in self._query(f"SELECT {COLUMNS} FROM explanations ORDER BY sae_id, feature")]

    def failures(self) -> list[tuple[str, int, str, str]]:
        return self._query("SELECT sae_id, feature, stage, message FROM failures ORDER BY sae_id, feature")
