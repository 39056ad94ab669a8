"""Finding and loading SAEs: which format a path holds (detection, in one place), and `load_sae`.

`load_sae` looks at what a path holds, hands it to that format's reader (qscope.sae.formats: Qwen-Scope, SAELens,
Llama Scope, sparsify; each has the same two functions, `read` and `peek_layer`) and builds an `Sae` from the
`SaeSpec` it returns.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch

from qscope.model import resid_site
from qscope.sae.formats import llamascope, qwen_scope, saelens, sparsify
from qscope.sae.formats.common import SaeFormatError, SaeSpec
from qscope.sae.module import Sae


class FormatReader(NamedTuple):
    """One release format: read its files into an SaeSpec; tell the layer from the name or config alone."""

    read: Callable[[Path, Path | None, int | None], SaeSpec]  # (weights, config file, k) -> spec
    peek_layer: Callable[[Path, Path | None], int | None]  # (weights, config file) -> layer, no weights read


READERS = {
    "qwen-scope": FormatReader(qwen_scope.read, qwen_scope.peek_layer),
    "saelens": FormatReader(saelens.read, saelens.peek_layer),
    "llamascope": FormatReader(llamascope.read, llamascope.peek_layer),
    "sparsify": FormatReader(sparsify.read, sparsify.peek_layer),
}
CONFIG_NAMES = ("cfg.json", "config.json", "hyperparams.json")
LOOKED_FOR = (
    "layer<n>.sae.pt (Qwen-Scope); cfg.json + sae_weights.safetensors (SAELens); config.json or "
    "hyperparams.json + sae_weights.safetensors or checkpoints/final.safetensors (Llama Scope); "
    "cfg.json + sae.safetensors (sparsify)"
)


def load_sae(
    path: str | Path,
    *,
    k: int | None = None,
    layer: int | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> Sae:
    """Read the SAE at `path` (a weight file or the folder holding one), whatever its format.

    k: the top-k of a Qwen-Scope file (else read from a folder named `...-L0_<k>`); for other top-k SAEs it
    replaces the file's k; other architectures ignore it.
    layer: picks that layer's SAE from a folder holding several; names the layer of an SAE that does not say.
    """
    path = Path(path)
    if not path.exists():
        raise SaeFormatError(f"SAE path {path} does not exist")
    weights = _pick_weights(path, layer)
    found = identify(weights, explicit=True)
    if found is None:
        raise SaeFormatError(f"SAE file {weights} is not one qscope reads; it looks for {LOOKED_FOR}")
    fmt, cfg = found
    spec = READERS[fmt].read(weights, cfg, k)
    if k is not None and spec.architecture in ("topk", "batchtopk"):
        spec.k = k
    if layer is not None and spec.layer is None:
        spec.layer, spec.site = layer, spec.site or resid_site(layer)
    elif layer is not None and spec.layer != layer:
        raise SaeFormatError(f"SAE {weights} reads layer {spec.layer} ({spec.hook_name}) but layer={layer} was asked")
    return Sae(spec, device=device, dtype=dtype)


def identify(weights: Path, explicit: bool = False) -> tuple[str, Path | None] | None:
    """(format, config file) for an SAE weight file, or None. `explicit`: the caller named this very file."""
    name, here = weights.name, weights.parent
    if qwen_scope.FILE_RE.match(name) or (explicit and weights.suffix == ".pt"):
        return "qwen-scope", None
    if weights.suffix != ".safetensors":
        return None
    if name == "sae.safetensors":
        return ("sparsify", here / "cfg.json") if (here / "cfg.json").is_file() else None
    in_checkpoints = name == "final.safetensors" and here.name == "checkpoints"
    if in_checkpoints:
        # lm-saes reads checkpoints/final.safetensors only when its folder has no sae_weights.safetensors
        if not explicit and (here.parent / "sae_weights.safetensors").is_file():
            return None
        here = here.parent
    elif name != "sae_weights.safetensors" and not explicit:
        return None
    if not in_checkpoints and (here / "cfg.json").is_file():
        return "saelens", here / "cfg.json"
    for cfg_name in ("config.json", "hyperparams.json"):
        if (here / cfg_name).is_file():
            return "llamascope", here / cfg_name
    return None


def _pick_weights(path: Path, layer: int | None) -> Path:
    """The one weight file `path` stands for: itself, its folder's SAE, or that folder's SAE for `layer`."""
    if path.is_file() and path.name not in CONFIG_NAMES:
        return path
    folder = path.parent if path.is_file() else path
    found = find_sae_files(folder)
    own = [f for f in found if f.parent == folder or (f.parent.name == "checkpoints" and f.parent.parent == folder)]
    if len(own) == 1:  # the folder is one SAE (load_sae checks `layer` against it)
        return own[0]
    if layer is not None:
        found = [f for f in found if _layer_of(f) == layer]
    if len(found) == 1:
        return found[0]
    if not found:
        at = f" for layer {layer}" if layer is not None else ""
        raise SaeFormatError(f"SAE folder {folder} holds no SAE{at}; looked in it and below for {LOOKED_FOR}")
    names = ", ".join(str(f.relative_to(folder)) for f in found[:6]) + (", ..." if len(found) > 6 else "")
    raise SaeFormatError(f"SAE folder {folder} holds {len(found)} SAEs ({names}); pass one of them, or layer=")


def _layer_of(weights: Path) -> int | None:
    """The layer an SAE file reads, from its name or config alone (no weights loaded); None if unknown."""
    found = identify(weights)
    return READERS[found[0]].peek_layer(weights, found[1]) if found else None


def find_sae_files(root: str | Path) -> list[Path]:
    """Every SAE weight file under `root` (hidden folders skipped), sorted by layer, then by path."""
    root = Path(root)
    if root.is_file():
        return [root] if identify(root) else []
    found = [
        f
        for f in root.rglob("*")
        if not any(part.startswith(".") for part in f.relative_to(root).parts) and f.is_file() and identify(f)
    ]
    keyed = [(_layer_of(f), f) for f in found]
    return [f for layer, f in sorted(keyed, key=lambda lf: (lf[0] is None, lf[0] or 0, str(lf[1])))]
