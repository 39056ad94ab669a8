"""The inputs of a harvest, loaded and checked in one place for the single-process and the sharded harvest:
the SAE files, the model, the corpus packed into windows (or read as windows when it is pre-tokenized:
qscope.harvest.tokenized), and each SAE's `saes` row.

Any problem becomes one HarvestError line: SAE and corpus problems show before the model loads.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import torch
from torch import Tensor

from qscope.harvest.corpus import CorpusError, iter_documents, pack_windows
from qscope.harvest.ids import model_id_for, sae_id_for, unique_ids
from qscope.harvest.options import HarvestError, HarvestOptions
from qscope.harvest.pieces import Document
from qscope.harvest.tokenized import check_vocab, is_tokenized, load_windows
from qscope.model import LoadedModel, ModelLoadError, load_model
from qscope.sae import Sae, SaeFormatError, find_sae_files, load_sae


@dataclass
class HarvestInputs:
    """The loaded inputs of one harvest."""

    loaded: LoadedModel
    saes: list[Sae]  # on the harvest's device; empty when they were only checked (the sharded driver)
    infos: list[dict]  # the `saes` row of each SAE (sae_info), less what the harvest counts
    windows_NT: Tensor  # int32 [N, ctx]
    model_id: str

    @property
    def sae_ids(self) -> list[str]:
        return [info["sae_id"] for info in self.infos]


def sae_files(paths: list[Path]) -> list[Path]:
    """The SAE weight files that `paths` (files, or folders searched below) stand for: in order, no repeats."""
    files: list[Path] = []
    for path in paths:
        if not Path(path).exists():
            raise HarvestError(f"SAE path not found: {path}")
        found = find_sae_files(path) if Path(path).is_dir() else [Path(path)]
        if not found:
            raise HarvestError(f"no SAE files under {path}")
        files += [f for f in found if f.resolve() not in {g.resolve() for g in files}]
    return files


def sae_info(s: Sae, sae_id: str, model_id: str) -> dict:
    """The `saes` row of one SAE (qscope.store.schema.SaeInfo), less what the harvest counts (tokens, dead,
    hist_edges)."""
    own = ("layer", "site", "d_in", "d_sae", "k", "architecture", "format")
    return {"sae_id": sae_id, "model_id": model_id, **{c: getattr(s, c) for c in own}, "source": str(s.source)}


def check_sae(sae: Sae, loaded: LoadedModel) -> None:
    """HarvestError unless the SAE says which layer it reads and fits this model."""
    if sae.site is None:
        raise HarvestError(f"SAE {sae.source} does not say which layer it reads")
    sae.check_fits(loaded.hidden_size)
    if sae.layer is not None and sae.layer >= loaded.n_layers:
        raise HarvestError(f"SAE {sae.source} reads layer {sae.layer}; the model has {loaded.n_layers}")


def load_inputs(opts: HarvestOptions, device: torch.device | str, keep_saes: bool = True) -> HarvestInputs:
    """Load and check every input. keep_saes: keep every SAE on `device` (the single-process harvest); else
    each is read on the CPU, checked and dropped (the sharded driver, which may face hundreds)."""
    try:
        files = sae_files(opts.saes)
        kept = [load_sae(f, device=device, dtype=torch.float32) for f in files] if keep_saes else []
        max_windows = -(-opts.tokens // opts.ctx)
        tokenized = is_tokenized(opts.corpus)
        windows_NT = load_windows(opts.corpus, opts.ctx, max_windows, None) if tokenized else None
        docs = None if tokenized else _documents(opts)
        loaded = load_model(opts.model, device=device, dtype=opts.dtype)
        model_id = opts.model_id or model_id_for(opts.model)
        checked = kept or (load_sae(f, device="cpu", dtype=torch.float32) for f in files)
        infos = []
        for sae in checked:
            check_sae(sae, loaded)
            infos.append(sae_info(sae, "", model_id))
        if windows_NT is not None:
            check_vocab(opts.corpus, windows_NT.numpy(), loaded.vocab_size)
        else:
            assert docs is not None, "a corpus that is not tokenized is read as documents above"
            windows_NT = pack_windows(loaded.require_tokenizer(), docs, opts.ctx, max_windows)
    except (ModelLoadError, SaeFormatError, CorpusError, ValueError, OSError) as e:
        raise HarvestError(str(e).splitlines()[0] if str(e) else type(e).__name__) from e
    ids = unique_ids([sae_id_for(Path(i["source"]), i["layer"]) for i in infos])
    infos = [{**info, "sae_id": sae_id} for info, sae_id in zip(infos, ids, strict=True)]
    return HarvestInputs(loaded, kept, infos, windows_NT, model_id)


def _documents(opts: HarvestOptions) -> Iterator[Document]:
    """The corpus's documents, the first one read already (an empty corpus fails before the model loads)."""
    docs = iter_documents(opts.corpus)
    first = next(docs, None)
    if first is None:
        raise CorpusError(f"the corpus {opts.corpus} is empty: it holds no documents")
    return chain([first], docs)
