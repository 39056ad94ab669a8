"""Reading `.jsonl` corpora line by line, with a line too long to hold whole read as a stream.

Most lines are parsed whole with json. A line longer than LINE_CHARS whose object starts with its `text` field
(`{"text": "...`, as `json.dumps({"text": ...})` writes it) becomes a `StreamedText`: its string is decoded
block by block as the tokenizer asks for it, and the rest of the line is skipped, so a one-line corpus of any size
costs the same memory. A long line with `text` further in is read whole.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from qscope.harvest.pieces import BLOCK_CHARS, CorpusError, Document

LINE_CHARS = 1 << 20  # lines longer than this are looked at for streaming
_HEAD = re.compile(r'\s*\{\s*"text"\s*:\s*"')
# the longest run of a JSON string's body that holds only whole characters and escapes
_BODY = re.compile(r'(?:[^"\\]+|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*')


class JsonlError(CorpusError):
    """A line that is not a JSON object with a string `text` field; the message names the file and line."""


class StreamedText:
    """The `text` string of one long line, decoded block by block from the file. Iterate it once, before asking
    read_jsonl for the next document (which skips what was not read). Reads with readline: never past its line."""

    def __init__(self, f: TextIO, after_quote: str, where: str) -> None:
        self.f, self.buf, self.where = f, after_quote, where
        self.done, self.line_ended = False, after_quote.endswith("\n")

    def __iter__(self) -> Iterator[str]:
        while not self.done:
            m = _BODY.match(self.buf)
            end = m.end() if m else 0
            if end < len(self.buf) and self.buf[end] == '"':  # the string closes here
                text, rest = _decode(self.buf[:end], self.where), self.buf[end + 1 :]
                self.buf, self.line_ended = "", rest.endswith("\n")
                self.finish()
                yield text
                return
            partial = end < len(self.buf) and self.buf[end] == "\\" and len(self.buf) - end < 6
            if end < len(self.buf) and not partial:
                raise JsonlError(f"{self.where}: not a JSON line (bad escape {self.buf[end : end + 6]!r})")
            if self.line_ended:
                raise JsonlError(f"{self.where}: not a JSON line (it ends inside its text)")
            more = self.f.readline(BLOCK_CHARS)
            self.line_ended = not more or more.endswith("\n")
            text = _decode(self.buf[:end], self.where)
            if text and "\ud800" <= text[-1] <= "\udbff":  # half of a surrogate pair: wait for its other half
                end, text = end - 6, text[:-1]
            self.buf = self.buf[end:] + more
            if text:
                yield text

    def finish(self) -> None:
        """Skip the rest of the line: the other fields of the object, or text the reader did not ask for."""
        self.done, self.buf = True, ""
        while not self.line_ended:
            more = self.f.readline(BLOCK_CHARS)
            self.line_ended = not more or more.endswith("\n")


def _decode(body: str, where: str) -> str:
    try:
        return json.loads(f'"{body}"')
    except json.JSONDecodeError as e:
        raise JsonlError(f"{where}: not a JSON line ({e.msg})") from e


def read_jsonl(file: Path) -> Iterator[Document]:
    """The `text` of every non-blank line of a `.jsonl` file: a str, or a StreamedText for a long line."""
    with file.open(encoding="utf-8", errors="replace") as f:
        lineno = 0
        while line := f.readline(LINE_CHARS):
            lineno += 1
            long = len(line) == LINE_CHARS and not line.endswith("\n")
            where = f"{file}:{lineno}"
            if long and (head := _HEAD.match(line)):
                doc = StreamedText(f, line[head.end() :], where)
                yield doc
                doc.finish()
                continue
            if long:
                line += f.readline()
            if line.strip():
                yield _text_of(line, where)


def _text_of(line: str, where: str) -> str:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise JsonlError(f"{where}: not a JSON line ({e.msg})") from e
    if not isinstance(row, dict) or not isinstance(row.get("text"), str):
        raise JsonlError(f"{where}: a JSON object with a string 'text' field was expected")
    return row["text"]
