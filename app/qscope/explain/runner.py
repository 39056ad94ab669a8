"""An explain run: many features explained and scored at once, each written as soon as it is done.

Each feature is one task on a thread pool of `concurrency` threads, so that many requests are in flight at the
explainer (which batches them: qscope serve's worker, vLLM, or qscope.explain.local). A task reads the feature's
card from the store, asks for its explanation (again, sampling, when an answer holds none), writes it, then asks
the detection and fuzzing questions and writes the scores. A failure is written to the file's `failures` table and
reported on one line; the other features go on. When failures that retrying later may cure (endpoint down)
pile up, the run stops early. Features already explained (and scored, when scoring) are skipped: running the same
command again resumes.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import Protocol

from qscope.explain.client import ContextTooLong, ExplainerError
from qscope.explain.negatives import NegativePool
from qscope.explain.prompts import FeatureExamples, clean_explanation, explainer_messages, split_examples
from qscope.explain.scoring import BATCH, Score, detection_cases, fuzzing_cases, llm_judge, run_score, trust
from qscope.explain.store import ExplanationWriter
from qscope.progress import PhaseProgress
from qscope.store.queries import Store

Key = tuple[str, int]  # (sae_id, feature)
PHASE = "explain"  # the run's one phase in its progress: features done of those to do


class Chat(Protocol):
    name: str

    def chat(self, messages: list[dict], *, max_tokens: int = 64, temperature: float = 0.0, seed: int = 0) -> str: ...


@dataclass
class ExplainOptions:
    concurrency: int = 16  # features in flight (each has one request at a time)
    score: bool = True
    redo: bool = False  # explain again features that have an explanation
    n_top: int = 10  # top contexts shown to the explainer
    n_bins: int = 5  # interval bins shown (one sample each)
    n_held: int = 10  # firing contexts held out for scoring (and as many non-firing ones for detection)
    before: int = 12  # tokens shown before the marked token of a context
    after: int = 4
    max_tokens: int = 48  # of an explanation
    attempts: int = 3  # answers asked for before a feature's explanation counts as failed
    seed: int = 0
    stop_after_failures: int = 0  # retryable failures in a row that stop the run (0: concurrency + 2)


@dataclass
class ExplainSummary:
    todo: int
    skipped: int  # already done before this run
    explained: int = 0
    scored: int = 0
    failed: list[tuple[Key, str, str]] = field(default_factory=list)  # (key, stage, message)
    cut: int = 0  # explainer prompts cut (fewer contexts shown) to fit the explainer's context
    at_chance: int = 0  # scored explanations whose scores do not beat chance (qscope.explain.trust)
    stopped: str | None = None  # why the run stopped before the end
    seconds: float = 0.0


class ExplainRunner:
    def __init__(
        self,
        store: Store,
        writer: ExplanationWriter,
        explainer: Chat,
        scorer: Chat | None,
        pool: NegativePool | None,
        opts: ExplainOptions,
        progress: PhaseProgress | None = None,
    ) -> None:
        self.store, self.writer, self.explainer, self.scorer, self.pool = store, writer, explainer, scorer, pool
        self.opts, self.progress = opts, progress
        self._counts_lock, self._cut, self._at_chance = threading.Lock(), 0, 0  # counted by the pool's threads

    def plan(self, keys: Sequence[Key]) -> tuple[list[tuple[Key, bool]], int]:
        """[(key, has an explanation already)] still to do, and how many keys are done."""
        explained, scored = self.writer.done()
        if self.opts.redo:
            return [(k, False) for k in keys], 0
        todo = [(k, k in explained) for k in keys if k not in (scored if self.opts.score else explained)]
        return todo, len(keys) - len(todo)

    def run(self, keys: Sequence[Key]) -> ExplainSummary:
        todo, skipped = self.plan(keys)
        summary, t0 = ExplainSummary(len(todo), skipped), time.monotonic()
        if self.progress:
            self.progress.add(PHASE, len(todo), "features")
            self.progress.start(PHASE)
        limit = self.opts.stop_after_failures or self.opts.concurrency + 2
        streak = 0
        with ThreadPoolExecutor(self.opts.concurrency, thread_name_prefix="explain") as pool:
            waiting = list(reversed(todo))
            running: dict[Future, Key] = {}
            try:
                while waiting or running:
                    while waiting and len(running) < self.opts.concurrency and summary.stopped is None:
                        key, has = waiting.pop()
                        running[pool.submit(self.one, key, has)] = key
                    if not running:
                        break
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        streak = self._record(summary, running.pop(fut), fut.result(), streak)
                    if streak >= limit and summary.stopped is None:
                        summary.stopped = f"{streak} features in a row failed this way: {summary.failed[-1][2]}"
            except KeyboardInterrupt:
                for fut in running:
                    fut.cancel()
                raise
        summary.seconds = time.monotonic() - t0
        summary.cut, summary.at_chance = self._cut, self._at_chance
        return summary

    def _record(self, summary: ExplainSummary, key: Key, outcome: tuple[str, str, bool], streak: int) -> int:
        stage, message, retryable = outcome
        if stage == "ok":
            summary.explained += message != "scored-only"
            summary.scored += self.opts.score
        else:
            summary.failed.append((key, stage, message))
            if self.progress:
                self.progress.say(f"feature {key[0]}/{key[1]}: {stage} failed: {message}", "yellow")
        if self.progress:
            self.progress.advance(PHASE, info=f"{len(summary.failed)} failed" if summary.failed else "")
        return streak + 1 if stage != "ok" and retryable else 0

    def one(self, key: Key, has_explanation: bool) -> tuple[str, str, bool]:
        """Explain (unless done) and score one feature: ('ok', what, False) or (stage, message, retryable)."""
        stage = "read"
        try:
            with self.store.reader(timeout_s=60) as r:
                detail = r.feature(*key)
            if detail is None or detail.row.n_fired == 0 or not detail.top:
                raise ExplainerError("the feature never fired in the harvest: nothing to explain")
            fx = split_examples(
                detail, self.opts.n_top, self.opts.n_bins, self.opts.n_held, self.opts.before, self.opts.after
            )
            stage = "explain"
            done = self.writer.get(*key) if has_explanation else None
            if done is not None:
                text = done.text
            else:
                text, shown = self.explain(fx)
                self.writer.put_explanation(*key, text, self.explainer.name)
                if shown < len(fx.shown):
                    with self._counts_lock:
                        self._cut += 1
                    if self.progress:
                        self.progress.say(
                            f"feature {key[0]}/{key[1]}: prompt cut to {shown} of {len(fx.shown)} contexts to fit "
                            "the explainer's context",
                            "yellow",
                        )
            if self.opts.score and self.scorer is not None:
                stage = "score"
                detection, fuzzing = self.score(fx, text)
                self.writer.put_scores(*key, detection, fuzzing, self.scorer.name)
                if trust(detection.value, detection.n, fuzzing.value, fuzzing.n) == "at chance":
                    with self._counts_lock:
                        self._at_chance += 1
        except ExplainerError as e:
            self.writer.put_failure(*key, stage, str(e))
            return stage, str(e), e.retryable
        return "ok", "scored-only" if has_explanation else "explained", False

    def explain(self, fx: FeatureExamples) -> tuple[str, int]:
        """The explanation of one feature and how many contexts its prompt showed; asks again (sampling) while an
        answer holds none. A prompt the explainer refuses as too long for its context shows a quarter fewer
        contexts (the weakest go first: they are listed strongest first) until it fits."""
        answer, shown = "", len(fx.shown)
        for attempt in range(self.opts.attempts):
            while True:
                try:
                    answer = self.explainer.chat(
                        explainer_messages(replace(fx, shown=fx.shown[:shown])),
                        max_tokens=self.opts.max_tokens,
                        temperature=0.0 if attempt == 0 else 0.7,
                        seed=self.opts.seed + attempt,
                    )
                    break
                except ContextTooLong as e:
                    if shown <= 1:
                        raise ExplainerError(f"even one context does not fit the explainer's context: {e}") from e
                    shown = max(1, shown * 3 // 4)
            if text := clean_explanation(answer):
                return text, shown
        raise ExplainerError(f"no usable explanation in {self.opts.attempts} answers (the last: {answer[:80]!r})")

    def score(self, fx: FeatureExamples, text: str) -> tuple[Score, Score]:
        assert self.scorer is not None
        scorer = self.scorer
        rng = random.Random(f"{self.opts.seed}:{fx.sae_id}:{fx.feature}")  # the same cases on every run

        def ask(messages: list[dict]) -> str:
            return scorer.chat(messages, max_tokens=8 + 4 * BATCH, temperature=0.0, seed=self.opts.seed)

        negatives = self.pool.negatives(fx.sae_id, fx.feature, len(fx.held_out), rng) if self.pool else []
        detection = Score(None, 0, 0)  # without contexts where it is silent, detection has nothing to tell apart
        if negatives:
            detection = run_score(detection_cases(fx, negatives, rng), llm_judge(ask, text, "detection"))
        fuzzing = run_score(fuzzing_cases(fx, rng), llm_judge(ask, text, "fuzzing"))
        return detection, fuzzing
