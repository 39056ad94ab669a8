"""Every SAE's tables after the pass, phase by phase: logit effects, neighbors, labels, cards.

The single-process harvest has every SAE at hand and runs each phase over all of them before the next (its
progress reads phase after phase); the sharded harvest finishes one SAE at a time (bounded memory) and runs
the phases SAE by SAE. Both give the same tables: each phase of an SAE depends only on that SAE, its state and
the SAEs it lists neighbors in, and neighbor products are shared through one PairCache whatever the order.
Each phase shows its progress and time (qscope.progress); the cards are built on several processes
(qscope.store.card_pool).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from qscope.harvest.effects import LogitEffects, logit_effects, make_label, marked_texts, top_marked_tokens
from qscope.harvest.feed import few_threads
from qscope.harvest.neighbors import Neighbors, PairCache
from qscope.harvest.state import HIST_EDGES, FeatureState
from qscope.harvest.tables import (
    MARKED_TOKENS,
    context_columns,
    feature_columns,
    logit_columns,
    neighbor_columns,
    neighbor_saes,
)
from qscope.progress import Advance, PhaseProgress
from qscope.sae import Sae
from qscope.store.card_pool import build_cards_parallel
from qscope.store.writer import Columns, SaeTables, sorted_by_feature

AFTER_PASS = ("logit effects", "neighbors", "labels", "cards", "write")
PHASES = ("pass", *AFTER_PASS, "index")  # every phase of a harvest, in the order it meets them


@dataclass
class TableWork:
    """How the tables are built: progress, shared neighbor products, card workers, and which top contexts are
    kept (context_columns: with dedup > 0, near-identical ones count once and up to top_k distinct remain)."""

    phases: PhaseProgress = field(default_factory=PhaseProgress.quiet)
    pairs: PairCache = field(default_factory=PairCache)
    card_workers: int = 0  # processes building cards (0: qscope.store.card_pool.default_workers())
    top_k: int | None = None  # top contexts kept per feature (None: as many as the state follows)
    dedup: float = 0.0  # HarvestOptions.dedup (0 keeps every top context)


@dataclass
class SaeInput:
    """One SAE's part of the job: the SAE, its final state, its `saes` row and the SAEs it lists neighbors in."""

    sae: Sae
    state: FeatureState
    info: dict
    others: Sequence[tuple[str, Sae]] = ()


def declare_phases(phases: PhaseProgress, n_features: int) -> None:
    """The phases after the pass, each of n_features features (every SAE's together)."""
    for name in AFTER_PASS:
        phases.add(name, n_features, "features")


def format_phases(seconds: dict[str, float]) -> str:
    """'pass 12.3 s, logit effects 1.2 s, ...' in PHASES order (phases that did not run are left out)."""
    names = [n for n in PHASES if n in seconds] + [n for n in seconds if n not in PHASES]
    return ", ".join(f"{n} {seconds[n]:.1f} s" for n in names)


def scaled(advance: Advance, n: float) -> Advance:
    """advance(n x fraction): a writer's fraction of one SAE, counted in its features."""

    def step(fraction: float) -> None:
        advance(n * fraction)

    return step


class _SaeBuild:
    """One SAE's tables in the making; one method per phase, called in order."""

    def __init__(self, inp: SaeInput, work: TableWork) -> None:
        self.inp, self.work, self.F = inp, work, inp.sae.d_sae
        self.eff: LogitEffects | None = None
        self.found: list[tuple[str, Neighbors]] = []
        self.tables: SaeTables | None = None

    def effects(self, W_U_VD: Tensor, n_logit: int) -> None:
        with self.work.phases.run("logit effects") as advance:
            self.eff = logit_effects(self.inp.sae.decoder_directions, W_U_VD, n_logit, advance)

    def neighbors(self, n_within: int, n_cross: int) -> None:
        sae, sae_id = self.inp.sae, self.inp.info["sae_id"]
        lists = [(sae_id, sae), *self.inp.others]
        with self.work.phases.run("neighbors") as advance:
            for k, (other_id, other) in enumerate(lists):
                n = n_within if k == 0 else n_cross
                mine, theirs = (sae_id, sae.decoder_directions), (other_id, other.decoder_directions)
                part = _share(advance, self.F / len(lists))
                self.found.append((other_id, self.work.pairs.nearest(mine, theirs, n, n_cross, part)))

    def labels(self, windows_NT: Tensor, vocab: Sequence[str | bytes]) -> None:
        state, eff = self.inp.state, self.eff
        assert eff is not None
        # small CPU steps (gathers and sorts of the contexts): one thread, as the pass's bookkeeping (feed.py)
        with self.work.phases.run("labels") as advance, few_threads(torch.device("cpu")):
            contexts = context_columns(state, windows_NT, self.work.top_k, self.work.dedup)
            is_top = contexts["kind"] == 0
            tok_at_max = torch.from_numpy(contexts["token_ids"][is_top, contexts["pos"][is_top]])
            feature_top = torch.from_numpy(contexts["feature"][is_top])
            marked_FN = top_marked_tokens(feature_top, tok_at_max, self.F, MARKED_TOKENS)
            at_max = _characters_at_max(contexts, is_top, vocab)
            labels = [
                make_label([t for t in m if t >= 0], top_ids, vocab, at_max=at_max.get(f))
                for f, (m, top_ids) in enumerate(zip(marked_FN.tolist(), eff.top_ids_FL.tolist(), strict=True))
            ]
            advance(self.F)
        dead = int((state.n_fired_F == 0).sum())
        row = dict(self.inp.info, tokens=state.n_tokens, dead=dead, hist_edges=HIST_EDGES.double().tolist())
        features: Columns = feature_columns(state, labels, marked_FN)
        self.tables = SaeTables(row, features, contexts, logit_columns(eff), neighbor_columns(self.found))

    def cards(self) -> SaeTables:
        t = self.tables
        assert t is not None
        with self.work.phases.run("cards") as advance:
            logits, neighbors = sorted_by_feature(t.logits), sorted_by_feature(t.neighbors)
            t.cards = build_cards_parallel(t.features, t.contexts, logits, neighbors, self.work.card_workers, advance)
        return t


def _characters_at_max(
    contexts: Columns, is_top: np.ndarray, vocab: Sequence[str | bytes]
) -> dict[int, dict[int, str]]:
    """feature -> {token id: the character it is part of at the max} for marked tokens holding part of one
    (marked_texts), so a label reads '日', not the bytes of half of it."""
    texts = marked_texts(
        contexts["feature"][is_top],
        contexts["token_ids"][is_top],
        contexts["pos"][is_top],
        contexts["length"][is_top],
        vocab,
    )
    by_feature: dict[int, dict[int, str]] = {}
    for (f, token), text in texts.items():
        by_feature.setdefault(f, {})[token] = text
    return by_feature


def _share(advance, scale: float):
    """advance(scale x fraction): a neighbor list's fraction of the work, in features."""
    return lambda fraction: advance(scale * fraction)


def build_tables(
    inputs: Sequence[SaeInput],
    windows_NT: Tensor,
    W_U_VD: Tensor,
    vocab: Sequence[str | bytes],
    opts_tokens: tuple[int, int, int],
    work: TableWork | None = None,
) -> list[SaeTables]:
    """Every SAE's tables, phase after phase over all of them. opts_tokens = (logit tokens, neighbors within,
    neighbors in each other SAE)."""
    n_logit, n_within, n_cross = opts_tokens
    work = work or TableWork()
    vocab = list(vocab)
    builds = [_SaeBuild(inp, work) for inp in inputs]
    for b in builds:
        b.effects(W_U_VD, n_logit)
    for b in builds:
        b.neighbors(n_within, n_cross)
    for b in builds:
        b.labels(windows_NT, vocab)
    return [b.cards() for b in builds]


def sae_tables(
    inp: SaeInput,
    windows_NT: Tensor,
    W_U_VD: Tensor,
    vocab: Sequence[str | bytes],
    opts_tokens: tuple[int, int, int],
    work: TableWork | None = None,
) -> SaeTables:
    """One SAE's tables, every phase (the sharded harvest's finish, one SAE at a time)."""
    return build_tables([inp], windows_NT, W_U_VD, vocab, opts_tokens, work)[0]


def job_inputs(saes: Sequence[Sae], sae_ids: Sequence[str], states: Sequence[FeatureState], infos: Sequence[dict]):
    """SaeInputs of a single-process job: neighbors listed in the SAEs of the nearest layers (neighbor_saes)."""
    layers = [s.layer for s in saes]
    return [
        SaeInput(sae, state, infos[i], [(sae_ids[j], saes[j]) for j in neighbor_saes(layers, i)])
        for i, (sae, state) in enumerate(zip(saes, states, strict=True))
    ]
