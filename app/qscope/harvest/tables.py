"""The feature store's columns (qscope.store.writer) from the harvest's final states, weights and tokens:
feature statistics and labels, top and interval contexts (token ids cut from the corpus windows, activations
from the state), logit effects and decoder-cosine neighbors, within the SAE and in the SAEs of the nearest other
layers of the same run (the nearest below, the nearest above, and other SAEs of the same layer).
qscope.harvest.build puts them together phase by phase.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from qscope.harvest.dedup import aligned_windows, distinct
from qscope.harvest.effects import LogitEffects
from qscope.harvest.neighbors import Neighbors
from qscope.harvest.state import FeatureState, top_key
from qscope.store.writer import Columns

MARKED_TOKENS = 5  # features.top_tokens: token ids most often at the max of the top contexts


def context_columns(state: FeatureState, windows_NT: Tensor, top_k: int | None = None, dedup: float = 0.0) -> Columns:
    """Rows of `contexts` for one SAE, sorted by (feature, kind, bin, rank); see qscope.store.writer. With
    dedup > 0, near-identical top contexts count once and top_k distinct ones remain (qscope.harvest.dedup)."""
    spec, nb = state.spec, state.spec.n_bins
    f_top, _, top = state.top.entries()  # in (feature, rank) order
    f_top, top = f_top.cpu(), {k: v.cpu() for k, v in top.items()}
    if dedup > 0:
        ids_EW = aligned_windows(windows_NT, top["window"], top["pos"], spec.before, spec.after)
        kept = distinct(f_top, ids_EW, dedup, top_k or spec.top_k)
        f_top, top = f_top[kept], {k: v[kept] for k, v in top.items()}
    seg_int, _, inter = state.interval.entries()
    seg_int, inter = seg_int.cpu(), {k: v.cpu() for k, v in inter.items()}
    order = top_key(inter["act"], inter["window"]).argsort(stable=True)  # strongest first within a bin
    order = order[seg_int[order].argsort(stable=True)]
    seg_int, inter = seg_int[order], {k: v[order] for k, v in inter.items()}
    rank_top, rank_int = _rank_within(f_top), _rank_within(seg_int)

    def cat(a: Tensor, b: Tensor) -> Tensor:
        return torch.cat([a, b])

    feature = cat(f_top, seg_int // nb)
    by_f = feature.argsort(stable=True)  # top rows stay before interval rows of a feature
    cols = {
        "feature": feature,
        "kind": cat(torch.zeros_like(f_top), torch.ones_like(seg_int)),
        "bin": cat(torch.full_like(f_top, -1), seg_int % nb),
        "rank": cat(rank_top, rank_int),
        **{k: cat(top[k], inter[k]) for k in top},
    }
    cols = {k: v[by_f] for k, v in cols.items()}
    pos, window, acts_EW = cols.pop("pos").long(), cols.pop("window"), cols.pop("acts")
    T, W = spec.ctx, spec.width
    lo = (pos - spec.before).clamp(min=0)
    length = (pos + spec.after + 1).clamp(max=T) - lo
    cols["pos"] = pos - lo  # position of the marked token within token_ids
    cols["window"], cols["length"] = window, length
    shift = lo - (pos - spec.before)  # padding in front of the payload window
    cols["acts"] = acts_EW.gather(1, (shift[:, None] + torch.arange(W)).clamp(max=W - 1))
    cols["token_ids"] = windows_NT[window].gather(1, (lo[:, None] + torch.arange(W)).clamp(max=T - 1))
    dtypes = {
        "feature": np.int32,
        "kind": np.int8,
        "bin": np.int32,
        "rank": np.int32,
        "act": np.float32,
        "window": np.int64,
        "pos": np.int32,
        "length": np.int32,
        "acts": np.float32,
        "token_ids": np.int32,
    }
    return {k: v.numpy().astype(dtypes[k]) for k, v in cols.items()}


def _rank_within(group_E: Tensor) -> Tensor:
    """0, 1, 2, ... within each run of equal values of a sorted tensor."""
    _, count = torch.unique_consecutive(group_E, return_counts=True)
    return torch.arange(len(group_E)) - torch.repeat_interleave(count.cumsum(0) - count, count)


def feature_columns(state: FeatureState, labels: list[str], marked_FN: Tensor) -> Columns:
    n_fired = state.n_fired_F.cpu()
    fired = n_fired > 0
    return {
        "feature": np.arange(state.spec.d_sae, dtype=np.int32),
        "density": (n_fired.double() / max(state.n_tokens, 1)).numpy(),
        "mean_act": torch.where(fired, state.sum_F.cpu() / n_fired.clamp(min=1), 0.0).numpy(),
        "max_act": state.max_F.cpu().double().numpy(),
        "n_fired": n_fired.numpy(),
        "label": np.array(labels, dtype=object),
        "top_tokens": marked_FN.numpy().astype(np.int32),
        "hist": state.hist_FH.cpu().numpy(),
        "interval_width": (state.scale_F.cpu().double() / state.spec.n_bins).numpy(),
    }


def logit_columns(eff: LogitEffects) -> Columns:
    F, L = eff.top_ids_FL.shape
    feature = np.repeat(np.arange(F, dtype=np.int32), 2 * L)
    sign = np.tile(np.repeat(np.array([1, -1], dtype=np.int8), L), F)
    rank = np.tile(np.arange(L, dtype=np.int32), 2 * F)
    ids = torch.cat([eff.top_ids_FL, eff.bottom_ids_FL], dim=1).reshape(-1).numpy().astype(np.int32)
    vals = torch.cat([eff.top_vals_FL, eff.bottom_vals_FL], dim=1).reshape(-1).numpy().astype(np.float32)
    return {"feature": feature, "sign": sign, "rank": rank, "token_id": ids, "value": vals}


def neighbor_columns(found: Sequence[tuple[str, Neighbors]]) -> Columns:
    parts: list[Columns] = []
    for other_sae_id, nb in found:
        F, N = nb.ids_FN.shape
        if N == 0:
            continue
        parts.append(
            {
                "feature": np.repeat(np.arange(F, dtype=np.int32), N),
                "other_sae_id": np.full(F * N, other_sae_id, dtype=object),
                "other_feature": nb.ids_FN.reshape(-1).numpy().astype(np.int32),
                "cosine": nb.cos_FN.reshape(-1).numpy().astype(np.float32),
                "rank": np.tile(np.arange(N, dtype=np.int32), F),
            }
        )
    if not parts:
        return {}
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def neighbor_saes(layers: Sequence[int | None], i: int) -> list[int]:
    """Indices of the other SAEs whose neighbors SAE i lists: same layer, nearest layer below and above."""
    me = layers[i]
    if me is None:
        return []
    others = {j: layer for j, layer in enumerate(layers) if j != i and layer is not None}
    below = [layer for layer in others.values() if layer < me]
    above = [layer for layer in others.values() if layer > me]
    wanted = {me, max(below, default=me), min(above, default=me)}
    return [j for j, layer in others.items() if layer in wanted]
