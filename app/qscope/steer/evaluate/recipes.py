"""The app database of evaluations (SQLAlchemy, the same URL as the shared steering runs): a row per job with
its state and progress, and a recipe per finished evaluation, stored whole as JSON under the job's id.

A job row is written when the job is queued and again as it runs (its progress doubles as a heartbeat). A
recipe is written in the same transaction that marks its job done, so a job is never "done" without its recipe
and a recipe never half-written. A job left running by a process that is gone (the server stopped or was
killed) is marked failed when it is next read: its owner is this host's pid that no longer runs, a previous
run of this very process, or its heartbeat is older than STALE_S.

A recipe stored before every request float had to be finite may hold a strength that was NaN, written as null;
it is read without that strength (and says so in its notes), so that its pages render and it can run again.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic import ValidationError
from sqlalchemy import DateTime, Float, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from qscope.appdb import Base, open_app_db
from qscope.steer.evaluate.result import EvalResult

STALE_S = 60.0
HOST, PID, BOOT = socket.gethostname(), os.getpid(), secrets.token_hex(4)
OWNER = f"{HOST}:{PID}:{BOOT}"
GONE = "the server stopped while the evaluation ran; start it again"


class JobRow(Base):
    __tablename__ = "steer_eval_jobs"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    model_id: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))  # queued | running | done | failed | cancelled
    owner: Mapped[str] = mapped_column(String(200))
    request: Mapped[str] = mapped_column(Text)  # EvalRequest as JSON (prompts written out)
    progress: Mapped[str] = mapped_column(Text, default="{}")
    error: Mapped[str] = mapped_column(Text, default="")


class RecipeRow(Base):
    __tablename__ = "steer_recipes"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    model_id: Mapped[str] = mapped_column(String(200))
    title: Mapped[str] = mapped_column(String(400))
    verdict: Mapped[str] = mapped_column(String(40))
    strength: Mapped[float | None] = mapped_column(Float, nullable=True)
    result: Mapped[str] = mapped_column(Text)  # EvalResult as JSON


@dataclass
class JobInfo:
    id: str
    created_at: datetime
    updated_at: datetime
    model_id: str
    status: str
    request: str
    progress: dict
    error: str


@dataclass
class RecipeInfo:
    """A recipe's line in the list (the result stays in the database until its page asks for it)."""

    id: str
    created_at: datetime
    model_id: str
    title: str
    verdict: str
    strength: float | None


def _stored(text: str) -> EvalResult:
    """A stored recipe; one from before strengths had to be finite is read without its null (once NaN) ones."""
    try:
        return EvalResult.model_validate_json(text)
    except ValidationError:
        data = json.loads(text)
        lists = (data.get("request", {}), "strengths"), (data, "strengths"), (data.get("verdict", {}), "beats_controls")
        dropped = 0
        for holder, key in lists:
            values = holder.get(key) or []
            holder[key] = [v for v in values if v is not None]
            dropped += len(values) - len(holder[key])
        if dropped:
            data["notes"] = [*data.get("notes", []), "a strength that was not a finite number (NaN) was left out"]
        return EvalResult.model_validate_json(json.dumps(data))


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)  # SQLite gives naive datetimes back


def _gone(owner: str, updated_at: datetime) -> bool:
    """Whether the process that owns a running job is gone (see the module docstring)."""
    host, _, rest = owner.partition(":")
    pid, _, boot = rest.partition(":")
    if owner == OWNER:
        return False
    if host == HOST and pid.isdigit():
        if int(pid) == PID:
            return True  # this pid, another boot: a previous run of this process
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
    return _now() - _aware(updated_at) > timedelta(seconds=STALE_S)


class RecipeStore:
    """Jobs and recipes in the app database; the schema is made or upgraded when it opens (qscope.appdb)."""

    def __init__(self, url: str) -> None:
        self.engine = open_app_db(url)

    def add_job(self, job_id: str, model_id: str, request_json: str) -> None:
        now = _now()
        with Session(self.engine) as s, s.begin():
            s.add(
                JobRow(
                    id=job_id,
                    created_at=now,
                    updated_at=now,
                    model_id=model_id,
                    status="queued",
                    owner=OWNER,
                    request=request_json,
                    progress="{}",
                    error="",
                )
            )

    def update_job(self, job_id: str, status: str, progress: dict | None = None, error: str = "") -> None:
        with Session(self.engine) as s, s.begin():
            row = s.get(JobRow, job_id)
            if row is None:
                return
            row.status, row.updated_at, row.error = status, _now(), error
            if progress is not None:
                row.progress = json.dumps(progress)

    def finish(self, job_id: str, result: EvalResult, title: str, progress: dict) -> None:
        """Save the recipe and mark its job done, in one transaction."""
        with Session(self.engine) as s, s.begin():
            s.add(
                RecipeRow(
                    id=job_id,
                    created_at=_now(),
                    model_id=result.identity.model_id,
                    title=title,
                    verdict=result.verdict.status,
                    strength=result.verdict.strength,
                    result=result.model_dump_json(),
                )
            )
            row = s.get(JobRow, job_id)
            if row is not None:
                row.status, row.updated_at, row.progress = "done", _now(), json.dumps(progress)

    def job(self, job_id: str) -> JobInfo | None:
        """A job as stored; one whose process is gone is marked failed first."""
        with Session(self.engine) as s, s.begin():
            row = s.get(JobRow, job_id)
            if row is None:
                return None
            if row.status in ("queued", "running") and _gone(row.owner, row.updated_at):
                row.status, row.error, row.updated_at = "failed", GONE, _now()
            return JobInfo(
                row.id,
                _aware(row.created_at),
                _aware(row.updated_at),
                row.model_id,
                row.status,
                row.request,
                json.loads(row.progress or "{}"),
                row.error,
            )

    def fail_running(self, error: str) -> None:
        """Mark this process's queued and running jobs failed (the server is stopping)."""
        with Session(self.engine) as s, s.begin():
            for row in s.scalars(select(JobRow).where(JobRow.owner == OWNER, JobRow.status.in_(("queued", "running")))):
                row.status, row.error, row.updated_at = "failed", error, _now()

    def recipe(self, recipe_id: str) -> EvalResult | None:
        with Session(self.engine) as s:
            row = s.get(RecipeRow, recipe_id)
            return _stored(row.result) if row else None

    def recipes(self, limit: int = 100, offset: int = 0) -> list[RecipeInfo]:
        with Session(self.engine) as s:
            rows = s.scalars(select(RecipeRow).order_by(RecipeRow.created_at.desc()).limit(limit).offset(offset))
            return [RecipeInfo(r.id, _aware(r.created_at), r.model_id, r.title, r.verdict, r.strength) for r in rows]

    def close(self) -> None:
        self.engine.dispose()
