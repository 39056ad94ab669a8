"""The worker's "rows" jobs (only the rows a request needs): stop strings, seeds per row, and the gather window
that lets requests sent a moment apart share a batch; on the tiny default model."""

import threading

import pytest

from qscope.steer.rows import RowsCollector, StopScanner, make_rows_job
from qscope.steer.spec import SteerLimits, SteerSpec
from qscope.steer.worker import SteerWorker
from tests.helpers.timing import wait_until


@pytest.mark.parametrize(
    ("pieces", "stops", "sent", "text", "hit"),
    [
        (["Hel", "lo wor", "ld"], ["\n"], ["Hel", "lo wor", "ld"], "Hello world", False),
        (["ab", "c\n", "de"], ["\n"], ["ab", "c", ""], "abc", True),
        (["x EN", "D y"], ["END"], ["x ", ""], "x ", True),  # 'EN' is held back until it is known
        (["x EN", "Z y"], ["END"], ["x ", "ENZ y"], "x ENZ y", False),
        (["aXY", "Zb"], ["XYZ", "b"], ["a", ""], "a", True),  # the first stop string in the text wins
    ],
)
def test_stop_scanner(pieces, stops, sent, text, hit):
    s = StopScanner(stops)
    got = [s.push(p) for p in pieces]
    assert got[: len(sent)] == sent and s.text == text and s.hit == hit
    assert "".join(got) + s.rest() == text


@pytest.fixture(scope="module")
def lm(tiny_demo, one_torch_thread):
    from qscope.model import load_model

    return load_model(tiny_demo / "model", device="cpu")


def rows_job(lm, spec: SteerSpec, n: int, stops=()):
    got: dict = {}
    ev = threading.Event()

    def out(kind, data):
        got.setdefault(kind, []).append(data)
        if kind in ("done", "error"):
            ev.set()

    col = RowsCollector(n, stops, out)
    job = make_rows_job(spec, lm.model, lm.tokenizer, {}, SteerLimits(), n, col.feed)
    col.job = job
    return job, got, ev


def test_rows_have_their_own_seeds_and_stop_at_their_stop_string(lm):
    worker = SteerWorker()
    spec = SteerSpec(prompt="The cat sat on the", temperature=1.0, seed=5, max_new_tokens=12)
    job, got, ev = rows_job(lm, spec, 3)
    worker.submit(job)
    assert ev.wait(120)
    choices = got["done"][0]
    assert [c.index for c in choices] == [0, 1, 2] and len({c.text for c in choices}) == 3
    again, got2, ev2 = rows_job(lm, spec.model_copy(update={"seed": 6}), 1)
    worker.submit(again)
    assert ev2.wait(120) and got2["done"][0][0].text == choices[1].text  # row 1 of seed 5 is seed 6
    stop = choices[0].text[3:5]
    cut, got3, ev3 = rows_job(lm, spec, 3, stops=[stop])
    worker.submit(cut)
    assert ev3.wait(120)
    first = got3["done"][0][0]
    assert first.text == choices[0].text[: choices[0].text.index(stop)] and first.finish_reason == "stop"
    assert first.tokens < 12  # the row stopped generating, the others went on
    deltas = "".join(t for row, t in got3["delta"] if row == 0)
    assert deltas == first.text


def test_a_gather_window_lets_requests_sent_apart_share_a_batch(lm):
    spec = SteerSpec(prompt="The cat", temperature=0, max_new_tokens=6)
    for gather_s, batches in ((0.0, 2), (0.5, 1)):
        worker = SteerWorker(gather_s=gather_s)
        a, _, ev_a = rows_job(lm, spec, 1)
        b, _, ev_b = rows_job(lm, spec, 1)
        worker.submit(a)
        # the worker has taken `a` (and, with no window to wait in, started its batch: b cannot join it)
        wait_until(lambda w=worker, window=gather_s: w.queued() == 0 and (window > 0 or w.batches == 1))
        worker.submit(b)
        assert ev_a.wait(120) and ev_b.wait(120)
        assert worker.batches == batches, gather_s


def test_right_padded_prompts_run_unmasked_and_agree_with_left_padding(lm, monkeypatch):
    """Prompts of different lengths: the unmasked right-padded batch (attention-only models) gives the tokens
    of the left-padded masked one (what linear-attention models keep) and of each prompt alone."""
    from qscope.steer import engine
    from qscope.steer.engine import Row, generate

    assert engine.attention_only(lm.model)
    prompts = [
        lm.tokenizer(t, add_special_tokens=False)["input_ids"]
        for t in ("The cat", "def f(x):\n    return x + 1", "Once upon a time, in a land far away, there")
    ]
    rows = [Row(p, max_new_tokens=8) for p in prompts]
    right = [o.ids for o in generate(lm.model, rows)]
    monkeypatch.setattr(engine, "attention_only", lambda model: False)
    left = [o.ids for o in generate(lm.model, rows)]
    alone = [generate(lm.model, [r])[0].ids for r in rows]
    assert right == left == alone and len({tuple(x) for x in right}) == 3
