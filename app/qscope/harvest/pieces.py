"""Documents in bounded pieces, so that tokenizing one never costs memory in proportion to its length.

A fast tokenizer keeps offsets and strings for every token of a call: a 30 MB one-line document tokenized whole
took 6 GB. Here a document (a str, or a large `.txt` file read block by block as a `TextFile`) is cut into pieces
of at most PIECE_CHARS characters, each cut made before a space that starts a word (`foo| bar`) where there is one
near the end. Qwen's pre-tokenizer splits text at exactly such places (a word takes the space before it), so the
pieces give the same tokens as the whole text; only a piece with no such place in its last SEARCH_CHARS
characters is cut where it is full. Lone UTF-16 surrogates (JSON can carry them) become U+FFFD.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from qscope.tokens import without_surrogates

PIECE_CHARS = 16_384  # characters per piece: well under a tokenizer's appetite, well over a word
SEARCH_CHARS = 2_048  # how far back from a full piece a cut before a word is looked for
BLOCK_CHARS = 65_536  # characters a TextFile reads at a time
HELD_CHARS = 1 << 20  # leading blank text held while a streamed document has shown nothing else; past it: dropped
_CUT = re.compile(r"(?<=\S) (?=[^\W\d_])")  # a space after a non-space, before a letter

Document = str | Iterable[str]  # the text, or the text in blocks


class CorpusError(ValueError):
    """A corpus that cannot be read, or holds too little text; the message says which and why."""


class TextFile:
    """A `.txt` document read lazily in blocks of text (UTF-8, bad bytes replaced), never held whole."""

    def __init__(self, path: Path, block_chars: int = BLOCK_CHARS) -> None:
        self.path, self.block_chars = Path(path), block_chars

    def __iter__(self) -> Iterator[str]:
        with self.path.open(encoding="utf-8", errors="replace") as f:
            while block := f.read(self.block_chars):
                yield block


def pieces(doc: Document, size: int = PIECE_CHARS) -> Iterator[str]:
    """The document's text in pieces of at most `size` characters whose concatenation is the text."""
    rest = ""
    for block in (doc,) if isinstance(doc, str) else doc:
        text = rest + block if rest else block
        start = 0
        while len(text) - start > size:
            cut = _cut(text, start, size)
            yield without_surrogates(text[start:cut])
            start = cut
        rest = text[start:]
    if rest:
        yield without_surrogates(rest)


def _cut(text: str, start: int, size: int) -> int:
    """Where the piece that starts at `start` ends: before the last word start in its last SEARCH_CHARS."""
    end = start + size
    cut = None
    for m in _CUT.finditer(text, max(start + 1, end - SEARCH_CHARS), end + 1):
        cut = m.start()
    return cut if cut is not None and cut > start else end


def content_pieces(doc: Document, size: int = PIECE_CHARS) -> Iterator[str]:
    """pieces(), or nothing for a document that holds only whitespace (it adds no text and no separator)."""
    if isinstance(doc, str):
        if doc and not doc.isspace():
            yield from pieces(doc, size)
        return
    held: list[str] = []  # leading blank pieces, kept until the document shows some text
    held_chars, seen = 0, False
    for piece in pieces(doc, size):
        if not seen and piece.isspace():
            held_chars += len(piece)
            if held_chars <= HELD_CHARS:
                held.append(piece)
            continue
        if not seen:
            seen = True
            yield from held
            held = []
        yield piece
