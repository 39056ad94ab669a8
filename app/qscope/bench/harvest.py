"""Benchmark the harvest on the demo: the full job against forward + SAE encode alone, on the same tokens.

    qscope bench harvest [--demo data/demo] [--tokens 200000] [--ctx 128] [--batch 32]

Prints tokens/s of (a) forward + encode alone (the floor any harvest pays), (b) the harvest's pass over the
corpus (forward + encode + bookkeeping), (c) the whole job (plus logit effects, neighbors, labels, cards, the
DuckDB write and the search index); the split of the pass between forward, encode, bookkeeping and the rest;
each phase's time; peak memory; bytes per feature in the file. Last line: the figures as JSON. The demo is
built first (tiny preset with --tiny) when missing.

The floor and the pass are measured interleaved, batch by batch (A/B/A/B): after each batch of the harvest,
the same batch goes through forward + encode alone, on the same model and SAEs loaded a second time; the
floor's time is taken out of the pass's. A load that comes and goes on a shared machine then weighs on both
alike, where timing one after the other let it move the ratio.

--synthetic DIR benchmarks a stand-in with the full demo's shapes instead (real corpus and tokenizer, randomly
initialised Qwen3 and TopK SAEs, no training): the same cost per token as the trained default, in a minute
rather than the hours the full build takes on a small CPU. Feature statistics differ (random SAEs fire evenly).
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch
from rich.console import Console

from qscope.config import get_settings
from qscope.harvest.build import PHASES, format_phases
from qscope.harvest.inputs import HarvestInputs
from qscope.harvest.options import HarvestOptions
from qscope.harvest.run import HarvestSummary, chunks_of, harvest, prepare
from qscope.model import capture
from qscope.search.semantic import index_store


def forward_and_encode(job: HarvestInputs, batch: int, chunks: list[int], first: int = 0, last: int | None = None):
    """Seconds for one forward per batch and every SAE's encode, chunked as the harvest chunks: batches
    first..last (all by default)."""
    dev = job.loaded.device
    sites = [s.require_site() for s in job.saes]
    n_batches = -(-len(job.windows_NT) // batch)
    t0 = time.perf_counter()
    for b in range(first, n_batches if last is None else last):
        hidden = capture(job.loaded.model, sites, job.windows_NT[b * batch : (b + 1) * batch].long(), stop_early=True)
        for sae, chunk in zip(job.saes, chunks, strict=True):
            h = hidden[sae.require_site()]
            for c in range(0, h.shape[0], chunk):
                with torch.no_grad():
                    sae.encode(h[c : c + chunk].reshape(-1, h.shape[-1]))
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
    return time.perf_counter() - t0


def synthetic_demo(out: Path) -> Path:
    """A demo folder with the full spec's shapes: real corpus and tokenizer, random model and SAEs."""
    from transformers import Qwen3ForCausalLM

    from qscope.demo import corpus as corpus_mod
    from qscope.demo.build import model_max_length
    from qscope.demo.spec import FULL
    from qscope.demo.tokenizer import save_tokenizer, train_tokenizer
    from qscope.demo.train_model import make_config
    from qscope.sae import save_qwen_scope

    if (out / "saes").is_dir():
        return out
    corpus_mod.write_corpus(out / "corpus", FULL.corpus_chars, FULL.seed)
    texts = corpus_mod.read_texts(out / "corpus" / "train.jsonl")
    tok = train_tokenizer(texts[:2000], FULL.vocab_size)
    save_tokenizer(tok, out / "model", model_max_length(FULL))
    torch.manual_seed(FULL.seed)
    Qwen3ForCausalLM(make_config(FULL, tok)).save_pretrained(out / "model")
    d, f = FULL.hidden_size, FULL.sae_width
    for layer in FULL.sae_layers:
        W_enc = torch.randn(f, d) / d**0.5
        save_qwen_scope(
            out / "saes" / FULL.sae_release / f"layer{layer}.sae.pt",
            W_enc,
            torch.zeros(f),
            W_enc.T.contiguous(),
            torch.zeros(d),
        )
    return out


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--demo", type=Path, default=get_settings().paths.demo_dir)
    p.add_argument("--tiny", action="store_true", help="build the tiny demo if the folder is missing")
    p.add_argument("--synthetic", type=Path, help="build (or reuse) a full-shape untrained stand-in here")
    p.add_argument("--tokens", type=int, default=200_000)
    p.add_argument("--ctx", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    p.add_argument("--no-index", action="store_true", help="leave out the search index phase")
    p.add_argument("--model", help="a checkpoint folder instead of the demo's (with --sae and --corpus)")
    p.add_argument("--sae", type=Path, help="SAE file or folder instead of the demo's")
    p.add_argument("--corpus", help="corpus instead of the demo's train split")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.synthetic:
        args.demo = synthetic_demo(args.synthetic)
    if not (args.demo / "model").is_dir() and not args.model:
        from qscope.demo.build import build_demo
        from qscope.demo.spec import FULL, TINY

        build_demo(
            args.demo, replace(TINY if args.tiny else FULL, seed=get_settings().runtime.seed), Console(stderr=True)
        )
    out = Path(tempfile.mkdtemp(prefix="bench_harvest_")) / "bench.duckdb"
    opts = HarvestOptions(
        model=args.model or str(args.demo / "model"),
        saes=[args.sae or args.demo / "saes"],
        corpus=args.corpus or str(args.demo / "corpus" / "train.jsonl"),
        out=out,
        tokens=args.tokens,
        ctx=args.ctx,
        batch=args.batch,
        device=args.device,
        dtype=args.dtype,
        checkpoint_every=0,
    )
    job = prepare(opts)
    tokens = job.windows_NT.numel()
    chunks = chunks_of(opts, job)
    forward_and_encode(job, args.batch, chunks, 0, 1)  # warm-up
    floor = [0.0]

    def floor_of(done: int) -> None:  # after the harvest's batch done - 1: the same batch, floor only
        floor[0] += forward_and_encode(job, args.batch, chunks, done - 1, done)

    device = job.loaded.device
    indexer = None if args.no_index else partial(index_store, device=str(device))
    t0 = time.perf_counter()
    summary = harvest(opts, Console(stderr=True), on_batch=floor_of, indexer=indexer)
    job_s = time.perf_counter() - t0 - floor[0]
    figures = _figures(args, summary, tokens, floor[0], job_s, device)
    _print(figures, summary, job_s)
    print(json.dumps(figures))


def _figures(args: argparse.Namespace, summary: HarvestSummary, tokens: int, base_s: float, job_s: float, device):
    t = summary.timings
    pass_s = t["pass"] - base_s  # the pass phase's clock also ran through the interleaved floor batches
    features = sum(summary.features.values())
    rest = pass_s - t["forward"] - t["encode"] - t["bookkeeping"]
    return {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "tokens": tokens,
        "saes": len(summary.features),
        "features": features,
        "forward_encode_tok_s": round(tokens / base_s, 1),
        "harvest_pass_tok_s": round(tokens / pass_s, 1),
        "ratio": round(base_s / pass_s, 3),
        "harvest_job_tok_s": round(tokens / job_s, 1),
        "pass_split": {k: round(t[k] / pass_s, 3) for k in ("forward", "encode", "bookkeeping")}
        | {"rest": round(rest / pass_s, 3)},
        "per_1k_tokens_ms": {k: round(1e6 * t[k] / tokens, 2) for k in ("forward", "encode", "bookkeeping")}
        | {"rest": round(1e6 * rest / tokens, 2), "floor": round(1e6 * base_s / tokens, 2)},
        "phases_s": {k: round(v, 2) for k, v in t.items() if k in PHASES and k != "pass"} | {"pass": round(pass_s, 2)},
        "job_s": round(job_s, 2),
        "peak_mem_mb": round(peak_memory_mb(device), 1),
        "file_bytes": summary.bytes,
        "bytes_per_feature": round(summary.bytes / features, 1),
    }


def _print(figures: dict, summary: HarvestSummary, job_s: float) -> None:
    tokens, features = figures["tokens"], figures["features"]
    print(f"tokens: {tokens:,} on {figures['device']} ({figures['threads']} threads), {features:,} features")
    print(f"forward + encode alone: {figures['forward_encode_tok_s']:,.0f} tokens/s (interleaved with the pass)")
    print(f"harvest pass:           {figures['harvest_pass_tok_s']:,.0f} tokens/s (ratio {figures['ratio']:.2f})")
    print(f"whole job:              {figures['harvest_job_tok_s']:,.0f} tokens/s ({job_s:.1f} s)")
    split, per = figures["pass_split"], figures["per_1k_tokens_ms"]
    print(
        "pass split: "
        + ", ".join(f"{k} {split[k]:.0%} ({per[k]:.1f} ms/1k tokens)" for k in split)
        + f"; floor {per['floor']:.1f} ms/1k tokens"
    )
    print("phases: " + format_phases(figures["phases_s"]))
    print(f"file: {summary.bytes / 1e6:.1f} MB, {figures['bytes_per_feature']:,.0f} bytes per feature")


if __name__ == "__main__":
    main()
