"""Detectors end to end: fit one on a discovery's examples and split, and run a saved one on new text.

A baseline's direction (DiffMean, the probe) is fitted on the residual of one site, averaged over the tokens that
count exactly as the discovery's baselines read it, so its test scores are the discovery's own. A rule's features
are usually among those a discovery listed, whose per-example max activations it kept (its `strip`): then fitting
costs no model run. Other features (and a logistic regression with a new C) are read
again from the model on the discovery's examples. Detection runs the model on the new texts, pools each term's
feature over the tokens that count exactly as discovery does, applies the detector, and marks the tokens that
tripped it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, Field
from transformers import PreTrainedTokenizerBase

from qscope.discover.activations import (
    ActivationRunner,
    pool,
    residual_means,
    sites_of,
    token_acts,
    token_residuals,
    tokenize,
)
from qscope.discover.detectors import (
    DIRECTION_KINDS,
    DIRECTION_NAMES,
    Detector,
    DetectorError,
    DetectorSpec,
    SplitScores,
    evaluate,
    fit_direction,
    fit_logreg,
    fit_rule,
)
from qscope.discover.discovery import Discovery

MAX_LISTED = 300  # test examples kept with a saved detector, for its page


class Scored(BaseModel):
    text: str
    label: int
    fired: bool
    score: float


class SavedDetector(BaseModel):
    id: str = ""  # set when saved in the app database
    name: str
    model_id: str
    names: tuple[str, str] = Field(description="Set A (what it detects) and set B.")
    spec: DetectorSpec
    detector: Detector
    train: SplitScores
    test: SplitScores
    discovery: str | None = Field(None, description="The discovery it was fit on.")
    max_tokens: int
    test_examples: list[Scored] = Field(default_factory=list)


def pooled_columns(d: Discovery, keys: list[tuple[str, int]], runner_of) -> np.ndarray:
    """float32 [E, N]: each example's max activation of each feature, from the discovery's strips when it listed
    the feature, else from the model (`runner_of(sae_ids)` gives an ActivationRunner and tokenizer)."""
    X = np.zeros((len(d.examples), len(keys)), np.float32)
    missing = []
    for n, (sae_id, feature) in enumerate(keys):
        score = d.find(sae_id, feature)
        if score is not None and len(score.strip) == len(d.examples):
            X[:, n] = score.strip
        else:
            missing.append(n)
    if missing:
        runner, tokenizer = runner_of(list(dict.fromkeys(keys[n][0] for n in missing)))
        enc = tokenize(tokenizer, [e.text for e in d.examples], d.max_tokens)
        acts = token_acts(runner, enc.ids, [keys[n] for n in missing])
        for j, n in enumerate(missing):
            X[:, n] = [a.acts[a.counted[:, j], j].max(initial=0.0) for a in acts]
    return X


def fit_on_discovery(d: Discovery, spec: DetectorSpec, name: str, runner_of) -> SavedDetector:
    """Fit `spec` on the discovery's train split and score it on its test split."""
    y, train, test = d.y, d.train, d.test
    if spec.kind in DIRECTION_KINDS:
        runner, tokenizer = runner_of(None)
        site = _site(spec, sites_of(runner))
        X = residual_means(runner, tokenize(tokenizer, [e.text for e in d.examples], d.max_tokens).ids, site)
        detector = fit_direction(spec.kind, X[train], y[train], site, d.options.seed)
    elif spec.kind == "rule":
        keys = [(t.sae_id, t.feature) for t in spec.terms]
        X = pooled_columns(d, keys, runner_of)
        detector = fit_rule(spec, X[train], y[train], [d.label(s, f) for s, f in keys])
    elif spec.C is None and d.logreg is not None:
        detector = d.logreg.detector
        X = pooled_columns(d, detector.keys, runner_of)
    else:
        runner, tokenizer = runner_of(None)
        pooled = pool(runner, tokenize(tokenizer, [e.text for e in d.examples], d.max_tokens).ids)
        X_all, keys = pooled.matrix("max")
        detector = fit_logreg(X_all[train], y[train], keys, C=spec.C, seed=d.options.seed)
        for term in detector.terms:
            term.label = d.label(term.sae_id, term.feature)
        col = {k: i for i, k in enumerate(keys)}
        X = X_all[:, [col[k] for k in detector.keys]]
    scores = detector.score(X[test])
    listed = [
        Scored(text=d.examples[i].text, label=int(y[i]), fired=bool(s > 0), score=float(s))
        for i, s in zip(test[:MAX_LISTED], scores[:MAX_LISTED], strict=False)
    ]
    return SavedDetector(
        name=name or _default_name(detector, d),
        model_id=d.model_id,
        names=d.names,
        spec=spec,
        detector=detector,
        train=evaluate(detector, X[train], y[train]),
        test=evaluate(detector, X[test], y[test]),
        discovery=d.id,
        max_tokens=d.max_tokens,
        test_examples=listed,
    )


def _site(spec: DetectorSpec, sites: list[str]) -> str:
    """The site a direction detector reads: the one asked for (it must be hooked) or the first."""
    if not sites:
        raise DetectorError("this model has no SAE here, so no hooked site to read a direction at")
    if spec.site is None:
        return sites[0]
    if spec.site not in sites:
        raise DetectorError(f"site {spec.site[:64]!r} is not hooked here; give one of {', '.join(sites)}")
    return spec.site


def _default_name(detector: Detector, d: Discovery) -> str:
    if detector.reads_residual:
        return f"{d.names[0]} vs {d.names[1]} ({DIRECTION_NAMES[detector.kind]} on {detector.site})"
    n = len(detector.terms)
    what = "L1 logistic regression" if detector.kind == "logreg" else f"{n}-feature {detector.combine} rule"
    what = "1-feature rule" if detector.kind == "rule" and n == 1 else what
    return f"{d.names[0]} vs {d.names[1]} ({what})"


class DetectedToken(BaseModel):
    text: str
    counted: bool = Field(description="False for tokens detectors skip (position 0, high-norm sinks).")
    acts: list[float] = Field(
        description="Activation of each of the detector's features on this token (a direction detector: the "
        "token's own score, h . w + intercept)."
    )
    tripped: list[int] = Field(description="Indexes (into the detector's terms) of the features it tripped.")


class DetectedText(BaseModel):
    text: str
    fired: bool
    score: float = Field(description="> 0 exactly when the detector fires.")
    pooled: list[float] = Field(description="Each feature's max activation over the counted tokens.")
    truncated: bool
    tokens: list[DetectedToken]


class DetectResult(BaseModel):
    detector: str
    name: str
    terms: list[dict]
    max_tokens: int
    results: list[DetectedText]


@dataclass
class DetectInputs:
    runner: ActivationRunner
    tokenizer: PreTrainedTokenizerBase
    decode: Callable[[list[int]], list[str]]  # token ids -> token strings


def detect(saved: SavedDetector, texts: list[str], inp: DetectInputs) -> DetectResult:
    """Run a saved detector on texts: per text, whether it fired, its score, and the tokens that tripped it."""
    detector = saved.detector
    enc = tokenize(inp.tokenizer, texts, saved.max_tokens)
    if detector.reads_residual:
        return _detect_direction(saved, texts, inp, enc.ids, enc.cut)
    acts = token_acts(inp.runner, enc.ids, detector.keys)
    results = []
    for text, ids, cut, a in zip(texts, enc.ids, enc.cut, acts, strict=True):
        pooled_N = np.where(a.counted, a.acts, 0.0).max(0, initial=0.0) if len(ids) else np.zeros(len(detector.terms))
        score = float(detector.score(pooled_N[None, :])[0])
        trips_TN = detector.trips(a.acts, a.counted) if len(ids) and score > 0 else np.zeros(a.acts.shape, bool)
        tokens = [
            DetectedToken(
                text=tok,
                counted=bool(a.counted[t].any()),
                acts=[round(float(v), 4) for v in a.acts[t]],
                tripped=[int(n) for n in np.flatnonzero(trips_TN[t])],
            )
            for t, tok in enumerate(inp.decode(ids))
        ]
        results.append(
            DetectedText(
                text=text,
                fired=score > 0,
                score=score,
                pooled=[float(v) for v in pooled_N],
                truncated=cut,
                tokens=tokens,
            )
        )
    terms = [t.model_dump() for t in detector.terms]
    return DetectResult(detector=saved.id, name=saved.name, terms=terms, max_tokens=saved.max_tokens, results=results)


def _detect_direction(
    saved: SavedDetector, texts: list[str], inp: DetectInputs, ids: list[list[int]], cut: list[bool]
) -> DetectResult:
    """A direction detector on texts: the score of the residual averaged over the counted tokens (the mean of the
    tokens' own scores, h . w being linear); a token trips it when its own score is above 0 and the text fired."""
    detector = saved.detector
    assert detector.site is not None, "a direction detector records its site"
    w_D = np.asarray(detector.direction, np.float64)
    results = []
    for text, tok_ids, was_cut, (h_TD, counted_T) in zip(
        texts, ids, cut, token_residuals(inp.runner, ids, detector.site), strict=True
    ):
        token_T = h_TD.astype(np.float64) @ w_D + detector.intercept if len(tok_ids) else np.zeros(0)
        mean_D = h_TD[counted_T].astype(np.float64).mean(0) if counted_T.any() else np.zeros(len(w_D))
        score = float(mean_D @ w_D + detector.intercept)
        tokens = [
            DetectedToken(
                text=tok,
                counted=bool(counted_T[t]),
                acts=[round(float(token_T[t]), 4)],
                tripped=[0] if score > 0 and counted_T[t] and token_T[t] > 0 else [],
            )
            for t, tok in enumerate(inp.decode(tok_ids))
        ]
        results.append(
            DetectedText(text=text, fired=score > 0, score=score, pooled=[score], truncated=was_cut, tokens=tokens)
        )
    terms = [{"kind": detector.kind, "site": detector.site, "method": DIRECTION_NAMES[detector.kind]}]
    return DetectResult(detector=saved.id, name=saved.name, terms=terms, max_tokens=saved.max_tokens, results=results)
