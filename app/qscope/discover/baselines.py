"""The simple methods a discovery is judged against, on the raw residual of a hooked site and the same train/test
split as the features: DiffMean and an L2 logistic probe (the baselines that beat SAE features at detection in
AxBench), paired bootstrap intervals over the test examples, and the sentence that compares two methods from them.

DiffMean: w = mean(h | set A) - mean(h | set B) over the train examples, the score of an example h . w. The probe:
an L2 logistic regression on the standardised residual, C chosen by stratified cross-validation on train (AUROC).
Both read one vector per example: the residual averaged over the example's counted tokens (the tokens its features
are pooled over). Each method's rule for F1 is its F1-best threshold on train, applied to test.

Shapes: E examples, D = d_model, B bootstrap resamples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qscope.discover.metrics import auroc_from_ranks, best_thresholds, column_ranks, f1_at
from qscope.residual import mean_difference

C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0)
CV_FOLDS = 5
N_BOOT = 1000
LEVEL = 0.95


@dataclass
class Direction:
    """A linear detector on the residual: score = h . w + bias."""

    w_D: np.ndarray  # float32 [D]
    bias: float = 0.0
    C: float | None = None  # the probe's regularisation (None for DiffMean)

    def score(self, H_ED: np.ndarray) -> np.ndarray:
        return (np.asarray(H_ED, np.float64) @ self.w_D.astype(np.float64) + self.bias).astype(np.float32)


def diffmean(H_ED: np.ndarray, y_E: np.ndarray, train: np.ndarray) -> Direction:
    """The difference of the class means of the train examples (set A minus set B)."""
    return Direction(mean_difference(np.asarray(H_ED)[train], np.asarray(y_E)[train]))


def fit_probe(H_ED: np.ndarray, y_E: np.ndarray, train: np.ndarray, seed: int = 0) -> Direction:
    """An L2 logistic regression on the train examples' standardised residual, folded back into one direction on
    the raw residual (w / sd, bias - sum(w mean / sd))."""
    from sklearn.linear_model import LogisticRegression

    H, y = np.asarray(H_ED, np.float64)[train], np.asarray(y_E)[train].astype(int)
    mean_D, sd_D = H.mean(0), H.std(0)
    sd_D = np.where(sd_D > 1e-12, sd_D, 1.0)
    Z = (H - mean_D) / sd_D
    C = _choose_C(Z, y, seed)
    model = LogisticRegression(C=C, max_iter=2000, random_state=seed).fit(Z, y)
    w_D = model.coef_[0] / sd_D
    bias = float(model.intercept_[0] - (w_D * mean_D).sum())
    return Direction(w_D.astype(np.float32), bias, C)


def _choose_C(Z: np.ndarray, y: np.ndarray, seed: int) -> float:
    """The C of C_GRID with the best cross-validated AUROC on train (ties: the smaller C, the simpler model)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    folds = min(CV_FOLDS, int(np.bincount(y, minlength=2).min()))
    if folds < 2:
        return 1.0
    best_C, best_auc = C_GRID[0], -1.0
    for C in C_GRID:
        scores = np.zeros(len(y))
        for tr, te in StratifiedKFold(folds, shuffle=True, random_state=seed).split(Z, y):
            scores[te] = (
                LogisticRegression(C=C, max_iter=2000, random_state=seed).fit(Z[tr], y[tr]).decision_function(Z[te])
            )
        auc = float(auroc_from_ranks(column_ranks(scores[:, None]), y)[0])
        if auc > best_auc + 1e-9:
            best_C, best_auc = C, auc
    return best_C


@dataclass
class Judged:
    """One method on one split: its test AUROC and F1 (at its F1-best train threshold), each with a bootstrap
    interval over the test examples."""

    method: str
    site: str
    test_auroc: float
    auroc_interval: tuple[float, float]
    test_f1: float
    f1_interval: tuple[float, float]
    threshold: float


def judge(
    method: str, site: str, scores_E: np.ndarray, y_E: np.ndarray, train: np.ndarray, test: np.ndarray, boot: Resamples
) -> Judged:
    """A score per example (higher: more like set A) judged as every method is: threshold on train, AUROC and F1
    on test, intervals from the shared resamples."""
    s, y = np.asarray(scores_E, np.float32), np.asarray(y_E)
    threshold = float(best_thresholds(s[train, None], y[train]).threshold[0])
    s_te, y_te = s[test], y[test]
    auc_B, f1_B = boot.auroc(s_te, y_te), boot.f1(s_te, y_te, threshold)
    return Judged(
        method,
        site,
        float(auroc_from_ranks(column_ranks(s_te[:, None]), y_te)[0]),
        _interval(auc_B),
        float(f1_at(s_te[:, None], y_te, np.array([threshold], np.float32))[0]),
        _interval(f1_B),
        threshold,
    )


class Resamples:
    """B resamples of the test examples (with replacement, stratified so both sets stay in every one), shared by
    all methods so that their differences are paired."""

    def __init__(self, y_test: np.ndarray, n: int = N_BOOT, seed: int = 0) -> None:
        y = np.asarray(y_test)
        rng = np.random.default_rng(seed)
        pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
        self.idx_BE = np.concatenate(
            [pos[rng.integers(0, len(pos), (n, len(pos)))], neg[rng.integers(0, len(neg), (n, len(neg)))]], axis=1
        )

    def auroc(self, s_E: np.ndarray, y_E: np.ndarray) -> np.ndarray:
        """The AUROC of each resample [B]."""
        s_BE, y_BE = np.asarray(s_E)[self.idx_BE], np.asarray(y_E)[self.idx_BE]
        ranks_EB = column_ranks(s_BE.T)
        n1 = y_BE.sum(1).astype(np.float64)
        n0 = y_BE.shape[1] - n1
        return ((y_BE * ranks_EB.T).sum(1) - n1 * (n1 + 1) / 2) / (n1 * n0)

    def f1(self, s_E: np.ndarray, y_E: np.ndarray, threshold: float) -> np.ndarray:
        fire_BE = np.asarray(s_E)[self.idx_BE] > threshold
        y_BE = np.asarray(y_E)[self.idx_BE].astype(bool)
        tp, denom = (fire_BE & y_BE).sum(1), fire_BE.sum(1) + y_BE.sum(1)
        return np.where(denom > 0, 2.0 * tp / np.maximum(denom, 1), 0.0)


def _interval(values_B: np.ndarray) -> tuple[float, float]:
    lo, hi = np.quantile(values_B, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return float(lo), float(hi)


@dataclass
class MethodComparison:
    """Method a against method b on test AUROC: the difference a - b, its paired interval, and what it says."""

    a: str
    b: str
    difference: float
    interval: tuple[float, float]
    sentence: str


def compare(
    a: Judged, b: Judged, s_a: np.ndarray, s_b: np.ndarray, y_test: np.ndarray, boot: Resamples
) -> MethodComparison:
    """a's test AUROC minus b's, with the interval of that difference over the shared resamples (s_a, s_b: each
    method's scores of the test examples). The sentence is computed from the interval: a side is better only
    when the whole interval is on its side of 0."""
    diff_B = boot.auroc(s_a, y_test) - boot.auroc(s_b, y_test)
    lo, hi = _interval(diff_B)
    d = a.test_auroc - b.test_auroc
    if lo > 0:
        text = f"{a.method} is better than {b.method} by {d:.2f} AUROC (95% interval {lo:.2f} to {hi:.2f})"
    elif hi < 0:
        text = f"{b.method} is better than {a.method} by {-d:.2f} AUROC (95% interval {-hi:.2f} to {-lo:.2f})"
    else:
        text = f"{a.method} and {b.method} match: {d:+.2f} AUROC, 95% interval {lo:+.2f} to {hi:+.2f} includes 0"
    return MethodComparison(a.method, b.method, d, (lo, hi), text)


@dataclass
class SiteComparison:
    """One hooked site: every method judged on the same split, and the best feature method against the best
    baseline (the sentence a person reads)."""

    site: str
    methods: list[Judged]
    comparison: MethodComparison


FEATURE_METHODS = ("best feature", "sparse regression over features")
BASELINES = ("DiffMean", "probe")


def compare_site(
    site: str,
    H_ED: np.ndarray,
    feature_scores: dict[str, np.ndarray],
    y_E: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    seed: int = 0,
) -> tuple[SiteComparison, dict[str, Direction]]:
    """The baselines fitted on the site's residual `H_ED` beside the feature methods' scores (name -> a score per
    example, higher for set A); the fitted directions by name, for their decomposition over the site's SAEs."""
    directions = {"DiffMean": diffmean(H_ED, y_E, train), "probe": fit_probe(H_ED, y_E, train, seed)}
    scores = dict(feature_scores) | {name: d.score(H_ED) for name, d in directions.items()}
    boot = Resamples(np.asarray(y_E)[test], seed=seed)
    judged = {name: judge(name, site, s, y_E, train, test, boot) for name, s in scores.items()}
    best_feature = max((judged[n] for n in feature_scores), key=lambda j: j.test_auroc)
    best_baseline = max((judged[n] for n in directions), key=lambda j: j.test_auroc)
    y_te = np.asarray(y_E)[test]
    comparison = compare(
        best_feature,
        best_baseline,
        scores[best_feature.method][test],
        scores[best_baseline.method][test],
        y_te,
        boot,
    )
    return SiteComparison(site, list(judged.values()), comparison), directions
