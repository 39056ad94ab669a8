"""Evaluation jobs of one server: queued, run one at a time on a thread of their own, their model work sent to
the steering worker as background work (so live /steer users keep priority), progress kept in memory for the
page's event stream and written to the app database as a heartbeat, cancellable until they finish.

A finished job's recipe is saved by qscope.steer.evaluate.recipes in one transaction; a failed or cancelled job
keeps no result. When the server stops, its unfinished jobs are marked failed. Waiting jobs are a
qscope.fairness.FairQueue: at most `max_waiting` in all (503 past it) and `per_client` of one client (429 past
it, for that client only), started in turn across clients.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field

from qscope.config import Settings
from qscope.fairness import FairQueue, Refused
from qscope.steer.evaluate.plan import Plan, Target
from qscope.steer.evaluate.recipes import RecipeStore
from qscope.steer.evaluate.request import EvalLimits
from qscope.steer.evaluate.result import Identity, title_of
from qscope.steer.evaluate.run import Cancelled, Work, execute
from qscope.steer.worker import Background, QueueFull, SteerWorker

log = logging.getLogger(__name__)
HEARTBEAT_S = 2.0
KEEP = 32  # finished jobs kept in memory
STOPPED = "the server stopped while the evaluation ran; start it again"


@dataclass
class Progress:
    phase: str = "queued"  # queued | identifying | generating | measuring | saving | done | failed | cancelled
    done: float = 0.0  # rows
    total: int = 0
    elapsed_s: float = 0.0
    rows_per_s: float = 0.0
    eta_s: float | None = None
    detail: str = ""  # e.g. what is being hashed


@dataclass
class EvalJob:
    id: str
    plan: Plan
    target: Target
    title: str
    status: str = "queued"
    error: str = ""
    progress: Progress = field(default_factory=Progress)
    cancel: threading.Event = field(default_factory=threading.Event)
    version: int = 0  # bumped on every change, for the event stream
    started: float = 0.0
    written: float = 0.0  # when the progress last went to the database


def eval_limits(settings: Settings) -> EvalLimits:
    return EvalLimits(
        max_prompts=settings.steer_eval_max_prompts,
        max_prompt_chars=settings.steer_eval_max_prompt_chars,
        max_seeds=settings.steer_eval_max_seeds,
        max_strengths=settings.steer_eval_max_strengths,
        max_random_controls=settings.steer_eval_max_random_controls,
        max_rows=settings.steer_eval_max_rows,
    )


def from_settings(settings: Settings, worker: SteerWorker) -> Evaluations:
    """The evaluations of an app with these settings, on its steering worker."""
    return Evaluations(
        settings.app_db_url,
        worker,
        eval_limits(settings),
        settings.steer_eval_batch_rows,
        settings.steer_eval_max_waiting,
        settings.steer_eval_waiting_per_client,
    )


class Evaluations:
    """The evaluation jobs of one app (built by create_app; the app database opens on first use)."""

    def __init__(
        self,
        db_url: str,
        worker: SteerWorker,
        limits: EvalLimits | None = None,
        batch_rows: int = 64,
        max_waiting: int = 4,
        per_client: int | None = None,
    ) -> None:
        self.db_url, self.worker, self.batch_rows, self.max_waiting = db_url, worker, batch_rows, max_waiting
        self.limits = limits or EvalLimits()
        self.jobs: dict[str, EvalJob] = {}
        self._queue: FairQueue[EvalJob] = FairQueue(max_waiting, per_client)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._store: RecipeStore | None = None
        self._stopping = False

    @property
    def store(self) -> RecipeStore:
        with self._lock:
            if self._store is None:
                self._store = RecipeStore(self.db_url)
            return self._store

    def submit(self, plan: Plan, target: Target, client: str = "") -> EvalJob:
        """Queue an evaluation of `client`; QueueFull when max_waiting jobs already wait (503), or per_client of
        this client's (429)."""
        job = EvalJob(secrets.token_urlsafe(8), plan, target, title_of(plan.request, len(plan.prompts)))
        job.progress.total = len(plan.rows)
        with self._lock:
            if self._stopping:
                raise QueueFull("the server is stopping; try again when it is back", 30)
            try:  # holds its place while the database row is written; withdrawn if that fails
                self._queue.add(client, job, what="evaluations")
            except Refused as e:
                raise QueueFull.of(e, 30) from None
        try:
            self.store.add_job(job.id, target.model_id, plan.request.model_dump_json())
        except Exception:
            with self._lock:
                self._queue.remove(job)
            raise
        with self._lock:
            self.jobs[job.id] = job
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="steer-eval", daemon=True)
                self._thread.start()
        return job

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued or running job of this server; False when it is not one."""
        job = self.jobs.get(job_id)
        if job is None or job.status not in ("queued", "running"):
            return False
        job.cancel.set()
        with self._lock:
            waiting = self._queue.remove(job)
        if waiting:
            self._end(job, "cancelled", "cancelled before it started")
        return True

    def position(self, job: EvalJob) -> int:
        """How many jobs wait before this one."""
        with self._lock:
            order = self._queue.order()
        return order.index(job) if job in order else 0

    def _loop(self) -> None:
        while True:
            with self._lock:
                # a job whose database row is still being written (submit) is not taken yet
                job = None if self._stopping else self._queue.take(lambda j: j.id in self.jobs)
                if job is None:
                    self._thread = None
                    return
            self._run(job)

    def _run(self, job: EvalJob) -> None:
        job.status, job.started = "running", time.monotonic()
        self._touch(job, "identifying", force=True)
        try:
            ident = self._identify(job)
            step = lambda phase, done, total: self._step(job, phase, done)  # noqa: E731
            result = execute(
                job.plan,
                job.target,
                self._runner(job),
                ident,
                batch_rows=self.batch_rows,
                progress=step,
                cancel=job.cancel,
            )
            if job.cancel.is_set():
                raise Cancelled
            self._touch(job, "saving", force=True)
            job.progress.phase = "done"
            self.store.finish(job.id, result, job.title, asdict(job.progress))
            self._end(job, "done", "", write=False)
        except Cancelled:
            if self._stopping:
                self._end(job, "failed", STOPPED)
            else:
                self._end(job, "cancelled", "cancelled while it ran: no result was kept")
        except Exception as e:  # a failed evaluation must not take the thread down; its page says why
            log.exception("steer-eval: job %s failed", job.id)
            self._end(job, "failed", STOPPED if self._stopping else f"the evaluation failed: {e}")

    def _identify(self, job: EvalJob) -> Identity:
        t = job.target
        total = t.bytes_to_hash()
        read = [0]

        def on_bytes(n: int) -> None:
            read[0] += n
            job.progress.detail = f"hashing the model, SAE and store files: {read[0] >> 20:,} of {total >> 20:,} MB"
            self._touch(job, "identifying")

        ident = t.identify(on_bytes)
        job.progress.detail = ""
        return ident

    def _runner(self, job: EvalJob) -> Callable:
        def run(work: Work):
            future: Future = Future()

            def background(yield_: Callable[[], None]) -> None:
                if job.cancel.is_set():
                    future.set_exception(Cancelled())
                    return
                try:
                    future.set_result(work(yield_))
                except BaseException as e:  # noqa: BLE001 - handed to the job's thread
                    future.set_exception(e)

            self.worker.submit_background(Background(background))
            while True:
                try:
                    return future.result(timeout=HEARTBEAT_S)
                except TimeoutError:
                    self._touch(job, job.progress.phase)

        return run

    def _step(self, job: EvalJob, phase: str, done: float) -> None:
        p = job.progress
        p.done = done
        p.elapsed_s = time.monotonic() - job.started
        p.rows_per_s = done / p.elapsed_s if p.elapsed_s > 0 else 0.0
        p.eta_s = (p.total - done) / p.rows_per_s if p.rows_per_s > 0 else None
        if phase == "measuring":  # a batch is done: one plain line for the server's log
            eta = f"{p.eta_s:.0f} s" if p.eta_s is not None else "?"
            log.info("steer-eval %s: %d/%d rows, %.1f rows/s, ETA %s", job.id, done, p.total, p.rows_per_s, eta)
        self._touch(job, phase)

    def _touch(self, job: EvalJob, phase: str, force: bool = False) -> None:
        """Record progress in memory, and in the database at most every HEARTBEAT_S (or when forced)."""
        job.progress.phase, job.version = phase, job.version + 1
        now = time.monotonic()
        if force or now - job.written >= HEARTBEAT_S:
            job.written = now
            self.store.update_job(job.id, job.status, asdict(job.progress))

    def _end(self, job: EvalJob, status: str, error: str, write: bool = True) -> None:
        job.status, job.error = status, error
        job.progress.phase, job.version = status, job.version + 1
        if write:
            self.store.update_job(job.id, status, asdict(job.progress), error)
        with self._lock:  # finished jobs beyond the last KEEP are read from the database
            ended = [j for j in self.jobs.values() if j.status not in ("queued", "running")]
            for old in ended[:-KEEP]:
                self.jobs.pop(old.id, None)

    def shutdown(self) -> None:
        """The server is stopping: cancel what runs, and mark this server's unfinished jobs failed."""
        self._stopping = True
        for job in list(self.jobs.values()):
            if job.status in ("queued", "running"):
                job.cancel.set()
                job.status, job.error = "failed", STOPPED
        if self._store is not None:
            self._store.fail_running(STOPPED)
