"""Load test of `qscope serve` with browsing and steering mixed, over loopback, from a second process.

    qscope bench load                        # the tiny default (built into data/bench-load if missing)
    qscope bench load --db data/x.duckdb --seconds 60 --browse-clients 16 --steer-factor 4
    qscope bench load --seconds 20                      # the same, through the CLI

Steps: (1) start `qscope serve` on a free loopback port (steering queue of --queue requests; the per-client rate
limits off, since every client here is 127.0.0.1, unless --rate-limits); (2) measure the steering capacity:
requests/s completed by --queue closed-loop clients for --probe-s seconds; (3) for --seconds (at most --requests
requests) run --browse-clients closed-loop browsing clients (feature pages, SAE lists, .json twins, text search,
/inspect) while steering requests arrive open-loop at --steer-factor x that capacity; (4) check the server still
answers. Past the queue the server must answer 503 + Retry-After; any other 5xx or a dropped connection is an
error. Prints a JSON line last: requests/s, error rate, p50/p99 per kind, status counts, and the server's
resident memory at start, after the probe and at the end.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from qscope.config import get_settings

STEER = {"prompt": "The meaning of", "max_new_tokens": 16, "temperature": 0.7, "features": []}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--db", type=Path, help="feature store to serve (default: the tiny default, built if missing)")
    p.add_argument(
        "--demo", type=Path, default=get_settings().paths.data_dir / "bench-load", help="where the tiny default goes"
    )
    p.add_argument("--seconds", type=float, default=20.0, help="length of the mixed phase")
    p.add_argument("--requests", type=int, default=20000, help="most requests of the mixed phase")
    p.add_argument("--browse-clients", type=int, default=8, help="closed-loop browsing clients")
    p.add_argument("--steer-factor", type=float, default=4.0, help="steering arrivals as a multiple of capacity")
    p.add_argument("--queue", type=int, default=8, help="the server's steering queue (QSCOPE_STEER_QUEUE_SIZE)")
    p.add_argument("--probe-s", type=float, default=4.0, help="seconds of the capacity probe")
    p.add_argument("--rate-limits", action="store_true", help="keep the per-client rate limits on")
    return p.parse_args(argv)


def qscope(*args: str) -> list[str]:
    exe = Path(sys.executable).parent / "qscope"
    return [str(exe), *args] if exe.exists() else [sys.executable, "-c", "from qscope.cli import main; main()", *args]


def tiny_default(folder: Path) -> Path:
    """The tiny default's store, built and harvested into `folder` the first time."""
    db = folder / "tiny.duckdb"
    if not db.is_file():
        env = os.environ | {"HF_HUB_OFFLINE": "1", "QSCOPE_DEVICE": "cpu"}
        subprocess.run(qscope("build-demo", "--tiny", "--out", str(folder)), env=env, check=True)
        subprocess.run(
            qscope(
                "harvest",
                "--model",
                str(folder / "model"),
                "--sae",
                str(folder / "saes"),
                "--corpus",
                str(folder / "corpus" / "val.jsonl"),
                "--out",
                str(db),
                "--tokens",
                "4096",
                "--device",
                "cpu",
                "--checkpoint-every",
                "0",
            ),
            env=env,
            check=True,
        )
    return db


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(db: Path, args: argparse.Namespace, tmp: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = os.environ | {
        "HF_HUB_OFFLINE": "1",
        "QSCOPE_DEVICE": "cpu",
        "QSCOPE_STEER_QUEUE_SIZE": str(args.queue),
        "QSCOPE_APP_DB_URL": f"sqlite:///{tmp}/app.db",
        "QSCOPE_CACHE_DIR": str(tmp / "cache"),
    }
    if not args.rate_limits:
        env |= {"QSCOPE_RATE_STEER_PER_MIN": "0", "QSCOPE_RATE_INSPECT_PER_MIN": "0"}
    log = open(tmp / "serve.log", "w")  # noqa: SIM115 (kept open for the server's life)
    proc = subprocess.Popen(qscope("serve", "--db", str(db), "--port", str(port)), env=env, stdout=log, stderr=log)
    for _ in range(600):
        if proc.poll() is not None:
            sys.exit(f"qscope serve exited with {proc.returncode}: {(tmp / 'serve.log').read_text()[-2000:]}")
        if request(port, "GET", "/-/health")[0] == 200:
            return proc, port
        time.sleep(0.1)
    sys.exit("qscope serve did not answer within 60 s")


_local = threading.local()


def request(port: int, method: str, path: str, body: dict | None = None) -> tuple[int, float]:
    """(status, seconds) of one request on this thread's keep-alive connection; status 0: connection failed."""
    t0 = time.perf_counter()
    for attempt in range(2):  # a keep-alive connection the server closed is reopened once
        con = getattr(_local, "con", None) or http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        _local.con = con
        try:
            headers = {"Content-Type": "application/json"} if body is not None else {}
            con.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
            response = con.getresponse()
            response.read()
            return response.status, time.perf_counter() - t0
        except (OSError, http.client.HTTPException):
            con.close()
            _local.con = None
            if attempt:
                return 0, time.perf_counter() - t0
    return 0, time.perf_counter() - t0


def browse_paths(port: int) -> list[tuple[str, str]]:
    """(kind, path) pool of a browsing client: pages and twins of the store served, text search and inspect."""
    con = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    con.request("GET", "/.json")
    home = json.loads(con.getresponse().read())
    con.close()
    rng, paths = random.Random(0), [("browse", "/"), ("browse", "/.json")]
    for model in home["models"]:
        for s in model["saes"]:
            base, d_sae = f"/{model['model_id']}/{s['sae']['sae_id']}", s["sae"]["d_sae"]
            paths += [("browse", f"{base}/{rng.randrange(d_sae)}{rng.choice(['', '.json'])}") for _ in range(40)]
            paths += [("browse", f"{base}?sort={k}&page={rng.randint(1, 3)}") for k in ("density", "max_act")]
    paths += [("browse", f"/search.json?q={w}&kind=text") for w in ("the", "return", "def", "and")]
    paths += [("inspect", f"/inspect.json?text={w}%20of%20the%20cat") for w in ("one", "two", "most")]
    return paths


def capacity(port: int, clients: int, seconds: float) -> float:
    """Steering requests/s completed by `clients` closed-loop clients (the worker saturated)."""
    done: Counter[int] = Counter()  # requests by HTTP status
    stop = time.monotonic() + seconds

    def loop() -> None:
        while time.monotonic() < stop:
            done[request(port, "POST", "/api/steer", STEER)[0]] += 1

    threads = [threading.Thread(target=loop) for _ in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return done[200] / (time.monotonic() - t0)


class Recorder:
    """Latencies and statuses per kind, from many threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latency: defaultdict[str, list[float]] = defaultdict(list)  # seconds, by kind
        self.status: defaultdict[str, Counter[int]] = defaultdict(Counter)  # HTTP status counts, by kind

    def add(self, kind: str, status: int, seconds: float) -> None:
        with self.lock:
            self.latency[kind].append(seconds)
            self.status[kind][status] += 1

    def count(self) -> int:
        with self.lock:
            return sum(sum(c.values()) for c in self.status.values())


def mixed(port: int, args: argparse.Namespace, rate: float, rec: Recorder) -> float:
    """Browsing clients (closed loop) and steering arrivals at `rate`/s (open loop) until time or count is up."""
    pool, stop = browse_paths(port), time.monotonic() + args.seconds
    busy = lambda: time.monotonic() < stop and rec.count() < args.requests  # noqa: E731

    def browse(seed: int) -> None:
        rng = random.Random(seed)
        while busy():
            kind, path = rng.choice(pool)
            rec.add(kind, *request(port, "GET", path))

    def steer() -> None:
        rec.add("steer", *request(port, "POST", "/api/steer", STEER))

    t0 = time.monotonic()
    clients = [threading.Thread(target=browse, args=(i,)) for i in range(args.browse_clients)]
    for t in clients:
        t.start()
    with ThreadPoolExecutor(max_workers=args.queue * 4) as steerers:
        next_at = time.monotonic()
        while busy():
            steerers.submit(steer)
            next_at += 1.0 / rate
            time.sleep(max(0.0, next_at - time.monotonic()))
    for t in clients:
        t.join()
    return time.monotonic() - t0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def summary(rec: Recorder, seconds: float) -> dict:
    kinds: dict[str, dict] = {}
    total: Counter[int] = Counter()
    for kind, lat in rec.latency.items():
        status = rec.status[kind]
        total += status
        bad = sum(n for s, n in status.items() if s not in (200, 429, 503))  # 0: the connection failed
        kinds[kind] = {
            "requests": len(lat),
            "rps": round(len(lat) / seconds, 1),
            "errors": bad,
            "p50_ms": round(float(np.percentile(lat, 50)) * 1e3, 1),
            "p99_ms": round(float(np.percentile(lat, 99)) * 1e3, 1),
        }
    n = sum(total.values())
    errors = sum(k["errors"] for k in kinds.values())
    return {
        "requests": n,
        "rps": round(n / seconds, 1),
        "error_rate": round(errors / max(n, 1), 4),
        "errors": errors,
        "shed_503": total[503],
        "kinds": kinds,
        "status": {str(s): c for s, c in sorted(total.items())},
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    db = args.db or tiny_default(args.demo)
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start_server(db, args, Path(tmp))
        try:
            rss = [rss_mb(proc.pid)]
            for _ in range(2):  # the first request loads the model: not part of the capacity
                request(port, "POST", "/api/steer", STEER)
            cap = capacity(port, args.queue, args.probe_s)
            rss.append(rss_mb(proc.pid))  # the model and its caches loaded
            print(f"steering capacity: {cap:.1f} requests/s; offering {args.steer_factor:g}x", file=sys.stderr)
            rec = Recorder()
            seconds = mixed(port, args, max(cap, 0.5) * args.steer_factor, rec)
            after = [request(port, "GET", p)[0] for p in ("/-/health", "/", "/.json")]
            out = summary(rec, seconds) | {
                "seconds": round(seconds, 1),
                "steer_capacity_rps": round(cap, 2),
                "steer_offered_rps": round(max(cap, 0.5) * args.steer_factor, 2),
                "queue": args.queue,
                "answers_after": all(s == 200 for s in after) and proc.poll() is None,
                "server_rss_mb": [round(m, 1) for m in (*rss, rss_mb(proc.pid))],  # start, warm, end
            }
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
