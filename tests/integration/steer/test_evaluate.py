"""The evaluation engine on the tiny default: strength 0 is the unsteered row, the read-back equals a reference
written out here, a strong add of the built-in set's feature beats its random controls, and a random feature
does not "work"; the worker lets a live request through while an evaluation batch runs."""

import threading

import pytest
import torch

from qscope.model import hooks
from qscope.steer.engine import Row, generate
from qscope.steer.evaluate.plan import prepare
from qscope.steer.evaluate.prompt_sets import SETS, builtin
from qscope.steer.evaluate.request import EvalLimits, EvalRequest
from qscope.steer.evaluate.run import execute, inline
from qscope.steer.evaluate.suggest import suggest
from qscope.steer.spec import SteerLimits, SteerSpec
from qscope.steer.worker import Background, SteerJob, SteerWorker
from qscope.store.queries import Store
from tests.helpers.evaluations import IDENT
from tests.helpers.timing import wait_until


def run(target, spec: SteerSpec, batch_rows=64, **kw):
    req = EvalRequest(spec=spec, **kw)
    plan = prepare(req, target, EvalLimits(), SteerLimits(), builtin())
    return plan, execute(plan, target, inline, IDENT, batch_rows=batch_rows)


@pytest.fixture(scope="module")
def chosen(target):
    return suggest(target, SETS["prose-to-code"])


def test_strength_zero_gives_the_unsteered_rows_exactly(target, chosen):
    spec = SteerSpec(features=[chosen.model_copy(update={"strength": 1.0})], temperature=0.9, max_new_tokens=12)
    _, result = run(target, spec, prompts=SETS["prose"].prompts[:4], strengths=[0, 6], seeds=2, random_controls=0)
    base = {(r.prompt, r.seed): r for r in result.rows if r.arm == "unsteered"}
    zero = [r for r in result.rows if r.arm == "intervention" and r.strength == 0]
    assert len(zero) == len(base) == 8
    for r in zero:
        b = base[(r.prompt, r.seed)]
        assert (r.token_ids, r.text, r.nll, r.concept, r.concept_act) == (
            b.token_ids,
            b.text,
            b.nll,
            b.concept,
            b.concept_act,
        )
    strong = [r.token_ids for r in result.rows if r.arm == "intervention" and r.strength == 6]
    assert sum(s != base[(r.prompt, r.seed)].token_ids for s, r in zip(strong, zero, strict=True)) >= 4


@torch.no_grad()
def reference(target, prompt_ids, gen_ids, sae_id, feature):
    """Perplexity and concept of one row, computed alone (no batch, no padding) the plain way."""
    model, sae = target.lm.model, target.saes[sae_id]
    ids = torch.tensor([prompt_ids + gen_ids])
    seen = {}
    with hooks(model, {sae.site: lambda h: seen.__setitem__("h", h)}):
        logits = model(input_ids=ids).logits[0].float()
    logp = torch.log_softmax(logits, -1)
    n, L = len(gen_ids), len(prompt_ids)
    nll = -sum(float(logp[L + i - 1, gen_ids[i]]) for i in range(n)) / n
    acts = sae.encode(seen["h"][0, L:])[:, feature]
    return nll, float((acts > 0).float().mean()), float(acts.mean())


def test_read_back_equals_a_reference_computation(target, chosen):
    spec = SteerSpec(features=[chosen], temperature=0.8, max_new_tokens=10, seed=3)
    plan, result = run(
        target,
        spec,
        prompts=SETS["prose"].prompts[:3],
        strengths=[0, 4],
        seeds=1,
        random_controls=1,
        instruction="Code: ",
    )
    store = Store(target.store_path)
    with store.reader() as reader:
        promoted = [(e.token_id, e.value) for e in reader.feature(chosen.sae_id, chosen.feature).logits_pos]
    store.close()
    picked = [r for r in result.rows if r.n_tokens > 0][::3]
    assert len(picked) >= 4 and {r.arm for r in picked} >= {"unsteered", "intervention"}
    for r in picked:
        prompt_ids = (plan.instructed_ids if r.arm.startswith("prompt") else plan.prompt_ids)[r.prompt]
        nll, fires, act = reference(target, prompt_ids, r.token_ids, chosen.sae_id, chosen.feature)
        torch.testing.assert_close(r.nll, nll, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(r.concept, fires, atol=1e-6, rtol=0)
        torch.testing.assert_close(r.concept_act, act, atol=1e-4, rtol=1e-4)
        # writes, by hand: each generated token's logit effect over the strongest promoted one's, 0 off the list
        effects = dict(promoted[:10])
        by_hand = sum(effects.get(t, 0.0) / promoted[0][1] for t in r.token_ids) / len(r.token_ids)
        assert r.writes == pytest.approx(by_hand, abs=1e-6)
    p = next(p for p in result.table if p.arm == "intervention" and p.strength == 4)
    rows = [r for r in result.rows if r.arm == "intervention" and r.strength == 4]
    assert p.concept.mean == pytest.approx(sum(r.concept for r in rows) / len(rows))
    assert p.writes.mean == pytest.approx(sum(r.writes for r in rows) / len(rows))
    assert result.measure in ("reads", "writes") and result.verdict.measure == result.measure


def test_strong_add_beats_random_controls_and_a_random_feature_does_not_work(target, chosen):
    prompts = SETS["prose-to-code"].prompts
    spec = SteerSpec(features=[chosen], temperature=0.7, max_new_tokens=16)
    _, result = run(target, spec, prompts=prompts, strengths=[0, 4, 8], seeds=2, random_controls=3)
    steer = next(p for p in result.table if p.arm == "intervention" and p.strength == 8)
    rand = next(p for p in result.table if p.arm == "random" and p.strength == 8)
    assert steer.concept.lo > rand.concept.hi, (steer.concept, rand.concept)
    assert result.verdict.status in ("works", "works but hurts fluency") and 8.0 in result.verdict.beats_controls
    assert len(result.controls) == 3 and all(c[0].feature != chosen.feature for c in result.controls)

    other = result.controls[0][0]  # a feature of the same SAE with a similar max activation
    spec = SteerSpec(features=[other], temperature=0.7, max_new_tokens=16)
    _, random_result = run(
        target,
        spec,
        prompts=prompts,
        strengths=[0, 4, 8],
        seeds=2,
        random_controls=3,
        concept={"sae_id": chosen.sae_id, "feature": chosen.feature},
    )
    assert random_result.verdict.status != "works", random_result.verdict.reason


def test_an_evaluation_batch_yields_to_a_live_request(target):
    """A live request sent (from another thread) while a long background batch generates is served between two
    of that batch's steps, not after its 64 steps."""
    lm, worker = target.lm, SteerWorker()
    ids = lm.tokenizer("The cat sat on the", add_special_tokens=False)["input_ids"]
    steps, events, started = [0], {}, threading.Event()
    rows = [Row(ids, temperature=0.0, max_new_tokens=64, seed=s) for s in range(32)]

    def background(yield_):
        def step(_):
            steps[0] += 1
            started.set()
            yield_()

        generate(lm.model, rows, on_step=step, lock=target.lock)
        events["background"] = steps[0]

    def on_live(kind, data):
        if kind == "done":
            events["live"] = steps[0]

    worker.submit_background(Background(background))
    assert started.wait(60)
    sent_at = steps[0]
    worker.submit(SteerJob(lm.model, lm.tokenizer, [Row(ids, max_new_tokens=4), Row(ids, max_new_tokens=4)], on_live))
    wait_until(lambda: "background" in events, 120, "the background work's end")
    assert events["background"] == 64 and worker.batches == 1
    assert events["live"] <= sent_at + 2, (sent_at, events)


def test_seeds_share_one_prompt_pass_and_give_the_same_rows(target):
    """Rows that differ only in their seed run their prompt once (a batch of 2 distinct prompts, not 6) and
    generate exactly what separate prompt passes give."""
    lm = target.lm
    a, b = (lm.tokenizer(t, add_special_tokens=False)["input_ids"] for t in ("The cat sat on the", "Once upon"))
    rows = lambda: [Row(p, temperature=0.9, max_new_tokens=8, seed=s) for p in (a, b) for s in range(3)]  # noqa: E731
    sizes = []
    handle = lm.model.model.register_forward_pre_hook(
        lambda m, args, kw: sizes.append(kw["input_ids"].shape), with_kwargs=True
    )
    try:
        shared = generate(lm.model, rows(), share_prefill=True)
        first_shared = sizes[0]
        sizes.clear()
        plain = generate(lm.model, rows())
    finally:
        handle.remove()
    assert first_shared[0] == 2 and sizes[0][0] == 6
    assert [o.ids for o in shared] == [o.ids for o in plain]


def test_the_request_names_the_measure_or_auto_picks_the_sharper_side(target, chosen):
    spec = SteerSpec(features=[chosen], temperature=0.7, max_new_tokens=8)

    def plan(**kw):
        req = EvalRequest(spec=spec, prompts=SETS["prose"].prompts[:2], strengths=[0, 1], **kw)
        return prepare(req, target, EvalLimits(), SteerLimits(), builtin())

    assert plan(measure="reads").measure == "reads" and plan(measure="writes").measure == "writes"
    auto = plan()
    r, w = auto.profile.reads_sharpness, auto.profile.writes_sharpness
    assert r is not None and w is not None and auto.profile.weights
    assert auto.measure == ("writes" if w > r else "reads") and auto.measure_reason.startswith("auto: ")
