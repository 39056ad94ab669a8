"""What an evaluation runs on (`Target`), and how one is made from a served model (`from_live`)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from qscope.model import LoadedModel
from qscope.sae import Sae
from qscope.steer.evaluate import identity
from qscope.steer.evaluate.result import Identity
from qscope.steer.evaluate.writes import FeatureProfile, profile_of


@dataclass
class Target:
    """A loaded model and its SAEs, the lock its forwards hold, each SAE's per-feature max activation from the
    feature store (0 where a feature never fired), and the files it came from (for the identity)."""

    model_id: str
    lm: LoadedModel
    saes: dict[str, Sae]
    max_acts: Callable[[str], np.ndarray]
    lock: threading.Lock | None = None
    sae_files: list[tuple[str, str]] = field(default_factory=list)  # (sae_id, path)
    store_path: str | None = None
    profile: Callable[[str, int], FeatureProfile] | None = None  # a feature's logit effects and sharpnesses
    skip_first: bool = True  # the tokens that count (qscope.residual), as the store's harvest counted them
    sink_norm_ratio: float = 10.0

    def bytes_to_hash(self) -> int:
        """What `identify` reads: the model's, the SAEs' and the store's bytes."""
        return identity.bytes_to_hash(self.lm.path, self.sae_files, self.store_path)

    def identify(self, on_bytes: Callable[[int], None] | None = None) -> Identity:
        """The identity of what this evaluation runs on (qscope.steer.evaluate.identity): its files hashed."""
        dtype = str(self.lm.dtype).removeprefix("torch.")
        args = (self.model_id, self.lm.path, self.sae_files, self.store_path, str(self.lm.device), dtype)
        return identity.identify(*args, on_bytes)


def from_live(live) -> Target:
    """The Target of a qscope.live.runner.LiveModel: its model and SAEs (loaded now), its lock, the max
    activations its feature store recorded (read once per SAE, then cached on the store), and a feature's
    profile from its card (logit effects, sharpnesses: qscope.steer.evaluate.writes)."""
    lm, saes = live.load()
    store = live.store

    def max_acts(sae_id: str) -> np.ndarray:
        def read() -> np.ndarray:
            with store.reader() as r:
                return r.max_acts(sae_id)

        return store.cached(("max_acts", sae_id), read)

    def profile(sae_id: str, feature: int) -> FeatureProfile:
        with store.reader() as r:
            detail = r.feature(sae_id, feature)
        return profile_of(detail) if detail is not None else FeatureProfile()

    files = [(sae_id, store.saes[sae_id].source) for sae_id in saes]
    return Target(
        live.model_id,
        lm,
        saes,
        max_acts,
        live.lock,
        files,
        str(store.path),
        profile,
        skip_first=live.skip_first,
        sink_norm_ratio=live.sink_norm_ratio,
    )
