"""The job runner (qscope.jobs) without a model: its queue, a client's share, the clients' turns, cancel, failure,
shutdown, and progress with rate and time left on an injected clock."""

import threading

import pytest

from qscope.jobs import Cancelled, Job, JobRunner, QueueFull

WAIT_S = 10.0  # an upper bound for a thread to reach a point; the tests never sleep


def blocker():
    """A job that runs until released; `started` is set once it runs."""
    started, release = threading.Event(), threading.Event()

    def fn(job: Job) -> str:
        started.set()
        while not release.wait(0.01):
            if job.cancel.is_set():
                raise Cancelled
        return "blocked"

    return fn, started, release


def recorder(order: list[str], name: str):
    def fn(job: Job) -> str:
        order.append(name)
        return name

    return fn


def wait_finished(job: Job) -> None:
    done = threading.Event()
    for _ in range(int(WAIT_S / 0.01)):
        if job.finished:
            return
        done.wait(0.01)
    raise AssertionError(f"{job.id} did not finish: {job.state}")


def test_a_clients_share_is_bounded_and_others_still_get_in():
    runner = JobRunner("t", max_waiting=6, per_client=2)
    fn, started, release = blocker()
    runner.submit("k", "first", fn, client="a")
    assert started.wait(WAIT_S)  # running: no longer waiting
    runner.submit("k", "a1", fn, client="a")
    runner.submit("k", "a2", fn, client="a")
    with pytest.raises(QueueFull, match="of your jobs are waiting already") as mine:
        runner.submit("k", "a3", fn, client="a")
    assert mine.value.status == 429
    runner.submit("k", "b1", fn, client="b")  # another client is still served
    release.set()


def test_the_queue_in_all_is_bounded():
    runner = JobRunner("t", max_waiting=1)
    fn, started, release = blocker()
    runner.submit("k", "running", fn)
    assert started.wait(WAIT_S)
    runner.submit("k", "waits", fn, client="a")
    with pytest.raises(QueueFull, match="the queue is full") as full:
        runner.submit("k", "one too many", fn, client="b")
    assert full.value.status == 503
    release.set()


def test_clients_take_turns_and_each_clients_jobs_keep_their_order():
    runner = JobRunner("t", max_waiting=10)
    fn, started, release = blocker()
    order: list[str] = []
    first = runner.submit("k", "a0", fn, client="a")
    assert started.wait(WAIT_S)
    jobs = [runner.submit("k", n, recorder(order, n), client=n[0]) for n in ("a1", "a2", "a3", "b1", "b2")]
    assert [runner.position(j) for j in jobs] == [0, 2, 4, 1, 3]  # clients in turn, each in its own order
    release.set()
    for j in [first, *jobs]:
        wait_finished(j)
    assert order == ["a1", "b1", "a2", "b2", "a3"]


def test_cancel_a_waiting_job_ends_it_at_once_and_a_running_one_at_its_next_check():
    ended: list[tuple[str, str]] = []
    runner = JobRunner("t", on_end=lambda j: ended.append((j.name, j.state)))
    fn, started, release = blocker()
    running = runner.submit("k", "running", fn)
    assert started.wait(WAIT_S)
    waiting = runner.submit("k", "waiting", recorder([], "waiting"))
    assert runner.cancel(waiting.id) is waiting and waiting.state == "cancelled"
    assert waiting.error == "cancelled before it started"
    runner.cancel(running.id)
    wait_finished(running)
    assert running.state == "cancelled" and running.result is None
    assert ended == [("waiting", "cancelled"), ("running", "cancelled")]
    assert runner.cancel("nope") is None


def test_a_failing_job_says_why_and_the_runner_goes_on():
    runner = JobRunner("t")

    def broken(job: Job) -> str:
        raise ValueError("the examples were empty")

    bad = runner.submit("k", "bad", broken)
    good = runner.submit("k", "good", recorder([], "good"))
    wait_finished(bad)
    wait_finished(good)
    assert (bad.state, bad.error) == ("failed", "the examples were empty")
    assert (good.state, good.result) == ("done", "good")


def test_shutdown_fails_what_waits_and_runs_and_takes_nothing_more():
    runner = JobRunner("t")
    fn, started, release = blocker()
    running = runner.submit("k", "running", fn)
    assert started.wait(WAIT_S)
    waiting = runner.submit("k", "waiting", fn)
    runner.shutdown("the server stopped")
    assert (running.state, waiting.state) == ("failed", "failed") and running.error == "the server stopped"
    with pytest.raises(QueueFull, match="stopping"):
        runner.submit("k", "late", fn)
    wait_finished(running)
    assert running.state == "failed"  # its Cancelled did not overwrite what shutdown said


def test_progress_has_the_rate_and_time_left_of_its_phase():
    now = [100.0]
    job = Job("j", "k", "n", clock=lambda: now[0])
    job.report("encode", 0, 50)
    now[0] += 10.0
    job.report("encode", 20, 50)
    assert job.rate == pytest.approx(2.0) and job.eta_s == pytest.approx(15.0)
    job.report("rank", 1, 4)  # a new phase: its clock starts again
    assert job.rate is None and job.eta_s is None and job.phase == "rank"
    now[0] += 2.0
    job.report("rank", 3, 4, detail="C = 0.1")
    assert job.rate == pytest.approx(1.5) and job.eta_s == pytest.approx(1 / 1.5) and job.detail == "C = 0.1"
    assert job.version == 4
