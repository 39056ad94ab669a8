"""`/search?q=`: concept search (semantic, text match, features that fire on the query), merged.

A search can take long (it may run the model, or wait its turn for the embedder while an index is built). It is
answered on threads of its own, at most QSCOPE_SEARCH_THREADS at once: searches waiting their turn wait in the
event loop, so the worker threads that serve every other page are never all taken by searches.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Annotated

from anyio import CapacityLimiter, to_thread
from fastapi import APIRouter, Query, Request

from qscope.explain.notes import Note, UserList
from qscope.search.searcher import KINDS, Kind, Searcher, SearchResults
from qscope.web import rates
from qscope.web.deps import SearcherDep
from qscope.web.render import jsonable, render
from qscope.web.twins import TwinRoute

router = APIRouter(route_class=TwinRoute)


def _limiter(request: Request) -> CapacityLimiter:
    """The app's search threads (made on first use: a limiter belongs to the running event loop)."""
    state = request.app.state
    if getattr(state, "search_limiter", None) is None:
        state.search_limiter = CapacityLimiter(state.settings.search.threads)
    return state.search_limiter


@router.get("/search", dependencies=[rates.SEARCH_FIRES])
async def search_page(
    request: Request,
    searcher: SearcherDep,
    q: str = "",
    kind: Annotated[list[Kind] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 30,
):
    q = q.strip()  # a query too long for a kind is refused by that kind alone (a note says so); the others run
    kinds = list(dict.fromkeys(kind)) if kind else list(KINDS)
    answer = partial(_answer, request, searcher, q, kinds, limit)
    return await to_thread.run_sync(answer, limiter=_limiter(request))


def _answer(request: Request, searcher: Searcher, q: str, kinds: list[Kind], limit: int):
    results = searcher.search(q, kinds, limit=limit) if q else SearchResults(q, kinds, [], [])
    words = people_words(request, results, q)
    context = {"r": results, "all_kinds": KINDS, "words": words}
    data = {**jsonable(results), "user_notes": jsonable(words.notes), "user_lists": jsonable(words.lists)}
    return render(request, "search.html", context, data=data, partial="_search_results.html")


@dataclass
class PeopleWords:
    notes: list[Note]
    lists: list[UserList]


def people_words(request: Request, results: SearchResults, q: str) -> PeopleWords:
    """Fill each hit's explanation line, and find the notes and lists whose words match the query."""
    catalog, explained = request.app.state.catalog, request.app.state.explained
    by_sae: dict[tuple[str, str], list] = {}
    for h in results.hits:
        by_sae.setdefault((h.model_id, h.row.sae_id), []).append(h)
    for (model_id, sae_id), hits in by_sae.items():  # one lookup per SAE
        lines = explained.lines(catalog.sae(model_id, sae_id).store, model_id, sae_id, [h.row.feature for h in hits])
        for h in hits:
            if (line := lines.get(h.row.feature)) is not None:
                h.explanation, h.by, h.detection, h.fuzzing = line.text, line.by, line.detection, line.fuzzing
                h.trust = line.trust if line.by == "auto" else None
    notes = explained.notes_if_any()
    found = notes.search(q) if notes is not None and q else ([], [])
    return PeopleWords(*found)
