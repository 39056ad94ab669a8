"""The continuous steering worker (qscope.steer.continuous_worker) on the tiny mini-Qwen: a short request sent
while long ones run is answered before them, with the same tokens the static worker gives it; a cancelled job
leaves the running batch while the others go on; the setting picks the worker."""

import threading
import time

import torch

from qscope.config import Settings
from qscope.steer.continuous_worker import ContinuousWorker
from qscope.steer.edits import Edit
from qscope.steer.service import Steering
from qscope.steer.spec import SteerLimits, SteerSpec
from qscope.steer.worker import SteerWorker, make_job


class Seen:
    """The events of one job, and the order in which jobs were answered (shared by the jobs of a test)."""

    def __init__(self, name: str, answered: list) -> None:
        self.name, self.answered, self.got, self.done = name, answered, {}, threading.Event()
        self.tokens = 0

    def __call__(self, kind, data) -> None:
        if kind == "token":
            self.tokens += 1
        self.got.setdefault(kind, []).append(data)
        if kind in ("done", "error"):
            self.answered.append(self.name)
            self.done.set()


def job(tiny, name, answered, prompt, max_new_tokens, **kw):
    lm, sae = tiny
    spec = SteerSpec(prompt=prompt, temperature=0, max_new_tokens=max_new_tokens, **kw)
    edits = {sae.site: [Edit(sae, 40, "add", 6.0)]}
    seen = Seen(name, answered)
    return make_job(spec, lm.model, lm.tokenizer, edits, SteerLimits(max_new_tokens=400), seen), seen


def test_a_short_request_among_long_ones_is_answered_first_with_the_static_tokens(tiny):
    answered: list = []
    worker = ContinuousWorker()
    longs = [job(tiny, f"long{i}", answered, "The", 120, frequency_penalty=-2.0) for i in range(2)]
    for j, _ in longs:
        worker.submit(j)
    while longs[0][1].tokens < 4:  # the long ones are generating
        time.sleep(0.005)
    short, seen = job(tiny, "short", answered, "Once upon a time", 3)
    worker.submit(short)
    assert seen.done.wait(120) and all(s.done.wait(300) for _, s in longs)
    assert answered[0] == "short", answered
    assert longs[0][1].got["done"][0].default.stopped == "length"  # they ran to their end meanwhile

    alone_answered: list = []
    again, alone = job(tiny, "short", alone_answered, "Once upon a time", 3)
    SteerWorker().run_batch([again])
    static = alone.got["done"][0]
    result = seen.got["done"][0]
    assert [t.id for t in result.default.tokens] == [t.id for t in static.default.tokens]
    assert [t.id for t in result.steered.tokens] == [t.id for t in static.steered.tokens]
    assert result.steered.text == static.steered.text and result.default.text == static.default.text


def test_a_cancelled_job_leaves_the_batch_and_the_others_go_on(tiny):
    answered: list = []
    worker = ContinuousWorker()
    a, seen_a = job(tiny, "a", answered, "The", 120, frequency_penalty=-2.0)
    b, seen_b = job(tiny, "b", answered, "The cat", 40, frequency_penalty=-2.0)
    worker.submit(a)
    worker.submit(b)
    while seen_a.tokens < 4:
        time.sleep(0.005)
    a.cancel.set()
    assert seen_a.done.wait(60) and seen_b.done.wait(120)
    assert answered == ["a", "b"]
    result_a, result_b = seen_a.got["done"][0], seen_b.got["done"][0]
    assert result_a.default.stopped == "cancelled" and len(result_a.default.tokens) < 120
    assert result_b.default.stopped == "length" and len(result_b.default.tokens) == 40
    assert not worker.flights and all(not e.running() for e in worker.engines.values())  # nothing left behind


def test_the_setting_picks_the_worker(tmp_path):
    def worker(**kw):
        settings = Settings(app_db_url=f"sqlite:///{tmp_path}/app.db", **kw)
        return Steering(settings.steer, settings.app_db.url).worker

    assert type(worker()) is SteerWorker
    assert isinstance(worker(steer_scheduler="continuous"), ContinuousWorker)


def test_a_job_whose_prompt_pass_fails_fails_alone(tiny):
    lm, sae = tiny
    answered: list = []
    worker = ContinuousWorker()
    good, seen_good = job(tiny, "good", answered, "The cat", 30, frequency_penalty=-2.0)
    bad, seen_bad = job(tiny, "bad", answered, "Once upon a time", 5)
    wrong = torch.ones(sae.d_in + 1)  # a direction of the wrong size: the steered prompt pass raises
    bad.rows[1].edits = {sae.site: [Edit(sae, -1, "add", 4.0, vector=wrong)]}
    worker.submit(good)
    while seen_good.tokens < 2:
        time.sleep(0.005)
    worker.submit(bad)
    assert seen_bad.done.wait(60) and seen_good.done.wait(120)
    assert "generation failed" in seen_bad.got["error"][0] and "done" not in seen_bad.got
    assert len(seen_good.got["done"][0].steered.tokens) == 30  # the batch it would have joined went on


def test_prompts_of_one_length_that_come_together_share_a_prompt_pass_and_keep_their_tokens(tiny, monkeypatch):
    from qscope.steer.continuous import EagerEngine

    passes: list = []
    real = EagerEngine.prefill

    def counted(self, keys, rows, start, end):
        passes.append(len(rows))
        return real(self, keys, rows, start, end)

    monkeypatch.setattr(EagerEngine, "prefill", counted)
    answered: list = []
    worker = ContinuousWorker()
    jobs = [job(tiny, f"j{i}", answered, "The cat sat", 6, seed=i) for i in range(3)]
    jobs[1][0].rows[1].edits = {}  # a different steering per job: rows of different jobs in one pass
    for j, _ in jobs:
        worker.submit(j, start=False)
    worker.start()
    assert all(seen.done.wait(120) for _, seen in jobs)
    assert passes == [6]  # 3 jobs x 2 rows in one prompt pass
    monkeypatch.undo()
    for i, (_, seen) in enumerate(jobs):
        again, alone = job(tiny, f"j{i}", [], "The cat sat", 6, seed=i)
        again.rows[1].edits = jobs[i][0].rows[1].edits
        SteerWorker().run_batch([again])
        got, want = seen.got["done"][0], alone.got["done"][0]
        assert [t.id for t in got.steered.tokens] == [t.id for t in want.steered.tokens]
        assert [t.id for t in got.default.tokens] == [t.id for t in want.default.tokens]
