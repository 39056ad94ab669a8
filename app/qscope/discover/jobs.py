"""Background jobs of the server (discoveries, footprints, detector fits): one worker thread runs them in turn,
each reporting its phase and progress, each cancellable; finished ones are kept a while for their status URL.

A job is a function of the Job (it calls `job.progress(phase, done, total)` and watches `job.cancel`) that returns
the id of what it saved. Progress is logged as plain lines with rate and ETA, at most every few
seconds per job. One thread is enough: every job runs the one live model, whose lock it shares with the
other live requests batch by batch. Waiting jobs are a qscope.fairness.FairQueue: each client (its address) may
have `per_client` of them waiting (past it: JobsFull with status 429, for that client only), and they are taken in
turn across clients, so one client's nine discoveries do not fill the queue or go first.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from qscope.discover.activations import Cancelled
from qscope.fairness import FairQueue, Refused

log = logging.getLogger(__name__)
LOG_EVERY_S = 5.0


class JobsFull(RuntimeError):
    """Too many jobs waiting (status 503), or too many of this client's (status 429); retry after `retry_after_s`."""

    def __init__(self, message: str, retry_after_s: int = 5, status: int = 503) -> None:
        super().__init__(message)
        self.retry_after_s, self.status = retry_after_s, status


@dataclass
class Job:
    id: str
    kind: str
    name: str
    state: str = "queued"  # queued | running | done | failed | cancelled
    phase: str = ""
    done: int = 0
    total: int = 0
    rate: float | None = None  # units of the phase per second
    eta_s: float | None = None
    result: str | None = None  # the id of what it made
    error: str | None = None
    created: float = field(default_factory=time.time)
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _phase_start: float = field(default=0.0, repr=False)
    _logged: float = field(default=0.0, repr=False)

    def progress(self, phase: str, done: int, total: int) -> None:
        now = time.perf_counter()
        if phase != self.phase:
            self.phase, self._phase_start, self._logged = phase, now, 0.0
            log.info("%s %s: %s", self.kind, self.id, phase)
        self.done, self.total = done, total
        spent = now - self._phase_start
        self.rate = done / spent if spent > 0 and done else None
        self.eta_s = (total - done) / self.rate if self.rate and total >= done else None
        if now - self._logged >= LOG_EVERY_S and total:
            self._logged = now
            eta = f", ETA {self.eta_s:.0f} s" if self.eta_s is not None else ""
            rate = f" ({self.rate:,.0f}/s{eta})" if self.rate else ""
            log.info("%s %s: %s %d/%d%s", self.kind, self.id, phase, done, total, rate)

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "cancelled")


class Jobs:
    """The queue and worker thread; `submit` returns at once with the Job."""

    def __init__(self, max_waiting: int = 8, keep: int = 128, per_client: int | None = None) -> None:
        self.waiting: FairQueue[tuple[Job, Callable[[Job], str]]] = FairQueue(max_waiting, per_client)
        self.keep = keep
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None

    def submit(self, kind: str, name: str, fn: Callable[[Job], str], client: str = "") -> Job:
        """Queue a job of `client` (JobsFull when the queue, or the client's share of it, is full)."""
        job = Job(secrets.token_urlsafe(8), kind, name)
        with self._lock:
            try:
                self.waiting.add(client, (job, fn), what="jobs")
            except Refused as e:
                raise JobsFull(str(e), status=429 if e.mine else 503) from None
            self._arrived.notify()
            self.jobs[job.id] = job
            while len(self.jobs) > self.keep:
                oldest = next(iter(self.jobs))
                if not self.jobs[oldest].finished:
                    break
                del self.jobs[oldest]
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="qscope-jobs", daemon=True)
                self._thread.start()
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self.jobs.get(job_id)

    def cancel(self, job_id: str) -> Job | None:
        job = self.get(job_id)
        if job is not None and not job.finished:
            job.cancel.set()
            with self._lock:
                if job.state == "queued":
                    job.state = "cancelled"
                    waiting = next((w for w in self.waiting.order() if w[0] is job), None)
                    if waiting is not None:  # leaves the queue now: its place goes to another job
                        self.waiting.remove(waiting)
        return job

    def _work(self) -> None:
        while True:
            with self._lock:
                while (taken := self.waiting.take()) is None:
                    self._arrived.wait()
                job, fn = taken
                if not job.cancel.is_set():
                    job.state = "running"
            if job.cancel.is_set():
                job.state = "cancelled"
                continue
            started = time.perf_counter()
            try:
                job.result = fn(job)
                job.state = "done"
            except Cancelled:
                job.state = "cancelled"
            except Exception as e:  # the job's own message, for its status URL; never the worker's death
                log.exception("%s %s failed", job.kind, job.id)
                job.state, job.error = "failed", str(e) or type(e).__name__
            log.info("%s %s: %s in %.1f s", job.kind, job.id, job.state, time.perf_counter() - started)
