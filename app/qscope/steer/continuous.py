"""One engine interface for continuous batching (`Engine`: prefill, decode_step, free) and its first
implementation, `EagerEngine`: the real Hugging Face model, run eagerly with the model's own KV cache.

Rows join and leave the running batch between steps. A group of rows (the rows of one request: one prompt) runs
its prompt pass on its own cache, in chunks if the scheduler (qscope.steer.scheduler) says so; after its last
chunk each row samples its first token and the group's cache rows are merged into the running batch's. The
batch's cache is left-padded: every row's keys end at the newest position, and an attention mask [B, T] marks
the pads, so a row that joins with a shorter past is padded on the left, and the batch's cache on the left when
the newcomer's past is longer. Position ids are each row's own (0 at its first prompt token), so a row's rotary
positions never depend on its batch. `free` drops rows and cuts the columns that only pads hold any more.

Steering is per row and exact, as in qscope.steer.engine: one PositionedSteer per hooked site over the batch's
rows (rebuilt when rows join or leave), applied on prompt positions (where != "generated") and on generated ones
(where != "prompt"); each row samples with its own generator, temperature, top-p and frequency penalty. A
row's greedy output is the same token for token whether it ran alone or joined a running batch
(tests/integration/steer/test_continuous.py).

Only caches of plain keys and values are merged (attention-only models, see engine.attention_only); for other
models `supported` is False and the worker keeps the static engine.

Shapes: B running rows, G rows of one group, T cached positions, V vocabulary.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor, nn
from transformers import DynamicCache

from qscope.model import hooks
from qscope.steer.engine import PLAIN_LAYERS, Row, attention_only, hook_fns, sample_next, site_steers

RowKey = Hashable  # the caller's name for one row, e.g. (request id, row index)
Sampled = tuple[RowKey, int, float]  # (row, token id, the model's probability of it)


class Engine(Protocol):
    """What the continuous worker needs of a model runner. A faster engine (vLLM, SGLang) could stand behind it
    if it carries the per-row steering hooks (docs/architecture.md)."""

    def prefill(self, keys: Sequence[RowKey], rows: Sequence[Row], start: int, end: int) -> list[Sampled]:
        """Run prompt positions [start, end) of one group of rows (one prompt, one length); after the group's
        last chunk (end == prompt length) each row samples its first token and joins the running batch: those
        tokens are returned, else []. Chunks of a group come in order."""
        ...

    def decode_step(self) -> list[Sampled]:
        """One token for every running row."""
        ...

    def free(self, keys: Iterable[RowKey]) -> None:
        """Drop these rows (running, or mid-prefill) and their cache; unknown keys are ignored."""
        ...


@dataclass
class _Group:
    """Rows whose prompt pass is under way: their own cache, not yet in the batch."""

    keys: list[RowKey]
    rows: list[Row]
    cache: DynamicCache = field(default_factory=DynamicCache)
    done: int = 0  # prompt positions run


class EagerEngine:
    """`Engine` over a transformers causal LM (see the module docstring); `lock` is held around each forward."""

    def __init__(self, model: nn.Module, lock: threading.Lock | None = None) -> None:
        self.model, self.lock = model, lock
        self.device = next(model.parameters()).device
        self.supported = attention_only(model)
        self.keys: list[RowKey] = []
        self.rows: list[Row] = []
        self.gens: list[torch.Generator] = []
        self.counts: list[Tensor | None] = []  # tokens sampled so far [V], for rows with a frequency penalty
        self.last: list[int] = []  # each row's newest token, the input of the next step
        self.next_pos: list[int] = []  # each row's position of that token
        self.cache: DynamicCache | None = None  # [B, ., T, .], left-padded
        self.mask_BT: Tensor | None = None  # 1 where the cache holds a real position
        self.groups: dict[RowKey, _Group] = {}  # by the group's first key
        self._steers: dict | None = None  # the batch's PositionedSteers, None when the rows changed

    def running(self) -> list[RowKey]:
        return list(self.keys)

    @torch.no_grad()
    def prefill(self, keys: Sequence[RowKey], rows: Sequence[Row], start: int, end: int) -> list[Sampled]:
        length = len(rows[0].prompt_ids)
        if any(len(r.prompt_ids) != length for r in rows) or not 0 <= start < end <= length:
            raise ValueError("a group's rows share one prompt length, and chunks lie inside it")
        group = self.groups.setdefault(keys[0], _Group(list(keys), list(rows)))
        if start != group.done:
            raise ValueError(f"chunk [{start}, {end}) out of order: {group.done} positions run")
        ids_GT = torch.tensor([r.prompt_ids[start:end] for r in rows], dtype=torch.long, device=self.device)
        pos_GT = torch.arange(start, end, device=self.device).expand_as(ids_GT)
        on_prompt_G1 = torch.tensor([r.where != "generated" for r in rows], device=self.device)[:, None]
        steer_GT = on_prompt_G1.expand_as(ids_GT)
        with self.lock or nullcontext(), hooks(self.model, hook_fns(site_steers(rows), steer_GT, pos_GT)):
            out = self.model(
                input_ids=ids_GT, position_ids=pos_GT, past_key_values=group.cache, use_cache=True, logits_to_keep=1
            )
        group.cache, group.done = out.past_key_values, end
        if end < length:
            return []
        del self.groups[keys[0]]
        if any(type(layer).__name__ not in PLAIN_LAYERS for layer in group.cache.layers):
            raise NotImplementedError("the continuous engine merges plain key/value caches only")
        gens = [torch.Generator(device=self.device).manual_seed(r.seed) for r in rows]
        counts = [self._new_counts(r, out.logits) for r in rows]
        tokens, probs = self._sample(out.logits[:, -1].float(), list(rows), gens, counts)
        self._merge(group, gens, counts, tokens, length)
        return list(zip(group.keys, tokens, probs, strict=True))

    @torch.no_grad()
    def decode_step(self) -> list[Sampled]:
        if not self.keys or self.cache is None or self.mask_BT is None:
            return []
        ids_B1 = torch.tensor(self.last, dtype=torch.long, device=self.device)[:, None]
        pos_B1 = torch.tensor(self.next_pos, device=self.device)[:, None]
        self.mask_BT = torch.cat([self.mask_BT, torch.ones_like(self.mask_BT[:, :1])], 1)
        on_gen_B1 = torch.tensor([r.where != "prompt" for r in self.rows], device=self.device)[:, None]
        if self._steers is None:
            self._steers = site_steers(self.rows)
        with self.lock or nullcontext(), hooks(self.model, hook_fns(self._steers, on_gen_B1, pos_B1)):
            out = self.model(
                input_ids=ids_B1,
                attention_mask=self.mask_BT,
                position_ids=pos_B1,
                past_key_values=self.cache,
                use_cache=True,
                logits_to_keep=1,
            )
        self.cache = out.past_key_values
        tokens, probs = self._sample(out.logits[:, -1].float(), self.rows, self.gens, self.counts)
        self.last = tokens
        self.next_pos = [p + 1 for p in self.next_pos]
        return list(zip(self.keys, tokens, probs, strict=True))

    def free(self, keys: Iterable[RowKey]) -> None:
        gone = set(keys)
        for first in [k for k, g in self.groups.items() if gone & set(g.keys)]:
            del self.groups[first]
        keep = [b for b, k in enumerate(self.keys) if k not in gone]
        if len(keep) == len(self.keys):
            return
        self._steers = None
        for name in ("keys", "rows", "gens", "counts", "last", "next_pos"):
            setattr(self, name, [getattr(self, name)[b] for b in keep])
        if not keep or self.cache is None or self.mask_BT is None:
            self.cache, self.mask_BT = None, None
            return
        keep_B = torch.tensor(keep, device=self.device)
        mask_BT = self.mask_BT[keep_B]
        first = int((mask_BT.sum(0) > 0).nonzero()[0])  # columns before it hold only pads now
        self.mask_BT = mask_BT[:, first:]
        self.cache = DynamicCache(
            [(k[keep_B, :, first:], v[keep_B, :, first:]) for k, v in map(_kv, self.cache.layers)]
        )

    def _new_counts(self, row: Row, logits: Tensor) -> Tensor | None:
        return torch.zeros(logits.shape[-1], device=self.device) if row.frequency_penalty else None

    def _sample(
        self, logits_BV: Tensor, rows: list[Row], gens: list[torch.Generator], counts: list[Tensor | None]
    ) -> tuple[list[int], list[float]]:
        """Each row's next token and its probability (qscope.steer.engine.sample_next, per row)."""
        counts_BV = None
        if any(c is not None for c in counts):
            counts_BV = torch.stack([c if c is not None else torch.zeros_like(logits_BV[0]) for c in counts])
        next_B = sample_next(logits_BV, rows, gens, counts_BV)
        probs_B = torch.softmax(logits_BV, -1).gather(-1, next_B[:, None])[:, 0]
        tokens = next_B.tolist()
        for c, t in zip(counts, tokens, strict=True):
            if c is not None:
                c[t] += 1
        return tokens, probs_B.tolist()

    def _merge(
        self, group: _Group, gens: list[torch.Generator], counts: list[Tensor | None], tokens: list[int], length: int
    ) -> None:
        """The group's rows and cache [G, ., length, .] join the batch, the shorter side padded on the left."""
        self._steers = None
        G = len(group.rows)
        new_mask = torch.ones((G, length), dtype=torch.long, device=self.device)
        if self.cache is None or self.mask_BT is None:
            self.cache, self.mask_BT = group.cache, new_mask
        else:
            T = max(self.mask_BT.shape[1], length)
            pairs = zip(map(_kv, self.cache.layers), map(_kv, group.cache.layers), strict=True)
            self.cache = DynamicCache(
                [
                    (
                        torch.cat([_pad_left(ka, T, 2), _pad_left(kb, T, 2)]),
                        torch.cat([_pad_left(va, T, 2), _pad_left(vb, T, 2)]),
                    )
                    for (ka, va), (kb, vb) in pairs
                ]
            )
            self.mask_BT = torch.cat([_pad_left(self.mask_BT, T, 1), _pad_left(new_mask, T, 1)])
        self.keys += group.keys
        self.rows += group.rows
        self.gens += gens
        self.counts += counts
        self.last += tokens
        self.next_pos += [length] * G


def _kv(layer: object) -> tuple[Tensor, Tensor]:
    """A plain cache layer's keys and values [B, heads, T, head_dim] (prefill checked that the layers are plain)."""
    keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
    if not isinstance(keys, Tensor) or not isinstance(values, Tensor):
        raise NotImplementedError(f"the continuous engine cannot merge a {type(layer).__name__}")
    return keys, values


def _pad_left(x: Tensor, length: int, dim: int) -> Tensor:
    """x with zeros before it along `dim`, up to `length`."""
    missing = length - x.shape[dim]
    if missing <= 0:
        return x
    shape = list(x.shape)
    shape[dim] = missing
    return torch.cat([torch.zeros(shape, dtype=x.dtype, device=x.device), x], dim)
