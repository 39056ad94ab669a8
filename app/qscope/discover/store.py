"""Saved discoveries, detectors, footprint comparisons and fixes in the app database (SQLAlchemy; SQLite by default).

The same database as shared steering runs (QSCOPE_APP_DB_URL), its own tables. Each record is stored whole as
JSON under a short random id, which its permalink uses (/discover/{id}, /detectors/{id}, /footprints/{id},
/fix/{id}); a few columns beside it (kind, model, name, headline figure) serve the lists without parsing every
record.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import DateTime, Float, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from qscope.appdb import Base, open_app_db

KINDS = ("discovery", "detector", "footprint", "fix")  # fix: qscope.fix, a discovery evaluated and ranked


class Record(Base):
    __tablename__ = "discover_records"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)  # discovery | detector | footprint | fix
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    model_id: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(300))
    figure: Mapped[float | None] = mapped_column(Float, nullable=True)  # test F1, top AUROC, overlap, best score
    body: Mapped[str] = mapped_column(Text)  # the record as JSON


@dataclass
class Listed:
    id: str
    kind: str
    created_at: str  # ISO 8601, to the second
    model_id: str
    name: str
    figure: float | None


def new_id() -> str:
    return secrets.token_urlsafe(8)


class DiscoverStore:
    """Save and load records; the schema is made or upgraded when it opens (qscope.appdb)."""

    def __init__(self, url: str) -> None:
        self.engine = open_app_db(url)

    def save(self, kind: str, record_id: str, model_id: str, name: str, body: str, figure: float | None = None) -> str:
        """Store a record under `record_id` (from new_id(), so the body can carry its own id)."""
        if kind not in KINDS:
            raise ValueError(f"unknown record kind {kind!r}")
        with Session(self.engine) as session, session.begin():
            session.add(
                Record(
                    id=record_id,
                    kind=kind,
                    created_at=datetime.now(UTC),
                    model_id=model_id,
                    name=name[:300],
                    figure=figure,
                    body=body,
                )
            )
        return record_id

    def get(self, kind: str, record_id: str) -> str | None:
        """The JSON body of a record of this kind, or None."""
        with Session(self.engine) as session:
            record = session.get(Record, record_id)
            return record.body if record is not None and record.kind == kind else None

    def list(self, kind: str, limit: int = 100) -> list[Listed]:
        """The newest records of a kind first."""
        stmt = select(Record.id, Record.kind, Record.created_at, Record.model_id, Record.name, Record.figure)
        stmt = stmt.where(Record.kind == kind).order_by(Record.created_at.desc()).limit(limit)
        with Session(self.engine) as session:
            rows = session.execute(stmt).all()
        return [Listed(i, k, when.isoformat(timespec="seconds"), m, n, f) for i, k, when, m, n, f in rows]

    def close(self) -> None:
        self.engine.dispose()
