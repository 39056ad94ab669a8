"""What people send, taken safely (qscope.inputs): the finite-float type, the reader of uploaded files and user
regular expressions under a time limit. No model is needed."""

import math
import time

import pytest
from pydantic import TypeAdapter, ValidationError

from qscope.inputs import files, patterns
from qscope.inputs.numbers import Finite
from qscope.inputs.patterns import PatternError, UserPattern


@pytest.mark.parametrize("value", ["NaN", "1.5", "inf", True, math.nan, math.inf, -math.inf, None, 10**400])
def test_finite_takes_only_finite_numbers(value):
    with pytest.raises(ValidationError):
        TypeAdapter(Finite).validate_python(value)


def test_finite_takes_json_numbers_and_says_so_in_the_schema():
    finite = TypeAdapter(Finite)
    assert finite.validate_python(2) == 2.0 and finite.validate_json("0.25") == 0.25
    with pytest.raises(ValidationError, match="finite number"):
        finite.validate_json("1e999")  # JSON's parser makes inf of it
    assert finite.json_schema() == {"type": "number"}


def test_nested_json_is_refused_before_it_recurses():
    for depth in (files.MAX_DEPTH + 1, 100_000):  # past the bound; past Python's recursion limit
        with pytest.raises(files.UploadError, match="nested too deeply"):
            files.json_value("[" * depth + "]" * depth, "p.json")
    deep_enough = "[" * files.MAX_DEPTH + '"x"' + "]" * files.MAX_DEPTH
    assert files.json_value(deep_enough, "p.json") is not None
    with pytest.raises(files.UploadError, match="'e.jsonl', line 2: JSON nested too deeply"):
        list(files.json_lines('{"text": "a"}\n' + '{"a": ' * 50_000 + "1" + "}" * 50_000, "e.jsonl"))


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_in_an_upload_are_refused(number):
    with pytest.raises(files.UploadError, match="not a finite number"):
        files.json_value(f'[{{"text": "a", "label": {number}}}]', "p.json")


def test_text_of_an_upload():
    assert files.text_of("a.txt", "\ufeffhé\n".encode()) == "hé\n"
    with pytest.raises(files.UploadError, match="not UTF-8 at byte 1"):
        files.text_of("a.txt", b"a\xff")
    with pytest.raises(files.UploadError, match="NUL"):
        files.text_of("a.txt", b"a\x00b")
    assert files.csv_rows('a,b\n1,"x, y"\n', "a.csv") == [["a", "b"], ["1", "x, y"]]


def test_a_pattern_that_backtracks_without_end_times_out_quickly():
    pattern = UserPattern("(.|.|.)*(?!)")  # 3^n paths to fail on a text of n characters
    t0 = time.monotonic()
    assert pattern.search("the cat sat on the mat and the dog sat on the log") is None
    assert pattern.timed_out and time.monotonic() - t0 < 2
    assert pattern.search("x") is None  # once timed out, it does not run again


def test_the_budget_covers_all_searches_of_a_pattern():
    pattern = UserPattern(r"\w+", budget_s=0.0)
    assert pattern.search("anything") is None and pattern.timed_out
    fine = UserPattern(r"\bcat\b")
    assert fine.search("the cat sat") is True and fine.search("concatenate") is False and not fine.timed_out


@pytest.mark.parametrize(
    ("pattern", "says"),
    [
        ("((a{65535}){65535}){65535}", "too large"),  # the regex package would expand it for minutes
        ("((a?){1000}){1000}", "too large"),
        ("[ab]{100000}", "too large"),
        ("(", "not a regular expression"),
        (r"\p{L}", "not a regular expression"),  # the regex package's syntax, not Python's
        ("a" * (patterns.MAX_CHARS + 1), f"at most {patterns.MAX_CHARS}"),
    ],
)
def test_patterns_are_bounded_before_they_compile(pattern, says):
    t0 = time.monotonic()
    with pytest.raises(PatternError, match=says):
        UserPattern(pattern)
    assert time.monotonic() - t0 < 1
