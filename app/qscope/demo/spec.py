"""DemoSpec: every setting of the mini-Qwen build in one dataclass, with the full and ``--tiny`` presets."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace


@dataclass(frozen=True)
class DemoSpec:
    seed: int = 0
    # corpus
    corpus_chars: int = 6_000_000  # characters of real text picked across the sources (about 1.8M tokens)
    # tokenizer
    vocab_size: int = 8192  # small enough that the LM head does not dominate CPU training time
    # model: a Qwen3 with real Qwen3 blocks (GQA, q/k norm, SwiGLU, RoPE), only smaller
    hidden_size: int = 256
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 2
    head_dim: int = 64
    intermediate_size: int = 768
    ctx: int = 128  # training window in tokens
    batch_size: int = 16
    steps: int = 800
    lr: float = 3e-3
    warmup_steps: int = 50
    # SAEs: TopK on the residual stream (output of decoder layer n), Qwen-Scope file format
    sae_layers: tuple[int, ...] = (1, 2, 3)  # layer 0 is mostly token identity: many rare-token latents
    sae_width: int = 4096  # 16x hidden, as in Qwen-Scope
    sae_k: int = 32
    sae_train_tokens: int = 300_000
    sae_eval_tokens: int = 50_000
    sae_batch: int = 1024
    sae_epochs: int = 1
    sae_lr: float = 2e-3
    sae_aux_k: int = 256  # AuxK loss: dead latents reconstruct the residual error, so few stay dead
    notes: dict = field(default_factory=dict, compare=False, hash=False)

    def digest(self, *names: str) -> str:
        """A short hash of the named settings (all when none): a stage is reused only if its inputs match."""
        values = asdict(self)
        values.pop("notes")
        picked = {n: values[n] for n in names} if names else values
        return hashlib.sha256(json.dumps(picked, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def sae_release(self) -> str:
        """Folder name in Qwen-Scope's pattern, so k is read from ``L0_<k>`` like a real release."""
        width = f"{self.sae_width // 1024}K" if self.sae_width % 1024 == 0 else str(self.sae_width)
        return f"SAE-Res-mini-qwen-W{width}-L0_{self.sae_k}"


FULL = DemoSpec()

TINY = replace(
    FULL,
    corpus_chars=400_000,
    vocab_size=1024,
    hidden_size=64,
    n_layers=2,
    n_heads=2,
    n_kv_heads=1,
    head_dim=32,
    intermediate_size=192,
    ctx=64,
    batch_size=16,
    steps=400,
    lr=5e-3,
    warmup_steps=10,
    sae_layers=(0, 1),
    sae_width=512,
    sae_k=16,
    sae_train_tokens=60_000,
    sae_eval_tokens=8_000,
    sae_batch=512,
    sae_epochs=3,
    sae_aux_k=64,
)
