"""Rank features by how well they tell two example sets apart, chosen on train, judged on test, with controls.

Input: every example's max-pooled (and mean-pooled) activation of every feature, float32 [E, F] (all SAEs side by
side), labels and a train/test split. Only features that fire on some example are ranked (a silent one has AUROC
1/2 everywhere). Features are ordered by train AUROC (a feature of set A first; those of set B are the other end);
each shown one gets the F1-best train threshold and that rule's F1 on test. Two controls say what chance looks
like: the test AUROC of random live features, and the whole selection redone with shuffled labels (the top
feature of each shuffle, judged on test, should sit near 1/2: its spread is the yardstick).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from qscope.discover.metrics import auroc_from_ranks, best_thresholds, column_ranks, f1_at, null_auroc_sd


@dataclass
class FeatureScore:
    sae_id: str
    feature: int
    train_auroc: float
    test_auroc: float
    threshold: float  # F1-best on train, for the rule `max activation > threshold`
    train_f1: float
    test_f1: float
    mean_a: float  # mean over train examples of set A of the max activation
    mean_b: float
    mean_diff: float  # mean_a - mean_b
    mean_pooled_diff: float  # the same with mean pooling
    test_auroc_mean_pooled: float
    fires_a: float  # share of set A's examples (all) where it fires at all
    fires_b: float
    strip: list[float] = field(default_factory=list)  # max activation on every example, in the set's order


@dataclass
class Baseline:
    """Test AUROC of random live features (the chance level of a feature picked without looking)."""

    n: int
    mean: float
    p95: float
    max: float


@dataclass
class ShuffleControl:
    """The selection redone with shuffled labels: each shuffle's top-on-train feature, and its test AUROC."""

    n: int
    train_aurocs: list[float]
    test_aurocs: list[float]
    test_mean: float
    test_sd: float  # spread over the shuffles
    null_sd: float  # the spread one feature's test AUROC has under random labels, by formula


@dataclass
class Ranking:
    a_side: list[FeatureScore]  # features that fire more on set A, best first
    b_side: list[FeatureScore]  # features that fire more on set B, best first
    baseline: Baseline
    shuffle: ShuffleControl
    n_features: int
    n_live: int


@dataclass
class RankInputs:
    X_max: np.ndarray  # float32 [E, F]
    X_mean: np.ndarray  # float32 [E, F]
    keys: list[tuple[str, int]]  # (sae_id, feature) of each column
    y: np.ndarray  # int8 [E]
    train: np.ndarray  # int [E_train]
    test: np.ndarray  # int [E_test]


def rank(
    inp: RankInputs,
    top: int = 30,
    n_random: int = 200,
    n_shuffles: int = 20,
    seed: int = 0,
    check: Callable[[], None] | None = None,
) -> Ranking:
    """The ranking (see the module docstring); `check()`, called between blocks of columns and shuffles, raises
    to stop it."""
    live = np.flatnonzero(inp.X_max.max(axis=0) > 0)
    X = inp.X_max[:, live]
    y_tr, y_te = inp.y[inp.train], inp.y[inp.test]
    ranks_tr, ranks_te = column_ranks(X[inp.train], check), column_ranks(X[inp.test], check)
    auc_tr, auc_te = auroc_from_ranks(ranks_tr, y_tr), auroc_from_ranks(ranks_te, y_te)
    diff = X[inp.train][y_tr == 1].mean(0) - X[inp.train][y_tr == 0].mean(0)
    order = np.lexsort((-diff, -auc_tr))  # train AUROC, then mean difference
    rng = np.random.default_rng(seed)
    a_cols = [c for c in order[:top] if auc_tr[c] > 0.5]
    b_cols = [c for c in np.lexsort((diff, auc_tr))[:top] if auc_tr[c] < 0.5]
    return Ranking(
        a_side=_scores(inp, live, a_cols, auc_tr, auc_te, positive=1),
        b_side=_scores(inp, live, b_cols, 1 - auc_tr, 1 - auc_te, positive=0),
        baseline=_baseline(auc_te, n_random, rng),
        shuffle=_shuffle(ranks_tr, ranks_te, inp, n_shuffles, rng, check),
        n_features=inp.X_max.shape[1],
        n_live=len(live),
    )


def _scores(
    inp: RankInputs, live: np.ndarray, cols: list[int], auc_tr: np.ndarray, auc_te: np.ndarray, positive: int
) -> list[FeatureScore]:
    """Full scores of the chosen columns, for the side whose examples count as positive."""
    if not cols:
        return []
    full = live[cols]
    y = (inp.y == positive).astype(np.int8)
    X, Xm = inp.X_max[:, full], inp.X_mean[:, full]
    fit = best_thresholds(X[inp.train], y[inp.train])
    test_f1 = f1_at(X[inp.test], y[inp.test], fit.threshold)
    auc_mean_te = auroc_from_ranks(column_ranks(Xm[inp.test]), y[inp.test])
    is_a = inp.y == 1  # set A stays set A in the means, whichever side is being scored
    tr_a, tr_b = inp.train[is_a[inp.train]], inp.train[~is_a[inp.train]]
    out = []
    for j, c in enumerate(cols):
        sae_id, feature = inp.keys[full[j]]
        mean_a, mean_b = float(X[tr_a, j].mean()), float(X[tr_b, j].mean())
        out.append(
            FeatureScore(
                sae_id=sae_id,
                feature=int(feature),
                train_auroc=float(auc_tr[c]),
                test_auroc=float(auc_te[c]),
                threshold=float(fit.threshold[j]),
                train_f1=float(fit.f1[j]),
                test_f1=float(test_f1[j]),
                mean_a=mean_a,
                mean_b=mean_b,
                mean_diff=mean_a - mean_b,
                mean_pooled_diff=float(Xm[tr_a, j].mean() - Xm[tr_b, j].mean()),
                test_auroc_mean_pooled=float(auc_mean_te[j]),
                fires_a=float((X[is_a, j] > 0).mean()),
                fires_b=float((X[~is_a, j] > 0).mean()),
                strip=X[:, j].tolist(),
            )
        )
    return out


def reading(r: Ranking) -> str:
    """What the top feature's test AUROC means beside its two controls, in words (the discovery page and the CLI
    show it under the numbers)."""
    if not r.a_side or not r.baseline.n or math.isnan(r.baseline.p95):
        return ""
    top, b, s = r.a_side[0].test_auroc, r.baseline, r.shuffle
    n = f"{b.n} random live features"
    if top > b.p95:
        out = [
            f"The top feature's test AUROC, {top:.3f}, is above the 95th percentile of {n} ({b.p95:.3f}):"
            " it separates the sets better than 19 in 20 features picked without looking."
        ]
    else:
        out = [
            f"The top feature's test AUROC, {top:.3f}, is within what {n} reach (95th percentile {b.p95:.3f}):"
            " no better than a feature picked without looking."
        ]
    if b.max > top:
        out.append(
            f"The best random feature's {b.max:.3f} is higher, but it is the best of {b.n} judged on the test"
            " examples themselves (a choice made by looking at the answers); the top feature was chosen on the"
            " train examples alone, so its test AUROC is the fair one."
        )
    spread = max(s.test_sd, s.null_sd) if not math.isnan(s.test_sd) else s.null_sd
    if s.n and not math.isnan(s.test_mean):
        beats = top > s.test_mean + 2 * spread
        out.append(
            f"With the labels shuffled, the same choice on train reaches {s.test_mean:.3f} on test (± {spread:.3f}):"
            + (
                " the top feature is well clear of what choosing among many features gives by itself."
                if beats
                else " the top feature is not clearly above what choosing among many features gives by itself."
            )
        )
    return " ".join(out)


def _baseline(auc_te: np.ndarray, n: int, rng: np.random.Generator) -> Baseline:
    if len(auc_te) == 0:
        return Baseline(0, float("nan"), float("nan"), float("nan"))
    picked = auc_te[rng.choice(len(auc_te), size=min(n, len(auc_te)), replace=False)]
    return Baseline(len(picked), float(picked.mean()), float(np.quantile(picked, 0.95)), float(picked.max()))


def _shuffle(
    ranks_tr: np.ndarray,
    ranks_te: np.ndarray,
    inp: RankInputs,
    n: int,
    rng: np.random.Generator,
    check: Callable[[], None] | None = None,
) -> ShuffleControl:
    train_aucs, test_aucs = [], []
    for _ in range(n if ranks_tr.shape[1] else 0):
        if check is not None:
            check()
        y = rng.permutation(inp.y)
        y_tr, y_te = y[inp.train], y[inp.test]
        auc_tr = auroc_from_ranks(ranks_tr, y_tr)
        if np.isnan(auc_tr).all() or y_te.min() == y_te.max():
            continue  # a shuffle that left one class out of a split says nothing
        best = int(np.nanargmax(auc_tr))
        train_aucs.append(float(auc_tr[best]))
        test_aucs.append(float(auroc_from_ranks(ranks_te[:, [best]], y_te)[0]))
    n_pos, n_neg = int(inp.y[inp.test].sum()), int((inp.y[inp.test] == 0).sum())
    return ShuffleControl(
        n=len(test_aucs),
        train_aurocs=train_aucs,
        test_aurocs=test_aucs,
        test_mean=float(np.mean(test_aucs)) if test_aucs else float("nan"),
        test_sd=float(np.std(test_aucs, ddof=1)) if len(test_aucs) > 1 else float("nan"),
        null_sd=null_auroc_sd(n_pos, n_neg),
    )
