"""Feature cards built on several processes: the same bytes as qscope.store.cards.build_cards, sooner.

A card is a JSON header and zlib-compressed arrays made in Python, about a millisecond each: a 32k-wide SAE's
cards take half a minute on one core. The tables are sorted once (CardBuilder) and forked worker processes,
which inherit them without a copy, build ranges of features; the cards come back in order. Where fork is not
available (not Linux) or the SAE is small, they are built in this process.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from qscope.store.cards import CardBuilder, Columns

POOL_MIN_FEATURES = 4096  # below this a pool costs more to start than it saves
RANGE_FEATURES = 1024  # features per task: progress every few seconds, little pickling per result
MAX_WORKERS = 16

_builder: CardBuilder | None = None  # set in the parent just before the fork; the workers read it


def default_workers() -> int:
    """Worker processes for card building: the cores this process may use, at most MAX_WORKERS."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, MAX_WORKERS))


def _build(a: int, b: int) -> list[bytes]:
    assert _builder is not None
    return _builder.build(a, b)


def build_cards_parallel(
    features: Columns,
    contexts: Columns,
    logits: Columns,
    neighbors: Columns,
    workers: int = 0,
    advance: Callable[[float], None] | None = None,
    min_features: int = POOL_MIN_FEATURES,
) -> np.ndarray:
    """build_cards on `workers` processes (0: default_workers()); advance(features done) as ranges finish."""
    global _builder
    F = len(features["feature"])
    out = np.empty(F, dtype=object)
    if F == 0:
        return out
    builder = CardBuilder(features, contexts, logits, neighbors)
    workers = workers or default_workers()
    ranges = [(a, min(a + RANGE_FEATURES, F)) for a in range(0, F, RANGE_FEATURES)]
    if workers == 1 or F < min_features or sys.platform != "linux":
        for a, b in ranges:
            out[a:b] = builder.build(a, b)
            if advance is not None:
                advance(b - a)
        return out
    _builder = builder
    try:
        with ProcessPoolExecutor(min(workers, len(ranges)), mp_context=multiprocessing.get_context("fork")) as pool:
            futures = [(a, b, pool.submit(_build, a, b)) for a, b in ranges]
            for a, b, future in futures:
                out[a:b] = future.result()
                if advance is not None:
                    advance(b - a)
    finally:
        _builder = None
    return out
