"""Near-duplicate top contexts: a corpus that repeats a passage (a licence header, a hex table, a box-drawing
line) would otherwise fill a feature's top contexts with the same window again and again.

Two contexts of one feature are near-identical when, aligned on their marked token, the tokens they share are at
least ``threshold`` of the positions either of them covers. Going down a feature's contexts strongest first, a
context is kept unless it is near-identical to one kept before it; the first ``keep`` kept ones remain. The
harvest keeps more candidates than it shows (HarvestOptions.top_pool) so that up to top_k distinct ones are
left; a pure function of the final state, so a resumed or merged harvest gives the same contexts.

Shapes: E candidate contexts, W positions (before + 1 + after), G features in a block, P candidates per feature.
"""

from __future__ import annotations

import torch
from torch import Tensor

BLOCK_ELEMENTS = 2**24  # entries of one [G, P, P, W] comparison block


def aligned_windows(windows_NT: Tensor, window_E: Tensor, pos_E: Tensor, before: int, after: int) -> Tensor:
    """[E, W] token ids around each marked token (W = before + 1 + after), -1 outside its window."""
    T = windows_NT.shape[1]
    at_EW = pos_E.long()[:, None] + torch.arange(-before, after + 1)
    ids_EW = windows_NT[window_E.long()].gather(1, at_EW.clamp(0, T - 1)).long()
    return ids_EW.masked_fill((at_EW < 0) | (at_EW >= T), -1)


def _similarity(ids_GPW: Tensor) -> Tensor:
    """[G, P, P]: shared tokens over the positions either context covers (0 where neither covers any)."""
    a, b = ids_GPW[:, :, None, :], ids_GPW[:, None, :, :]
    both = (a >= 0) & (b >= 0)
    same = ((a == b) & both).sum(-1)
    either = ((a >= 0) | (b >= 0)).sum(-1)
    return same / either.clamp(min=1)


def distinct(feature_E: Tensor, ids_EW: Tensor, threshold: float, keep: int) -> Tensor:
    """bool [E]: the contexts kept, at most `keep` per feature. Rows are in (feature, strongest first) order."""
    E = len(feature_E)
    out_E = torch.zeros(E, dtype=torch.bool)
    if E == 0:
        return out_E
    _, count_G = torch.unique_consecutive(feature_E, return_counts=True)
    start_G = count_G.cumsum(0) - count_G
    P, W = int(count_G.max()), ids_EW.shape[1]
    rank_E = torch.arange(E) - torch.repeat_interleave(start_G, count_G)
    group_E = torch.repeat_interleave(torch.arange(len(count_G)), count_G)
    step = max(1, BLOCK_ELEMENTS // (P * P * W))
    for g0 in range(0, len(count_G), step):
        rows = (group_E >= g0) & (group_E < g0 + step)
        G = int(min(step, len(count_G) - g0))
        ids_GPW = torch.full((G, P, W), -1, dtype=torch.long)
        valid_GP = torch.zeros(G, P, dtype=torch.bool)
        ids_GPW[group_E[rows] - g0, rank_E[rows]] = ids_EW[rows].long()
        valid_GP[group_E[rows] - g0, rank_E[rows]] = True
        near_GPP = _similarity(ids_GPW) >= threshold
        kept_GP = torch.zeros(G, P, dtype=torch.bool)
        for p in range(P):  # greedy in rank order: only kept contexts make later ones duplicates
            dup_G = (near_GPP[:, p, :p] & kept_GP[:, :p]).any(1)
            kept_GP[:, p] = valid_GP[:, p] & ~dup_G & (kept_GP[:, :p].sum(1) < keep)
        out_E[rows] = kept_GP[group_E[rows] - g0, rank_E[rows]]
    return out_E
