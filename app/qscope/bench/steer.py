"""Benchmark steering: default + steered in one batch vs one unsteered generation, hook overhead, and
aggregate tokens/s of 8 concurrent requests (coalesced by the worker) vs 1.

    qscope bench steer --model data/demo/model --saes data/demo/saes --tokens 32
    qscope bench steer --tokens 32                      # the same, through the CLI

Greedy decoding with EOS ignored, so every row generates exactly --tokens tokens. Prints a JSON line last.
"""

from __future__ import annotations

import argparse
import json
import threading
import time

import torch

from qscope.model import load_model
from qscope.sae import find_sae_files, load_sae
from qscope.steer.edits import Edit
from qscope.steer.engine import Row, generate
from qscope.steer.worker import SteerJob, SteerWorker

PROMPT = "The quick brown fox jumps over the lazy dog. Once upon a time"


def best(fn, reps: int) -> float:
    """The fastest of `reps` runs, in seconds (after one warm-up run)."""
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def concurrent(worker: SteerWorker, lm, rows_of, n: int) -> float:
    """Wall time for n requests (2 rows each) submitted together to one worker."""
    left = threading.Semaphore(0)

    def emit(kind: str, data: object) -> None:
        if kind == "done":
            left.release()

    jobs = [SteerJob(lm.model, lm.tokenizer, rows_of(), emit) for _ in range(n)]
    t = time.perf_counter()
    for j in jobs:
        worker.submit(j, start=False)
    worker.start()
    for _ in range(n):
        left.acquire()
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="data/demo/model")
    ap.add_argument("--saes", default="data/demo/saes")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    lm = load_model(args.model, device=args.device)
    sae = load_sae(find_sae_files(args.saes)[-1], device=lm.device)
    ids = lm.require_tokenizer()(PROMPT, add_special_tokens=False)["input_ids"]
    edits = {sae.site: [Edit(sae, 0, "add", 4.0), Edit(sae, 1, "clamp", 2.0)]}  # clamp: an SAE encode per step

    def row(e=None):
        return Row(ids, e or {}, temperature=0.0, max_new_tokens=args.tokens)

    def run(rows):
        return lambda: generate(lm.model, rows)

    plain = best(run([row()]), args.reps)
    steered = best(run([row(edits)]), args.reps)
    add_only = best(run([row({sae.site: edits[sae.site][:1]})]), args.reps)  # no SAE encode per step
    pair = best(run([row(), row(edits)]), args.reps)
    worker = SteerWorker(queue_size=args.concurrency, max_batch_rows=2 * args.concurrency)
    one = min(concurrent(worker, lm, lambda: [row(), row(edits)], 1) for _ in range(args.reps))
    many = min(concurrent(worker, lm, lambda: [row(), row(edits)], args.concurrency) for _ in range(args.reps))
    tok_one, tok_many = 2 * args.tokens / one, 2 * args.tokens * args.concurrency / many
    report = {
        "model": lm.model_id,
        "device": str(lm.device),
        "threads": torch.get_num_threads(),
        "tokens": args.tokens,
        "pair_over_plain": round(pair / plain, 3),
        "pair_goal": 1.25,
        "hook_overhead": round(steered / plain - 1, 3),
        "hook_overhead_add_only": round(add_only / plain - 1, 3),
        "hook_goal": 0.05,
        "tokens_per_s_1": round(tok_one, 1),
        f"tokens_per_s_{args.concurrency}": round(tok_many, 1),
        "concurrency_speedup": round(tok_many / tok_one, 2),
        "concurrency_goal": 4.0,
        "batches": worker.batches,
    }
    print(
        f"plain {plain * 1e3:.1f} ms, steered (add + clamp) {steered * 1e3:.1f} ms, "
        f"add only {add_only * 1e3:.1f} ms, default+steered {pair * 1e3:.1f} ms"
    )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
