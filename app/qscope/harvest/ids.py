"""The stable, URL-safe ids of a harvest: ``model_id`` for a model and ``sae_id`` for each SAE.

Both appear in URLs (``/{model_id}/{sae_id}/{feature}``) and in every table of the feature store, so the rules
live here and nowhere else:

- model_id: the hub id's last part (``Qwen/Qwen3-1.7B-Base`` -> ``Qwen3-1.7B-Base``), or the checkpoint
  folder's name; a generic folder name (``model``, ``checkpoint``, ...) gives its parent's name instead
  (``data/demo/model`` -> ``demo``), and a Hugging Face cache snapshot gives its repository's name.
- sae_id: for a Qwen-Scope file ``layer{n}.sae.pt``, ``<release folder>__layer{n}``
  (``SAE-Res-Qwen3-1.7B-Base-W32K-L0_50__layer12``); for the other formats (one SAE per folder),
  ``<parent folder>__<folder>``. Ids that collide within one run get ``-2``, ``-3``, ... in run order.

URL-safe means letters, digits, ``.``, ``_`` and ``-``; any other run of characters becomes ``-``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from qscope.sae.formats.qwen_scope import FILE_RE as QWEN_SCOPE_RE

GENERIC_NAMES = {"model", "models", "checkpoint", "checkpoints", "final", "hf", "weights", "snapshots"}
_HASH_RE = re.compile(r"[0-9a-f]{40}")


def url_safe(text: str) -> str:
    """Letters, digits, '.', '_' and '-' only; never empty, never starting with '.' or '-'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip(".-") or "x"


def _folder_name(folder: Path) -> str:
    """A folder's meaningful name: a Hugging Face cache snapshot stands for its repository."""
    if _HASH_RE.fullmatch(folder.name) and folder.parent.name == "snapshots":
        return folder.parent.parent.name.split("--")[-1]
    return folder.name


def model_id_for(name_or_path: str | Path) -> str:
    """The model_id of a hub id or a local checkpoint folder (see the module docstring)."""
    path = Path(name_or_path).expanduser()
    if not path.is_dir():
        return url_safe(str(name_or_path).rstrip("/").rsplit("/", 1)[-1])
    path = path.resolve()
    name = _folder_name(path)
    if name.lower() in GENERIC_NAMES and path.parent.name:
        name = _folder_name(path.parent)
    return url_safe(name)


def sae_id_for(weights: str | Path, layer: int | None = None) -> str:
    """The sae_id of one SAE weight file (see the module docstring)."""
    path = Path(weights).resolve()
    match = QWEN_SCOPE_RE.match(path.name)
    if match or path.suffix == ".pt":
        n = match.group(1) if match else (layer if layer is not None else path.stem)
        return url_safe(f"{_folder_name(path.parent)}__layer{n}")
    folder = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return url_safe(f"{_folder_name(folder.parent)}__{_folder_name(folder)}")


def unique_ids(ids: Sequence[str]) -> list[str]:
    """The ids with repeats renamed id-2, id-3, ... (first comes first)."""
    used: set[str] = set()
    out = []
    for sae_id in ids:
        candidate, n = sae_id, 1
        while candidate in used:
            n += 1
            candidate = f"{sae_id}-{n}"
        used.add(candidate)
        out.append(candidate)
    return out
