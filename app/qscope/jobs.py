"""Background jobs of one server (discoveries, footprints, steering evaluations): the one job runner.

A runner keeps a queue and one thread that runs its jobs in turn (every job runs the one live model, whose lock it
shares with the live requests batch by batch, so one thread is enough). A job is a function of its `Job`: it
reports its phase and progress with `job.report(phase, done, total)`, watches `job.cancel` inside its long loops
and raises `Cancelled` when it is set, and returns what it made (an id). Who waits and who goes next is
qscope.fairness' FairQueue: bounded in all and per client (a client's share), clients served in turn, so one
client's many jobs never keep another's waiting behind all of them. Progress carries the rate and the time left
of the phase; the log gets a plain line per phase and one every few seconds. Finished jobs are kept a while
for their status URL.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from qscope.fairness import FairQueue, QueueRefused

log = logging.getLogger(__name__)
LOG_EVERY_S = 5.0
FINISHED = ("done", "failed", "cancelled")


class Cancelled(Exception):
    """Raised inside a job (or any long loop that watches a cancel event) once it was asked to stop."""


class QueueFull(RuntimeError):
    """Too many waiting: in all (status 503, everyone waits) or of this client's (status 429, only it waits);
    retry after `retry_after_s`. The job runner and the steering worker raise it."""

    def __init__(self, message: str, retry_after_s: int = 5, status: int = 503) -> None:
        super().__init__(message)
        self.retry_after_s, self.status = retry_after_s, status

    @classmethod
    def of(cls, refused: QueueRefused, retry_after_s: int) -> QueueFull:
        """The refusal of a fair queue: 429 when the client's own share is full, else 503."""
        return cls(str(refused), retry_after_s, 429 if refused.mine else 503)


@dataclass
class Job:
    id: str
    kind: str
    name: str
    client: str = ""
    state: str = "queued"  # queued | running | done | failed | cancelled
    phase: str = ""
    done: float = 0.0
    total: float = 0.0
    rate: float | None = None  # units of the phase per second
    eta_s: float | None = None
    detail: str = ""  # e.g. what is being hashed
    result: Any = None  # what it made (an id)
    error: str | None = None
    created: float = field(default_factory=time.time)
    started: float = 0.0  # clock() when it started running
    version: int = 0  # bumped on every change (event streams send a change once)
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    _phase_start: float = field(default=0.0, repr=False)
    _logged: float = field(default=0.0, repr=False)

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    @property
    def elapsed_s(self) -> float:
        return self.clock() - self.started if self.started else 0.0

    def report(self, phase: str, done: float, total: float, detail: str | None = None) -> None:
        """Progress: `done` of `total` units of `phase`; the rate and time left count from the phase's start."""
        now = self.clock()
        if phase != self.phase:
            self.phase, self._phase_start, self._logged = phase, now, now
            log.info("%s %s: %s", self.kind, self.id, phase)
        self.done, self.total = done, total
        if detail is not None:
            self.detail = detail
        spent = now - self._phase_start
        self.rate = done / spent if spent > 0 and done else None
        self.eta_s = (total - done) / self.rate if self.rate and total >= done else None
        self.version += 1
        if now - self._logged >= LOG_EVERY_S and total:
            self._logged = now
            eta = f", ETA {self.eta_s:.0f} s" if self.eta_s is not None else ""
            rate = f" ({self.rate:,.1f}/s{eta})" if self.rate else ""
            log.info("%s %s: %s %s/%s%s", self.kind, self.id, phase, f"{done:,.0f}", f"{total:,.0f}", rate)

    def end(self, state: str, error: str | None = None) -> None:
        self.state, self.error = state, error
        self.version += 1


Run = Callable[[Job], Any]


class JobRunner:
    """The queue and its thread; `submit` returns at once with the Job.

    max_waiting: jobs that may wait in all; per_client: of them, from one client (None: no share). keep: finished
    jobs remembered. on_end(job): called on the runner's thread once a job ended (a job that ends before it ran
    included)."""

    def __init__(
        self,
        name: str,
        max_waiting: int = 8,
        per_client: int | None = None,
        keep: int = 128,
        on_end: Callable[[Job], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name, self.max_waiting, self.per_client, self.keep = name, max_waiting, per_client, keep
        self.on_end, self.clock = on_end, clock
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self._waiting: FairQueue[tuple[Job, Run]] = FairQueue(max_waiting, per_client)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = False

    def submit(self, kind: str, name: str, fn: Run, client: str = "", job_id: str | None = None) -> Job:
        """Queue `fn`; QueueFull when the queue, or this client's share of it, is full, or the server stops."""
        job = Job(job_id or secrets.token_urlsafe(8), kind, name, client, clock=self.clock)
        with self._lock:
            if self._stopping:
                raise QueueFull("the server is stopping; try again when it is back", 30)
            try:
                self._waiting.add(client, (job, fn), what="jobs")
            except QueueRefused as e:
                raise QueueFull.of(e, 5) from None
            self.jobs[job.id] = job
            self._forget_old()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name=f"qscope-{self.name}", daemon=True)
                self._thread.start()
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self.jobs.get(job_id)

    def cancel(self, job_id: str) -> Job | None:
        """Ask a job to stop; a waiting one ends at once. The job (None when unknown)."""
        job = self.get(job_id)
        if job is None or job.finished:
            return job
        job.cancel.set()
        with self._lock:
            waiting = next((w for w in self._waiting.order() if w[0] is job), None)
            if waiting is not None:
                self._waiting.remove(waiting)
        if waiting is not None:
            self._end(job, "cancelled", "cancelled before it started")
        return job

    def position(self, job: Job) -> int:
        """How many jobs will start before this one (0 once it runs)."""
        with self._lock:
            order = [j for j, _ in self._waiting.order()]
            return order.index(job) if job in order else 0

    def shutdown(self, error: str) -> None:
        """The server is stopping: nothing more is taken; what waits or runs ends failed with `error`."""
        with self._lock:
            self._stopping = True
            self._waiting = FairQueue(0)
        for job in list(self.jobs.values()):
            if not job.finished:
                job.cancel.set()
                job.end("failed", error)

    def _next(self) -> tuple[Job, Run] | None:
        with self._lock:
            taken = None if self._stopping else self._waiting.take()
            if taken is None:
                self._thread = None
                return None
            job, fn = taken
            job.state, job.started = "running", self.clock()
            return job, fn

    def _work(self) -> None:
        while (taken := self._next()) is not None:
            job, fn = taken
            try:
                if job.cancel.is_set():
                    raise Cancelled
                job.result = fn(job)
                self._end(job, "done")
            except Cancelled:
                self._end(job, "cancelled", "cancelled while it ran: no result was kept")
            except Exception as e:  # the job's own message, for its status URL; never the thread's death
                log.exception("%s %s failed", job.kind, job.id)
                self._end(job, "failed", str(e) or type(e).__name__)
            log.info("%s %s: %s in %.1f s", job.kind, job.id, job.state, job.elapsed_s)

    def _end(self, job: Job, state: str, error: str | None = None) -> None:
        if job.finished:
            return  # shutdown() ended it already
        job.end(state, error)
        if self.on_end is not None:
            try:
                self.on_end(job)
            except Exception:  # a record that could not be written must not stop the runner
                log.exception("%s %s: recording its end failed", job.kind, job.id)

    def _forget_old(self) -> None:
        """Drop the oldest finished jobs beyond `keep` (the caller holds the lock)."""
        finished = [i for i, j in self.jobs.items() if j.finished]
        for job_id in finished[: max(0, len(finished) - self.keep)]:
            del self.jobs[job_id]
