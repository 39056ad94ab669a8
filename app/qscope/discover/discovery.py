"""One discovery, end to end: cleaned example sets -> tokens -> pooled activations of every feature of every SAE
-> seeded split -> ranked features with controls -> an L1 logistic-regression detector -> the simple baselines on
each hooked site's residual (DiffMean, a probe) beside the features, and their directions read as features. The
result is one pydantic model (`Discovery`): what the API answers, the page shows and the app database stores.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from qscope.discover.activations import ActivationRunner, Encoded, Pooled, Progress, pool, tokenize
from qscope.discover.baselines import SiteComparison, compare_site
from qscope.discover.decompose import Decomposition, decompose
from qscope.discover.detectors import Detector, SplitScores, evaluate, fit_logreg
from qscope.discover.examples import ExampleSet, split_indices
from qscope.discover.metrics import auroc_from_ranks, column_ranks
from qscope.discover.ranking import FeatureScore, Ranking, RankInputs, rank
from qscope.inputs.numbers import Finite
from qscope.jobs import Cancelled

LabelOf = Callable[[str, int], str]


class DiscoverOptions(BaseModel):
    test_share: Finite = Field(0.3, gt=0, lt=1, description="Share of each set held out for testing.")
    # below 2**32: scikit-learn's random_state (the logistic regression) takes no larger seed
    seed: int = Field(0, ge=0, lt=2**32, description="Seed of the split, the random features and the shuffles.")
    top: int = Field(30, ge=1, le=200, description="Features listed per side.")
    n_random: int = Field(200, ge=1, le=5000, description="Random live features in the baseline.")
    n_shuffles: int = Field(20, ge=2, le=200, description="Label shuffles in the control.")
    logreg: bool = Field(True, description="Also fit an L1 logistic regression over every feature.")
    baselines: bool = Field(True, description="Also fit DiffMean and a probe on each site's residual, beside them.")


@dataclass
class ExampleOut:
    text: str
    label: int  # 1: set A, 0: set B
    split: str  # 'train' | 'test'
    n_tokens: int
    truncated: bool


@dataclass
class SiteBaselines:
    """The features against the baselines at one hooked site, and the baselines' directions read as features."""

    comparison: SiteComparison
    directions: dict[str, list[Decomposition]]  # "DiffMean" | "probe" -> one reading per SAE at the site


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
    baselines: list[SiteBaselines] | None = None  # None: not asked for (or a discovery saved before they existed)
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
    """Times the phases of a discovery and reports each one's start and end to `progress` (a phase that reports
    its own counts, as forward + encode does, is told done with its total too)."""

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
        if self.progress:
            self.progress(name, total, total)


def discover(
    examples: ExampleSet,
    runner: ActivationRunner,
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
    baselines = None
    if options.baselines:
        with phases("baselines (DiffMean, probe)"):
            baselines = _baselines(runner, pooled, inputs, logreg, options.seed)
    check()  # a cancel that came after the last check: nothing is saved
    listed = [(s.sae_id, s.feature) for s in [*ranking.a_side, *ranking.b_side]]
    listed += logreg.detector.keys if logreg else []
    for b in baselines or []:
        listed += [(r.sae_id, p.feature) for rs in b.directions.values() for r in rs for p in r.by_cosine[:5]]
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
        baselines=baselines,
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


def _baselines(
    runner: ActivationRunner, pooled: Pooled, inputs: RankInputs, logreg: LogRegResult | None, seed: int
) -> list[SiteBaselines]:
    """Per hooked site: its best single feature (by train AUROC, either side) and the sparse regression over every
    feature, against DiffMean and a probe on the site's residual, all on the same split."""
    y, train = inputs.y, inputs.train
    both = 0 < int(y[inputs.test].sum()) < len(inputs.test) and 0 < int(y[train].sum()) < len(train)
    if not both:
        return []
    col = {k: i for i, k in enumerate(inputs.keys)}
    shared: dict[str, np.ndarray] = {}
    if logreg is not None:
        shared["sparse regression over features"] = logreg.detector.score(
            inputs.X_max[:, [col[k] for k in logreg.detector.keys]]
        )
    out = []
    for site, H_ED in pooled.residual.items():
        sae_ids = [s for s, sae in runner.saes.items() if sae.require_site() == site]
        cols = np.array([i for i, (s, _) in enumerate(inputs.keys) if s in sae_ids])
        X_tr = inputs.X_max[train][:, cols]
        auc = auroc_from_ranks(column_ranks(X_tr), y[train])
        best = int(np.nanargmax(np.abs(np.nan_to_num(auc, nan=0.5) - 0.5)))
        sign = 1.0 if auc[best] >= 0.5 else -1.0
        scores = {"best feature": sign * inputs.X_max[:, cols[best]]} | shared
        comparison, directions = compare_site(site, H_ED, scores, y, train, inputs.test, seed)
        norm = float(np.linalg.norm(H_ED, axis=1).mean())
        readings = {
            name: [decompose(s, runner.saes[s], torch.from_numpy(d.w_D), norm) for s in sae_ids]
            for name, d in directions.items()
        }
        out.append(SiteBaselines(comparison, readings))
    return out
