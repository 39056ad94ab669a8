"""The semantic index of one store: every live feature's text (qscope.search.semantic_text) embedded with
all-MiniLM-L6-v2 (or, for a large store built on a CPU, its static token vectors: qscope.search.static),
searched by cosine (qscope.search.vectors). The stamp names the embedder, and queries are embedded with it.

The index is cached beside the database (``FILE.duckdb.search.npy``, ``.search.keys.npz``, ``.search.ivf.npz``
and the stamp ``.search.json``) and rebuilt when the file changes; where that folder is read-only it goes to
QSCOPE_CACHE_DIR (default ``~/.cache/qscope``). `qscope harvest` builds it right after writing the store
(index_store), so the server finds it ready; a store without one gets it built by the server in the background.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from qscope.search.embedder import Embedder
from qscope.search.semantic_text import feature_texts
from qscope.search.static import StaticEmbedder
from qscope.search.text_index import INDEX_QUERY_TIMEOUT_S
from qscope.search.vectors import EXACT_MAX, Ivf, VectorIndex, key_columns
from qscope.store.paths import file_signature
from qscope.store.queries import Store

log = logging.getLogger(__name__)

INDEX_VERSION = 3  # 3: keys cached beside the vectors
Progress = Callable[[int, int], None]  # (done, total)
TextEmbedder = Embedder | StaticEmbedder
EMBEDDERS = ("auto", "minilm", "static")  # the choices of `qscope harvest --index-embedder`
STATIC_ABOVE = 50_000  # on a CPU, "auto" embeds more texts than this with the static vectors (MiniLM: ~90/s)


Pick = Callable[[int], TextEmbedder]  # the embedder for a new index of this many texts


def choose_embedder(
    choice: str = "auto", device: str = "cpu", cache_dir: Path | None = None, minilm: Embedder | None = None
) -> Pick:
    """How a new index picks its embedder: "minilm", "static", or "auto" (MiniLM on a GPU or up to STATIC_ABOVE
    texts, where it takes minutes; the static vectors above that on a CPU, where MiniLM would take hours).
    `minilm`: an instance to use rather than loading another."""
    if choice not in EMBEDDERS:
        raise ValueError(f"unknown index embedder {choice!r}: give one of {', '.join(EMBEDDERS)}")

    def pick(n_texts: int) -> TextEmbedder:
        if choice == "static" or (choice == "auto" and str(device) == "cpu" and n_texts > STATIC_ABOVE):
            return StaticEmbedder(cache_dir, device)
        return minilm or Embedder(device)

    return pick


def for_choice(choice: str, device: str = "cpu", cache_dir: Path | None = None) -> TextEmbedder | Pick:
    """What load_or_build_index takes for a `--index-embedder` choice: for "auto" a Pick (a cached index made by
    either embedder will do), else that embedder itself (a cached index must be its own)."""
    pick = choose_embedder(choice, device, cache_dir)
    return pick if choice == "auto" else pick(0)


def embedder_named(name: str, cache_dir: Path | None = None) -> TextEmbedder:
    """The embedder an index's stamp names (queries must be embedded as its texts were)."""
    if name == StaticEmbedder.name:
        return StaticEmbedder(cache_dir)
    if name == Embedder.name:
        return Embedder()
    raise ValueError(f"unknown embedder {name!r}")


class SemanticIndex:
    """Embeddings of one store's live features: row i is feature feature_N[i] of sae_ids[sae_idx_N[i]]."""

    def __init__(
        self,
        sae_ids: list[str],
        sae_idx_N: np.ndarray,
        feature_N: np.ndarray,
        vectors_ND: np.ndarray,
        ivf: Ivf | None = None,
        embedder: str = Embedder.name,
    ) -> None:
        self.sae_ids, self.sae_idx_N, self.feature_N = sae_ids, sae_idx_N, feature_N
        self.embedder = embedder  # the name of what embedded the texts: queries go through the same
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


def index_paths(store: Store | Path, cache_dir: Path | None) -> tuple[Path, Path]:
    """Where a store's index lives: beside the file when that folder is writable, else in the cache dir."""
    path = store.path if isinstance(store, Store) else Path(store).resolve()
    base = path.with_name(path.name + ".search")
    if not os.access(path.parent, os.W_OK):
        digest = hashlib.sha1(str(path).encode()).hexdigest()[:16]
        folder = cache_dir or Path.home() / ".cache" / "qscope"
        base = folder / f"{path.stem}-{digest}.search"
    return base.with_suffix(".search.npy"), base.with_suffix(".search.json")


def _side_path(npy: Path, part: str) -> Path:
    return npy.with_name(npy.name.removesuffix(".npy") + f".{part}.npz")


def _load_cached(npy: Path, sidecar: Path, stamp: dict) -> SemanticIndex | None:
    """The cached index when its stamp matches (the store file and the layout; any known embedder, named in it):
    keys, vectors and inverted file all come from the cache, so a warm start reads no feature text from the
    store."""
    try:
        found = json.loads(sidecar.read_text())
        if not _matches(found, stamp):
            return None
        embedder = found["embedder"]
        with np.load(_side_path(npy, "keys")) as z:
            sae_ids, sae_idx_N, feature_N = z["sae_ids"].tolist(), z["sae_idx"], z["feature"]
        vectors = np.load(npy)
        if vectors.shape[0] != len(feature_N):
            return None
        if len(feature_N) <= EXACT_MAX:
            return SemanticIndex(sae_ids, sae_idx_N, feature_N, vectors.astype(np.float32), embedder=embedder)
        with np.load(_side_path(npy, "ivf")) as z:
            ivf = Ivf(z["centroids"], z["order"], z["offsets"])
        return SemanticIndex(sae_ids, sae_idx_N, feature_N, vectors, ivf, embedder)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _matches(found: object, stamp: dict) -> bool:
    """A cached stamp fits when the layout and the store file are the same and its embedder is one we have."""
    return (
        isinstance(found, dict)
        and found.get("embedder") in (Embedder.name, StaticEmbedder.name)
        and {k: v for k, v in found.items() if k != "embedder"} == stamp
    )


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, allow_pickle=False, **arrays)  # numeric and str arrays only: np.load reads them without pickle
    os.replace(tmp, path)


def build_index(store: Store, embedder: TextEmbedder | Pick, progress: Progress | None = None) -> SemanticIndex:
    """A new index of every live feature of the store; progress(texts embedded, texts to embed). `embedder`: an
    embedder, or a Pick (choose_embedder) called with the number of texts once they are counted."""
    with store.reader(timeout_s=INDEX_QUERY_TIMEOUT_S) as r:
        texts = feature_texts(store, r.embedding_inputs())
    sae_ids, sae_idx_N = key_columns([t.sae_id for t in texts])
    feature_N = np.array([t.feature for t in texts], dtype=np.int64)
    unique = list(dict.fromkeys(t.text for t in texts))  # features with the same text share one embedding
    row_of = {text: i for i, text in enumerate(unique)}
    chosen = embedder if isinstance(embedder, Embedder | StaticEmbedder) else embedder(len(unique))
    log.info("indexing %d texts of %s with %s", len(unique), store.path.name, chosen.name)
    if progress is not None:
        progress(0, len(unique))
    tick = None if progress is None else (lambda n: progress(n, len(unique)))
    vectors = chosen.embed(unique, progress=tick)[[row_of[t.text] for t in texts]]
    return SemanticIndex(sae_ids, sae_idx_N, feature_N, vectors, embedder=chosen.name)


def save_index(index: SemanticIndex, npy: Path, sidecar: Path, stamp: dict) -> None:
    """Write the index files, each to a temporary name renamed into place, the stamp last: a reader that finds a
    stamp matching its store finds the files that go with it."""
    npy.parent.mkdir(parents=True, exist_ok=True)
    sidecar.unlink(missing_ok=True)  # no stamp vouches for files half replaced
    tmp = npy.with_name(npy.name + ".tmp.npy")
    np.save(tmp, index.vectors.astype(np.float16))
    os.replace(tmp, npy)
    keys = {"sae_ids": np.array(index.sae_ids, dtype=str), "sae_idx": index.sae_idx_N, "feature": index.feature_N}
    _save_npz(_side_path(npy, "keys"), **keys)
    if (ivf := index.index.ivf) is not None:
        _save_npz(_side_path(npy, "ivf"), centroids=ivf.centroids_CD, order=ivf.order_N, offsets=ivf.offsets)
    tmp_stamp = sidecar.with_name(sidecar.name + ".tmp")
    tmp_stamp.write_text(json.dumps(stamp | {"embedder": index.embedder}))
    os.replace(tmp_stamp, sidecar)


def index_stamp(store: Store | Path) -> dict:
    """What a cached index must match: the index layout and the store file (size and time). The stamp written
    beside an index adds the name of its embedder."""
    signature = store.signature if isinstance(store, Store) else file_signature(Path(store).resolve())
    return {"version": INDEX_VERSION, "db": signature}


def has_cached_index(store: Store | Path, cache_dir: Path | None = None) -> bool:
    """Whether a cached index matches the store file (its stamp only: nothing else is read)."""
    _, sidecar = index_paths(store, cache_dir)
    try:
        return _matches(json.loads(sidecar.read_text()), index_stamp(store))
    except (OSError, ValueError):
        return False


def index_embedder(store: Store | Path, cache_dir: Path | None = None) -> str | None:
    """The embedder named by the store's cached index, when one matches the file."""
    _, sidecar = index_paths(store, cache_dir)
    try:
        found = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return None
    return found["embedder"] if _matches(found, index_stamp(store)) else None


def load_cached_index(store: Store, cache_dir: Path | None = None) -> SemanticIndex | None:
    """The store's cached index when one matches the file (one the harvest built, or an earlier server), else
    None. Reads only the cache files, never the store."""
    return _load_cached(*index_paths(store, cache_dir), index_stamp(store))


def load_or_build_index(
    store: Store,
    embedder: TextEmbedder | Pick,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
) -> SemanticIndex:
    """The cached index when it matches the file (made by this embedder; by any, for a Pick), else a new one
    (written where index_paths says)."""
    npy, sidecar = index_paths(store, cache_dir)
    stamp = index_stamp(store)
    cached = _load_cached(npy, sidecar, stamp)
    fixed = embedder.name if isinstance(embedder, Embedder | StaticEmbedder) else None
    if cached is not None and fixed in (None, cached.embedder):
        return cached
    index = build_index(store, embedder, progress)
    try:
        save_index(index, npy, sidecar, stamp)
    except OSError as e:
        log.warning("could not cache the search index of %s at %s: %s", store.path, npy, e)
    return index


def index_store(
    path: Path,
    progress: Progress | None = None,
    cache_dir: Path | None = None,
    device: str = "cpu",
    embedder: str = "auto",
) -> int:
    """Build (or find) the semantic index of the store file at `path` and cache it beside it, as `qscope serve`
    would at start: the harvest calls this once the store is written (embedding on its device: a GPU's
    minutes are the CPU's hours; `embedder`: a choice of choose_embedder). Returns the features indexed."""
    store = Store(path, timeout_s=INDEX_QUERY_TIMEOUT_S)
    try:
        chosen = for_choice(embedder, device, cache_dir)
        return len(load_or_build_index(store, chosen, cache_dir, progress).feature_N)
    finally:
        store.close()
