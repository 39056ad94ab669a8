"""The fix flow, the same on the server and in the CLI: (1) the discovery with its baselines, (2) the
candidates, (3) one batched steering evaluation of them all beside DiffMean and the controls, (4) the ranking.
The caller gives what differs: how the evaluation's plan is run (the server's steering worker and recipe store,
or inline in the CLI) and how the discovery is kept. Progress goes to `report(phase, done, total)` for every
phase (the discovery's and the evaluation's own phases included); `cancel` stops any of them (Cancelled)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from qscope.discover.activations import ActivationRunner
from qscope.discover.discovery import DiscoverOptions, Discovery, LabelOf, discover
from qscope.discover.examples import ExamplesError, ExampleSet
from qscope.fix import candidates as pick
from qscope.fix.ranking import headline, rank
from qscope.fix.request import FixSettings
from qscope.fix.result import Candidate, FixResult
from qscope.jobs import Cancelled
from qscope.steer.evaluate.compare import NAMES
from qscope.steer.evaluate.plan import Plan, prepare
from qscope.steer.evaluate.prompt_sets import builtin
from qscope.steer.evaluate.request import EvalLimits
from qscope.steer.evaluate.result import EvalResult
from qscope.steer.evaluate.target import Target
from qscope.steer.spec import SteerLimits

Report = Callable[[str, float, float], None]
RunPlan = Callable[[Plan], tuple[EvalResult, str]]  # the evaluation run (and saved: its recipe id, or "")


@dataclass
class FixInputs:
    """What a fix runs on: the discovery's inputs and the evaluation's."""

    examples: ExampleSet
    runner: ActivationRunner  # every SAE of the model
    tokenizer: object
    options: DiscoverOptions
    max_tokens: int
    label_of: LabelOf | None
    target: Target
    eval_limits: EvalLimits
    steer_limits: SteerLimits


def run_fix(
    inputs: FixInputs,
    settings: FixSettings,
    run_plan: RunPlan,
    keep_discovery: Callable[[Discovery], str],
    report: Report | None = None,
    cancel: threading.Event | None = None,
) -> FixResult:
    """The whole flow (see the module docstring); ExamplesError when the discovery gives no candidate."""
    report = report or (lambda phase, done, total: None)
    cancel = cancel or threading.Event()
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    d = discover(
        inputs.examples,
        inputs.runner,
        inputs.tokenizer,
        inputs.target.model_id,
        inputs.options,
        inputs.max_tokens,
        inputs.label_of,
        report,
        cancel,
    )
    if cancel.is_set():
        raise Cancelled
    report("save the discovery", 0, 1)
    d.id = keep_discovery(d)
    seconds["discover"] = time.perf_counter() - t0
    seconds |= {f"discover: {k}": v for k, v in d.seconds.items()}

    t = time.perf_counter()
    report("choose candidates", 0, 1)
    max_acts = inputs.target.max_acts
    picked = pick.choose(d.ranking.a_side, d.saes, settings.per_sae, lambda s, f: float(max_acts(s)[f]) > 0)
    if not picked:
        raise ExamplesError("no feature fires more on set A than on set B here, so there is nothing to steer with")
    prompts, source = pick.prompts_of(d, settings)
    if len(prompts) < 2:
        raise ExamplesError(
            f"{source}: fewer than 2 prompts to steer; give more examples, a larger test_share or fix.prompts"
        )
    req = pick.eval_request(d, picked, prompts, settings, inputs.options.seed)
    sets = pick.train_sets(d)
    plan = prepare(req, inputs.target, inputs.eval_limits, inputs.steer_limits, builtin(), lambda _id: sets)
    seconds["choose candidates"] = time.perf_counter() - t
    if cancel.is_set():
        raise Cancelled

    t = time.perf_counter()
    result, recipe = run_plan(plan)
    seconds["evaluate"] = time.perf_counter() - t

    chosen = [
        Candidate(
            arm="intervention" if i == 0 else f"candidate-{i}",
            sae_id=c.sae_id,
            feature=c.feature,
            label=d.label(c.sae_id, c.feature),
            train_auroc=c.train_auroc,
            test_auroc=c.test_auroc,
        )
        for i, c in enumerate(picked)
    ]
    ranked = rank(result.table, result.comparison, chosen)
    c = result.comparison
    best_overall = c.best if c else None
    sentence = headline(ranked, best_overall, NAMES.get(best_overall or "", best_overall or ""), settings.goal)
    seconds["total"] = time.perf_counter() - t0
    return FixResult(
        model_id=d.model_id,
        names=d.names,
        goal=settings.goal,
        settings=settings,
        discovery=d.id,
        recipe=recipe,
        concept=chosen[0],
        candidates=chosen,
        prompts_source=source,
        n_prompts=len(prompts),
        rows=len(plan.rows),
        interventions=ranked,
        best=next((x for x in ranked if x.rank == 1), None),
        best_arm_overall=best_overall,
        sentence=sentence,
        comparison=c.sentence if c else "",
        seconds={k: round(v, 3) for k, v in seconds.items()},
        notes=d.notes + result.notes,
    )
