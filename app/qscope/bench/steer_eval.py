"""Benchmark steering evaluations: rows/s of one batched evaluation sweep (POST /api/steer-eval) against the same
rows sent one request at a time (POST /api/steer), on the same `qscope serve` in one run.

    qscope bench steer-eval                          # the demo's store (data/), else the tiny default
    qscope bench steer-eval --db data/x.duckdb --prompts 8 --seeds 2 --strengths 0,1,2,4,8 --random 2

Steps: start the server (rate limits off); warm it up (a steering request and a small evaluation: the model
loads, the files are hashed); time one evaluation from POST to done; then send each of its rows as one
/api/steer request with the same prompt, features, strength and seed (the unsteered rows come free as the
`default` completion of those requests) and time them. The batched figure includes the read-back of every row
(concept and perplexity), which the one-at-a-time path does not do. Prints a JSON line last.
"""

from __future__ import annotations

import argparse
import http.client
import json
import tempfile
import time
from pathlib import Path

import torch

from qscope.bench.load import free_port, qscope, tiny_default
from qscope.config import get_settings
from qscope.steer.evaluate import arms
from qscope.steer.evaluate.prompt_sets import SETS
from qscope.steer.spec import FeatureSteer


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--db", type=Path, help="feature store to serve (default: the demo's, else the tiny default)")
    p.add_argument("--set", default=None, help="built-in prompt set (default: the first one that names a steer)")
    p.add_argument("--feature", help="SAE_ID:FEATURE to steer (default: the set's suggestion)")
    p.add_argument("--prompts", type=int, default=8, help="prompts of the set used")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--strengths", default="0,1,2,4,8")
    p.add_argument("--random", type=int, default=2, help="random control sets")
    p.add_argument("--tokens", type=int, default=24, help="new tokens per row")
    p.add_argument("--temperature", type=float, default=0.7)
    return p.parse_args(argv)


def call(port: int, method: str, path: str, body: dict | None = None, timeout: float = 600) -> tuple[int, dict]:
    con = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        con.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        r = con.getresponse()
        return r.status, json.loads(r.read() or b"null")
    finally:
        con.close()


def serve(db: Path, tmp: Path):
    import os
    import subprocess

    port = free_port()
    env = os.environ | {
        "HF_HUB_OFFLINE": "1",
        "QSCOPE_APP_DB_URL": f"sqlite:///{tmp}/app.db",
        "QSCOPE_CACHE_DIR": str(tmp / "cache"),
        "QSCOPE_RATE_STEER_PER_MIN": "0",
        "QSCOPE_STEER_EVAL_MAX_ROWS": "100000",
    }
    log = open(tmp / "serve.log", "w")  # noqa: SIM115 (kept open for the server's life)
    proc = subprocess.Popen(qscope("serve", "--db", str(db), "--port", str(port)), env=env, stdout=log, stderr=log)
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"qscope serve exited: {(tmp / 'serve.log').read_text()[-2000:]}")
        try:
            if call(port, "GET", "/-/health", timeout=2)[0] == 200:
                return proc, port
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("qscope serve did not answer within 60 s")


def pick_feature(port: int, args: argparse.Namespace, set_name: str) -> tuple[str, FeatureSteer]:
    """(model_id, the feature to steer): --feature, else the one the set was made for, found by the server."""
    _, home = call(port, "GET", "/.json")
    model_id = home["models"][0]["model_id"]
    if args.feature:
        sae_id, feature = args.feature.rsplit(":", 1)
        return model_id, FeatureSteer(sae_id=sae_id, feature=int(feature))
    status, got = call(port, "GET", f"/api/steer-eval/suggest?prompt_set={set_name}&model_id={model_id}")
    if status != 200:
        raise SystemExit(f"no feature for the set {set_name!r}: {got}; pass --feature SAE_ID:FEATURE")
    return model_id, FeatureSteer(**got["feature"])


def evaluate(port: int, body: dict) -> tuple[float, dict]:
    """(wall seconds from POST to done, the finished job's JSON)."""
    t0 = time.perf_counter()
    status, started = call(port, "POST", "/api/steer-eval", body)
    if status != 202:
        raise SystemExit(f"POST /api/steer-eval answered {status}: {started}")
    while True:
        _, job = call(port, "GET", started["json_url"])
        if job["status"] in ("done", "failed", "cancelled"):
            if job["status"] != "done":
                raise SystemExit(f"the evaluation {job['status']}: {job['error']}")
            return time.perf_counter() - t0, job
        time.sleep(0.1)


def one_at_a_time(port: int, result: dict) -> tuple[float, int, float]:
    """(seconds, requests, how many of them gave the batched row's text) for every steered row, one request each."""
    spec, prompts = result["request"]["spec"], result["prompts"]
    features = [FeatureSteer(**f) for f in spec["features"]]
    controls = [[FeatureSteer(**f) for f in c] for c in result["controls"]]
    same, n, t0 = 0, 0, time.perf_counter()
    for r in result["rows"]:
        if r["arm"] == arms.UNSTEERED:
            continue
        point = arms.Point(r["arm"], r["strength"], r["control"])
        prompt = (result["request"]["instruction"] if point.instructed else "") + prompts[r["prompt"]]
        feats = [f.model_dump() for f in arms.point_features(point, features, controls)]
        status, out = call(port, "POST", "/api/steer", {**spec, "prompt": prompt, "features": feats, "seed": r["seed"]})
        if status != 200:
            raise SystemExit(f"POST /api/steer answered {status}: {out}")
        n += 1
        same += out["steered"]["text"] == r["text"]
    return time.perf_counter() - t0, n, same


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    settings = get_settings()
    set_name = args.set or next(s.name for s in SETS.values() if s.probe)
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or _demo_store(settings) or tiny_default(settings.paths.data_dir / "bench-load")
        proc, port = serve(db, Path(tmp))
        try:
            model_id, feature = pick_feature(port, args, set_name)
            spec = {
                "model_id": model_id,
                "prompt": "",
                "features": [feature.model_dump()],
                "temperature": args.temperature,
                "max_new_tokens": args.tokens,
                "seed": 0,
            }
            call(port, "POST", "/api/steer", {**spec, "prompt": "Warm up"})
            prompts = SETS[set_name].prompts[: args.prompts]
            body = {
                "spec": spec,
                "prompts": prompts,
                "seeds": args.seeds,
                "random_controls": args.random,
                "strengths": [float(s) for s in args.strengths.split(",")],
            }
            evaluate(port, {**body, "prompts": prompts[:2], "seeds": 1, "random_controls": 0, "strengths": [0, 1]})
            batched_s, job = evaluate(port, body)
            result = job["result"]
            seq_s, n_requests, same = one_at_a_time(port, result)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    rows = len(result["rows"])
    report = {
        "model": model_id,
        "device": result["identity"]["device"],
        "threads": torch.get_num_threads(),
        "set": set_name,
        "feature": f"{feature.sae_id}#{feature.feature}",
        "rows": rows,
        "tokens": args.tokens,
        "batched_s": round(batched_s, 2),
        "batched_rows_per_s": round(rows / batched_s, 2),
        "server_rows_per_s": result["rows_per_s"],
        "sequential_requests": n_requests,
        "sequential_s": round(seq_s, 2),
        "sequential_rows_per_s": round(rows / seq_s, 2),
        "speedup": round(seq_s / batched_s, 2),
        "goal": 3.0,
        "same_text": round(same / max(n_requests, 1), 3),
        "verdict": result["verdict"]["status"],
        "verdict_strength": result["verdict"]["strength"],
    }
    print(f"batched: {rows} rows in {batched_s:.1f} s; one at a time: {n_requests} requests in {seq_s:.1f} s")
    print(json.dumps(report))


def _demo_store(settings) -> Path | None:
    from qscope.harvest.ids import model_id_for

    db = settings.paths.data_dir / f"{model_id_for(str(settings.paths.demo_dir / 'model'))}.duckdb"
    return db if db.is_file() else None


if __name__ == "__main__":
    main()
