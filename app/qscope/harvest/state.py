"""FeatureState: what the harvest keeps per feature of one SAE, in O(top_k x d_sae) memory, updated in batches.

Per feature f (F = d_sae; every update is vectorised over the whole SAE, on the SAE's device):

- counts over ranked tokens: n_fired (act > 0; the histogram's total), sum and max of the activation;
  n_tokens counts ranked tokens;
- hist: counts per bin of the fixed log-spaced edges HIST_EDGES, 2^(i/4) from 2^-12 to 2^16 (a bin holds
  [edge_i, edge_i+1); the first bin also holds smaller values, the last larger ones);
- top: the top_k strongest (window, pos) with at most one entry per window (the window's max token, the
  earliest on a tie), ties between windows broken by the lower window index;
- interval: SAEDashboard's equal-width bins, sampled exactly. The scale S_f is the smallest power of two
  strictly above f's running max; n_bins bins of width S_f / n_bins cover [0, S_f); each keeps per_bin
  entries with the smallest uniform random keys (priority sampling = a uniform sample of the bin). When the max
  passes S_f, S_f doubles and bin j of the new scale is the union of old bins 2j and 2j + 1: its entries are
  the per_bin smallest keys of that union, so each bin stays an exact uniform sample of all tokens in it.
  At the end bins 0 .. floor(max * n_bins / S_f) cover [0, max]: between n_bins / 2 + 1 and n_bins bins.

Every entry carries the feature's activations on [pos - before, pos + after] of its window (zeros outside),
taken from the batch at insert time. Random keys come from key_generator(seed, batch, ...), so a run, a
resumed run and a merge of partial runs all give the same state.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from qscope.harvest.reservoir import Reservoir

HIST_PER_OCTAVE, HIST_FIRST, HIST_LAST = 4, -48, 64  # edges 2^(i/4) for i in -48..64
HIST_EDGES = (2.0 ** (torch.arange(HIST_FIRST, HIST_LAST + 1, dtype=torch.float64) / HIST_PER_OCTAVE)).float()
KEY_HIGH = 2**62  # interval keys are uniform in [0, KEY_HIGH)
_MAX_WINDOW = 2**32  # top keys pack the window index in 32 bits


@dataclass(frozen=True)
class StateSpec:
    d_sae: int
    ctx: int  # tokens per window; updates take whole windows
    top_k: int = 32
    before: int = 32  # tokens kept before the marked token
    after: int = 8  # and after it
    n_bins: int = 16  # interval bins
    per_bin: int = 5  # interval samples per bin

    @property
    def width(self) -> int:
        return self.before + 1 + self.after


def next_pow2_above(x_F: Tensor) -> Tensor:
    """The smallest power of two strictly greater than x; 0 where x <= 0."""
    _, exp_F = torch.frexp(x_F)  # x = m * 2^exp with m in [0.5, 1), so 2^exp > x >= 2^(exp - 1)
    return torch.where(x_F > 0, torch.ldexp(torch.ones_like(x_F), exp_F), torch.zeros_like(x_F))


def interval_bin(act_M: Tensor, scale_M: Tensor, n_bins: int) -> Tensor:
    """Bin of each activation on its feature's scale (exact: scale is a power of two)."""
    return (act_M * (n_bins / scale_M)).floor().long().clamp_(0, n_bins - 1)


def hist_bin(act_M: Tensor, edges_H1: Tensor) -> Tensor:
    """Bin of each positive activation on HIST_EDGES: i with edge_i <= act < edge_i+1, clamped into the first
    and last bins. log2 gives the bin up to float rounding; one comparison with each edge makes it exact."""
    last = len(edges_H1) - 2
    bin_M = ((act_M.log2() * HIST_PER_OCTAVE).floor_() - HIST_FIRST).clamp_(0, last).long()
    bin_M -= (act_M < edges_H1[bin_M]).long()
    bin_M += (act_M >= edges_H1[bin_M + 1]).long()
    return bin_M.clamp_(0, last)


def fired_index(acts_flat: Tensor) -> Tensor:
    """Indices of the positive entries of a flat tensor (on the CPU numpy's scan is about 3x torch's)."""
    if acts_flat.device.type == "cpu" and acts_flat.dtype in (torch.float32, torch.float64):
        return torch.from_numpy(np.flatnonzero(acts_flat.numpy() > 0))
    return (acts_flat > 0).nonzero().squeeze(1)


def top_key(act_E: Tensor, window_E: Tensor) -> Tensor:
    """int64 keys ordering entries by activation descending, then window ascending (unique per window)."""
    bits_E = act_E.float().contiguous().view(torch.int32).long()  # increasing in the value for act > 0
    return ((0x7FFFFFFF - bits_E) << 32) | window_E


def key_generator(seed: int, *parts: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator seeded from (seed, *parts), e.g. (seed, batch, sae, chunk): reproducible, independent."""
    digest = hashlib.blake2b(repr((seed, *parts)).encode(), digest_size=8).digest()
    gen = torch.Generator(device=device)
    gen.manual_seed(int.from_bytes(digest, "little") >> 1)
    return gen


class FeatureState:
    """Running statistics, top contexts and interval samples of every feature of one SAE."""

    def __init__(self, spec: StateSpec, device: torch.device | str = "cpu") -> None:
        self.spec, self.device, F = spec, torch.device(device), spec.d_sae
        self.n_tokens = 0
        self.sum_F = torch.zeros(F, dtype=torch.float64, device=device)
        self.max_F = torch.zeros(F, dtype=torch.float32, device=device)
        self.hist_FH = torch.zeros(F, len(HIST_EDGES) - 1, dtype=torch.int64, device=device)
        self.scale_F = torch.zeros(F, dtype=torch.float32, device=device)
        payload = {
            "acts": ((spec.width,), torch.float32),
            "window": ((), torch.int64),
            "pos": ((), torch.int32),
            "act": ((), torch.float32),
        }
        self.top = Reservoir(F, spec.top_k, payload, device)
        self.interval = Reservoir(F * spec.n_bins, spec.per_bin, payload, device)
        self._edges = HIST_EDGES.to(device)
        self._offsets_W = torch.arange(-spec.before, spec.after + 1, device=device)

    @property
    def n_fired_F(self) -> Tensor:
        """Tokens on which each feature fired: every firing lands in exactly one histogram bin."""
        return self.hist_FH.sum(1)

    def update(self, acts_NF: Tensor, valid_N: Tensor, window0: int, gen: torch.Generator) -> None:
        """Add whole windows: row r of acts_NF is token r % ctx of corpus window window0 + r // ctx.
        Tokens where valid_N is False (position 0, sinks) count nowhere and are never a marked token."""
        T, n = self.spec.ctx, acts_NF.shape[0]
        if n % T or acts_NF.shape[1] != self.spec.d_sae or window0 + n // T > _MAX_WINDOW:
            raise ValueError(f"update takes whole windows of {T} tokens x {self.spec.d_sae} features")
        self.n_tokens += int(valid_N.sum())
        F = self.spec.d_sae
        acts_flat = acts_NF.reshape(-1)
        idx_M = fired_index(acts_flat)  # entries that fired, token-major
        tok_M = idx_M // F
        keep_M = valid_N[tok_M]
        idx_M, tok_M = idx_M[keep_M], tok_M[keep_M]
        f_M, a_M = idx_M - tok_M * F, acts_flat.take(idx_M).float()
        self.sum_F.index_add_(0, f_M, a_M.double())
        self.max_F.scatter_reduce_(0, f_M, a_M, "amax")
        self.hist_FH.view(-1).index_add_(
            0, f_M * self.hist_FH.shape[1] + hist_bin(a_M, self._edges), torch.ones_like(f_M)
        )

        def payload(tok_E: Tensor, f_E: Tensor, a_E: Tensor) -> dict[str, Tensor]:
            t_E = tok_E % T
            p_EW = t_E[:, None] + self._offsets_W
            rows_EW = (tok_E - t_E)[:, None] + p_EW.clamp(0, T - 1)
            acts_EW = acts_flat.take(rows_EW * F + f_E[:, None]).float()
            acts_EW.masked_fill_((p_EW < 0) | (p_EW >= T), 0.0)
            return {"acts": acts_EW, "window": window0 + tok_E // T, "pos": t_E.int(), "act": a_E}

        self._offer_top(tok_M, f_M, a_M, n // T, window0, payload)
        self._rescale(next_pow2_above(self.max_F))
        nb = self.spec.n_bins
        seg_M = f_M * nb + interval_bin(a_M, self.scale_F[f_M], nb)
        key_M = torch.randint(0, KEY_HIGH, seg_M.shape, generator=gen, device=self.device)
        self.interval.offer(seg_M, key_M, lambda i: payload(tok_M[i], f_M[i], a_M[i]))

    def _offer_top(self, tok_M: Tensor, f_M: Tensor, a_M: Tensor, n_w: int, window0: int, payload) -> None:
        """Offer each (feature, window)'s max token to the top reservoir."""
        T, n_cells = self.spec.ctx, self.spec.d_sae * n_w
        cell_M = f_M * n_w + tok_M // T
        best_C = a_M.new_zeros(n_cells).scatter_reduce_(0, cell_M, a_M, "amax")
        at_best_M = a_M == best_C[cell_M]
        pos_C = torch.full((n_cells,), n_w * T, dtype=torch.int64, device=self.device)
        pos_C.scatter_reduce_(0, cell_M[at_best_M], tok_M[at_best_M], "amin")
        cell_E = (best_C > 0).nonzero().squeeze(1)
        f_E, tok_E, a_E = cell_E // n_w, pos_C[cell_E], best_C[cell_E]
        key_E = top_key(a_E, window0 + tok_E // T)
        self.top.offer(f_E, key_E, lambda i: payload(tok_E[i], f_E[i], a_E[i]))

    def _rescale(self, scale_F: Tensor) -> None:
        """Move to new interval scales: re-bin the kept samples of every feature whose scale grew."""
        nb = self.spec.n_bins
        grown_G = ((scale_F != self.scale_F) & (self.scale_F > 0)).nonzero().squeeze(1)
        if grown_G.numel():
            segs = (grown_G[:, None] * nb + torch.arange(nb, device=self.device)).flatten()
            seg_E, key_E, kept = self.interval.entries(segs)
            self.interval.clear(segs)
            f_E = seg_E // nb
            self.interval.offer_entries(f_E * nb + interval_bin(kept["act"], scale_F[f_E], nb), key_E, kept)
        self.scale_F = scale_F

    def merge(self, other: FeatureState) -> None:
        """Fold in a state built from other windows (same spec): afterwards self is the state of both."""
        if other.spec != self.spec:
            raise ValueError(f"cannot merge states of different specs: {self.spec} and {other.spec}")
        dev = self.device
        self.n_tokens += other.n_tokens
        self.sum_F += other.sum_F.to(dev)
        self.hist_FH += other.hist_FH.to(dev)
        self.max_F = torch.maximum(self.max_F, other.max_F.to(dev))
        seg_E, key_E, kept = _on(dev, *other.top.entries())
        self.top.offer_entries(seg_E, key_E, kept)
        self._rescale(next_pow2_above(self.max_F))
        nb = self.spec.n_bins
        seg_E, key_E, kept = _on(dev, *other.interval.entries())
        f_E = seg_E // nb
        self.interval.offer_entries(f_E * nb + interval_bin(kept["act"], self.scale_F[f_E], nb), key_E, kept)

    def state_dict(self) -> dict[str, Tensor]:
        """Every tensor of the state (for checkpoints); load_state_dict restores it exactly."""
        return {
            "n_tokens": torch.tensor(self.n_tokens),
            "sum": self.sum_F,
            "max": self.max_F,
            "hist": self.hist_FH,
            "scale": self.scale_F,
            **{f"top.{k}": v for k, v in self.top.state_dict().items()},
            **{f"interval.{k}": v for k, v in self.interval.state_dict().items()},
        }

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        dev = self.device
        if tuple(state["hist"].shape) != tuple(self.hist_FH.shape):
            raise ValueError(f"state for {tuple(state['hist'].shape)} features x bins, not {self.hist_FH.shape}")
        self.n_tokens = int(state["n_tokens"])
        self.sum_F = state["sum"].to(dev).clone()
        self.max_F, self.hist_FH = state["max"].to(dev).clone(), state["hist"].to(dev).clone()
        self.scale_F = state["scale"].to(dev).clone()
        for name, res in (("top", self.top), ("interval", self.interval)):
            prefix = f"{name}."
            res.load_state_dict({k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)})


def _on(device: torch.device, seg_E: Tensor, key_E: Tensor, kept: dict[str, Tensor]):
    return seg_E.to(device), key_E.to(device), {k: v.to(device) for k, v in kept.items()}
