"""Benchmark discover: examples/s of a whole discovery (tokenize, forward + encode every SAE, pool, rank with
controls, with and without the L1 logistic regression) beside the floor: the same tokens' forward + SAE encode
alone, in the same batches. One run: the three are interleaved --reps times and each keeps its best.

    qscope bench discover --demo-dir data/demo --n 200        # 200 examples a side of code vs prose
    qscope bench discover --tokens-per-batch 8192 --device cuda

Prints a line per measurement and a JSON line last.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from qscope.discover.activations import ActivationRunner, plan, tokenize
from qscope.discover.demo import demo_examples
from qscope.discover.discovery import DiscoverOptions, discover
from qscope.discover.examples import ExampleLimits, build_set
from qscope.harvest.ids import model_id_for, sae_id_for
from qscope.model import LoadedModel, capture, load_model
from qscope.sae import Sae, find_sae_files, load_sae


def floor(runner: ActivationRunner, ids: list[list[int]]) -> None:
    """Forward (to the deepest SAE site) + encode of every SAE, nothing kept: the least any discovery must do."""
    sites = list(dict.fromkeys(s.require_site() for s in runner.saes.values()))
    device = next(runner.model.parameters()).device
    for group in plan(ids, runner.batch_tokens, runner.max_batch):
        lengths = [len(ids[i]) for i in group]
        input_BT = torch.zeros((len(group), lengths[0]), dtype=torch.long)
        attn_BT = torch.zeros_like(input_BT)
        for row, i in enumerate(group):
            input_BT[row, : lengths[row]] = torch.tensor(ids[i])
            attn_BT[row, : lengths[row]] = 1
        with torch.no_grad():
            hidden = capture(runner.model, sites, input_BT.to(device), attn_BT.to(device))
            for sae in runner.saes.values():
                sae.encode(hidden[sae.require_site()])
        if device.type == "cuda":
            torch.cuda.synchronize()


def demo_parser(doc: str) -> argparse.ArgumentParser:
    """The options every benchmark over a `qscope build-demo` folder takes (this one and `bench baselines`)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--demo-dir", default="data/demo", help="A `qscope build-demo` folder (model, saes, corpus).")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default).")
    return ap


def load_demo(args: argparse.Namespace) -> tuple[LoadedModel, dict[str, Sae]]:
    """The demo folder's model and every SAE of it {sae_id: Sae}, on `--device`, with `--threads` set."""
    if args.threads:
        torch.set_num_threads(args.threads)
    root = Path(args.demo_dir)
    lm = load_model(root / "model", device=args.device)
    return lm, {sae_id_for(f): load_sae(f, device=lm.device) for f in find_sae_files(root / "saes")}


def main(argv: list[str] | None = None) -> None:
    ap = demo_parser(__doc__)
    ap.add_argument("--demo", default="code-vs-prose")
    ap.add_argument("--n", type=int, default=200, help="Examples per side.")
    ap.add_argument("--tokens-per-batch", type=int, default=4096)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args(argv)
    root = Path(args.demo_dir)
    lm, saes = load_demo(args)
    _, a, b = demo_examples(root / "corpus", args.demo, args.n)
    examples = build_set(a, b, ExampleLimits())
    runner = ActivationRunner(
        lm.model, saes, batch_tokens=args.tokens_per_batch, pad_id=lm.require_tokenizer().pad_token_id or 0
    )
    ids = tokenize(lm.require_tokenizer(), examples.texts, args.max_tokens).ids
    n_ex, n_tok = len(ids), sum(map(len, ids))

    def run(logreg: bool):
        options = DiscoverOptions(logreg=logreg)
        return lambda: discover(examples, runner, lm.tokenizer, lm.model_id, options, args.max_tokens)

    times: dict[str, list[float]] = {"floor": [], "discover": [], "discover + logreg": []}
    jobs = {"floor": lambda: floor(runner, ids), "discover": run(False), "discover + logreg": run(True)}
    for job in jobs.values():  # warm-up
        job()
    for _ in range(args.reps):  # interleaved, so a busy spell on a shared machine hits all three alike
        for name, job in jobs.items():
            t = time.perf_counter()
            job()
            times[name].append(time.perf_counter() - t)
    t_floor, t_plain, t_full = (min(times[k]) for k in jobs)
    d = run(True)()
    report = {
        "model": model_id_for(root / "model"),
        "device": str(lm.device),
        "threads": torch.get_num_threads(),
        "examples": n_ex,
        "tokens": n_tok,
        "saes": len(saes),
        "features": sum(s.d_sae for s in saes.values()),
        "floor_examples_per_s": round(n_ex / t_floor, 1),
        "discover_examples_per_s": round(n_ex / t_plain, 1),
        "discover_logreg_examples_per_s": round(n_ex / t_full, 1),
        "ratio": round(t_floor / t_plain, 3),
        "ratio_with_logreg": round(t_floor / t_full, 3),
        "goal": 0.7,
        "phases_s": {k: round(v, 3) for k, v in d.seconds.items()},
        "top_test_auroc": d.ranking.a_side[0].test_auroc if d.ranking.a_side else None,
    }
    print(
        f"{n_ex} examples, {n_tok} tokens, {len(saes)} SAEs: floor (forward + encode) {t_floor:.3f} s, "
        f"discover {t_plain:.3f} s, with logistic regression {t_full:.3f} s"
    )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
