"""Regular expressions that people send, run so that none can hold the server: the one home for "run a user
pattern".

Python's `re` backtracks without limit and holds the GIL while it does: `(.|.)*@@` on a 40-token text never ends,
and the whole server with it. A user pattern here is
- bounded before it is compiled: at most MAX_CHARS characters, the syntax of Python's `re` (checked by its parser,
  so a pattern means what the docs say), and at most MAX_SIZE pattern items once counted repeats are expanded
  (the `regex` package expands `(a{1000}){1000}` while compiling, which would take minutes);
- compiled with the `regex` package, whose searches take a timeout and release the GIL (`concurrent=True`);
- searched under a time budget: each search gets at most SEARCH_S, all the searches of one pattern together at most
  its budget; past that the pattern is `timed_out` and answers None (not measured) instead of running again.
"""

from __future__ import annotations

import re
import time
from re import _parser as sre_parse  # type: ignore[attr-defined]  # the stdlib's own parser: what re.compile reads

import regex

MAX_CHARS = 200
MAX_SIZE = 5_000  # items after expanding counted repeats; compiling 5,000 takes ~25 ms
SEARCH_S = 0.05
BUDGET_S = 1.0

_REPEATS = {sre_parse.MAX_REPEAT, sre_parse.MIN_REPEAT, sre_parse.POSSESSIVE_REPEAT}


class PatternError(ValueError):
    """A pattern refused before it runs; the message says why."""


def _size(parsed) -> int:
    """Pattern items once counted repeats are expanded (the `regex` package writes out each required copy)."""
    total = 0
    for op, av in parsed:
        if op in _REPEATS:
            lo, _hi, sub = av
            total += 1 + max(lo, 1) * _size(sub)
        elif op == sre_parse.SUBPATTERN:
            total += 1 + _size(av[-1])
        elif op == sre_parse.BRANCH:
            total += 1 + sum(_size(b) for b in av[1])
        elif op in (sre_parse.ASSERT, sre_parse.ASSERT_NOT):
            total += 1 + _size(av[1])
        elif op == sre_parse.ATOMIC_GROUP:
            total += 1 + _size(av)
        elif op == sre_parse.GROUPREF_EXISTS:
            total += 1 + _size(av[1]) + (_size(av[2]) if av[2] else 0)
        else:
            total += 1
        if total > MAX_SIZE:  # stop early: a pattern may nest repeats whose product is astronomical
            return total
    return total


def check(pattern: str) -> None:
    """PatternError when the pattern is too long, not a Python regular expression, or too large once expanded."""
    if len(pattern) > MAX_CHARS:
        raise PatternError(f"the pattern has {len(pattern):,} characters; at most {MAX_CHARS}")
    try:
        parsed = sre_parse.parse(pattern)
    except (re.error, RecursionError, OverflowError) as e:
        raise PatternError(f"not a regular expression: {e}") from None
    if _size(parsed) > MAX_SIZE:
        raise PatternError(
            f"the pattern is too large once its counted repeats are written out (over {MAX_SIZE:,} items); "
            "use smaller {m,n} counts"
        )


class UserPattern:
    """A checked pattern with its time budget; `search` says whether it occurs, or None once it has timed out."""

    def __init__(self, pattern: str, budget_s: float = BUDGET_S, search_s: float = SEARCH_S) -> None:
        check(pattern)
        try:
            self.compiled = regex.compile(pattern)
        except regex.error as e:  # `re` and `regex` differ on a few corner cases
            raise PatternError(f"not a regular expression: {e}") from None
        self.pattern, self.budget_s, self.search_s, self.left_s = pattern, budget_s, search_s, budget_s
        self.timed_out = False

    def search(self, text: str) -> bool | None:
        if self.timed_out:
            return None
        t0 = time.monotonic()
        try:
            found = self.compiled.search(text, timeout=min(self.search_s, self.left_s), concurrent=True)
        except TimeoutError:
            self.timed_out = True
            return None
        finally:
            self.left_s -= time.monotonic() - t0
        if self.left_s <= 0:
            self.timed_out = True  # this search ended in time, but no other may start
        return found is not None
