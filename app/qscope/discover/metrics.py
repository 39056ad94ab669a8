"""Classification metrics, pure numpy: AUROC from ranks (many features at once), the F1-best threshold,
and precision / recall / F1 from a confusion matrix.

AUROC is the Mann-Whitney statistic: the chance that a random positive scores above a random negative, ties
counting one half. With the ranks of a column (ties averaged), it is
(sum of the positives' ranks - n1 (n1 + 1) / 2) / (n1 n0); the ranks do not depend on the labels, so a
label-shuffle control re-uses them and costs one matrix-vector product per shuffle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

RANK_COLUMNS = 1024  # columns ranked at a time: between two blocks a long ranking can be cancelled (~1 s at most)


def column_ranks(X_EF: np.ndarray, check: Callable[[], None] | None = None) -> np.ndarray:
    """Ranks 1..E down each column, ties averaged, float32 (exact: halves below 2^23). With `check`, ranked a
    block of columns at a time, calling `check()` between blocks (it raises to stop: a cancelled discovery)."""
    if check is None or X_EF.ndim != 2 or X_EF.shape[1] <= RANK_COLUMNS:
        return rankdata(X_EF, axis=0, method="average").astype(np.float32)
    out = np.empty(X_EF.shape, dtype=np.float32)
    for start in range(0, X_EF.shape[1], RANK_COLUMNS):
        check()
        block = X_EF[:, start : start + RANK_COLUMNS]
        out[:, start : start + RANK_COLUMNS] = rankdata(block, axis=0, method="average")
    return out


def auroc_from_ranks(ranks_EF: np.ndarray, y_E: np.ndarray) -> np.ndarray:
    """AUROC of every column for labels y (1 positive); NaN when a class is missing."""
    y = np.asarray(y_E, dtype=np.float32)
    n1 = float(y.sum())
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        return np.full(ranks_EF.shape[1], np.nan, np.float32)
    return ((y @ ranks_EF) - n1 * (n1 + 1) / 2) / (n1 * n0)


def auroc(scores_E: np.ndarray, y_E: np.ndarray) -> float:
    """AUROC of one score vector."""
    scores = np.asarray(scores_E, dtype=np.float64).reshape(-1, 1)
    return float(auroc_from_ranks(column_ranks(scores), y_E)[0])


def null_auroc_sd(n_pos: int, n_neg: int) -> float:
    """Standard deviation of one feature's AUROC under random labels (Mann-Whitney, no ties)."""
    return float(np.sqrt((n_pos + n_neg + 1) / (12.0 * n_pos * n_neg))) if n_pos and n_neg else float("nan")


@dataclass
class Thresholds:
    """Per column: the threshold t whose rule `value > t` gives the best F1 on the data it was fitted on."""

    threshold: np.ndarray  # float32 [F]
    f1: np.ndarray  # float32 [F] that best F1


def best_thresholds(X_EF: np.ndarray, y_E: np.ndarray) -> Thresholds:
    """The F1-best cut of every column, between two distinct values (their midpoint). A column whose best
    rule fires on nothing gets its max as threshold and F1 0."""
    E, F = X_EF.shape
    y = np.asarray(y_E, dtype=bool)
    n_pos = int(y.sum())
    order_EF = np.argsort(-X_EF, axis=0, kind="stable")
    sorted_EF = np.take_along_axis(X_EF, order_EF, axis=0)
    tp_EF = np.cumsum(y[order_EF], axis=0, dtype=np.int32)  # predicting the top i+1 rows positive
    k_E = np.arange(1, E + 1, dtype=np.int32)[:, None]
    f1_EF = 2.0 * tp_EF / (k_E + n_pos)  # 2TP / (2TP + FP + FN) = 2TP / (predicted + actual)
    cut_ok_EF = np.ones_like(f1_EF, dtype=bool)
    cut_ok_EF[:-1] = sorted_EF[:-1] > sorted_EF[1:]  # a cut only between distinct values
    cut_ok_EF[-1] = False  # firing on everything: no threshold below the min (it would not generalise)
    f1_EF = np.where(cut_ok_EF, f1_EF, -1.0)
    best_F = f1_EF.argmax(axis=0)
    cols = np.arange(F)
    best_f1 = f1_EF[best_F, cols]
    upper, lower = sorted_EF[best_F, cols], sorted_EF[np.minimum(best_F + 1, E - 1), cols]
    threshold = np.where(best_f1 >= 0, (upper + lower) / 2.0, sorted_EF[0])
    return Thresholds(threshold.astype(np.float32), np.maximum(best_f1, 0.0).astype(np.float32))


def f1_at(X_EF: np.ndarray, y_E: np.ndarray, threshold_F: np.ndarray) -> np.ndarray:
    """F1 of the rules `value > threshold` per column."""
    y = np.asarray(y_E, dtype=bool)
    fire_EF = X_EF > threshold_F[None, :]
    tp = (fire_EF & y[:, None]).sum(0)
    denom = fire_EF.sum(0) + y.sum()
    return np.where(denom > 0, 2.0 * tp / np.maximum(denom, 1), 0.0).astype(np.float32)


@dataclass
class Confusion:
    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    @property
    def f1(self) -> float | None:
        p, r = self.precision, self.recall
        if p is None or r is None:
            return None
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def accuracy(self) -> float:
        n = self.tp + self.fp + self.fn + self.tn
        return (self.tp + self.tn) / n if n else float("nan")


def confusion(fired_E: np.ndarray, y_E: np.ndarray) -> Confusion:
    fired, y = np.asarray(fired_E, dtype=bool), np.asarray(y_E, dtype=bool)
    return Confusion(int((fired & y).sum()), int((fired & ~y).sum()), int((~fired & y).sum()), int((~fired & ~y).sum()))
