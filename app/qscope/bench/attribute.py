"""Benchmark attribution: one attribution of the last token of a --tokens-token prompt (every SAE, one forward and
one backward pass) vs one plain forward pass of the same prompt, side by side in one run; and the attribution over
the earliest SAE alone (the same forward and backward with one SAE encode: the difference is what the other SAEs
cost, an encode each).

    qscope bench attribute --model data/demo/model --saes data/demo/saes --tokens 128
    qscope bench attribute --real-shape 8      # Qwen3-1.7B's sizes, 8 layers, a 32k SAE on every layer

--real-shape N builds (once, in --dir) the real-shape benchmark's inputs: a random-weight Qwen3 at Qwen3-1.7B's
sizes with N of its 28 layers and the real Qwen3 tokenizer, and a --width-wide SAE on every layer in Qwen-Scope's
format, as Qwen-Scope ships one per layer (the most SAEs an attribution runs over).

The prompt is real text (the demo's validation corpus when it is there, else this module's docstrings), cut to
exactly --tokens tokens. They are timed in turn, --reps times after a warm-up, and the best of each kept; CPU
time (this process's) is reported beside wall time, as on a busy machine it counts the work without the waits
(with --threads 1). Prints a JSON line last.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import NamedTuple

import torch

from qscope.bench import real_shape
from qscope.config import get_settings
from qscope.live.attribute import AttributionTarget, attribute
from qscope.model import load_model
from qscope.sae import find_sae_files, load_sae

GOAL = 3.0  # an attribution should cost at most this many plain forward passes


class Times(NamedTuple):
    wall_s: float
    cpu_s: float  # this process's CPU time: on a busy machine with one torch thread, the work without the waits


def timed(fn) -> Times:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return Times(time.perf_counter() - wall, time.process_time() - cpu)


def best_in_turn(fns: list, reps: int) -> list[Times]:
    """The fastest of `reps` runs of each fn (wall and CPU time apart), the fns run in turn after a warm-up."""
    for fn in fns:
        fn()
    runs = [[timed(fn) for fn in fns] for _ in range(reps)]
    return [Times(min(t.wall_s for t in col), min(t.cpu_s for t in col)) for col in zip(*runs, strict=True)]


def prompt_ids(tokenizer, n_tokens: int, corpus: Path) -> list[int]:
    """n_tokens ids of real text."""
    text = ""
    if corpus.is_file():
        with corpus.open() as f:
            for line in f:
                text += json.loads(line).get("text", "") + "\n"
                if len(text) > 6 * n_tokens:
                    break
    text = text or (__doc__ or "") * 50
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    while len(ids) < n_tokens:
        ids = ids + ids
    return ids[:n_tokens]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--model", default="data/demo/model")
    ap.add_argument("--saes", default="data/demo/saes")
    ap.add_argument("--corpus", default=None, help="JSON lines with a 'text' field (default: next to --model)")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's own choice)")
    ap.add_argument("--real-shape", type=int, default=0, metavar="LAYERS", help="Qwen3-1.7B's sizes, LAYERS deep")
    ap.add_argument("--width", type=int, default=32768, help="with --real-shape: features per SAE")
    ap.add_argument("--dir", type=Path, default=get_settings().paths.data_dir / "real-shape", help="with --real-shape")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.real_shape:
        args.dir.mkdir(parents=True, exist_ok=True)
        model_dir = real_shape.checkpoint(args.dir, args.real_shape)
        corpus_file = real_shape.corpus(args.dir, 8192)
        sae_dir = real_shape.saes(args.dir, model_dir, corpus_file, args.width, args.real_shape, args.real_shape)
        held_out = corpus_file.with_name("val.jsonl")  # the SAEs' biases were set on the training text
        args.model, args.saes, args.corpus = str(model_dir), str(sae_dir), str(held_out)
    lm = load_model(args.model, device=args.device, dtype=args.dtype)
    saes = {}
    for path in find_sae_files(args.saes):
        sae = load_sae(path, device=lm.device)
        saes[f"layer{sae.layer}"] = sae
    corpus = Path(args.corpus) if args.corpus else Path(args.model).parent / "corpus" / "val.jsonl"
    ids = prompt_ids(lm.tokenizer, args.tokens, corpus)
    input_ids = torch.tensor([ids], device=lm.device)

    @torch.no_grad()
    def forward(keep: int = 0):
        return lm.model(input_ids=input_ids, use_cache=False, logits_to_keep=keep)

    attribution = lambda: attribute(lm.model, saes, ids, AttributionTarget(None))  # noqa: E731
    first = dict([next(iter(saes.items()))])  # the earliest SAE alone: the whole backward, one encode
    one_sae = lambda: attribute(lm.model, first, ids, AttributionTarget(None))  # noqa: E731
    plain, last_only, att, one = best_in_turn([forward, lambda: forward(1), attribution, one_sae], args.reps)
    active = sum(len(s.pos) for s in attribution().saes)
    report = {
        "model": args.model,
        "device": str(lm.device),
        "dtype": str(lm.dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "tokens": len(ids),
        "saes": len(saes),
        "features": sum(s.d_sae for s in saes.values()),
        "active_pairs": active,
        "reps": args.reps,
        "forward_ms": round(plain.wall_s * 1e3, 2),
        "forward_last_logits_ms": round(last_only.wall_s * 1e3, 2),
        "attribution_ms": round(att.wall_s * 1e3, 2),
        "attribution_over_forward": round(att.wall_s / plain.wall_s, 2),
        "attribution_over_forward_last_logits": round(att.wall_s / last_only.wall_s, 2),
        "cpu_forward_ms": round(plain.cpu_s * 1e3, 2),
        "cpu_attribution_ms": round(att.cpu_s * 1e3, 2),
        "cpu_attribution_over_forward": round(att.cpu_s / plain.cpu_s, 2),
        "cpu_attribution_over_forward_last_logits": round(att.cpu_s / last_only.cpu_s, 2),
        "goal": GOAL,
        "one_sae": next(iter(first)),
        "one_sae_ms": round(one.wall_s * 1e3, 2),
        "one_sae_over_forward": round(one.wall_s / plain.wall_s, 2),
        "cpu_one_sae_over_forward": round(one.cpu_s / plain.cpu_s, 2),
    }
    print(
        f"forward {plain.wall_s * 1e3:.1f} ms (last logits only {last_only.wall_s * 1e3:.1f} ms), attribution "
        f"{att.wall_s * 1e3:.1f} ms over {len(saes)} SAEs and {active} active (position, feature) pairs; CPU "
        f"time {plain.cpu_s * 1e3:.1f} / {last_only.cpu_s * 1e3:.1f} / {att.cpu_s * 1e3:.1f} ms; one SAE "
        f"({next(iter(first))}) {one.wall_s * 1e3:.1f} ms, CPU {one.cpu_s * 1e3:.1f} ms"
    )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
