"""Steering math: resolve a spec's features into `Edit`s and apply them to one site's hidden state, per row.

Modes (strength units in qscope.steer.spec):
  add       h += strength * max_act(f) * unit(W_dec[f])
  clamp     h += (decode(f') - decode(f)) / gain with f'[feat] = strength * max_act(f)
  multiply  the same with f'[feat] = strength * f[feat]
  ablate    the same with f'[feat] = 0
  subtract  h -= f[feat] * W_dec[feat] (no gain): exactly the feature's own contribution, what an attribution
            (qscope.live.attribute) estimates the effect of
  add along a raw direction v (Edit.vector, feature -1; qscope.steer.evaluate.diffmean): h += value * unit(v)
decode is affine, so decode(f') - decode(f) = (f'[feat] - f[feat]) * W_dec[feat]: h only moves along the
feature's decoder direction and the SAE error term is kept. gain = W_enc[:, feat] . W_dec[feat] is how much
the encoder's pre-activation moves per unit of that direction; a real SAE has gain < 1 (the mini-Qwen's are
about 0.7), so the plain formula leaves an ablated feature still firing at ~30% when the edited state is
encoded again. Dividing by the gain makes the re-encoded activation exactly the target where the feature
fired (ablate gives 0); with gain 1 it is the plain formula. `subtract` is the plain formula on purpose: it removes
what the feature adds to the reconstruction and no more, so "suppress what was attributed" removes what was
attributed (ablate removes 1 / gain times that: 1.3-2.1x on the mini-Qwen). Every edit on a site is computed from
the same (unsteered) h.

Shapes: B rows, T positions, D = d_model, F = d_sae, N rows that need an encode.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from qscope.sae import Sae
from qscope.steer.spec import FeatureSteer, Mode, SpecError


@dataclass(frozen=True)
class Edit:
    """One feature edit of one row, with the number its mode needs."""

    sae: Sae
    feature: int
    mode: Mode
    value: float  # add: coefficient on the unit direction; clamp: target activation; multiply: factor; ablate: 0
    start: int = 0  # first token position (0 = the first prompt token) the edit applies to
    vector: Tensor | None = None  # an `add` along this raw direction [D] instead of the feature's (feature -1)


def resolve_edits(
    features: Sequence[FeatureSteer], saes: dict[str, Sae], max_act: Callable[[str, int], float]
) -> dict[str, list[Edit]]:
    """{site: edits} for the requested features; SpecError for an unknown SAE or feature."""
    out: dict[str, list[Edit]] = {}
    for fs in features:
        sae = saes.get(fs.sae_id)
        if sae is None:
            raise SpecError(f"no SAE {fs.sae_id!r} for this model; it has {', '.join(saes) or 'none'}")
        if fs.feature >= sae.d_sae:
            raise SpecError(f"feature {fs.feature} is out of range: {fs.sae_id} has features 0..{sae.d_sae - 1}")
        scale = max_act(fs.sae_id, fs.feature) if fs.mode in ("add", "clamp") else 1.0
        value = {"add": fs.strength * scale, "clamp": fs.strength * scale, "multiply": fs.strength}.get(fs.mode, 0.0)
        out.setdefault(sae.require_site(), []).append(Edit(sae, fs.feature, fs.mode, value, fs.from_position))
    return out


def unit_direction(sae: Sae, feature: int) -> Tensor:
    """unit(W_dec[feature]) [D]."""
    return unit_vector(sae.decoder_directions[feature])


def unit_vector(v_D: Tensor) -> Tensor:
    """v_D / |v_D| [D]."""
    return v_D / v_D.norm().clamp_min(1e-12)


def encoder_gain(sae: Sae, feature: int) -> float:
    """W_enc[:, feature] . W_dec[feature]; 1.0 where that is not a usable gain (gated SAEs, tiny or negative)."""
    if sae.architecture == "gated":
        return 1.0
    gain = float(sae.W_enc[:, feature].float() @ sae.decoder_directions[feature].float())
    return gain if gain > 0.05 else 1.0


def _target(mode: Mode, value: float, act_NT: Tensor) -> Tensor:
    if mode == "clamp":
        return torch.full_like(act_NT, value)
    if mode == "multiply":
        return act_NT * value
    return torch.zeros_like(act_NT)  # ablate, subtract


class SiteSteer:
    """Every row's edits at one site, with what stays the same from step to step computed once: the sum of a
    row's `add` vectors [B, 1, D], and which rows need an SAE encode (clamp, multiply, ablate)."""

    def __init__(self, rows: Sequence[Sequence[Edit]]) -> None:
        self.rows = rows
        self.add_B1D: Tensor | None = None
        self.by_sae: dict[int, tuple[Sae, list[int]]] = {}
        for b, edits in enumerate(rows):
            for e in edits:
                if e.mode == "add":
                    if self.add_B1D is None:
                        self.add_B1D = torch.zeros(
                            len(rows), 1, e.sae.d_in, dtype=e.sae.W_dec.dtype, device=e.sae.W_dec.device
                        )
                    self.add_B1D[b, 0] += e.value * (
                        unit_direction(e.sae, e.feature) if e.vector is None else unit_vector(e.vector)
                    )
                elif b not in self.by_sae.setdefault(id(e.sae), (e.sae, []))[1]:
                    self.by_sae[id(e.sae)][1].append(b)
        self.gains = {
            (id(e.sae), e.feature): encoder_gain(e.sae, e.feature)
            for edits in rows
            for e in edits
            if e.mode not in ("add", "subtract")
        }

    def delta(self, h_BTD: Tensor) -> Tensor | None:
        """The change each row's edits make to h_BTD ([B, T or 1, D], the SAE's dtype); None for no change."""
        if not self.by_sae:
            return self.add_B1D
        sae0 = next(iter(self.by_sae.values()))[0]
        delta = torch.zeros(h_BTD.shape, dtype=sae0.W_dec.dtype, device=h_BTD.device)  # a new tensor each step
        if self.add_B1D is not None:
            delta += self.add_B1D
        for sae, idx in self.by_sae.values():
            f_NTF = sae.encode(h_BTD[idx])
            for n, b in enumerate(idx):
                for e in self.rows[b]:
                    if e.sae is not sae or e.mode == "add":
                        continue
                    old_T = f_NTF[n, :, e.feature]
                    change_T = _target(e.mode, e.value, old_T) - old_T
                    if e.mode != "subtract":  # the others reach their target once encoded again
                        change_T = change_T / self.gains[(id(sae), e.feature)]
                    delta[b] += change_T[:, None] * sae.decoder_directions[e.feature]
        return delta

    def __call__(self, h_BTD: Tensor, mask_BT: Tensor) -> Tensor:
        """h_BTD with each row's edits applied where mask_BT (or a [B, 1] mask) is True, the rest bit for bit."""
        delta = self.delta(h_BTD)
        if delta is None:
            return h_BTD
        return torch.where(mask_BT[..., None], h_BTD + delta.to(h_BTD.dtype), h_BTD)


class PositionedSteer:
    """A site's edits grouped by their first position (`Edit.start`), one SiteSteer per group; each group
    applies where the mask holds and the token's position has reached its start. With every start at 0 this is
    one SiteSteer, exactly as before."""

    def __init__(self, rows: Sequence[Sequence[Edit]]) -> None:
        starts = sorted({e.start for edits in rows for e in edits}) or [0]
        self.groups = [(s, SiteSteer([[e for e in edits if e.start == s] for edits in rows])) for s in starts]

    def __call__(self, h_BTD: Tensor, mask_BT: Tensor, pos_BT: Tensor) -> Tensor:
        """h_BTD edited where mask_BT (or [B, 1]) holds and pos_BT (token positions, same shape) >= each start."""
        if len(self.groups) == 1 and self.groups[0][0] == 0:
            return self.groups[0][1](h_BTD, mask_BT)
        out = h_BTD
        for start, steer in self.groups:
            delta = steer.delta(h_BTD)  # from the unsteered h, as every edit of a site
            if delta is not None:
                where_BT = mask_BT & (pos_BT >= start)
                out = torch.where(where_BT[..., None], out + delta.to(h_BTD.dtype), out)
        return out


def steer_hidden(h_BTD: Tensor, rows: Sequence[Sequence[Edit]], mask_BT: Tensor) -> Tensor:
    """h_BTD with each row's edits applied where mask_BT is True (the rest unchanged, bit for bit)."""
    return SiteSteer(rows)(h_BTD, mask_BT)
