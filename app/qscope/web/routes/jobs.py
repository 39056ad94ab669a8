"""Background jobs (discoveries, footprints): `GET /api/jobs/{id}` (phase, progress, rate, ETA, where the result
is once done) and `POST /api/jobs/{id}/cancel`. The discover and footprint pages poll these."""

from __future__ import annotations

from fastapi import APIRouter

from qscope.web.catalog import NotFound
from qscope.web.discovering import DiscoveringDep, JobOut, job_json

router = APIRouter(prefix="/api/jobs", tags=["jobs"])


def _job(discovering, job_id: str):
    job = discovering.jobs.get(job_id)
    if job is None:
        raise NotFound(f"No job {job_id!r} on this server (finished jobs are kept a while, then forgotten).")
    return job


@router.get("/{job_id}", response_model=JobOut, summary="A job's state and progress; `result_url` once done")
def job_status(job_id: str, discovering: DiscoveringDep) -> dict:
    return job_json(_job(discovering, job_id))


@router.post("/{job_id}/cancel", response_model=JobOut, summary="Cancel a job (it stops before its next batch)")
def job_cancel(job_id: str, discovering: DiscoveringDep) -> dict:
    return job_json(discovering.jobs.cancel(job_id) or _job(discovering, job_id))
