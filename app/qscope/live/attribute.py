"""Attribution of one logit to SAE features: which features, at which positions, pushed the model to a token.

For a target y (the logit of one token at the last position, or the difference of two tokens' logits) and a
residual SAE at site l, with features f = encode(h) and error e = h - decode(f), feature i at position t gets
    attr[t, i] = f[t, i] * dy/df[t, i],
the derivative taken with e held constant: moving f[t, i] by d moves h[t] by d * W_dec[i] and the rest of the
model runs as usual. The error term and the decoder bias get the same first-order terms, e[t] . dy/dh[t] and
b_dec . dy/dh[t], so per SAE: features + error + bias = sum_t h[t] . dy/dh[t] (a first-order estimate, not y:
a final RMSNorm makes it about 0 at the last layer, since scaling the residual there moves no logit).

One forward and one backward pass give every SAE's terms at once. At each SAE site the hook returns

    h + (decode(a) - decode(a).detach()) + z,   a = the active entries of encode(h), a leaf;  z = 0, a leaf

whose value is h bit for bit (x - x.detach() is exactly zero), so the forward pass is the model's own. The
backward reaches a through decode only (the error term does not move with a), gives z the site's gradient
dy/dh (for the error and bias terms), and flows on through h unchanged, so an SAE at an earlier layer gets the
gradient of the real model. (Replacing h by decode(f) + (h - decode(f)).detach() gives the same gradient for the
last SAE but cuts every earlier layer off the target.) decode(a) is a weighted embedding_bag over the active
features, so the backward costs k rows of W_dec per token rather than the whole decoder.

`target_value` runs the same hooks forward with one feature changed (nudged or ablated, error held constant):
the finite-difference check of an attribution, and the test of a suppression.

Shapes: T positions, D = d_model, F = d_sae, N active (position, feature) pairs, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qscope.model import hooks
from qscope.sae import Sae

HookFn = Callable[[Tensor], Tensor | None]


class AttributionError(ValueError):
    """Inputs the attribution cannot use (no tokens, a token id outside the vocabulary)."""


@dataclass(frozen=True)
class AttributionTarget:
    """What is explained: logit(token) - logit(contrast); token None means the model's top prediction."""

    token: int | None
    contrast: int | None = None


@dataclass(frozen=True)
class Change:
    """One feature of one SAE changed through the attribution hook: f[t, feature] -> f * scale + add at the
    positions given (all when None), the error term held at its unchanged value."""

    sae_id: str
    feature: int
    add: float = 0.0
    scale: float = 1.0
    positions: tuple[int, ...] | None = None


@dataclass
class SaeAttribution:
    """One SAE's terms. Arrays: pos, feature int32 [N]; act, attr float64 [N]; error_T, bias_T float64 [T]."""

    sae_id: str
    layer: int | None
    pos: np.ndarray
    feature: np.ndarray
    act: np.ndarray
    attr: np.ndarray
    error_T: np.ndarray  # e[t] . dy/dh[t]
    bias_T: np.ndarray  # b_dec . dy/dh[t]

    @property
    def features(self) -> float:
        return float(self.attr.sum())

    @property
    def error(self) -> float:
        return float(self.error_T.sum())

    @property
    def bias(self) -> float:
        return float(self.bias_T.sum())

    @property
    def total(self) -> float:
        """features + error + bias = sum_t h[t] . dy/dh[t]."""
        return self.features + self.error + self.bias


@dataclass
class Attribution:
    """Every SAE's attributions of one target, read at the last position of the ids."""

    target: AttributionTarget  # with token resolved
    value: float  # y itself
    logit: float
    contrast_logit: float | None
    prob: float  # softmax probability of the target token
    top_ids: list[int]  # the model's most likely next tokens there, best first
    top_probs: list[float]
    saes: list[SaeAttribution] = field(default_factory=list)


class _Splice:
    """The attribution hook of one site (see the module docstring): records each SAE's leaf and error term,
    and applies `change` (forward only) when one is given."""

    def __init__(self, saes: Sequence[tuple[str, Sae]], steer: HookFn | None, change: Change | None) -> None:
        self.saes, self.steer, self.change = saes, steer, change
        self.leaves: dict[str, tuple[Tensor, Tensor, Tensor, Tensor]] = {}  # sae_id -> pos_N, feat_N, act_N, e_TD
        self.z_TD: Tensor | None = None
        self.h_TD: Tensor | None = None

    def __call__(self, h_BTD: Tensor) -> Tensor:
        if self.steer is not None:
            steered = self.steer(h_BTD)
            h_BTD = h_BTD if steered is None else steered
        out_BTD = h_BTD
        h_TD = h_BTD[0].detach()
        for sae_id, sae in self.saes:
            if self.change is not None:
                if self.change.sae_id == sae_id:
                    out_BTD = out_BTD + _changed(sae, h_TD, self.change)[None].to(h_BTD.dtype)
                continue
            f_TF = sae.encode(h_TD)
            pos_N, feat_N = f_TF.nonzero(as_tuple=True)
            act_N = f_TF[pos_N, feat_N].detach().requires_grad_(True)
            x_TD = _sparse_decode(sae, pos_N, feat_N, act_N, h_TD.shape[0])
            e_TD = h_TD.to(x_TD.dtype) - x_TD.detach() - sae.b_dec
            self.leaves[sae_id] = (pos_N, feat_N, act_N, e_TD)
            out_BTD = out_BTD + (x_TD - x_TD.detach())[None].to(h_BTD.dtype)
        if self.change is None and self.saes:
            self.z_TD = torch.zeros_like(h_TD, requires_grad=True)
            self.h_TD = h_TD
            out_BTD = out_BTD + self.z_TD[None]
        return out_BTD


def _sparse_decode(sae: Sae, pos_N: Tensor, feat_N: Tensor, act_N: Tensor, T: int) -> Tensor:
    """sum_i act[t, i] * W_dec[i] per position [T, D] (no bias), differentiable in act_N; pos_N ascending."""
    offsets_T = torch.searchsorted(pos_N, torch.arange(T, device=pos_N.device))
    return F.embedding_bag(feat_N, sae.W_dec, offsets_T, mode="sum", per_sample_weights=act_N.to(sae.W_dec.dtype))


def _changed(sae: Sae, h_TD: Tensor, change: Change) -> Tensor:
    """decode(f') - decode(f) [T, D] for the change: only feature `change.feature` moves."""
    if not 0 <= change.feature < sae.d_sae:
        raise AttributionError(f"feature {change.feature} is out of range: the SAE has 0..{sae.d_sae - 1}")
    f_T = sae.encode(h_TD)[:, change.feature]
    delta_T = f_T * (change.scale - 1.0) + change.add
    if change.positions is not None:
        keep_T = torch.zeros_like(delta_T, dtype=torch.bool)
        keep_T[list(change.positions)] = True
        delta_T = torch.where(keep_T, delta_T, torch.zeros_like(delta_T))
    return delta_T[:, None] * sae.decoder_directions[change.feature]


def _splices(saes: Mapping[str, Sae], steer: Mapping[str, HookFn] | None, change: Change | None) -> dict[str, _Splice]:
    by_site: dict[str, list[tuple[str, Sae]]] = {}
    for sae_id, sae in saes.items():
        by_site.setdefault(sae.require_site(), []).append((sae_id, sae))
    for site in steer or {}:
        by_site.setdefault(site, [])
    return {site: _Splice(pairs, (steer or {}).get(site), change) for site, pairs in by_site.items()}


def _forward(model: nn.Module, ids: Sequence[int], splices: Mapping[str, _Splice]) -> Tensor:
    """Logits [V] at the last position, with the hooks on."""
    if len(ids) == 0:
        raise AttributionError("there are no tokens to attribute over")
    device = next(model.parameters()).device
    input_ids = torch.as_tensor(list(ids), dtype=torch.long, device=device)[None]
    with hooks(model, splices):
        out = model(input_ids=input_ids, use_cache=False, logits_to_keep=1)
    return out.logits[0, -1]


def _check_token(token: int | None, vocab: int) -> None:
    if token is not None and not 0 <= token < vocab:
        raise AttributionError(f"token id {token} is not in the vocabulary (0..{vocab - 1})")


def _objective(logits_V: Tensor, target: AttributionTarget) -> Tensor:
    y = logits_V[target.token]
    return y if target.contrast is None else y - logits_V[target.contrast]


def attribute(
    model: nn.Module,
    saes: Mapping[str, Sae],
    ids: Sequence[int],
    target: AttributionTarget,
    steer: Mapping[str, HookFn] | None = None,
    n_top: int = 5,
) -> Attribution:
    """Every active feature's attribution (at every position) of `target`, read at the last position of `ids`
    (pass ids[: p + 1] to explain the prediction made at p). `steer`: hooks {site: fn(h) -> h} applied before
    the splice, to attribute a steered run as it ran."""
    splices = _splices(saes, steer, None)
    with torch.enable_grad():
        logits_V = _forward(model, ids, splices)
        _check_token(target.token, logits_V.shape[0])
        _check_token(target.contrast, logits_V.shape[0])
        if target.token is None:
            target = AttributionTarget(int(logits_V.argmax()), target.contrast)
        y = _objective(logits_V.to(torch.promote_types(logits_V.dtype, torch.float32)), target)
        spliced = [s for s in splices.values() if s.saes]
        leaves: list[Tensor] = [
            t for s in spliced for t in [*(v[2] for v in s.leaves.values()), s.z_TD] if t is not None
        ]
        grads = torch.autograd.grad(y, leaves, allow_unused=True)
    grad_of = {id(t): g if g is not None else torch.zeros_like(t) for t, g in zip(leaves, grads, strict=True)}
    out = []
    for s in spliced:
        g_TD = grad_of[id(s.z_TD)].double()
        for sae_id, sae in s.saes:
            pos_N, feat_N, act_N, e_TD = s.leaves[sae_id]
            act = act_N.detach().double()
            out.append(
                SaeAttribution(
                    sae_id,
                    sae.layer,
                    _np(pos_N, np.int32),
                    _np(feat_N, np.int32),
                    _np(act, np.float64),
                    _np(act * grad_of[id(act_N)].double(), np.float64),
                    _np((e_TD.double() * g_TD).sum(-1), np.float64),
                    _np(g_TD @ sae.b_dec.double(), np.float64),
                )
            )
    logits_V = logits_V.detach()
    probs_V = torch.softmax(logits_V.float(), -1)
    top = probs_V.topk(min(n_top, probs_V.shape[0]))
    contrast = None if target.contrast is None else float(logits_V[target.contrast])
    return Attribution(
        target,
        float(y.detach()),
        float(logits_V[target.token]),
        contrast,
        float(probs_V[target.token]),
        top.indices.tolist(),
        top.values.tolist(),
        out,
    )


def _np(t: Tensor, dtype) -> np.ndarray:
    return t.detach().cpu().numpy().astype(dtype, copy=False)


@torch.no_grad()
def target_value(
    model: nn.Module,
    saes: Mapping[str, Sae],
    ids: Sequence[int],
    target: AttributionTarget,
    change: Change | None = None,
    steer: Mapping[str, HookFn] | None = None,
) -> float:
    """y at the last position of `ids` with the attribution hooks on and `change` applied (target.token must
    be given). Without a change this is the model's own value, as the hooks leave the forward pass alone."""
    if target.token is None:
        raise AttributionError("target_value needs the target token")
    if change is not None and change.sae_id not in saes:
        raise AttributionError(f"no SAE {change.sae_id!r} among {', '.join(saes)}")
    chosen = {change.sae_id: saes[change.sae_id]} if change is not None else saes
    logits_V = _forward(model, ids, _splices(chosen, steer, change))
    return float(_objective(logits_V.double(), target))
