"""Footprints end to end: one or two datasets through the model and every SAE (streaming per-feature totals),
their footprints, the comparison, labels, and the record the page draws and the app database keeps."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field

from qscope.discover.activations import ActivationRunner, Progress, tokenize, totals
from qscope.discover.footprints import By, FootprintComparison, FootprintSummary, Stats, compare, stats, summarize

LabelOf = Callable[[str, int], str]


class FootprintRecord(BaseModel):
    model_config = ConfigDict(ser_json_inf_nan="constants")

    id: str = ""  # set when saved in the app database
    model_id: str
    names: tuple[str, str | None]
    by: str
    share: float
    source: str = Field("examples", description="'examples' (run here) or the footprint file it was read from.")
    notes: list[str] = Field(default_factory=list)
    a: FootprintSummary
    b: FootprintSummary | None = None
    comparison: FootprintComparison | None = None
    n_features: int
    seconds: float = 0.0


def dataset_stats(
    name: str,
    texts: list[str],
    runner: ActivationRunner,
    tokenizer,
    max_tokens: int,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> tuple[Stats, int]:
    """A dataset's per-feature stats, and how many of its examples were cut to max_tokens."""
    enc = tokenize(tokenizer, texts, max_tokens)

    def phase(p: str, done: int, total: int) -> None:
        if progress:
            progress(f"{name}: {p}", done, total)

    t = totals(runner, enc.ids, phase, cancel)
    return stats(name, t.fired, t.mass, t.n_examples, t.n_tokens), enc.truncated


def record(
    model_id: str, a: Stats, b: Stats | None, by: By, share: float, top: int, label_of: LabelOf | None, **extra
) -> FootprintRecord:
    """The footprint record of one or two datasets' stats, features labelled."""
    comparison = compare(a, b, by, share, top) if b is not None else None
    rec = FootprintRecord(
        model_id=model_id,
        names=(a.name, b.name if b else None),
        by=by,
        share=share,
        a=summarize(a, by, share, top),
        b=summarize(b, by, share, top) if b else None,
        comparison=comparison,
        n_features=len(a.keys),
        **extra,
    )
    if label_of:
        for group in _groups(rec):
            for f in group:
                f.label = label_of(f.sae_id, f.feature)
    return rec


def _groups(rec: FootprintRecord) -> list[list]:
    groups = [rec.a.top] + ([rec.b.top] if rec.b else [])
    if rec.comparison:
        groups += [rec.comparison.only_a, rec.comparison.only_b, rec.comparison.both]
    return groups


def run_footprints(
    model_id: str,
    a: list[str],
    b: list[str] | None,
    names: tuple[str, str],
    runner: ActivationRunner,
    tokenizer,
    max_tokens: int,
    by: By,
    share: float,
    top: int,
    label_of: LabelOf | None = None,
    notes: list[str] | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> tuple[FootprintRecord, Stats, Stats | None]:
    """Footprints of dataset a (and b) and their comparison; also the raw stats (for a footprint file)."""
    start = time.perf_counter()
    notes = list(notes or [])
    stats_a, cut_a = dataset_stats(names[0], a, runner, tokenizer, max_tokens, progress, cancel)
    stats_b, cut_b = dataset_stats(names[1], b, runner, tokenizer, max_tokens, progress, cancel) if b else (None, 0)
    for name, cut in ((names[0], cut_a), (names[1], cut_b)):
        if cut:
            notes.append(f"{cut} example(s) of {name} longer than {max_tokens} tokens cut to their first {max_tokens}")
    rec = record(model_id, stats_a, stats_b, by, share, top, label_of, notes=notes, seconds=time.perf_counter() - start)
    return rec, stats_a, stats_b
