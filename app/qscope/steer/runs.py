"""The app database of shared steering runs (SQLAlchemy): a SQLite file by default, Postgres by URL.

Separate from the read-only DuckDB feature store: this one is written by the server. A run is stored whole
(spec and both outputs as JSON) under a short id that the permalink /steer/{id} uses: a digest of that JSON,
so sharing the same run again gives the same link and writes nothing.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime

from pydantic import ValidationError
from sqlalchemy import DateTime, String, Text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from qscope.appdb import Base, open_app_db
from qscope.steer.spec import SteerResult, SteerSpec


class DamagedRun(ValueError):
    """A saved run that no longer reads as a spec and result (saved before a check that now refuses it)."""


class SteerRun(Base):
    __tablename__ = "steer_runs"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    model_id: Mapped[str] = mapped_column(String(200))
    spec: Mapped[str] = mapped_column(Text)  # SteerSpec as JSON
    result: Mapped[str] = mapped_column(Text)  # SteerResult as JSON


class RunStore:
    """Save and load shared runs; the schema is made or upgraded when it opens (qscope.appdb)."""

    def __init__(self, url: str) -> None:
        self.engine = open_app_db(url)

    def save(self, spec: SteerSpec, result: SteerResult) -> str:
        """The run's id; the row is written only the first time this spec and result are saved."""
        spec_json, result_json = spec.model_dump_json(), result.model_dump_json()
        digest = hashlib.sha256(f"{spec_json}\n{result_json}".encode()).digest()
        run_id = base64.urlsafe_b64encode(digest).decode()[:11]  # 66 bits, as long as the random ids were
        row = SteerRun(
            id=run_id, created_at=datetime.now(UTC), model_id=spec.model_id or "", spec=spec_json, result=result_json
        )
        try:
            with Session(self.engine) as session, session.begin():
                if session.get(SteerRun, run_id) is None:
                    session.add(row)
        except IntegrityError:  # saved at the same moment by another request
            pass
        return run_id

    def get(self, run_id: str) -> tuple[SteerSpec, SteerResult] | None:
        with Session(self.engine) as session:
            run = session.get(SteerRun, run_id)
            if run is None:
                return None
            try:
                return SteerSpec.model_validate_json(run.spec), SteerResult.model_validate_json(run.result)
            except ValidationError as e:  # e.g. a NaN strength, which was stored as null
                err = e.errors()[0]
                where = ".".join(str(x) for x in err["loc"])
                raise DamagedRun(f"{where}: {err['msg']}") from e

    def close(self) -> None:
        self.engine.dispose()
