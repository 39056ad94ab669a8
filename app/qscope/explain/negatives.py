"""Contexts where a feature does not fire, for detection scoring: a pool of windows cut from the store's own
contexts, run once through the model and SAEs the store was harvested from, so that every feature's activation on
every pool window is known (not guessed).

Each pool context is run whole and a window of `length` tokens is cut from it after position 0 (the first
position of a sequence is a sink the harvest leaves out, and its activations are not representative). A window
is a negative for a feature when the feature is 0 on every token of it.

Shapes: P pool windows, T tokens per window, F features of an SAE.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from qscope.explain.prompts import ContextExample
from qscope.model import capture, load_model
from qscope.sae import load_sae
from qscope.store.queries import Store


@dataclass
class NegativePool:
    tokens: list[list[str]]  # P windows
    fires: dict[str, torch.Tensor]  # sae_id -> bool [P, F]: the feature is > 0 somewhere in the window

    def negatives(self, sae_id: str, feature: int, n: int, rng: random.Random) -> list[ContextExample]:
        """Up to n windows where the feature is silent (fewer when it fires in most of the pool)."""
        quiet = (~self.fires[sae_id][:, feature]).nonzero()[:, 0].tolist()
        picked = rng.sample(quiet, min(n, len(quiet)))
        return [ContextExample(self.tokens[p], [0.0] * len(self.tokens[p])) for p in picked]


def pool_contexts(store: Store, n: int, length: int, seed: int) -> list[list[int]]:
    """Token ids of up to n contexts of the store, drawn at random (repeatably), each longer than `length`."""
    with store.reader(timeout_s=120) as r:
        rows = r.cur.execute(
            f"SELECT token_ids FROM contexts WHERE len(token_ids) > ? USING SAMPLE reservoir({int(n)} ROWS) "
            f"REPEATABLE ({int(seed)})",
            [length],
        ).fetchall()
    return [list(ids) for (ids,) in rows]


@torch.no_grad()
def build_pool(
    store: Store,
    sae_ids: Sequence[str],
    n: int = 256,
    length: int = 21,
    seed: int = 0,
    device: str = "auto",
    batch: int = 32,
) -> NegativePool:
    """Run the store's model and the named SAEs on a pool of n windows (raises when they cannot be loaded)."""
    source = store.model_source
    if not source:
        raise RuntimeError(f"{store.path.name} does not record the model it was harvested from")
    lm = load_model(source, device=device)
    infos = [store.saes[s] for s in sae_ids]
    saes = {i.sae_id: load_sae(i.source, k=i.k, layer=i.layer, device=lm.device) for i in infos}
    rng = random.Random(seed)
    contexts = pool_contexts(store, n, length, seed)
    starts = [rng.randrange(1, len(ids) - length + 1) for ids in contexts]
    fires = {s: torch.zeros((len(contexts), saes[s].d_sae), dtype=torch.bool) for s in sae_ids}
    sites = list(dict.fromkeys(s.require_site() for s in saes.values()))
    by_length: dict[int, list[int]] = {}
    for p, ids in enumerate(contexts):  # batches of equal length: no padding, which would change what runs
        by_length.setdefault(len(ids), []).append(p)
    for same in by_length.values():
        for b in range(0, len(same), batch):
            rows = same[b : b + batch]
            hidden = capture(lm.model, sites, torch.tensor([contexts[p] for p in rows]))
            for sae_id, sae in saes.items():
                h_NTD = hidden[sae.require_site()]
                h_BTD = torch.stack([h_NTD[i, starts[p] : starts[p] + length] for i, p in enumerate(rows)])
                f_BTF = sae.encode(h_BTD.to(sae.W_enc.dtype))
                fires[sae_id][rows] = (f_BTF > 0).any(1).cpu()
    tokens = [store.decode(ids[s : s + length]) for ids, s in zip(contexts, starts, strict=True)]
    return NegativePool(tokens, fires)
