"""Batched generation with per-row steering: our own decode loop over the real Hugging Face model.

All rows (the default and steered rows of one request, and of every request coalesced with it) run as one
batch: prompts padded to one length (after the prompt and unmasked where every layer is causal attention, else
before it with an attention mask: `attention_only`), explicit position ids, the model's own KV cache.
Each step hooks only the sites some row edits, through qscope.model.hooks. Each row samples with its own
temperature, top-p, frequency penalty and torch.Generator (seeded per row, so a row's draws do not depend on
its batch); temperature 0 is greedy. Every token comes back with the model's probability of it.

Shapes: B rows, L prompt length after padding, V vocabulary.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from qscope.model import hooks
from qscope.steer.edits import Edit, PositionedSteer
from qscope.steer.spec import Where


@dataclass
class Row:
    """One sequence to generate."""

    prompt_ids: list[int]
    edits: dict[str, list[Edit]] = field(default_factory=dict)  # site -> edits; empty for a default row
    where: Where = "both"
    temperature: float = 0.0
    top_p: float = 1.0
    frequency_penalty: float = 0.0
    seed: int = 0
    max_new_tokens: int = 16
    cancel: threading.Event = field(default_factory=threading.Event)
    deadline: float | None = None  # the time on generate's clock (time.monotonic()) after which the row stops
    timeout_s: float | None = None  # or: seconds the row may generate, counted from the start of its generation


@dataclass
class RowOut:
    ids: list[int] = field(default_factory=list)
    probs: list[float] = field(default_factory=list)
    stopped: str = "length"  # length | eos | timeout | cancelled


PLAIN_LAYERS = ("DynamicLayer", "DynamicSlidingWindowLayer")  # caches whose rows can be copied out
StepFn = Callable[[list[tuple[int, int, float]]], None]  # [(row, token id, prob)] of one step
DoneFn = Callable[[int, RowOut], None]  # (row, its output) once the row has stopped


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """(input_ids [B, L], attention_mask [B, L]) with the prompts right-aligned."""
    L = max(len(p) for p in prompts)
    ids_BL = torch.full((len(prompts), L), pad_id, dtype=torch.long)
    mask_BL = torch.zeros((len(prompts), L), dtype=torch.long)
    for b, p in enumerate(prompts):
        ids_BL[b, L - len(p) :] = torch.tensor(list(p), dtype=torch.long)
        mask_BL[b, L - len(p) :] = 1
    return ids_BL, mask_BL


def right_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """(input_ids [B, L], attention_mask [B, L]) with the prompts left-aligned, pads after them."""
    L = max(len(p) for p in prompts)
    ids_BL = torch.full((len(prompts), L), pad_id, dtype=torch.long)
    mask_BL = torch.zeros((len(prompts), L), dtype=torch.long)
    for b, p in enumerate(prompts):
        ids_BL[b, : len(p)] = torch.tensor(list(p), dtype=torch.long)
        mask_BL[b, : len(p)] = 1
    return ids_BL, mask_BL


def attention_only(model: nn.Module) -> bool:
    """Whether every layer mixes tokens by (full or sliding-window) causal attention only. Then pads placed after
    a prompt change nothing before them, and prompts of different lengths run in one batch without a mask, on
    the fast causal path (a padding mask makes CPU attention take a slower path: about twice the time of the
    prefill of long prompts). Linear-attention layers (Qwen3-Next, Qwen3.5) would carry the pads in their state,
    so they keep left padding and the mask."""
    config = getattr(model, "config", None)
    if config is None:  # not a transformers model: nothing known, so the general way
        return False
    types = getattr(config.get_text_config(), "layer_types", None)
    return types is None or all(t in ("full_attention", "sliding_attention") for t in types)


def sample_next(
    logits_BV: Tensor, rows: Sequence[Row], gens: Sequence[torch.Generator], counts_BV: Tensor | None
) -> Tensor:
    """The next token [B] of every row: greedy at temperature 0, else top-p sampling with the row's generator."""
    if counts_BV is not None:
        penalty_B1 = torch.tensor([r.frequency_penalty for r in rows], device=logits_BV.device)[:, None]
        logits_BV = logits_BV - penalty_B1 * counts_BV
    next_B = logits_BV.argmax(-1)
    for b, row in enumerate(rows):
        if row.temperature <= 0:
            continue
        # the max first: a temperature near 0 would make the logits infinite, and their softmax NaN
        probs_V = torch.softmax((logits_BV[b] - logits_BV[b].max()) / row.temperature, -1)
        if row.top_p < 1.0:
            sorted_V, order_V = probs_V.sort(descending=True)
            drop_V = sorted_V.cumsum(-1) - sorted_V >= row.top_p  # keep the smallest set reaching top_p
            probs_V = probs_V.scatter(0, order_V, sorted_V.masked_fill(drop_V, 0.0))
        if bool(torch.isfinite(probs_V).all()) and float(probs_V.sum()) > 0:  # else (NaN logits) stay greedy
            next_B[b] = torch.multinomial(probs_V, 1, generator=gens[b])[0]
    return next_B


def site_steers(rows: Sequence[Row]) -> dict[str, PositionedSteer]:
    """One steer per hooked site, built once per generation (directions and gains do not change)."""
    sites = sorted({site for r in rows for site in r.edits})
    return {site: PositionedSteer([r.edits.get(site, []) for r in rows]) for site in sites}


def hook_fns(steers: dict[str, PositionedSteer], steer_BT: Tensor, pos_BT: Tensor) -> dict:
    if not steers or not bool(steer_BT.any()):  # e.g. the prompt pass of where="generated": no hook at all
        return {}
    return {
        site: (lambda h_BTD, s=s: s(h_BTD, steer_BT.to(h_BTD.device), pos_BT.to(h_BTD.device)))
        for site, s in steers.items()
    }


def row_deadline(row: Row, start: float) -> float | None:
    if row.timeout_s is None:
        return row.deadline
    return start + row.timeout_s if row.deadline is None else min(row.deadline, start + row.timeout_s)


def stop_reason(row: Row, out: RowOut, token: int, eos_ids: set[int], deadline: float | None, now: float) -> str | None:
    if row.cancel.is_set():
        return "cancelled"
    if deadline is not None and now > deadline:
        return "timeout"
    if token in eos_ids:
        return "eos"
    if len(out.ids) >= row.max_new_tokens:
        return "length"
    return None


@torch.no_grad()
def generate(
    model: nn.Module,
    rows: Sequence[Row],
    *,
    eos_ids: Sequence[int] = (),
    pad_id: int = 0,
    on_step: StepFn | None = None,
    lock: threading.Lock | None = None,
    on_done: DoneFn | None = None,
    share_prefill: bool = False,
    clock: Callable[[], float] = time.monotonic,
) -> list[RowOut]:
    """Generate every row in one batch; `lock` is held around each forward (others may use the model between
    steps, and never see this generation's hooks). `on_done` hears of each row as soon as it stops, after its
    last token went to `on_step` (the batch runs on while other rows have tokens to make). share_prefill: run the
    prompt pass once per group of rows with the same prompt and the same prompt edits (e.g. the seeds of one
    steering evaluation row). Time limits (Row.deadline, Row.timeout_s) are on `clock`."""
    device = next(model.parameters()).device
    unmasked = attention_only(model)  # the prompts run right-padded, without a mask (see attention_only)
    ids_BL, mask_BL = (right_pad if unmasked else left_pad)([r.prompt_ids for r in rows], pad_id)
    ids_BL, mask_BL = ids_BL.to(device), mask_BL.to(device)
    pos_BL = (mask_BL.cumsum(-1) - 1).clamp_min(0)
    len_B1 = mask_BL.sum(-1, keepdim=True)  # prompt lengths
    last_K, row_B = torch.unique(len_B1[:, 0] - 1, return_inverse=True)  # where each prompt ends
    if unmasked:  # positions that only go up: a repeated one would read as the start of a packed sequence
        pos_BL = torch.arange(ids_BL.shape[1], device=device).expand_as(ids_BL)
    gens = [torch.Generator(device=device).manual_seed(r.seed) for r in rows]
    on_prompt_B = torch.tensor([r.where != "generated" for r in rows], device=device)
    on_gen_B1 = torch.tensor([r.where != "prompt" for r in rows], device=device)[:, None]
    outs = [RowOut() for _ in rows]
    live = [not r.cancel.is_set() for r in rows]
    start = clock()
    deadlines = [row_deadline(r, start) for r in rows]
    eos = set(eos_ids)
    counts_BV, past, step_ids = None, None, ids_BL
    steer_BT = mask_BL.bool() & on_prompt_B[:, None]
    steers = site_steers(rows)
    for _ in range(max(r.max_new_tokens for r in rows)):
        step_pos = pos_BL if past is None else pos_BL[:, -1:]
        right = unmasked and past is None  # the right-padded prompts: no mask, logits where each one ends
        groups = _prefill_groups(rows) if past is None and share_prefill else None
        ends = (last_K, row_B) if right else None
        shared = groups and _shared_prefill(model, rows, groups, step_ids, mask_BL, step_pos, steer_BT, lock, ends)
        if shared:  # rows that differ only in sampling (seeds) shared one prompt pass
            past, logits_BV = shared
        else:
            with lock or nullcontext(), hooks(model, hook_fns(steers, steer_BT, step_pos)):
                out = model(
                    input_ids=step_ids,
                    attention_mask=None if right else mask_BL,
                    position_ids=step_pos,
                    past_key_values=past,
                    use_cache=True,
                    logits_to_keep=last_K if right else 1,
                )
            past = out.past_key_values
            logits_BV = _last_logits(out.logits, (last_K, row_B) if right else None)
        if counts_BV is None and any(r.frequency_penalty for r in rows):
            counts_BV = torch.zeros_like(logits_BV)
        next_B = sample_next(logits_BV, rows, gens, counts_BV)
        probs_B = torch.softmax(logits_BV, -1).gather(-1, next_B[:, None])[:, 0]
        if counts_BV is not None:
            counts_BV.scatter_add_(1, next_B[:, None], torch.ones_like(logits_BV[:, :1]))
        _record(rows, outs, live, next_B.tolist(), probs_B.tolist(), eos, on_step, on_done, deadlines, clock())
        if not any(live):
            break
        step_ids = next_B[:, None]
        mask_BL = torch.cat([mask_BL, torch.ones_like(mask_BL[:, :1])], 1)
        pos_BL = len_B1 if right else step_pos[:, -1:] + 1  # the position of the token just sampled
        steer_BT = on_gen_B1
    return outs


def _prompt_key(row: Row) -> tuple:
    """What a row's prompt pass depends on: its prompt ids and, where the prompt is steered, its edits."""
    if row.where == "generated":
        return tuple(row.prompt_ids), ()
    edits = [
        (site, id(e.sae), e.feature, e.mode, e.value, id(e.vector) if e.vector is not None else None)
        for site, es in sorted(row.edits.items())
        for e in es
    ]
    return tuple(row.prompt_ids), tuple(edits)


def _prefill_groups(rows: Sequence[Row]) -> list[int] | None:
    """For each row, the index of the first row with the same prompt pass; None when no two rows share one."""
    first: dict[tuple, int] = {}
    owner = [first.setdefault(_prompt_key(r), b) for b, r in enumerate(rows)]
    return owner if len(first) < len(rows) else None


def _shared_prefill(model, rows, owner, ids_BL, mask_BL, pos_BL, steer_BT, lock, ends) -> tuple[object, Tensor] | None:
    """The prompt pass of the distinct rows only, its KV cache and last logits copied out to every row; None
    when the model's cache holds more than keys and values. ends: (last_K, row_B) for right-padded prompts (see
    _last_logits), None for left-padded ones."""
    uniq = sorted(set(owner))
    slot = {b: i for i, b in enumerate(uniq)}
    u_U = torch.tensor(uniq, device=ids_BL.device)
    expand_B = torch.tensor([slot[o] for o in owner], device=ids_BL.device)
    steers = site_steers([rows[i] for i in uniq])
    with lock or nullcontext(), hooks(model, hook_fns(steers, steer_BT[u_U], pos_BL[u_U])):
        out = model(
            input_ids=ids_BL[u_U],
            attention_mask=None if ends else mask_BL[u_U],
            position_ids=pos_BL[u_U],
            use_cache=True,
            logits_to_keep=ends[0] if ends else 1,
        )
    past = out.past_key_values
    if any(type(layer).__name__ not in PLAIN_LAYERS for layer in getattr(past, "layers", [None])):
        return None  # e.g. linear-attention states, which batch_select_indices does not copy: run it in full
    past.batch_select_indices(expand_B)  # repeats each distinct row's keys and values for its group
    return past, _last_logits(out.logits, (ends[0], ends[1][u_U]) if ends else None)[expand_B]


def _last_logits(logits: Tensor, ends: tuple[Tensor, Tensor] | None) -> Tensor:
    """float logits [rows, V] where each row's prompt ends: the last position (left-padded prompts), or, for
    right-padded ones asked with logits_to_keep=last_K, position row_B[b] of the kept ones (ends = last_K, row_B)."""
    if ends is None:
        return logits[:, -1].float()
    return logits[torch.arange(logits.shape[0], device=logits.device), ends[1]].float()


def _record(rows, outs, live, tokens, probs, eos, on_step, on_done, deadlines, now) -> None:
    emitted, stopped = [], []
    for b, (row, out) in enumerate(zip(rows, outs, strict=True)):
        if not live[b]:
            continue
        if row.cancel.is_set():
            live[b], out.stopped = False, "cancelled"
            stopped.append(b)
            continue
        out.ids.append(tokens[b])
        out.probs.append(probs[b])
        emitted.append((b, tokens[b], probs[b]))
        if reason := stop_reason(row, out, tokens[b], eos, deadlines[b], now):
            live[b], out.stopped = False, reason
            stopped.append(b)
    if on_step and emitted:
        on_step(emitted)
    if on_done:
        for b in stopped:
            on_done(b, outs[b])
