"""The app database of shared steering runs (SQLAlchemy): a SQLite file by default, Postgres by URL.

Separate from the read-only DuckDB feature store: this one is written by the server. A run is stored whole
(spec and both outputs as JSON) under a short random id that the permalink /steer/{id} uses.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import DateTime, String, Text, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from qscope.steer.spec import SteerResult, SteerSpec


class Base(DeclarativeBase):
    pass


class SteerRun(Base):
    __tablename__ = "steer_runs"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    model_id: Mapped[str] = mapped_column(String(200))
    spec: Mapped[str] = mapped_column(Text)  # SteerSpec as JSON
    result: Mapped[str] = mapped_column(Text)  # SteerResult as JSON


class RunStore:
    """Save and load shared runs; the tables are created on first use."""

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        self.engine = create_engine(url)
        Base.metadata.create_all(self.engine)

    def save(self, spec: SteerSpec, result: SteerResult) -> str:
        run_id = secrets.token_urlsafe(8)
        with Session(self.engine) as session, session.begin():
            session.add(
                SteerRun(
                    id=run_id,
                    created_at=datetime.now(UTC),
                    model_id=spec.model_id or "",
                    spec=spec.model_dump_json(),
                    result=result.model_dump_json(),
                )
            )
        return run_id

    def get(self, run_id: str) -> tuple[SteerSpec, SteerResult] | None:
        with Session(self.engine) as session:
            run = session.get(SteerRun, run_id)
            if run is None:
                return None
            return SteerSpec.model_validate_json(run.spec), SteerResult.model_validate_json(run.result)

    def close(self) -> None:
        self.engine.dispose()
