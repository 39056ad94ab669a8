"""`/search?q=`: concept search (semantic, text match, features that fire on the query), merged."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from qscope.search.searcher import KINDS, Kind, SearchResults
from qscope.web.deps import LimitsDep, SearcherDep
from qscope.web.errors import Unprocessable
from qscope.web.render import render
from qscope.web.twins import TwinRoute

router = APIRouter(route_class=TwinRoute)


@router.get("/search")
def search_page(
    request: Request,
    searcher: SearcherDep,
    limits: LimitsDep,
    q: str = "",
    kind: Annotated[list[Kind] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 30,
):
    q = q.strip()
    if len(q) > limits.max_chars:
        raise Unprocessable(f"Bad parameter: q has {len(q):,} characters; at most {limits.max_chars:,} are searched.")
    kinds = list(dict.fromkeys(kind)) if kind else list(KINDS)
    results = searcher.search(q, kinds, limit=limit) if q else SearchResults(q, kinds, [], [])
    context = {"r": results, "all_kinds": KINDS}
    return render(request, "search.html", context, data=results, partial="_search_results.html")
