"""The reader of uploaded prompt and example files (steering evaluations, discover): their bytes as text, JSON
values (a whole file or one per line) and CSV rows. What each caller takes from the values (which field is the
prompt, which the label) stays with the caller; the rules of reading are here, once.

An upload is data from anyone, so every way it can fail is an UploadError naming the file (and line): not UTF-8,
NUL bytes, not JSON, JSON nested more than MAX_DEPTH deep (Python's parser recurses once per level: thousands of
`[` would end in a RecursionError), a number that is not finite (Python's parser reads `NaN`, `Infinity` and turns
1e999 into inf), or a CSV the csv module cannot read.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

from qscope.inputs.numbers import finite

MAX_DEPTH = 32  # nested arrays and objects in one JSON value; prompt and example files need two or three


class UploadError(ValueError):
    """An uploaded file that cannot be read; the message names the file and what is wrong."""


def text_of(name: str, data: bytes) -> str:
    """The file's text: UTF-8 (a byte order mark dropped) without NUL bytes."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UploadError(f"the file {name!r} is not text (not UTF-8 at byte {e.start})") from None
    if "\x00" in text:
        raise UploadError(f"the file {name!r} is not text (it holds NUL bytes)")
    return text


def _constant(text: str) -> float:
    raise ValueError(f"{text} is not a finite number")


def _number(text: str) -> float:
    return finite(float(text))


def _depth(value: Any) -> int:
    """How deeply arrays and objects nest in a parsed value (0 for a scalar), without recursing."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, list):
            deepest = max(deepest, depth + 1)
            stack += [(item, depth + 1) for item in value if isinstance(item, dict | list)]
    return deepest


def json_value(text: str, name: str, line: int = 1) -> Any:
    """One JSON value of the file (its whole text, or line `line` of a .jsonl)."""
    where = f"the file {name!r}, line {line}"
    try:
        value = json.loads(text, parse_constant=_constant, parse_float=_number)
    except json.JSONDecodeError as e:
        raise UploadError(f"{where}: not JSON ({e.msg})") from None
    except RecursionError:
        raise UploadError(f"{where}: JSON nested too deeply (at most {MAX_DEPTH} levels)") from None
    except ValueError as e:  # from _constant or _number
        raise UploadError(f"{where}: {e}") from None
    if _depth(value) > MAX_DEPTH:
        raise UploadError(f"{where}: JSON nested too deeply (at most {MAX_DEPTH} levels)")
    return value


def json_lines(text: str, name: str) -> Iterator[tuple[int, Any]]:
    """(line number, value) of each non-blank line of a .jsonl file."""
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            yield n, json_value(line, name, n)


def csv_rows(text: str, name: str) -> list[list[str]]:
    """The rows of a CSV file (the header, if it has one, first)."""
    try:
        return list(csv.reader(io.StringIO(text)))
    except csv.Error as e:
        raise UploadError(f"the file {name!r} is not a readable CSV file: {e}") from None
