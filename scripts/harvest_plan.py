"""The arithmetic of docs/harvest-at-scale.md: cost of harvesting the whole Qwen-Scope release, and its spread.

    .venv/bin/python scripts/harvest_plan.py [--tokens 3145728] [--gpus 1 8 32 64]

Every input is a constant below with its source: MEASURED (this repository's benchmark), PUBLISHED (model cards,
vendor sheets) or ASSUMED (an estimate, said so). Costs per token are FLOP counts; GPU seconds divide them by an
assumed achieved rate and multiply by the bookkeeping overhead measured by `qscope bench harvest`. Memory per
SAE follows qscope.harvest.shards.task_bytes, so the SAE groups are the ones `qscope harvest --ray` would make.
Prints markdown tables, then the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qscope.harvest.shards import group_saes, task_bytes  # noqa: E402
from qscope.harvest.state import StateSpec  # noqa: E402

# MEASURED: `qscope bench harvest` (README): the harvest pass runs at 0.82x the speed of forward + encode alone,
# i.e. bookkeeping costs x1.22 on top; 4,035 tokens/s on 2 CPU cores for mini-Qwen (3 SAEs x 4,096 features).
BOOKKEEPING = 4923 / 4035
CPU_TOKENS_PER_S, CPU_MINI_FLOP = 4035, 2 * 3.15e6 + 3 * 2 * 256 * 4096  # mini trunk + 3 SAE encodes per token
# PUBLISHED: H100 SXM dense bf16 989 TFLOP/s, fp32 (no tensor cores) 67 TFLOP/s; H200 the same compute.
# MEASURED (the lent machines of this project): about 78 GiB usable on an H100, 139 GiB on an H200.
BF16_PEAK, FP32_PEAK = 989e12, 67e12
H100_GIB, H200_GIB = 78, 139
# ASSUMED: achieved rates: trunk in bf16 at 40% of peak (batches of 32 x 128 tokens); SAE encode, logit effects
# and neighbors in fp32 (the harvest loads SAEs in fp32, torch leaves TF32 off) at 60% of the fp32 peak.
TRUNK_RATE, FP32_RATE = 0.40 * BF16_PEAK, 0.60 * FP32_PEAK
# ASSUMED: the driver takes in partial states at 1 GB/s (network + spool write) and merges them at 1 GB/s.
DRIVER_GBPS = 1.0
VOCAB = 151_936  # PUBLISHED for Qwen3; ASSUMED the same for Qwen3.5
CTX_BLOCK = 3 * 4 * 2**28  # the dense encode blocks of one task on CUDA (qscope.harvest.feed.CHUNK_ELEMENTS)
SPEC = dict(ctx=128, top_k=32, before=32, after=8, n_bins=16, per_bin=5)  # `qscope harvest` defaults


@dataclass
class Model:
    name: str
    layers: int  # PUBLISHED (model cards of the SAE repos)
    d: int  # PUBLISHED
    widths: tuple[int, int]  # the two SAE groups (L0_50, L0_100): PUBLISHED
    trunk_params: float  # non-embedding parameters run per token (active ones for MoE)
    params_source: str
    total_params: float  # all weights, held on the GPU in bf16
    gpu_gib: int  # the GPU the plan uses for it: H100_GIB or H200_GIB


MODELS = [
    Model("Qwen3-1.7B-Base", 28, 2048, (32768, 32768), 1.41e9, "computed from its config", 1.7e9, H100_GIB),
    Model("Qwen3-8B-Base", 36, 4096, (65536, 65536), 6.95e9, "Qwen3 report", 8.2e9, H100_GIB),
    Model("Qwen3.5-2B-Base", 24, 2048, (32768, 32768), 1.6e9, "ASSUMED", 2.0e9, H100_GIB),
    Model("Qwen3.5-9B-Base", 32, 4096, (65536, 65536), 8.0e9, "ASSUMED", 9.0e9, H100_GIB),
    Model("Qwen3.5-27B", 64, 5120, (81920, 81920), 26e9, "ASSUMED", 27e9, H200_GIB),
    Model("Qwen3-30B-A3B-Base", 48, 2048, (32768, 131072), 2.7e9, "3.3B active less embeddings", 30.5e9, H200_GIB),
    Model("Qwen3.5-35B-A3B-Base", 40, 2048, (32768, 131072), 3.0e9, "ASSUMED", 35e9, H200_GIB),
]


def sae_gb(d: int, width: int) -> float:
    spec = StateSpec(d_sae=width, **SPEC)
    return task_bytes(d, width, spec) / 2**30


def plan_model(m: Model, tokens: int) -> dict:
    """Groups that fit the GPU, GPU-seconds of the pass and of the finish, state traffic per shard."""
    budget = m.gpu_gib - 2 * m.total_params / 2**30 - CTX_BLOCK / 2**30 - 6  # 6 GiB: activations, slack
    sizes = [sae_gb(m.d, w) for _ in range(m.layers) for w in m.widths]  # job order: by layer, both sparsities
    groups = group_saes([int(x * 2**30) for x in sizes], int(budget * 2**30))
    trunk_per_layer = 2 * m.trunk_params / m.layers  # FLOP per token per layer
    sae_flop = sum(2 * m.d * w for w in m.widths) * m.layers  # every SAE encodes every token once
    # a task runs the trunk up to the deepest layer of its group: sum over groups of (depth / layers) x trunk
    trunk_flop = trunk_per_layer * sum(g[-1] // 2 + 1 for g in groups)
    pass_s = tokens * (trunk_flop / TRUNK_RATE + sae_flop / FP32_RATE) * BOOKKEEPING
    effects = sum(2 * w * VOCAB * m.d for w in m.widths) * m.layers
    # neighbors: within the SAE, and in the 5 SAEs of the same and the nearest layers (two sparsities each)
    w_mean = sum(m.widths) / 2
    neighbors = 2 * m.layers * (1 + 5) * 2 * w_mean * w_mean * m.d
    state_gb = sum(StateSpec(d_sae=w, **SPEC).d_sae for w in m.widths) * m.layers * _state_bytes_per_feature() / 1e9
    return {
        "model": m.name,
        "saes": 2 * m.layers,
        "features": sum(m.widths) * m.layers,
        "gpu_gib": m.gpu_gib,
        "groups": len(groups),
        "saes_per_task": max(len(g) for g in groups),
        "flop_per_token": trunk_flop + sae_flop,
        "trunk_share": trunk_flop / (trunk_flop + sae_flop),
        "pass_gpu_h": pass_s / 3600,
        "finish_gpu_h": (effects + neighbors) / FP32_RATE / 3600,
        "state_gb_per_shard": state_gb,
    }


def _state_bytes_per_feature() -> float:
    spec = StateSpec(d_sae=1, **SPEC)
    return task_bytes(0, 1, spec)


def model_hours(r: dict, gpus: int, shards: int) -> float:
    """One model's wall time with `shards` shards: S x G tasks in waves of N, then the driver takes in and
    merges S partial states per SAE (DRIVER_GBPS each way), then the finish on one GPU."""
    tasks = shards * r["groups"]
    compute = r["pass_gpu_h"] / tasks * math.ceil(tasks / gpus)
    return compute + 2 * shards * r["state_gb_per_shard"] / DRIVER_GBPS / 3600 + r["finish_gpu_h"]


def spread(rows: list[dict], gpus: int) -> dict:
    """Wall time on N GPUs, models one after another, each with the shard count that minimises its time (more
    shards: shorter tasks but more state to merge)."""
    shards = {
        r["model"]: min(range(1, math.ceil(gpus / r["groups"]) + 1), key=lambda s, r=r: model_hours(r, gpus, s))
        for r in rows
    }
    wall = sum(model_hours(r, gpus, shards[r["model"]]) for r in rows)
    return {"gpus": gpus, "wall_h": wall, "shards": shards}


def parallel(rows: list[dict], gpus: int) -> float:
    """Wall time with one driver per model, all at once (one manifest per model, or one Ray job each), the GPUs
    shared in proportion to each model's GPU-hours (at least one each), or one model after another where that
    is faster (few GPUs)."""
    sequential = spread(rows, gpus)["wall_h"]
    if gpus < len(rows):
        return sequential
    total = sum(r["pass_gpu_h"] for r in rows)
    share = {r["model"]: max(1, int(gpus * r["pass_gpu_h"] / total)) for r in rows}
    at_once = max(
        min(model_hours(r, share[r["model"]], s) for s in range(1, math.ceil(share[r["model"]] / r["groups"]) + 1))
        for r in rows
    )
    return min(at_once, sequential)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=24_576 * 128, help="tokens per SAE (SAEDashboard's default)")
    ap.add_argument("--gpus", type=int, nargs="+", default=[1, 8, 32, 64])
    args = ap.parse_args()
    rows = [plan_model(m, args.tokens) for m in MODELS]
    print(
        f"tokens per SAE: {args.tokens:,}; per-token rates: trunk {TRUNK_RATE / 1e12:.0f} TFLOP/s, "
        f"fp32 {FP32_RATE / 1e12:.0f} TFLOP/s, bookkeeping x{BOOKKEEPING:.2f}\n"
    )
    print(
        "| model | SAEs | features | GPU | groups x SAEs | GFLOP/token | trunk | pass GPU-h | finish GPU-h | "
        "state/shard |"
    )
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        gpu = "H100" if r["gpu_gib"] == H100_GIB else "H200"
        print(
            f"| {r['model']} | {r['saes']} | {r['features'] / 1e6:.2f}M | {gpu} "
            f"| {r['groups']} x {r['saes_per_task']} | {r['flop_per_token'] / 1e9:.0f} | {r['trunk_share']:.0%} "
            f"| {r['pass_gpu_h']:.2f} | {r['finish_gpu_h']:.2f} | {r['state_gb_per_shard']:.0f} GB |"
        )
    total = {k: sum(r[k] for r in rows) for k in ("saes", "features", "pass_gpu_h", "finish_gpu_h")}
    print(
        f"| **all** | **{total['saes']}** | **{total['features'] / 1e6:.1f}M** | | | | | "
        f"**{total['pass_gpu_h']:.1f}** | **{total['finish_gpu_h']:.1f}** | |\n"
    )
    flop = sum(r["flop_per_token"] for r in rows) * args.tokens
    cpu_days = flop / (CPU_TOKENS_PER_S * CPU_MINI_FLOP) / 86400
    print(
        f"all passes: {flop:.2e} FLOP; at the measured CPU rate ({CPU_TOKENS_PER_S * CPU_MINI_FLOP / 1e9:.0f} "
        f"GFLOP/s on 2 cores) that is {cpu_days:,.0f} days\n"
    )
    walls = [spread(rows, n) | {"parallel_h": parallel(rows, n)} for n in args.gpus]
    print("| GPUs | models one after another | shards per model | best with one driver per model at once |")
    print("|---:|---:|---|---:|")
    for w in walls:
        shards = ", ".join(str(v) for v in w["shards"].values())
        print(f"| {w['gpus']} | {w['wall_h']:.1f} h | {shards} | {w['parallel_h']:.1f} h |")
    print(json.dumps({"models": rows, "total": total, "cpu_days": cpu_days, "spread": walls}))


if __name__ == "__main__":
    main()
