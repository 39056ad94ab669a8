"""One discovery, end to end: cleaned example sets -> tokens -> pooled activations of every feature of every SAE
-> seeded split -> ranked features with controls -> an L1 logistic-regression detector. The result is one
pydantic model (`Discovery`): what the API answers, the page shows and the app database stores.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from qscope.discover.activations import Cancelled, Encoded, Progress, Runner, pool, tokenize
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

    id: str = ""  # set when saved in the app database
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


class _Phases:
    """Times the phases of a discovery and reports each one's start to `progress`."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str, total: int = 1) -> Iterator[None]:
        if self.progress:
            self.progress(name, 0, total)
        start = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - start


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
    """Rank every feature of every SAE of `runner` on `examples` (Cancelled when `cancel` is set: checked
    between batches, blocks of columns, shuffles and fits, so it takes effect within a second or two)."""

    def check() -> None:
        if cancel is not None and cancel.is_set():
            raise Cancelled("cancelled")

    phases = _Phases(progress)
    with phases("tokenize (examples)", len(examples.texts)):
        enc = tokenize(tokenizer, examples.texts, max_tokens)
    pooled = pool(runner, enc.ids, progress, cancel)
    phases.seconds["forward + encode"] = pooled.seconds
    with phases("rank"):
        train, test = split_indices(examples.labels, options.test_share, options.seed)
        X_max, keys = pooled.matrix("max")
        inputs = RankInputs(X_max, pooled.matrix("mean")[0], keys, examples.labels, train, test)
        ranking = rank(inputs, options.top, options.n_random, options.n_shuffles, options.seed, check)
    logreg = None
    if options.logreg:
        with phases("logistic regression"):
            logreg = _logreg(inputs, options.seed, label_of, check)
    check()  # a cancel that came after the last check: nothing is saved
    listed = [(s.sae_id, s.feature) for s in [*ranking.a_side, *ranking.b_side]]
    listed += logreg.detector.keys if logreg else []
    notes = list(examples.notes)
    if enc.truncated:
        notes.append(f"{enc.truncated} example(s) longer than {max_tokens} tokens cut to their first {max_tokens}")
    return Discovery(
        model_id=model_id,
        names=examples.names,
        options=options,
        saes=list(runner.saes),
        examples=_examples_out(examples, enc, test),
        notes=notes,
        ranking=ranking,
        labels={f"{s}/{f}": label_of(s, f) for s, f in listed} if label_of else {},
        logreg=logreg,
        n_tokens=enc.n_tokens,
        max_tokens=max_tokens,
        seconds=phases.seconds,
    )


def _examples_out(examples: ExampleSet, enc: Encoded, test: np.ndarray) -> list[ExampleOut]:
    in_test = np.zeros(len(examples.texts), dtype=bool)
    in_test[test] = True
    return [
        ExampleOut(text, int(label), "test" if t else "train", len(ids), cut)
        for text, label, t, ids, cut in zip(examples.texts, examples.labels, in_test, enc.ids, enc.cut, strict=True)
    ]


def _logreg(
    inputs: RankInputs, seed: int, label_of: LabelOf | None, check: Callable[[], None] | None = None
) -> LogRegResult | None:
    X_tr, y_tr = inputs.X_max[inputs.train], inputs.y[inputs.train]
    if not (X_tr > 0).any():
        return None
    detector = fit_logreg(X_tr, y_tr, inputs.keys, seed=seed, check=check)
    if label_of:
        for term in detector.terms:
            term.label = label_of(term.sae_id, term.feature)
    col = {k: i for i, k in enumerate(inputs.keys)}
    X = inputs.X_max[:, [col[k] for k in detector.keys]]
    return LogRegResult(
        detector, evaluate(detector, X[inputs.train], y_tr), evaluate(detector, X[inputs.test], inputs.y[inputs.test])
    )
