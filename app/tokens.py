"""How a token is shown to a person: whitespace and control characters made visible, one table for the whole
app (the harvest's labels and every page)."""

from __future__ import annotations

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
