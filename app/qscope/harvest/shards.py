"""Split a harvest into tasks of (corpus shard x group of SAEs), run one task, merge the partial states.

Nothing here imports Ray: a pool (qscope.harvest.pools) sends tasks to Ray workers or runs them in this process.

- A shard is a range of whole batches [b0, b1): batch b is windows b * batch .. (b + 1) * batch - 1 of the job,
  as in the single-process harvest. A batch is never cut, because the sink mask compares each token with its
  batch's median norm.
- A group is a run of SAEs in job order (by layer) whose weights and states fit one device; a task forwards its
  shard only up to the deepest layer of its group.
- Every SAE keeps its job index as the key id of its interval samples and every window its job-wide id
  (qscope.harvest.feed), so a task feeds exactly the entries, with the same keys, that the single-process harvest
  feeds for those batches. FeatureState.merge is exact, so merging the tasks' states in any order gives the
  single-process state: top-k, interval reservoirs, histograms, counts and maxima bit for bit; the float64
  activation sums differ only by the order of their additions (relative 1e-16).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from qscope.harvest.feed import feed_sae, state_spec
from qscope.harvest.options import HarvestError, HarvestOptions
from qscope.harvest.state import HIST_EDGES, FeatureState, StateSpec
from qscope.model import LoadedModel, capture, load_model
from qscope.sae import Sae, load_sae


@dataclass(frozen=True)
class ShardTask:
    index: int  # position in the plan; names the task's spool file
    b0: int  # first batch of the shard
    b1: int  # one past its last batch
    saes: tuple[int, ...]  # job indices of the SAEs of its group

    def windows(self, batch: int, n_windows: int) -> tuple[int, int]:
        """The job's windows [w0, w1) that this task reads."""
        return self.b0 * batch, min(self.b1 * batch, n_windows)


@dataclass
class ShardWork:
    """What every task of one job shares (sent to the cluster once)."""

    opts: HarvestOptions
    sae_files: list[str]  # every SAE of the job, in job order
    chunks: list[int]  # windows per encode chunk, per SAE, for device_type
    device_type: str  # the kind of device tasks run on ("cpu", "cuda"); it fixes the chunking, hence the keys
    threads: int = 0  # torch threads in a task; 0 leaves torch's default
    crash_once: tuple[str, int] | None = None  # fault injection for tests: (folder, task index): the first
    #                                            attempt of that task kills its worker process


@dataclass
class ShardResult:
    index: int
    states: list[dict[str, Tensor]]  # FeatureState.state_dict() per SAE of the group, on the CPU
    tokens: int  # tokens of the shard
    seconds: float
    host: str
    timings: dict[str, float] = field(default_factory=dict)


def plan_tasks(n_windows: int, batch: int, batches_per_task: int, groups: Sequence[Sequence[int]]) -> list[ShardTask]:
    """Every (shard, group) task, group by group (a worker that takes the next task of a group keeps its SAEs)."""
    n_batches = -(-n_windows // batch)
    step = max(1, batches_per_task)
    shards = [(b0, min(b0 + step, n_batches)) for b0 in range(0, n_batches, step)]
    pairs = [(tuple(g), s) for g in groups for s in shards]
    return [ShardTask(i, b0, b1, g) for i, (g, (b0, b1)) in enumerate(pairs)]


def task_bytes(d_in: int, d_sae: int, spec: StateSpec) -> int:
    """Device memory one SAE holds in a task: its fp32 weights and its FeatureState (the dense encode blocks
    come on top, once per task: SAEs encode one after another)."""
    weights = 4 * (2 * d_in * d_sae + d_sae + d_in)
    entries = spec.top_k + spec.n_bins * spec.per_bin  # reservoir slots per feature
    per_entry = 4 * spec.width + 8 + 4 + 4 + 8 + 8  # acts, window, pos, act, key, slot
    state = d_sae * (entries * per_entry + 8 * (len(HIST_EDGES) - 1) + 8 + 4 + 4 + 8 * spec.n_bins)
    return weights + state


def group_saes(sizes: Sequence[int], budget: int, max_per_group: int = 0) -> list[tuple[int, ...]]:
    """Consecutive groups of SAE indices whose sizes sum to at most `budget` (an SAE alone may exceed it), at
    most `max_per_group` SAEs each when that is > 0: as few groups as a greedy fill needs, as even as fits (a
    group forwards up to its deepest layer, so 14 + 14 layers cost less than 27 + 1)."""
    greedy: list[list[int]] = []
    used = 0
    for i, size in enumerate(sizes):
        full = max_per_group > 0 and greedy and len(greedy[-1]) >= max_per_group
        if not greedy or full or used + size > budget:
            greedy.append([])
            used = 0
        greedy[-1].append(i)
        used += size
    even = _even_split(sizes, len(greedy))
    fits = all(g and (len(g) == 1 or sum(sizes[i] for i in g) <= budget) for g in even)
    fits = fits and (max_per_group <= 0 or all(len(g) <= max_per_group for g in even))
    return [tuple(g) for g in (even if fits else greedy)]


def _even_split(sizes: Sequence[int], n: int) -> list[list[int]]:
    """`sizes` cut into n non-empty consecutive groups, each cut where the running sum passes k/n of the total."""
    total, cum = sum(sizes), 0
    groups: list[list[int]] = [[] for _ in range(n)]
    for i, size in enumerate(sizes):
        k = min(n - 1, int(cum * n // total) if total else 0, i)  # never more groups than SAEs so far
        k = max(k, n - (len(sizes) - i))  # leave one SAE for each group still to come
        groups[k].append(i)
        cum += size
    return groups


def merge_states(spec: StateSpec, parts: Iterable[Mapping[str, Tensor]], device: str = "cpu") -> FeatureState:
    """The state of the union of the parts' windows (each part a FeatureState.state_dict())."""
    state, part = FeatureState(spec, device), FeatureState(spec, device)
    for saved in parts:
        part.load_state_dict(saved)
        state.merge(part)
    return state


def run_shard(work: ShardWork, task: ShardTask, windows_NT: np.ndarray) -> ShardResult:
    """One task: forward the shard's batches, feed every SAE of the group, return the partial states."""
    t0 = time.perf_counter()
    _maybe_crash(work, task)
    if work.threads:
        torch.set_num_threads(work.threads)
    opts = work.opts
    loaded = _model(opts)
    if loaded.device.type != work.device_type:
        raise HarvestError(f"task {task.index} runs on {loaded.device}, the job was planned for {work.device_type}")
    saes = _saes([work.sae_files[i] for i in task.saes], loaded.device)
    states = [FeatureState(state_spec(opts, s.d_sae), loaded.device) for s in saes]
    sites = [s.require_site() for s in saes]
    ids_NT = torch.from_numpy(np.array(windows_NT, dtype=np.int32))  # a copy: Ray hands out read-only arrays
    timings: dict[str, float] = {"forward": 0.0}
    for b in range(task.b0, task.b1):
        ids_BT = ids_NT[(b - task.b0) * opts.batch : (b - task.b0 + 1) * opts.batch].long()
        t = time.perf_counter()
        hidden = capture(loaded.model, sites, ids_BT, stop_early=True)
        timings["forward"] += time.perf_counter() - t
        for i, sae, state in zip(task.saes, saes, states, strict=True):
            feed_sae(state, sae, hidden[sae.require_site()], b, i, work.chunks[i], opts, timings)
    return ShardResult(
        task.index,
        [{k: v.detach().cpu() for k, v in s.state_dict().items()} for s in states],
        ids_NT.numel(),
        time.perf_counter() - t0,
        socket.gethostname(),
        timings,
    )


@dataclass
class _Kept:
    """What a worker process keeps between tasks: one model (and the options it was loaded with, as a key) and
    the SAEs of its last group, by file."""

    model_key: str = ""
    model: LoadedModel | None = None
    saes: dict[str, Sae] = field(default_factory=dict)

    def clear(self) -> None:
        self.model_key, self.model, self.saes = "", None, {}


# A worker process keeps the model and the SAEs of its last group between tasks (one model at a time).
_cache = _Kept()


def _model(opts: HarvestOptions) -> LoadedModel:
    key = repr((opts.model, opts.device, opts.dtype))
    if _cache.model is None or _cache.model_key != key:
        _cache.clear()
        _cache.model = load_model(opts.model, device=opts.device, dtype=opts.dtype, tokenizer=False)
        _cache.model_key = key
    return _cache.model


def _saes(files: Sequence[str], device: torch.device) -> list[Sae]:
    kept = _cache.saes
    saes = {f: kept[f] if f in kept else load_sae(f, device=device, dtype=torch.float32) for f in files}
    _cache.saes = saes
    return list(saes.values())


def adopt_model(opts: HarvestOptions, loaded: LoadedModel) -> None:
    """Let tasks run in this process use a model it already loaded with these options."""
    _cache.clear()
    _cache.model, _cache.model_key = loaded, repr((opts.model, opts.device, opts.dtype))


def clear_cache() -> None:
    """Drop the model and SAEs this process keeps between tasks."""
    _cache.clear()


def _maybe_crash(work: ShardWork, task: ShardTask) -> None:
    """Fault injection: the first attempt of task `crash_once[1]` leaves a mark and kills its process."""
    if work.crash_once is None or work.crash_once[1] != task.index:
        return
    mark = Path(work.crash_once[0]) / f"crashed-{task.index}"
    if not mark.exists():
        mark.parent.mkdir(parents=True, exist_ok=True)
        mark.touch()
        os._exit(1)
