"""The evaluation engine: a plan's rows generated in batches (one steering spec per row, the seeds of a point
sharing their prompt pass), each batch read back through the unsteered model and the SAE, then the table,
verdict and examples. The server and the CLI run the same code; they differ in the `Runner` that reaches the
model: the server's goes through the steering worker (as background work that yields to live requests between
steps), the CLI's calls it directly.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from qscope.inputs.patterns import UserPattern
from qscope.jobs import Cancelled
from qscope.steer.edits import Edit
from qscope.steer.engine import Row, RowOut, generate
from qscope.steer.evaluate import diffmean
from qscope.steer.evaluate.arms import Point
from qscope.steer.evaluate.arms import candidate_arm as arm_of
from qscope.steer.evaluate.compare import compare_arms
from qscope.steer.evaluate.measures import read_back, text_metrics
from qscope.steer.evaluate.plan import Plan, PlannedRow, Target
from qscope.steer.evaluate.result import EvalResult, Identity, RowResult
from qscope.steer.evaluate.table import examples, summarize
from qscope.steer.evaluate.verdict import decide
from qscope.steer.evaluate.writes import writes_share

T = TypeVar("T")
Work = Callable[[Callable[[], None]], T]  # work(yield_): runs on the model, calls yield_() between steps
Progress = Callable[[str, float, int], None]  # (phase, rows done (fractional within a batch), rows in all)
READ_BACK_BYTES = 256 << 20  # logits and SAE activations of one read-back forward stay under this


class Runner(Protocol):
    def __call__(self, work: Work[T]) -> T: ...


def inline(work: Work[T]) -> T:
    """The CLI's runner: the work runs here, with nothing to yield to."""
    return work(lambda: None)


EditsOf = dict[Point, dict[str, list[Edit]]]


def _rows(
    plan: Plan, edits: EditsOf, batch: Sequence[PlannedRow], max_new_tokens: int, cancel: threading.Event
) -> list[Row]:
    spec = plan.request.spec
    out = []
    for r in batch:
        ids = plan.instructed_ids[r.prompt] if r.point.instructed else plan.prompt_ids[r.prompt]
        out.append(
            Row(
                ids,
                edits[r.point],
                where=spec.where,
                temperature=spec.temperature,
                top_p=spec.top_p,
                frequency_penalty=spec.frequency_penalty,
                seed=r.seed,
                max_new_tokens=max_new_tokens,
                cancel=cancel,
            )
        )
    return out


def _generate(target: Target, rows: list[Row], on_step: Callable[[], None]) -> Work[list[RowOut]]:
    tok = target.lm.require_tokenizer()
    eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
    pad = tok.pad_token_id if tok.pad_token_id is not None else (eos[0] if eos else 0)

    def work(yield_: Callable[[], None]) -> list[RowOut]:
        def step(_emitted) -> None:
            on_step()
            yield_()

        return generate(
            target.lm.model, rows, eos_ids=eos, pad_id=pad, on_step=step, lock=target.lock, share_prefill=True
        )

    return work


def _read_back(plan: Plan, target: Target, rows: list[Row], outs: list[RowOut]) -> Work[list]:
    sae = target.saes[plan.concept.sae_id]
    vocab = target.lm.vocab_size
    K = max((len(o.ids) for o in outs), default=0) + 1
    per = max(1, READ_BACK_BYTES // (4 * K * (vocab + sae.d_sae)))
    pairs = [(r.prompt_ids, o.ids) for r, o in zip(rows, outs, strict=True)]

    def work(yield_: Callable[[], None]) -> list:
        got = []
        for i in range(0, len(pairs), per):
            got += read_back(target.lm.model, sae, plan.concept.feature, pairs[i : i + per], lock=target.lock)
            yield_()
        return got

    return work


def _direction(plan: Plan, target: Target) -> Work[diffmean.DiffMeanArm]:
    sets = plan.diffmean
    assert sets is not None
    first = plan.request.spec.features[0].feature

    def work(yield_: Callable[[], None]) -> diffmean.DiffMeanArm:
        return diffmean.direction(sets, plan.prompt_ids, target, plan.goal, first, yield_)

    return work


class _Steps:
    """Progress within a batch's generation: its rows count as done in proportion to the steps run (up to 90%;
    the read-back is the rest)."""

    def __init__(self, report: Progress, start: int, n: int, total: int, max_steps: int) -> None:
        self.report, self.start, self.n, self.total, self.max_steps, self.steps = report, start, n, total, max_steps, 0

    def __call__(self) -> None:
        self.steps += 1
        self.report("generating", self.start + 0.9 * self.n * min(self.steps / self.max_steps, 1.0), self.total)


def feature_name(f) -> str:
    """A steered feature in words: 'layer1 #297' (its SAE's last part)."""
    return f"{f.sae_id.rsplit('__', 1)[-1]} #{f.feature}"


def _none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def execute(
    plan: Plan,
    target: Target,
    runner: Runner,
    identity: Identity,
    *,
    batch_rows: int = 64,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> EvalResult:
    """Run every row of the plan and summarize; Cancelled when `cancel` is set before the end."""
    cancel = cancel or threading.Event()
    report = progress or (lambda phase, done, total: None)
    spec, total, t0 = plan.request.spec, len(plan.rows), time.perf_counter()
    regex = plan.request.metrics.regex
    pattern = UserPattern(regex) if regex else None  # one time budget for the whole evaluation
    results: list[RowResult] = []
    edits, arm = plan.edits, None
    if plan.diffmean is not None:
        report("direction (DiffMean)", 0, total)
        arm = runner(_direction(plan, target))
        edits = edits | diffmean.edits(arm, target.saes[plan.diffmean.sae_id], list(edits))
    for start in range(0, total, batch_rows):
        batch = plan.rows[start : start + batch_rows]
        rows = _rows(plan, edits, batch, spec.max_new_tokens, cancel)
        outs = runner(_generate(target, rows, _Steps(report, start, len(batch), total, spec.max_new_tokens)))
        if cancel.is_set():
            raise Cancelled
        measured = runner(_read_back(plan, target, rows, outs))
        results += [_row_result(plan, target, r, o, m, pattern) for r, o, m in zip(batch, outs, measured, strict=True)]
        report("measuring", start + len(batch), total)
    seconds = time.perf_counter() - t0
    table = summarize(results)
    verdict = decide(table, plan.goal, plan.request.max_ppl_ratio, plan.measure)
    names = {arm_of(k + 1): feature_name(f) for k, f in enumerate(plan.request.candidates)}
    comparison = compare_arms(
        table, plan.goal, plan.request.max_ppl_ratio, plan.measure, verdict.status == "works", names
    )
    shown = verdict.strength if verdict.strength is not None else max(plan.sweep, key=abs)
    return EvalResult(
        request=plan.request,
        prompts=plan.prompts,
        seeds=plan.seeds,
        strengths=plan.sweep,
        goal=plan.goal,
        concept=plan.concept,
        measure=plan.measure,
        measure_reason=plan.measure_reason,
        reads_sharpness=plan.profile.reads_sharpness,
        writes_sharpness=plan.profile.writes_sharpness,
        promoted=plan.profile.weights,
        controls=plan.controls,
        table=table,
        verdict=verdict,
        comparison=comparison,
        diffmean=arm.info if arm else None,
        examples=examples(results, plan.prompts, shown, plan.goal, plan.measure),
        rows=results,
        identity=identity,
        seconds=round(seconds, 3),
        rows_per_s=round(total / max(seconds, 1e-9), 3),
        notes=plan.notes + _pattern_notes(pattern, results),
    )


def _pattern_notes(pattern: UserPattern | None, results: list[RowResult]) -> list[str]:
    """A note when the regex measure timed out, saying on how many outputs it was not measured."""
    if pattern is None or not pattern.timed_out:
        return []
    missed = sum(r.metrics.get("regex") is None for r in results)
    return [
        f"the regex {pattern.pattern!r} timed out (over {pattern.search_s:g} s on one output, or "
        f"{pattern.budget_s:g} s in all): it was not measured on {missed} of {len(results)} outputs"
    ]


def _row_result(plan: Plan, target: Target, r: PlannedRow, out: RowOut, m, pattern: UserPattern | None) -> RowResult:
    text = str(target.lm.require_tokenizer().decode(out.ids, skip_special_tokens=True))
    metrics = {k: _none(v) for k, v in text_metrics(text, out.ids, plan.request.metrics, pattern).items()}
    return RowResult(
        arm=r.point.arm,
        strength=r.point.strength,
        control=r.point.control,
        prompt=r.prompt,
        seed=r.seed,
        text=text,
        token_ids=list(out.ids),
        n_tokens=len(out.ids),
        stopped=out.stopped,
        concept=_none(m.fires),
        concept_act=_none(m.act),
        writes=_none(writes_share(out.ids, plan.profile.weights)) if plan.profile.weights else None,
        nll=_none(m.nll),
        metrics=metrics,
    )
