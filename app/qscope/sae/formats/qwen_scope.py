"""Qwen-Scope: `layer{n}.sae.pt`, a plain torch dict (W_enc [d_sae, d_in], b_enc, W_dec [d_in, d_sae], b_dec).

k is not in the file: it comes from the release's folder name (`SAE-Res-Qwen3-1.7B-Base-W32K-L0_50` -> 50) or
is given. Encoding is top-k of `x @ W_enc.T + b_enc`, then ReLU; the site is the output of decoder layer n.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch
from torch import Tensor

from qscope.model import first_line, refused_pickle, resid_site
from qscope.sae.formats.common import (
    SaeFormatError,
    SaeSpec,
    check_shapes,
    require_keys,
)

FILE_RE = re.compile(r"^layer(\d+)\.sae\.pt$")
# the L0 in a Qwen-Scope repo name, "SAE-Res-Qwen3-1.7B-Base-W32K-L0_50" (also inside an HF cache folder)
L0_RE = re.compile(r"(?:^|[-_.])L0_(\d+)(?!\d)")
DIMS = {"W_enc": ("d_sae", "d_in"), "b_enc": ("d_sae",), "W_dec": ("d_in", "d_sae"), "b_dec": ("d_in",)}


def top_k_from_path(path: Path) -> int | None:
    """The k of a Qwen-Scope release, read from the nearest folder named like `...-L0_50`."""
    for folder in path.parents:
        if m := L0_RE.search(folder.name):
            return int(m.group(1))
    return None


def peek_layer(path: Path, cfg_path: Path | None) -> int | None:
    """The layer in the file name (`layer12.sae.pt` -> 12), or None."""
    m = FILE_RE.match(path.name)
    return int(m.group(1)) if m else None


def read(path: Path, cfg_path: Path | None, k: int | None) -> SaeSpec:
    """`layer{n}.sae.pt`: W_enc [d_sae, d_in], b_enc, W_dec [d_in, d_sae], b_dec; top-k, then ReLU."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise SaeFormatError(f"SAE file {path} is {refused_pickle(err)}") from None
    except Exception as err:  # a non-torch file fails anywhere from UnpicklingError to RuntimeError
        raise SaeFormatError(f"SAE file {path} is not a torch file of Qwen-Scope weights: {first_line(err)}") from err
    if not isinstance(state, dict):
        raise SaeFormatError(f"SAE file {path} holds a {type(state).__name__}, expected a dict of tensors")
    require_keys(path, state, list(DIMS), "a Qwen-Scope SAE")
    if bad := [key for key in DIMS if not isinstance(state[key], Tensor)]:
        raise SaeFormatError(f"SAE file {path}: {', '.join(bad)} should be tensors")
    check_shapes(path, state, DIMS)
    k = k if k is not None else top_k_from_path(path)
    if k is None:
        raise SaeFormatError(
            f"SAE file {path}: Qwen-Scope files do not store k and no folder above it is named like "
            "'...-L0_<k>'; pass k (the release's L0, e.g. 50 or 100)"
        )
    layer = peek_layer(path, None)
    return SaeSpec(
        W_enc_DF=state["W_enc"].T,
        b_enc_F=state["b_enc"],
        W_dec_FD=state["W_dec"].T,
        b_dec_D=state["b_dec"],
        architecture="topk",
        k=k,
        layer=layer,
        site=None if layer is None else resid_site(layer),
        source=path,
        format="qwen-scope",
    )


def save(path: Path, W_enc_FD: Tensor, b_enc_F: Tensor, W_dec_DF: Tensor, b_dec_D: Tensor) -> None:
    """Write a Qwen-Scope layer file: a dict of fp32 CPU tensors, W_enc [d_sae, d_in], W_dec [d_in, d_sae]."""
    path = Path(path)
    tensors = {"W_enc": W_enc_FD, "b_enc": b_enc_F, "W_dec": W_dec_DF, "b_dec": b_dec_D}
    check_shapes(path, tensors, DIMS)
    path.parent.mkdir(parents=True, exist_ok=True)
    # clone: a view would save the whole storage it points into
    torch.save({name: t.detach().to("cpu", torch.float32).contiguous().clone() for name, t in tensors.items()}, path)
