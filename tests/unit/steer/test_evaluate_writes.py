"""What a steered feature writes (the weighted share of its promoted tokens in the output) beside what it reads,
by hand; the auto rule that picks the verdict's measure; the verdict following the measure it is given."""

import math

import pytest

from qscope.steer.evaluate.result import Interval, PointSummary
from qscope.steer.evaluate.verdict import decide
from qscope.steer.evaluate.writes import FeatureProfile, choose, profile_of, write_weights, writes_share
from qscope.store.queries import Context, FeatureDetail, FeatureRow, LogitEffect


def test_writes_is_the_share_of_promoted_tokens_weighted_by_logit_effect():
    weights = write_weights([(7, 2.0), (8, 1.0), (9, 0.5), (3, -1.0)])
    assert weights == {7: 1.0, 8: 0.5, 9: 0.25}  # over the strongest; a suppressed token is not promoted
    # 6 tokens: 7 twice (1 + 1), 8 once (0.5), 9 once (0.25), two others (0)
    assert writes_share([7, 1, 8, 7, 9, 2], weights) == pytest.approx(2.75 / 6)
    assert writes_share([1, 2], weights) == 0.0 and math.isnan(writes_share([], weights))
    assert list(write_weights([(t, 10.0 - t) for t in range(20)], n=3)) == [0, 1, 2]
    assert write_weights([(1, -0.5)]) == {}


def ctx(tokens, pos):
    return Context("top", None, 0, 1.0, 0, pos, tokens, [0.0] * len(tokens), tokens)


def detail(contexts, promoted):
    row = FeatureRow("sae", 3, 0.01, 1.0, 2.0, 9, "", [])
    effects = [LogitEffect(i, t, 1.0 - 0.1 * i) for i, t in enumerate(promoted)]
    return FeatureDetail(row, [], 1.0, contexts, [], effects, [], [])


def test_auto_picks_writes_for_a_feature_whose_logit_effects_are_sharper_than_its_input_pattern():
    # fires on a different token each time (reads: the tokens of the even ranks a, c, e, g never mark an odd
    # one), and what follows is one of its top promoted tokens in 6 of the 7 contexts that have a next token
    tops = [ctx([w, "\n"], 0) for w in ("a", "b", "c", "d", "e", "f", "g")] + [ctx(["h"], 0)]
    tops[0] = ctx(["a", "x"], 0)
    writer = profile_of(detail(tops, ["\n", ",\n", " a", " the", " of"]))
    assert writer.reads_sharpness == 0.0 and writer.writes_sharpness == pytest.approx(6 / 7)
    assert writer.weights == {0: 1.0, 1: 0.9, 2: 0.8, 3: 0.7, 4: 0.6}
    measure, why = choose("auto", writer)
    assert measure == "writes" and "86%" in why and " 0%" in why
    # every context marked on "b" and followed by a promoted token: both sides 1.0, and a tie goes to reads
    same = profile_of(detail([ctx(["b", "\n"], 0) for _ in range(6)], ["\n"]))
    assert (same.reads_sharpness, same.writes_sharpness) == (1.0, 1.0) and choose("auto", same)[0] == "reads"
    # a token detector: always marked on "def", followed by anything
    detector = profile_of(detail([ctx(["def", w], 0) for w in ("x", "y", "z", "w")], ["\n", " the"]))
    assert detector.reads_sharpness == 1.0 and detector.writes_sharpness == 0.0
    assert choose("auto", detector)[0] == "reads"
    assert choose("writes", detector) == ("writes", "the request asked for writes")
    assert choose("auto", FeatureProfile())[0] == "reads"  # the store cannot tell: reads
    assert choose("auto", None)[0] == "reads"


def iv(mean, half=0.05, n=16):
    return Interval(mean=mean, lo=mean - half, hi=mean + half, n=n)


def row(arm, strength, reads, writes, ratio=1.0):
    return PointSummary(
        arm=arm,
        strength=strength,
        rows=16,
        concept=iv(reads),
        concept_act=iv(1.0),
        writes=iv(writes),
        ppl=iv(20.0),
        ppl_ratio=iv(ratio),
    )


def test_the_verdict_follows_the_measure_it_is_given():
    """Issue 25's case: a feature that promotes tokens raises their share in the output (writes) while firing
    less on it (reads): writes says it works, reads that it is no better than controls."""
    table = [
        row("unsteered", None, 0.27, 0.145),
        row("intervention", 0.0, 0.27, 0.145),
        row("intervention", 1.0, 0.20, 0.21),
        row("intervention", 4.0, 0.05, 0.43, 1.5),
        row("negated", 1.0, 0.30, 0.10),
        row("negated", 4.0, 0.35, 0.05),
        row("random", 1.0, 0.25, 0.14),
        row("random", 4.0, 0.20, 0.03),
    ]
    writes = decide(table, "increase", 2.0, "writes")
    assert (writes.status, writes.strength, writes.measure) == ("works", 4.0, "writes")
    assert "promoted tokens" in writes.reason and "43%" in writes.reason
    reads = decide(table, "increase", 2.0, "reads")
    assert (reads.status, reads.measure) == ("no better than controls", "reads")
    assert decide(table, "increase", 2.0).measure == "reads"  # the default, as before
