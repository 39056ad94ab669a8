"""Checks of a JSON request body, made once before any route parses it (qscope.web.security's Guard runs them).

Python's json module reads more than JSON: `NaN`, `Infinity` and numbers past the float range (1e999 becomes inf)
would reach the routes as non-finite floats, and `"\\ud800"` as a string holding a lone UTF-16 surrogate, which
no tokenizer and no UTF-8 encoder accepts. A body that is not UTF-8 would get FastAPI's undocumented 400, and
one nested thousands deep a RecursionError. Here each of these becomes one message naming the place
(`features[0].strength is NaN; give a finite number`) that the Guard answers with a 422.
"""

from __future__ import annotations

import json
import math
from typing import Any

from qscope.tokens import has_surrogate


class _NonFinite:
    """What the parser makes of NaN, Infinity and out-of-range numbers, to be found and named afterwards."""

    def __init__(self, text: str) -> None:
        self.text = text


def _number(text: str) -> float | _NonFinite:
    value = float(text)
    return value if math.isfinite(value) else _NonFinite(text)


def is_json(content_type: str) -> bool:
    """Whether FastAPI would parse a body of this content type as JSON."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def body_problem(body: bytes) -> str | None:
    """Why this JSON body cannot be taken (a sentence for the 422), or None (an empty body is left to the
    route)."""
    if not body.strip():
        return None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"The request body is not UTF-8 text (byte {e.start} is {body[e.start : e.start + 1]!r})."
    try:
        data = json.loads(text, parse_constant=_NonFinite, parse_float=_number)
    except RecursionError:
        return "The request body is nested too deeply."
    except json.JSONDecodeError as e:
        return f"The request body is not JSON: {e.msg} at line {e.lineno}, column {e.colno}."
    return _find(data, "")


def _find(value: Any, where: str) -> str | None:
    """The first non-finite number or lone surrogate in a parsed body, described with its place."""
    stack = [(value, where)]
    while stack:
        value, where = stack.pop()
        name = where or "the body"
        if isinstance(value, _NonFinite):
            return f"Bad parameter: {name} is {value.text}; give a finite number."
        if isinstance(value, str) and has_surrogate(value):
            return f"Bad parameter: {name} holds a lone UTF-16 surrogate ({_shown(value)}), which is not text."
        if isinstance(value, dict):
            for key, item in reversed(value.items()):
                if has_surrogate(key):
                    return f"Bad parameter: {name} has a key {_shown(key)} holding a lone UTF-16 surrogate."
                stack.append((item, f"{where}.{key}" if where else key))
        elif isinstance(value, list):
            stack += [(item, f"{where}[{i}]") for i, item in reversed(list(enumerate(value)))]
    return None


def _shown(text: str) -> str:
    """The start of the text as a repr, which writes a surrogate as a \\uXXXX escape."""
    return repr(text[:40] + ("..." if len(text) > 40 else ""))
