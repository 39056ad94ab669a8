"""The fix service of one server: a fix is a job of the discover job runner (the same queue, client share,
progress and cancel as a discovery), whose evaluation runs through the server's evaluations (the steering
worker, the recipe store: qscope.steer.evaluate.jobs.Evaluations.run_in), and whose result is saved in the app
database beside discoveries (kind `fix`). Built once by create_app."""

from __future__ import annotations

import threading
from collections import OrderedDict

from qscope.discover.discovery import DiscoverOptions
from qscope.discover.examples import ExamplesError, ExampleSet
from qscope.discover.service import Discovering, ServedModel
from qscope.discover.store import Listed, new_id
from qscope.fix.flow import FixInputs, run_fix
from qscope.fix.request import FixSettings
from qscope.fix.result import FixResult
from qscope.jobs import Job
from qscope.steer.evaluate.jobs import Evaluations
from qscope.steer.evaluate.target import Target
from qscope.steer.spec import SpecError, SteerLimits

KEEP_REFUSED = 64  # why recent fixes failed on their input, for a waiting request's 422


class Fixing:
    def __init__(self, discovering: Discovering, evaluations: Evaluations, steer_limits: SteerLimits) -> None:
        self.discovering, self.evaluations, self.steer_limits = discovering, evaluations, steer_limits
        self._refused: OrderedDict[str, str] = OrderedDict()  # job id -> what in its input made it fail
        self._lock = threading.Lock()

    def refused(self, job_id: str) -> str | None:
        """Why the job failed, when its input was the cause (no candidate, too few prompts): a 4xx, not a 500."""
        with self._lock:
            return self._refused.get(job_id)

    def start(
        self,
        served: ServedModel,
        target: Target,
        examples: ExampleSet,
        options: DiscoverOptions,
        settings: FixSettings,
        client: str = "",
    ) -> Job:
        """Queue a fix as `client`'s job (QueueFull past the queue or the client's share of it)."""
        d = self.discovering

        def run(job: Job) -> str:
            inputs = FixInputs(
                examples,
                d.runner(served),
                served.tokenizer,
                options,
                d.max_tokens,
                served.label_of,
                target,
                self.evaluations.limits,
                self.steer_limits,
            )
            try:
                result = run_fix(
                    inputs,
                    settings,
                    lambda plan: self.evaluations.run_in(job, plan, target),
                    d.save_discovery,
                    job.report,
                    job.cancel,
                )
            except (ExamplesError, SpecError) as e:
                with self._lock:
                    self._refused[job.id] = str(e)
                    while len(self._refused) > KEEP_REFUSED:
                        self._refused.popitem(last=False)
                raise
            job.report("save", 0, 1)
            return self.save(result)

        verb = "raise" if settings.goal == "increase" else "lower"
        return d.jobs.submit("fix", f"{verb} {examples.names[0]} (vs {examples.names[1]})", run, client)

    def save(self, r: FixResult) -> str:
        r.id = new_id()
        name = f"{'raise' if r.goal == 'increase' else 'lower'} {r.names[0]} (vs {r.names[1]})"
        figure = r.best.score.mean if r.best else None
        return self.discovering.db.save("fix", r.id, r.model_id, name, r.model_dump_json(), figure)

    def fix(self, fix_id: str) -> FixResult | None:
        body = self.discovering.body("fix", fix_id)
        return FixResult.model_validate_json(body) if body else None

    def recent(self, limit: int = 20) -> list[Listed]:
        return self.discovering.recent("fix", limit)
