"""The model worker: one thread per process owns the device and runs every steering generation.

Requests become `SteerJob`s (built by `make_job`, which checks the limits and tokenizes in the caller's thread, so a
bad request fails before it queues). Each job carries its client's key (the address the rate limiter uses); the
waiting jobs are a qscope.fairness.FairQueue: at most `queue_size` in all (past it: QueueFull, HTTP 503) and
`per_client` of one client (past it: QueueFull with status 429, for that client only), taken in fair order across
clients, weighted by rows, so one client's flood does not starve the others. A job still queued after
`max_wait_s` is answered with a `WaitedTooLong` error (HTTP 503) instead of running: its waiting request calls
`expire` when the limit passes (qscope.web.channel), and the worker checks again when it takes a job.
When the worker is free it takes the next job and every job queued for the same model (up to max_batch_rows
rows, in the same fair order) and runs them as one batched generation. Tokens and the final result go back through
each job's `emit` callback, from the worker thread; a job's result goes out as soon as its own rows stop, while
longer rows of its batch run on. Setting `job.cancel` stops the job's rows at the next step. A row's time limit
counts from the start of its generation, not from when it was queued.
A job is a default + steered pair (`make_job`, /api/steer) or, of kind "rows", only the rows a request needs
(qscope.steer.rows, the OpenAI-compatible /v1 endpoints).

Background work (`Background`, e.g. the batches of a steering evaluation) waits in its own unbounded queue and
runs only when no live request waits; it calls the `yield_` it is given between its steps, which runs the live
requests that arrived meanwhile, so a long evaluation delays a live user by one step, not by its whole batch.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

from torch import nn
from transformers import PreTrainedTokenizerBase

from qscope.fairness import FairQueue, QueueRefused
from qscope.jobs import QueueFull
from qscope.steer.edits import Edit
from qscope.steer.engine import Row, RowOut, generate
from qscope.steer.spec import Completion, SpecError, SteerLimits, SteerResult, SteerSpec, TokenOut
from qscope.tokens import Utf8Pieces, cached_vocab_bytes, show_bytes

log = logging.getLogger(__name__)

Emit = Callable[[str, Any], None]  # ("token", dict) per token, then ("done", result) or ("error", str)
ROW_NAMES = ("default", "steered")
JobKind = Literal["pair", "rows"]  # pair: [default, steered] -> SteerResult; rows: any rows -> list[Completion]


class WaitedTooLong(str):
    """The `error` a job gets when it waited in the queue past the worker's max_wait_s (a str: it is sent as is)."""


@dataclass
class SteerJob:
    """One request: its default and steered rows, on one model."""

    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    rows: list[Row]  # [default, steered]
    emit: Emit
    lock: threading.Lock | None = None  # held around each forward (shared with the app's other model users)
    cancel: threading.Event = field(default_factory=threading.Event)  # shared by the rows
    queued_at: float | None = None  # the worker's clock when submitted
    kind: JobKind = "pair"  # "rows": only the rows asked for (qscope.steer.rows), named 0..n-1
    client: str = ""  # whose request (qscope.web.security.client_key): the fair queue shares by it

    def row_names(self) -> tuple:
        return ROW_NAMES[: len(self.rows)] if self.kind == "pair" else tuple(range(len(self.rows)))

    def result(self, done: list[Completion]) -> SteerResult | list[Completion]:
        return SteerResult(default=done[0], steered=done[1]) if self.kind == "pair" else done

    def emit_safely(self, kind: str, data: Any) -> None:
        try:
            self.emit(kind, data)
        except Exception:  # a closed client must not stop the batch it shares
            log.exception("steer: emit failed; cancelling the job")
            self.cancel.set()


def encode_prompt(tokenizer: PreTrainedTokenizerBase, spec: SteerSpec) -> list[int]:
    """The prompt's token ids: `prompt_ids` as given, else the chat template for `messages`, else the raw text."""
    if spec.prompt_ids:
        if bad := [i for i in spec.prompt_ids if i >= len(tokenizer)]:
            raise SpecError(f"prompt_ids: token id {bad[0]} is not in the vocabulary (ids 0..{len(tokenizer) - 1})")
        return list(spec.prompt_ids)
    if not spec.messages:  # None or []: the raw prompt
        return tokenizer(spec.prompt, add_special_tokens=False)["input_ids"]
    if not getattr(tokenizer, "chat_template", None):
        raise SpecError("this model's tokenizer has no chat template: send `prompt` instead of `messages`")
    messages = [m.model_dump() for m in spec.messages]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def make_job(
    spec: SteerSpec,
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    edits: dict[str, list[Edit]],
    limits: SteerLimits,
    emit: Emit,
    lock: threading.Lock | None = None,
) -> SteerJob:
    """A job for `spec` (edits from qscope.steer.edits.resolve_edits); SpecError when over a limit."""
    limits.check(spec)
    ids = encode_prompt(tokenizer, spec)
    limits.check_prompt(len(ids))
    cancel = threading.Event()
    row = partial(
        Row,
        where=spec.where,
        temperature=spec.temperature,
        top_p=spec.top_p,
        seed=spec.seed,
        frequency_penalty=spec.frequency_penalty,
        max_new_tokens=spec.max_new_tokens,
        cancel=cancel,
        timeout_s=limits.timeout_s,
    )
    rows = [row(ids, {}), row(ids, edits)]
    return SteerJob(model, tokenizer, rows, emit, lock, cancel)


class _Stream:
    """Turns a row's token ids into text pieces whose concatenation is the completion's text, from each token's
    bytes (qscope.tokens): a character split over tokens comes with the token that completes it, a byte that
    completes nothing as <0xNN>, never U+FFFD; special tokens give no text."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.raw, self.special = cached_vocab_bytes(tokenizer), set(tokenizer.all_special_ids)
        self.ids: list[int] = []
        self.text, self.utf8 = "", Utf8Pieces()

    def value(self, token: int) -> str:
        """The token's own text (its bytes on their own), for hover titles."""
        return show_bytes(self.raw[token]) if 0 <= token < len(self.raw) else ""

    def push(self, token: int) -> str:
        self.ids.append(token)
        if token in self.special or not 0 <= token < len(self.raw):
            return ""
        piece = self.utf8.push(self.raw[token])
        self.text += piece
        return piece

    def flush(self) -> str:
        """Bytes still waiting for the rest of their character when the completion ends, as <0xNN>."""
        rest = self.utf8.flush()
        self.text += rest
        return rest


def _finite(prob: float) -> float:
    """A probability fit for JSON: NaN logits (a hidden state pushed past float range) give 0, not NaN."""
    return prob if math.isfinite(prob) else 0.0


def completion(tokenizer: PreTrainedTokenizerBase, out: RowOut) -> Completion:
    stream = _Stream(tokenizer)
    tokens = [
        TokenOut(id=t, text=stream.push(t), prob=_finite(p), value=stream.value(t))
        for t, p in zip(out.ids, out.probs, strict=True)
    ]
    if tokens:
        tokens[-1].text += stream.flush()
    return Completion(text=stream.text, tokens=tokens, stopped=out.stopped)


@dataclass
class Background:
    """Work of a background client, run in the worker thread: `run(yield_)` must call `yield_()` between its
    steps (that runs the live requests waiting then) and report its own result and errors."""

    run: Callable[[Callable[[], None]], None]


class SteerWorker:
    """The single model worker of a process (see the module docstring)."""

    def __init__(
        self,
        queue_size: int = 16,
        max_batch_rows: int = 32,
        retry_after_s: int = 2,
        max_wait_s: float | None = None,
        gather_s: float = 0.0,
        per_client: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.waiting: FairQueue[SteerJob] = FairQueue(queue_size, per_client)  # guarded by _cond
        self.max_batch_rows, self.retry_after_s, self.max_wait_s = max_batch_rows, retry_after_s, max_wait_s
        # how long a batch that is not full waits for more jobs: clients with many requests in flight send the
        # next ones a moment after a batch ends, and without a wait the first of them would run alone
        self.gather_s = gather_s
        self.clock = clock  # queue waits and generation time limits are measured on it (tests move it by hand)
        self.batches = 0  # generations started, for tests and the benchmark (counted before any job hears back)
        self.background: queue.Queue[Background] = queue.Queue()  # runs when no live job waits
        self._cond = threading.Condition()  # a job or background work arrived
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def queued(self) -> int:
        """Live jobs waiting now."""
        with self._cond:
            return len(self.waiting)

    def submit(self, job: SteerJob, start: bool = True) -> None:
        """Queue a live job (QueueFull when the queue, or its client's share of it, is full) and start the thread
        (unless `start` is False: the benchmark queues many before the first batch)."""
        with self._cond:
            try:
                self.waiting.add(job.client, job, cost=len(job.rows), what="steering requests")
            except QueueRefused as e:
                raise QueueFull.of(e, self.retry_after_s) from None
            job.queued_at = self.clock()
            self._cond.notify_all()
        if start:
            self.start()

    def start(self) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="steer-worker", daemon=True)
                self._thread.start()

    def submit_background(self, work: Background) -> None:
        """Queue background work (unbounded: its clients bound themselves); it runs when no live job waits."""
        self.background.put(work)
        with self._cond:
            self._cond.notify_all()  # the worker may be waiting for a live job
        self.start()

    def deadline(self, job: SteerJob) -> float | None:
        """When (on the worker's clock) the job has waited as long as it may, or None for no limit."""
        if self.max_wait_s is None or job.queued_at is None:
            return None
        return job.queued_at + self.max_wait_s

    def expire(self, job: SteerJob) -> bool:
        """Called when the job's deadline passes: if it still waits, it leaves the queue and is told why (a
        WaitedTooLong error); False when it has started (or ended) already."""
        with self._cond:
            overdue = self._overdue(job) is not None and self.waiting.remove(job)
        return overdue and self._expired(job)

    def _overdue(self, job: SteerJob) -> float | None:
        """How long the job has waited, when that is past max_wait_s; else None."""
        waited = self.clock() - job.queued_at if job.queued_at is not None else 0.0
        return waited if self.max_wait_s is not None and waited > self.max_wait_s else None

    def _expired(self, job: SteerJob) -> bool:
        """Whether the job waited past max_wait_s; if so it is told, and will not run."""
        waited = self._overdue(job)
        if waited is None:
            return False
        message = f"the request waited {waited:.0f} s in the steering queue (at most {self.max_wait_s:g}); try again"
        job.emit_safely("error", WaitedTooLong(message))
        return True

    def _loop(self) -> None:
        while True:
            batch = self.take_batch()
            if batch:
                self.run_batch(batch)
                continue
            try:
                work = self.background.get_nowait()
            except queue.Empty:
                with self._cond:
                    if not len(self.waiting) and self.background.empty():
                        self._cond.wait()
                continue
            self._run_background(work)

    def _run_background(self, work: Background) -> None:
        try:
            work.run(self.serve_live)
        except Exception:  # the work reports its own errors; the worker lives on
            log.exception("steer: background work failed")

    def serve_live(self) -> None:
        """Run the live jobs waiting now, each batch to its end (background work calls this between steps)."""
        while batch := self.take_batch():
            self.run_batch(batch)

    def take_batch(self) -> list[SteerJob]:
        """The next job in fair order and the jobs queued (or arriving within gather_s) for the same model, up to
        max_batch_rows rows, in the same order; [] when none waits. Jobs that waited too long are answered."""
        while True:
            with self._cond:
                first = self.waiting.take()
            if first is None:
                return []
            if not self._expired(first):
                return self._coalesce(first)

    def _coalesce(self, first: SteerJob) -> list[SteerJob]:
        batch, n_rows = [first], len(first.rows)
        deadline = time.monotonic() + self.gather_s

        def fits(job: SteerJob) -> bool:
            return job.model is first.model and n_rows + len(job.rows) <= self.max_batch_rows

        while n_rows < self.max_batch_rows:
            with self._cond:
                job = self.waiting.take(fits)
                if job is None:
                    wait = deadline - time.monotonic()
                    if wait <= 0:
                        break
                    self._cond.wait(wait)
                    continue
            if not self._expired(job):
                batch.append(job)
                n_rows += len(job.rows)
        return batch

    def run_batch(self, jobs: list[SteerJob]) -> None:
        """One batched generation for `jobs` (same model); results go out through each job's emit."""
        live = [j for j in jobs if not j.cancel.is_set()]
        if not live:
            return
        rows = [row for j in live for row in j.rows]
        owner = [(j, name, _Stream(j.tokenizer)) for j in live for name in j.row_names()]

        streamed: set[int] = set()  # ids of the jobs that have sent a token
        finished: dict[int, dict[int, RowOut]] = {}  # job id -> {its row: output} of the rows that have stopped

        def on_step(emitted: list[tuple[int, int, float]]) -> None:
            for b, token, prob in emitted:
                job, name, stream = owner[b]
                streamed.add(id(job))
                piece = stream.push(token)
                i, value = len(stream.ids) - 1, stream.value(token)
                job.emit_safely(
                    "token", {"row": name, "i": i, "id": token, "text": piece, "value": value, "prob": _finite(prob)}
                )

        first_row = {id(j): sum(len(k.rows) for k in live[:i]) for i, j in enumerate(live)}

        def on_done(b: int, out: RowOut) -> None:  # a job whose rows have all stopped is answered now
            job = owner[b][0]
            done = finished.setdefault(id(job), {})
            done[b - first_row[id(job)]] = out
            if len(done) == len(job.rows):
                job.emit_safely("done", _result(job, [done[i] for i in range(len(job.rows))]))

        self.batches += 1  # before generating: a job's "done" may go out (on_done) while the batch runs on
        tok = live[0].tokenizer
        eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
        pad = tok.pad_token_id if tok.pad_token_id is not None else (eos[0] if eos else 0)
        try:
            outs = generate(
                live[0].model,
                rows,
                eos_ids=eos,
                pad_id=pad,
                on_step=on_step,
                lock=live[0].lock,
                on_done=on_done,
                clock=self.clock,
            )
        except Exception as e:  # the worker outlives a failed batch; its jobs hear why
            log.exception("steer: batch of %d requests failed", len(live))
            for j in live:
                if len(finished.get(id(j), ())) == len(j.rows):
                    continue  # answered already
                if len(live) > 1 and id(j) not in streamed:
                    self.run_batch([j])  # alone: a request that fails (or a batch too big) fails only itself
                else:
                    j.emit_safely("error", f"generation failed: {str(e) or type(e).__name__}")
            return
        for j in live:  # rows that never stopped on their own (cancelled before the first step)
            if len(finished.get(id(j), ())) < len(j.rows):
                j.emit_safely("done", _result(j, outs[first_row[id(j)] : first_row[id(j)] + len(j.rows)]))


def _result(job: SteerJob, outs: list[RowOut]) -> SteerResult | list[Completion]:
    return job.result([completion(job.tokenizer, o) for o in outs])
