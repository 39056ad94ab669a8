"""Live runs: a feature store's model and SAEs, loaded once and run on a user's text (inspect, search by
firing, steering).

The model and SAEs are the ones the harvest read (``meta.model`` and ``saes.source``), loaded lazily on the
first run and kept for the process. Runs are bounded (QSCOPE_MAX_CHARS, max_tokens) and serialised by a lock:
one CPU forward at a time is as fast as two interleaved ones and uses half the memory. Tokens the harvest left
out of its rankings (position 0, high-norm sinks) are flagged the same way here.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from qscope.model import LoadedModel, capture, first_line, load_model, rank_mask
from qscope.sae import Sae, load_sae
from qscope.store.meta import settings_of
from qscope.store.paths import shown_message
from qscope.store.queries import Store

log = logging.getLogger(__name__)


class TextTooLong(ValueError):
    """The text passes QSCOPE_MAX_CHARS or max_tokens; the message says by how much."""


class LiveUnavailable(RuntimeError):
    """The model or an SAE of the store cannot be loaded here (moved, deleted, another machine)."""


@dataclass
class Activations:
    """The non-zero activations of one SAE on one text (a top-k SAE has at most k per token)."""

    sae_id: str
    pos: np.ndarray  # int32 [N] token position
    feature: np.ndarray  # int32 [N]
    act: np.ndarray  # float32 [N]


@dataclass
class TextRun:
    model_id: str
    text: str
    token_ids: list[int]
    tokens: list[str]  # each token's text on its own
    ranked: list[bool]  # False where the harvest would leave the token out (position 0, sinks)
    acts: list[Activations]
    shown: list[str]  # each token's piece of the text (a character split over tokens on the one completing it)


@dataclass
class Limits:
    max_chars: int = 4000
    max_tokens: int = 256
    wait_s: float = 30.0  # longest wait for the model (another run holds it) before LiveUnavailable


class LiveModel:
    """The model and SAEs of one store, loaded on first use. A load that fails is remembered: later runs get the
    same LiveUnavailable at once, without loading again. Messages name files as qscope.store.paths shows them to
    strangers, unless show_paths (the full error goes to the log)."""

    def __init__(
        self, store: Store, model_id: str, device: str = "cpu", dtype: str = "auto", show_paths: bool = False
    ) -> None:
        self.store, self.model_id, self.device, self.dtype = store, model_id, device, dtype
        self.show_paths = show_paths
        settings = settings_of(store.meta)
        self.skip_first = bool(settings.get("skip_first", True))
        self.sink_norm_ratio = float(settings.get("sink_norm_ratio", 10.0))
        self._loaded: tuple[LoadedModel, dict[str, Sae]] | None = None
        self._error: str | None = None
        self._loading = threading.Lock()  # one load at a time: requests that come meanwhile wait for its outcome
        self.lock = threading.Lock()  # held by every run of this model: inspect, search, steering batches

    def problem(self) -> str | None:
        """Why live runs cannot work here, or None (checks paths only: nothing is loaded)."""
        if self._error:
            return self._error
        reason = self._missing()
        return reason if reason is None or self.show_paths else shown_message(reason, self.store.path)

    def _missing(self) -> str | None:
        source = self.store.model_source
        if not source:
            return f"{self.store.path.name} does not record the model it was harvested from"
        if source.startswith(("/", ".")) and not Path(source).is_dir():
            return f"the model folder {source} recorded in {self.store.path.name} is not on this machine"
        missing = [s.source for s in self._saes() if not Path(s.source).exists()]
        if missing:
            return f"the SAE file {missing[0]} recorded in {self.store.path.name} is not on this machine"
        return None

    def _saes(self):
        return [s for s in self.store.saes.values() if s.model_id == self.model_id]

    def load(self) -> tuple[LoadedModel, dict[str, Sae]]:
        """The model and its SAEs {sae_id: Sae}, loaded on first use (LiveUnavailable when they cannot be)."""
        if self._loaded is not None:
            return self._loaded
        with self._loading:
            if self._loaded is not None:
                return self._loaded
            if reason := self.problem():
                raise LiveUnavailable(reason)
            source = self.store.model_source
            assert source, "problem() refuses a store that does not record its model"
            try:
                lm = load_model(source, device=self.device, dtype=self.dtype)
                saes = {s.sae_id: load_sae(s.source, k=s.k, layer=s.layer, device=lm.device) for s in self._saes()}
            except Exception as e:  # noqa: BLE001 - whatever it was, say it once and do not load again
                message = f"could not load the model or SAEs of {self.store.path.name}: {first_line(e)}"
                log.error("%s", message, exc_info=e)
                self._error = message if self.show_paths else shown_message(message, self.store.path)
                raise LiveUnavailable(self._error) from e
            if lm.tokenizer is None:
                raise LiveUnavailable(f"the model of {self.store.path.name} has no tokenizer")
            self._loaded = (lm, saes)
            return self._loaded

    def tokenize(self, text: str, limits: Limits) -> list[int]:
        if len(text) > limits.max_chars:
            raise TextTooLong(f"the text has {len(text):,} characters; at most {limits.max_chars:,} are run")
        lm, _ = self.load()
        ids = lm.require_tokenizer()(text, add_special_tokens=False)["input_ids"]
        if len(ids) > limits.max_tokens:
            raise TextTooLong(f"the text is {len(ids):,} tokens long; at most {limits.max_tokens:,} are run")
        return ids

    def run(self, text: str, limits: Limits) -> TextRun:
        """Run the model on `text` and every SAE of this model on its site (LiveUnavailable if it stays busy)."""
        if not self.lock.acquire(timeout=limits.wait_s):
            raise LiveUnavailable(f"the model is busy (waited {limits.wait_s:g} s for other runs); try again shortly")
        try:
            return self._run(text, limits)
        finally:
            self.lock.release()

    def _run(self, text: str, limits: Limits) -> TextRun:
        lm, saes = self.load()
        ids = self.tokenize(text, limits)
        if not ids:
            return TextRun(self.model_id, text, [], [], [], [], [])
        sites = list(dict.fromkeys(s.require_site() for s in saes.values()))
        hidden = capture(lm.model, sites, torch.tensor([ids]))
        first = hidden[sites[0]]
        ranked_T = rank_mask(first, self.skip_first and len(ids) > 1, self.sink_norm_ratio)[0]
        acts = []
        with torch.no_grad():
            for sae_id, sae in saes.items():
                f_TF = sae.encode(hidden[sae.require_site()][0].to(sae.W_enc.dtype))
                pos_N, feat_N = f_TF.nonzero(as_tuple=True)
                acts.append(
                    Activations(
                        sae_id,
                        pos_N.int().cpu().numpy(),
                        feat_N.int().cpu().numpy(),
                        f_TF[pos_N, feat_N].float().cpu().numpy(),
                    )
                )
        store = self.store
        return TextRun(self.model_id, text, ids, store.decode(ids), ranked_T.cpu().tolist(), acts, store.shown(ids))


class LiveModels:
    """One LiveModel per model_id served (from the first store that holds it)."""

    def __init__(self, stores: list[Store], device: str = "cpu", dtype: str = "auto", show_paths: bool = False) -> None:
        self.models: dict[str, LiveModel] = {}
        for store in stores:
            for model_id in store.model_ids:
                self.models.setdefault(model_id, LiveModel(store, model_id, device, dtype, show_paths))

    def get(self, model_id: str) -> LiveModel | None:
        return self.models.get(model_id)
