"""The embedded default: `qscope build-demo --tiny` builds a real Qwen3 checkpoint and Qwen-Scope-format SAEs."""

import json
import subprocess
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from qscope.demo import corpus
from qscope.demo.spec import TINY
from qscope.demo.train_model import pack
from qscope.demo.train_sae import collect_activations, sae_metrics
from qscope.model import load_model
from qscope.sae import find_sae_files, load_sae


def test_model_loads_with_plain_transformers(tiny_demo: Path):
    model = AutoModelForCausalLM.from_pretrained(tiny_demo / "model")
    tok = AutoTokenizer.from_pretrained(tiny_demo / "model")
    assert model.config.model_type == "qwen3"
    assert type(model).__name__ == "Qwen3ForCausalLM"
    ids = tok("def main():\n    return 1", return_tensors="pt").input_ids
    assert tok.decode(ids[0]) == "def main():\n    return 1"
    logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], model.config.vocab_size)
    assert tok.bos_token is None and tok.eos_token == "<|endoftext|>"


def test_model_learned_something(tiny_demo: Path):
    report = json.loads((tiny_demo / "build.json").read_text())
    assert report["model"]["val_loss"] < report["model"]["unigram_entropy"] - 0.3


def test_every_sae_loads_and_reconstructs(tiny_demo: Path):
    paths = find_sae_files(tiny_demo / "saes")
    assert [p.name for p in paths] == [f"layer{n}.sae.pt" for n in TINY.sae_layers]
    assert paths[0].parent.name == TINY.sae_release
    loaded = load_model(tiny_demo / "model")
    val = pack(loaded.tokenizer.backend_tokenizer, corpus.read_texts(tiny_demo / "corpus/val.jsonl"), TINY.ctx)
    acts = collect_activations(loaded.model, val, TINY.sae_layers, 4000)
    for path in paths:
        sae = load_sae(path)
        assert sae.format == "qwen-scope" and sae.k == TINY.sae_k and sae.d_sae == TINY.sae_width
        sae.check_fits(loaded.hidden_size)
        m = sae_metrics(sae.encode, sae.decode, acts[sae.layer])
        assert m["fvu"] < 0.5, (path, m)
        f = sae.encode(acts[sae.layer][:10])
        assert ((f > 0).sum(-1) <= TINY.sae_k).all()


def test_corpus_is_real_text_with_a_split(tiny_demo: Path):
    manifest = json.loads((tiny_demo / "corpus/manifest.json").read_text())
    assert manifest["sources"]["stdlib"]["docs"] > 0
    train = corpus.read_texts(tiny_demo / "corpus/train.jsonl")
    val = corpus.read_texts(tiny_demo / "corpus/val.jsonl")
    assert train and val and not set(train) & set(val)
    assert any("def " in t for t in train)


def test_second_build_reuses_stages(tiny_demo: Path):
    before = {p: p.stat().st_mtime_ns for p in tiny_demo.rglob("*") if p.is_file() and p.name != "build.json"}
    out = subprocess.run(
        [sys.executable, "-m", "qscope.cli", "build-demo", "--tiny", "--out", str(tiny_demo)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "reusing" in out.stderr and "FVU" in out.stderr
    after = {p: p.stat().st_mtime_ns for p in tiny_demo.rglob("*") if p.is_file() and p.name != "build.json"}
    assert before == after


def test_build_is_deterministic(tiny_demo: Path, tmp_path: Path):
    """Same spec, same seed: the same corpus and the same model weights."""
    from rich.console import Console

    from qscope.demo.build import build_corpus, build_model

    build_corpus(tmp_path, TINY, Console(quiet=True))
    assert (tmp_path / "corpus/train.jsonl").read_bytes() == (tiny_demo / "corpus/train.jsonl").read_bytes()
    build_model(tmp_path, TINY, Console(quiet=True))
    a = AutoModelForCausalLM.from_pretrained(tmp_path / "model").state_dict()
    b = AutoModelForCausalLM.from_pretrained(tiny_demo / "model").state_dict()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)
