"""Scores of an explanation, as in the published automated-interpretability methods: detection and fuzzing, each
the balanced accuracy of a scorer's verdicts.

- detection: the scorer reads the explanation and plain texts, held-out contexts where the feature fires mixed
  with contexts where it does not (qscope.explain.negatives), and says of each whether the feature is active;
- fuzzing: the scorer reads held-out firing contexts with tokens marked: in half of them the tokens where the
  feature fires, in the other half as many tokens where it does not; it says of each whether the marks fit.

Balanced accuracy = (true-positive rate + true-negative rate) / 2: 1.0 for a scorer that is always right, 0.5 for
one that always gives the same verdict, whatever the mix of cases. A verdict the scorer did not give (an
unreadable answer) counts as 0 and is counted in `unreadable`. A score needs cases of both kinds, else it is None.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from qscope.explain.prompts import (
    ContextExample,
    FeatureExamples,
    firing_marks,
    marked,
    parse_answers,
    plain,
    scorer_messages,
)

Trust = str  # 'beats chance' | 'at chance' | 'unscored'
CHANCE = 0.5  # the balanced accuracy of a scorer that always says the same thing, or guesses
Z95 = 1.96
Judge = Callable[[list[str]], list[bool | None]]  # numbered texts -> one verdict per text (None: none given)
Ask = Callable[[list[dict]], str]  # chat messages -> the model's answer
BATCH = 5  # texts per scorer prompt


@dataclass
class Case:
    text: str  # as the scorer sees it
    label: bool  # detection: the feature fires; fuzzing: the marks are where it fires


@dataclass
class Score:
    value: float | None  # balanced accuracy; None without cases of both kinds
    n: int  # cases asked about
    unreadable: int  # verdicts the scorer did not give (counted as 0)


def interval(value: float, n: int) -> tuple[float, float]:
    """95% Wilson interval of a score on n cases, read as a proportion of n verdicts right (for a balanced
    accuracy on balanced cases, as ours are, about right; with unbalanced cases a little narrow)."""
    if n <= 0:
        return 0.0, 1.0
    centre = (value + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 * math.sqrt(value * (1 - value) / n + Z95**2 / (4 * n * n)) / (1 + Z95**2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def trust(detection: float | None, detection_n: int | None, fuzzing: float | None, fuzzing_n: int | None) -> Trust:
    """How far to trust an explanation by its scores: 'beats chance' when at least one score's interval lies
    wholly above chance (0.5), 'at chance' when it was scored and none does, 'unscored' otherwise. The one rule
    the feature page, search ranking, SAE lists, lists, export and `qscope explain`'s summary all follow."""
    scores = [(v, n) for v, n in ((detection, detection_n), (fuzzing, fuzzing_n)) if v is not None]
    if not scores:
        return "unscored"
    return "beats chance" if any(interval(v, n or 0)[0] > CHANCE for v, n in scores) else "at chance"


def balanced_accuracy(labels: Sequence[bool], verdicts: Sequence[bool]) -> float | None:
    pos = [v for lab, v in zip(labels, verdicts, strict=True) if lab]
    neg = [not v for lab, v in zip(labels, verdicts, strict=True) if not lab]
    if not pos or not neg:
        return None
    return (sum(pos) / len(pos) + sum(neg) / len(neg)) / 2


def run_score(cases: Sequence[Case], judge: Judge, batch: int = BATCH) -> Score:
    """Ask `judge` about the cases, `batch` texts at a time, and score its verdicts."""
    verdicts: list[bool | None] = []
    for start in range(0, len(cases), batch):
        texts = [c.text for c in cases[start : start + batch]]
        got = list(judge(texts))[: len(texts)]
        verdicts += got + [None] * (len(texts) - len(got))
    value = balanced_accuracy([c.label for c in cases], [bool(v) for v in verdicts])
    return Score(value, len(cases), sum(v is None for v in verdicts))


def detection_cases(fx: FeatureExamples, negatives: Sequence[ContextExample], rng: random.Random) -> list[Case]:
    cases = [Case(plain(e), True) for e in fx.held_out] + [Case(plain(e), False) for e in negatives]
    rng.shuffle(cases)
    return cases


def fuzzing_cases(fx: FeatureExamples, rng: random.Random) -> list[Case]:
    """Even held-out examples marked where the feature fires (true), odd ones marked on as many tokens where it
    does not (false); an example without such tokens is left out."""
    cases = []
    for i, ex in enumerate(fx.held_out):
        marks = firing_marks(ex, fx.max_act)
        if i % 2 == 0 and any(marks):
            cases.append(Case(marked(ex, marks), True))
            continue
        quiet = [j for j, a in enumerate(ex.acts) if a <= 0]
        k = min(max(1, sum(marks)), len(quiet))
        if i % 2 == 1 and k:
            wrong = set(rng.sample(quiet, k))
            cases.append(Case(marked(ex, [j in wrong for j in range(len(ex.tokens))]), False))
    rng.shuffle(cases)
    return cases


def llm_judge(ask: Ask, explanation: str, kind: str) -> Judge:
    """A judge that asks a language model (kind 'detection' or 'fuzzing') and reads its list of 0s and 1s."""

    def judge(texts: list[str]) -> list[bool | None]:
        return parse_answers(ask(scorer_messages(explanation, texts, kind)), len(texts))

    return judge
