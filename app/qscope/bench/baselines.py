"""Benchmark the features against the baselines at detection: on each example set, a whole discovery (same split,
same tokens) and, per hooked site, the test AUROC of the best single feature, the sparse regression over features,
DiffMean and the probe on the raw residual, each with its 95% bootstrap interval, and the sentence the discovery
computes from them. The sets: mini-Qwen's demo sets and two built from other real text on the system
(qscope.bench.other_text).

    qscope bench baselines --demo-dir data/demo                      # every set, 100 examples a side
    qscope bench baselines --demo-dir data/demo --sets code-vs-prose,shell-vs-python --n 60

Prints a Markdown table (one row per set and site) and a JSON line last.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from qscope.bench.discover import demo_parser, load_demo
from qscope.bench.other_text import SETS as OTHER_SETS
from qscope.bench.other_text import other_examples
from qscope.discover.activations import ActivationRunner
from qscope.discover.baselines import Judged
from qscope.discover.demo import DEMOS, demo_examples
from qscope.discover.discovery import DiscoverOptions, discover
from qscope.discover.examples import ExampleLimits, build_set
from qscope.harvest.ids import model_id_for

COLUMNS = ("best feature", "sparse regression over features", "DiffMean", "probe")


def _cell(j: Judged | None) -> str:
    return "-" if j is None else f"{j.test_auroc:.3f} ({j.auroc_interval[0]:.2f}-{j.auroc_interval[1]:.2f})"


def main(argv: list[str] | None = None) -> None:
    ap = demo_parser(__doc__)
    ap.add_argument("--sets", default=",".join([*DEMOS, *OTHER_SETS]), help="Comma-separated set names.")
    ap.add_argument("--n", type=int, default=100, help="Examples per side.")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    root = Path(args.demo_dir)
    lm, saes = load_demo(args)
    tokenizer = lm.require_tokenizer()
    runner = ActivationRunner(lm.model, saes, pad_id=tokenizer.pad_token_id or 0)
    rows: list[dict] = []
    print("| set | examples (A / B) | site | best feature | sparse regression | DiffMean | probe | reading |")
    print("|---|---|---|---|---|---|---|---|")
    for name in [s.strip() for s in args.sets.split(",") if s.strip()]:
        if name in DEMOS:
            demo, a, b = demo_examples(root / "corpus", name, args.n, args.seed)
            names = (demo.a_name, demo.b_name)
        else:
            names, a, b = other_examples(name, args.n, args.seed)
        examples = build_set(a, b, ExampleLimits(), names=names)
        t0 = time.perf_counter()
        d = discover(examples, runner, tokenizer, lm.model_id, DiscoverOptions(seed=args.seed), args.max_tokens)
        seconds = time.perf_counter() - t0
        for b_site in d.baselines or []:
            c = b_site.comparison
            judged = {m.method: m for m in c.methods}
            print(
                f"| {name} | {len(a)} / {len(b)} | {c.site} | "
                + " | ".join(_cell(judged.get(col)) for col in COLUMNS)
                + f" | {c.comparison.sentence} |"
            )
            rows.append(
                {
                    "set": name,
                    "site": c.site,
                    "a": len(a),
                    "b": len(b),
                    "test": len(d.test),
                    "seconds": round(seconds, 1),
                    **{col: (judged[col].test_auroc if col in judged else None) for col in COLUMNS},
                    "difference": c.comparison.difference,
                    "interval": list(c.comparison.interval),
                    "sentence": c.comparison.sentence,
                }
            )
    features_win = sum(r["difference"] > 0 and r["interval"][0] > 0 for r in rows)
    baselines_win = sum(r["difference"] < 0 and r["interval"][1] < 0 for r in rows)
    print(
        f"{len(rows)} set x site rows: features clearly better in {features_win}, a baseline clearly better in "
        f"{baselines_win}, no clear difference in {len(rows) - features_win - baselines_win}"
    )
    report = {
        "model": model_id_for(root / "model"),
        "device": str(lm.device),
        "n_per_side": args.n,
        "rows": rows,
        "features_better": features_win,
        "baselines_better": baselines_win,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
