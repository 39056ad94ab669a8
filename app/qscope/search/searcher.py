"""Concept search over the features of the served stores: semantic, plain text, and "fires on this text".

- semantic: each live feature's text (qscope.search.semantic_text) embedded once with all-MiniLM-L6-v2
  (qscope.search.embedder; a large store indexed on a CPU: its static vectors, qscope.search.static); cosine
  top-N against the query embedded the same way, exact or through an inverted-file index
  (qscope.search.semantic, qscope.search.vectors).
- text: labels with a word starting with every query word, and features whose top tokens include a token
  equal to the query; from in-memory postings (qscope.search.text_index; SQL until they are built).
- fires: the model and SAEs run on the query itself (qscope.live.fires); features ranked by activation
  relative to their harvested max.
- explanation: the features' explanations, automatic and people's (qscope.search.explained), by words and by
  meaning; when the app gives it a source of explanations.

Results of all kinds are merged by reciprocal-rank fusion within three tiers, and each hit says which kinds found
it and why: first the hits found by an explanation that beats chance (a sentence that says the concept, and is
right about it, beats a label of tokens); then those found by meaning or by their label or top tokens; last
those found only by running the model on the query, or only by an explanation whose scores are at chance. A
feature that fires on the query's own tokens (' br' of "bracket", 'inese' of "Chinese") says what the query is
spelled with, not what it means: it adds to a hit found otherwise, and alone ranks below every meaning match.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from qscope.live.fires import strongest
from qscope.live.runner import Limits, LiveModels, LiveUnavailable, TextTooLong
from qscope.search.embedder import Embedder
from qscope.search.explained import ExplanationSearch
from qscope.search.semantic import (
    SemanticIndex,
    TextEmbedder,
    choose_embedder,
    embedder_named,
    load_cached_index,
    load_or_build_index,
)
from qscope.search.static import StaticEmbedder
from qscope.search.text_index import TextSearch
from qscope.store.queries import FeatureRow, Store

log = logging.getLogger(__name__)

Kind = Literal["explanation", "semantic", "text", "fires"]
KINDS: tuple[Kind, ...] = get_args(Kind)
RRF_K = 10  # reciprocal-rank fusion constant: a hit at rank r adds 1 / (RRF_K + r)
TIER = 1.0  # added to the fused score per tier above the last: more than all kinds together give (4 / RRF_K)
MEANING_KINDS = ("semantic", "text")  # found by what the feature's label, top tokens and contexts say
KIND_WORDS = {"semantic": "Search by meaning", "text": "Text match", "fires": "Running the model on your query"}


@dataclass
class Found:
    """Why one kind of search found a feature."""

    kind: str  # 'explanation' | 'semantic' | 'text' | 'fires'
    rank: int
    detail: str
    at_chance: bool = False  # found by an automatic explanation whose scores do not beat chance


@dataclass
class SearchHit:
    model_id: str
    row: FeatureRow
    score: float  # reciprocal-rank fusion over the kinds that found it
    found: list[Found] = field(default_factory=list)
    explanation: str | None = None  # filled by the search page, with its scores and their trust
    by: str | None = None  # who wrote it: 'auto' or 'person'
    detection: float | None = None
    fuzzing: float | None = None
    trust: str | None = None  # of an automatic one: 'beats chance', 'at chance' or 'unscored'


@dataclass
class SearchResults:
    q: str
    kinds: list[Kind]
    hits: list[SearchHit]
    notes: list[str]  # kinds that could not run, and why


def _tier(found: list[Found]) -> int:
    """0: found by an explanation worth trusting; 1: by meaning, label or top tokens; 2: only by firing on the
    query's tokens, or only by an explanation at chance."""
    if any(f.kind == "explanation" and not f.at_chance for f in found):
        return 0
    return 1 if any(f.kind in MEANING_KINDS for f in found) else 2


def _fused(found: list[Found]) -> float:
    return sum(1 / (RRF_K + f.rank) for f in found) + TIER * (2 - _tier(found))


def of_harvest_max(rel: float) -> str:
    """An activation relative to the feature's harvested max, in words: above 1 it is stronger than anything in
    the harvest, which '116% of its max' leaves unexplained."""
    if rel > 1:
        return f"{rel:.2f}x the largest in the harvest (stronger than any harvested text)"
    return f"{rel:.0%} of the largest in the harvest"


class Searcher:
    """Search across the served stores. At startup a background thread loads the semantic indexes the harvest
    built (a moment), then builds the text indexes, then the semantic index of any store that has none; until a
    store's is built, semantic search leaves that store out and says so in the results' notes."""

    def __init__(
        self,
        stores: list[Store],
        live: LiveModels,
        limits: Limits,
        cache_dir: Path | None = None,
        on_ready: Callable[[str], None] | None = None,
    ):
        """on_ready: told in one line when every index is built (the server prints it)."""
        self.stores, self.live, self.limits, self.cache_dir = stores, live, limits, cache_dir
        self.on_ready = on_ready
        self.embedder = Embedder()  # MiniLM: explanations, and the indexes it built
        self._embedders: dict[str, TextEmbedder] = {self.embedder.name: self.embedder}
        self._pick = choose_embedder("auto", "cpu", cache_dir, self.embedder)  # for a store without an index
        self._indexes: dict[Path, SemanticIndex] = {}
        self._tables: dict[Path, TextSearch] = {}
        self._errors: dict[Path, str] = {}
        self._ready = threading.Event()
        self._cached = threading.Event()  # set once the indexes the harvest built are loaded
        self._pending: set[Path] = set()  # stores whose semantic index is being built
        self._thread: threading.Thread | None = None
        self.explained: ExplanationSearch | None = None  # set by create_app: the `explanation` kind

    def warm(self) -> None:
        """Start building (or loading) every store's semantic index in a background thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._build_all, name="search-index", daemon=True)
            self._thread.start()

    def _build_all(self) -> None:
        t0 = time.perf_counter()
        for store in self.stores:  # the indexes the harvest built: loaded before anything else
            try:
                index = load_cached_index(store, self.cache_dir)
            except Exception:  # noqa: BLE001 - a cache that cannot be read is built again below
                log.exception("cached search index of %s could not be read", store.path)
                index = None
            if index is None:
                self._pending.add(store.path)
            else:
                self._indexes[store.path] = self._adopt(index)
        self._cached.set()
        for store in self.stores:  # the text index next: it is ready in seconds, the embeddings take longer
            try:
                self._tables[store.path] = TextSearch(store)
            except Exception:  # noqa: BLE001 - text search falls back to SQL
                log.exception("text index of %s failed", store.path)
        for store in self.stores:
            if store.path not in self._pending:
                continue
            try:
                self._indexes[store.path] = self._adopt(load_or_build_index(store, self._pick, self.cache_dir))
            except Exception as e:  # noqa: BLE001 - reported on the page instead of killing the thread
                log.exception("search index of %s failed", store.path)
                self._errors[store.path] = str(e)
            self._pending.discard(store.path)
        self._ready.set()
        if self.on_ready:
            n = sum(len(ix.feature_N) for ix in self._indexes.values())
            line = f"search ready: {n:,} features indexed in {time.perf_counter() - t0:.1f} s"
            failed = [f"{path.name}: {err}" for path, err in self._errors.items()]
            self.on_ready(line + (f"; no semantic search for {'; '.join(failed)}" if failed else ""))

    def ready(self) -> bool:
        """Whether every index (text and semantic) is built or loaded."""
        return self._ready.is_set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        self.warm()
        return self._ready.wait(timeout)

    def search(self, q: str, kinds: list[Kind], limit: int = 30, wait_s: float = 60.0) -> SearchResults:
        notes: list[str] = []
        found: dict[tuple[str, str, int], list[Found]] = {}
        rows: dict[tuple[str, str, int], FeatureRow] = {}
        for kind in kinds:
            try:
                hits = getattr(self, f"_{kind}")(q, limit, wait_s)
            except (LiveUnavailable, TextTooLong, RuntimeError) as e:  # one kind refusing stops none of the others
                notes.append(f"{KIND_WORDS[kind]} did not run: {e}.")
                continue
            for rank, (model_id, row, detail, *at_chance) in enumerate(hits):
                key = (model_id, row.sae_id, row.feature)
                rows[key] = row
                found.setdefault(key, []).append(Found(kind, rank, detail, bool(at_chance and at_chance[0])))
        merged = [SearchHit(key[0], rows[key], _fused(fs), fs) for key, fs in found.items()]
        merged.sort(key=lambda h: (-h.score, h.row.sae_id, h.row.feature))
        if "semantic" in kinds:
            notes += self.pending_notes()
        return SearchResults(q, kinds, merged[:limit], notes)

    def _explanation(self, q: str, limit: int, wait_s: float):
        if self.explained is None:
            return []
        stores = {s.path: s for s in self.stores}
        found = self.explained.search(q, limit)
        weak = {(e.store, e.sae_id, e.feature) for _, e, _ in found if e.at_chance and e.store in stores}
        hits = self._resolve(
            [(score, stores[e.store], e.sae_id, e.feature, why) for score, e, why in found if e.store in stores]
        )
        by_model = {(self._model_of(st, sid), sid, f) for st_path, sid, f in weak if (st := stores[st_path])}
        return [(m, row, why, (m, row.sae_id, row.feature) in by_model) for m, row, why in hits]

    def pending_notes(self) -> list[str]:
        """One note per store whose semantic index is still being built (semantic search leaves it out)."""
        return [
            f"semantic: {path.name} has no semantic index yet (its harvest did not build one); it is being built "
            "in the background, text search answers meanwhile"
            for path in sorted(self._pending)
        ]

    def _adopt(self, index: SemanticIndex) -> SemanticIndex:
        """Keep one embedder of each kind the indexes were built with (the MiniLM one shared)."""
        if index.embedder not in self._embedders:
            embedder = self._embedders[index.embedder] = embedder_named(index.embedder, self.cache_dir)
            if isinstance(embedder, StaticEmbedder):
                embedder.embed([""])  # its table loads here, in the index thread, not in the first query
        return index

    def _model_of(self, store: Store, sae_id: str) -> str:
        return store.saes[sae_id].model_id

    def _semantic(self, q: str, limit: int, wait_s: float):
        self.warm()
        if not self._cached.wait(wait_s):
            raise RuntimeError("the semantic indexes are still being loaded; try again shortly")
        for store in self.stores:
            if store.path in self._errors:
                raise RuntimeError(f"no semantic index for {store.path.name}: {self._errors[store.path]}")
        ready = [(store, self._indexes.get(store.path)) for store in self.stores]
        if not any(index is not None for _, index in ready):
            return []  # every store's index is being built: pending_notes says so
        queries = {i.embedder: self._embedders[i.embedder].embed([q])[0] for _, i in ready if i is not None}
        scored = []
        for store, index in ready:
            if index is not None:
                found = index.top(queries[index.embedder], limit)
                how = " (static vectors)" if index.embedder == StaticEmbedder.name else ""
                scored += [(score, store, sae_id, f, f"cosine {score:.2f}{how}") for sae_id, f, score in found]
        scored.sort(key=lambda s: -s[0])
        return self._resolve(scored[:limit])

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
                detail = f"{act:.2f} on {run.shown[pos] or run.tokens[pos]!r}, {of_harvest_max(rel)}"
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
