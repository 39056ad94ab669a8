"""EleutherAI sparsify: `cfg.json` + `sae.safetensors`, one folder per hook (the folder's name is the hook).

encoder.weight [d_sae, d], encoder.bias, W_dec [d_sae, d], b_dec; top-k after ReLU of encoder(x - b_dec).
"""

from __future__ import annotations

from pathlib import Path

from qscope.sae.formats.common import (
    SaeFormatError,
    SaeSpec,
    cfg_int,
    check_config_sizes,
    check_shapes,
    read_json,
    read_safetensors,
    require_keys,
    site_from_hook,
)


def read(weights: Path, cfg_path: Path | None, k: int | None = None) -> SaeSpec:
    """sparsify `cfg.json` + `sae.safetensors`: top-k of relu(encoder(x - b_dec)); folder = hook name."""
    assert cfg_path is not None  # detection pairs every sparsify file with its cfg.json
    cfg = read_json(cfg_path)
    if cfg.get("transcode") or cfg.get("skip_connection"):
        raise SaeFormatError(f"SAE config {cfg_path}: a sparsify transcoder (transcode / skip_connection)")
    if cfg.get("activation", "topk") != "topk":
        raise SaeFormatError(f"SAE config {cfg_path}: activation {cfg['activation']!r} is not supported")
    state = read_safetensors(weights)
    dims = {
        "encoder.weight": ("d_sae", "d_in"),
        "encoder.bias": ("d_sae",),
        "W_dec": ("d_sae", "d_in"),
        "b_dec": ("d_in",),
    }
    require_keys(weights, state, list(dims), "a sparsify SAE")
    sizes = check_shapes(weights, state, dims)
    check_config_sizes(cfg, cfg_path, sizes, {"d_in": "d_in", "num_latents": "d_sae"})
    top_k = cfg_int(cfg, "k", cfg_path)
    if top_k is None:
        raise SaeFormatError(f"SAE config {cfg_path} has no k")
    layer, site = site_from_hook(weights.parent.name)
    return SaeSpec(
        W_enc_DF=state["encoder.weight"].T,
        b_enc_F=state["encoder.bias"],
        W_dec_FD=state["W_dec"],
        b_dec_D=state["b_dec"],
        architecture="topk",
        k=top_k,
        apply_b_dec_to_input=True,
        layer=layer,
        site=site,
        hook_name=weights.parent.name,
        source=weights,
        format="sparsify",
    )


def peek_layer(weights: Path, cfg_path: Path | None) -> int | None:
    """The layer its folder (the hook name) says, or None."""
    return site_from_hook(weights.parent.name)[0]
