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

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from qscope.explain.prompts import Example, FeatureExamples, firing_marks, marked, parse_answers, plain, scorer_messages

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


def detection_cases(fx: FeatureExamples, negatives: Sequence[Example], rng: random.Random) -> list[Case]:
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
