"""Steering math: resolve a spec's features into `Edit`s and apply them to one site's hidden state, per row.

Modes (strength units in app.steer.spec):
  add       h += strength * max_act(f) * unit(W_dec[f])
  clamp     h += (decode(f') - decode(f)) / gain with f'[feat] = strength * max_act(f)
  multiply  the same with f'[feat] = strength * f[feat]
  ablate    the same with f'[feat] = 0
decode is affine, so decode(f') - decode(f) = (f'[feat] - f[feat]) * W_dec[feat]: h only moves along the
feature's decoder direction and the SAE error term is kept. gain = W_enc[:, feat] . W_dec[feat] is how much
the encoder's pre-activation moves per unit of that direction; a real SAE has gain < 1 (the mini-Qwen's are
about 0.7), so the plain formula leaves an ablated feature still firing at ~30% when the edited state is
encoded again. Dividing by the gain makes the re-encoded activation exactly the target where the feature
fired (ablate gives 0); with gain 1 it is the plain formula. Every edit on a site is computed from the same
(unsteered) h.

Shapes: B rows, T positions, D = d_model, F = d_sae, N rows that need an encode.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from app.sae import Sae
from app.steer.spec import FeatureSteer, Mode, SpecError


@dataclass(frozen=True)
class Edit:
    """One feature edit of one row, with the number its mode needs."""

    sae: Sae
    feature: int
    mode: Mode
    value: float  # add: coefficient on the unit direction; clamp: target activation; multiply: factor; ablate: 0


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
        out.setdefault(sae.site, []).append(Edit(sae, fs.feature, fs.mode, value))
    return out


def unit_direction(sae: Sae, feature: int) -> Tensor:
    """unit(W_dec[feature]) [D]."""
    d_D = sae.decoder_directions[feature]
    return d_D / d_D.norm().clamp_min(1e-12)


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
    return torch.zeros_like(act_NT)  # ablate


def steer_delta(h_BTD: Tensor, rows: Sequence[Sequence[Edit]]) -> Tensor:
    """The change [B, T, D] (in the SAE's dtype) that the edits of each row make to h_BTD."""
    rows_with_edits = [b for b, edits in enumerate(rows) if edits]
    work = rows[rows_with_edits[0]][0].sae.W_dec if rows_with_edits else h_BTD
    delta_BTD = torch.zeros(h_BTD.shape, dtype=work.dtype, device=h_BTD.device)
    by_sae: dict[int, tuple[Sae, list[int]]] = {}
    for b in rows_with_edits:
        for e in rows[b]:
            if e.mode == "add":
                delta_BTD[b] += e.value * unit_direction(e.sae, e.feature)
            elif b not in by_sae.setdefault(id(e.sae), (e.sae, []))[1]:
                by_sae[id(e.sae)][1].append(b)
    for sae, idx in by_sae.values():
        f_NTF = sae.encode(h_BTD[idx])
        for n, b in enumerate(idx):
            for e in rows[b]:
                if e.sae is not sae or e.mode == "add":
                    continue
                old_T = f_NTF[n, :, e.feature]
                change_T = (_target(e.mode, e.value, old_T) - old_T) / encoder_gain(sae, e.feature)
                delta_BTD[b] += change_T[:, None] * sae.decoder_directions[e.feature]
    return delta_BTD


def steer_hidden(h_BTD: Tensor, rows: Sequence[Sequence[Edit]], mask_BT: Tensor) -> Tensor:
    """h_BTD with each row's edits applied where mask_BT is True (the rest unchanged, bit for bit)."""
    delta_BTD = steer_delta(h_BTD, rows) * mask_BT[..., None]
    return torch.where(mask_BT[..., None], h_BTD + delta_BTD.to(h_BTD.dtype), h_BTD)
