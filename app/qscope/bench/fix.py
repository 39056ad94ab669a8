"""Benchmark the fix flow (qscope.fix): the wall time of each phase of one whole fix on a feature store's model
(the discovery's own phases, the candidates, the batched evaluation), and what the baselines cost beside the
features' part: in the discovery, DiffMean and the probe against tokenize + forward/encode + rank + the L1
regression; in the evaluation, the DiffMean arm's share of the rows.

    qscope bench fix --db data/tiny.duckdb --n 30                 # the tiny mini-Qwen
    qscope bench fix --db data/demo.duckdb --demo code-vs-prose   # the full mini-Qwen

Prints a line per phase and a JSON line last. Nothing is saved.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

FEATURE_PHASES = ("tokenize (examples)", "forward + encode", "rank", "logistic regression")
BASELINE_PHASE = "baselines (DiffMean, probe)"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--db", type=Path, default=None, help="Feature store (default: the demo's, as qscope fix finds it)."
    )
    ap.add_argument("--demo", default="code-vs-prose", help="A demo set of the store's corpus.")
    ap.add_argument("--n", type=int, default=100, help="Examples per side.")
    ap.add_argument("--goal", default="increase", choices=("increase", "decrease"))
    ap.add_argument("--per-sae", type=int, default=2)
    ap.add_argument("--max-prompts", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--random-controls", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--strengths", default="0,0.5,1,2")
    ap.add_argument("--device", default=None)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default).")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = run(args)
    for name, s in out["seconds"].items():
        print(f"{name:<40} {s:8.2f} s")
    print(
        f"discovery: features' part {out['features_s']:.2f} s, baselines {out['baselines_s']:.2f} s "
        f"({100 * out['baselines_share_of_discovery']:.0f}% of the discovery); evaluation: {out['rows']} rows, "
        f"DiffMean's {out['diffmean_rows']} ({100 * out['diffmean_share_of_rows']:.0f}%)"
    )
    print(f"best: {out['best']} ({out['best_verdict']})")
    print(json.dumps(out))


def run(args) -> dict:
    from qscope.config import get_settings
    from qscope.discover.cli_common import cli_runner, limits, load_live
    from qscope.discover.discovery import DiscoverOptions
    from qscope.discover.requests import ExamplesIn, example_set
    from qscope.fix.flow import FixInputs, run_fix
    from qscope.fix.request import FixSettings, check
    from qscope.steer.evaluate.jobs import eval_limits
    from qscope.steer.evaluate.local import inline
    from qscope.steer.evaluate.run import execute
    from qscope.steer.evaluate.target import from_live
    from qscope.steer.service import steer_limits as limits_of_steering

    settings = get_settings()
    served, live = load_live(args.db, args.device, None)
    fix = FixSettings(
        goal=args.goal,
        per_sae=args.per_sae,
        max_prompts=args.max_prompts,
        strengths=[float(x) for x in args.strengths.split(",")],
        seeds=args.seeds,
        random_controls=args.random_controls,
        max_new_tokens=args.max_new_tokens,
    )
    steer_limits, ev_limits = limits_of_steering(settings.steer), eval_limits(settings.steer_eval)
    check(fix, ev_limits, len(served.saes), steer_limits)
    examples = example_set(
        ExamplesIn(demo=args.demo, demo_n=args.n), limits(None), served.corpus_dir, settings.runtime.seed
    )
    target = from_live(live)
    inputs = FixInputs(
        examples,
        cli_runner(served, settings),
        served.tokenizer,
        DiscoverOptions(seed=settings.runtime.seed),
        settings.discover.max_tokens,
        served.label_of,
        target,
        ev_limits,
        steer_limits,
    )
    counted: dict[str, int] = {}

    def run_plan(plan):
        counted["diffmean"] = sum(r.point.arm == "diffmean" for r in plan.rows)
        t = time.perf_counter()
        ident = target.identify()
        counted["identify_ms"] = round(1000 * (time.perf_counter() - t))
        return execute(plan, target, inline, ident, batch_rows=settings.steer_eval.batch_rows), ""

    r = run_fix(inputs, fix, run_plan, lambda d: "")
    s = r.seconds
    features = sum(s.get(f"discover: {p}", 0.0) for p in FEATURE_PHASES)
    baselines = s.get(f"discover: {BASELINE_PHASE}", 0.0)
    return {
        "model_id": r.model_id,
        "store": str(live.store.path),
        "device": str(target.lm.device),
        "threads": torch.get_num_threads(),
        "demo": args.demo,
        "n_per_side": args.n,
        "examples": len(examples.texts),
        "candidates": len(r.candidates),
        "prompts": r.n_prompts,
        "rows": r.rows,
        "diffmean_rows": counted.get("diffmean", 0),
        "diffmean_share_of_rows": round(counted.get("diffmean", 0) / max(r.rows, 1), 3),
        "seconds": s,
        "features_s": round(features, 3),
        "baselines_s": round(baselines, 3),
        "baselines_share_of_discovery": round(baselines / max(s.get("discover", 0.0), 1e-9), 3),
        "identify_ms": counted.get("identify_ms"),
        "best": r.best.name if r.best else None,
        "best_verdict": r.best.verdict if r.best else None,
        "ranked": [x.arm for x in r.interventions],
    }
