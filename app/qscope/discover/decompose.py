"""A direction on the residual (DiffMean's, a probe's) read as SAE features, so that a baseline that wins still says
which named features carry it.

Two readings of one SAE at the direction's site: the features whose decoder direction is closest to it (cosine),
and the features the SAE's encoder fires when it is given the direction (scaled to the site's typical residual
norm). `share` is how much of the direction the top features' decoder directions explain together: the squared
norm of its least-squares projection onto their span, over its own.

Shapes: D = d_model, F = d_sae, K top features.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from qscope.sae import Sae


@dataclass
class Part:
    feature: int
    value: float  # cosine with the direction, or the activation the encoder gives it


@dataclass
class Decomposition:
    sae_id: str
    by_cosine: list[Part]  # highest |cosine| first
    by_encoding: list[Part]  # highest activation first (only features that fire)
    share: float  # of the direction's squared norm explained by the top-by-cosine features' directions


@torch.no_grad()
def decompose(sae_id: str, sae: Sae, direction_D: Tensor, norm: float, top: int = 10) -> Decomposition:
    """`direction_D` over the features of `sae`; `norm`: the residual norm it is scaled to before encoding."""
    d_D = direction_D.to(torch.float32).flatten()
    unit_D = d_D / d_D.norm().clamp_min(1e-12)
    dec_FD = sae.decoder_directions.to(torch.float32)
    cos_F = (dec_FD @ unit_D) / dec_FD.norm(dim=1).clamp_min(1e-12)
    k = min(top, cos_F.numel())
    order_K = cos_F.abs().topk(k).indices
    acts_F = sae.encode((unit_D * norm).to(sae.W_enc.dtype)[None]).flatten().to(torch.float32)
    fired_K = acts_F.topk(min(top, acts_F.numel()))
    by_encoding = [Part(int(f), float(a)) for a, f in zip(fired_K.values, fired_K.indices, strict=True) if a > 0]
    return Decomposition(
        sae_id,
        [Part(int(f), float(cos_F[f])) for f in order_K],
        by_encoding,
        explained_share(dec_FD[order_K], d_D),
    )


def explained_share(directions_KD: Tensor, d_D: Tensor) -> float:
    """||projection of d onto span(directions)||^2 / ||d||^2, by least squares (0 for a zero d)."""
    if float(d_D.norm()) == 0.0 or directions_KD.numel() == 0:
        return 0.0
    coef_K = torch.linalg.lstsq(directions_KD.T.double(), d_D.double()[:, None]).solution
    proj_D = (directions_KD.T.double() @ coef_K)[:, 0]
    return float(proj_D.pow(2).sum() / d_D.double().pow(2).sum())
