"""Benchmark explaining: features explained per minute through `qscope serve`'s OpenAI endpoint with many
requests in flight (the steering worker batches them) vs one at a time, on the same features, in one run.

    qscope bench explain --db data/mini-qwen.duckdb --features 32 --concurrency 16
    qscope bench explain --db data/mini-qwen.duckdb --score      # explanations and their scores

Starts `qscope serve --db DB` on a free port (the served model is the explainer: mini-Qwen explains its own
features), waits for it, sends one warm-up request, then runs `qscope explain`'s runner with one request in flight
and with --concurrency, in turn, --reps times, into throw-away explanation files; each mode counts its fastest
run. Greedy answers (temperature 0), so every run asks the same questions. Prints a JSON line last.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import torch

from qscope.explain.client import ExplainerError, OpenAIChat
from qscope.explain.command import FeatureChoice, choose
from qscope.explain.runner import ExplainOptions, ExplainRunner
from qscope.explain.store import ExplanationWriter
from qscope.store.queries import Store


class Counted:
    """An explainer that counts its requests."""

    def __init__(self, chat: OpenAIChat) -> None:
        self.inner, self.name, self.requests = chat, chat.name, 0

    def chat(self, messages, **kw) -> str:
        self.requests += 1
        return self.inner.chat(messages, **kw)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(db: Path, port: int, concurrency: int, tmp: Path, threads: int | None) -> subprocess.Popen:
    qscope = Path(sys.executable).parent / "qscope"
    cmd = [str(qscope)] if qscope.exists() else [sys.executable, "-m", "qscope.cli"]
    env = os.environ | {
        "HF_HUB_OFFLINE": "1",
        "QSCOPE_CACHE_DIR": str(tmp / "cache"),
        "QSCOPE_APP_DB_URL": f"sqlite:///{tmp}/app.db",
        "QSCOPE_OPENAI_MAX_PROMPT_TOKENS": "8192",
        "QSCOPE_STEER_QUEUE_SIZE": str(max(64, 4 * concurrency)),
        "QSCOPE_STEER_MAX_BATCH_ROWS": str(max(32, concurrency)),
        "QSCOPE_STEER_TIMEOUT_S": "600",
        "QSCOPE_RATE_OPENAI_PER_MIN": "0",
    }
    if threads:  # torch's threads in the server (on a busy machine one thread beats two that spin-wait)
        env["OMP_NUM_THREADS"] = str(threads)
    log = open(tmp / "serve.log", "w")  # noqa: SIM115 - the server writes to it until it is stopped
    return subprocess.Popen([*cmd, "serve", "--db", str(db), "--port", str(port)], stdout=log, stderr=log, env=env)


def wait_ready(base: str, proc: subprocess.Popen, tmp: Path, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"qscope serve exited: {(tmp / 'serve.log').read_text()[-2000:]}")
        try:
            urllib.request.urlopen(base + "/-/health", timeout=2)
            return
        except OSError:
            time.sleep(0.3)
    raise SystemExit("qscope serve did not answer in time")


def timed_run(store: Store, keys, explainer: Counted, scorer, opts: ExplainOptions, out: Path) -> tuple[float, int]:
    writer = ExplanationWriter(out)
    before = explainer.requests
    t = time.perf_counter()
    summary = ExplainRunner(store, writer, explainer, scorer, None, opts).run(keys)
    seconds = time.perf_counter() - t
    writer.close()
    if summary.failed:
        raise SystemExit(f"{len(summary.failed)} features failed, e.g. {summary.failed[0]}")
    return seconds, explainer.requests - before


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", required=True, help="Feature store to serve and explain.")
    ap.add_argument("--sae", default=None, help="SAE whose features to explain (default: the store's first).")
    ap.add_argument("--features", type=int, default=32, help="Densest live features to explain in each run.")
    ap.add_argument("--concurrency", type=int, default=16, help="Requests in flight in the batched run.")
    ap.add_argument("--reps", type=int, default=2, help="Runs of each mode; the fastest counts.")
    ap.add_argument("--score", action="store_true", help="Also score each explanation (fuzzing only: no pool).")
    ap.add_argument("--server-threads", type=int, default=None, help="torch threads of the server (default: torch's).")
    args = ap.parse_args(argv)
    db = Path(args.db)
    store = Store(db, timeout_s=60)
    sae_id = args.sae or next(iter(store.saes))
    keys = choose(store, FeatureChoice([sae_id], top=args.features))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        proc = start_server(db, port, args.concurrency, tmp, args.server_threads)
        try:
            wait_ready(base, proc, tmp)
            model = json.loads(urllib.request.urlopen(base + "/v1/models").read())["data"][0]["id"]
            chat = Counted(OpenAIChat(base + "/v1", model, timeout_s=600))
            chat.chat([{"role": "user", "content": "Hello"}], max_tokens=4)  # loads the model
            runs: dict[int, tuple[float, int]] = {}
            for rep in range(args.reps):  # the two modes in turn, each timed by its fastest run
                for n in (1, args.concurrency):
                    opts = ExplainOptions(concurrency=n, score=args.score)
                    scorer = chat if args.score else None
                    got = timed_run(store, keys, chat, scorer, opts, tmp / f"run{n}-{rep}.sqlite")
                    runs[n] = min(runs.get(n, got), got)
                    print(
                        f"{len(keys)} features, {n} in flight: {got[0]:.1f} s, {got[1]} requests, "
                        f"{60 * len(keys) / got[0]:.1f} features/min"
                    )
        except ExplainerError as e:  # one line, and what the server said
            raise SystemExit(f"bench explain: {e}\nserver log: {(tmp / 'serve.log').read_text()[-2000:]}") from e
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    one, many = runs[1][0], runs[args.concurrency][0]
    report = {
        "model": model,
        "sae_id": sae_id,
        "features": len(keys),
        "score": args.score,
        "reps": args.reps,
        "server_threads": args.server_threads or torch.get_num_threads(),
        "features_per_min_1": round(60 * len(keys) / one, 1),
        f"features_per_min_{args.concurrency}": round(60 * len(keys) / many, 1),
        "requests_1": runs[1][1],
        f"requests_{args.concurrency}": runs[args.concurrency][1],
        "speedup": round(one / many, 2),
        "speedup_goal": 3.0,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
