"""Steering evaluations without a model: intervals, text metrics, prompt files, limits, arms and the verdict."""

import base64
import math
import time

import pytest
from pydantic import ValidationError

from qscope.inputs.patterns import UserPattern
from qscope.steer.evaluate import arms
from qscope.steer.evaluate.measures import distinct_n, interval, longest_repeat, script_share, t_quantile, text_metrics
from qscope.steer.evaluate.request import EvalLimits, EvalRequest, TextMetrics, parse_prompt_file, read_prompts
from qscope.steer.evaluate.result import Interval, PointSummary
from qscope.steer.evaluate.verdict import decide
from qscope.steer.spec import FeatureSteer, SpecError, SteerSpec


def test_interval_is_the_student_t_interval():
    got = interval([1.0, 2.0, 3.0, 4.0, math.nan])
    half = 3.182 * math.sqrt((2.25 + 0.25 + 0.25 + 2.25) / 3 / 4)  # t(3) x sd / sqrt(n)
    assert got.n == 4 and got.mean == 2.5
    assert got.lo == pytest.approx(2.5 - half) and got.hi == pytest.approx(2.5 + half)
    assert interval([0.3]) == (0.3, 0.3, 0.3, 1)
    assert interval([]).n == 0 and math.isnan(interval([]).mean)
    assert t_quantile(16) == pytest.approx(2.120, abs=2e-3) and t_quantile(60) == pytest.approx(2.000, abs=2e-3)


def test_text_metrics():
    assert distinct_n([1, 2, 1, 2, 1], 2) == 2 / 4
    assert longest_repeat([5, 6, 7, 5, 6, 7, 9]) == 3 and longest_repeat([1, 2, 3]) == 0
    assert longest_repeat([4, 4, 4, 4]) == 3  # overlapping repeats count
    assert script_share("Hello 你好!", "latin") == pytest.approx(5 / 7)
    assert script_share("Hello 你好!", "cjk") == pytest.approx(2 / 7)
    assert math.isnan(script_share("123 ...", "latin"))
    m = text_metrics(
        "def Foo(): return",
        [1, 2, 3],
        TextMetrics(required=["def", "RETURN"], forbidden=["class"], regex=r"def \w+\(", scripts=["latin"]),
    )
    assert m["required"] == 1.0 and m["forbidden"] == 0.0 and m["regex"] == 1.0 and m["script_latin"] == 1.0
    assert m["tokens"] == 3 and m["chars"] == 17 and m["distinct_2"] == 1.0


def test_prompt_files():
    assert parse_prompt_file("a.txt", b"one\n\ntwo\n") == ["one", "", "two"]
    assert parse_prompt_file("a.jsonl", b'"one"\n{"prompt": "two"}\n{"text": "three"}\n') == ["one", "two", "three"]
    assert parse_prompt_file("a.csv", b'id,prompt\n1,one\n2,"two, too"\n') == ["one", "two, too"]
    assert parse_prompt_file("a.json", b'["one", {"prompt": "two"}]') == ["one", "two"]
    with pytest.raises(SpecError, match="is not text"):
        parse_prompt_file("a.txt", b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    with pytest.raises(SpecError, match="is not text"):
        parse_prompt_file("a.txt", b"abc\x00def")
    with pytest.raises(SpecError, match="line 2: not JSON"):
        parse_prompt_file("a.jsonl", b'"one"\n{oops\n')


@pytest.mark.parametrize(
    ("name", "data"),
    [("p.json", b"[" * 5000 + b"]" * 5000), ("p.jsonl", b'"one"\n' + b'{"p": ' * 5000 + b"1" + b"}" * 5000)],
)
def test_a_prompt_file_nested_past_reason_is_refused(name, data):
    with pytest.raises(SpecError, match="nested too deeply"):
        parse_prompt_file(name, data)


def test_a_user_regex_cannot_hold_the_evaluation():
    """`re` backtracks on (.|.)*@@ for ever (the server froze); here it ends at once, and a pattern that does run
    too long is reported as not measured (NaN), not run again."""
    t0 = time.monotonic()
    assert text_metrics("x" * 5000 + "@", [1], TextMetrics(regex="(.|.)*@@"))["regex"] == 0.0
    pattern = UserPattern("(.|.|.)*(?!)")
    asked = TextMetrics(regex=pattern.pattern)
    assert math.isnan(text_metrics("the cat sat on the mat, said the dog", [1], asked, pattern)["regex"])
    assert pattern.timed_out and math.isnan(text_metrics("x", [1], asked, pattern)["regex"])
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"strengths": ["NaN", 1]}, "strengths.0"),
        ({"strengths": [0, "1.5"]}, "strengths.1"),
        ({"max_ppl_ratio": "Infinity"}, "max_ppl_ratio"),
        ({"metrics": {"regex": "((a{65535}){65535}){65535}"}}, "too large"),
    ],
)
def test_requests_carry_only_finite_numbers_and_bounded_patterns(change, says):
    with pytest.raises(ValidationError, match=says):
        EvalRequest.model_validate({"spec": {"prompt": "x"}, "prompts": ["a", "b"], **change})


def spec(**kw):
    return SteerSpec(features=[FeatureSteer(sae_id="s", feature=3, **kw)])


def test_read_prompts_needs_one_source():
    upload = {"name": "p.txt", "content_base64": base64.b64encode(b"a\nb\n").decode()}
    assert read_prompts(EvalRequest(spec=spec(), prompts_file=upload), {}, 100) == ["a", "b"]
    assert read_prompts(EvalRequest(spec=spec(), prompts_text=" x \n\n y"), {}, 100) == [" x ", " y"]
    assert read_prompts(EvalRequest(spec=spec(), prompts=["def f():\n    ", " "]), {}, 100) == ["def f():\n    "]
    with pytest.raises(SpecError, match="exactly one"):
        read_prompts(EvalRequest(spec=spec(), prompts=["a"], prompt_set="prose"), {}, 100)
    with pytest.raises(SpecError, match="no built-in prompt set 'nope'"):
        read_prompts(EvalRequest(spec=spec(), prompt_set="nope"), {"prose": []}, 100)
    with pytest.raises(SpecError, match="prompt 2 has 5 characters; at most 4"):
        read_prompts(EvalRequest(spec=spec(), prompts=["abc", "abcde"]), {}, 4)


def test_limits_name_the_limit_and_the_number():
    req = EvalRequest(spec=spec(), prompts=["a", "b"])
    limits = EvalLimits(max_rows=100)
    with pytest.raises(SpecError, match=r"needs 4,096 rows \(64 prompts x 2 seeds x 32 .*at most 100 rows \(max_"):
        limits.check_rows(64, 2, 32)
    with pytest.raises(SpecError, match="1 prompt"):
        limits.check(req, 1)
    with pytest.raises(SpecError, match="9 seeds asked; at most 8"):
        limits.check(req.model_copy(update={"seeds": 9}), 4)


def test_arms_points_and_strengths():
    add = [FeatureSteer(sae_id="s", feature=3, mode="add", strength=-2.0)]
    pts = arms.points([0.0, 1.0, 4.0], add, n_random=2, instructed=True)
    names = [(p.arm, p.strength, p.control) for p in pts]
    assert names[:4] == [
        ("unsteered", None, None),
        ("intervention", 0.0, None),
        ("intervention", 1.0, None),
        ("intervention", 4.0, None),
    ]
    assert ("negated", 0.0, None) not in names and ("random", 4.0, 1) in names and ("prompt-only", None, None) in names
    assert len(pts) == 1 + 3 + 2 + 2 * 2 + 1 + 2
    assert arms.at_strength(add, 4.0)[0].strength == -4.0  # the spec's sign is kept
    assert arms.at_strength(add, 4.0, negate=True)[0].strength == 4.0
    ablate = [FeatureSteer(sae_id="s", feature=3, mode="ablate")]
    assert arms.sweep([0, 1, 2, 8], ablate) == [0.0, 1.0] and arms.at_strength(ablate, 0.0) == []
    assert all(p.arm != "negated" for p in arms.points([0.0, 1.0], ablate, 1, False))


def iv(mean, half=0.05, n=16):
    return Interval(mean=mean, lo=mean - half, hi=mean + half, n=n)


def row(arm, strength, concept, ratio=1.0):
    return PointSummary(
        arm=arm, strength=strength, rows=16, concept=iv(concept), concept_act=iv(1.0), ppl=iv(20.0), ppl_ratio=iv(ratio)
    )


def table(strong_ratio=1.5):
    return [
        row("unsteered", None, 0.1),
        row("intervention", 0.0, 0.1),
        row("intervention", 1.0, 0.15),
        row("intervention", 4.0, 0.5, 1.3),
        row("intervention", 8.0, 0.8, strong_ratio),
        row("negated", 1.0, 0.05),
        row("negated", 4.0, 0.02),
        row("negated", 8.0, 0.0),
        row("random", 1.0, 0.1),
        row("random", 4.0, 0.12),
        row("random", 8.0, 0.2),
    ]


def test_verdict_is_computed_from_the_intervals():
    v = decide(table(), "increase", 2.0)
    assert (v.status, v.strength, v.beats_controls) == ("works", 8.0, [4.0, 8.0])
    assert "random" in v.reason or "unsteered" in v.reason
    v = decide(table(strong_ratio=3.0), "increase", 2.0)
    assert (v.status, v.strength) == ("works", 4.0)  # the strongest that is fluent
    hurt = [p if p.strength not in (4.0,) else row("intervention", 4.0, 0.5, 2.5) for p in table(3.0)]
    v = decide(hurt, "increase", 2.0)
    assert (v.status, v.strength) == ("works but hurts fluency", 4.0)
    flat = [row(p.arm, p.strength, 0.1 if p.arm == "intervention" else p.concept.mean) for p in table()]
    v = decide(flat, "increase", 2.0)
    assert v.status == "no better than controls" and "overlaps" in v.reason
    v = decide(table(), "decrease", 2.0)
    assert v.status == "no better than controls"  # up is not down
