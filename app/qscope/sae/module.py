"""The `Sae` module (encode / decode / forward), one class whatever the release format.

An Sae is built from the `SaeSpec` a format reader returns (qscope.sae.formats). It takes and returns raw model
activations [..., d_in]: a release's activation-norm scaling is folded into its weights here, so `W_dec` rows
are feature directions in model space and steering can add them as they are.

Shapes: D = d_in (the model's hidden size), F = d_sae (features), K = k, B = any leading dims.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from qscope.sae.formats.common import ARCHITECTURES, SaeFormatError, SaeSpec, check_shapes

CANONICAL_DIMS = {"W_enc": ("d_in", "d_sae"), "W_dec": ("d_sae", "d_in"), "b_dec": ("d_in",)} | {
    name: ("d_sae",) for name in ("b_enc", "threshold", "b_gate", "b_mag", "r_mag", "rank_scale")
}


class Sae(nn.Module):
    """A sparse autoencoder over one site of a model, built from an `SaeSpec` (see `load_sae`).

    Metadata: d_in, d_sae, architecture ("relu" | "topk" | "batchtopk" | "jumprelu" | "gated"), k (top-k
    only), layer (decoder layer read), site (HF module path, "model.layers.{layer}" for the residual stream),
    hook_name (as the file's config writes it), source (the file), format, apply_b_dec_to_input.
    Parameters, frozen (requires_grad=False; encode/decode stay differentiable in their input):
    W_enc [D, F], b_enc [F] (zeros for gated), W_dec [F, D], b_dec [D]; threshold [F] for jumprelu;
    b_gate, b_mag, r_mag [F] for gated.
    """

    rank_scale: Tensor | None  # a buffer (see __init__): it follows .to() but is not a parameter

    def __init__(
        self, spec: SaeSpec, *, device: str | torch.device | None = None, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__()
        self.d_in, self.d_sae = _check_spec(spec)
        self.architecture = spec.architecture
        self.k = spec.k if spec.architecture in ("topk", "batchtopk") else None
        self.layer, self.site, self.hook_name = spec.layer, spec.site, spec.hook_name
        self.source, self.format = spec.source, spec.format
        self.apply_b_dec_to_input = spec.apply_b_dec_to_input
        # The release encodes x * input_scale and reconstructs y * output_scale. Both are folded into the
        # weights here (as SAELens' fold_activation_norm_scaling_factor does), so encode/decode take raw
        # activations, feature values are unchanged and W_dec rows are model-space directions. The two
        # numbers are kept for display only: never apply them again.
        self.input_scale = float(spec.input_scale)
        self.output_scale = float(spec.output_scale if spec.output_scale is not None else spec.input_scale)
        dtype = dtype or spec.W_enc_DF.dtype
        work = torch.promote_types(dtype, torch.float32)  # fold in at least fp32, then cast

        def cast(t: Tensor, scale: float = 1.0) -> Tensor:
            t = t.to(work) if scale == 1.0 else t.to(work) * scale
            return t.to(device=device, dtype=dtype).contiguous()

        def frozen(t: Tensor, scale: float = 1.0) -> nn.Parameter:
            return nn.Parameter(cast(t, scale), requires_grad=False)

        def frozen_if_given(t: Tensor | None) -> nn.Parameter | None:
            return None if t is None else frozen(t)

        self.W_enc = frozen(spec.W_enc_DF, self.input_scale)
        self.b_enc = frozen(spec.b_enc_F)
        self.W_dec = frozen(spec.W_dec_FD, 1 / self.output_scale)
        self.b_dec = frozen(spec.b_dec_D, 1 / self.output_scale)
        self.threshold = frozen_if_given(spec.threshold_F)
        self.b_gate, self.b_mag, self.r_mag = map(frozen_if_given, (spec.b_gate_F, spec.b_mag_F, spec.r_mag_F))
        rank_scale_F = spec.rank_scale_F
        if rank_scale_F is not None and torch.allclose(rank_scale_F.float(), torch.ones(())):
            rank_scale_F = None  # unit-norm decoder: ranking by pre alone is the same
        self.register_buffer("rank_scale", None if rank_scale_F is None else cast(rank_scale_F))

    def encode(self, x: Tensor) -> Tensor:
        """Dense feature activations [..., d_sae] for activations x [..., d_in], in the SAE's dtype."""
        if x.shape[-1] != self.d_in:
            raise ValueError(f"SAE {self.source} reads d_in={self.d_in} but got input of shape {list(x.shape)}")
        x_BD = x.to(device=self.W_enc.device, dtype=self.W_enc.dtype)
        if self.apply_b_dec_to_input:
            x_BD = x_BD - self.b_dec
        if self.architecture == "gated":
            # _check_spec refuses a gated spec without these three
            assert self.b_gate is not None and self.b_mag is not None and self.r_mag is not None
            gate_BF = (x_BD @ self.W_enc + self.b_gate) > 0
            mag_BF = (x_BD @ (self.W_enc * self.r_mag.exp()) + self.b_mag).relu()
            return mag_BF * gate_BF
        pre_BF = x_BD @ self.W_enc + self.b_enc
        if self.architecture == "relu":
            return pre_BF.relu()
        if self.architecture == "jumprelu":
            assert self.threshold is not None, "_check_spec refuses a jumprelu spec without a threshold"
            return pre_BF.relu() * (pre_BF > self.threshold)
        return self._top_k(pre_BF)

    def _top_k(self, pre_BF: Tensor) -> Tensor:
        # batchtopk lands here too: per-token top-k at inference (see qscope.sae.formats.saelens.read)
        assert self.k is not None, "_check_spec refuses a top-k spec without k"
        score_BF = pre_BF if self.rank_scale is None else pre_BF * self.rank_scale
        top_idx_BK = score_BF.topk(min(self.k, self.d_sae), dim=-1).indices
        top_BK = pre_BF.gather(-1, top_idx_BK).relu()
        return torch.zeros_like(pre_BF).scatter(-1, top_idx_BK, top_BK)

    def decode(self, f: Tensor) -> Tensor:
        """Reconstruction [..., d_in] from feature activations f [..., d_sae]."""
        if f.shape[-1] != self.d_sae:
            raise ValueError(f"SAE {self.source} has d_sae={self.d_sae} but got features of shape {list(f.shape)}")
        return f.to(device=self.W_dec.device, dtype=self.W_dec.dtype) @ self.W_dec + self.b_dec

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    def check_fits(self, hidden_size: int) -> None:
        """Raise SaeFormatError when this SAE cannot read a model with this hidden size."""
        if hidden_size != self.d_in:
            raise SaeFormatError(
                f"SAE {self.source} reads d_in={self.d_in} but the model's hidden size is {hidden_size}"
            )

    def require_site(self) -> str:
        """The site this SAE reads; SaeFormatError when its file does not say (load it with layer=)."""
        if self.site is None:
            raise SaeFormatError(f"SAE {self.source} does not say which site it reads; load it with layer=")
        return self.site

    @property
    def decoder_directions(self) -> Tensor:
        """W_dec [d_sae, d_in]: row f is feature f's direction in model space."""
        return self.W_dec

    def extra_repr(self) -> str:
        k = f", k={self.k}" if self.k is not None else ""
        return (
            f"format={self.format}, architecture={self.architecture}{k}, d_in={self.d_in}, "
            f"d_sae={self.d_sae}, "
            f"layer={self.layer}, site={self.site}"
        )


def _check_spec(spec: SaeSpec) -> tuple[int, int]:
    """(d_in, d_sae) of a spec whose pieces fit its architecture and each other, else SaeFormatError."""
    src, arch = spec.source, spec.architecture
    if arch not in ARCHITECTURES:
        raise SaeFormatError(f"SAE {src}: architecture {arch!r} is not one of {ARCHITECTURES}")
    needs = {"jumprelu": ["threshold_F"], "gated": ["b_gate_F", "b_mag_F", "r_mag_F"]}.get(arch, [])
    if missing := [name for name in needs if getattr(spec, name) is None]:
        raise SaeFormatError(f"SAE {src}: a {arch} SAE needs {', '.join(missing)}")
    if arch in ("topk", "batchtopk") and (spec.k is None or spec.k < 1):
        raise SaeFormatError(f"SAE {src}: a {arch} SAE needs k >= 1, got k={spec.k}")
    if spec.apply_b_dec_to_input and spec.output_scale not in (None, spec.input_scale):
        raise SaeFormatError(f"SAE {src}: b_dec is subtracted from the input but the two scales differ")
    named = {
        "W_enc": spec.W_enc_DF,
        "b_enc": spec.b_enc_F,
        "W_dec": spec.W_dec_FD,
        "b_dec": spec.b_dec_D,
        "threshold": spec.threshold_F,
        "b_gate": spec.b_gate_F,
        "b_mag": spec.b_mag_F,
        "r_mag": spec.r_mag_F,
        "rank_scale": spec.rank_scale_F,
    }
    given = {n: t for n, t in named.items() if t is not None}
    sizes = check_shapes(src, given, CANONICAL_DIMS)
    for name, t in given.items():
        _check_values(src, name, t)
    if spec.k is not None and arch in ("topk", "batchtopk") and spec.k > sizes["d_sae"]:
        raise SaeFormatError(f"SAE {src}: k={spec.k} is more than its {sizes['d_sae']} features")
    return sizes["d_in"], sizes["d_sae"]


def _check_values(src: object, name: str, t: Tensor) -> None:
    """Floating-point and finite, else SaeFormatError: a NaN or an integer weight makes every feature dead."""
    if not t.is_floating_point():
        raise SaeFormatError(
            f"SAE {src}: {name} holds {str(t.dtype).removeprefix('torch.')} values; SAE weights are floats"
        )
    finite = torch.isfinite(t)
    if not bool(finite.all()):
        nan, inf = int(t.isnan().sum()), int((~finite).sum() - t.isnan().sum())
        what = " and ".join(f"{n:,} {kind}" for n, kind in ((nan, "NaN"), (inf, "infinite")) if n)
        raise SaeFormatError(f"SAE {src}: {name} holds {what} values (of {t.numel():,})")
