"""Example sets: positive and negative texts from pasted lines or files, cleaned, checked and split.

Pasted text holds one example per line, or, when some line holds only ``---``, one example per block between such
lines (multi-line code). Files: ``.txt`` (the same rules as pasted text), ``.jsonl`` (a text field per line, and a
label field when the file holds both classes) and ``.csv`` (a text column, and a label column when the file holds
both classes). Cleaning drops empty examples, repeats within a set and examples found in both sets (they cannot
count for either side), and says how many of each it dropped: nothing is dropped silently.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qscope.inputs import files

SEPARATOR = "---"
POSITIVE_WORDS = {"1", "true", "yes", "pos", "positive", "+", "+1"}
NEGATIVE_WORDS = {"0", "false", "no", "neg", "negative", "-", "-1"}
SUFFIXES = (".txt", ".jsonl", ".csv")


class ExamplesError(ValueError):
    """Example sets that cannot be used; the message names the field or limit and what to change."""


@dataclass(frozen=True)
class ExampleLimits:
    max_examples: int = 2000  # per set
    max_chars: int = 4000  # per example; longer ones are cut (and counted)
    max_file_bytes: int = 2_000_000
    min_per_class: int = 4  # a class needs at least this many examples (some for train, some for test)


@dataclass
class ExampleSet:
    """Cleaned examples: texts with labels (1 positive, 0 negative), and notes on what cleaning changed."""

    texts: list[str]
    labels: np.ndarray  # int8 [E]
    names: tuple[str, str] = ("positive", "negative")
    notes: list[str] = field(default_factory=list)

    @property
    def n_pos(self) -> int:
        return int(self.labels.sum())

    @property
    def n_neg(self) -> int:
        return len(self.texts) - self.n_pos


def split_lines(text: str) -> tuple[list[str], int]:
    """(examples, empty ones dropped) of pasted text: one per line, or blocks between '---' lines."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if any(line.strip() == SEPARATOR for line in lines):
        parts: list[str] = []
        cur: list[str] = []
        for line in lines:
            if line.strip() == SEPARATOR:
                parts.append("\n".join(cur).strip("\n"))
                cur = []
            else:
                cur.append(line)
        parts.append("\n".join(cur).strip("\n"))
        chunks = [p.rstrip() for p in parts]
    else:
        chunks = [line.strip() for line in lines]
    kept = [c for c in chunks if c.strip()]
    trailing = 1 if chunks and not chunks[-1].strip() else 0  # the newline ending a file is not an empty example
    return kept, len(chunks) - len(kept) - trailing


def check_size(name: str, size: int, limits: ExampleLimits) -> None:
    if size > limits.max_file_bytes:
        raise ExamplesError(f"{name} is {size:,} bytes; files of at most {limits.max_file_bytes:,} bytes are read")


def read_file(name: str, content: str, *, text_field: str = "text", label_field: str | None = None) -> list:
    """The rows of one file: [(text, raw label or None)]. With label_field the file must have that field. The file
    is read by qscope.inputs.files; ExamplesError says why it cannot be."""
    suffix = Path(name).suffix.lower()
    try:
        if suffix == ".csv":
            return _read_csv(name, files.csv_rows(content, name), text_field, label_field)
        if suffix == ".jsonl":
            return _read_jsonl(name, files.json_lines(content, name), text_field, label_field)
    except files.UploadError as e:
        raise ExamplesError(str(e)) from None
    if suffix == ".txt" or not suffix:
        if label_field:
            raise ExamplesError(f"{name}: a .txt file has no label column; give .csv or .jsonl, or one file per set")
        texts, _ = split_lines(content)
        return [(t, None) for t in texts]
    raise ExamplesError(f"{name}: unknown file type {suffix!r}; give .txt, .jsonl or .csv")


def _read_csv(name: str, rows: list[list[str]], text_field: str, label_field: str | None) -> list:
    columns = rows[0] if rows else []
    for needed, what in ((text_field, "text"), (label_field, "label")):
        if needed and needed not in columns:
            shown = ", ".join(repr(c) for c in columns) or "none"
            raise ExamplesError(
                f"{name}: the CSV has no {what} column {needed!r} (its columns: {shown}); "
                f"name the {what} column with {what}_column"
            )
    last = {c: i for i, c in enumerate(columns)}  # a column named twice: its last one, as csv.DictReader reads it

    def cell(row: list[str], column: str) -> str:
        return row[last[column]] if last[column] < len(row) else ""

    body = [row for row in rows[1:] if row]  # blank lines are no rows
    return [(cell(row, text_field), cell(row, label_field) if label_field else None) for row in body]


def _read_jsonl(name: str, lines: Iterator[tuple[int, Any]], text_field: str, label_field: str | None) -> list:
    rows = []
    for n, obj in lines:
        if not isinstance(obj, dict) or not isinstance(obj.get(text_field), str):
            raise ExamplesError(f"{name}, line {n}: no string field {text_field!r}; name it with text_column")
        if label_field and label_field not in obj:
            raise ExamplesError(f"{name}, line {n}: no label field {label_field!r}; name it with label_column")
        rows.append((obj[text_field], obj.get(label_field) if label_field else None))
    return rows


def label_of(raw: object, positive: str | None) -> int:
    """1 or 0 for a raw label value; `positive` names the positive value when the labels are not yes/no-like."""
    value = str(raw).strip().lower() if not isinstance(raw, bool) else str(int(raw))
    if positive is not None:
        return int(value == positive.strip().lower())
    if value in POSITIVE_WORDS:
        return 1
    if value in NEGATIVE_WORDS:
        return 0
    if value in ("1.0", "0.0"):  # numbers written by a dataframe export
        return int(value == "1.0")
    raise ExamplesError(
        f"label {raw!r} is neither positive (1, true, yes, pos) nor negative (0, false, no, neg); "
        "name the positive value with positive_label"
    )


def split_labelled(rows: Sequence[tuple[str, object]], positive: str | None) -> tuple[list[str], list[str]]:
    """(positives, negatives) of labelled rows."""
    pos: list[str] = []
    neg: list[str] = []
    for text, raw in rows:
        (pos if label_of(raw, positive) else neg).append(text)
    return pos, neg


def build_set(
    positive: Sequence[str],
    negative: Sequence[str],
    limits: ExampleLimits,
    names: tuple[str, str] = ("A", "B"),
    notes: Sequence[str] = (),
) -> ExampleSet:
    """The cleaned example set of two lists of texts (ExamplesError when it cannot be used)."""
    notes = list(notes)
    sets = [clean_set(texts, limits, side, notes) for side, texts in zip(names, (positive, negative), strict=True)]
    both = set(sets[0]) & set(sets[1])
    if both:
        notes.append(f"{len(both)} example(s) found in both sets dropped from both (they cannot count for either)")
        sets = [[t for t in s if t not in both] for s in sets]
    _check_classes(sets, names, limits)
    texts = sets[0] + sets[1]
    labels = np.array([1] * len(sets[0]) + [0] * len(sets[1]), dtype=np.int8)
    return ExampleSet(texts, labels, names, notes)


def clean_set(texts: Sequence[str], limits: ExampleLimits, side: str, notes: list[str]) -> list[str]:
    """One set without empty examples and repeats, long ones cut; what changed is added to `notes`."""
    if len(texts) > limits.max_examples:
        raise ExamplesError(f"set {side} holds {len(texts):,} examples; at most {limits.max_examples:,} per set")
    kept, empty, repeats, cut = _clean(texts, limits.max_chars)
    if empty:
        notes.append(f"{empty} empty example(s) of set {side} dropped")
    if repeats:
        notes.append(f"{repeats} repeated example(s) within set {side} dropped (kept once)")
    if cut:
        notes.append(f"{cut} example(s) of set {side} longer than {limits.max_chars:,} characters cut to that")
    return kept


def _clean(texts: Sequence[str], max_chars: int) -> tuple[list[str], int, int, int]:
    kept, seen, empty, repeats, cut = [], set(), 0, 0, 0
    for text in texts:
        text = str(text).strip("\n").rstrip()
        if not text.strip():
            empty += 1
            continue
        if len(text) > max_chars:
            text, cut = text[:max_chars], cut + 1
        if text in seen:
            repeats += 1
            continue
        seen.add(text)
        kept.append(text)
    return kept, empty, repeats, cut


def _check_classes(sets: list[list[str]], names: tuple[str, str], limits: ExampleLimits) -> None:
    empty = [name for name, s in zip(names, sets, strict=True) if not s]
    if len(empty) == 2:
        raise ExamplesError("both sets are empty: give examples of the behaviour (A) and without it (B)")
    if empty:
        other = names[1] if empty[0] == names[0] else names[0]
        raise ExamplesError(
            f"only one class: set {empty[0]} is empty, so nothing can be told apart from set "
            f"{other}; give examples for both sets (or a label column with two values)"
        )
    for name, s in zip(names, sets, strict=True):
        if len(s) < limits.min_per_class:
            raise ExamplesError(
                f"set {name} has {len(s)} usable example(s); at least {limits.min_per_class} are "
                "needed (some to rank features on, some to test them)"
            )


def split_indices(labels: np.ndarray, test_share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded split stratified by label: (train, test) index arrays, each class in both."""
    if not 0 < test_share < 1:
        raise ExamplesError(f"test_share must be between 0 and 1, got {test_share}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for cls in (1, 0):
        idx = np.flatnonzero(labels == cls)
        idx = idx[rng.permutation(len(idx))]
        n_test = min(max(1, round(len(idx) * test_share)), len(idx) - 1)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
