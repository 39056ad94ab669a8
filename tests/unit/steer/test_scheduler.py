"""The step planner of continuous batching (qscope.steer.scheduler), without a model: a fake engine carries out
each plan (a request "generates" until its fake output length) and a clock moved by hand stands for time."""

from __future__ import annotations

import pytest

from qscope.steer.scheduler import Request, Scheduler, StepPlan


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeEngine:
    """Carries out plans: counts each request's prompt positions and tokens; a request finishes once it has
    `lengths[id]` tokens (its fake model output: an end of text at that step), or max_new_tokens."""

    def __init__(self, sched: Scheduler, lengths: dict | None = None) -> None:
        self.sched, self.lengths = sched, lengths or {}
        self.prefilled: dict = {}
        self.tokens: dict = {}
        self.first_at: dict = {}  # request -> step of its first token
        self.done_at: dict = {}
        self.steps: list[StepPlan] = []
        self.requests: dict = {}

    def add(self, r: Request) -> None:
        self.requests[r.id] = r
        self.sched.add(r)

    def step(self) -> StepPlan:
        plan = self.sched.plan()
        n = len(self.steps)
        for i in plan.dropped:
            assert i in self.done_at, "only finished requests are dropped"
        for c in plan.prefill:
            assert c.start == self.prefilled.get(c.id, 0), "chunks are in order, without gaps"
            self.prefilled[c.id] = c.end
        for i in plan.first_token + plan.decode:
            assert self.prefilled[i] == self.requests[i].prompt_len, "only rows with their whole prompt decode"
            self.tokens[i] = self.tokens.get(i, 0) + 1
            self.first_at.setdefault(i, n)
            r = self.requests[i]
            if self.tokens[i] >= min(self.lengths.get(i, r.max_new_tokens), r.max_new_tokens):
                self.done_at[i] = n
                self.sched.finish(i)
        assert set(plan.decode).isdisjoint(plan.dropped)
        self.steps.append(plan)
        return plan

    def run(self, limit: int = 1000) -> None:
        while not self.sched.idle() and len(self.steps) < limit:
            self.step()
        assert self.sched.idle(), "the work ends"


def test_rows_leave_when_finished_and_newcomers_join_between_steps():
    sched = Scheduler(token_budget=64, max_rows=8, chunk_tokens=64)
    eng = FakeEngine(sched, lengths={"a": 2})
    eng.add(Request("a", prompt_len=4, max_new_tokens=10))
    eng.add(Request("b", prompt_len=4, max_new_tokens=10))
    first = eng.step()
    assert [c.id for c in first.prefill] == ["a", "b"] and first.first_token == ["a", "b"] and first.decode == []
    second = eng.step()
    assert second.decode == ["a", "b"]  # a makes its 2nd (last) token here
    eng.add(Request("c", prompt_len=3, max_new_tokens=5))  # arrives while b runs
    third = eng.step()
    assert third.dropped == ["a"] and third.decode == ["b"], "a finished row is not computed again"
    assert [c.id for c in third.prefill] == ["c"], "a newcomer joins at the next step, not after the batch"
    eng.run()
    assert eng.tokens == {"a": 2, "b": 10, "c": 5}


def test_a_long_prompt_is_chunked_under_the_step_budget_and_running_rows_go_on():
    sched = Scheduler(token_budget=16, max_rows=8, chunk_tokens=8)
    eng = FakeEngine(sched)
    eng.add(Request("run", prompt_len=2, max_new_tokens=50, rows=2))
    eng.step()
    eng.add(Request("long", prompt_len=40, max_new_tokens=3))
    for _ in range(5):
        plan = eng.step()
        assert plan.decode == ["run"], "the running rows decode at every step of the long prefill"
        assert plan.tokens <= 16
    assert eng.prefilled["long"] == 40 and eng.first_at["long"] == 5  # 5 chunks of 8
    assert [c.end - c.start for s in eng.steps for c in s.prefill if c.id == "long"] == [8] * 5


def test_the_budget_leaves_prefill_room_after_the_decoding_rows():
    sched = Scheduler(token_budget=10, max_rows=16, chunk_tokens=100)
    eng = FakeEngine(sched)
    eng.add(Request("run", prompt_len=1, max_new_tokens=50, rows=6))
    eng.step()
    eng.add(Request("p", prompt_len=20, max_new_tokens=1, rows=2))
    plan = eng.step()
    assert plan.tokens == 10 and [(c.start, c.end) for c in plan.prefill] == [(0, 2)]  # (10 - 6) // 2 rows


def test_a_prompt_longer_than_the_budget_alone_still_runs():
    sched = Scheduler(token_budget=1, max_rows=4, chunk_tokens=6)
    eng = FakeEngine(sched)
    eng.add(Request("x", prompt_len=13, max_new_tokens=2, rows=2))
    eng.run()
    assert eng.tokens == {"x": 2} and len(eng.steps) == 5  # chunks 6, 6, 1, one decode step, the drop


def test_live_requests_are_admitted_before_background_ones():
    sched = Scheduler(max_rows=2, promote_after_s=None)
    eng = FakeEngine(sched)
    eng.add(Request("bg", prompt_len=2, max_new_tokens=4, rows=2, priority="background"))
    eng.add(Request("live", prompt_len=2, max_new_tokens=4, rows=2))
    eng.run()
    assert eng.first_at["live"] < eng.first_at["bg"]
    assert eng.first_at["bg"] > eng.done_at["live"]  # only two rows: bg waited for live's rows


def test_background_waiting_past_its_limit_is_no_longer_passed_by_live_ones():
    clock = Clock()
    sched = Scheduler(max_rows=1, promote_after_s=5.0, clock=clock)
    eng = FakeEngine(sched)
    eng.add(Request("bg", prompt_len=1, max_new_tokens=1, priority="background"))
    n = 0
    while "bg" not in eng.first_at:  # a steady stream of live requests, one per second
        eng.add(Request(f"live{n}", prompt_len=1, max_new_tokens=1))
        eng.step()
        clock.now += 1.0
        n += 1
        assert n < 20, "background work starved"
    assert 5 <= n <= 7


def test_a_client_flood_does_not_hold_every_row_while_another_client_waits():
    sched = Scheduler(max_rows=8, per_client_rows=4)
    eng = FakeEngine(sched)
    for i in range(12):
        eng.add(Request(f"a{i}", prompt_len=2, max_new_tokens=30, client="a"))
    eng.step()
    assert sched.rows_used() == 8  # alone, a client may use every row
    eng.add(Request("b0", prompt_len=2, max_new_tokens=3, client="b"))
    eng.add(Request("b1", prompt_len=2, max_new_tokens=3, client="b"))
    for _ in range(40):
        eng.step()
        if "b1" in eng.first_at:
            break
    assert eng.first_at["b0"] < eng.done_at["a0"] + 2  # b's first request runs as soon as a row frees
    a_first = sorted(eng.first_at[f"a{i}"] for i in range(8, 12))
    assert eng.first_at["b1"] <= a_first[1], "b is not queued behind a's whole flood"


def test_a_wide_request_is_not_starved_by_a_stream_of_narrow_ones():
    sched = Scheduler(max_rows=4)
    eng = FakeEngine(sched)
    for i in range(3):
        eng.add(Request(f"s{i}", prompt_len=1, max_new_tokens=2 + i, client=f"c{i}"))
    eng.step()
    eng.add(Request("wide", prompt_len=1, max_new_tokens=2, rows=4, client="w"))
    n = 3
    while "wide" not in eng.first_at:  # a new narrow request from a new client at every step
        eng.add(Request(f"s{n}", prompt_len=1, max_new_tokens=2, client=f"c{n}"))
        eng.step()
        n += 1
        assert n < 30, "the wide request starved"
    assert eng.first_at["wide"] <= 5  # it waited for the rows running when it came, nothing more


def test_a_request_wider_than_the_batch_runs_alone():
    sched = Scheduler(max_rows=2)
    eng = FakeEngine(sched)
    eng.add(Request("small", prompt_len=1, max_new_tokens=2))
    eng.add(Request("wide", prompt_len=1, max_new_tokens=2, rows=3))
    eng.add(Request("after", prompt_len=1, max_new_tokens=2))
    eng.run()
    assert eng.first_at["wide"] > eng.done_at["small"] and eng.first_at["after"] > eng.done_at["wide"]


def test_withdrawn_and_finished_requests_leave_without_running_again():
    sched = Scheduler(max_rows=1)
    eng = FakeEngine(sched)
    eng.add(Request("a", prompt_len=1, max_new_tokens=3))
    eng.add(Request("b", prompt_len=1, max_new_tokens=3))
    eng.step()
    assert sched.withdraw("b") and not sched.withdraw("b")
    sched.finish("a")  # cancelled mid-way
    eng.done_at["a"] = 0
    plan = eng.step()
    assert plan.dropped == ["a"] and plan.decode == [] and sched.idle()


def test_bad_requests_are_refused():
    with pytest.raises(ValueError):
        Scheduler().add(Request("x", prompt_len=0, max_new_tokens=1))
