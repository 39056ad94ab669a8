"""Train mini-Qwen: a real ``Qwen3ForCausalLM`` (transformers' own class) on the demo corpus, on the CPU.

Training runs under bf16 autocast where the CPU has native bf16 (weights and the saved checkpoint stay fp32).
Documents are tokenized, joined with ``<|endoftext|>`` and cut into windows of ``ctx`` tokens (Qwen has no
BOS). Training is a fixed number of AdamW steps with warmup and cosine decay, so the same spec and seed give
the same checkpoint. The figures that say the model learned something are the validation loss next to the
unigram entropy of the same split (what a model that ignores context would reach).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer
from transformers import Qwen3Config, Qwen3ForCausalLM

from qscope.demo.spec import DemoSpec


@dataclass
class ModelReport:
    val_loss: float  # nats / token on held-out windows
    unigram_entropy: float  # nats / token of the held-out split's own unigram distribution
    train_tokens: int  # tokens seen in training (steps x batch x ctx)
    corpus_tokens: int
    params: int
    seconds: float


def pack(tok: Tokenizer, texts: list[str], ctx: int) -> torch.Tensor:
    """Token windows [N, ctx]: documents joined by the end-of-text token, the tail dropped."""
    eos = tok.token_to_id("<|endoftext|>")
    assert eos is not None, "the demo tokenizer has <|endoftext|> among its special tokens"
    stream: list[int] = []
    for enc in tok.encode_batch(texts, add_special_tokens=False):
        stream.extend(enc.ids)
        stream.append(eos)
    n = len(stream) // ctx
    return torch.tensor(stream[: n * ctx], dtype=torch.long).view(n, ctx)


def unigram_entropy(ids: torch.Tensor, vocab_size: int) -> float:
    """Entropy in nats of the empirical token distribution of ``ids``."""
    counts = torch.bincount(ids.flatten(), minlength=vocab_size).double()
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log()).sum())


def make_config(spec: DemoSpec, tok: Tokenizer) -> Qwen3Config:
    eos = tok.token_to_id("<|endoftext|>")
    return Qwen3Config(
        vocab_size=tok.get_vocab_size(),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.n_layers,
        num_attention_heads=spec.n_heads,
        num_key_value_heads=spec.n_kv_heads,
        head_dim=spec.head_dim,
        max_position_embeddings=max(1024, spec.ctx * 8),
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=eos,
        pad_token_id=eos,
    )


@torch.no_grad()
def evaluate(model: Qwen3ForCausalLM, windows_NT: torch.Tensor, batch: int = 32) -> float:
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(windows_NT), batch):
        x_BT = windows_NT[start : start + batch]
        loss = model(input_ids=x_BT, labels=x_BT, use_cache=False).loss
        total += float(loss) * x_BT.numel()
        count += x_BT.numel()
    return total / max(count, 1)


def cpu_has_bf16() -> bool:
    """Whether the CPU has native bf16 matmuls (AVX512-BF16 or AMX): there bf16 autocast trains about 3x
    faster than fp32; elsewhere it is emulated and slower, so training stays fp32."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def lr_at(step: int, spec: DemoSpec) -> float:
    if step < spec.warmup_steps:
        return spec.lr * (step + 1) / spec.warmup_steps
    frac = (step - spec.warmup_steps) / max(1, spec.steps - spec.warmup_steps)
    return spec.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def train_model(
    spec: DemoSpec,
    tok: Tokenizer,
    train_NT: torch.Tensor,
    val_NT: torch.Tensor,
    progress: Callable[[int, float], None] | None = None,
) -> tuple[Qwen3ForCausalLM, ModelReport]:
    """Train from scratch for ``spec.steps`` steps; ``progress(step, loss)`` is called after each step."""
    t0 = time.perf_counter()
    torch.manual_seed(spec.seed)
    model = Qwen3ForCausalLM(make_config(spec, tok))
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=spec.lr,
        betas=(0.9, 0.95),
    )
    gen = torch.Generator().manual_seed(spec.seed)
    use_bf16 = cpu_has_bf16()
    model.train()
    for step in range(spec.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, spec)
        idx_B = torch.randint(len(train_NT), (spec.batch_size,), generator=gen)
        x_BT = train_NT[idx_B]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
            loss = model(input_ids=x_BT, labels=x_BT, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if progress:
            progress(step, loss.item())
    model.eval()
    report = ModelReport(
        val_loss=evaluate(model, val_NT),
        unigram_entropy=unigram_entropy(val_NT, tok.get_vocab_size()),
        train_tokens=spec.steps * spec.batch_size * spec.ctx,
        corpus_tokens=train_NT.numel(),
        params=sum(p.numel() for p in model.parameters()),
        seconds=time.perf_counter() - t0,
    )
    return model, report
