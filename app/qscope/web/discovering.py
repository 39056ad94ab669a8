"""What the discover, detector, footprint and job routes share: the service dependency, the served model as
discovery sees it, and the translation of bad input into 422s."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from qscope.discover.demo import corpus_dir_of
from qscope.discover.detectors import DetectorError
from qscope.discover.examples import ExamplesError
from qscope.discover.service import Discovering, ServedModel
from qscope.jobs import Job, QueueFull
from qscope.live.runner import LiveModels
from qscope.store.meta import settings_of
from qscope.web import urls
from qscope.web.catalog import Catalog, NotFound
from qscope.web.errors import Unprocessable


def get_discovering(request: Request) -> Discovering:
    return request.app.state.discovering


DiscoveringDep = Annotated[Discovering, Depends(get_discovering)]


def corpus_dir(live: LiveModels, model_id: str) -> Path | None:
    """The demo corpus of a served model, if its store was harvested from a `qscope build-demo` folder."""
    runner = live.get(model_id)
    if runner is None:
        return None
    return corpus_dir_of(runner.store.model_source, settings_of(runner.store.meta).get("corpus"))


def served(catalog: Catalog, live: LiveModels, model_id: str | None) -> ServedModel:
    """The live model (loaded on first use) of `model_id` (default: the first served)."""
    model_id = catalog.model_id_or_first(model_id)
    runner = live.get(model_id)
    if runner is None:
        raise NotFound(f"No live model for {model_id!r}.")
    lm, saes = runner.load()
    return ServedModel(
        model_id,
        lm.model,
        lm.require_tokenizer(),
        saes,
        runner.lock,
        runner.skip_first,
        runner.sink_norm_ratio,
        runner.store.label,
        runner.store.decode,
        corpus_dir(live, model_id),
    )


@contextmanager
def bad_input() -> Iterator[None]:
    """Bad examples, files or detector specs become 422s whose message names the field or limit."""
    try:
        yield
    except (ExamplesError, DetectorError) as e:
        raise Unprocessable(f"Bad parameter: {e}") from e


class JobOut(BaseModel):
    """A background job as its status URL reports it."""

    id: str
    kind: str = Field(description="discover | footprint | fix")
    name: str
    state: str = Field(description="queued | running | done | failed | cancelled")
    phase: str = Field(description="What it is doing now, e.g. 'forward + encode'.")
    done: float = Field(description="Units of the phase done (a fix's generating rows count in fractions of a batch).")
    total: int = Field(description="Units of the phase (tokens for forward + encode).")
    rate: float | None = Field(description="Units per second in this phase.")
    eta_s: float | None
    result: str | None = Field(description="The id of what it saved, once done.")
    result_url: str | None = Field(description="Its permalink, once done.")
    error: str | None
    status_url: str
    cancel_url: str


WAITED: dict[int | str, dict[str, Any]] = {
    200: {"description": "With `wait`: the finished result, and its permalink in `url`."}
}

JOB_POST: dict[str, Any] = {"status_code": 202, "response_model": JobOut, "responses": WAITED}  # a POST starting a job


async def served_async(catalog: Catalog, live: LiveModels, model_id: str | None) -> ServedModel:
    """`served` off the event loop (its first use loads the model)."""
    return await asyncio.to_thread(served, catalog, live, model_id)


def _result_url(job: Job) -> str | None:
    if job.result is None:
        return None
    by_kind = {"discover": urls.discovery, "fix": urls.fix_result}
    return by_kind.get(job.kind, urls.footprint)(job.result)


def job_json(job: Job) -> dict:
    return {
        "id": job.id,
        "kind": job.kind,
        "name": job.name,
        "state": job.state,
        "phase": job.phase,
        "done": job.done,
        "total": job.total,
        "rate": job.rate,
        "eta_s": job.eta_s,
        "result": job.result,
        "result_url": _result_url(job),
        "error": job.error,
        "status_url": urls.job(job.id),
        "cancel_url": urls.job(job.id) + "/cancel",
    }


def busy(e: QueueFull) -> JSONResponse:
    """503 when the job queue is full, 429 when the client's own share of it is."""
    return JSONResponse(
        {"status": e.status, "error": str(e)}, status_code=e.status, headers={"Retry-After": str(e.retry_after_s)}
    )
