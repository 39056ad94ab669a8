"""What every SAE format reader shares: the `SaeSpec` a reader returns, its error type, and small checks.

A reader turns files on disk into one `SaeSpec` in canonical orientation (W_enc [d_in, d_sae], W_dec
[d_sae, d_in]) with the activation-norm scale factors still separate; `qscope.sae.module.Sae` folds them in.
It checks every key and shape against the file's own key names, so an error names the file, the key and the
numbers.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_file
from torch import Tensor

from qscope.model import resid_site

ARCHITECTURES = ("relu", "topk", "batchtopk", "jumprelu", "gated")


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


def check_shapes(source: Path, tensors: Mapping[str, Tensor], dims: Mapping[str, tuple[str, ...]]) -> dict[str, int]:
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
                f"SAE file {source}: {name} has shape {shape}, expected [{want}]" + (f" ({origin})" if origin else "")
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


def peek_config(cfg_path: Path | None) -> dict[str, Any]:
    """A config read only to peek at it (the layer of an SAE found in a folder): {} when absent or unreadable,
    so that listing SAEs never fails on one bad file (loading it does, with the reason)."""
    try:
        return read_json(cfg_path) if cfg_path is not None else {}
    except SaeFormatError:
        return {}


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
            return (n - 1, resid_site(n - 1)) if n > 0 else (None, None)
        suffix = {"hook_resid_post": "", "hook_mlp_out": ".mlp", "hook_attn_out": ".self_attn"}.get(point)
        return n, None if suffix is None else resid_site(n) + suffix
    # HF module paths, relative to the CausalLM ("model.layers.N"), to its base model ("layers.N"), or doubled
    if m := re.fullmatch(r"(?:model\.){0,2}layers\.(\d+)((?:\.\w+)*)", hook):
        return int(m.group(1)), resid_site(int(m.group(1))) + m.group(2)
    m = re.search(r"(?:blocks|layers)\.(\d+)", hook)
    return (int(m.group(1)) if m else None), None


def positive(value: Any, what: str, source: Path) -> float:
    """A positive finite float (an average norm or scale factor), else a format error."""
    try:
        number = float(value.item() if isinstance(value, Tensor) else value)
    except (TypeError, ValueError, RuntimeError) as err:
        raise SaeFormatError(f"SAE {source}: {what} is {value!r}, expected a number") from err
    if not math.isfinite(number) or number <= 0:
        raise SaeFormatError(f"SAE {source}: {what} is {number}, expected a positive number")
    return number
