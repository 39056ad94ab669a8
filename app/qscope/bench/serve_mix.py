"""Benchmark the steering worker's schedulers on a mixed workload: the continuous worker beside the static one,
same requests, same run, same machine.

    qscope bench serve-mix --model data/demo/model --saes data/demo/saes
    qscope bench serve-mix --static            # the static worker only (--continuous: the continuous one only)

The workload (deterministic for a --seed) comes from --clients clients over --spread-s seconds: short and long
default + steered pairs (as /api/steer sends) and rows jobs of 1-4 rows of varied lengths (as /v1 sends with `n`),
greedy. It runs in process, through the workers' own queues (not over HTTP). Prints, per worker: throughput
(generated tokens/s), p50/p99 time to first token and per-request latency; then "a short request among long
ones": a 2-token request's latency sent 50 ms after two long ones, over its latency alone; and whether every
request got the same tokens from both workers. A JSON line last.
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
from dataclasses import dataclass, field

import torch

from qscope.model import load_model
from qscope.sae import find_sae_files, load_sae
from qscope.steer.continuous_worker import ContinuousWorker
from qscope.steer.edits import Edit
from qscope.steer.engine import Row
from qscope.steer.worker import SteerJob, SteerWorker

PROMPTS = [
    "The quick brown fox jumps over the lazy dog. Once upon a time",
    "def fibonacci(n):\n    if n < 2:\n        return n\n",
    "In the beginning",
    "Dear friend, I am writing to tell you about the strange thing that happened at the market today: a man",
]


@dataclass
class Spec:
    """One request of the workload: when it is sent, by whom, its rows' prompt, lengths and edits."""

    at: float
    client: str
    prompt: int
    rows: int
    tokens: int
    steered: bool  # a default + steered pair (rows == 2) or rows with the edits


@dataclass
class Timing:
    sent: float = 0.0
    first: float | None = None
    done: float | None = None
    ids: list = field(default_factory=list)
    tokens: int = 0


def workload(n: int, clients: int, spread_s: float, seed: int) -> list[Spec]:
    rng = random.Random(seed)
    specs = []
    for i in range(n):
        kind = rng.choice(["short pair", "long pair", "rows"])
        rows, tokens = {"short pair": (2, 8), "long pair": (2, 64), "rows": (rng.randint(1, 4), rng.randint(4, 48))}[
            kind
        ]
        steered = kind != "rows" or rng.random() < 0.5
        specs.append(
            Spec(rng.uniform(0, spread_s), f"c{i % clients}", rng.randrange(len(PROMPTS)), rows, tokens, steered)
        )
    return sorted(specs, key=lambda s: s.at)


def run_workload(worker: SteerWorker, lm, edits, specs: list[Spec]) -> tuple[list[Timing], float]:
    """Send the requests at their times; (their timings, the wall time until the last answer)."""
    tok = lm.require_tokenizer()
    timings = [Timing() for _ in specs]
    finished = threading.Semaphore(0)

    def emitter(t: Timing):
        def emit(kind: str, data) -> None:
            if kind == "token":
                t.first = t.first or time.perf_counter()
                t.tokens += 1
                t.ids.append((data["row"], data["id"]))
            elif kind in ("done", "error"):
                t.done = time.perf_counter()
                finished.release()

        return emit

    start = time.perf_counter()
    for spec, t in zip(specs, timings, strict=True):
        ids = tok(PROMPTS[spec.prompt], add_special_tokens=False)["input_ids"]
        if spec.rows == 2 and spec.steered:
            rows = [Row(ids, {}, max_new_tokens=spec.tokens), Row(ids, edits, max_new_tokens=spec.tokens)]
            job = SteerJob(lm.model, tok, rows, emitter(t), client=spec.client)
        else:
            rows = [Row(ids, edits if spec.steered else {}, max_new_tokens=spec.tokens) for _ in range(spec.rows)]
            job = SteerJob(lm.model, tok, rows, emitter(t), kind="rows", client=spec.client)
        time.sleep(max(0.0, start + spec.at - time.perf_counter()))
        t.sent = time.perf_counter()
        worker.submit(job)
    for _ in specs:
        finished.acquire()
    return timings, time.perf_counter() - start


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def summary(timings: list[Timing], wall: float) -> dict:
    ttft = [(t.first or t.done or t.sent) - t.sent for t in timings]
    latency = [(t.done or t.sent) - t.sent for t in timings]
    return {
        "tokens": sum(t.tokens for t in timings),
        "tokens_per_s": round(sum(t.tokens for t in timings) / wall, 1),
        "ttft_p50_ms": round(percentile(ttft, 0.5) * 1e3, 1),
        "ttft_p99_ms": round(percentile(ttft, 0.99) * 1e3, 1),
        "latency_p50_ms": round(percentile(latency, 0.5) * 1e3, 1),
        "latency_p99_ms": round(percentile(latency, 0.99) * 1e3, 1),
        "wall_s": round(wall, 2),
    }


def short_among_long(make_worker, lm, edits, long_tokens: int) -> float:
    """A 2-token request's latency sent 50 ms after two long ones, over its latency alone (same worker kind)."""
    long = [Spec(0.0, "a", 0, 2, long_tokens, True), Spec(0.0, "b", 3, 2, long_tokens, True)]
    short = Spec(0.05, "c", 2, 2, 2, True)
    alone, _ = run_workload(make_worker(), lm, edits, [Spec(0.0, "c", 2, 2, 2, True)])
    mixed, _ = run_workload(make_worker(), lm, edits, [*long, short])
    latency = lambda t: (t.done or t.sent) - t.sent  # noqa: E731
    return latency(mixed[2]) / latency(alone[0])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="data/demo/model")
    ap.add_argument("--saes", default="data/demo/saes")
    ap.add_argument("--requests", type=int, default=48)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--spread-s", type=float, default=2.0, help="requests are sent over this many seconds")
    ap.add_argument("--long-tokens", type=int, default=128, help="the long requests of the short-among-long probe")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--static", action="store_true", help="run the static worker only")
    which.add_argument("--continuous", action="store_true", help="run the continuous worker only")
    args = ap.parse_args(argv)
    lm = load_model(args.model, device=args.device)
    sae = load_sae(find_sae_files(args.saes)[-1], device=lm.device)
    edits = {sae.site: [Edit(sae, 0, "add", 4.0), Edit(sae, 1, "clamp", 2.0)]}
    specs = workload(args.requests, args.clients, args.spread_s, args.seed)
    kinds = {"continuous": ContinuousWorker, "static": SteerWorker}
    chosen = ["static"] if args.static else ["continuous"] if args.continuous else ["continuous", "static"]
    report: dict = {"model": lm.model_id, "device": str(lm.device), "threads": torch.get_num_threads()}
    report |= {"requests": len(specs), "clients": args.clients}
    seen = {}
    for name in chosen:
        make = lambda cls=kinds[name]: cls(queue_size=len(specs) + 4, max_batch_rows=32)  # noqa: E731
        run_workload(make(), lm, edits, specs[:2])  # warm-up
        timings, wall = run_workload(make(), lm, edits, specs)
        seen[name] = [t.ids for t in timings]
        report[name] = summary(timings, wall) | {
            "short_among_long": round(short_among_long(make, lm, edits, args.long_tokens), 2)
        }
        print(f"{name:>10}: " + ", ".join(f"{k} {v}" for k, v in report[name].items()))
    if len(seen) == 2:
        same = sum(sorted(a) == sorted(b) for a, b in zip(seen["continuous"], seen["static"], strict=True))
        report["same_tokens"] = round(same / len(specs), 3)
        c, s = report["continuous"], report["static"]
        report["throughput_ratio"] = round(c["tokens_per_s"] / s["tokens_per_s"], 2)
        report["goals"] = {"throughput_ratio": 2.0, "short_among_long": 1.5, "ttft_p99": "lower than static"}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
