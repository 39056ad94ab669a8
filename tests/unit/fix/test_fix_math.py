"""The fix's parts that need no model: the candidate choice, the prompts, the candidate arms of an evaluation, the
row bound, and the ranking of interventions (it keeps the comparison's order; standings and verdicts computed)."""

import pytest

from qscope.discover.discovery import Discovery, ExampleOut
from qscope.discover.ranking import FeatureScore
from qscope.fix import candidates as pick
from qscope.fix.ranking import headline, is_intervention, rank
from qscope.fix.request import PROMPT_CHARS, FixSettings, rows_at_most
from qscope.fix.result import Candidate
from qscope.steer.evaluate import arms
from qscope.steer.evaluate.compare import compare_arms
from qscope.steer.evaluate.result import Interval, PointSummary
from qscope.steer.spec import FeatureSteer

L0, L1 = "rel__layer0", "rel__layer1"


def score(sae_id: str, feature: int, train: float) -> FeatureScore:
    return FeatureScore(sae_id, feature, train, train - 0.05, 0.0, 0.8, 0.8, 1.0, 0.0, 1.0, 1.0, 0.9, 0.9, 0.1)


def test_choose_takes_the_top_live_features_of_each_sae_the_best_first():
    a_side = [score(L1, 7, 0.99), score(L1, 3, 0.97), score(L0, 5, 0.96), score(L1, 9, 0.95), score(L0, 2, 0.9)]
    a_side += [score(L0, 8, 0.8)]
    dead = {(L0, 5)}
    picked = pick.choose(a_side, [L0, L1], 2, lambda s, f: (s, f) not in dead)
    assert [(p.sae_id, p.feature) for p in picked] == [(L1, 7), (L1, 3), (L0, 2), (L0, 8)]
    assert [(p.sae_id, p.feature) for p in pick.choose(a_side, [L0, L1], 1, lambda s, f: True)] == [(L1, 7), (L0, 5)]
    assert pick.choose([], [L0], 2, lambda s, f: True) == []


def discovery(n_test_b: int) -> Discovery:
    ex = [ExampleOut("a" * 500, 1, "test", 5, False), ExampleOut("a2", 1, "test", 2, False)]
    ex += [ExampleOut(f"b{i}" + "x" * 400, 0, "test", 5, False) for i in range(n_test_b)]
    ex += [ExampleOut("a-train", 1, "train", 2, False), ExampleOut("b-train", 0, "train", 2, False)]
    return Discovery.model_construct(examples=ex, names=("code", "prose"), model_id="m", id="d1")


def test_prompts_are_the_held_out_examples_of_the_set_the_goal_starts_from():
    d = discovery(3)
    texts, source = pick.prompts_of(d, FixSettings(goal="increase", max_prompts=2))
    assert texts == [f"b{i}" + "x" * (PROMPT_CHARS - 2) for i in range(2)] and "'prose'" in source
    texts, _ = pick.prompts_of(d, FixSettings(goal="decrease"))
    assert texts == ["a" * PROMPT_CHARS, "a2"]
    texts, source = pick.prompts_of(discovery(1), FixSettings(goal="increase"))  # one B: the whole test split
    assert len(texts) == 3 and "the held-out test split" in source
    texts, source = pick.prompts_of(d, FixSettings(prompts=["p1", " ", "p2"]))
    assert texts == ["p1", "p2"] and source == "2 prompts given"
    assert pick.train_sets(d) == (["a-train"], ["b-train"])


def test_the_evaluation_steers_each_candidate_alone_with_the_goals_sign():
    d = discovery(3)
    picked = [score(L1, 7, 0.99), score(L0, 2, 0.9)]
    req = pick.eval_request(d, picked, ["p1", "p2"], FixSettings(goal="decrease", strengths=[0, 1, 2]), seed=5)
    assert [(f.sae_id, f.feature, f.strength) for f in req.spec.features] == [(L1, 7, -1.0)]
    assert [(f.sae_id, f.feature, f.strength) for f in req.candidates] == [(L0, 2, -1.0)]
    assert (req.concept.sae_id, req.concept.feature, req.goal, req.measure) == (L1, 7, "decrease", "reads")
    assert req.diffmean is not None and req.spec.seed == 5
    points = arms.points([0, 1, 2], req.spec.features, 1, False, True, len(req.candidates))
    cands = [p for p in points if p.arm.startswith("candidate-")]
    assert cands == [arms.Point("candidate-1", 1.0), arms.Point("candidate-1", 2.0)]  # not at strength 0
    steered = arms.point_features(cands[1], req.spec.features, [[]], req.candidates)
    assert [(f.sae_id, f.feature, f.strength) for f in steered] == [(L0, 2, -2.0)]
    assert arms.candidate_index("candidate-12") == 11 and arms.candidate_index("candidates") is None


@pytest.mark.parametrize(("per_sae", "n_random", "temperature"), [(1, 0, 0.7), (2, 3, 0.7), (4, 1, 0.0)])
def test_the_row_bound_is_the_engines_row_count(per_sae, n_random, temperature):
    s = FixSettings(
        per_sae=per_sae, random_controls=n_random, strengths=[0, 0.5, 1, 1], seeds=3, temperature=temperature
    )
    features = [FeatureSteer(sae_id=L0, feature=1, mode="add", strength=1.0)]
    sweep = arms.sweep(s.strengths, features)
    points = arms.points(sweep, features, n_random, False, True, per_sae * 2 - 1)
    seeds = 1 if temperature == 0 else 3
    assert rows_at_most(s, 2, 5) == 5 * seeds * len(points)


def iv(mean: float, half: float = 0.05) -> Interval:
    return Interval(mean=mean, lo=mean - half, hi=mean + half, n=16)


def point(arm: str, strength: float | None, concept: float, ratio: float = 1.0) -> PointSummary:
    return PointSummary(
        arm=arm, strength=strength, rows=16, concept=iv(concept), concept_act=iv(1.0), ppl=iv(20.0), ppl_ratio=iv(ratio)
    )


def table() -> list[PointSummary]:
    return [
        point("unsteered", None, 0.10),
        point("intervention", 0.0, 0.10),
        point("intervention", 1.0, 0.50),  # beats every control: works
        point("negated", 1.0, 0.05),
        point("random", 1.0, 0.12),
        point("random", 2.0, 0.15, 1.5),
        point("candidate-1", 1.0, 0.40),
        point("candidate-1", 2.0, 0.58, 1.5),  # its best fluent point, overlapping DiffMean's: as good
        point("candidate-2", 1.0, 0.20),  # beaten by the best
        point("candidate-3", 1.0, 0.90, 4.0),  # only past the bound: not fluent, not ranked
        point("diffmean", 1.0, 0.62),  # the best
    ]


CANDS = [
    Candidate(arm=a, sae_id=L1, feature=f, label=f"f{f}", train_auroc=0.9, test_auroc=0.9)
    for a, f in (("intervention", 7), ("candidate-1", 3), ("candidate-2", 4), ("candidate-3", 5))
]


def test_the_ranking_keeps_the_comparisons_order_with_standings_and_verdicts():
    t = table()
    c = compare_arms(t, "increase", 2.0, names={"candidate-1": "layer1 #3"})
    ranked = rank(t, c, CANDS)
    assert [x.arm for x in ranked] == [b.arm for b in c.arms if is_intervention(b.arm)]
    assert [x.arm for x in ranked] == ["diffmean", "candidate-1", "intervention", "candidate-2", "candidate-3"]
    assert [x.rank for x in ranked] == [1, 2, 3, 4, None]
    assert [x.standing for x in ranked] == [
        "best",
        "as good as the best",  # 0.58 [0.53, 0.63] overlaps 0.62 [0.57, 0.67]
        "worse than the best",
        "worse than the best",
        "not fluent",
    ]
    assert (ranked[1].strength, ranked[1].name, ranked[1].label) == (2.0, "layer1 #3", "f3")
    by = {x.arm: x for x in ranked}
    assert by["intervention"].verdict == "works" and by["diffmean"].verdict == "works"
    assert by["candidate-2"].verdict == "no better than controls"  # 0.20 [0.15, 0.25] overlaps random 0.12 [0.07, 0.17]
    assert by["candidate-3"].verdict == "works but hurts fluency"
    assert by["diffmean"].kind == "diffmean" and by["diffmean"].sae_id is None
    sentence = headline(ranked, c.best, "DiffMean", "increase")
    assert sentence.startswith(
        "DiffMean does best at strength 1, as good as layer1 #3 (62% [57%–67%]); its verdict: works"
    )


def test_a_control_that_does_best_is_said_and_no_fluent_intervention_is_none():
    t = [point("unsteered", None, 0.10), point("random", 1.0, 0.60), point("intervention", 1.0, 0.30)]
    c = compare_arms(t, "increase", 2.0)
    ranked = rank(t, c, CANDS[:1])
    assert ranked[0].standing == "best" and ranked[0].verdict == "no better than controls"
    assert "random features, not an intervention, does best of all the arms" in headline(
        ranked, c.best, "random features", "increase"
    )
    t = [point("unsteered", None, 0.10), point("intervention", 1.0, 0.30, 9.0)]
    ranked = rank(t, compare_arms(t, "increase", 2.0), CANDS[:1])
    assert [x.rank for x in ranked] == [None]
    assert headline(ranked, None, "", "increase").startswith("no intervention keeps perplexity within the bound")
