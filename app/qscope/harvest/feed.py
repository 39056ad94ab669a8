"""One batch into the feature states: the per-SAE step that the single-process harvest (qscope.harvest.run) and
the sharded one (qscope.harvest.shards) share, so both feed exactly the same entries with the same random keys.

Per batch b of ``opts.batch`` windows and per SAE: the rank mask (position 0 and high-norm sinks out), the
encode in chunks of whole windows, and FeatureState.update with window ids ``b * batch + ...`` and interval keys
from ``key_generator(seed, b, key_id, chunk)``. Everything that decides the result is global (b, key_id) or
fixed by the options and the device type (the chunking), never local to a process or a shard.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from qscope.harvest.options import HarvestOptions
from qscope.harvest.state import FeatureState, StateSpec, key_generator
from qscope.model import rank_mask
from qscope.sae import Sae

# Threads for the state update on a CPU. The update is many small vectorised steps (gathers, scatters, sorts of a
# few 10k entries) that gain nothing from more threads, and where the cores are shared the threads of each step
# spin-wait on each other: one update of a 512-feature SAE took 2-4 s on two threads and 0.1 s on one, on a loaded
# 2-core machine. The forward and the encode (large products) keep torch's threads.
BOOKKEEPING_THREADS = 1

CHUNK_ELEMENTS = {"cuda": 2**28, "cpu": 2**22}  # dense activations per encode chunk (tokens x d_sae); on the CPU
# a 16 MB block is reused by the allocator, where larger ones cost page faults on every chunk


def state_spec(opts: HarvestOptions, d_sae: int) -> StateSpec:
    """The FeatureState layout of one SAE under these options."""
    return StateSpec(d_sae, opts.ctx, opts.top_pool, *opts.window, opts.interval_bins, opts.interval_samples)


def chunk_windows(opts: HarvestOptions, device_type: str, d_sae: int) -> int:
    """Windows per encode chunk of an SAE on this kind of device (the chunking decides the interval keys)."""
    budget = CHUNK_ELEMENTS.get(device_type, CHUNK_ELEMENTS["cpu"])
    return max(1, budget // (opts.ctx * d_sae))


def feed_sae(
    state: FeatureState,
    sae: Sae,
    hidden_BTD: Tensor,
    b: int,
    key_id: int,
    chunk: int,
    opts: HarvestOptions,
    timings: dict[str, float],
) -> None:
    """Encode one SAE's site for batch b, `chunk` windows at a time, into its state. Window ids come from b and
    interval keys from (seed, b, key_id, chunk index): all global, so any split of the batches over processes
    feeds the same entries with the same keys (qscope.harvest.shards relies on it)."""
    valid_BT = rank_mask(hidden_BTD, opts.skip_first, opts.sink_norm_ratio)
    for c, cw in enumerate(range(0, hidden_BTD.shape[0], chunk)):
        t = time.perf_counter()
        with torch.no_grad():
            acts_NF = sae.encode(hidden_BTD[cw : cw + chunk].reshape(-1, hidden_BTD.shape[-1]))
        sync(state.device)
        t2 = time.perf_counter()
        timings["encode"] = timings.get("encode", 0.0) + t2 - t
        gen = key_generator(opts.seed, b, key_id, c, device=state.device)
        with few_threads(state.device):
            state.update(acts_NF, valid_BT[cw : cw + chunk].reshape(-1), b * opts.batch + cw, gen)
        sync(state.device)
        timings["bookkeeping"] = timings.get("bookkeeping", 0.0) + time.perf_counter() - t2


@contextmanager
def few_threads(device: torch.device, n: int = BOOKKEEPING_THREADS) -> Iterator[None]:
    """torch on n threads for the body when on a CPU (see BOOKKEEPING_THREADS); as it was afterwards."""
    before = torch.get_num_threads()
    if device.type != "cpu" or n <= 0 or before == n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
