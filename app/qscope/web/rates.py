"""Per-client rate limits, declared by the routes they limit.

A route that runs a model or writes shared data says so where it is defined, as a FastAPI dependency:
`@router.post("/api/steer", dependencies=[rates.STEER])`. The dependency takes a token from the client's bucket
(a token bucket per client address, `qscope.web.security.client_key`) before the route runs; an empty bucket
answers 429 "Too many <what> from your address; try again in N s." with Retry-After, in the format of the route's
errors (qscope.web.errors: JSON, HTML, or OpenAI's body on /v1).

Routes that name the same bucket share it: one `steer` bucket for steering requests and evaluations (/api/steer,
/api/steer/stream, /api/steer-eval, a recipe's run-again), one `inspect` bucket for every other model run (/inspect
and /attribute with a text, POST /api/attribute, /search that runs the model, the discover API), and buckets of
their own for shares, /v1 completions and writes of notes and lists. Their rates are Settings.rates
(QSCOPE_RATE_*); the buckets are built once per app (`buckets`). tests/unit/web/test_rates.py walks the app's
routes: one that changes something and declares no limit fails it.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs

from fastapi import Depends, Request
from starlette.exceptions import HTTPException
from starlette.types import Scope

from qscope.config import RateSettings
from qscope.web.security import client_key

TEXT_PARAMS = ("text", "a", "b", "run")  # /inspect's and /attribute's inputs: with one, the route runs the model


class RateLimiter:
    """Token buckets, one per client: `per_min` tokens a minute, at most `burst` saved up. Thread-safe."""

    def __init__(
        self, per_min: float, burst: int, max_clients: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate, self.burst, self.max_clients, self.clock = per_min / 60.0, max(1, burst), max_clients, clock
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, time of that count)
        self._lock = threading.Lock()

    def take(self, client: str) -> float:
        """0 when the client may go ahead (a token is spent), else the seconds until it may."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        with self._lock:
            tokens, then = self._buckets.get(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - then) * self.rate)
            if tokens >= 1.0:
                self._buckets[client] = (tokens - 1.0, now)
                self._prune(now)
                return 0.0
            self._buckets[client] = (tokens, now)
            return (1.0 - tokens) / self.rate

    def _prune(self, now: float) -> None:
        """Forget clients whose bucket has refilled (they are as if new), so memory stays bounded."""
        if len(self._buckets) <= self.max_clients:
            return
        full = [c for c, (t, then) in self._buckets.items() if t + (now - then) * self.rate >= self.burst]
        for c in full:
            del self._buckets[c]
        while len(self._buckets) > self.max_clients:  # all busy: drop the oldest entries
            del self._buckets[next(iter(self._buckets))]


def buckets(rates: RateSettings) -> dict[str, RateLimiter]:
    """The app's buckets, by the name routes declare (app.state.rate_buckets)."""
    return {
        "steer": RateLimiter(rates.steer_per_min, rates.steer_burst),
        "inspect": RateLimiter(rates.inspect_per_min, rates.inspect_burst),
        "share": RateLimiter(rates.share_per_min, rates.share_burst),
        "openai": RateLimiter(rates.openai_per_min, rates.openai_burst),
        "write": RateLimiter(rates.write_per_min, rates.write_burst),
    }


def runs_inspect(scope: Scope) -> bool:
    """/inspect or /attribute given a text (or a run) to run the model on; the empty form runs nothing."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    return any(v.strip() for name in TEXT_PARAMS for v in query.get(name, []))


def runs_fires(scope: Scope) -> bool:
    """A search that runs the model: a query, and the "fires" kind among its kinds (all kinds when none is given)."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    kinds = query.get("kind", [])
    return any(q.strip() for q in query.get("q", [])) and (not kinds or "fires" in kinds)


@dataclass(frozen=True)
class RateLimit:
    """A route's limit: the bucket it takes from, the words of its 429 ("Too many <what>"), and, for a route that
    runs the model only for some requests, which (`when`; None: every request)."""

    bucket: str
    what: str
    when: Callable[[Scope], bool] | None = None

    async def __call__(self, request: Request) -> None:
        if self.when is not None and not self.when(request.scope):
            return
        wait = request.app.state.rate_buckets[self.bucket].take(client_key(request.scope))
        if wait:
            retry = max(1, math.ceil(wait))
            message = f"Too many {self.what} from your address; try again in {retry} s."
            raise HTTPException(429, message, headers={"Retry-After": str(retry)})


def rate_limit_of(dependencies: list) -> RateLimit | None:
    """The limit a route declares among its dependencies (route.dependant.dependencies), or None."""
    found = [d.call for d in dependencies if isinstance(d.call, RateLimit)]
    return found[0] if found else None


# the declarations routes use (an evaluation counts as one steering request)
STEER = Depends(RateLimit("steer", "steering requests"))
SHARE = Depends(RateLimit("share", "shares"))
COMPLETIONS = Depends(RateLimit("openai", "completion requests"))
INSPECT = Depends(RateLimit("inspect", "inspect runs"))
INSPECT_TEXT = Depends(RateLimit("inspect", "inspect runs", when=runs_inspect))
SEARCH_FIRES = Depends(RateLimit("inspect", "searches that run the model", when=runs_fires))
MODEL_RUN = Depends(RateLimit("inspect", "model runs"))
WRITE_WORDS = Depends(RateLimit("write", "writes of notes and lists"))
