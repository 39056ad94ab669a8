"""Where shard tasks run: RayPool sends them to a Ray cluster, InlinePool runs them in this process.

Both yield (task, result or exception) as tasks finish, in whatever order; the driver (qscope.harvest.cluster)
saves each result to the spool at once. Ray is an optional extra (``pip install 'qscope[cluster]'``) imported
only when a RayPool is used.

Failures under Ray: a task whose worker process or node dies is resubmitted by Ray up to ``max_retries`` times
(Ray keeps a task's inputs until it finishes), and so is a task that raises (``retry_exceptions``: a CUDA
error, a full disk). After that the pool yields the error; the driver reports it, keeps every finished task in
the spool, and a rerun of the same command runs only what is missing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

import numpy as np
import torch

from qscope.harvest.options import HarvestError, HarvestOptions
from qscope.harvest.shards import ShardResult, ShardTask, ShardWork, clear_cache, run_shard
from qscope.model import pick_device

Outcome = tuple[ShardTask, ShardResult | BaseException]
WindowsFn = Callable[[ShardTask], np.ndarray]


class Pool(Protocol):
    name: str
    threads: int  # torch threads per task (0: torch's default)

    def device_type(self, opts: HarvestOptions) -> str: ...

    def run(self, work: ShardWork, tasks: Sequence[ShardTask], windows: WindowsFn) -> Iterator[Outcome]: ...

    def close(self) -> None: ...


class InlinePool:
    """Tasks one after another in this process: the same plan, spool and merge without a cluster."""

    name = "this process"
    threads = 0

    def device_type(self, opts: HarvestOptions) -> str:
        return pick_device(opts.device).type

    def run(self, work: ShardWork, tasks: Sequence[ShardTask], windows: WindowsFn) -> Iterator[Outcome]:
        try:
            for task in tasks:
                try:
                    yield task, run_shard(work, task, windows(task))
                except Exception as e:  # reported by the driver, like a task that failed on a cluster
                    yield task, e
        finally:
            clear_cache()

    def close(self) -> None:
        clear_cache()


class RayPool:
    """Tasks on a Ray cluster: `address` "auto" (a running cluster, or RAY_ADDRESS), "local" (start one on
    this machine), "host:port" or "ray://host:10001"; None uses the Ray this process already initialised."""

    def __init__(
        self,
        address: str | None = "auto",
        gpus_per_task: float | None = None,
        cpus_per_task: float = 1,
        max_retries: int = 3,
        threads: int = 0,
        init_kwargs: dict | None = None,
    ) -> None:
        self.address, self.gpus, self.cpus = address, gpus_per_task, cpus_per_task
        self.max_retries, self.threads, self.init_kwargs = max_retries, threads, init_kwargs or {}
        self.name = f"Ray ({address or 'initialised'})"
        self._started = False

    def _ray(self):
        try:
            import ray
        except ImportError as e:
            raise HarvestError("--ray needs Ray: pip install 'qscope[cluster]' (or pip install ray)") from e
        if not ray.is_initialized():
            if self.address is None:
                raise HarvestError("Ray is not initialised in this process; give an address (auto, local, ...)")
            try:
                ray.init(address=self.address, log_to_driver=False, **self.init_kwargs)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise HarvestError(f"cannot reach a Ray cluster at {self.address!r}: {str(e).splitlines()[0]}") from e
            self._started = True
        return ray

    def gpus_per_task(self) -> float:
        """As given, else one GPU per task when the cluster has GPUs, else none."""
        if self.gpus is not None:
            return self.gpus
        return 1.0 if self._ray().cluster_resources().get("GPU", 0) > 0 else 0.0

    def device_type(self, opts: HarvestOptions) -> str:
        if opts.device != "auto":  # checked on the workers: the driver may have no GPU itself
            return torch.device(opts.device).type
        return "cuda" if self.gpus_per_task() > 0 else "cpu"

    def run(self, work: ShardWork, tasks: Sequence[ShardTask], windows: WindowsFn) -> Iterator[Outcome]:
        ray = self._ray()
        remote = ray.remote(run_shard).options(
            num_cpus=self.cpus, num_gpus=self.gpus_per_task(), max_retries=self.max_retries, retry_exceptions=True
        )
        work_ref = ray.put(work)
        pending = {remote.remote(work_ref, task, windows(task)): task for task in tasks}
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    task = pending.pop(ref)
                    try:
                        yield task, ray.get(ref)
                    except Exception as e:  # RayTaskError, WorkerCrashedError, ... after the retries
                        yield task, e
        finally:
            for ref in pending:  # the driver stopped early (an error, Ctrl-C): do not leave work running
                ray.cancel(ref, force=True)

    def close(self) -> None:
        """Shut down the Ray this pool started (a cluster it only connected to keeps running)."""
        if self._started:
            import ray

            ray.shutdown()
            self._started = False
