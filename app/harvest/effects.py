"""Per-feature facts that come from weights and top contexts: logit effects, neighbors, automatic labels.

- logit effects: the top and bottom tokens of ``W_dec[f] @ W_U`` (W_U = the LM head weight [V, D]; no final
  norm, as SAEDashboard), computed in chunks of features so [chunk, V] stays small and on the device;
- neighbors: the nearest features by decoder cosine, within the SAE (self excluded) or in another SAE
  (blocked, in qscope.harvest.neighbors);
- labels: a short scannable line from the tokens most often at the max of the top contexts and the top
  logit tokens, with whitespace made visible ("·the ·a → ·cat ·dog").

Shapes: F features, D d_model, V vocabulary, L tokens per side, N neighbors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from qscope.harvest.neighbors import Neighbors, mutual_nearest
from qscope.tokens import visible

CHUNK_ELEMENTS = {"cuda": 2**28, "cpu": 2**25}  # entries of one [chunk, V] block (128 MB in fp32 on a CPU)


@dataclass
class LogitEffects:
    top_ids_FL: Tensor  # int64, strongest positive first
    top_vals_FL: Tensor  # float32
    bottom_ids_FL: Tensor  # strongest negative first
    bottom_vals_FL: Tensor


@torch.no_grad()
def logit_effects(
    W_dec_FD: Tensor, W_U_VD: Tensor, n: int = 20, advance: Callable[[float], None] | None = None
) -> LogitEffects:
    """Top and bottom n tokens of W_dec[f] @ W_U.T for every feature, on W_dec's device: each [chunk, V] block
    stays there and only its top-k leaves. advance(features done) after each chunk."""
    W_U_VD = W_U_VD.to(device=W_dec_FD.device, dtype=torch.float32)
    V = W_U_VD.shape[0]
    n = min(n, V)
    budget = CHUNK_ELEMENTS.get(W_dec_FD.device.type, CHUNK_ELEMENTS["cpu"])
    step = max(1, budget // max(V, 1))
    parts: list[tuple[Tensor, ...]] = []
    for start in range(0, W_dec_FD.shape[0], step):
        eff_CV = W_dec_FD[start : start + step].float() @ W_U_VD.T
        top, bottom = eff_CV.topk(n, dim=1), eff_CV.topk(n, dim=1, largest=False)
        parts.append((top.indices, top.values, bottom.indices, bottom.values))
        if advance is not None:
            advance(eff_CV.shape[0])
    cols = [torch.cat(col).cpu() for col in zip(*parts, strict=True)]
    return LogitEffects(*cols)


def nearest(W_a_FD: Tensor, W_b_GD: Tensor, n: int, same: bool) -> Neighbors:
    """The n features of b whose decoder directions are closest (cosine) to each feature of a.
    same: a and b are one SAE, so a feature is not its own neighbor (qscope.harvest.neighbors)."""
    found, _ = mutual_nearest(W_a_FD, None if same else W_b_GD, n)
    return found


def top_marked_tokens(feature_E: Tensor, token_E: Tensor, n_features: int, n: int = 5) -> Tensor:
    """[F, n] token ids (-1 pads) most often at the marked position of each feature's top contexts; ties go
    to the token seen first. Entries come in (feature, rank) order."""
    out_FN = torch.full((n_features, n), -1, dtype=torch.int64)
    if feature_E.numel() == 0:
        return out_FN
    width = int(token_E.max()) + 1
    pair_E = feature_E.long() * width + token_E.long()
    pair_P, inv_E, count_P = torch.unique(pair_E, return_inverse=True, return_counts=True)
    first_P = torch.full_like(pair_P, len(pair_E)).scatter_reduce_(0, inv_E, torch.arange(len(pair_E)), "amin")
    order = first_P.argsort(stable=True)
    order = order[(-count_P[order]).argsort(stable=True)]
    order = order[(pair_P[order] // width).argsort(stable=True)]
    f_P, tok_P = pair_P[order] // width, pair_P[order] % width
    _, per_f = torch.unique_consecutive(f_P, return_counts=True)
    rank_P = torch.arange(len(f_P)) - torch.repeat_interleave(per_f.cumsum(0) - per_f, per_f)
    keep = rank_P < n
    out_FN[f_P[keep], rank_P[keep]] = tok_P[keep]
    return out_FN


LABEL_TOKEN_CHARS = 12  # a label cuts longer tokens


def label_token(token: str) -> str:
    """A token as a label shows it: whitespace made visible, long tokens cut, empty as '∅'."""
    return visible(token, LABEL_TOKEN_CHARS)


def make_label(marked: list[int], logit_ids: list[int], vocab: Sequence[str], n: int = 3) -> str:
    """'·the ·a → ·cat ·dog': tokens most often at the max, then the tokens the feature promotes."""
    if not marked:
        return "dead"

    def show(ids: list[int]) -> str:
        return " ".join(label_token(vocab[i] if 0 <= i < len(vocab) else "") for i in ids[:n])

    return f"{show(marked)} → {show(logit_ids)}" if logit_ids else show(marked)
