"""The sharded harvest: the feature store of qscope.harvest.run, computed by many tasks and written by one writer.

1. plan: the driver (this process) loads the model and tokenizer, reads the corpus into windows exactly as the
   single-process harvest does, reads each SAE once for its shape, and splits the job into tasks of
   (corpus shard x group of SAEs) that fit one device (qscope.harvest.shards);
2. run: the tasks not yet in the spool go to a pool (qscope.harvest.pools: Ray, or this process); each finished
   task's partial states are saved to the spool as they arrive (qscope.harvest.spool); a progress bar covers the
   whole job; failed tasks are reported at the end, and the same command run again does only what is missing;
3. finish: SAE by SAE in sae_id order, the driver merges that SAE's partial states from the spool (exactly:
   see qscope.harvest.shards), builds its tables (logit effects and neighbors on the driver's device, as the
   single-process run does) and adds them to the store, or to one store per SAE; then the search index of each
   store is built (when the caller passes an indexer) and the spool goes. Every phase shows its progress and
   time (qscope.progress).

The result is the single-process database of the same options on the same kind of device: every row equal,
mean activations equal to float64 rounding. Checkpoint options (--resume, --checkpoint-every) do not apply: the
spool is the checkpoint.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from torch import Tensor

from qscope.harvest.build import SaeInput, TableWork, declare_phases, sae_tables, scaled
from qscope.harvest.feed import CHUNK_ELEMENTS, chunk_windows, state_spec
from qscope.harvest.inputs import load_inputs, sae_files
from qscope.harvest.options import HarvestError, HarvestOptions
from qscope.harvest.pools import InlinePool, Pool
from qscope.harvest.run import HarvestSummary, Indexer, index_stores, store_meta, vocab_of
from qscope.harvest.shards import ShardTask, ShardWork, adopt_model, group_saes, merge_states, plan_tasks, task_bytes
from qscope.harvest.spool import Spool
from qscope.harvest.state import FeatureState
from qscope.harvest.tables import neighbor_saes
from qscope.model import LoadedModel
from qscope.progress import PhaseProgress
from qscope.sae import Sae, load_sae
from qscope.store.writer import store_writer

SAES_KEPT = 8  # SAEs the finish keeps loaded: one SAE and those of its nearest layers (two sparsities each)


class TasksFailed(HarvestError):
    """Some tasks failed after their retries; the finished ones are kept in the spool for a rerun."""


@dataclass
class ClusterPlan:
    """How a job is split (the `--ray` options of `qscope harvest`)."""

    shard_tokens: int = 1 << 20  # corpus tokens per task, rounded down to whole batches (at least one)
    task_gb: float = 40.0  # device memory for the SAE weights, states and encode blocks of one task
    saes_per_task: int = 0  # at most this many SAEs per task; 0: as many as task_gb allows
    crash_once: tuple[str, int] | None = None  # fault injection for tests (see ShardWork)


@dataclass
class ClusterJob:
    opts: HarvestOptions
    loaded: LoadedModel
    files: list[Path]  # SAE weight files in job order
    infos: list[dict]  # the `saes` row of each (sae_info)
    windows_NT: Tensor  # int32 [N, ctx]
    device_type: str  # of the tasks
    chunks: list[int]
    tasks: list[ShardTask]
    key: dict  # everything that decides the result: names the spool

    @property
    def sae_ids(self) -> list[str]:
        return [info["sae_id"] for info in self.infos]


def harvest_cluster(
    opts: HarvestOptions,
    pool: Pool,
    console: Console | None = None,
    plan: ClusterPlan | None = None,
    per_sae_dir: Path | None = None,
    indexer: Indexer | None = None,
) -> HarvestSummary:
    """Plan, run and finish one job (see the module docstring). per_sae_dir: write one store per SAE there
    (``<sae_id>.duckdb``) instead of one store at opts.out; opts.out still names the spool. indexer: builds each
    written store's search index (qscope.harvest.run.index_stores)."""
    t0 = time.perf_counter()
    console, plan = console or Console(stderr=True), plan or ClusterPlan()
    job = plan_job(opts, pool, plan)
    if isinstance(pool, InlinePool):
        adopt_model(opts, job.loaded)  # the tasks reuse the driver's model instead of loading a second copy
    spool = Spool(opts.out, job.key)
    with PhaseProgress(console) as phases:
        done_before, pass_seconds, timings = run_tasks(job, pool, spool, console, plan, phases)
        summary, outs = finish(job, spool, per_sae_dir, time.perf_counter() - t0, phases)
        summary.indexed = index_stores(indexer, outs, phases)
    spool.remove()
    summary.seconds = time.perf_counter() - t0
    summary.tokens_per_s = job.windows_NT.numel() * (1 - done_before) / max(pass_seconds, 1e-9)
    summary.timings = timings | summary.timings | phases.seconds
    return summary


def plan_job(opts: HarvestOptions, pool: Pool, plan: ClusterPlan) -> ClusterJob:
    """Load and check the inputs as the single-process harvest does, and split the job into tasks."""
    opts.validate()
    device_type = pool.device_type(opts)
    files = sae_files(opts.saes)
    inputs = load_inputs(opts, opts.device, keep_saes=False)
    infos, windows_NT = inputs.infos, inputs.windows_NT
    chunks = [chunk_windows(opts, device_type, i["d_sae"]) for i in infos]
    blocks = 3 * 4 * CHUNK_ELEMENTS.get(device_type, CHUNK_ELEMENTS["cpu"])  # pre-activations, top-k, dense acts
    sizes = [task_bytes(i["d_in"], i["d_sae"], state_spec(opts, i["d_sae"])) for i in infos]
    groups = group_saes(sizes, int(plan.task_gb * 2**30) - blocks, plan.saes_per_task)
    per_task = max(1, plan.shard_tokens // (opts.batch * opts.ctx))
    tasks = plan_tasks(len(windows_NT), opts.batch, per_task, groups)
    key = {
        **opts.settings(),
        "sae_files": [str(f) for f in files],
        "chunks": chunks,
        "device_type": device_type,
        "windows": hashlib.sha256(windows_NT.numpy().tobytes()).hexdigest(),
        "batches_per_task": per_task,
        "groups": [list(g) for g in groups],
    }
    return ClusterJob(opts, inputs.loaded, files, infos, windows_NT, device_type, chunks, tasks, key)


def run_tasks(
    job: ClusterJob, pool: Pool, spool: Spool, console: Console, plan: ClusterPlan, phases: PhaseProgress
) -> tuple[float, float, dict[str, float]]:
    """Run every task missing from the spool, saving each as it finishes. Returns (fraction of the job done
    before this call, seconds of this call's pass, summed task timings); raises TasksFailed if any failed."""
    opts, n_saes = job.opts, len(job.files)
    done = spool.finished() & {t.index for t in job.tasks}
    todo = [t for t in job.tasks if t.index not in done]

    def windows(task: ShardTask) -> np.ndarray:
        return job.windows_NT[slice(*task.windows(opts.batch, len(job.windows_NT)))].numpy()

    def share(task: ShardTask) -> float:  # the task's part of the job, in corpus tokens
        return windows(task).size * len(task.saes) / n_saes

    console.print(_plan_line(job, pool, spool, len(done)), markup=False, highlight=False)
    work = ShardWork(opts, [str(f) for f in job.files], job.chunks, job.device_type, pool.threads, plan.crash_once)
    failed: list[tuple[ShardTask, BaseException]] = []
    timings: dict[str, float] = {}
    before = sum(share(t) for t in job.tasks if t.index in done)
    t0 = time.perf_counter()
    phases.add("pass", job.windows_NT.numel(), "tokens", done=before)
    with phases.run("pass") as advance:
        for task, outcome in pool.run(work, todo, windows):
            if isinstance(outcome, BaseException):
                failed.append((task, outcome))
                console.print(f"task {task.index} failed: {_error_line(outcome)}", markup=False, highlight=False)
                continue
            spool.save(outcome)
            done.add(task.index)
            for k, v in outcome.timings.items():
                timings[k] = timings.get(k, 0.0) + v
            advance(share(task))
    if failed:
        task, error = failed[0]
        raise TasksFailed(
            f"{len(failed)} of {len(job.tasks)} tasks failed (first: task {task.index}: {_error_line(error)}); "
            f"the {len(done)} finished ones are kept in {spool.dir}: run the same command again to do the rest"
        )
    return before / job.windows_NT.numel(), time.perf_counter() - t0, timings


def _plan_line(job: ClusterJob, pool: Pool, spool: Spool, n_done: int) -> str:
    n_shards = len({(t.b0, t.b1) for t in job.tasks})
    return (
        f"{len(job.tasks)} tasks ({n_shards} corpus shards x {len(job.tasks) // n_shards} groups of SAEs) on "
        f"{pool.name}; {n_done} already done in {spool.dir}"
    )


def finish(
    job: ClusterJob, spool: Spool, per_sae_dir: Path | None, seconds: float, phases: PhaseProgress
) -> tuple[HarvestSummary, list[Path]]:
    """Merge, build and write SAE by SAE (bounded memory: one merged state, a few SAEs); the summary and the
    stores written."""
    opts, loaded = job.opts, job.loaded
    head = loaded.model.get_output_embeddings()
    if head is None:
        raise HarvestError(f"{loaded.path} has no LM head: logit effects need its weight")
    vocab = vocab_of(loaded)
    meta = store_meta(opts, loaded.path, job.infos[0]["model_id"], job.windows_NT, seconds)
    layers = [info["layer"] for info in job.infos]
    saes = _SaeCache(job.files, loaded.device)
    opts_tokens = (opts.logit_tokens, opts.neighbors, opts.cross_neighbors)
    declare_phases(phases, sum(info["d_sae"] for info in job.infos))
    work = TableWork(phases, card_workers=opts.card_workers, top_k=opts.top_k, dedup=opts.dedup)
    dead: dict[str, int] = {}
    outs: list[Path] = []
    with ExitStack() as stack:
        add = None if per_sae_dir else stack.enter_context(store_writer(opts.out, meta, vocab))
        for i in sorted(range(len(job.files)), key=lambda i: job.sae_ids[i]):
            state = merged_state(job, spool, i)
            others = [(job.sae_ids[j], saes.get(j)) for j in neighbor_saes(layers, i)]
            inp = SaeInput(saes.get(i), state, job.infos[i], others)
            tables = sae_tables(inp, job.windows_NT, head.weight, vocab, opts_tokens, work)
            del state, inp
            dead[job.sae_ids[i]] = tables.info["dead"]
            with phases.run("write") as advance:
                progress = scaled(advance, job.infos[i]["d_sae"])
                if add is not None:
                    add(tables, progress)
                    continue
                assert per_sae_dir is not None, "without one store, each SAE is written to its own file"
                outs.append(per_sae_dir / f"{job.sae_ids[i]}.duckdb")
                with store_writer(outs[-1], meta, vocab) as add_one:
                    add_one(tables, progress)
        if add is not None:
            with phases.run("write"):  # the single store's final checkpoint and rename
                stack.close()
    outs = outs or [opts.out]
    summary = HarvestSummary(
        out=per_sae_dir or opts.out,
        tokens=job.windows_NT.numel(),
        seconds=0.0,
        tokens_per_s=0.0,
        dead=dead,
        features={info["sae_id"]: info["d_sae"] for info in job.infos},
        bytes=sum(p.stat().st_size for p in outs),
    )
    return summary, outs


def merged_state(job: ClusterJob, spool: Spool, i: int) -> FeatureState:
    """SAE i's state over the whole corpus: the merge of its partial states, shard by shard in plan order."""
    parts = ((t.index, t.saes.index(i)) for t in job.tasks if i in t.saes)
    return merge_states(state_spec(job.opts, job.infos[i]["d_sae"]), (spool.load(t)["states"][j] for t, j in parts))


class _SaeCache:
    """The last SAES_KEPT SAEs loaded for the finish (weights on the driver's device, fp32 as in the run)."""

    def __init__(self, files: list[Path], device: torch.device) -> None:
        self.files, self.device, self.saes = files, device, OrderedDict[int, Sae]()

    def get(self, i: int) -> Sae:
        if i not in self.saes:
            self.saes[i] = load_sae(self.files[i], device=self.device, dtype=torch.float32)
            if len(self.saes) > SAES_KEPT:
                self.saes.popitem(last=False)
        self.saes.move_to_end(i)
        return self.saes[i]


def _error_line(e: BaseException) -> str:
    """The error's type and the last line of its message (where a task's remote traceback ends)."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[-1] if text else ''}"
