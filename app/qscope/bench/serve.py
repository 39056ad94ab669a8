"""Benchmark `qscope serve`: a synthetic feature store at scale, written by the real writer, load-tested over
loopback from a second process; the raw DuckDB time of the same lookups is measured beside it.

    qscope bench serve --saes 2 --features 16384          # the small scale (default)
    qscope bench serve --saes 16 --features 65536         # the issue's 1M features
    qscope bench serve --saes 2 --features 16384                     # the same, through the CLI

Steps: (1) write DIR/bench.duckdb with qscope.store.writer.store_writer (SAEs generated one at a time, so memory
stays at one SAE's columns); (2) build the semantic index beside it (timed; cached for later runs); (3) start
`qscope serve` on a free loopback port; (4) a client process runs C threads with keep-alive connections for at
most S seconds and N requests over: feature page, feature .json, SAE list pages, search (semantic + text; the
synthetic store has no model, so "fires" is not part of it); (5) the same lookups straight on DuckDB in this
process. Prints a JSON line last: p50/p99 per endpoint and per raw lookup, against the issue's goals.
"""

from __future__ import annotations

import argparse
import functools
import http.client
import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from qscope.config import get_settings
from qscope.harvest.state import HIST_EDGES
from qscope.store.writer import Columns, store_writer

WORDS = (
    "the of and to in is was for on that with as by at from it his an were are which this be or has had "
    "not but first one their its new after who they have her she two been other when there all during into "
    "school time may years more most only over city some world would where later up such used many can state "
    "about national out known university united then made return def class import self None True False while "
    "yield lambda print range list dict value number digit zero seven eight nine hundred thousand million "
    "river mountain music song film book story king queen war army church court law money bank market"
).split()
WIDTH = 41  # tokens per context (32 before the max, 8 after, as the harvest's defaults)
N_LOGITS, N_NEIGHBOURS = 20, 10


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


class LazySae:
    """A qscope.store.writer.SaeTablesLike, building its columns on first use and dropping the previous
    SAE's, so a store of many SAEs is written in the memory of one."""

    _cache: tuple[object, dict] | None = None
    cards = None  # the writer builds them

    def __init__(self, i: int, sae_id: str, args: argparse.Namespace, vocab_size: int) -> None:
        self.i, self.args, self.vocab_size = i, args, vocab_size
        F = args.features
        self.info = {
            "sae_id": sae_id,
            "model_id": "bench-model",
            "layer": i,
            "site": f"model.layers.{i}",
            "d_in": 1024,
            "d_sae": F,
            "k": 50,
            "architecture": "topk",
            "format": "qwen-scope",
            "source": f"/nonexistent/layer{i}.sae.pt",
            "tokens": 10_000_000,
            "dead": F // 50,
            "hist_edges": HIST_EDGES.double().tolist(),
        }

    def _cols(self) -> dict:
        if LazySae._cache is None or LazySae._cache[0] is not self:
            LazySae._cache = None
            LazySae._cache = (self, make_columns(self.i, self.args, self.vocab_size, self.info["sae_id"]))
        return LazySae._cache[1]

    @property
    def features(self) -> Columns:
        return self._cols()["features"]

    @property
    def contexts(self) -> Columns:
        return self._cols()["contexts"]

    @property
    def logits(self) -> Columns:
        return self._cols()["logits"]

    @property
    def neighbors(self) -> Columns:
        return self._cols()["neighbors"]


@functools.cache
def real_words() -> tuple[str, ...]:
    """Distinct real words (3 to 12 letters, lower case) from the Python standard library's sources and
    docstrings, in a fixed order: what the synthetic labels are composed of."""
    import sysconfig

    found: dict[str, None] = {}
    root = Path(sysconfig.get_paths()["stdlib"])
    for file in sorted(root.glob("*.py")):
        for word in re.findall(r"\b[a-z]{3,12}\b", file.read_text(encoding="utf-8", errors="replace")):
            found.setdefault(word, None)
    return tuple(found)


def unique_labels(sae: int, alive: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One different label per live feature, like a harvest's ("·word ·word → ·word ·word"), each composed of
    real words: the first two words spell the feature's index in base len(words), so no two labels of a store
    are equal (up to len(words)^2 features per SAE), and the sae index a third, so SAEs differ too."""
    words = real_words()
    n, F = len(words), len(alive)
    f = np.arange(F)
    first, second = f % n, (f // n + sae * 7919) % n
    extra = rng.integers(0, n, (F, 3))

    def label(i: int) -> str:
        a, b, c, d, e = (words[j] for j in (first[i], second[i], *extra[i]))
        return f"·{a} ·{b} ·{c} → ·{d} ·{e}"

    return np.array([label(i) if alive[i] else "dead" for i in range(F)], dtype=object)


def make_columns(i: int, args: argparse.Namespace, vocab_size: int, sae_id: str) -> dict:
    rng = np.random.default_rng(1000 + i)
    F, C, H = args.features, args.contexts, len(HIST_EDGES) - 1
    density = 10 ** rng.uniform(-5, -0.5, F)
    alive = rng.random(F) >= 0.02
    density[~alive] = 0
    max_act = np.where(alive, rng.uniform(1, 20, F), 0)
    tokens_FT = rng.integers(0, vocab_size, (F, 5 + N_LOGITS)).astype(np.int32)
    top = tokens_FT[:, :5]
    labels = unique_labels(i, alive, rng)
    hist = np.zeros((F, H), np.int64)
    hist[:, 40:60] = rng.integers(0, 50, (F, 20))
    features = {
        "feature": np.arange(F, dtype=np.int32),
        "density": density,
        "mean_act": max_act / 3,
        "max_act": max_act,
        "n_fired": (density * 1e7).astype(np.int64),
        "label": labels,
        "top_tokens": np.where(alive[:, None], top, -1),
        "hist": hist,
        "interval_width": max_act / 16,
    }
    E = F * C
    f_E = np.repeat(np.arange(F, dtype=np.int32), C)
    rank_E = np.tile(np.arange(C, dtype=np.int32), F)
    is_top = rank_E < C // 2
    acts = rng.random((E, WIDTH), dtype=np.float32) * (rng.random((E, WIDTH)) < 0.2)
    act_E = (max_act[f_E] * (1 - rank_E / (2 * C))).astype(np.float32)
    acts[:, 32] = act_E
    contexts = {
        "feature": f_E,
        "kind": np.where(is_top, 0, 1).astype(np.int8),
        "bin": np.where(is_top, -1, (rank_E - C // 2) // 5).astype(np.int32),
        "rank": np.where(is_top, rank_E, (rank_E - C // 2) % 5).astype(np.int32),
        "act": act_E,
        "window": rng.integers(0, 100_000, E),
        "pos": np.full(E, 32, np.int32),
        "length": np.full(E, WIDTH, np.int32),
        "token_ids": rng.integers(0, vocab_size, (E, WIDTH)).astype(np.int32),
        "acts": acts,
    }
    L = F * 2 * N_LOGITS
    logits = {
        "feature": np.repeat(np.arange(F, dtype=np.int32), 2 * N_LOGITS),
        "sign": np.tile(np.repeat(np.array([1, -1], np.int8), N_LOGITS), F),
        "rank": np.tile(np.arange(N_LOGITS, dtype=np.int32), 2 * F),
        "token_id": np.concatenate([tokens_FT[:, 5:], rng.integers(0, vocab_size, (F, N_LOGITS))], 1)
        .reshape(-1)
        .astype(np.int32),
        "value": rng.normal(0, 0.3, L).astype(np.float32),
    }
    N = F * N_NEIGHBOURS
    neighbors = {
        "feature": np.repeat(np.arange(F, dtype=np.int32), N_NEIGHBOURS),
        "other_sae_id": np.array([sae_id] * N, dtype=object),
        "other_feature": rng.integers(0, F, N).astype(np.int32),
        "cosine": rng.uniform(0.1, 0.9, N).astype(np.float32),
        "rank": np.tile(np.arange(N_NEIGHBOURS, dtype=np.int32), F),
    }
    return {"features": features, "contexts": contexts, "logits": logits, "neighbors": neighbors}


def build_store(args: argparse.Namespace, out: Path) -> float:
    words = real_words()
    vocab = [f" {words[i % len(words)]}{i // len(words) or ''}" for i in range(args.vocab)]
    saes = [
        LazySae(i, f"SAE-Res-bench-W{args.features // 1024}K-L0_50__layer{i}", args, args.vocab)
        for i in range(args.saes)
    ]
    meta = {"schema_version": "1", "model_id": "bench-model", "model": "/nonexistent", "tokens": "10000000"}
    start = time.perf_counter()
    with store_writer(out, meta, vocab) as add:
        for k, sae in enumerate(sorted(saes, key=lambda t: t.info["sae_id"]), 1):
            add(sae)
            took = time.perf_counter() - start
            print(
                f"  wrote SAE {k}/{len(saes)} ({args.features:,} features) at {took:.0f} s; "
                f"about {took / k * (len(saes) - k):.0f} s left",
                flush=True,
            )
    return time.perf_counter() - start


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client_main(spec: dict) -> None:
    """The load generator (run in its own process): threads with keep-alive connections, bounded in time
    and count; prints {endpoint: [latency_ms, ...]} and the error count as one JSON line."""
    rng = random.Random(0)
    deadline = time.perf_counter() + spec["seconds"]
    budget = [spec["max_requests"]]
    lock = threading.Lock()
    lat: dict[str, list[float]] = {k: [] for k in ("feature", "feature_json", "sae_list", "search")}
    errors = [0]

    def path_for(kind: str) -> str:
        sae = rng.choice(spec["saes"])
        f = rng.randrange(spec["features"])
        if kind == "feature":
            return f"/bench-model/{sae}/{f}"
        if kind == "feature_json":
            return f"/bench-model/{sae}/{f}.json"
        if kind == "sae_list":
            sort = rng.choice(["index", "density", "max_act"])
            return f"/bench-model/{sae}?sort={sort}&page={rng.randrange(1, 50)}"
        return f"/search?q={rng.choice(WORDS)}+{rng.choice(WORDS)}&kind=semantic&kind=text&limit=20"

    def worker(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", spec["port"], timeout=30)
        kinds = list(lat)
        i = n
        while time.perf_counter() < deadline:
            with lock:
                if budget[0] <= 0:
                    break
                budget[0] -= 1
            kind = kinds[i % len(kinds)]
            i += 1
            t0 = time.perf_counter()
            try:
                conn.request("GET", path_for(kind))
                r = conn.getresponse()
                r.read()
                ok = r.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", spec["port"], timeout=30)
            ms = (time.perf_counter() - t0) * 1000
            with lock:
                if ok:
                    lat[kind].append(ms)
                else:
                    errors[0] += 1

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(spec["clients"])]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"lat": lat, "errors": errors[0], "seconds": time.perf_counter() - start}))


def raw_duckdb(db: Path, sae_ids: list[str], features: int, n: int) -> dict:
    """The same lookups straight on the store (one cursor, this process): ms per lookup."""
    from qscope.store.queries import Store

    store = Store(db)
    rng = random.Random(1)
    out: dict[str, list[float]] = {"feature": [], "sae_list": [], "text_match": []}
    for _ in range(n):
        with store.reader() as r:  # a cursor per lookup, as the server takes one per request
            sae = rng.choice(sae_ids)
            t0 = time.perf_counter()
            r.feature(sae, rng.randrange(features))
            t1 = time.perf_counter()
            r.features(sae, sort=rng.choice(["index", "density", "max_act"]), desc=True, offset=50 * rng.randrange(50))
            t2 = time.perf_counter()
            r.text_matches(f"{rng.choice(WORDS)} {rng.choice(WORDS)}", 20)
            t3 = time.perf_counter()
            out["feature"].append((t1 - t0) * 1000)
            out["sae_list"].append((t2 - t1) * 1000)
            out["text_match"].append((t3 - t2) * 1000)
    store.close()
    return {k: {"n": len(v), "p50_ms": pct(v, 50), "p99_ms": pct(v, 99)} for k, v in out.items()}


def build_index(db: Path, choice: str = "auto", minilm_sample: int = 512) -> dict:
    """Build the semantic index as the harvest does (timed: texts embedded, the inverted file when large; the
    embedder `choice` as `qscope harvest --index-embedder` takes it), then time its nearest-neighbor lookup
    alone on queries of real words, in this process; and MiniLM's rate on a sample of the store's texts, with
    the time it would take over all of them (what the index costs where MiniLM embeds it)."""
    from qscope.search.semantic import embedder_named, for_choice, load_or_build_index
    from qscope.store.queries import Store

    store = Store(db)
    texts = [0]
    start = time.perf_counter()
    index = load_or_build_index(store, for_choice(choice), progress=lambda n, of: texts.__setitem__(0, of))
    seconds = time.perf_counter() - start
    store.close()
    embedder = embedder_named(index.embedder)
    rng = random.Random(2)
    queries = embedder.embed([f"{rng.choice(real_words())} {rng.choice(real_words())}" for _ in range(100)])
    lookup = []
    for q in queries:
        t0 = time.perf_counter()
        index.top(q, 20)
        lookup.append((time.perf_counter() - t0) * 1000)
    return {
        "index_s": round(seconds, 1),
        "embedder": index.embedder,
        "texts_embedded": texts[0],  # 0: the cached index matched (built by an earlier run)
        "features_indexed": len(index.feature_N),
        "unique_texts_per_feature": round(texts[0] / max(len(index.feature_N), 1), 3),
        "inverted_file": index.index.ivf is not None,
        "lookup_p50_ms": round(pct(lookup, 50), 2),
        "lookup_p99_ms": round(pct(lookup, 99), 2),
    } | minilm_rate(db, minilm_sample, len(index.feature_N))


def minilm_rate(db: Path, sample: int, n_features: int) -> dict:
    """MiniLM's texts per second on `sample` of the store's feature texts, and its time over all of them."""
    from qscope.search.embedder import Embedder
    from qscope.search.semantic_text import feature_texts
    from qscope.search.text_index import INDEX_QUERY_TIMEOUT_S
    from qscope.store.queries import Store

    if sample <= 0:
        return {}
    store = Store(db, timeout_s=INDEX_QUERY_TIMEOUT_S)  # reading every text of a large store takes a while
    with store.reader() as r:
        texts = [t.text for t in feature_texts(store, r.embedding_inputs())]
    store.close()
    picked = random.Random(3).sample(texts, min(sample, len(texts)))
    embedder = Embedder()
    embedder.embed(picked[:8])  # the model loads
    t0 = time.perf_counter()
    embedder.embed(picked)
    rate = len(picked) / (time.perf_counter() - t0)
    return {"minilm_texts_per_s": round(rate, 1), "minilm_projected_s": round(n_features / rate, 1)}


def wait_for_search(port: int, limit_s: float = 1800) -> None:
    """Until the server says every search index (text and semantic, loaded or built in the background at
    startup) is ready: a load test before that measures a server still building them."""
    deadline = time.perf_counter() + limit_s
    while time.perf_counter() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        conn.request("GET", "/-/health")
        if json.loads(conn.getresponse().read()).get("search_ready"):
            return
        time.sleep(0.5)
    raise SystemExit("the search indexes were not ready in time")


def serve(db: Path, port: int, log: Path, workers: int) -> subprocess.Popen:
    qscope = Path(sys.executable).parent / "qscope"
    cmd = [str(qscope)] if qscope.exists() else [sys.executable, "-c", "from qscope.cli import main; main()"]
    env = os.environ | {"HF_HUB_OFFLINE": "1", "QSCOPE_DEVICE": "cpu"}
    with open(log, "w") as f:
        args = [*cmd, "serve", "--db", str(db), "--port", str(port), "--workers", str(workers)]
        proc = subprocess.Popen(args, stdout=f, stderr=f, env=env)
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"qscope serve exited: {log.read_text()[-2000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/")
            conn.getresponse().read()
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("qscope serve did not start in 120 s")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--saes", type=int, default=2)
    p.add_argument("--features", type=int, default=16384, help="features per SAE")
    p.add_argument("--contexts", type=int, default=32, help="contexts per feature (half top, half interval)")
    p.add_argument("--vocab", type=int, default=32768)
    p.add_argument("--clients", type=int, default=8, help="concurrent client connections")
    p.add_argument("--workers", type=int, default=1, help="server processes (qscope serve --workers)")
    p.add_argument("--seconds", type=float, default=20.0, help="load test duration bound")
    p.add_argument("--max-requests", type=int, default=20_000, help="load test request count bound")
    p.add_argument("--raw", type=int, default=300, help="raw DuckDB lookups of each kind")
    p.add_argument(
        "--dir", type=Path, default=get_settings().paths.data_dir / "bench", help="where the store is written"
    )
    p.add_argument("--rebuild", action="store_true", help="rewrite the store even if one of this scale exists")
    p.add_argument(
        "--index-embedder",
        default="auto",
        choices=("auto", "minilm", "static"),
        help="what embeds the index, as `qscope harvest --index-embedder` (auto: MiniLM up to 50k texts on a CPU)",
    )
    p.add_argument("--minilm-sample", type=int, default=512, help="texts MiniLM embeds to time its rate (0: none)")
    p.add_argument("--client", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.client:
        client_main(json.loads(args.client))
        return
    args.dir.mkdir(parents=True, exist_ok=True)
    db = args.dir / f"bench-{args.saes}x{args.features}x{args.contexts}-v3.duckdb"
    result: dict = {
        "scale": {
            "saes": args.saes,
            "features_per_sae": args.features,
            "contexts": args.contexts,
            "total_features": args.saes * args.features,
            "cores": os.cpu_count(),
        }
    }
    if args.rebuild or not db.exists():
        print(f"writing {db} ...", flush=True)
        result["write_s"] = round(build_store(args, db), 1)
    result["db_mb"] = round(db.stat().st_size / 1e6, 1)
    print(f"store {db.name}: {result['db_mb']} MB; semantic index ...", flush=True)
    result["index"] = build_index(db, args.index_embedder, args.minilm_sample)
    print(f"semantic index: {result['index']}", flush=True)
    sae_ids = [f"SAE-Res-bench-W{args.features // 1024}K-L0_50__layer{i}" for i in range(args.saes)]

    port = free_port()
    proc = serve(db, port, args.dir / "serve.log", args.workers)
    try:
        spec = {
            "port": port,
            "saes": sae_ids,
            "features": args.features,
            "clients": args.clients,
            "seconds": args.seconds,
            "max_requests": args.max_requests,
        }
        t0 = time.perf_counter()
        wait_for_search(port)
        result["search_ready_s"] = round(time.perf_counter() - t0, 1)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        conn.request("GET", f"/bench-model/{sae_ids[0]}/0")  # the first render compiles the templates
        conn.getresponse().read()
        print(
            f"load test: {args.clients} clients, at most {args.seconds:g} s / {args.max_requests} requests", flush=True
        )
        client = [sys.executable, "-m", "qscope.bench.serve", "--client", json.dumps(spec)]
        out = subprocess.run(client, capture_output=True, text=True, check=True)
        load = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    total = sum(len(v) for v in load["lat"].values())
    result["http"] = {
        k: {"n": len(v), "p50_ms": round(pct(v, 50), 2), "p99_ms": round(pct(v, 99), 2)} for k, v in load["lat"].items()
    }
    result["http_total"] = {
        "requests": total,
        "errors": load["errors"],
        "seconds": round(load["seconds"], 1),
        "rps": round(total / load["seconds"], 1),
        "clients": args.clients,
        "workers": args.workers,
    }
    raw = raw_duckdb(db, sae_ids, args.features, args.raw)
    result["duckdb"] = {
        k: {kk: round(vv, 2) if isinstance(vv, float) else vv for kk, vv in v.items()} for k, v in raw.items()
    }
    h = result["http"]
    result["goals"] = {
        "feature_p50<=10ms": h["feature"]["p50_ms"] <= 10,
        "feature_p99<=50ms": h["feature"]["p99_ms"] <= 50,
        "search_p99<=100ms": h["search"]["p99_ms"] <= 100,
    }
    for k, v in result["http"].items():
        print(f"  http {k:13s} n={v['n']:6d}  p50 {v['p50_ms']:7.2f} ms  p99 {v['p99_ms']:7.2f} ms")
    for k, v in result["duckdb"].items():
        print(f"  raw  {k:13s} n={v['n']:6d}  p50 {v['p50_ms']:7.2f} ms  p99 {v['p99_ms']:7.2f} ms")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
