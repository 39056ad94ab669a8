"""SAELens: `cfg.json` + `sae_weights.safetensors`, v6 (`metadata.hook_name`) or older (`hook_point`).

W_enc [d_in, d_sae], W_dec [d_sae, d_in], b_enc, b_dec; gated adds b_gate, b_mag, r_mag; jumprelu a threshold.
`apply_b_dec_to_input` subtracts b_dec first; `normalize_activations` may rescale the input.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from qscope.sae.formats.common import (
    SaeFormatError,
    SaeSpec,
    check_config_sizes,
    check_shapes,
    peek_config,
    positive,
    read_json,
    read_safetensors,
    require_keys,
    site_from_hook,
)

# the [d_sae] vectors of SAELens files; scaling_factor is the old "finetuning scaling factor"
SAE_VECTORS = ("b_enc", "threshold", "b_gate", "b_mag", "r_mag", "scaling_factor")


def _fold_decoder_norm(W_enc_DF: Tensor, b_enc_F: Tensor, W_dec_FD: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Unit-norm decoder rows, their norms moved into the encoder: same reconstruction, pre times norm."""
    norm_F = W_dec_FD.float().norm(dim=-1)
    return W_enc_DF * norm_F, b_enc_F * norm_F, W_dec_FD / norm_F[:, None]


def _section(cfg: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """cfg[key] when it is a nested section (a dict), else an empty one."""
    value = cfg.get(key)
    return value if isinstance(value, dict) else {}


def _hooks(cfg: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(TransformerLens hook name, HF module path) from a v6 config (under metadata) or an older one."""
    meta = _section(cfg, "metadata")
    hook = meta.get("hook_name") or cfg.get("hook_name") or cfg.get("hook_point")
    return hook, meta.get("hf_hook_name") or cfg.get("hf_hook_name")


def _architecture(cfg: Mapping[str, Any], cfg_path: Path) -> str:
    act_fn = cfg.get("activation_fn") or cfg.get("activation_fn_str") or "relu"
    arch = cfg.get("architecture") or "standard"
    if arch == "standard" and act_fn == "topk":  # pre-v6 top-k: activation_fn "topk", kwargs {"k": ...}
        arch = "topk"
    if arch == "standard" and act_fn != "relu":
        raise SaeFormatError(f"SAE config {cfg_path}: activation_fn {act_fn!r} is not supported")
    if arch not in ("standard", "topk", "batchtopk", "jumprelu", "gated"):
        raise SaeFormatError(f"SAE config {cfg_path}: architecture {arch!r} is not supported")
    return "relu" if arch == "standard" else arch


def _scale(cfg: Mapping[str, Any], cfg_path: Path) -> float:
    """The activation-norm scale factor SAELens multiplies inputs by before encoding (1 when none)."""
    mode = cfg.get("normalize_activations")
    if mode in (None, False, "none"):
        return 1.0
    if mode not in (True, "expected_average_only_in"):
        raise SaeFormatError(
            f"SAE config {cfg_path}: normalize_activations {mode!r} (per-token) is not supported; "
            "only 'none' and 'expected_average_only_in' (with a scaling factor) are"
        )
    for key in ("scaling_factor", "norm_scaling_factor"):
        if cfg.get(key) is not None:
            return positive(cfg[key], key, cfg_path)
    scaler = cfg_path.parent / "activation_scaler.json"
    if scaler.is_file() and read_json(scaler).get("scaling_factor") is not None:
        return positive(read_json(scaler)["scaling_factor"], "scaling_factor", scaler)
    raise SaeFormatError(
        f"SAE config {cfg_path}: normalize_activations is 'expected_average_only_in' but no scaling "
        f"factor was found (cfg 'scaling_factor' / 'norm_scaling_factor', or {scaler.name} beside it)"
    )


def _top_k(cfg: Mapping[str, Any], cfg_path: Path, arch: str) -> int:
    kwargs = _section(cfg, "activation_fn_kwargs")
    raw_k = cfg.get("k", kwargs.get("k"))
    if raw_k is None:
        raise SaeFormatError(f"SAE config {cfg_path}: a {arch} SAE needs k (or activation_fn_kwargs.k)")
    return max(1, round(positive(raw_k, "k", cfg_path)))  # batchtopk's k may be fractional


def read(weights: Path, cfg_path: Path | None, k: int | None = None) -> SaeSpec:
    """SAELens `cfg.json` + `sae_weights.safetensors`, v6 (`metadata.hook_name`) or older (`hook_point`)."""
    assert cfg_path is not None  # detection pairs every SAELens file with its cfg.json
    cfg = read_json(cfg_path)
    arch = _architecture(cfg, cfg_path)
    state = read_safetensors(weights)
    keys = ["W_enc", "W_dec", "b_dec"] + (["b_gate", "b_mag", "r_mag"] if arch == "gated" else ["b_enc"])
    keys += ["threshold"] if arch == "jumprelu" else []
    require_keys(weights, state, keys, f"a SAELens {arch} SAE")
    dims = {"W_enc": ("d_in", "d_sae"), "W_dec": ("d_sae", "d_in"), "b_dec": ("d_in",)}
    sizes = check_shapes(weights, state, dims | {key: ("d_sae",) for key in SAE_VECTORS})
    check_config_sizes(cfg, cfg_path, sizes, {"d_in": "d_in", "d_sae": "d_sae"})
    W_enc_DF, W_dec_FD = state["W_enc"], state["W_dec"]
    b_enc_F = state.get("b_enc", torch.zeros(sizes["d_sae"], dtype=W_enc_DF.dtype))  # gated has none
    if "scaling_factor" in state:  # old "finetuning scaling factor": multiplies f before decoding
        W_dec_FD = W_dec_FD * state["scaling_factor"][:, None]
    threshold_F, top_k = state.get("threshold"), None
    if arch == "batchtopk" and threshold_F is None and "topk_threshold" in state:
        threshold_F = state["topk_threshold"].reshape(()).expand(sizes["d_sae"]).clone()
    if arch == "batchtopk" and threshold_F is not None:
        # BatchTopK's learned global threshold is its inference rule (SAELens saves it as jumprelu)
        arch = "jumprelu"
    if arch in ("topk", "batchtopk"):
        # A batchtopk SAE with no threshold keeps k per token *on average over a batch*; one token at a time,
        # per-token top-k with the same k is the nearest rule that does not depend on the batch.
        top_k = _top_k(cfg, cfg_path, arch)
        if cfg.get("rescale_acts_by_decoder_norm"):
            W_enc_DF, b_enc_F, W_dec_FD = _fold_decoder_norm(W_enc_DF, b_enc_F, W_dec_FD)
    hook, hf_hook = _hooks(cfg)
    layer, site = site_from_hook(hf_hook or hook)
    return SaeSpec(
        W_enc_DF=W_enc_DF,
        b_enc_F=b_enc_F,
        W_dec_FD=W_dec_FD,
        b_dec_D=state["b_dec"],
        architecture=arch,
        k=top_k,
        threshold_F=threshold_F,
        b_gate_F=state.get("b_gate"),
        b_mag_F=state.get("b_mag"),
        r_mag_F=state.get("r_mag"),
        apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
        input_scale=_scale(cfg, cfg_path),
        layer=layer,
        site=site,
        hook_name=hook or hf_hook,
        source=weights,
        format="saelens",
    )


def peek_layer(weights: Path, cfg_path: Path | None) -> int | None:
    """The layer its config's hook names, or None (no weights read)."""
    hook, hf_hook = _hooks(peek_config(cfg_path))
    return site_from_hook(hf_hook or hook)[0]
