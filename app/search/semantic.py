"""The semantic index of one store: every live feature's text (qscope.search.texts) embedded with
all-MiniLM-L6-v2, searched by cosine (qscope.search.vectors).

The index is cached beside the database (``FILE.duckdb.search.npy``, ``.search.keys.npz``, ``.search.ivf.npz``
and the stamp ``.search.json``) and rebuilt when the file changes; where that folder is read-only it goes to
Settings.cache_dir (default ``~/.cache/qscope``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from qscope.search.embedder import Embedder
from qscope.search.text import INDEX_QUERY_TIMEOUT_S
from qscope.search.texts import feature_texts
from qscope.search.vectors import EXACT_MAX, Ivf, VectorIndex, key_columns
from qscope.store.queries import Store

log = logging.getLogger(__name__)

INDEX_VERSION = 3  # 3: keys cached beside the vectors


class SemanticIndex:
    """Embeddings of one store's live features: row i is feature feature_N[i] of sae_ids[sae_idx_N[i]]."""

    def __init__(
        self,
        sae_ids: list[str],
        sae_idx_N: np.ndarray,
        feature_N: np.ndarray,
        vectors_ND: np.ndarray,
        ivf: Ivf | None = None,
    ) -> None:
        self.sae_ids, self.sae_idx_N, self.feature_N = sae_ids, sae_idx_N, feature_N
        self.index = VectorIndex(vectors_ND, ivf) if ivf is not None else VectorIndex.build(vectors_ND)

    @property
    def keys(self) -> list[tuple[str, int]]:
        return [(self.sae_ids[s], int(f)) for s, f in zip(self.sae_idx_N, self.feature_N, strict=True)]

    @property
    def vectors(self) -> np.ndarray:
        """float32 [N, 384] in row order."""
        v = self.index.vectors_ND.astype(np.float32)
        if self.index.ivf is None:
            return v
        out = np.empty_like(v)
        out[self.index.ivf.order_N] = v
        return out

    def top(self, query_D: np.ndarray, n: int) -> list[tuple[str, int, float]]:
        return [
            (self.sae_ids[self.sae_idx_N[i]], int(self.feature_N[i]), score) for i, score in self.index.top(query_D, n)
        ]


def index_paths(store: Store, cache_dir: Path | None) -> tuple[Path, Path]:
    """Where a store's index lives: beside the file when that folder is writable, else in the cache dir."""
    base = store.path.with_name(store.path.name + ".search")
    if not os.access(store.path.parent, os.W_OK):
        digest = hashlib.sha1(str(store.path).encode()).hexdigest()[:16]
        folder = cache_dir or Path.home() / ".cache" / "qscope"
        base = folder / f"{store.path.stem}-{digest}.search"
    return base.with_suffix(".search.npy"), base.with_suffix(".search.json")


def _side_path(npy: Path, part: str) -> Path:
    return npy.with_name(npy.name.removesuffix(".npy") + f".{part}.npz")


def _load_cached(npy: Path, sidecar: Path, stamp: dict) -> SemanticIndex | None:
    """The cached index when its stamp matches: keys, vectors and inverted file all come from the cache, so a
    warm start reads no feature text from the store."""
    try:
        if json.loads(sidecar.read_text()) != stamp:
            return None
        with np.load(_side_path(npy, "keys")) as z:
            sae_ids, sae_idx_N, feature_N = z["sae_ids"].tolist(), z["sae_idx"], z["feature"]
        vectors = np.load(npy)
        if vectors.shape[0] != len(feature_N):
            return None
        if len(feature_N) <= EXACT_MAX:
            return SemanticIndex(sae_ids, sae_idx_N, feature_N, vectors.astype(np.float32))
        with np.load(_side_path(npy, "ivf")) as z:
            ivf = Ivf(z["centroids"], z["order"], z["offsets"])
        return SemanticIndex(sae_ids, sae_idx_N, feature_N, vectors, ivf)
    except (OSError, ValueError, KeyError):
        return None


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, allow_pickle=False, **arrays)  # numeric and str arrays only: np.load reads them without pickle
    os.replace(tmp, path)


def load_or_build_index(store: Store, embedder: Embedder, cache_dir: Path | None = None) -> SemanticIndex:
    """The cached index when it matches the file, else a new one (written where index_paths says)."""
    npy, sidecar = index_paths(store, cache_dir)
    stamp = {"version": INDEX_VERSION, "db": store.signature, "embedder": embedder.name}
    cached = _load_cached(npy, sidecar, stamp)
    if cached is not None:
        return cached
    with store.reader(timeout_s=INDEX_QUERY_TIMEOUT_S) as r:
        texts = feature_texts(store, r.embedding_inputs())
    sae_ids, sae_idx_N = key_columns([t.sae_id for t in texts])
    feature_N = np.array([t.feature for t in texts], dtype=np.int64)
    unique = list(dict.fromkeys(t.text for t in texts))  # features with the same text share one embedding
    row_of = {text: i for i, text in enumerate(unique)}
    vectors = embedder.embed(unique)[[row_of[t.text] for t in texts]]
    del texts, unique, row_of
    index = SemanticIndex(sae_ids, sae_idx_N, feature_N, vectors)
    try:
        npy.parent.mkdir(parents=True, exist_ok=True)
        tmp = npy.with_name(npy.name + ".tmp.npy")
        np.save(tmp, vectors.astype(np.float16))
        os.replace(tmp, npy)
        _save_npz(_side_path(npy, "keys"), sae_ids=np.array(sae_ids, dtype=str), sae_idx=sae_idx_N, feature=feature_N)
        if (ivf := index.index.ivf) is not None:
            _save_npz(_side_path(npy, "ivf"), centroids=ivf.centroids_CD, order=ivf.order_N, offsets=ivf.offsets)
        sidecar.write_text(json.dumps(stamp))  # last: the stamp vouches for the files above
    except OSError as e:
        log.warning("could not cache the search index of %s at %s: %s", store.path, npy, e)
    return index
