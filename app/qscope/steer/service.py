"""The steering service of one server: its worker, limits, app database of shared runs, and recent runs.

Built once by create_app; the steering routes (qscope.web.routes.steer) submit jobs to its worker and save
shared runs through it. The worker thread starts on the first job, the app database on the first share.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict

from qscope.appdb.first_use import OpenedOnFirstUse
from qscope.config import SteerSettings
from qscope.steer.continuous_worker import ContinuousWorker
from qscope.steer.runs import RunStore
from qscope.steer.spec import SteerLimits, SteerResult, SteerSpec
from qscope.steer.worker import SteerWorker

RECENT = 256  # finished runs kept in memory for sharing


def steer_limits(steer: SteerSettings) -> SteerLimits:
    """The bounds on one steering request that these settings set (the server's and `qscope steer-eval`'s)."""
    return SteerLimits(
        max_prompt_tokens=steer.max_prompt_tokens,
        max_new_tokens=steer.max_new_tokens,
        max_features=steer.max_features,
        max_strength=steer.max_strength,
        timeout_s=steer.timeout_s,
    )


class Steering:
    """The steering state of one app: its worker, limits, app database and recent runs."""

    def __init__(self, steer: SteerSettings, db_url: str) -> None:
        self.limits = steer_limits(steer)
        worker = ContinuousWorker if steer.scheduler == "continuous" else SteerWorker
        self.worker = worker(
            steer.queue_size,
            steer.max_batch_rows,
            max_wait_s=steer.queue_wait_s,
            gather_s=steer.batch_wait_ms / 1000,
            per_client=steer.queue_per_client,
        )
        self.db_url = db_url
        self._runs = OpenedOnFirstUse(lambda: RunStore(self.db_url))  # a server that never shares writes no file
        self.recent: OrderedDict[str, tuple[SteerSpec, SteerResult]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def runs(self) -> RunStore:
        return self._runs.get()

    def remember(self, spec: SteerSpec, result: SteerResult) -> SteerResult:
        token = secrets.token_urlsafe(12)
        with self._lock:
            self.recent[token] = (spec, result)
            while len(self.recent) > RECENT:
                self.recent.popitem(last=False)
        return result.model_copy(update={"run": token})

    def recall(self, token: str) -> tuple[SteerSpec, SteerResult] | None:
        """The spec and result of a recent run, by its `run` token, or None once forgotten."""
        with self._lock:
            return self.recent.get(token)
