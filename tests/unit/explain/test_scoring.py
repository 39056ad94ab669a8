"""Explanation prompts and scores on hand-built features: detection and fuzzing equal hand computations (an oracle
scorer 1.0, a constant one 0.5), through the judge and through the prompt and answer parsing."""

import random
import re

import pytest

from qscope.explain.prompts import (
    ContextExample,
    clean_explanation,
    explainer_messages,
    firing_marks,
    marked,
    parse_answers,
    split_examples,
    window,
)
from qscope.explain.scoring import (
    Case,
    balanced_accuracy,
    detection_cases,
    fuzzing_cases,
    llm_judge,
    run_score,
)
from qscope.store.queries import Context, FeatureDetail, FeatureRow, IntervalBin, LogitEffect


def ctx(kind, rank, words, fire_at, act, b=None):
    acts = [act if i in fire_at else 0.0 for i in range(len(words))]
    return Context(kind, b, rank, act, 0, max(fire_at), words, acts, words)


def detail(n_top=14) -> FeatureDetail:
    """A feature firing on 'cat' (and weaker on 'dog') in each context."""
    top = [ctx("top", r, ["the", " big", " cat", " sat", f" {r}"], {2}, 10.0 - r * 0.1) for r in range(n_top)]
    bins = [
        IntervalBin(
            b, b, b + 1, [ctx("interval", r, ["a", " dog", " ran", f" b{b}r{r}"], {1}, b + 0.5, b) for r in range(3)]
        )
        for b in (3, 2, 1)
    ]
    row = FeatureRow("sae", 7, 0.01, 3.0, 10.0, 99, "cat", [" cat"])
    return FeatureDetail(row, [], 1.0, top, bins, [LogitEffect(1, " meow", 2.0)], [LogitEffect(2, " bark", -1.0)], [])


def test_split_shows_the_strongest_and_holds_out_the_rest_across_bins():
    fx = split_examples(detail(), n_top=10, n_bins=2, n_held=6)
    assert len(fx.shown) == 12 and len(fx.held_out) == 6
    shown_ids = {e.tokens[-1] for e in fx.shown}
    assert not shown_ids & {e.tokens[-1] for e in fx.held_out}  # held-out contexts were never shown
    # in turn: the next top context, then the next sample of each bin
    assert [e.tokens[-1] for e in fx.held_out] == [" 10", " b3r1", " b2r1", " b1r0", " 11", " b3r2"]
    cut = split_examples(detail(), n_top=1, n_bins=0, n_held=1, before=1, after=1)
    assert cut.shown[0].tokens == [" big", " cat", " sat"] and cut.shown[0].acts == [0.0, 10.0, 0.0]
    assert fx.promotes == [" meow"] and fx.suppresses == [" bark"]


def test_explainer_prompt_marks_firing_tokens_with_activations_and_logits():
    fx = split_examples(detail(), n_top=2, n_bins=1, n_held=4)
    user = explainer_messages(fx)[1]["content"]
    assert "1. the big<< cat>> sat 0\n   activations: cat 10" in user
    assert "a<< dog>> ran b3r0\n   activations: dog 4" in user  # 3.5 of max 10 on a 0-10 scale
    assert "more likely next: ' meow'" in user and "less likely: ' bark'" in user


def test_marked_runs_and_newlines():
    ex = ContextExample(["a", "\n", "b", "c", "d"], [0, 1, 1, 0, 1])
    assert marked(ex, [a > 0 for a in ex.acts]) == "a<<\\nb>>c<<d>>"


@pytest.mark.parametrize(
    ("answer", "want"),
    [
        ("[1, 0, 1]", [True, False, True]),
        ("Sure! [0,1] and more", [False, True, None]),
        ("1\n0\n1\n1", [True, False, True]),
        ("no idea", [None, None, None]),
        ("[1, 0, 10, 0.5, 1]", [True, False, True]),
    ],
)
def test_parse_answers(answer, want):
    assert parse_answers(answer, 3) == want


@pytest.mark.parametrize(
    ("answer", "want"),
    [
        ("Explanation: Python import statements.\n", "Python import statements."),
        ('\n\n  "closing brackets"  \nmore', "closing brackets"),
        ("- the word 'cat'", "the word 'cat'"),
        ("<script>alert(1)</script> tags", "<script>alert(1)</script> tags"),  # kept as text; pages escape it
        ("   \n ... \n", ""),
    ],
)
def test_clean_explanation(answer, want):
    assert clean_explanation(answer) == want


def test_balanced_accuracy_by_hand():
    labels = [True, True, True, True, False, False]
    assert balanced_accuracy(labels, labels) == 1.0
    assert balanced_accuracy(labels, [True] * 6) == 0.5 and balanced_accuracy(labels, [False] * 6) == 0.5
    assert balanced_accuracy(labels, [True, True, True, False, True, False]) == pytest.approx((3 / 4 + 1 / 2) / 2)
    assert balanced_accuracy([True, True], [True, False]) is None  # one class only: no balanced accuracy


def cases_of(fx, rng):
    negatives = [ContextExample(["x", " y", f" {i}"], [0.0] * 3) for i in range(4)]
    return detection_cases(fx, negatives, rng), fuzzing_cases(fx, rng)


def test_oracle_scores_one_and_constant_scores_half():
    fx = split_examples(detail(), n_top=10, n_bins=3, n_held=6)
    det, fuz = cases_of(fx, random.Random(0))
    assert sum(c.label for c in det) == 6 and sum(not c.label for c in det) == 4
    assert sum(c.label for c in fuz) == 3 and sum(not c.label for c in fuz) == 3
    for cases in (det, fuz):
        truth = {c.text: c.label for c in cases}
        assert run_score(cases, lambda texts, t=truth: [t[x] for x in texts]).value == 1.0
        assert run_score(cases, lambda texts: [True] * len(texts)).value == 0.5
        assert run_score(cases, lambda texts: [False] * len(texts)).value == 0.5


def test_a_scorer_with_known_mistakes_scores_the_hand_figure():
    cases = [Case(f"p{i}", True) for i in range(4)] + [Case(f"n{i}", False) for i in range(4)]
    wrong = {"p0", "n0", "n1"}  # 3 of 4 positives right, 2 of 4 negatives right
    score = run_score(cases, lambda texts: [(t in wrong) != t.startswith("p") for t in texts], batch=3)
    assert score.value == pytest.approx((3 / 4 + 2 / 4) / 2) and score.n == 8 and score.unreadable == 0


def oracle_ask(truth):
    """A language model that knows the answers: reads the numbered texts of the prompt, answers its list."""

    def ask(messages):
        user = messages[-1]["content"]
        texts = re.findall(r"^\d+\. (.*)$", user.split("\n\n", 2)[2], flags=re.M)
        return "[" + ", ".join("1" if truth[t] else "0" for t in texts) + "]"

    return ask


def test_scores_through_prompts_and_answer_parsing():
    fx = split_examples(detail(), n_top=10, n_bins=3, n_held=6)
    det, fuz = cases_of(fx, random.Random(1))
    for kind, cases in (("detection", det), ("fuzzing", fuz)):
        truth = {c.text: c.label for c in cases}
        assert run_score(cases, llm_judge(oracle_ask(truth), "cats", kind)).value == 1.0
        assert run_score(cases, llm_judge(lambda m: "[1, 1, 1, 1, 1]", "cats", kind)).value == 0.5
        garbage = run_score(cases, llm_judge(lambda m: "I cannot say.", "cats", kind))
        assert garbage.value == 0.5 and garbage.unreadable == len(cases)  # unreadable verdicts count as 0


def test_a_character_split_over_byte_tokens_reaches_the_explainer_whole():
    """The prompt shows `日本` as characters (the pieces pages show), never `<0xE6>`, and a byte token's activation
    goes to the character it is part of."""
    tokens = [" in", "<0xE6><0x97>", "<0xA5>", "<0xE6><0x9C>", "<0xAC>", " today"]
    shown = [" in", "", "日", "", "本", " today"]
    acts = [0.0, 9.0, 1.0, 0.0, 4.0, 0.0]
    example = window(Context("top", None, 0, 9.0, 0, 1, tokens, acts, shown), before=12, after=4)
    assert example.tokens == [" in", "日", "本", " today"] and example.acts == [0.0, 9.0, 4.0, 0.0]
    assert marked(example, firing_marks(example, 9.0)) == " in<<日本>> today"
