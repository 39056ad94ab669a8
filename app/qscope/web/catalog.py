"""The catalog: which models and SAEs this server serves, from which store file; lookups that 404 helpfully.

Several ``--db`` files may be served at once. A (model_id, sae_id) pair names one SAE of one store; when two
files hold the same pair the first one given wins (and the clash is logged). The SAEs it hands out name their
file as qscope.store.paths shows it to strangers (unless show_paths).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from qscope.steer.spec import SpecError
from qscope.store.paths import shown_path
from qscope.store.queries import Store
from qscope.store.schema import SaeInfo
from qscope.web import urls

log = logging.getLogger(__name__)
DEAD = (
    "feature {feature} of {sae_id} never fired in the harvest (its max activation is 0): add and clamp are "
    "multiples of that max, so they would change nothing. Pick a feature that fired, or use multiply or ablate."
)


class NotFound(Exception):
    """A page that does not exist; `exists` lists (text, url) of what does, for the 404 page."""

    def __init__(self, message: str, exists: Sequence[tuple[str, str]] = (), what: str = "") -> None:
        super().__init__(message)
        self.message, self.exists, self.what = message, list(exists), what


@dataclass
class ServedSae:
    sae: SaeInfo
    store: Store


@dataclass
class ModelEntry:
    model_id: str
    saes: list[ServedSae] = field(default_factory=list)

    @property
    def n_features(self) -> int:
        return sum(s.sae.d_sae for s in self.saes)


class Catalog:
    def __init__(self, paths: Sequence[str | Path], timeout_s: float = 5.0, show_paths: bool = False) -> None:
        self.stores = [Store(p, timeout_s=timeout_s) for p in paths]
        self.models: dict[str, ModelEntry] = {}
        self._saes: dict[tuple[str, str], ServedSae] = {}
        for store in self.stores:
            for sae in store.saes.values():
                key = (sae.model_id, sae.sae_id)
                if key in self._saes:
                    log.warning(
                        "%s/%s is in %s and %s; serving the first", *key, self._saes[key].store.path, store.path
                    )
                    continue
                shown = sae if show_paths else replace(sae, source=shown_path(sae.source, store.path) or "")
                served = ServedSae(shown, store)
                self._saes[key] = served
                self.models.setdefault(sae.model_id, ModelEntry(sae.model_id)).saes.append(served)

    def __iter__(self):
        return iter(self.models.values())

    def model(self, model_id: str) -> ModelEntry:
        if model_id not in self.models:
            raise NotFound(
                f"No model {model_id!r} is served here.",
                [(m, urls.home() + "#" + m) for m in self.models],
                what="models served",
            )
        return self.models[model_id]

    def model_id_or_first(self, model_id: str | None) -> str:
        """`model_id`, or the first model served when none is given (as every route that runs a model defaults);
        NotFound, listing the models served, when it is not served here."""
        model_id = model_id or next(iter(self.models), "")
        self.model(model_id)
        return model_id

    def sae(self, model_id: str, sae_id: str) -> ServedSae:
        entry = self.model(model_id)
        served = self._saes.get((model_id, sae_id))
        if served is None:
            raise NotFound(
                f"Model {model_id!r} has no SAE {sae_id!r}.",
                [(s.sae.sae_id, urls.sae(model_id, s.sae.sae_id)) for s in entry.saes],
                what=f"SAEs of {model_id}",
            )
        return served

    def max_act_of(self, model_id: str) -> Callable[[str, int], float]:
        """(sae_id, feature) -> the feature's harvested max activation (a steering spec's unit), for one model;
        SpecError for a feature the store does not hold, and for a dead one (max 0): asked only for add and clamp,
        which would then change nothing. The one rule of every route that steers (/api/steer, /v1, attribution):
        such input is refused, never ignored."""

        def max_act(sae_id: str, feature: int) -> float:
            with self.sae(model_id, sae_id).store.reader() as r:
                row = r.row(sae_id, feature)
            if row is None:
                raise SpecError(f"feature {feature} of {sae_id} is not in the feature store")
            if not row.max_act > 0:
                raise SpecError(DEAD.format(feature=feature, sae_id=sae_id))
            return row.max_act

        return max_act

    def find_sae(self, sae_id: str) -> ServedSae | None:
        """The SAE with this id in any model (the first one served), for links that carry only sae_id."""
        return next((s for (_, sid), s in self._saes.items() if sid == sae_id), None)

    def check_feature(self, served: ServedSae, feature: int) -> None:
        d_sae = served.sae.d_sae
        if not 0 <= feature < d_sae:
            last = d_sae - 1
            raise NotFound(
                f"Feature {feature} is out of range: {served.sae.sae_id} has features 0 to {last}.",
                [(f"feature {f}", urls.feature(served.sae.model_id, served.sae.sae_id, f)) for f in (0, last)]
                + [("all features", urls.sae(served.sae.model_id, served.sae.sae_id))],
                what="features of this SAE",
            )

    def close(self) -> None:
        for store in self.stores:
            store.close()
