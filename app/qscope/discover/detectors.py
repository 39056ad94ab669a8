"""Detectors: a rule over one to five features (thresholds combined with any / all), a sparse (L1) logistic
regression on SAE activations, or a baseline's direction on the raw residual (DiffMean, the probe); fitted on
train, scored on test, and applied to new text token by token.

Feature detectors read what discovery ranks: each feature's max activation over the tokens of an example that
count. Direction detectors read what the baselines read: the residual at their site averaged over the same tokens.
A detector's score is > 0 exactly when it fires:
- rule, any: max over terms of (x - threshold) / scale; rule, all: the min of the same (scale: the feature's
  largest train value, so terms of different magnitude compare);
- logistic regression: intercept + sum of coef * x / scale (its log-odds);
- DiffMean or probe: h . w + intercept, where the intercept puts the method's F1-best train threshold at 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from qscope.discover.baselines import diffmean, fit_probe
from qscope.discover.metrics import auroc, auroc_from_ranks, best_thresholds, column_ranks, confusion
from qscope.inputs.numbers import Finite

MAX_TERMS = 5
C_GRID = (0.1, 0.3, 1.0, 3.0, 10.0)
CV_FOLDS = 3


class DetectorError(ValueError):
    """A detector spec that cannot be fitted (HTTP 422): the message says why."""


class Term(BaseModel):
    sae_id: str
    feature: int = Field(ge=0)
    threshold: Finite | None = Field(
        None,
        description="Fires when the max activation is above this; default: the F1-best threshold on the train split.",
    )


Kind = Literal["rule", "logreg", "diffmean", "probe"]
DIRECTION_KINDS = ("diffmean", "probe")  # detectors on the raw residual (qscope.discover.baselines)
DIRECTION_NAMES = {"diffmean": "DiffMean", "probe": "probe"}  # as the baselines name them


class DetectorSpec(BaseModel):
    """What to fit: a rule over 1-5 features, an L1 logistic regression over every feature, or a baseline's
    direction on the residual of one hooked site."""

    kind: Kind = "rule"
    combine: Literal["any", "all"] = Field("any", description="rule: fire when any term / all terms fire.")
    terms: list[Term] = Field(default_factory=list, description="rule: 1 to 5 features.")
    C: Finite | None = Field(
        None, gt=0, description="logreg: inverse L1 strength; default: chosen by cross-validation on train."
    )
    site: str | None = Field(
        None,
        max_length=200,
        description="diffmean / probe: the hooked site whose residual it reads (model.layers.N); default: the "
        "discovery's first.",
    )


class FittedTerm(BaseModel):
    sae_id: str
    feature: int
    threshold: float = 0.0  # rule terms
    scale: float = 1.0  # the feature's largest train value (1 when it never fired)
    coef: float = 0.0  # logreg terms
    label: str = ""


class Detector(BaseModel):
    kind: Kind
    combine: Literal["any", "all"] = "any"
    terms: list[FittedTerm]
    intercept: float = 0.0
    C: float | None = None
    site: str | None = None  # direction kinds: where the residual is read
    direction: list[float] = Field(default_factory=list)  # direction kinds: w, one weight per residual dimension

    @property
    def reads_residual(self) -> bool:
        """A baseline's direction on the residual (no features)."""
        return self.kind in DIRECTION_KINDS

    @property
    def keys(self) -> list[tuple[str, int]]:
        return [(t.sae_id, t.feature) for t in self.terms]

    def score(self, X_EN: np.ndarray) -> np.ndarray:
        """Score per example from its pooled activations of the terms' features [E, N] (direction kinds: its
        residual averaged over the counted tokens [E, D]); fires where > 0."""
        X = np.asarray(X_EN, dtype=np.float64)
        if self.reads_residual:
            return X.reshape(-1, len(self.direction)) @ np.asarray(self.direction, np.float64) + self.intercept
        if not self.terms:  # an L1 fit that kept no feature: the same score (its intercept) for every example
            return np.full(X.shape[0] if X.ndim == 2 else 1, self.intercept)
        X_EN = X.reshape(-1, len(self.terms))
        scale_N = np.array([t.scale for t in self.terms])
        if self.kind == "logreg":
            return self.intercept + (X_EN / scale_N) @ np.array([t.coef for t in self.terms])
        margin_EN = (X_EN - np.array([t.threshold for t in self.terms])) / scale_N
        return margin_EN.max(1) if self.combine == "any" else margin_EN.min(1)

    def fires(self, X_EN: np.ndarray) -> np.ndarray:
        return self.score(X_EN) > 0

    def trips(self, acts_TN: np.ndarray, counted_TN: np.ndarray) -> np.ndarray:
        """bool [T, N]: the tokens (and terms) that carry the evidence. Rule: a counted token whose activation is
        above the term's threshold. Logreg: the token where a positively weighted feature peaks, if it fired."""
        acts_TN = np.where(counted_TN, acts_TN, 0.0)
        if self.kind == "rule":
            return acts_TN > np.array([t.threshold for t in self.terms])[None, :]
        out = np.zeros(acts_TN.shape, dtype=bool)
        for n, term in enumerate(self.terms):
            if term.coef > 0 and acts_TN.shape[0] and acts_TN[:, n].max() > 0:
                out[int(acts_TN[:, n].argmax()), n] = True
        return out


def fit_rule(spec: DetectorSpec, X_EN: np.ndarray, y_E: np.ndarray, labels: list[str] | None = None) -> Detector:
    """The rule of `spec` fitted on train activations X [E, N] (one column per term): missing thresholds become
    each feature's F1-best train threshold."""
    if not 1 <= len(spec.terms) <= MAX_TERMS:
        raise DetectorError(f"a rule takes 1 to {MAX_TERMS} features; {len(spec.terms)} given")
    if len({(t.sae_id, t.feature) for t in spec.terms}) < len(spec.terms):
        raise DetectorError("a rule names the same feature twice")
    best = best_thresholds(X_EN, y_E).threshold
    terms = []
    for n, term in enumerate(spec.terms):
        threshold = term.threshold if term.threshold is not None else float(best[n])
        scale = float(X_EN[:, n].max()) if X_EN[:, n].max() > 0 else 1.0
        terms.append(
            FittedTerm(
                sae_id=term.sae_id,
                feature=term.feature,
                threshold=threshold,
                scale=scale,
                label=labels[n] if labels else "",
            )
        )
    return Detector(kind="rule", combine=spec.combine, terms=terms)


def fit_direction(kind: str, H_ED: np.ndarray, y_E: np.ndarray, site: str, seed: int = 0) -> Detector:
    """A baseline fitted on train residuals [E, D] (qscope.discover.baselines: DiffMean or the probe), its
    threshold the F1-best cut of its train scores, folded into the intercept so that it fires where score > 0."""
    if kind not in DIRECTION_KINDS:
        raise DetectorError(f"kind {kind!r} is not a residual direction ({', '.join(DIRECTION_KINDS)})")
    y = np.asarray(y_E)
    if not 0 < int(y.sum()) < len(y):
        raise DetectorError("the train split needs examples of both sets to fit a direction")
    everything = np.arange(len(y))
    fitted = diffmean(H_ED, y, everything) if kind == "diffmean" else fit_probe(H_ED, y, everything, seed)
    s_E = fitted.score(H_ED)
    threshold = float(best_thresholds(s_E[:, None].astype(np.float32), y).threshold[0])
    return Detector(
        kind=kind,
        terms=[],
        intercept=fitted.bias - threshold,
        C=fitted.C,
        site=site,
        direction=[float(v) for v in fitted.w_D],
    )


def fit_logreg(
    X_EF: np.ndarray,
    y_E: np.ndarray,
    keys: list[tuple[str, int]],
    C: float | None = None,
    seed: int = 0,
    screen: int | None = 512,
    check: Callable[[], None] | None = None,
) -> Detector:
    """An L1 logistic regression on train activations of the features [E, F] (each scaled by its train max);
    C by stratified cross-validation (AUROC) when not given. The nonzero weights are the detector's terms.
    With `screen`, only that many features enter the fit: those whose train AUROC is furthest from 1/2 (chosen
    on train alone; L1 keeps few of them anyway, and the fit costs a fraction). `check()` is called between the
    blocks of the screen and before every fit; it raises to stop (a cancelled discovery stops within a block
    or one fit of a few hundred columns, not after them all)."""
    from sklearn.linear_model import LogisticRegression

    scale_F = X_EF.max(axis=0)
    live = np.flatnonzero(scale_F > 0)
    if len(live) == 0:
        raise DetectorError("no feature fires on the train examples: nothing to fit")
    if screen is not None and len(live) > screen:
        auc = auroc_from_ranks(column_ranks(X_EF[:, live], check), y_E)
        live = np.sort(live[np.argsort(-np.abs(auc - 0.5), kind="stable")[:screen]])
    Z = X_EF[:, live] / scale_F[live]
    C = C if C is not None else _choose_C(Z, y_E, seed, check)
    if check is not None:
        check()
    model = LogisticRegression(C=C, l1_ratio=1.0, solver="liblinear", random_state=seed, max_iter=500)
    model.fit(Z, y_E)
    coef = model.coef_[0]
    kept = [j for j in np.argsort(-np.abs(coef), kind="stable") if coef[j] != 0]
    terms = [
        FittedTerm(
            sae_id=keys[live[j]][0], feature=int(keys[live[j]][1]), scale=float(scale_F[live[j]]), coef=float(coef[j])
        )
        for j in kept
    ]
    return Detector(kind="logreg", terms=terms, intercept=float(model.intercept_[0]), C=C)


def _choose_C(Z: np.ndarray, y: np.ndarray, seed: int, check: Callable[[], None] | None = None) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    folds = min(CV_FOLDS, int(np.bincount(y.astype(int), minlength=2).min()))
    if folds < 2:
        return 1.0
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    best_C, best_auc = 1.0, -1.0
    for C in C_GRID:
        scores = np.zeros(len(y))
        for tr, te in cv.split(Z, y):
            if check is not None:
                check()
            model = LogisticRegression(C=C, l1_ratio=1.0, solver="liblinear", random_state=seed, max_iter=500)
            scores[te] = model.fit(Z[tr], y[tr]).decision_function(Z[te])
        auc = auroc(scores, y)
        if auc > best_auc + 1e-9:  # ties keep the smaller C: the sparser model
            best_C, best_auc = C, auc
    return best_C


class SplitScores(BaseModel):
    """A detector judged on one split."""

    n: int
    tp: int
    fp: int
    fn: int
    tn: int
    precision: float | None
    recall: float | None
    f1: float | None
    accuracy: float
    auroc: float | None


def evaluate(detector: Detector, X_EN: np.ndarray, y_E: np.ndarray) -> SplitScores:
    scores = detector.score(X_EN)
    cm = confusion(scores > 0, y_E)
    both = 0 < int(np.sum(y_E)) < len(y_E)
    return SplitScores(
        n=len(y_E),
        tp=cm.tp,
        fp=cm.fp,
        fn=cm.fn,
        tn=cm.tn,
        precision=cm.precision,
        recall=cm.recall,
        f1=cm.f1,
        accuracy=cm.accuracy,
        auroc=auroc(scores, y_E) if both else None,
    )
