"""`qscope build-demo`: build mini-Qwen stage by stage (corpus, tokenizer + model, SAEs) under one folder.

Layout of ``out``::

    corpus/{train,val}.jsonl, manifest.json       real text, JSON lines with a ``text`` field
    model/                                         Qwen3ForCausalLM checkpoint + Qwen2-style tokenizer files
    saes/SAE-Res-mini-qwen-W<w>-L0_<k>/layer{n}.sae.pt   TopK SAEs in the Qwen-Scope file format
    build.json                                     the spec and every figure of the build

Each stage is written to a temporary folder and renamed into place, with a ``stage.json`` that records the
digest of the settings it was built from; a later run with the same settings reuses it.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from tokenizers import Tokenizer

from qscope.demo import corpus as corpus_mod
from qscope.demo.spec import DemoSpec
from qscope.demo.tokenizer import save_tokenizer, train_tokenizer
from qscope.demo.train_model import pack, train_model
from qscope.demo.train_sae import collect_activations, sae_metrics, train_sae
from qscope.model import load_model
from qscope.progress import Clock, PhaseProgress, elapsed_line
from qscope.sae import load_sae, save_qwen_scope

CORPUS_FIELDS = ("seed", "corpus_chars")
MODEL_FIELDS = CORPUS_FIELDS + (
    "vocab_size",
    "hidden_size",
    "n_layers",
    "n_heads",
    "n_kv_heads",
    "head_dim",
    "intermediate_size",
    "ctx",
    "batch_size",
    "steps",
    "lr",
    "warmup_steps",
)
SAE_FIELDS = MODEL_FIELDS + (
    "sae_layers",
    "sae_width",
    "sae_k",
    "sae_train_tokens",
    "sae_eval_tokens",
    "sae_batch",
    "sae_epochs",
    "sae_lr",
    "sae_aux_k",
)


LOG_EVERY_S = 30.0  # in a log, a phase's longest silence between two lines (besides its tenths)


def build_progress(console: Console, clock: Clock = time.monotonic) -> PhaseProgress:
    """The build's progress: bars in a terminal; in a log (CI, docker), a line at a phase's first step (so a log
    shows a phase has started and its pace within a minute, however busy the machine), every tenth of it and at
    least every LOG_EVERY_S, each with the time it has taken and the time left at its rate so far."""
    return PhaseProgress(console, every_s=LOG_EVERY_S, line=elapsed_line, clock=clock)


def _reusable(stage_dir: Path, digest: str) -> dict | None:
    """The stage's recorded figures when it was built from the same settings, else None."""
    marker = stage_dir / "stage.json"
    if marker.is_file():
        info = json.loads(marker.read_text())
        if info.get("digest") == digest:
            return info
    return None


def _stage(name: str, final: Path, digest: str, console: Console, make: Callable[[Path], dict]) -> dict:
    """One stage: reuse `final` when it was built from the same settings (digest), else make it in a fresh
    temporary folder (make(tmp) -> its figures), record the figures in stage.json and move it into place in one
    rename, so an interrupted build never leaves a half-made stage where a finished one is looked for."""
    if info := _reusable(final, digest):
        console.print(f"{name}: reusing {final}")
        return info
    tmp = final.with_name(f".{final.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    info = {"digest": digest, **make(tmp)}
    (tmp / "stage.json").write_text(json.dumps(info, indent=2))
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return info


def build_corpus(out: Path, spec: DemoSpec, console: Console) -> dict:
    def make(tmp: Path) -> dict:
        console.print(f"corpus: gathering {spec.corpus_chars:,} characters of real text…")
        manifest = corpus_mod.write_corpus(tmp, spec.corpus_chars, spec.seed)
        sources = ", ".join(f"{name} {v['chars'] / 1e6:.2f}M chars" for name, v in manifest.sources.items())
        console.print(
            f"corpus: {manifest.train_docs:,} train / {manifest.val_docs:,} val documents ({sources})", soft_wrap=True
        )
        return asdict(manifest)

    return _stage("corpus", out / "corpus", spec.digest(*CORPUS_FIELDS), console, make)


def build_model(out: Path, spec: DemoSpec, console: Console) -> dict:
    def make(tmp: Path) -> dict:
        train_texts = corpus_mod.read_texts(out / "corpus" / "train.jsonl")
        val_texts = corpus_mod.read_texts(out / "corpus" / "val.jsonl")
        console.print(f"tokenizer: training a {spec.vocab_size:,}-token BPE on {len(train_texts):,} documents…")
        tok = train_tokenizer(train_texts, spec.vocab_size)
        save_tokenizer(tok, tmp, model_max_length(spec))
        train_NT, val_NT = pack(tok, train_texts, spec.ctx), pack(tok, val_texts, spec.ctx)
        console.print(
            f"tokenizer: vocab {tok.get_vocab_size():,}; {train_NT.numel():,} train / {val_NT.numel():,} val tokens"
        )
        name = "train mini-Qwen"
        with build_progress(console) as progress:
            progress.add(name, spec.steps)
            with progress.run(name):
                model, report = train_model(
                    spec,
                    tok,
                    train_NT,
                    val_NT,
                    progress=lambda step, loss: progress.update(name, done=step + 1, info=f"loss {loss:.3f}"),
                )
        model.save_pretrained(tmp)
        console.print(f"model: trained ({report.params / 1e6:.2f}M parameters, {report.seconds:.0f} s)")
        return asdict(report)

    return _stage("model", out / "model", spec.digest(*MODEL_FIELDS), console, make)


def model_max_length(spec: DemoSpec) -> int:
    return max(1024, spec.ctx * 8)


def build_saes(out: Path, spec: DemoSpec, console: Console) -> dict:
    def make(tmp: Path) -> dict:
        metrics = _train_saes(out, spec, console, tmp)
        seconds = sum(m["train_seconds"] for m in metrics.values())
        console.print(f"saes: trained {len(metrics)} SAEs ({seconds:.0f} s)")  # their figures: once, at the end
        return {"release": spec.sae_release, "layers": metrics}

    return _stage("saes", out / "saes" / spec.sae_release, spec.digest(*SAE_FIELDS), console, make)


def _train_saes(out: Path, spec: DemoSpec, console: Console, tmp: Path) -> dict[str, dict]:
    """Train one SAE per layer of spec.sae_layers into `tmp`; each one's held-out figures by layer."""
    loaded = load_model(out / "model", device="cpu", dtype="float32")
    tok = Tokenizer.from_file(str(out / "model" / "tokenizer.json"))
    windows = {
        split: pack(tok, corpus_mod.read_texts(out / "corpus" / f"{split}.jsonl"), spec.ctx)
        for split in ("train", "val")
    }
    console.print(
        f"SAE activations: running the model over {spec.sae_train_tokens + spec.sae_eval_tokens:,} tokens "
        f"for layers {', '.join(map(str, spec.sae_layers))}…"
    )
    train_acts = collect_activations(loaded.model, windows["train"], spec.sae_layers, spec.sae_train_tokens)
    val_acts = collect_activations(loaded.model, windows["val"], spec.sae_layers, spec.sae_eval_tokens)
    metrics: dict[str, dict] = {}
    with build_progress(console) as progress:
        for layer in spec.sae_layers:
            name = f"train SAE layer {layer}"
            progress.add(name, len(train_acts[layer]) // spec.sae_batch * spec.sae_epochs)  # its length from the start
            t0 = time.perf_counter()

            def tick(step: int, total: int, fvu: float, name: str = name) -> None:
                progress.update(name, done=step + 1, total=total, info=f"fvu {fvu:.3f}")

            with progress.run(name):
                w = train_sae(spec, train_acts[layer], progress=tick)
            path = tmp / f"layer{layer}.sae.pt"
            save_qwen_scope(path, w.W_enc, w.b_enc, w.W_dec, w.b_dec)
            sae = load_sae(path)  # evaluate through the same reader a real release goes through
            metrics[str(layer)] = {
                **sae_metrics(sae.encode, sae.decode, val_acts[layer]),
                "train_seconds": time.perf_counter() - t0,
            }
    return metrics


def is_built(out: Path, spec: DemoSpec) -> bool:
    """Whether every stage under `out` was built from these settings (a build would only reuse them)."""
    stages = (
        (out / "corpus", CORPUS_FIELDS),
        (out / "model", MODEL_FIELDS),
        (out / "saes" / spec.sae_release, SAE_FIELDS),
    )
    return all(_reusable(folder, spec.digest(*fields)) for folder, fields in stages)


def build_demo(out: Path, spec: DemoSpec, console: Console | None = None) -> dict:
    """Build (or reuse) every stage and write ``build.json`` with the figures; returns that report."""
    console = console or Console(stderr=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    report: dict[str, Any] = {
        "spec": {k: v for k, v in asdict(spec).items() if k != "notes"},
        "corpus": build_corpus(out, spec, console),
        "model": build_model(out, spec, console),
        "saes": build_saes(out, spec, console),
    }
    report["seconds"] = time.perf_counter() - t0
    (out / "build.json").write_text(json.dumps(report, indent=2))
    return report
