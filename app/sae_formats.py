"""Readers for the SAE release formats qscope understands, each turning files on disk into one `SaeSpec`.

Formats (REFERENCE.md sections 1 and 2):
- Qwen-Scope   `layer{n}.sae.pt`, a plain torch dict, W_enc [d_sae, d_in] and W_dec [d_in, d_sae]
- SAELens      `cfg.json` + `sae_weights.safetensors` (v6 and older configs)
- Llama Scope  OpenMOSS lm-saes / Llamascopium: `config.json` (or `hyperparams.json`) +
               `sae_weights.safetensors` or `checkpoints/final.safetensors`, keys W_E / b_E / W_D / b_D
- sparsify     EleutherAI: `cfg.json` + `sae.safetensors`, one folder per hook

A reader checks every key and shape against the file's own key names, so an error names the file, the key and
the numbers. It returns the weights in canonical orientation (W_enc [d_in, d_sae], W_dec [d_sae, d_in]) with
the activation-norm scale factors still separate; `app.sae.Sae` folds them in.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor

QWEN_SCOPE_RE = re.compile(r"^layer(\d+)\.sae\.pt$")
# the L0 in a Qwen-Scope repo name, "SAE-Res-Qwen3-1.7B-Base-W32K-L0_50" (also inside an HF cache folder)
L0_RE = re.compile(r"(?:^|[-_.])L0_(\d+)(?!\d)")
ARCHITECTURES = ("relu", "topk", "batchtopk", "jumprelu", "gated")
QWEN_SCOPE_DIMS = {"W_enc": ("d_sae", "d_in"), "b_enc": ("d_sae",), "W_dec": ("d_in", "d_sae"),
                   "b_dec": ("d_in",)}  # fmt: skip
# the [d_sae] vectors of SAELens files; scaling_factor is the old "finetuning scaling factor"
SAE_VECTORS = ("b_enc", "threshold", "b_gate", "b_mag", "r_mag", "scaling_factor")


class SaeFormatError(ValueError):
    """A path that does not hold a readable SAE; the message names the file and the numbers involved."""


@dataclass
class SaeSpec:
    """Everything a reader found in one SAE, in canonical orientation, before it becomes an `Sae`."""

    W_enc_DF: Tensor
    b_enc_F: Tensor
    W_dec_FD: Tensor
    b_dec_D: Tensor
    architecture: str = "relu"  # one of ARCHITECTURES
    k: int | None = None  # top-k SAEs only
    threshold_F: Tensor | None = None  # jumprelu: keep pre where pre > threshold
    b_gate_F: Tensor | None = None  # gated only
    b_mag_F: Tensor | None = None
    r_mag_F: Tensor | None = None
    # top-k ranks features by pre * rank_scale but keeps pre itself (lm-saes sparsity_include_decoder_norm)
    rank_scale_F: Tensor | None = None
    apply_b_dec_to_input: bool = False  # subtract b_dec from x before encoding (SAELens, sparsify)
    input_scale: float = 1.0  # the SAE was trained on x * input_scale
    output_scale: float | None = None  # its reconstruction is of y * output_scale; None: same as input_scale
    layer: int | None = None
    site: str | None = None
    hook_name: str | None = None
    source: Path = Path("<memory>")
    format: str = "qwen-scope"


# ------------------------------------------------------------------------------------------------
# small helpers shared by the readers


def check_shapes(
    source: Path, tensors: Mapping[str, Tensor], dims: Mapping[str, tuple[str, ...]]
) -> dict[str, int]:
    """Check each named tensor against symbolic dims ("d_in", "d_sae"); return the sizes bound to them.

    The first tensor that mentions a dim fixes it, so a mismatch reads like
    "W_dec has shape [16, 9], expected [d_sae=16, d_in=8] (d_in=8 from W_enc [8, 16])".
    """
    bound: dict[str, tuple[int, str]] = {}
    for name, names in dims.items():
        if name not in tensors:
            continue
        shape = list(tensors[name].shape)
        pairs = list(zip(shape, names, strict=False))
        if len(shape) != len(names) or any(bound.get(dim, (size,))[0] != size for size, dim in pairs):
            want = ", ".join(f"{dim}={bound[dim][0]}" if dim in bound else dim for dim in names)
            origin = "; ".join(f"{dim}={bound[dim][0]} from {bound[dim][1]}" for dim in names if dim in bound)
            raise SaeFormatError(
                f"SAE file {source}: {name} has shape {shape}, expected [{want}]"
                + (f" ({origin})" if origin else "")
            )
        for size, dim in pairs:
            bound.setdefault(dim, (size, f"{name} {shape}"))
    return {dim: size for dim, (size, _) in bound.items()}


def require_keys(source: Path, state: Mapping[str, Any], keys: list[str], what: str) -> None:
    missing = [key for key in keys if key not in state]
    if missing:
        found = ", ".join(sorted(state)[:12]) or "nothing"
        raise SaeFormatError(f"SAE file {source} lacks {', '.join(missing)} for {what} (found: {found})")


def read_json(path: Path) -> dict[str, Any]:
    try:
        cfg = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SaeFormatError(f"SAE config {path} could not be read as JSON: {err}") from err
    if not isinstance(cfg, dict):
        raise SaeFormatError(f"SAE config {path} holds a {type(cfg).__name__}, expected a JSON object")
    return cfg


def read_safetensors(path: Path) -> dict[str, Tensor]:
    try:
        return load_file(path)
    except Exception as err:  # safetensors raises its own error types, and OSError for a missing file
        raise SaeFormatError(f"SAE file {path} is not a readable safetensors file: {err}") from err


def cfg_int(cfg: Mapping[str, Any], key: str, source: Path) -> int | None:
    """An integer config value, or None when absent; anything else is a format error."""
    value = cfg.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise SaeFormatError(f"SAE config {source}: {key} is {value!r}, expected a whole number")
    return int(value)


def check_config_sizes(
    cfg: Mapping[str, Any], cfg_path: Path, sizes: Mapping[str, int], keys: Mapping[str, str]
) -> None:
    """The sizes a config states (config key -> dim) must match the weights'."""
    for key, dim in keys.items():
        if cfg_int(cfg, key, cfg_path) not in (None, 0, sizes[dim]):
            raise SaeFormatError(f"SAE config {cfg_path} says {key}={cfg[key]}; the weights say {sizes[dim]}")


def site_from_hook(hook: str | None) -> tuple[int | None, str | None]:
    """(decoder layer, Hugging Face module path) for a hook name from a TransformerLens or HF config.

    `blocks.N.hook_resid_post` is the output of decoder layer N, `model.layers.N`; `blocks.N.hook_resid_pre`
    is the output of layer N-1 (N=0 is the embeddings: no layer, no site). Hooks with no HF module of their
    own (resid_mid, attn.hook_z, ...) keep their layer and get no site.
    """
    if not hook:
        return None, None
    if m := re.fullmatch(r"blocks\.(\d+)\.(\w+)", hook):
        n, point = int(m.group(1)), m.group(2)
        if point == "hook_resid_pre":
            return (n - 1, f"model.layers.{n - 1}") if n > 0 else (None, None)
        suffix = {"hook_resid_post": "", "hook_mlp_out": ".mlp", "hook_attn_out": ".self_attn"}.get(point)
        return n, None if suffix is None else f"model.layers.{n}{suffix}"
    # HF module paths, relative to the CausalLM ("model.layers.N"), to its base model ("layers.N"), or doubled
    if m := re.fullmatch(r"(?:model\.){0,2}layers\.(\d+)((?:\.\w+)*)", hook):
        return int(m.group(1)), f"model.layers.{m.group(1)}{m.group(2)}"
    m = re.search(r"(?:blocks|layers)\.(\d+)", hook)
    return (int(m.group(1)) if m else None), None


def top_k_from_path(path: Path) -> int | None:
    """The k of a Qwen-Scope release, read from the nearest folder named like `...-L0_50`."""
    for folder in path.parents:
        if m := L0_RE.search(folder.name):
            return int(m.group(1))
    return None


def _positive(value: Any, what: str, source: Path) -> float:
    """A positive finite float (an average norm or scale factor), else a format error."""
    try:
        number = float(value.item() if isinstance(value, Tensor) else value)
    except (TypeError, ValueError, RuntimeError) as err:
        raise SaeFormatError(f"SAE {source}: {what} is {value!r}, expected a number") from err
    if not math.isfinite(number) or number <= 0:
        raise SaeFormatError(f"SAE {source}: {what} is {number}, expected a positive number")
    return number


def _fold_decoder_norm(W_enc_DF: Tensor, b_enc_F: Tensor, W_dec_FD: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Unit-norm decoder rows, their norms moved into the encoder: same reconstruction, pre times norm."""
    norm_F = W_dec_FD.float().norm(dim=-1)
    return W_enc_DF * norm_F, b_enc_F * norm_F, W_dec_FD / norm_F[:, None]


# ------------------------------------------------------------------------------------------------
# Qwen-Scope


def read_qwen_scope(path: Path, k: int | None) -> SaeSpec:
    """`layer{n}.sae.pt`: W_enc [d_sae, d_in], b_enc, W_dec [d_in, d_sae], b_dec; top-k, then ReLU."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a non-torch file fails anywhere from UnpicklingError to RuntimeError
        raise SaeFormatError(f"SAE file {path} is not a torch file of Qwen-Scope weights: {err}") from err
    if not isinstance(state, dict):
        raise SaeFormatError(f"SAE file {path} holds a {type(state).__name__}, expected a dict of tensors")
    require_keys(path, state, list(QWEN_SCOPE_DIMS), "a Qwen-Scope SAE")
    if bad := [key for key in QWEN_SCOPE_DIMS if not isinstance(state[key], Tensor)]:
        raise SaeFormatError(f"SAE file {path}: {', '.join(bad)} should be tensors")
    check_shapes(path, state, QWEN_SCOPE_DIMS)
    k = k if k is not None else top_k_from_path(path)
    if k is None:
        raise SaeFormatError(
            f"SAE file {path}: Qwen-Scope files do not store k and no folder above it is named like "
            "'...-L0_<k>'; pass k (the release's L0, e.g. 50 or 100)"
        )
    layer = peek_layer("qwen-scope", path, None)
    return SaeSpec(
        W_enc_DF=state["W_enc"].T, b_enc_F=state["b_enc"], W_dec_FD=state["W_dec"].T, b_dec_D=state["b_dec"],
        architecture="topk", k=k, layer=layer, site=None if layer is None else f"model.layers.{layer}",
        source=path, format="qwen-scope",
    )  # fmt: skip


# ------------------------------------------------------------------------------------------------
# SAELens


def _saelens_hooks(cfg: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(TransformerLens hook name, HF module path) from a v6 config (under metadata) or an older one."""
    meta = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}
    hook = meta.get("hook_name") or cfg.get("hook_name") or cfg.get("hook_point")
    return hook, meta.get("hf_hook_name") or cfg.get("hf_hook_name")


def _saelens_architecture(cfg: Mapping[str, Any], cfg_path: Path) -> str:
    act_fn = cfg.get("activation_fn") or cfg.get("activation_fn_str") or "relu"
    arch = cfg.get("architecture") or "standard"
    if arch == "standard" and act_fn == "topk":  # pre-v6 top-k: activation_fn "topk", kwargs {"k": ...}
        arch = "topk"
    if arch == "standard" and act_fn != "relu":
        raise SaeFormatError(f"SAE config {cfg_path}: activation_fn {act_fn!r} is not supported")
    if arch not in ("standard", "topk", "batchtopk", "jumprelu", "gated"):
        raise SaeFormatError(f"SAE config {cfg_path}: architecture {arch!r} is not supported")
    return "relu" if arch == "standard" else arch


def _saelens_scale(cfg: Mapping[str, Any], cfg_path: Path) -> float:
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
            return _positive(cfg[key], key, cfg_path)
    scaler = cfg_path.parent / "activation_scaler.json"
    if scaler.is_file() and read_json(scaler).get("scaling_factor") is not None:
        return _positive(read_json(scaler)["scaling_factor"], "scaling_factor", scaler)
    raise SaeFormatError(
        f"SAE config {cfg_path}: normalize_activations is 'expected_average_only_in' but no scaling "
        f"factor was found (cfg 'scaling_factor' / 'norm_scaling_factor', or {scaler.name} beside it)"
    )


def _saelens_top_k(cfg: Mapping[str, Any], cfg_path: Path, arch: str) -> int:
    kwargs = cfg.get("activation_fn_kwargs") if isinstance(cfg.get("activation_fn_kwargs"), dict) else {}
    raw_k = cfg.get("k", kwargs.get("k"))
    if raw_k is None:
        raise SaeFormatError(f"SAE config {cfg_path}: a {arch} SAE needs k (or activation_fn_kwargs.k)")
    return max(1, round(_positive(raw_k, "k", cfg_path)))  # batchtopk's k may be fractional


def read_saelens(weights: Path, cfg_path: Path) -> SaeSpec:
    """SAELens `cfg.json` + `sae_weights.safetensors`, v6 (`metadata.hook_name`) or older (`hook_point`)."""
    cfg = read_json(cfg_path)
    arch = _saelens_architecture(cfg, cfg_path)
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
    threshold_F, k = state.get("threshold"), None
    if arch == "batchtopk" and threshold_F is None and "topk_threshold" in state:
        threshold_F = state["topk_threshold"].reshape(()).expand(sizes["d_sae"]).clone()
    if arch == "batchtopk" and threshold_F is not None:
        # BatchTopK's learned global threshold is its inference rule (SAELens saves it as jumprelu)
        arch = "jumprelu"
    if arch in ("topk", "batchtopk"):
        # A batchtopk SAE with no threshold keeps k per token *on average over a batch*; one token at a time,
        # per-token top-k with the same k is the nearest rule that does not depend on the batch.
        k = _saelens_top_k(cfg, cfg_path, arch)
        if cfg.get("rescale_acts_by_decoder_norm"):
            W_enc_DF, b_enc_F, W_dec_FD = _fold_decoder_norm(W_enc_DF, b_enc_F, W_dec_FD)
    hook, hf_hook = _saelens_hooks(cfg)
    layer, site = site_from_hook(hf_hook or hook)
    return SaeSpec(
        W_enc_DF=W_enc_DF, b_enc_F=b_enc_F, W_dec_FD=W_dec_FD, b_dec_D=state["b_dec"], architecture=arch, k=k,
        threshold_F=threshold_F, b_gate_F=state.get("b_gate"), b_mag_F=state.get("b_mag"),
        r_mag_F=state.get("r_mag"), apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
        input_scale=_saelens_scale(cfg, cfg_path), layer=layer, site=site, hook_name=hook or hf_hook,
        source=weights, format="saelens",
    )  # fmt: skip


# ------------------------------------------------------------------------------------------------
# Llama Scope (OpenMOSS lm-saes / Llamascopium)

# lm-saes names its parameters W_E [d, F], b_E, W_D [F, d], b_D; releases before that used nn.Linear names
LINEAR_NAMES = {"encoder.weight": "W_E", "encoder.bias": "b_E", "decoder.weight": "W_D",
                "decoder.bias": "b_D"}  # fmt: skip


def _llamascope_hook(cfg: Mapping[str, Any]) -> str | None:
    return cfg.get("hook_point_in") or cfg.get("hook_point")


def _llamascope_norm(cfg: Mapping[str, Any], state: Mapping[str, Tensor], hook: str, side: str) -> Any:
    """The dataset average activation norm of one side ("in" / "out"), or None when the SAE has none."""
    for key in (f"dataset_average_activation_norm.{hook}", f"dataset_average_activation_norm.{side}"):
        if key in state:
            return state[key]
    norms = cfg.get("dataset_average_activation_norm")
    if not isinstance(norms, dict):
        return None
    return next((norms[key] for key in (hook, side) if norms.get(key) is not None), None)


def _llamascope_scales(
    cfg: Mapping[str, Any], state: Mapping[str, Tensor], d: int, weights: Path
) -> tuple[float, float]:
    """(input scale, output scale): lm-saes "dataset-wise" feeds the SAE x * sqrt(d) / average norm."""
    mode = cfg.get("norm_activation", "dataset-wise")
    if mode == "inference":  # already folded by lm-saes
        return 1.0, 1.0
    if mode != "dataset-wise":
        raise SaeFormatError(f"SAE {weights}: norm_activation {mode!r} (per-token/batch) is not supported")
    hook_in = str(_llamascope_hook(cfg))
    norm_in = _llamascope_norm(cfg, state, hook_in, "in")
    if norm_in is None:
        raise SaeFormatError(
            f"SAE file {weights}: norm_activation is 'dataset-wise' but there is no "
            f"dataset_average_activation_norm.{hook_in} (or .in) in it or in its config"
        )
    norm_out = _llamascope_norm(cfg, state, str(cfg.get("hook_point_out") or hook_in), "out")
    norm_out = norm_in if norm_out is None else norm_out
    what = "dataset_average_activation_norm"
    return math.sqrt(d) / _positive(norm_in, what, weights), math.sqrt(d) / _positive(norm_out, what, weights)


def _llamascope_threshold(
    cfg: Mapping[str, Any], state: Mapping[str, Tensor], d_sae: int, path: Path
) -> Tensor:
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


def _llamascope_weights(cfg: Mapping[str, Any], weights: Path) -> dict[str, Tensor]:
    """W_E [d, F], b_E, W_D [F, d], b_D (zeros when the SAE has no decoder bias), shapes checked."""
    state = read_safetensors(weights)
    if "W_E" not in state and "encoder.weight" in state:
        state = {LINEAR_NAMES.get(key, key): t.T if t.ndim == 2 and key in LINEAR_NAMES else t
                 for key, t in state.items()}  # fmt: skip
    use_b_D = bool(cfg.get("use_decoder_bias", True))
    require_keys(weights, state, ["W_E", "b_E", "W_D"] + (["b_D"] if use_b_D else []), "a Llama Scope SAE")
    dims = {"W_E": ("d_in", "d_sae"), "W_D": ("d_sae", "d_in"), "b_E": ("d_sae",), "b_D": ("d_in",)}
    check_shapes(weights, state, dims)
    if not use_b_D:
        state["b_D"] = torch.zeros(state["W_D"].shape[1], dtype=state["W_D"].dtype)
    return state


def read_llamascope(weights: Path, cfg_path: Path) -> SaeSpec:
    """lm-saes `config.json` + `sae_weights.safetensors` (or `checkpoints/final.safetensors`)."""
    cfg = read_json(cfg_path)
    if cfg.get("sae_type", "sae") != "sae" or cfg.get("use_glu_encoder"):
        raise SaeFormatError(f"SAE config {cfg_path}: sae_type {cfg.get('sae_type')!r} is not a plain SAE")
    act_fn = str(cfg.get("act_fn", "relu")).lower()
    if act_fn not in ("relu", "topk", "batchtopk", "jumprelu"):
        raise SaeFormatError(f"SAE config {cfg_path}: act_fn {act_fn!r} is not supported")
    state = _llamascope_weights(cfg, weights)
    d, d_sae = state["W_D"].shape[1], state["W_D"].shape[0]
    check_config_sizes(cfg, cfg_path, {"d_in": d}, {"d_model": "d_in"})
    in_scale, out_scale = _llamascope_scales(cfg, state, d, weights)
    # sparsity_include_decoder_norm: the activation function sees pre * |W_D row| and passes pre through
    norm_F = state["W_D"].float().norm(dim=-1) if cfg.get("sparsity_include_decoder_norm", True) else None
    threshold_F = rank_scale_F = k = None
    arch = act_fn
    if act_fn == "jumprelu" or (act_fn == "batchtopk" and any("jumprelu" in key for key in state)):
        arch, threshold_F = "jumprelu", _llamascope_threshold(cfg, state, d_sae, weights)
        if norm_F is not None:  # pre * norm > t  <=>  pre > t / norm
            threshold_F = threshold_F / norm_F
    elif act_fn in ("topk", "batchtopk"):  # batchtopk with no threshold: per-token top-k, as for SAELens
        rank_scale_F, k = norm_F, cfg_int(cfg, "top_k", cfg_path) or 50  # 50: lm-saes' default top_k
    layer, site = site_from_hook(_llamascope_hook(cfg))
    return SaeSpec(
        W_enc_DF=state["W_E"], b_enc_F=state["b_E"], W_dec_FD=state["W_D"], b_dec_D=state["b_D"],
        architecture=arch, k=k, threshold_F=threshold_F, rank_scale_F=rank_scale_F,
        apply_b_dec_to_input=bool(cfg.get("apply_decoder_bias_to_pre_encoder", False)), input_scale=in_scale,
        output_scale=out_scale, layer=layer, site=site, hook_name=_llamascope_hook(cfg), source=weights,
        format="llamascope",
    )  # fmt: skip


# ------------------------------------------------------------------------------------------------
# EleutherAI sparsify


def read_sparsify(weights: Path, cfg_path: Path) -> SaeSpec:
    """sparsify `cfg.json` + `sae.safetensors`: top-k of relu(encoder(x - b_dec)); folder = hook name."""
    cfg = read_json(cfg_path)
    if cfg.get("transcode") or cfg.get("skip_connection"):
        raise SaeFormatError(f"SAE config {cfg_path}: a sparsify transcoder (transcode / skip_connection)")
    if cfg.get("activation", "topk") != "topk":
        raise SaeFormatError(f"SAE config {cfg_path}: activation {cfg['activation']!r} is not supported")
    state = read_safetensors(weights)
    dims = {"encoder.weight": ("d_sae", "d_in"), "encoder.bias": ("d_sae",), "W_dec": ("d_sae", "d_in"),
            "b_dec": ("d_in",)}  # fmt: skip
    require_keys(weights, state, list(dims), "a sparsify SAE")
    sizes = check_shapes(weights, state, dims)
    check_config_sizes(cfg, cfg_path, sizes, {"d_in": "d_in", "num_latents": "d_sae"})
    k = cfg_int(cfg, "k", cfg_path)
    if k is None:
        raise SaeFormatError(f"SAE config {cfg_path} has no k")
    layer, site = site_from_hook(weights.parent.name)
    return SaeSpec(
        W_enc_DF=state["encoder.weight"].T, b_enc_F=state["encoder.bias"], W_dec_FD=state["W_dec"],
        b_dec_D=state["b_dec"], architecture="topk", k=k, apply_b_dec_to_input=True, layer=layer, site=site,
        hook_name=weights.parent.name, source=weights, format="sparsify",
    )  # fmt: skip


# ------------------------------------------------------------------------------------------------


def peek_layer(fmt: str, weights: Path, cfg_path: Path | None) -> int | None:
    """The layer an SAE reads, from its file name or config alone (no weights loaded); None if unknown."""
    if fmt == "qwen-scope":
        m = QWEN_SCOPE_RE.match(weights.name)
        return int(m.group(1)) if m else None
    if fmt == "sparsify":
        return site_from_hook(weights.parent.name)[0]
    try:
        cfg = read_json(cfg_path) if cfg_path is not None else {}
    except SaeFormatError:
        return None
    if fmt == "saelens":
        hook, hf_hook = _saelens_hooks(cfg)
        return site_from_hook(hf_hook or hook)[0]
    return site_from_hook(_llamascope_hook(cfg))[0]
