"""Jobs of kind "rows" for the steering worker: only the rows a request needs (n completions of one prompt,
steered or not), each stopping at its own stop strings. The OpenAI-compatible endpoints use them
(qscope.web.routes.openai_api).

A row's text is cut before the first stop string (the stop string itself is not returned, as OpenAI does); while
streaming, text that could be the start of a stop string is held back until it is known not to be. A row that
meets a stop string stops generating at the next step (its own cancel flag), the other rows go on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn
from transformers import PreTrainedTokenizerBase

from qscope.steer.edits import Edit
from qscope.steer.engine import Row
from qscope.steer.spec import Completion, SteerLimits, SteerSpec
from qscope.steer.worker import Emit, SteerJob, encode_prompt


class RowCancel(threading.Event):
    """A row's own stop flag, which also reads as set once its whole job is cancelled (the engine only asks
    `is_set()`)."""

    def __init__(self, job: threading.Event) -> None:
        super().__init__()
        self.job = job

    def is_set(self) -> bool:
        return super().is_set() or self.job.is_set()


def make_rows_job(
    spec: SteerSpec,
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    edits: dict[str, list[Edit]],
    limits: SteerLimits,
    n: int,
    emit: Emit,
    lock: threading.Lock | None = None,
) -> SteerJob:
    """A job of `n` rows of `spec`'s prompt, all with `edits` ({} for none); row i samples with seed + i.
    SpecError when over a limit (checked here, in the caller's thread, before anything queues)."""
    limits.check(spec)
    ids = encode_prompt(tokenizer, spec)
    limits.check_prompt(len(ids))
    cancel = threading.Event()
    deadline = time.monotonic() + limits.timeout_s
    rows = [
        Row(
            ids,
            edits,
            where=spec.where,
            temperature=spec.temperature,
            top_p=spec.top_p,
            seed=spec.seed + i,
            frequency_penalty=spec.frequency_penalty,
            max_new_tokens=spec.max_new_tokens,
            cancel=RowCancel(cancel),
            deadline=deadline,
        )
        for i in range(n)
    ]
    return SteerJob(model, tokenizer, rows, emit, lock, cancel, kind="rows")


class StopScanner:
    """The text of one row, cut at the first stop string; `push` says what may be sent so far."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.text, self.sent, self.hit = "", 0, False

    def push(self, piece: str) -> str:
        """Add a piece of decoded text; returns the text that is now safe to send (never past a stop string)."""
        if self.hit:
            return ""
        self.text += piece
        found = [i for s in self.stops if (i := self.text.find(s)) >= 0]
        if found:
            self.hit, self.text = True, self.text[: min(found)]
            return self._send(len(self.text))
        return self._send(len(self.text) - self._held())

    def _held(self) -> int:
        """Length of the longest end of the text that is the start of a stop string."""
        held = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(self.text)), held, -1):
                if self.text.endswith(s[:n]):
                    held = n
                    break
        return held

    def _send(self, end: int) -> str:
        out = self.text[self.sent : end] if end > self.sent else ""
        self.sent = max(self.sent, end)
        return out

    def rest(self) -> str:
        """What is left to send once the row has ended."""
        return self._send(len(self.text))


@dataclass
class FinishedRow:
    """One finished row, as the OpenAI endpoints report it."""

    index: int
    text: str
    finish_reason: str  # stop (a stop string or end of text) | length (max_tokens, or the time limit)
    tokens: int  # tokens generated, a stop string's included


class RowsCollector:
    """Turns a rows job's worker events into per-row text deltas, stopping rows at their stop strings.

    `feed` is the job's emit (it runs in the worker thread); it passes on ("delta", (row, text)),
    ("done", [FinishedRow]) and ("error", message) to `out`."""

    def __init__(self, n: int, stops: Sequence[str], out: Callable[[str, Any], None]) -> None:
        self.scanners = [StopScanner(stops) for _ in range(n)]
        self.tokens = [0] * n
        self.out = out
        self.job: SteerJob | None = None  # set once built: its rows' cancel flags stop a row at a stop string

    def feed(self, kind: str, data: Any) -> None:
        if kind == "token":
            row = data["row"]
            self.tokens[row] += 1
            piece = self.scanners[row].push(data["text"])
            if self.scanners[row].hit and self.job is not None:
                self.job.rows[row].cancel.set()
            if piece:
                self.out("delta", (row, piece))
        elif kind == "done":
            self.out("done", [self._choice(i, c) for i, c in enumerate(data)])
        else:
            self.out(kind, data)

    def _choice(self, i: int, done: Completion) -> FinishedRow:
        scanner = self.scanners[i]
        rest = scanner.rest()
        if rest:
            self.out("delta", (i, rest))
        reason = "stop" if scanner.hit or done.stopped == "eos" else "length"
        return FinishedRow(i, scanner.text, reason, len(done.tokens))
