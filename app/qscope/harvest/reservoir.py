"""Segmented reservoirs: keep the R entries with the smallest keys in each of S segments, updated in batches.

One primitive serves both per-feature rankings of the harvest:

- top-k contexts: segment = feature, key = an order-preserving int64 of (-activation, window);
- interval samples: segment = feature * bins + bin, key = a uniform random int64 (priority sampling: the R
  smallest of i.i.d. uniform keys are a uniform sample without replacement of the segment's entries).

Because "the R smallest keys of a union" equals "the R smallest of the parts' R smallest", the result does not
depend on how entries are split into batches or in which order they arrive, and two reservoirs merge exactly.
Keys must be unique within a segment (top keys are by construction; 62-bit random keys collide with negligible
probability); EMPTY marks a free slot.

State: ``keys_SR`` int64 [S, R], each row sorted ascending, ``slot_SR`` (rank -> physical slot) and payload
tensors [S, R, ...] by physical slot (e.g. the window of activations around a token), all on one device.
Everything is vectorised: an update sorts only the entries that beat their segment's current R-th key, so once
the reservoirs fill up most entries are dropped by one gather and one comparison, and it writes the payload of
the entries that come in only: kept rows never move.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor

EMPTY = torch.iinfo(torch.int64).max  # key of a free slot; every real key is smaller

PayloadFn = Callable[[Tensor], Mapping[str, Tensor]]  # entry indices [E] -> {name: [E, ...]}


class Reservoir:
    """S segments of R slots: per segment, the R entries with the smallest keys seen so far.

    keys_SR holds each segment's keys in rank order (ascending); a payload row is stored once, in a physical
    slot that does not move while it stays in: slot_SR maps rank -> physical slot, so an update writes only
    the payload of the entries that come in, never reshuffles the rows it keeps.
    """

    def __init__(
        self,
        n_segments: int,
        r: int,
        payload: Mapping[str, tuple[tuple[int, ...], torch.dtype]],
        device: torch.device | str = "cpu",
    ) -> None:
        self.keys_SR = torch.full((n_segments, r), EMPTY, dtype=torch.int64, device=device)
        self.slot_SR = torch.arange(r, device=device).repeat(n_segments, 1)
        self.thresh_S = torch.full((n_segments,), EMPTY, dtype=torch.int64, device=device)  # the R-th key
        self.payload = {
            name: torch.zeros((n_segments, r, *shape), dtype=dtype, device=device)
            for name, (shape, dtype) in payload.items()
        }

    @property
    def r(self) -> int:
        return self.keys_SR.shape[1]

    @property
    def n_segments(self) -> int:
        return self.keys_SR.shape[0]

    def offer(self, seg_M: Tensor, key_M: Tensor, payload_fn: PayloadFn) -> int:
        """Offer M entries (segment ids, unique keys); payload_fn(idx) builds the payload of the entries at
        indices idx [E] of the offer, and is called once, only for those that make it in. Returns E."""
        idx_E = (key_M < self.thresh_S[seg_M]).nonzero().squeeze(1)  # beats the segment's R-th key
        if idx_E.numel() == 0:
            return 0
        seg_E, key_E = seg_M[idx_E], key_M[idx_E]
        # sort by (segment, key): stable sort by key, then stable sort by segment
        order_E = key_E.argsort(stable=True)
        order_E = order_E[seg_E[order_E].argsort(stable=True)]
        seg_E, key_E, idx_E = seg_E[order_E], key_E[order_E], idx_E[order_E]
        # rank of each entry among the new ones of its segment; only the first R can make it in
        useg_U, count_U = torch.unique_consecutive(seg_E, return_counts=True)
        u_E = torch.repeat_interleave(torch.arange(len(useg_U), device=seg_E.device), count_U)
        start_U = count_U.cumsum(0) - count_U
        rank_E = torch.arange(len(seg_E), device=seg_E.device) - start_U[u_E]
        first_E = rank_E < self.r
        u_E, rank_E, key_E, idx_E = u_E[first_E], rank_E[first_E], key_E[first_E], idx_E[first_E]
        keep_E, phys_E = self._merge_keys(useg_U, u_E, rank_E, key_E)
        new = payload_fn(idx_E[keep_E])
        rows_E = useg_U[u_E[keep_E]]
        for name, store in self.payload.items():
            store[rows_E, phys_E] = new[name].to(store.dtype)
        return int(keep_E.sum())

    def _merge_keys(self, useg_U: Tensor, u_E: Tensor, rank_E: Tensor, key_E: Tensor) -> tuple[Tensor, Tensor]:
        """Merge sorted new keys (row u_E, new rank rank_E) into rows useg_U, keeping the R smallest of the 2R
        candidates. Returns which new entries are kept [E] and the physical slot each takes [E kept]: the
        slots of the old entries (or free slots) they push out."""
        r = self.r
        old_key_UR, old_slot_UR = self.keys_SR[useg_U], self.slot_SR[useg_U]
        cand_key_UC = torch.cat([old_key_UR, torch.full_like(old_key_UR, EMPTY)], dim=1)
        cand_key_UC[u_E, r + rank_E] = key_E
        sorted_UC, order_UC = cand_key_UC.sort(dim=1, stable=True)
        kept_UC = torch.zeros_like(cand_key_UC, dtype=torch.bool).scatter_(1, order_UC[:, :r], True)
        # the new entries that stay are the smallest new ones: a prefix of each row's new ranks
        n_new_U = kept_UC[:, r:].sum(1)
        keep_E = rank_E < n_new_U[u_E]
        # the i-th kept new entry of a row takes the i-th pushed-out old slot of that row
        out_first_UR = kept_UC[:, :r].to(torch.int8).argsort(dim=1, stable=True)
        free_UR = old_slot_UR.gather(1, out_first_UR)
        phys_E = free_UR[u_E[keep_E], rank_E[keep_E]]
        cand_slot_UC = torch.cat([old_slot_UR, torch.zeros_like(old_slot_UR)], dim=1)
        cand_slot_UC[u_E[keep_E], r + rank_E[keep_E]] = phys_E
        self.keys_SR[useg_U] = sorted_UC[:, :r]
        self.slot_SR[useg_U] = cand_slot_UC.gather(1, order_UC[:, :r])
        self.thresh_S[useg_U] = sorted_UC[:, r - 1]
        return keep_E, phys_E

    def entries(self, segs: Tensor | None = None) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """The filled slots of `segs` (all when None) in (segment, rank) order:
        (segment [E], key [E], {name: payload [E, ...]})."""
        segs = torch.arange(self.n_segments, device=self.keys_SR.device) if segs is None else segs
        keys_GR = self.keys_SR[segs]
        g_E, rank_E = (keys_GR != EMPTY).nonzero(as_tuple=True)
        seg_E = segs[g_E]
        phys_E = self.slot_SR[seg_E, rank_E]
        payload = {name: store[seg_E, phys_E] for name, store in self.payload.items()}
        return seg_E, keys_GR[g_E, rank_E], payload

    def clear(self, segs: Tensor) -> None:
        """Free every slot of `segs`."""
        self.keys_SR[segs] = EMPTY
        self.thresh_S[segs] = EMPTY
        for store in self.payload.values():
            store[segs] = 0

    def offer_entries(self, seg_E: Tensor, key_E: Tensor, payload: Mapping[str, Tensor]) -> int:
        """offer() for entries whose payload is already built (e.g. taken from another reservoir)."""
        return self.offer(seg_E, key_E, lambda idx: {name: t[idx] for name, t in payload.items()})

    def ranked_payload(self) -> dict[str, Tensor]:
        """Every payload [S, R, ...] in rank order (slot r = the r-th smallest key; zeros where empty)."""
        filled_SR = self.keys_SR != EMPTY
        rows_S1 = torch.arange(self.n_segments, device=self.keys_SR.device)[:, None]
        out = {}
        for name, store in self.payload.items():
            ranked = store[rows_S1, self.slot_SR]
            out[name] = ranked * filled_SR.view(*filled_SR.shape, *([1] * (ranked.dim() - 2))).to(ranked.dtype)
        return out

    def state_dict(self) -> dict[str, Tensor]:
        """The reservoir in rank order: equal states give equal dicts, whatever order entries came in."""
        return {"keys": self.keys_SR, **{f"payload.{k}": v for k, v in self.ranked_payload().items()}}

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        device = self.keys_SR.device
        if tuple(state["keys"].shape) != tuple(self.keys_SR.shape):
            raise ValueError(f"reservoir shape {tuple(state['keys'].shape)} != {tuple(self.keys_SR.shape)}")
        self.keys_SR = state["keys"].to(device).clone()
        self.slot_SR = torch.arange(self.r, device=device).repeat(self.n_segments, 1)
        self.thresh_S = self.keys_SR[:, -1].contiguous()
        self.payload = {name: state[f"payload.{name}"].to(device).clone() for name in self.payload}
