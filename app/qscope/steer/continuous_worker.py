"""The steering worker with iteration-level scheduling (QSCOPE_STEER_SCHEDULER=continuous).

The same worker as qscope.steer.worker (the same bounded, per-client fair queue, waiting limit, background work
and events out), but its jobs do not run as fixed batches: at every decoding step the jobs whose rows have all
stopped leave (their cache rows freed at once), and the jobs waiting in the queue that fit the free rows join, their
prompt pass run between steps in chunks under a per-step token budget. The decisions are the pure
qscope.steer.scheduler's; the model runs through the `Engine` interface of qscope.steer.continuous. Jobs are taken
from the fair queue only when they fit (the first in fair order that does not fit blocks the rest, so a wide job is
not starved), so the queue's limits, its per-client share and its waiting limit apply as before.

A row stops as with the static worker (end of text, its max_new_tokens, its time limit counted from its first
step, its cancel flag); a stopped row leaves the batch at once, and its job is answered when its last row stops.
A model whose cache the continuous engine cannot merge (see EagerEngine.supported) runs its jobs statically.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import cast

from torch import nn

from qscope.steer.continuous import EagerEngine, Sampled
from qscope.steer.engine import RowOut, row_deadline, stop_reason
from qscope.steer.scheduler import Chunk, Request, Scheduler
from qscope.steer.worker import SteerJob, SteerWorker, _finite, _result, _Stream

log = logging.getLogger(__name__)


@dataclass
class _Flight:
    """A job in the scheduler: its rows' outputs, text streams, time limits and which rows still run."""

    job: SteerJob
    eos: set[int]
    outs: list[RowOut] = field(default_factory=list)
    streams: list[_Stream] = field(default_factory=list)
    deadlines: list[float | None] = field(default_factory=list)
    live: list[bool] = field(default_factory=list)

    def start(self) -> None:
        """Called at the job's first step: row time limits count from here."""
        now = time.monotonic()
        self.deadlines = [row_deadline(r, now) for r in self.job.rows]


class ContinuousWorker(SteerWorker):
    """SteerWorker whose batch changes at every step (see the module docstring)."""

    def __init__(self, *args, token_budget: int = 512, chunk_tokens: int = 256, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.scheduler = Scheduler(token_budget, self.max_batch_rows, chunk_tokens, clock=self.clock)
        self.engines: dict[int, EagerEngine] = {}  # by id(model)
        self.flights: dict[Hashable, _Flight] = {}
        self._ids = itertools.count()

    def take_batch(self) -> list[SteerJob]:
        """The waiting jobs that fit the free rows now, in fair order; none is left behind a job that does not."""
        return self.take_batch_after(0)

    def take_batch_after(self, rows: int) -> list[SteerJob]:
        """take_batch when `rows` more rows are spoken for (jobs taken, not yet in the scheduler)."""
        taken: list[SteerJob] = []
        while True:
            free = self.max_batch_rows - self.scheduler.rows_used() - rows - sum(len(j.rows) for j in taken)
            with self._cond:
                order = self.waiting.order()
                if not order or (len(order[0].rows) > free and (taken or self.flights or rows)):
                    return taken  # a job wider than the whole batch still runs, alone
                job = order[0]
                self.waiting.take(lambda j, job=job: j is job)  # type: ignore[misc]
            if not self._expired(job) and not job.cancel.is_set():
                taken.append(job)

    def run_batch(self, jobs: list[SteerJob]) -> None:
        """Step until every job in flight, and every job that arrives meanwhile and fits, has been answered."""
        if jobs and not self.flights:
            self.batches += 1  # here: a running batch started from empty
            jobs = jobs + self._gather(sum(len(j.rows) for j in jobs))
        for job in jobs:
            self._add(job)
        while self.flights:
            self._step()
            for job in self.take_batch():
                self._add(job)
        self.engines.clear()  # idle: hold no model or cache

    def _gather(self, rows: int) -> list[SteerJob]:
        """Jobs arriving within gather_s of a batch that starts from empty (as the static worker gathers): clients
        with many requests in flight send the next ones a moment after their last ones were answered."""
        more: list[SteerJob] = []
        deadline = time.monotonic() + self.gather_s
        while rows < self.max_batch_rows and (wait := deadline - time.monotonic()) > 0:
            with self._cond:
                if not len(self.waiting):
                    self._cond.wait(wait)
            taken = self.take_batch_after(rows)
            more += taken
            rows += sum(len(j.rows) for j in taken)
        return more

    def _engine(self, model: nn.Module, job: SteerJob) -> EagerEngine:
        if id(model) not in self.engines:
            self.engines[id(model)] = EagerEngine(model, job.lock)
        return self.engines[id(model)]

    def _add(self, job: SteerJob) -> None:
        if not self._engine(job.model, job).supported:
            super().run_batch([job])  # e.g. linear-attention layers: the static engine
            return
        tok = job.tokenizer
        eos = {tok.eos_token_id} if tok.eos_token_id is not None else set()
        rid = next(self._ids)
        flight = _Flight(job, eos, [RowOut() for _ in job.rows], [_Stream(tok) for _ in job.rows])
        flight.live = [True] * len(job.rows)
        self.flights[rid] = flight
        row = job.rows[0]
        self.scheduler.add(
            Request(rid, len(row.prompt_ids), max(r.max_new_tokens for r in job.rows), len(job.rows), client=job.client)
        )

    def _step(self) -> None:
        self._drop_cancelled()
        plan = self.scheduler.plan()
        for rid in plan.dropped:
            self._free(rid)
        sampled: list[Sampled] = []
        try:
            if plan.decode:
                for engine in self.engines.values():
                    sampled += engine.decode_step()
        except Exception as e:  # the worker outlives a failed step; the jobs in the batch hear why
            log.exception("steer: continuous decoding step failed")
            self._fail_all(f"generation failed: {str(e) or type(e).__name__}")
            return
        alone: list[Chunk] = []
        whole: dict[tuple[int, int], list[Chunk]] = {}  # (model, prompt length) -> chunks that are a whole prompt
        for chunk in plan.prefill:
            flight = self.flights[chunk.id]
            if chunk.start == 0:
                flight.start()
            if chunk.start == 0 and chunk.end == len(flight.job.rows[0].prompt_ids):
                whole.setdefault((id(flight.job.model), chunk.end), []).append(chunk)
            else:
                alone.append(chunk)
        for chunks in whole.values():
            if len(chunks) == 1:
                alone += chunks
                continue
            try:  # whole prompts of one length run in one prompt pass (e.g. requests that came together)
                sampled += self._prefill(chunks)
            except Exception:  # run them one by one, so that only the job at fault fails
                alone += chunks
        for chunk in alone:
            try:
                sampled += self._prefill([chunk])
            except Exception as e:  # a prompt pass of one job alone: only that job fails
                log.exception("steer: a prompt pass failed")
                self._fail(chunk.id, f"generation failed: {str(e) or type(e).__name__}")
        self._record(sampled)

    def _prefill(self, chunks: list[Chunk]) -> list[Sampled]:
        """One prompt pass for these chunks (one chunk, or whole prompts of one length: the same positions)."""
        flights = [self.flights[c.id] for c in chunks]
        keys = [(c.id, b) for c, f in zip(chunks, flights, strict=True) for b in range(len(f.job.rows))]
        rows = [row for f in flights for row in f.job.rows]
        engine = self._engine(flights[0].job.model, flights[0].job)
        try:
            return engine.prefill(keys, rows, chunks[0].start, chunks[0].end)
        except Exception:
            engine.free(keys)  # no half-run group left behind
            raise

    def _record(self, sampled: list[Sampled]) -> None:
        for key, token, prob in sampled:
            rid, b = cast(tuple[int, int], key)
            flight = self.flights.get(rid)
            if flight is None:
                continue
            if not flight.live[b]:  # stopped while its prompt ran: it leaves now
                self._engine(flight.job.model, flight.job).free([key])
                continue
            job, out, stream = flight.job, flight.outs[b], flight.streams[b]
            if job.rows[b].cancel.is_set():
                self._stop_row(rid, flight, b, "cancelled")
                continue
            out.ids.append(token)
            out.probs.append(prob)
            piece = stream.push(token)
            name = job.row_names()[b]
            job.emit_safely(
                "token",
                {
                    "row": name,
                    "i": len(out.ids) - 1,
                    "id": token,
                    "text": piece,
                    "value": stream.value(token),
                    "prob": _finite(prob),
                },
            )
            if reason := stop_reason(job.rows[b], out, token, flight.eos, flight.deadlines[b], self.clock()):
                self._stop_row(rid, flight, b, reason)

    def _drop_cancelled(self) -> None:
        """Rows cancelled since the last step stop now (a whole job's, or one row's at a stop string)."""
        for rid, flight in list(self.flights.items()):
            for b, row in enumerate(flight.job.rows):
                if flight.live[b] and row.cancel.is_set():
                    self._stop_row(rid, flight, b, "cancelled")

    def _stop_row(self, rid: Hashable, flight: _Flight, b: int, reason: str) -> None:
        flight.live[b], flight.outs[b].stopped = False, reason
        engine = self._engine(flight.job.model, flight.job)
        if any(flight.live):
            if (rid, b) in engine.keys:
                engine.free([(rid, b)])  # the row leaves the batch now (mid-prompt: when it joins)
            return
        if self.scheduler.withdraw(rid):  # not admitted yet
            self.flights.pop(rid, None)
        else:
            self.scheduler.finish(rid)  # freed at the next plan
        flight.job.emit_safely("done", _result(flight.job, flight.outs))

    def _free(self, rid: Hashable) -> None:
        flight = self.flights.pop(rid, None)
        if flight is not None:
            self._engine(flight.job.model, flight.job).free([(rid, b) for b in range(len(flight.job.rows))])

    def _fail(self, rid: Hashable, message: str) -> None:
        """One job ends with an error: its rows leave, the others go on."""
        flight = self.flights[rid]
        self._engine(flight.job.model, flight.job).free([(rid, b) for b in range(len(flight.job.rows))])
        if any(flight.live):
            flight.live = [False] * len(flight.live)
            flight.job.emit_safely("error", message)
        self.scheduler.finish(rid)

    def _fail_all(self, message: str) -> None:
        for rid, flight in list(self.flights.items()):
            if any(flight.live):
                flight.job.emit_safely("error", message)
            self.scheduler.finish(rid)
        self.flights.clear()
        self.engines.clear()
        self.scheduler.plan()  # drops them all
