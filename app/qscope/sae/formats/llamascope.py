"""Llama Scope (OpenMOSS lm-saes / Llamascopium): `config.json` (or `hyperparams.json`) +
`sae_weights.safetensors` or `checkpoints/final.safetensors`, keys W_E [d, F], b_E, W_D [F, d], b_D.

`act_fn` topk / jumprelu / batchtopk; `norm_activation: dataset-wise` rescales the input to sqrt(d) / average norm.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from qscope.sae.formats.common import (
    SaeFormatError,
    SaeSpec,
    cfg_int,
    check_config_sizes,
    check_shapes,
    peek_config,
    positive,
    read_json,
    read_safetensors,
    require_keys,
    site_from_hook,
)

# lm-saes names its parameters W_E [d, F], b_E, W_D [F, d], b_D; releases before that used nn.Linear names
LINEAR_NAMES = {"encoder.weight": "W_E", "encoder.bias": "b_E", "decoder.weight": "W_D", "decoder.bias": "b_D"}


def _hook(cfg: Mapping[str, Any]) -> str | None:
    return cfg.get("hook_point_in") or cfg.get("hook_point")


def _norm(cfg: Mapping[str, Any], state: Mapping[str, Tensor], hook: str, side: str) -> Any:
    """The dataset average activation norm of one side ("in" / "out"), or None when the SAE has none."""
    for key in (f"dataset_average_activation_norm.{hook}", f"dataset_average_activation_norm.{side}"):
        if key in state:
            return state[key]
    norms = cfg.get("dataset_average_activation_norm")
    if not isinstance(norms, dict):
        return None
    return next((norms[key] for key in (hook, side) if norms.get(key) is not None), None)


def _scales(cfg: Mapping[str, Any], state: Mapping[str, Tensor], d: int, weights: Path) -> tuple[float, float]:
    """(input scale, output scale): lm-saes "dataset-wise" feeds the SAE x * sqrt(d) / average norm."""
    mode = cfg.get("norm_activation", "dataset-wise")
    if mode == "inference":  # already folded by lm-saes
        return 1.0, 1.0
    if mode != "dataset-wise":
        raise SaeFormatError(f"SAE {weights}: norm_activation {mode!r} (per-token/batch) is not supported")
    hook_in = str(_hook(cfg))
    norm_in = _norm(cfg, state, hook_in, "in")
    if norm_in is None:
        raise SaeFormatError(
            f"SAE file {weights}: norm_activation is 'dataset-wise' but there is no "
            f"dataset_average_activation_norm.{hook_in} (or .in) in it or in its config"
        )
    norm_out = _norm(cfg, state, str(cfg.get("hook_point_out") or hook_in), "out")
    norm_out = norm_in if norm_out is None else norm_out
    what = "dataset_average_activation_norm"
    return math.sqrt(d) / positive(norm_in, what, weights), math.sqrt(d) / positive(norm_out, what, weights)


def _threshold(cfg: Mapping[str, Any], state: Mapping[str, Tensor], d_sae: int, path: Path) -> Tensor:
    # lm-saes keeps the JumpReLU threshold in log space on its activation-function module (older: top
    # level); the first Llama Scope release stored one linear threshold for all features in its config
    for key in ("activation_function.log_jumprelu_threshold", "log_jumprelu_threshold"):
        if key in state:
            if state[key].ndim and list(state[key].shape) != [d_sae]:  # a scalar is one for all
                shape = list(state[key].shape)
                raise SaeFormatError(f"SAE file {path}: {key} has shape {shape}, expected [{d_sae}]")
            return state[key].float().exp().expand(d_sae).clone()
    if cfg.get("jump_relu_threshold") is not None:
        return torch.full((d_sae,), float(cfg["jump_relu_threshold"]))
    raise SaeFormatError(
        f"SAE file {path}: a jumprelu SAE needs activation_function.log_jumprelu_threshold [{d_sae}] "
        "(or log_jumprelu_threshold, or jump_relu_threshold in the config)"
    )


def _weights(cfg: Mapping[str, Any], weights: Path) -> dict[str, Tensor]:
    """W_E [d, F], b_E, W_D [F, d], b_D (zeros when the SAE has no decoder bias), shapes checked."""
    state = read_safetensors(weights)
    if "W_E" not in state and "encoder.weight" in state:
        state = {
            LINEAR_NAMES.get(key, key): t.T if t.ndim == 2 and key in LINEAR_NAMES else t for key, t in state.items()
        }
    use_b_D = bool(cfg.get("use_decoder_bias", True))
    require_keys(weights, state, ["W_E", "b_E", "W_D"] + (["b_D"] if use_b_D else []), "a Llama Scope SAE")
    dims = {"W_E": ("d_in", "d_sae"), "W_D": ("d_sae", "d_in"), "b_E": ("d_sae",), "b_D": ("d_in",)}
    check_shapes(weights, state, dims)
    if not use_b_D:
        state["b_D"] = torch.zeros(state["W_D"].shape[1], dtype=state["W_D"].dtype)
    return state


def read(weights: Path, cfg_path: Path | None, k: int | None = None) -> SaeSpec:
    """lm-saes `config.json` + `sae_weights.safetensors` (or `checkpoints/final.safetensors`)."""
    assert cfg_path is not None  # detection pairs every Llama Scope file with its config
    cfg = read_json(cfg_path)
    if cfg.get("sae_type", "sae") != "sae" or cfg.get("use_glu_encoder"):
        raise SaeFormatError(f"SAE config {cfg_path}: sae_type {cfg.get('sae_type')!r} is not a plain SAE")
    act_fn = str(cfg.get("act_fn", "relu")).lower()
    if act_fn not in ("relu", "topk", "batchtopk", "jumprelu"):
        raise SaeFormatError(f"SAE config {cfg_path}: act_fn {act_fn!r} is not supported")
    state = _weights(cfg, weights)
    d, d_sae = state["W_D"].shape[1], state["W_D"].shape[0]
    check_config_sizes(cfg, cfg_path, {"d_in": d}, {"d_model": "d_in"})
    in_scale, out_scale = _scales(cfg, state, d, weights)
    # sparsity_include_decoder_norm: the activation function sees pre * |W_D row| and passes pre through
    norm_F = state["W_D"].float().norm(dim=-1) if cfg.get("sparsity_include_decoder_norm", True) else None
    threshold_F = rank_scale_F = top_k = None
    arch = act_fn
    if act_fn == "jumprelu" or (act_fn == "batchtopk" and any("jumprelu" in key for key in state)):
        arch, threshold_F = "jumprelu", _threshold(cfg, state, d_sae, weights)
        if norm_F is not None:  # pre * norm > t  <=>  pre > t / norm
            threshold_F = threshold_F / norm_F
    elif act_fn in ("topk", "batchtopk"):  # batchtopk with no threshold: per-token top-k, as for SAELens
        rank_scale_F, top_k = norm_F, cfg_int(cfg, "top_k", cfg_path) or 50  # 50: lm-saes' default top_k
    layer, site = site_from_hook(_hook(cfg))
    return SaeSpec(
        W_enc_DF=state["W_E"],
        b_enc_F=state["b_E"],
        W_dec_FD=state["W_D"],
        b_dec_D=state["b_D"],
        architecture=arch,
        k=top_k,
        threshold_F=threshold_F,
        rank_scale_F=rank_scale_F,
        apply_b_dec_to_input=bool(cfg.get("apply_decoder_bias_to_pre_encoder", False)),
        input_scale=in_scale,
        output_scale=out_scale,
        layer=layer,
        site=site,
        hook_name=_hook(cfg),
        source=weights,
        format="llamascope",
    )


def peek_layer(weights: Path, cfg_path: Path | None) -> int | None:
    """The layer its config's hook names, or None (no weights read)."""
    return site_from_hook(_hook(peek_config(cfg_path)))[0]
