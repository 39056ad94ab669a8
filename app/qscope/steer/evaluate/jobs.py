"""Evaluation jobs of one server, run by the server's job runner (qscope.jobs: queue, a client's share, cancel,
progress): their model work is sent to the steering worker as background work (so live /steer users keep
priority), their progress is kept in memory for the page's event stream and written to the app database as a
heartbeat.

A finished job's recipe is saved by qscope.steer.evaluate.recipes in one transaction; a failed or cancelled job
keeps no result. When the server stops, its unfinished jobs are marked failed. Waiting jobs are a
qscope.fairness.FairQueue: at most `max_waiting` in all (503 past it) and `per_client` of one client (429 past
it, for that client only), started in turn across clients.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, dataclass

from qscope.appdb.first_use import OpenedOnFirstUse
from qscope.config import SteerEvalSettings
from qscope.jobs import Cancelled, Job, JobRunner
from qscope.steer.evaluate.plan import Plan, Target
from qscope.steer.evaluate.recipes import RecipeStore
from qscope.steer.evaluate.request import EvalLimits
from qscope.steer.evaluate.result import EvalResult, Identity, title_of
from qscope.steer.evaluate.run import Work, execute
from qscope.steer.worker import Background, SteerWorker

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
    """An evaluation and the runner's job that runs it."""

    plan: Plan
    target: Target
    title: str
    job: Job
    written: float = 0.0  # when the progress last went to the database
    result: EvalResult | None = None  # once done

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def status(self) -> str:
        return self.job.state

    @property
    def error(self) -> str:
        return self.job.error or ""

    @property
    def version(self) -> int:
        return self.job.version

    @property
    def progress(self) -> Progress:
        j = self.job
        phase = j.state if j.finished else (j.phase or "queued")
        elapsed = j.elapsed_s
        rows_per_s = j.done / elapsed if elapsed > 0 else 0.0
        eta = (j.total - j.done) / rows_per_s if rows_per_s > 0 else None
        return Progress(phase, j.done, int(j.total), elapsed, rows_per_s, eta, j.detail)


def eval_limits(steer_eval: SteerEvalSettings) -> EvalLimits:
    """The bounds on one evaluation that these settings set (the server's and `qscope steer-eval`'s)."""
    return EvalLimits(
        max_prompts=steer_eval.max_prompts,
        max_prompt_chars=steer_eval.max_prompt_chars,
        max_seeds=steer_eval.max_seeds,
        max_strengths=steer_eval.max_strengths,
        max_random_controls=steer_eval.max_random_controls,
        max_rows=steer_eval.max_rows,
    )


def from_settings(steer_eval: SteerEvalSettings, db_url: str, worker: SteerWorker) -> Evaluations:
    """The evaluations of an app with these settings and app database, on its steering worker."""
    return Evaluations(
        db_url,
        worker,
        eval_limits(steer_eval),
        steer_eval.batch_rows,
        steer_eval.max_waiting,
        steer_eval.waiting_per_client,
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
        self.db_url, self.worker, self.batch_rows = db_url, worker, batch_rows
        self.limits = limits or EvalLimits()
        self.jobs: dict[str, EvalJob] = {}
        self.runner = JobRunner("steer-eval", max_waiting, per_client, keep=KEEP, on_end=self._ended)
        self._store = OpenedOnFirstUse(lambda: RecipeStore(self.db_url))
        self._lock = threading.Lock()

    @property
    def store(self) -> RecipeStore:
        return self._store.get()

    def submit(self, plan: Plan, target: Target, client: str = "") -> EvalJob:
        """Queue an evaluation; QueueFull (503) when the queue or this client's share of it is full."""
        title = title_of(plan.request, len(plan.prompts))
        registered, holder = threading.Event(), list[EvalJob]()  # the runner may take it before submit recorded it

        def run(job: Job) -> str:
            registered.wait()
            if not holder:
                raise RuntimeError("the evaluation could not be recorded")
            return self._run(holder[0])

        job = self.runner.submit("steer-eval", title, run, client)
        try:
            ev = EvalJob(plan, target, title, job)
            job.total = len(plan.rows)
            self.store.add_job(job.id, target.model_id, plan.request.model_dump_json())
            with self._lock:
                self.jobs[job.id] = ev
                for old in [j for j in self.jobs.values() if j.job.finished][:-KEEP]:
                    self.jobs.pop(old.id, None)  # finished jobs beyond the last KEEP are read from the database
            holder.append(ev)
        finally:
            registered.set()
        return ev

    def run_in(self, job: Job, plan: Plan, target: Target) -> tuple[EvalResult, str]:
        """Run an evaluation inside another job of the server's (a fix: qscope.fix), on this thread: its progress
        is that job's, its work goes to the steering worker as background work, and its recipe is saved under
        the job's id, as a queued evaluation's is. Returns the result and the recipe's id; a cancelled or failed
        run is recorded as such and raises."""
        ev = EvalJob(plan, target, title_of(plan.request, len(plan.prompts)), job)
        job.report("identifying", 0, len(plan.rows))  # the rows count from here, not the phase before's units
        self.store.add_job(job.id, target.model_id, plan.request.model_dump_json())
        try:
            recipe = self._run(ev)
        except BaseException as e:
            state = "cancelled" if job.cancel.is_set() else "failed"
            self.store.update_job(job.id, state, asdict(ev.progress), "" if state == "cancelled" else str(e))
            raise
        assert ev.result is not None
        return ev.result, recipe

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued or running job of this server; False when it is not one."""
        ev = self.jobs.get(job_id)
        if ev is None or ev.job.finished:
            return False
        self.runner.cancel(job_id)
        return True

    def position(self, ev: EvalJob) -> int:
        """How many jobs start before this one."""
        return self.runner.position(ev.job)

    def _run(self, ev: EvalJob) -> str:
        self._touch(ev, "identifying", force=True)
        try:
            ident = self._identify(ev)
            step = lambda phase, done, total: self._step(ev, phase, done)  # noqa: E731
            result = execute(
                ev.plan,
                ev.target,
                self._runner(ev),
                ident,
                batch_rows=self.batch_rows,
                progress=step,
                cancel=ev.job.cancel,
            )
            if ev.job.cancel.is_set():
                raise Cancelled
            ev.result = result
            self._touch(ev, "saving", force=True)
            ev.job.report("done", ev.job.done, ev.job.total)
            self.store.finish(ev.id, result, ev.title, asdict(ev.progress) | {"phase": "done"})
            ev.written = -1.0  # the record is final: _ended writes nothing more
            return ev.id
        except Cancelled:
            raise
        except Exception as e:  # a failed evaluation's page says why
            log.exception("steer-eval: job %s failed", ev.id)
            raise RuntimeError(f"the evaluation failed: {e}") from e

    def _ended(self, job: Job) -> None:
        ev = self.jobs.get(job.id)
        if ev is None or ev.written < 0:
            return
        self.store.update_job(job.id, job.state, asdict(ev.progress), job.error or "")

    def _identify(self, ev: EvalJob) -> Identity:
        t = ev.target
        total = t.bytes_to_hash()
        read = [0]

        def on_bytes(n: int) -> None:
            read[0] += n
            ev.job.detail = f"hashing the model, SAE and store files: {read[0] >> 20:,} of {total >> 20:,} MB"
            self._touch(ev, "identifying")

        ident = t.identify(on_bytes)
        ev.job.detail = ""
        return ident

    def _runner(self, ev: EvalJob) -> Callable:
        def run(work: Work):
            future: Future = Future()

            def background(yield_: Callable[[], None]) -> None:
                if ev.job.cancel.is_set():
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
                    self._touch(ev, ev.job.phase)

        return run

    def _step(self, ev: EvalJob, phase: str, done: float) -> None:
        ev.job.report(phase, done, ev.job.total)
        p = ev.progress
        if phase == "measuring":  # a batch is done: one plain line for the server's log
            eta = f"{p.eta_s:.0f} s" if p.eta_s is not None else "?"
            log.info("steer-eval %s: %d/%d rows, %.1f rows/s, ETA %s", ev.id, done, p.total, p.rows_per_s, eta)
        self._touch(ev, phase)

    def _touch(self, ev: EvalJob, phase: str, force: bool = False) -> None:
        """Record progress in memory, and in the database at most every HEARTBEAT_S (or when forced)."""
        if phase != ev.job.phase:
            ev.job.report(phase, ev.job.done, ev.job.total)
        else:
            ev.job.version += 1
        now = time.monotonic()
        if force or now - ev.written >= HEARTBEAT_S:
            ev.written = now
            self.store.update_job(ev.id, ev.status, asdict(ev.progress))

    def shutdown(self) -> None:
        """The server is stopping: cancel what runs, and mark this server's unfinished jobs failed."""
        self.runner.shutdown(STOPPED)
        if (store := self._store.opened) is not None:
            store.fail_running(STOPPED)
