"""Nearest features by decoder cosine, by blocked top-k over normalised decoder rows, each product used twice.

For two SAEs a [F, D] and b [G, D] the cosines are one [F, G] product, computed block by block ([block, block]
at a time, on the decoders' device) and never held whole. Each block gives both directions: its rows' top-k
are a's nearest features in b, its columns' top-k are b's nearest features in a; running top-k lists are merged
block by block, so only [F, n] values and indices are kept. Within one SAE (a is b) only the blocks on and
above the diagonal are computed: half the product. `PairCache` keeps the direction not asked for yet (b's
nearest in a) until b's turn comes, so every product of a harvest is computed once.

Shapes: F, G features, D d_model, N neighbors, R, C rows and columns of a block.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as nnf
from torch import Tensor

BLOCK_ELEMENTS = {"cuda": 2**26, "cpu": 2**22}  # entries of one [R, C] block of cosines (16 MB in fp32 on a CPU)


@dataclass
class Neighbors:
    ids_FN: Tensor  # int64 feature index in the other SAE, nearest first
    cos_FN: Tensor  # float32 cosine


def block_size(device: torch.device) -> int:
    return int(BLOCK_ELEMENTS.get(device.type, BLOCK_ELEMENTS["cpu"]) ** 0.5)


class _TopN:
    """Running top-n (value, index) per row of F rows, merged block by block."""

    def __init__(self, rows: int, n: int, device: torch.device) -> None:
        self.vals_FN = torch.full((rows, n), -torch.inf, device=device)
        self.ids_FN = torch.full((rows, n), -1, dtype=torch.int64, device=device)

    def merge(self, r0: int, sim_RC: Tensor, c0: int) -> None:
        n = self.vals_FN.shape[1]
        if n == 0:
            return
        top = sim_RC.topk(min(n, sim_RC.shape[1]), dim=1)
        rows = slice(r0, r0 + sim_RC.shape[0])
        vals = torch.cat([self.vals_FN[rows], top.values], dim=1)
        ids = torch.cat([self.ids_FN[rows], top.indices + c0], dim=1)
        best = vals.topk(n, dim=1)
        self.vals_FN[rows], self.ids_FN[rows] = best.values, ids.gather(1, best.indices)

    def result(self, n: int) -> Neighbors:
        return Neighbors(self.ids_FN[:, :n].cpu(), self.vals_FN[:, :n].float().cpu())


@torch.no_grad()
def mutual_nearest(
    W_a_FD: Tensor,
    W_b_GD: Tensor | None,
    n_ab: int,
    n_ba: int = 0,
    advance: Callable[[float], None] | None = None,
    block: int | None = None,
) -> tuple[Neighbors, Neighbors | None]:
    """(a's n_ab nearest in b, b's n_ba nearest in a) by decoder cosine. W_b_GD None: within a (a feature is not
    its own neighbor; the second result is None). advance(fraction of the work) after each row of blocks."""
    dev = W_a_FD.device
    a_FD = nnf.normalize(W_a_FD.float(), dim=1)
    same = W_b_GD is None
    b_GD = a_FD if W_b_GD is None else nnf.normalize(W_b_GD.to(device=dev, dtype=torch.float32), dim=1)
    F, G = a_FD.shape[0], b_GD.shape[0]
    n_ab = max(0, min(n_ab, G - (1 if same else 0)))
    n_ba = 0 if same else max(0, min(n_ba, F))
    rows, cols = _TopN(F, n_ab, dev), _TopN(G, n_ba, dev)
    step = block or block_size(dev)
    starts = list(range(0, F, step))
    work = sum(len(range(r0 if same else 0, G, step)) for r0 in starts)
    for r0 in starts:
        a_RD = a_FD[r0 : r0 + step]
        c_first = r0 if same else 0
        for c0 in range(c_first, G, step):
            sim_RC = a_RD @ b_GD[c0 : c0 + step].T
            if same and c0 == r0:
                diag = torch.arange(min(sim_RC.shape), device=dev)
                sim_RC[diag, diag] = -torch.inf
            rows.merge(r0, sim_RC, c0)
            if same and c0 > r0:
                rows.merge(c0, sim_RC.T, r0)  # the block below the diagonal is this one transposed
            elif not same and n_ba:
                cols.merge(c0, sim_RC.T, r0)
        if advance is not None:
            advance(len(range(c_first, G, step)) / max(work, 1))
    return rows.result(n_ab), (None if same else cols.result(n_ba))


class PairCache:
    """Nearest features between the SAEs of one harvest, each product computed once: asking for a's nearest in
    b also keeps b's nearest in a (n_other of them) for when b asks."""

    def __init__(self) -> None:
        self._kept: dict[tuple[str, str], Neighbors] = {}

    def nearest(
        self,
        a: tuple[str, Tensor],
        b: tuple[str, Tensor],
        n: int,
        n_other: int,
        advance: Callable[[float], None] | None = None,
    ) -> Neighbors:
        """a = (sae_id, W_dec): a's n nearest features in b (within a when the ids are equal)."""
        (id_a, W_a), (id_b, W_b) = a, b
        if id_a == id_b:
            found, _ = mutual_nearest(W_a, None, n, advance=advance)
            return found
        kept = self._kept.pop((id_a, id_b), None)
        if kept is not None and kept.ids_FN.shape[1] >= min(n, W_b.shape[0]):
            if advance is not None:
                advance(1.0)
            return Neighbors(kept.ids_FN[:, :n], kept.cos_FN[:, :n])
        # the product is always taken with the lower sae_id as rows, so that the same pair gives the same bits
        # whichever SAE asks first (the sharded harvest finishes in sae_id order, the single process in job order)
        if id_a < id_b:
            found, other = mutual_nearest(W_a, W_b, n, n_other, advance=advance)
        else:
            other, back = mutual_nearest(W_b, W_a, n_other, n, advance=advance)
            assert back is not None, "mutual_nearest of two SAEs gives both directions"
            found = back
        if other is not None and n_other:
            self._kept[(id_b, id_a)] = other
        return found
