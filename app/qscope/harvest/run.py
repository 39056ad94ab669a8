"""The harvest job: model + SAEs + corpus -> one DuckDB feature store, in one pass over the tokens.

Per batch of windows: one forward through qscope.model.capture on every SAE site at once, stopped after the
deepest one; each SAE encodes its site once, in chunks of whole windows small enough for a dense
[tokens, d_sae] block, and its FeatureState takes the chunk. Position 0 and sink tokens (residual norm above
``sink_norm_ratio`` x the batch median at that site) are left out of rankings and statistics. A checkpoint is
saved every ``checkpoint_every`` batches beside the output; ``resume`` continues from it and gives the same
database. At the end: logit effects, neighbors, labels and cards (qscope.harvest.tables), the atomic write, and
the search index (built by the `indexer` the caller passes). Every phase shows its progress and time
(qscope.progress).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from torch import Tensor

from qscope import __version__
from qscope.harvest.build import PHASES, TableWork, build_tables, declare_phases, format_phases, job_inputs, scaled
from qscope.harvest.checkpoint import checkpoint_dir, load_checkpoint, remove_checkpoint, save_checkpoint
from qscope.harvest.feed import chunk_windows, feed_sae, state_spec, sync
from qscope.harvest.inputs import HarvestInputs, load_inputs
from qscope.harvest.options import HarvestError, HarvestInterrupted, HarvestOptions
from qscope.harvest.state import FeatureState
from qscope.model import LoadedModel, capture, pick_device
from qscope.progress import PhaseProgress
from qscope.store.schema import SCHEMA_VERSION
from qscope.store.writer import store_writer
from qscope.tokens import vocab_bytes

# Builds the search index of the store at a path (qscope.search.semantic.index_store, passed in by the CLI: the
# harvest does not import the search layer); progress(done, total) as it goes; returns the features indexed.
Indexer = Callable[[Path, Callable[[int, int], None]], int]


@dataclass
class HarvestSummary:
    out: Path
    tokens: int  # tokens in the harvested windows
    seconds: float  # wall time of the whole job (all resumed parts together)
    tokens_per_s: float  # tokens over the seconds of the pass over the corpus (this call's part)
    dead: dict[str, int]  # features that never fired, per sae_id
    features: dict[str, int]  # d_sae per sae_id
    bytes: int
    timings: dict[str, float] = field(default_factory=dict)  # seconds: each phase (PHASES) and, within the
    #                                                          pass, forward, encode and bookkeeping
    resumed_from: int = 0  # batches done before this call
    indexed: int | None = None  # features in the search index the harvest built (None: not built)


def prepare(opts: HarvestOptions) -> HarvestInputs:
    """Load and check every input on the harvest's device; any problem becomes a one-line HarvestError."""
    try:
        device = pick_device(opts.device)
    except ValueError as e:
        raise HarvestError(str(e)) from e
    return load_inputs(opts, device)


def chunks_of(opts: HarvestOptions, job: HarvestInputs) -> list[int]:
    """Windows per encode chunk, per SAE (qscope.harvest.feed.chunk_windows on the job's device)."""
    return [chunk_windows(opts, job.loaded.device.type, s.d_sae) for s in job.saes]


def harvest(
    opts: HarvestOptions,
    console: Console | None = None,
    on_batch: Callable[[int], None] | None = None,
    indexer: Indexer | None = None,
) -> HarvestSummary:
    """Run the whole job (see the module docstring); on_batch(batches done) is called after each batch;
    indexer builds the store's search index once it is written (none: the server builds it when it starts)."""
    opts.validate()
    t_start = time.perf_counter()
    console = console or Console(stderr=True)
    run = _Run(opts, prepare(opts), console, t_start)
    if not opts.resume and (checkpoint_dir(opts.out) / "state.pt").is_file():
        run.console.print(f"starting over: the checkpoint in {checkpoint_dir(opts.out)} is kept only with --resume")
    start = run.restore() if opts.resume else 0
    with PhaseProgress(console) as phases:
        t_pass = time.perf_counter()
        run.corpus_pass(start, on_batch, phases)
        summary = run.finish(start, time.perf_counter() - t_pass, phases)
        summary.indexed = index_stores(indexer, [opts.out], phases)
    summary.timings |= phases.seconds
    summary.seconds = run.elapsed()
    return summary


def index_stores(indexer: Indexer | None, stores: list[Path], phases: PhaseProgress) -> int | None:
    """Build the search index of each written store (phase "index"); features indexed, None without an
    indexer. A failure is reported and leaves the store as it is: the server builds the index when it starts."""
    if indexer is None:
        return None
    phases.add("index", 0, "texts")
    total = 0
    with phases.run("index") as advance:
        for store in stores:
            seen = [0, 0]  # done, total of this store

            def progress(n: int, of: int, seen: list[int] = seen) -> None:
                if of != seen[1]:
                    phases.add("index", of - seen[1], "texts")
                    seen[1] = of
                advance(n - seen[0])
                seen[0] = n

            try:
                total += indexer(store, progress)
            except Exception as e:  # noqa: BLE001 - the store is written; the server can still build the index
                phases.say(
                    f"search index of {store} not built ({type(e).__name__}: {e}); `qscope serve` builds it at start"
                )
    return total


class _Run:
    """One call of the job: the inputs, the states, the checkpoint key and the clocks."""

    def __init__(self, opts: HarvestOptions, job: HarvestInputs, console: Console, t_start: float) -> None:
        self.opts, self.job, self.console, self.t_start = opts, job, console, t_start
        self.dev = job.loaded.device
        self.states = [FeatureState(state_spec(opts, s.d_sae), self.dev) for s in job.saes]
        self.chunks = chunks_of(opts, job)
        digest = hashlib.sha256(job.windows_NT.numpy().tobytes()).hexdigest()
        self.key = {
            **opts.settings(),
            "sae_files": [str(s.source) for s in job.saes],
            "chunks": self.chunks,
            "device_type": self.dev.type,
            "windows": digest,
        }
        self.spent = 0.0  # seconds of earlier calls (resume)
        self.timings = dict.fromkeys(("forward", "encode", "bookkeeping"), 0.0)
        self.n_batches = -(-len(job.windows_NT) // opts.batch)

    def elapsed(self) -> float:
        return self.spent + time.perf_counter() - self.t_start

    def restore(self) -> int:
        """Load the checkpoint beside the output; the batch to go on from (0 without one)."""
        restored = load_checkpoint(self.opts.out, self.key, self.states)
        if restored is None:
            self.console.print(f"no checkpoint at {checkpoint_dir(self.opts.out)}: starting from the beginning")
            return 0
        start, self.spent = restored
        self.console.print(f"resuming from batch {start} ({start * self.opts.batch * self.opts.ctx:,} tokens done)")
        return start

    def corpus_pass(self, start: int, on_batch: Callable[[int], None] | None, phases: PhaseProgress) -> None:
        """Forward, encode and update batch by batch from `start`, with checkpoints and progress."""
        opts, windows_NT = self.opts, self.job.windows_NT
        sites = [s.require_site() for s in self.job.saes]
        total = windows_NT.numel()
        phases.add("pass", total, "tokens", done=min(start * opts.batch * opts.ctx, total))
        with phases.run("pass") as advance:
            for b in range(start, self.n_batches):
                ids_BT = windows_NT[b * opts.batch : (b + 1) * opts.batch].long()
                t = time.perf_counter()
                hidden = capture(self.job.loaded.model, sites, ids_BT, stop_early=True)
                sync(self.dev)
                self.timings["forward"] += time.perf_counter() - t
                for s, sae in enumerate(self.job.saes):
                    feed_sae(self.states[s], sae, hidden[sae.require_site()], b, s, self.chunks[s], opts, self.timings)
                advance(ids_BT.numel())
                if on_batch:
                    on_batch(b + 1)
                self.maybe_checkpoint(b + 1, start)

    def maybe_checkpoint(self, done: int, start: int) -> None:
        """Save a checkpoint every checkpoint_every batches; stop here when stop_after says so."""
        opts = self.opts
        if done == self.n_batches:
            return
        stop = opts.stop_after is not None and done - start >= opts.stop_after
        if stop or (opts.checkpoint_every and done % opts.checkpoint_every == 0):
            save_checkpoint(opts.out, self.key, done, self.elapsed(), self.states)
        if stop:
            raise HarvestInterrupted(
                f"stopped after batch {done} of {self.n_batches}; checkpoint in {checkpoint_dir(opts.out)}: "
                "rerun with --resume to finish"
            )

    def finish(self, start: int, pass_seconds: float, phases: PhaseProgress) -> HarvestSummary:
        """Effects, neighbors, labels and cards; the atomic write; the summary. The checkpoint goes once written."""
        job, opts = self.job, self.opts
        vocab = vocab_of(job.loaded)
        head = job.loaded.model.get_output_embeddings()
        if head is None:
            raise HarvestError(f"{job.loaded.path} has no LM head: logit effects need its weight")
        declare_phases(phases, sum(s.d_sae for s in job.saes))
        work = TableWork(phases, card_workers=opts.card_workers, top_k=opts.top_k, dedup=opts.dedup)
        opts_tokens = (opts.logit_tokens, opts.neighbors, opts.cross_neighbors)
        inputs = job_inputs(job.saes, job.sae_ids, self.states, job.infos)
        tables = build_tables(inputs, job.windows_NT, head.weight, vocab, opts_tokens, work)
        meta = store_meta(opts, job.loaded.path, job.model_id, job.windows_NT, self.elapsed())
        with phases.run("write") as advance, store_writer(opts.out, meta, vocab) as add:
            for t in sorted(tables, key=lambda t: t.info["sae_id"]):
                add(t, scaled(advance, t.info["d_sae"]))
        remove_checkpoint(opts.out)
        done = (len(job.windows_NT) - min(start * opts.batch, len(job.windows_NT))) * opts.ctx
        return HarvestSummary(
            out=opts.out,
            tokens=job.windows_NT.numel(),
            seconds=self.elapsed(),
            tokens_per_s=done / max(pass_seconds, 1e-9),
            dead={i: tb.info["dead"] for i, tb in zip(job.sae_ids, tables, strict=True)},
            features={i: s.d_sae for i, s in zip(job.sae_ids, job.saes, strict=True)},
            bytes=opts.out.stat().st_size,
            timings=dict(self.timings),
            resumed_from=start,
        )


def vocab_of(loaded: LoadedModel) -> list[bytes]:
    """token id -> the token's raw bytes, for every id the model can emit (ids past the tokenizer: b''). Bytes,
    not decoded text: a byte-level token holding part of a UTF-8 character decodes alone to U+FFFD."""
    tokenizer = loaded.require_tokenizer()
    return vocab_bytes(tokenizer, max(len(tokenizer), loaded.vocab_size))


def store_meta(opts: HarvestOptions, model_path: str, model_id: str, windows_NT: Tensor, seconds: float) -> dict:
    """The store's `meta` rows: what was harvested, how, and when."""
    return {
        "schema_version": str(SCHEMA_VERSION),
        "qscope_version": __version__,
        "model_id": model_id,
        "model": model_path,
        "corpus": str(opts.corpus),
        "tokens": str(windows_NT.numel()),
        "windows": str(len(windows_NT)),
        "ctx": str(opts.ctx),
        "settings": json.dumps(opts.settings()),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": f"{seconds:.1f}",
        **{str(k): str(v) for k, v in opts.extra.items()},
    }


def format_summary(s: HarvestSummary) -> str:
    """The end-of-job summary, a few lines for the terminal."""
    lines = [f"harvested {s.tokens:,} tokens in {s.seconds:.1f} s ({s.tokens_per_s:,.0f} tokens/s in the pass)"]
    for sae_id, n in s.features.items():
        lines.append(f"  {sae_id}: {n:,} features, {s.dead[sae_id]:,} dead ({s.dead[sae_id] / max(n, 1):.1%})")
    lines.append(f"wrote {s.out} ({s.bytes / 1e6:.1f} MB)")
    if s.indexed is not None:
        lines.append(f"search index: {s.indexed:,} features, stored beside the store")
    phases = {k: v for k, v in s.timings.items() if k in PHASES}
    if phases:
        lines.append(f"time per phase: {format_phases(phases)}")
    return "\n".join(lines)
