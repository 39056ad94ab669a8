"""Iteration-level scheduling: at every decoding step, which requests decode, which leave, which are admitted.

Pure (stdlib only, no model, no threads, no sleeping): requests in, one `StepPlan` per step out; the model-running
part (qscope.steer.continuous) carries the plans out and reports back which requests finished. Tests drive it with
fake model outputs and an injected clock (tests/unit/steer/test_scheduler.py).

A request is the rows of one job (they share a prompt, so they are prefilled together and decode together). Rules:
- Every running request whose prompt pass is complete decodes one token per row at each step; a request that
  finished (`finish`) is dropped at the next plan, so its rows are never computed again.
- Each step has a token budget: the decoding rows take one token each, the rest goes to prompt passes, chunked
  (at most `chunk_tokens` positions of one request per step) so that a long prompt stalls the running rows for
  one chunk at a time, not for its whole prompt. A step with nothing else to do runs a chunk even past the budget,
  so that a prompt longer than the budget still makes progress.
- Waiting requests are admitted in order: live before background (a background request that has waited
  `promote_after_s` on the clock is ordered with the live ones, so background work is delayed, never starved);
  within a priority, in the start-time fair order of qscope.fairness.FairQueue across clients, weighted by rows.
- A client holds at most `per_client_rows` running rows while another client's request waits for room.
- The first request in that order that does not fit the free rows blocks the ones behind it (no skipping), so a
  request of many rows is not starved by a stream of small ones; only a client over its share is passed over.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Literal

from qscope.fairness import FairQueue

Priority = Literal["live", "background"]
UNBOUNDED = 1 << 62  # the scheduler's queues: admission control (how many may wait) is its user's


@dataclass
class Request:
    """What the scheduler knows of one request: sizes, not tokens."""

    id: Hashable
    prompt_len: int
    max_new_tokens: int
    rows: int = 1
    priority: Priority = "live"
    client: str = ""
    arrived: float = 0.0  # the scheduler's clock when added
    prefilled: int = 0  # prompt positions whose pass has been planned


@dataclass(frozen=True)
class Chunk:
    """Prompt positions [start, end) of one request, to run through the model (with its cache so far)."""

    id: Hashable
    start: int
    end: int


@dataclass
class StepPlan:
    """One step: free `dropped`, run the `prefill` chunks, then decode one token for each row of `decode`.
    A request whose last chunk is in `prefill` samples its first token from that chunk's logits: it is in
    `first_token`, not in `decode`."""

    dropped: list[Hashable] = field(default_factory=list)
    prefill: list[Chunk] = field(default_factory=list)
    first_token: list[Hashable] = field(default_factory=list)
    decode: list[Hashable] = field(default_factory=list)
    tokens: int = 0  # positions the step runs through the model, all rows together

    def empty(self) -> bool:
        return not (self.dropped or self.prefill or self.decode)


class Scheduler:
    """The step planner (see the module docstring)."""

    def __init__(
        self,
        token_budget: int = 512,
        max_rows: int = 32,
        chunk_tokens: int = 256,
        per_client_rows: int | None = None,
        promote_after_s: float | None = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.token_budget, self.max_rows = max(1, token_budget), max(1, max_rows)
        self.chunk_tokens = max(1, chunk_tokens)
        self.per_client_rows = per_client_rows if per_client_rows and per_client_rows > 0 else self.max_rows
        self.promote_after_s, self.clock = promote_after_s, clock
        self.live: FairQueue[Request] = FairQueue(UNBOUNDED)
        self.background: FairQueue[Request] = FairQueue(UNBOUNDED)
        self.running: dict[Hashable, Request] = {}  # admission order
        self._finished: list[Hashable] = []

    # requests in
    def add(self, request: Request) -> None:
        if request.prompt_len < 1 or request.rows < 1:
            raise ValueError("a request needs a prompt of at least one token and at least one row")
        request.arrived, request.prefilled = self.clock(), 0
        queue = self.live if request.priority == "live" else self.background
        queue.add(request.client, request, cost=request.rows)

    def finish(self, request_id: Hashable) -> None:
        """The request's rows have all stopped (or it was cancelled): it leaves at the next plan."""
        if request_id in self.running and request_id not in self._finished:
            self._finished.append(request_id)

    def withdraw(self, request_id: Hashable) -> bool:
        """Take a request out of the waiting queues (it gave up before it was admitted)."""
        for queue in (self.live, self.background):
            for r in queue.order():
                if r.id == request_id:
                    return queue.remove(r)
        return False

    def waiting(self) -> list[Request]:
        """The waiting requests in the order they would be admitted (promotion as of now)."""
        return self._order()

    def idle(self) -> bool:
        return not self.running and not len(self.live) and not len(self.background)

    def rows_used(self) -> int:
        return sum(r.rows for r in self.running.values())

    # plans out
    def plan(self) -> StepPlan:
        """The next step (see StepPlan); also admits waiting requests into the running set."""
        step = StepPlan(dropped=[i for i in self._finished if self.running.pop(i, None) is not None])
        self._finished.clear()
        step.decode = [i for i, r in self.running.items() if r.prefilled >= r.prompt_len]
        step.tokens = sum(self.running[i].rows for i in step.decode)
        for r in list(self.running.values()):  # prompt passes under way go on first, in admission order
            if r.prefilled < r.prompt_len:
                self._chunk(step, r)
        self._admit(step)
        return step

    def _chunk(self, step: StepPlan, r: Request) -> bool:
        """Plan the next chunk of r's prompt within what the budget leaves; False when not even one position fits."""
        left = self.token_budget - step.tokens
        forced = not step.decode and not step.prefill  # nothing else runs this step: progress past the budget
        length = min(r.prompt_len - r.prefilled, self.chunk_tokens, max(left // r.rows, 0))
        if length <= 0 and forced:
            length = min(r.prompt_len - r.prefilled, self.chunk_tokens)
        if length <= 0:
            return False
        step.prefill.append(Chunk(r.id, r.prefilled, r.prefilled + length))
        step.tokens += length * r.rows
        r.prefilled += length
        if r.prefilled >= r.prompt_len:
            step.first_token.append(r.id)
        return True

    def _admit(self, step: StepPlan) -> None:
        while True:
            order = self._order()
            if not order:
                return
            used = self.rows_used()
            clients = {r.client for r in order}
            head = next((r for r in order if not self._over_share(r, clients)), None)
            if head is None or (head.rows > self.max_rows - used and used):
                return  # the head waits for room, and nothing passes it (wider than max_rows: it runs alone)
            if self.token_budget - step.tokens < head.rows and (step.decode or step.prefill):
                return  # no budget left this step
            queue = self.live if head.priority == "live" else self.background
            queue.take(lambda r, head=head: r is head)  # type: ignore[misc]
            self.running[head.id] = head
            self._chunk(step, head)

    def _over_share(self, r: Request, waiting_clients: set[str]) -> bool:
        """Whether r's client holds its share of running rows while some other client waits."""
        if not waiting_clients - {r.client}:
            return False
        held = sum(x.rows for x in self.running.values() if x.client == r.client)
        return held + r.rows > self.per_client_rows

    def _order(self) -> list[Request]:
        now = self.clock()
        promoted = [
            r
            for r in self.background.order()
            if self.promote_after_s is not None and now - r.arrived >= self.promote_after_s
        ]
        rest = [r for r in self.background.order() if all(r is not p for p in promoted)]
        return promoted + self.live.order() + rest
