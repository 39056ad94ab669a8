"""How a token is shown to a person: whitespace and control characters made visible, one table for the whole
app (the harvest's labels and every page); and text no tokenizer takes (lone UTF-16 surrogates)."""

from __future__ import annotations

import re

# whitespace as a reader sees it; other control characters as their Unicode control pictures (U+2400 + code)
VISIBLE: dict[str, str] = {chr(c): chr(0x2400 + c) for c in range(32)} | {
    "\x7f": "␡",
    "\xa0": "⍽",
    " ": "·",
    "\n": "↵",
    "\t": "⇥",
}
_TABLE = str.maketrans(VISIBLE)
EMPTY = "∅"  # an empty token (a byte the tokenizer decodes to nothing)


def visible(token: str, limit: int | None = None) -> str:
    """A token with whitespace made visible ('·the', '↵'), empty as '∅'; with `limit`, cut to that many
    characters with '…'."""
    text = token.translate(_TABLE)
    if not text:
        return EMPTY
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


# A lone UTF-16 surrogate is a Python str character that is not text: JSON (a "\ud800" escape) and some corpora
# carry them, and no tokenizer or UTF-8 encoder accepts one. (A surrogate pair decodes to one real character.)
SURROGATE = re.compile("[\ud800-\udfff]")


def has_surrogate(text: str) -> bool:
    return not text.isascii() and SURROGATE.search(text) is not None


def without_surrogates(text: str) -> str:
    """The text with each lone surrogate replaced by U+FFFD, as a UTF-8 decoder does with a bad byte."""
    return SURROGATE.sub("\ufffd", text) if has_surrogate(text) else text
