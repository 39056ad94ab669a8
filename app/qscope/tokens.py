"""How a token is shown to a person, for the whole app (the harvest's labels and every page).

- whitespace and control characters made visible (`visible`, `VISIBLE`);
- a token's raw bytes (`vocab_bytes`): byte-level BPE tokenizers (GPT-2, Qwen) spell each byte as one printable
  character, and a token may hold part of a UTF-8 character (Qwen splits many CJK characters and emoji over two
  or three tokens). Decoding one such token alone gives U+FFFD; its bytes say what it really is;
- text no tokenizer takes: lone UTF-16 surrogates (`has_surrogate`, `without_surrogates`);
- bytes as text (`show_bytes`, `Utf8Pieces`, `readable`, `characters`): whole characters as themselves, a byte
  that completes no character as ``<0xE2>``, never U+FFFD. In a run of tokens (a context, a text, a completion)
  a character split over tokens is shown on the token that completes it; the tokens before it hold only its
  first bytes and show as an empty piece (pages draw a thin mark there, the token's own bytes on hover);
  `characters` gives each token the characters it is part of (for a chip naming one token).

Nothing here imports a tokenizer library: `vocab_bytes` takes any Hugging Face tokenizer object.
"""

from __future__ import annotations

import codecs
import json
import re
import unicodedata
import weakref
from bisect import bisect_left
from collections.abc import Sequence
from itertools import accumulate

# whitespace as a reader sees it; other control characters as their byte, like a byte that completes no
# character ('<0x03>'): the Unicode control pictures (U+2400 + code) are missing from common fonts (DejaVu, the
# Linux default, has none) and showed as empty boxes
VISIBLE: dict[str, str] = {chr(c): f"<0x{c:02X}>" for c in range(32)} | {
    "\x7f": "<0x7F>",
    "\xa0": "⍽",
    " ": "·",
    "\n": "↵",
    "\t": "⇥",
    "\u3000": "␣",  # the ideographic (full-width) space of CJK text
}
_TABLE = str.maketrans(VISIBLE)
EMPTY = "∅"  # an empty token (one whose bytes are none at all)
_INVISIBLE = {"Mn", "Me", "Cf"}  # combining marks and format characters: nothing to see on their own


def visible(token: str, limit: int | None = None) -> str:
    """A token with whitespace made visible ('·the', '↵'), empty as '∅', one made only of marks that draw
    nothing alone (a variation selector, a zero-width joiner, a combining accent) as their code points
    ('<U+FE0F>'); with `limit`, cut to that many characters with '…'."""
    text = token.translate(_TABLE)
    if not text:
        return EMPTY
    if marks_only(text):
        text = code_points(text)
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


def marks_only(text: str) -> bool:
    """Whether the text is only marks that draw nothing on their own (combining marks, format characters)."""
    return bool(text) and not text.isascii() and all(unicodedata.category(c) in _INVISIBLE for c in text)


def code_points(text: str) -> str:
    """'<U+FE0F>' for each character."""
    return "".join(f"<U+{ord(c):04X}>" for c in text)


# A lone UTF-16 surrogate is a Python str character that is not text: JSON (a "\ud800" escape) and some corpora
# carry them, and no tokenizer or UTF-8 encoder accepts one. (A surrogate pair decodes to one real character.)
SURROGATE = re.compile("[\ud800-\udfff]")


def has_surrogate(text: str) -> bool:
    return not text.isascii() and SURROGATE.search(text) is not None


def without_surrogates(text: str) -> str:
    """The text with each lone surrogate replaced by U+FFFD, as a UTF-8 decoder does with a bad byte."""
    return SURROGATE.sub("\ufffd", text) if has_surrogate(text) else text


def _byte_alphabet() -> dict[str, int]:
    """GPT-2's byte-level alphabet, which Qwen's tokenizers use: printable Latin-1 bytes stand for themselves,
    the other 68 bytes (control, space, soft hyphen, ...) for the characters from U+0100 on, in byte order."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = {b: chr(b) for b in kept}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return {c: b for b, c in chars.items()}


BYTE_OF_CHAR: dict[str, int] = _byte_alphabet()
_SP_BYTE = re.compile(r"<0x([0-9A-Fa-f]{2})>")  # SentencePiece's byte-fallback pieces


def byte_level_bytes(piece: str) -> bytes | None:
    """The bytes a byte-level piece ('ĠæĹ¥') spells, or None when a character is outside the alphabet."""
    try:
        return bytes(BYTE_OF_CHAR[c] for c in piece)
    except KeyError:
        return None


def _is_byte_level(tokenizer) -> bool:
    """Whether the tokenizer spells bytes with the byte-level alphabet (its decoder is ByteLevel)."""
    if hasattr(tokenizer, "byte_decoder"):  # the slow GPT-2 / Qwen2 tokenizers
        return True
    decoder_obj = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
    if decoder_obj is None:
        return False
    decoder = json.loads(decoder_obj.__getstate__())  # the decoder alone (the whole tokenizer's JSON is MBs)
    kinds = [decoder.get("type")] + [d.get("type") for d in decoder.get("decoders", [])]
    return "ByteLevel" in kinds


def vocab_bytes(tokenizer, n: int | None = None) -> list[bytes]:
    """The raw bytes of every token id 0..n-1 (n: the tokenizer's size by default; ids past it get b'').

    Added and special tokens are their text; a byte-level tokenizer's pieces map back through its alphabet;
    SentencePiece pieces give '▁' as a space and '<0xNN>' as that byte; anything else is its decoded text."""
    size = len(tokenizer)
    n = size if n is None else n
    byte_level = _is_byte_level(tokenizer)
    added = {int(i): t.content for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items()}
    pieces = tokenizer.convert_ids_to_tokens(list(range(min(n, size))))
    out: list[bytes] = []
    for i, piece in enumerate(pieces):
        if i in added:
            out.append(added[i].encode())
            continue
        raw = byte_level_bytes(piece) if byte_level and piece is not None else None
        if raw is None and piece is not None and (m := _SP_BYTE.fullmatch(piece)):
            raw = bytes([int(m.group(1), 16)])
        if raw is None and piece is not None and not byte_level and "▁" in piece:
            raw = piece.replace("▁", " ").encode()
        out.append(raw if raw is not None else tokenizer.decode([i]).encode())
    return out + [b""] * (n - len(out))


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def cached_vocab_bytes(tokenizer) -> list[bytes]:
    """`vocab_bytes(tokenizer)`, worked out once per tokenizer object (a served model keeps its tokenizer)."""
    found = _CACHE.get(tokenizer)
    if found is None:
        found = _CACHE[tokenizer] = vocab_bytes(tokenizer)
    return found


def byte_mark(b: int) -> str:
    """A byte that is not part of a whole character, as text: '<0xE2>'."""
    return f"<0x{b:02X}>"


def _spans(buf: bytes, final: bool) -> tuple[list[tuple[int, int, str]], int]:
    """(start, end, text) of each character or lone byte of `buf`, and how many bytes they cover: the rest is
    the start of a character still waiting for its last bytes (none when `final`)."""
    out, i = [], 0
    while i < len(buf):
        n = _char_len(buf[i])
        if n and i + n <= len(buf):
            try:
                out.append((i, i + n, buf[i : i + n].decode("utf-8")))
                i += n
                continue
            except UnicodeDecodeError:
                pass
        elif n and not final and _valid_prefix(buf[i:]):
            break
        out.append((i, i + 1, byte_mark(buf[i])))
        i += 1
    return out, i


class Utf8Pieces:
    """Bytes in, text out, as they arrive (a streamed completion): whole characters once their last byte is in;
    a byte that cannot start or continue a character as '<0xNN>' (never U+FFFD). `flush` gives the bytes still
    waiting."""

    def __init__(self) -> None:
        self.pending = b""

    def push(self, data: bytes) -> str:
        buf = self.pending + data
        spans, used = _spans(buf, final=False)
        self.pending = buf[used:]
        return "".join(text for _, _, text in spans)

    def flush(self) -> str:
        spans, _ = _spans(self.pending, final=True)
        self.pending = b""
        return "".join(text for _, _, text in spans)


def _char_len(lead: int) -> int:
    """Bytes of the UTF-8 character that starts with this byte; 0 when no character starts with it."""
    if lead < 0x80:
        return 1
    if 0xC2 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF4:
        return 4
    return 0


def _valid_prefix(head: bytes) -> bool:
    """Whether `head` (shorter than its character) can still become a valid UTF-8 character."""
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return True


def show_bytes(raw: bytes) -> str:
    """One token's bytes as text on their own: whole characters, every other byte as '<0xNN>'."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "".join(text for _, _, text in _spans(raw, final=True)[0])


def is_whole(raw: bytes) -> bool:
    """Whether a token's bytes are whole UTF-8 characters (it reads the same alone as in any run)."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def readable(tokens: Sequence[bytes], cut: bool = False) -> list[str]:
    """Each token's piece of a run's text: a character split over tokens is shown on the token that completes
    it ('' on the tokens before, which hold only its first bytes); a byte that completes nothing as '<0xNN>' on
    its own token. The pieces joined are the whole run as text.

    cut: the run was cut out of a longer text (a context): a character whose first bytes lie before it or whose
    last bytes lie after it is cut off, not a lone byte, so those bytes show nothing (their tokens get '')."""
    raw = b"".join(tokens)
    skip = 0
    while cut and skip < min(3, len(raw)) and 0x80 <= raw[skip] <= 0xBF:  # the tail of a character cut off
        skip += 1
    ends = list(accumulate(len(t) for t in tokens))
    out = [""] * len(tokens)
    for _, end, text in _spans(raw[skip:], final=not cut)[0]:
        out[bisect_left(ends, end + skip)] += text  # the token holding the span's last byte
    return out


def characters(tokens: Sequence[bytes]) -> list[str]:
    """For each token of a run, the text of the characters its bytes are part of ('日' for either half of a 日
    split over two tokens); a token holding whole characters gets its own text. One pass over the run."""
    spans, _ = _spans(b"".join(tokens), final=True)
    out, k, start = [], 0, 0
    for raw in tokens:
        end = start + len(raw)
        while k < len(spans) and spans[k][1] <= start:  # spans that end before this token
            k += 1
        j, parts = k, []
        while j < len(spans) and spans[j][0] < end:
            parts.append(spans[j][2])
            j += 1
        out.append("".join(parts))
        start = end
    return out


def characters_of(tokens: Sequence[bytes], i: int) -> str:
    """characters(tokens)[i], without the pass when token i holds whole characters. Labels use it for the token
    at a feature's max."""
    if is_whole(tokens[i]):
        return tokens[i].decode("utf-8")
    return characters(tokens)[i]
