"""One discovery, end to end: cleaned example sets -> tokens -> pooled activations of every feature of every SAE
-> seeded split -> ranked features with controls -> an L1 logistic-regression detector. The result is one
pydantic model (`Discovery`): what the API answers, the page shows and the app database stores.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from qscope.discover.activations import Progress, Runner, pool, tokenize
from qscope.discover.detectors import Detector, SplitScores, evaluate, fit_logreg
from qscope.discover.examples import ExampleSet, split_indices
from qscope.discover.ranking import FeatureScore, Ranking, RankInputs, rank

LabelOf = Callable[[str, int], str]


class DiscoverOptions(BaseModel):
    test_share: float = Field(0.3, gt=0, lt=1, description="Share of each set held out for testing.")
    seed: int = Field(0, ge=0, description="Seed of the split, the random features and the shuffles.")
    top: int = Field(30, ge=1, le=200, description="Features listed per side.")
    n_random: int = Field(200, ge=1, le=5000, description="Random live features in the baseline.")
    n_shuffles: int = Field(20, ge=2, le=200, description="Label shuffles in the control.")
    logreg: bool = Field(True, description="Also fit an L1 logistic regression over every feature.")


@dataclass
class ExampleOut:
    text: str
    label: int  # 1: set A, 0: set B
    split: str  # 'train' | 'test'
    n_tokens: int
    truncated: bool


@dataclass
class LogRegResult:
    detector: Detector
    train: SplitScores
    test: SplitScores


class Discovery(BaseModel):
    model_config = ConfigDict(ser_json_inf_nan="constants")

    id: str | None = None
    model_id: str
    names: tuple[str, str]
    options: DiscoverOptions
    saes: list[str]
    examples: list[ExampleOut]
    notes: list[str]
    ranking: Ranking
    labels: dict[str, str] = Field(default_factory=dict, description="'sae_id/feature' -> label, listed ones")
    logreg: LogRegResult | None = None
    n_tokens: int
    max_tokens: int
    seconds: dict[str, float]

    def scores(self) -> list[FeatureScore]:
        return [*self.ranking.a_side, *self.ranking.b_side]

    def find(self, sae_id: str, feature: int) -> FeatureScore | None:
        return next((s for s in self.scores() if s.sae_id == sae_id and s.feature == feature), None)

    def label(self, sae_id: str, feature: int) -> str:
        return self.labels.get(f"{sae_id}/{feature}", "")

    @property
    def train(self) -> np.ndarray:
        return np.array([i for i, e in enumerate(self.examples) if e.split == "train"], dtype=np.int64)

    @property
    def test(self) -> np.ndarray:
        return np.array([i for i, e in enumerate(self.examples) if e.split == "test"], dtype=np.int64)

    @property
    def y(self) -> np.ndarray:
        return np.array([e.label for e in self.examples], dtype=np.int8)


def discover(
    examples: ExampleSet,
    runner: Runner,
    tokenizer,
    model_id: str,
    options: DiscoverOptions,
    max_tokens: int,
    label_of: LabelOf | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> Discovery:
    """Rank every feature of every SAE of `runner` on `examples` (Cancelled when `cancel` is set)."""
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    if progress:
        progress("tokenize", 0, len(examples.texts))
    enc = tokenize(tokenizer, examples.texts, max_tokens)
    notes = list(examples.notes)
    if enc.truncated:
        notes.append(f"{enc.truncated} example(s) longer than {max_tokens} tokens cut to their first {max_tokens}")
    seconds["tokenize"] = time.perf_counter() - t
    pooled = pool(runner, enc.ids, progress, cancel)
    seconds["forward + encode"] = pooled.seconds
    t = time.perf_counter()
    if progress:
        progress("rank", 0, 1)
    train, test = split_indices(examples.labels, options.test_share, options.seed)
    X_max, keys = pooled.matrix("max")
    X_mean, _ = pooled.matrix("mean")
    inputs = RankInputs(X_max, X_mean, keys, examples.labels, train, test)
    ranking = rank(inputs, options.top, options.n_random, options.n_shuffles, options.seed)
    seconds["rank"] = time.perf_counter() - t
    logreg = None
    if options.logreg:
        t = time.perf_counter()
        if progress:
            progress("logistic regression", 0, 1)
        logreg = _logreg(inputs, options.seed, label_of)
        seconds["logistic regression"] = time.perf_counter() - t
    split = np.full(len(examples.texts), "train", dtype=object)
    split[test] = "test"
    listed = [(s.sae_id, s.feature) for s in [*ranking.a_side, *ranking.b_side]]
    listed += logreg.detector.keys if logreg else []
    return Discovery(
        model_id=model_id,
        names=examples.names,
        options=options,
        saes=list(runner.saes),
        examples=[
            ExampleOut(text, int(lab), str(sp), len(ids), cut)
            for text, lab, sp, ids, cut in zip(examples.texts, examples.labels, split, enc.ids, enc.cut, strict=True)
        ],
        notes=notes,
        ranking=ranking,
        labels={f"{s}/{f}": label_of(s, f) for s, f in listed} if label_of else {},
        logreg=logreg,
        n_tokens=enc.n_tokens,
        max_tokens=max_tokens,
        seconds=seconds,
    )


def _logreg(inputs: RankInputs, seed: int, label_of: LabelOf | None) -> LogRegResult | None:
    X_tr, y_tr = inputs.X_max[inputs.train], inputs.y[inputs.train]
    if not (X_tr > 0).any():
        return None
    detector = fit_logreg(X_tr, y_tr, inputs.keys, seed=seed)
    if label_of:
        for term in detector.terms:
            term.label = label_of(term.sae_id, term.feature)
    col = {k: i for i, k in enumerate(inputs.keys)}
    X = inputs.X_max[:, [col[k] for k in detector.keys]]
    return LogRegResult(
        detector, evaluate(detector, X[inputs.train], y_tr), evaluate(detector, X[inputs.test], inputs.y[inputs.test])
    )
