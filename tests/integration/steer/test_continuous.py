"""The gate of continuous batching (qscope.steer.continuous): on the tiny mini-Qwen, a row's greedy output is
token for token the same whether it runs alone (the static engine, qscope.steer.engine.generate) or joins a
running batch mid-way (its prompt chunked, other rows leaving meanwhile), for every steering mode."""

import pytest
import torch

from qscope.model import capture
from qscope.steer.continuous import EagerEngine
from qscope.steer.edits import Edit
from qscope.steer.engine import Row, generate


def ids(lm, text):
    return lm.tokenizer(text, add_special_tokens=False)["input_ids"]


def drive(model, joins: dict[int, list[tuple[str, Row]]], chunk: int = 3) -> dict[str, list[int]]:
    """Run rows through an EagerEngine: joins[step] = rows that arrive before that decoding step (their prompt in
    chunks of `chunk` positions, one chunk per step, while the batch decodes); a row is freed once it has its
    max_new_tokens. Returns each row's tokens."""
    engine = EagerEngine(model)
    out: dict[str, list[int]] = {}
    rows: dict[str, Row] = {}
    filling: list[tuple[str, Row, int]] = []  # (key, row, positions run)
    step = 0
    while step == 0 or engine.running() or filling or any(s >= step for s in joins):
        for key, row in joins.get(step, []):
            rows[key] = row
            filling.append((key, row, 0))
        sampled = engine.decode_step()
        still = []
        for key, row, done in filling:
            end = min(done + chunk, len(row.prompt_ids))
            sampled += engine.prefill([key], [row], done, end)
            if end < len(row.prompt_ids):
                still.append((key, row, end))
        filling = still
        for key, token, _ in sampled:
            out.setdefault(key, []).append(token)
        engine.free([k for k, toks in out.items() if len(toks) >= rows[k].max_new_tokens and k in engine.running()])
        step += 1
        assert step < 100
    return out


def alone(model, row: Row) -> list[int]:
    return generate(model, [row])[0].ids


def firing(lm, sae, prompt: list[int], n: int = 3) -> list[int]:
    """The features that fire most on the prompt's unsteered continuation (the ones an edit visibly moves)."""
    text = prompt + alone(lm.model, Row(prompt, {}, max_new_tokens=8))
    f_TF = sae.encode(capture(lm.model, [sae.site], torch.tensor([text]))[sae.site][0])
    return f_TF[len(prompt) - 1 :].sum(0).topk(n).indices.tolist()


def edits_of(sae, mode: str, features: list[int]) -> dict:
    if mode == "none":
        return {}
    if mode == "vector":
        return {sae.site: [Edit(sae, -1, "add", 8.0, vector=sae.decoder_directions[7].clone())]}
    if mode == "add":
        return {sae.site: [Edit(sae, 40, "add", 6.0), Edit(sae, features[0], "ablate", 0.0)]}
    value = {"clamp": 5.0, "multiply": 3.0, "ablate": 0.0, "subtract": 0.0}[mode]
    return {sae.site: [Edit(sae, f, mode, value) for f in features]}


MODES = ["none", "add", "clamp", "multiply", "ablate", "subtract", "vector"]


@pytest.mark.parametrize("mode", MODES)
def test_a_row_that_joins_mid_batch_generates_what_it_generates_alone(tiny, mode):
    lm, sae = tiny
    prompt = ids(lm, "Once upon a time, in a land far away")
    steer = edits_of(sae, mode, firing(lm, sae, prompt))
    others = {sae.site: [Edit(sae, 12, "add", 4.0), Edit(sae, 5, "clamp", 3.0)]}
    target = Row(prompt, steer, max_new_tokens=8)
    late = Row(ids(lm, "x = 1"), steer, where="generated", max_new_tokens=5)
    early = [
        ("short", Row(ids(lm, "def f(x):"), {}, max_new_tokens=3)),  # leaves while the target runs
        ("long", Row(ids(lm, "The cat sat on the mat and then the dog"), others, max_new_tokens=12)),
    ]
    got = drive(lm.model, {0: early, 2: [("target", target)], 4: [("late", late)]})
    assert got["target"] == alone(lm.model, target)
    if mode != "none":  # the edits do something here
        assert got["target"] != alone(lm.model, Row(prompt, {}, max_new_tokens=8))
    assert got["late"] == alone(lm.model, late)
    for key, row in early:
        assert got[key] == alone(lm.model, row)


def test_steering_from_a_position_and_on_the_prompt_only_stays_exact(tiny):
    lm, sae = tiny
    prompt = ids(lm, "The cat sat on the mat and then the dog")
    positioned = Row(prompt, {sae.site: [Edit(sae, 40, "add", 6.0, start=len(prompt) + 2)]}, max_new_tokens=8)
    on_prompt = Row(prompt, {sae.site: [Edit(sae, 40, "clamp", 8.0)]}, where="prompt", max_new_tokens=8)
    other = Row(ids(lm, "def f(x):"), {}, max_new_tokens=10)
    got = drive(lm.model, {0: [("other", other)], 1: [("positioned", positioned)], 3: [("on_prompt", on_prompt)]})
    assert got["positioned"] == alone(lm.model, positioned)
    assert got["on_prompt"] == alone(lm.model, on_prompt)
    assert got["positioned"] != alone(lm.model, Row(prompt, {}, max_new_tokens=8))  # the steering does something


def test_sampled_rows_keep_their_own_draws_and_penalties(tiny):
    lm, sae = tiny
    sampled = Row(ids(lm, "Once upon a time"), {}, temperature=0.9, top_p=0.9, seed=7, max_new_tokens=8)
    penalised = Row(ids(lm, "The cat sat"), {}, frequency_penalty=1.5, max_new_tokens=8)
    other = Row(ids(lm, "def f(x):"), {sae.site: [Edit(sae, 40, "add", 6.0)]}, max_new_tokens=9)
    got = drive(lm.model, {0: [("other", other)], 2: [("sampled", sampled), ("penalised", penalised)]})
    assert got["sampled"] == alone(lm.model, sampled)
    assert got["penalised"] == alone(lm.model, penalised)


def test_freed_rows_leave_the_cache_and_its_pad_columns(tiny):
    lm, _ = tiny
    engine = EagerEngine(lm.model)
    long_row = Row(ids(lm, "The cat sat on the mat and then the dog"), {}, max_new_tokens=4)
    short_row = Row(ids(lm, "x"), {}, max_new_tokens=4)
    engine.prefill(["long"], [long_row], 0, len(long_row.prompt_ids))
    engine.prefill(["short"], [short_row], 0, 1)
    assert engine.mask_BT is not None and engine.mask_BT.shape == (2, len(long_row.prompt_ids))
    engine.decode_step()
    engine.free(["long"])
    assert engine.running() == ["short"]
    assert engine.mask_BT.shape == (1, 2) and bool(engine.mask_BT.all())  # only the short row's 2 positions
    assert engine.cache is not None and engine.cache.get_seq_length() == 2
    engine.free(["short"])
    assert engine.running() == [] and engine.cache is None
