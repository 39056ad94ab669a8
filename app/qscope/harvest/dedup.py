"""Near-duplicate top contexts: a corpus that repeats a passage (a licence header, a hex table, a box-drawing
line) would otherwise fill a feature's top contexts with the same window again and again.

Two contexts of one feature are near-identical when, aligned on their marked token, the tokens they share are at
least ``threshold`` of the positions either of them covers. Going down a feature's contexts strongest first, a
context is kept unless it is near-identical to one kept before it; the first ``keep`` kept ones remain. Only
the features whose contexts share a whole block of positions are compared pairwise (`_suspects`). The
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
    """[G, P, P]: shared tokens over the positions either context covers (0 where neither covers any). One
    elementwise pass over [G, P, P, W] (the equality count); the padding counts are a matmul."""
    W = ids_GPW.shape[-1]
    pad_GPW = ids_GPW < 0
    pads = pad_GPW.float()
    either_GPP = W - pads @ pads.transpose(1, 2)  # positions that are not padding in both
    # padding made unique per row, so that it equals nothing in another row and no token
    rows = torch.arange(ids_GPW.shape[1], device=ids_GPW.device)[None, :, None]
    marked_GPW = torch.where(pad_GPW, -1 - rows, ids_GPW)
    same_GPP = (marked_GPW[:, :, None, :] == marked_GPW[:, None, :, :]).sum(-1)
    return same_GPP / either_GPP.clamp(min=1)


def _suspects(feature_E: Tensor, ids_EW: Tensor, threshold: float) -> Tensor:
    """bool [E]: the rows of features that may hold near-identical contexts. Two contexts that share at least
    `threshold` of W positions differ in at most D = floor((1 - threshold) W) of them, so cut into D + 1 blocks
    of positions they agree on one block whole: a feature none of whose rows shares a block with another row
    has none, and skips the pairwise comparison. Blocks are hashed as sums of token x a random 40-bit weight
    per position (exact in int64: ids < 2^20, at most W terms); a collision only adds a suspect."""
    E, W = ids_EW.shape
    n_blocks = int((1 - threshold) * W) + 1
    if n_blocks > W // 2:  # a low threshold: blocks of one or two tokens match everywhere; compare all
        return torch.ones(E, dtype=torch.bool)
    weight_W = torch.randint(1, 2**40, (W,), generator=torch.Generator().manual_seed(0))
    weights_WB = torch.zeros(W, n_blocks, dtype=torch.long)
    for b, cols in enumerate(torch.arange(W).tensor_split(n_blocks)):
        weights_WB[cols, b] = weight_W[cols]
    hash_EB = (ids_EW.long() + 2) @ weights_WB  # + 2: padding (-1) counts as a token of its own
    where_EB = feature_E.long()[:, None] * n_blocks + torch.arange(n_blocks)  # the same block of one feature
    key = (hash_EB ^ (where_EB * 0x9E3779B1)).reshape(-1)
    ordered = key.sort().values
    repeated = ordered[1:][ordered[1:] == ordered[:-1]].unique()
    shared_E = torch.isin(key, repeated).reshape(E, n_blocks).any(1)
    return torch.isin(feature_E, feature_E[shared_E])


def distinct(feature_E: Tensor, ids_EW: Tensor, threshold: float, keep: int) -> Tensor:
    """bool [E]: the contexts kept, at most `keep` per feature. Rows are in (feature, strongest first) order."""
    E = len(feature_E)
    if E == 0:
        return torch.zeros(0, dtype=torch.bool)
    _, count_G = torch.unique_consecutive(feature_E, return_counts=True)
    out_E = torch.arange(E) - torch.repeat_interleave(count_G.cumsum(0) - count_G, count_G) < keep
    rows = _suspects(feature_E, ids_EW, threshold)
    if rows.any():
        out_E[rows] = _greedy(feature_E[rows], ids_EW[rows], threshold, keep)
    return out_E


def _greedy(feature_E: Tensor, ids_EW: Tensor, threshold: float, keep: int) -> Tensor:
    """distinct() on every row: pairwise similarities per feature, in blocks of features."""
    E = len(feature_E)
    out_E = torch.zeros(E, dtype=torch.bool)
    _, count_G = torch.unique_consecutive(feature_E, return_counts=True)
    start_G = count_G.cumsum(0) - count_G
    P, W = int(count_G.max()), ids_EW.shape[1]
    rank_E = torch.arange(E) - torch.repeat_interleave(start_G, count_G)
    group_E = torch.repeat_interleave(torch.arange(len(count_G)), count_G)
    step = max(1, BLOCK_ELEMENTS // (P * P * W))
    for g0 in range(0, len(count_G), step):
        rows = (group_E >= g0) & (group_E < g0 + step)
        G = int(min(step, len(count_G) - g0))
        ids_GPW = torch.full((G, P, W), -1, dtype=torch.int32)
        valid_GP = torch.zeros(G, P, dtype=torch.bool)
        ids_GPW[group_E[rows] - g0, rank_E[rows]] = ids_EW[rows].int()
        valid_GP[group_E[rows] - g0, rank_E[rows]] = True
        near_GPP = _similarity(ids_GPW) >= threshold
        kept_GP = torch.zeros(G, P, dtype=torch.bool)
        for p in range(P):  # greedy in rank order: only kept contexts make later ones duplicates
            dup_G = (near_GPP[:, p, :p] & kept_GP[:, :p]).any(1)
            kept_GP[:, p] = valid_GP[:, p] & ~dup_G & (kept_GP[:, :p].sum(1) < keep)
        out_E[rows] = kept_GP[group_E[rows] - g0, rank_E[rows]]
    return out_E
