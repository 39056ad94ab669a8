"""The fair share of queued work (qscope.fairness), requests in and order out, and the steering worker's use of
it with a clock moved by hand: one client's flood is capped and does not starve another client; a job that waits
past its limit is withdrawn when the limit passes, not when the worker comes round to it."""

import asyncio
import threading
from types import SimpleNamespace

import pytest

from qscope.fairness import FairQueue, QueueRefused
from qscope.jobs import JobRunner
from qscope.steer.evaluate.jobs import Evaluations
from qscope.steer.evaluate.request import EvalRequest
from qscope.steer.spec import SteerSpec
from qscope.steer.worker import QueueFull, SteerJob, SteerWorker, WaitedTooLong
from tests.helpers.timing import FakeClock, wait_until


def drain(q: FairQueue) -> list:
    out = []
    while (item := q.take()) is not None:
        out.append(item)
    return out


def test_a_flood_is_capped_per_client_and_the_queue_stays_open_to_others():
    q: FairQueue[str] = FairQueue(capacity=6, per_client=3)
    for i in range(3):
        q.add("a", f"a{i}")
    with pytest.raises(QueueRefused) as refused:
        q.add("a", "a3")
    assert refused.value.mine and "at most 3 per client" in str(refused.value)
    q.add("b", "b0")  # another client still gets in
    q.add("c", "c0")
    q.add("c", "c1")
    with pytest.raises(QueueRefused) as full:
        q.add("d", "d0")
    assert not full.value.mine and "queue is full" in str(full.value)


def test_clients_are_served_in_turn_each_in_its_own_order():
    q: FairQueue[str] = FairQueue(capacity=100)
    for i in range(24):
        q.add("flood", f"f{i}")
    assert q.take() == "f0"
    q.add("other", "o0")  # arrives after the flood: waits for one more of it, not for all 23
    q.add("other", "o1")
    assert drain(q)[:5] == ["f1", "o0", "f2", "o1", "f3"]


def test_cost_shares_work_not_requests():
    q: FairQueue[str] = FairQueue(capacity=100)
    for i in range(3):
        q.add("big", f"big{i}", cost=8)  # n=8 completions each
    for i in range(4):
        q.add("small", f"small{i}", cost=2)
    assert drain(q) == ["small0", "small1", "small2", "big0", "small3", "big1", "big2"]


def test_take_skips_what_does_not_fit_and_remove_withdraws():
    q: FairQueue[tuple[str, int]] = FairQueue(capacity=10)
    q.add("a", ("m1", 1))
    q.add("b", ("m2", 2))
    q.add("a", ("m2", 3))
    assert q.order() == [("m1", 1), ("m2", 2), ("m2", 3)]
    assert q.take(lambda item: item[0] == "m2") == ("m2", 2)
    job = q.order()[0]
    assert q.remove(job) and not q.remove(job)
    assert drain(q) == [("m2", 3)] and len(q) == 0


def job(client: str, events: list, rows: int = 2) -> SteerJob:
    """A job that is never run here (no model): only queued, taken and answered."""
    return SteerJob(None, None, [None] * rows, lambda kind, data: events.append((client, kind, data)), client=client)  # type: ignore[arg-type]


def test_the_worker_refuses_a_flooding_client_with_429_and_takes_others_in_turn():
    worker = SteerWorker(queue_size=16, max_batch_rows=2, per_client=4)
    events: list = []
    flood = [job("10.0.0.1", events) for _ in range(4)]
    for j in flood:
        worker.submit(j, start=False)
    with pytest.raises(QueueFull) as err:
        worker.submit(job("10.0.0.1", events), start=False)
    assert err.value.status == 429 and err.value.retry_after_s == 2
    other = job("10.0.0.2", events)
    worker.submit(other, start=False)  # not refused: the flood holds only its own share
    order = [worker.take_batch() for _ in range(5)]
    assert order == [[flood[0]], [other], [flood[1]], [flood[2]], [flood[3]]]


def test_a_job_past_its_queue_wait_is_withdrawn_when_the_limit_passes():
    clock = FakeClock()
    worker = SteerWorker(queue_size=4, max_wait_s=30, clock=clock)
    events: list = []
    waiting = job("10.0.0.1", events)
    worker.submit(waiting, start=False)  # the worker is busy (no thread here): the job waits
    assert worker.deadline(waiting) == 130.0
    clock.now = 129.0
    assert not worker.expire(waiting) and worker.queued() == 1  # not yet
    clock.now = 130.5
    assert worker.expire(waiting) and worker.queued() == 0
    ((client, kind, data),) = events
    assert kind == "error" and isinstance(data, WaitedTooLong) and "waited 30 s" in data
    assert not worker.expire(waiting)  # told once


def test_a_job_that_started_is_not_withdrawn():
    clock = FakeClock()
    worker = SteerWorker(queue_size=4, max_wait_s=1, clock=clock)
    events: list = []
    started = job("a", events)
    worker.submit(started, start=False)
    assert worker.take_batch() == [started]
    clock.now += 10
    assert not worker.expire(started) and events == []


def test_expiry_reaches_a_waiting_request_at_the_limit():
    """The request side (qscope.web.channel) keeps the limit: it gets its 503 error at the deadline while the
    worker is still busy with something else."""
    from qscope.web.channel import Waiting, channel, next_event

    worker = SteerWorker(queue_size=4, max_wait_s=0.2)

    async def wait_for_answer():
        q, emit = channel()
        j = job("a", [])
        j.emit = emit
        worker.submit(j, start=False)  # no worker thread: nothing would ever take it
        return await asyncio.wait_for(next_event(None, q, Waiting(worker, j)), timeout=10)

    kind, data = asyncio.run(wait_for_answer())
    assert kind == "error" and isinstance(data, WaitedTooLong)


def test_discover_jobs_cap_each_client_and_take_clients_in_turn():
    jobs = JobRunner("jobs", max_waiting=8, per_client=2)
    release = threading.Event()
    ran: list[str] = []

    def work(name: str):
        def fn(job):
            release.wait(30)
            ran.append(name)
            return name

        return fn

    first = jobs.submit("discover", "a0", work("a0"), client="10.0.0.1")
    wait_until(lambda: first.state == "running")  # holds the one job thread
    flood = [jobs.submit("discover", f"a{i}", work(f"a{i}"), client="10.0.0.1") for i in (1, 2)]
    with pytest.raises(QueueFull) as err:
        jobs.submit("discover", "a3", work("a3"), client="10.0.0.1")
    assert err.value.status == 429 and "at most 2 per client" in str(err.value)
    other = jobs.submit("discover", "b0", work("b0"), client="10.0.0.2")  # the queue is not the flood's alone
    cancelled = jobs.cancel(flood[1].id)
    assert cancelled is not None and cancelled.state == "cancelled"
    jobs.submit("discover", "a3", work("a3"), client="10.0.0.1")  # the cancelled job's place is free again
    release.set()
    wait_until(lambda: len(ran) == 4)
    assert ran == ["a0", "a1", "b0", "a3"] and other.state == "done"


def test_evaluations_cap_each_client(tmp_path):
    """The queueing of steering evaluations (their run is held here: no model needed to queue)."""
    evaluations = Evaluations(f"sqlite:///{tmp_path}/app.db", SteerWorker(), max_waiting=4, per_client=1)
    release = threading.Event()
    started: list[str] = []

    def run(job):
        started.append(job.id)
        release.wait(30)
        return job.id

    evaluations._run = run  # type: ignore[method-assign]
    request = EvalRequest(spec=SteerSpec(prompt="x", features=[]), prompts=["a"])
    plan, target = SimpleNamespace(request=request, prompts=["a"], rows=[]), SimpleNamespace(model_id="m")
    running = evaluations.submit(plan, target, client="10.0.0.1")
    wait_until(lambda: started == [running.id])
    evaluations.submit(plan, target, client="10.0.0.1")
    with pytest.raises(QueueFull) as err:
        evaluations.submit(plan, target, client="10.0.0.1")
    assert err.value.status == 429
    other = evaluations.submit(plan, target, client="10.0.0.2")
    assert evaluations.position(other) == 1
    release.set()
    wait_until(lambda: len(started) == 3)
