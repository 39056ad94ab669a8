"""Example texts through the model and every SAE, in batches: per-example activations pooled over the tokens
that count (max and mean), per-feature totals for footprints, and token-level activations for detectors.

Examples are tokenized without special tokens (as /inspect does), cut to a token limit (and counted), sorted by
length and packed into right-padded batches of at most `batch_tokens` tokens, so one forward serves many short
examples. The tokens that count are those the harvest ranks: not position 0 (unless it is the only
token) and not high-norm sinks, judged at each SAE's own site (as the harvest does) against the median norm of
the example's own tokens, so an example gets the same values whatever else shares its batch and whichever other
SAEs run beside. Each batch is run under the live model's lock
(other requests interleave between batches); a set `cancel` event stops the run before the next batch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from qscope.jobs import Cancelled
from qscope.model import capture
from qscope.residual import counted_mask, pooled_mean
from qscope.sae import Sae

Progress = Callable[[str, int, int], None]  # (phase, done, total)


@dataclass
class Encoded:
    """Token ids of every example, cut to max_tokens; `cut` marks the examples that were longer."""

    ids: list[list[int]]
    cut: list[bool]
    max_tokens: int

    @property
    def truncated(self) -> int:
        return sum(self.cut)

    @property
    def n_tokens(self) -> int:
        return sum(map(len, self.ids))


def tokenize(tokenizer, texts: Sequence[str], max_tokens: int) -> Encoded:
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []
    return Encoded([list(x[:max_tokens]) for x in ids], [len(x) > max_tokens for x in ids], max_tokens)


@dataclass
class ActivationRunner:
    """What a run needs: the model, the SAEs to encode with, and how tokens are counted and batched."""

    model: nn.Module
    saes: Mapping[str, Sae]
    skip_first: bool = True
    sink_norm_ratio: float = 10.0
    batch_tokens: int = 4096  # padded tokens per forward
    max_batch: int = 64
    lock: threading.Lock | None = None  # the live model's lock, held for each batch
    pad_id: int = 0


@dataclass
class Batch:
    """One forward's worth of examples; `feats(sae_id)` encodes one SAE at a time, so a release of many wide
    SAEs never holds all their dense activations at once."""

    index: np.ndarray  # int [B] example indices
    lengths: list[int]
    hidden: dict[str, Tensor]  # site -> [B, T, D]
    counted: dict[str, Tensor]  # sae_id -> bool [B, T]: the tokens that count at that SAE's site
    saes: Mapping[str, Sae]

    def feats(self, sae_id: str) -> Tensor:
        """Dense activations [B, T, F] of one SAE."""
        sae = self.saes[sae_id]
        with torch.no_grad():
            return sae.encode(self.hidden[sae.require_site()])


def plan(ids: Sequence[Sequence[int]], batch_tokens: int, max_batch: int) -> list[list[int]]:
    """Groups of example indices, longest first, each at most batch_tokens once padded."""
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    groups: list[list[int]] = []
    for i in order:
        if not ids[i]:
            continue
        group = groups[-1] if groups else None
        width = len(ids[group[0]]) if group else 0  # the first of a group is its longest
        if group and len(group) < max_batch and width * (len(group) + 1) <= batch_tokens:
            group.append(i)
        else:
            groups.append([i])
    return groups


def iter_batches(
    runner: ActivationRunner,
    ids: Sequence[Sequence[int]],
    sae_ids: Sequence[str] | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> Iterator[Batch]:
    """One Batch per planned group, for the SAEs asked for (default: all). The forward runs under the model's
    lock; the encodes happen as the consumer asks, outside it."""
    saes = {s: runner.saes[s] for s in (sae_ids if sae_ids is not None else runner.saes)}
    sites = list(dict.fromkeys(s.require_site() for s in saes.values()))
    groups = plan(ids, runner.batch_tokens, runner.max_batch)
    total, done = sum(len(ids[i]) for g in groups for i in g), 0
    device = next(runner.model.parameters()).device
    for group in groups:
        if cancel is not None and cancel.is_set():
            raise Cancelled("cancelled")
        lengths = [len(ids[i]) for i in group]
        input_BT = torch.full((len(group), lengths[0]), runner.pad_id, dtype=torch.long)
        attn_BT = torch.zeros_like(input_BT)
        for row, i in enumerate(group):
            input_BT[row, : lengths[row]] = torch.tensor(ids[i])
            attn_BT[row, : lengths[row]] = 1
        with runner.lock or nullcontext(), torch.no_grad():
            hidden = capture(runner.model, sites, input_BT.to(device), attn_BT.to(device))
            masks = {
                site: counted_mask(hidden[site], lengths, runner.skip_first, runner.sink_norm_ratio) for site in sites
            }
        counted = {sid: masks[sae.require_site()] for sid, sae in saes.items()}
        yield Batch(np.asarray(group), lengths, hidden, counted, saes)
        done += sum(lengths)
        if progress is not None:
            progress("forward + encode (tokens)", done, total)


@dataclass
class Pooled:
    """Per-example activations over the tokens that count: max and mean, float32 [E, F] per SAE."""

    max: dict[str, np.ndarray]
    mean: dict[str, np.ndarray]
    n_counted: dict[str, np.ndarray]  # sae_id -> int32 [E] tokens that counted per example
    seconds: float = 0.0
    residual: dict[str, np.ndarray] = field(default_factory=dict)  # site -> float32 [E, D]: mean over counted tokens

    def matrix(self, kind: str = "max") -> tuple[np.ndarray, list[tuple[str, int]]]:
        """All SAEs side by side: float32 [E, sum F] and the (sae_id, feature) of each column."""
        parts = self.max if kind == "max" else self.mean
        keys = [(sae_id, f) for sae_id, m in parts.items() for f in range(m.shape[1])]
        return np.concatenate(list(parts.values()), axis=1), keys


def pool(
    runner: ActivationRunner,
    ids: Sequence[Sequence[int]],
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> Pooled:
    """Max and mean activation of every feature of every SAE on every example."""
    start = time.perf_counter()
    E = len(ids)
    out_max = {s: np.zeros((E, sae.d_sae), np.float32) for s, sae in runner.saes.items()}
    out_mean = {s: np.zeros((E, sae.d_sae), np.float32) for s, sae in runner.saes.items()}
    n_counted = {s: np.zeros(E, np.int32) for s in runner.saes}
    reader_of = {sae.require_site(): s for s, sae in runner.saes.items()}  # site -> an SAE there (its counted mask)
    residual: dict[str, np.ndarray] = {}
    for batch in iter_batches(runner, ids, progress=progress, cancel=cancel):
        for site, sae_id in reader_of.items():  # the residual itself, for the baselines (qscope.discover.baselines)
            if site in batch.hidden:
                mean_BD = pooled_mean(batch.hidden[site], batch.counted[sae_id])
                residual.setdefault(site, np.zeros((E, mean_BD.shape[-1]), np.float32))[batch.index] = (
                    mean_BD.cpu().numpy()
                )
        for sae_id in runner.saes:
            f_BTF, m_BT = batch.feats(sae_id), batch.counted[sae_id]
            n_B = m_BT.sum(1)
            n_counted[sae_id][batch.index] = n_B.cpu().numpy()
            f_BTF = f_BTF.float().masked_fill(~m_BT[..., None], 0.0)  # activations are >= 0: zero is neutral for max
            out_max[sae_id][batch.index] = f_BTF.amax(1).cpu().numpy()
            out_mean[sae_id][batch.index] = (f_BTF.sum(1) / n_B.clamp(min=1)[:, None]).cpu().numpy()
    return Pooled(out_max, out_mean, n_counted, time.perf_counter() - start, residual)


def reader_at(runner: ActivationRunner, site: str) -> str:
    """An SAE of the runner at `site`: its counted mask is the site's (it depends on the residual, not the SAE)."""
    found = [s for s, sae in runner.saes.items() if sae.require_site() == site]
    if not found:
        raise ValueError(f"no SAE of this model reads {site!r}; the sites here: {sorted(sites_of(runner))}")
    return found[0]


def sites_of(runner: ActivationRunner) -> list[str]:
    return list(dict.fromkeys(sae.require_site() for sae in runner.saes.values()))


def residual_means(
    runner: ActivationRunner, ids: Sequence[Sequence[int]], site: str, cancel: threading.Event | None = None
) -> np.ndarray:
    """float32 [E, D]: every example's residual at `site` averaged over its counted tokens, as `pool` reads it
    for the baselines (no SAE is encoded)."""
    reader = reader_at(runner, site)
    out: np.ndarray | None = None
    for batch in iter_batches(runner, ids, [reader], cancel=cancel):
        mean_BD = pooled_mean(batch.hidden[site], batch.counted[reader]).cpu().numpy()
        if out is None:
            out = np.zeros((len(ids), mean_BD.shape[-1]), np.float32)
        out[batch.index] = mean_BD
    return out if out is not None else np.zeros((0, 0), np.float32)


def token_residuals(
    runner: ActivationRunner, ids: Sequence[Sequence[int]], site: str, cancel: threading.Event | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per example: its residual at `site` on each token (float32 [T, D]) and whether each token counts (bool [T])."""
    reader = reader_at(runner, site)
    out: list[tuple[np.ndarray, np.ndarray]] = [(np.zeros((0, 0), np.float32), np.zeros(0, bool))] * len(ids)
    for batch in iter_batches(runner, ids, [reader], cancel=cancel):
        h_BTD, m_BT = batch.hidden[site].float().cpu().numpy(), batch.counted[reader].cpu().numpy()
        for row, (i, n) in enumerate(zip(batch.index, batch.lengths, strict=True)):
            out[i] = (h_BTD[row, :n], m_BT[row, :n])
    return out


@dataclass
class TokenActs:
    """One example's token-level activations of chosen features: float32 [T, N], and where they count."""

    acts: np.ndarray
    counted: np.ndarray  # bool [T, N]: the token counts at that feature's SAE site


def token_acts(
    runner: ActivationRunner,
    ids: Sequence[Sequence[int]],
    features: Sequence[tuple[str, int]],
    cancel: threading.Event | None = None,
) -> list[TokenActs]:
    """Every example's activations of `features` [(sae_id, feature)] on each of its tokens."""
    sae_ids = list(dict.fromkeys(s for s, _ in features))
    out = [
        TokenActs(np.zeros((len(x), len(features)), np.float32), np.zeros((len(x), len(features)), bool)) for x in ids
    ]
    for batch in iter_batches(runner, ids, sae_ids, cancel=cancel):
        encoded = {s: batch.feats(s) for s in sae_ids}
        cols = [encoded[s][:, :, f].float().cpu().numpy() for s, f in features]  # each [B, T]
        masks = [batch.counted[s].cpu().numpy() for s, _ in features]
        for row, (i, n) in enumerate(zip(batch.index, batch.lengths, strict=True)):
            if cols:
                out[i].acts[:] = np.stack([c[row, :n] for c in cols], axis=1)
                out[i].counted[:] = np.stack([m[row, :n] for m in masks], axis=1)
    return out


@dataclass
class Totals:
    """Per feature of every SAE, over a set of examples: on how many it fires, and its summed activation."""

    fired: dict[str, np.ndarray]  # int64 [F] examples where the feature fires on a counted token
    mass: dict[str, np.ndarray]  # float64 [F] activation summed over every counted token
    n_examples: int
    n_tokens: int  # tokens run


def totals(
    runner: ActivationRunner,
    ids: Sequence[Sequence[int]],
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> Totals:
    """Streaming per-feature totals (nothing per example is kept: fit for large datasets)."""
    fired = {s: np.zeros(sae.d_sae, np.int64) for s, sae in runner.saes.items()}
    mass = {s: np.zeros(sae.d_sae, np.float64) for s, sae in runner.saes.items()}
    n_tokens = 0
    for batch in iter_batches(runner, ids, progress=progress, cancel=cancel):
        n_tokens += sum(batch.lengths)
        for sae_id in runner.saes:
            f_BTF = batch.feats(sae_id).float().masked_fill(~batch.counted[sae_id][..., None], 0.0)
            fired[sae_id] += (f_BTF.amax(1) > 0).sum(0).cpu().numpy()
            mass[sae_id] += f_BTF.sum((0, 1)).double().cpu().numpy()
    return Totals(fired, mass, len(ids), n_tokens)
