"""Per-feature facts that come from weights and top contexts: logit effects, neighbors, automatic labels.

- logit effects: the top and bottom tokens of ``W_dec[f] @ W_U`` (W_U = the LM head weight [V, D]; no final
  norm, as SAEDashboard), computed in chunks of features so [chunk, V] stays small and on the device;
- neighbors: the nearest features by decoder cosine, within the SAE (self excluded) or in another SAE
  (blocked, in qscope.harvest.neighbors);
- labels: a short scannable line from the tokens most often at the max of the top contexts and the top
  logit tokens, each read from its bytes with whitespace made visible ("·the ·a → ·cat ·dog", "·日 → 本").

Shapes: F features, D d_model, V vocabulary, L tokens per side, N neighbors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from qscope.harvest.neighbors import Neighbors, mutual_nearest
from qscope.tokens import characters_of, is_whole, show_bytes, visible

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


def label_token(token: str | bytes) -> str:
    """A token as a label shows it: its text on its own (a token's raw bytes as qscope.tokens.show_bytes reads
    them: a byte of a partial character as '<0xE2>', never U+FFFD), whitespace made visible, long tokens cut,
    empty as '∅'."""
    return visible(show_bytes(token) if isinstance(token, bytes) else token, LABEL_TOKEN_CHARS)


def make_label(
    marked: list[int],
    logit_ids: list[int],
    vocab: Sequence[str | bytes],
    n: int = 3,
    at_max: Mapping[int, str] | None = None,
) -> str:
    """'·the ·a → ·cat ·dog': tokens most often at the max, then the tokens the feature promotes. at_max: the
    text to show for a marked token that holds part of a character (the character it is part of in its top
    context, marked_texts), so a feature firing on half of '日' reads '日', not its bytes."""
    if not marked:
        return "dead"
    at_max = at_max or {}

    def show(ids: list[int], texts: Mapping[int, str]) -> str:
        return " ".join(
            label_token(texts[i] if i in texts else vocab[i] if 0 <= i < len(vocab) else b"") for i in ids[:n]
        )

    shown = show(marked, at_max)
    return f"{shown} → {show(logit_ids, {})}" if logit_ids else shown


def marked_texts(
    feature_E: Sequence[int],
    ids_EW: np.ndarray,
    pos_E: Sequence[int],
    length_E: Sequence[int],
    vocab: Sequence[str | bytes],
) -> dict[tuple[int, int], str]:
    """(feature, token id) -> the characters the marked token is part of in its context (qscope.tokens
    characters_of), for the marked tokens that hold part of a character; the first context with it wins."""
    raw = [v if isinstance(v, bytes) else v.encode() for v in vocab]
    partial = np.array([not is_whole(b) for b in raw] + [False], dtype=bool)  # ids past the vocab: not partial
    at_E = ids_EW[np.arange(len(pos_E)), np.asarray(pos_E)]
    out: dict[tuple[int, int], str] = {}
    for e in np.flatnonzero(partial[np.minimum(at_E, len(raw))]).tolist():
        key = (int(feature_E[e]), int(at_E[e]))
        if key not in out:
            window = [raw[t] if 0 <= t < len(raw) else b"" for t in ids_EW[e, : length_E[e]].tolist()]
            out[key] = characters_of(window, int(pos_E[e]))
    return out
