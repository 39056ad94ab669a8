"""Residual-stream statistics shared by discover's baselines (qscope.discover.baselines) and steering's DiffMean
arm (qscope.steer.evaluate.diffmean): which tokens of an example count, an example's residual pooled over them,
the difference of class means, and the mean residual norm (the unit of a raw-direction steer).

The tokens that count are those the harvest ranks: not position 0 (unless it is the only token) and not
high-norm sinks (norm above `sink_norm_ratio` x the median norm of the example's own tokens).

Shapes: B examples in a batch, T positions, D = d_model, E examples in all.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor


def counted_mask(hidden_BTD: Tensor, lengths: Sequence[int], skip_first: bool, sink_norm_ratio: float) -> Tensor:
    """bool [B, T]: real tokens (right-padded rows of `lengths`), minus position 0 and sinks."""
    B, T = hidden_BTD.shape[:2]
    len_B = torch.tensor(lengths, device=hidden_BTD.device)
    real_BT = torch.arange(T, device=hidden_BTD.device)[None, :] < len_B[:, None]
    keep_BT = real_BT.clone()
    if sink_norm_ratio > 0:
        norm_BT = hidden_BTD.float().norm(dim=-1)
        median_B = norm_BT.masked_fill(~real_BT, float("nan")).nanmedian(dim=1).values
        keep_BT &= norm_BT <= sink_norm_ratio * median_B[:, None]
    if skip_first:
        keep_BT[:, 0] &= len_B <= 1  # position 0 counts only when it is the whole example
    return keep_BT


def pooled_mean(hidden_BTD: Tensor, counted_BT: Tensor) -> Tensor:
    """float32 [B, D]: each row's residual averaged over its counted tokens (zeros for a row with none)."""
    h_BTD = hidden_BTD.float()
    return (h_BTD * counted_BT[..., None]).sum(1) / counted_BT.sum(1).clamp(min=1)[:, None]


def mean_difference(H_ED: np.ndarray, y_E: np.ndarray) -> np.ndarray:
    """DiffMean: float32 [D], the mean of the examples labelled 1 minus the mean of those labelled 0."""
    H, y = np.asarray(H_ED, np.float64), np.asarray(y_E)
    if not (y == 1).any() or not (y == 0).any():
        raise ValueError("a difference of means needs examples of both labels")
    return (H[y == 1].mean(0) - H[y == 0].mean(0)).astype(np.float32)
