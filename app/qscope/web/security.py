"""Hardening of the web app, as one ASGI middleware (`Guard`) plus CORS and the API docs page.

- Headers on every response: a Content-Security-Policy that allows scripts from this origin only (no inline
  script, no eval); inline `style` attributes stay allowed (the shading of tokens is one CSS variable per span),
  `<style>` elements do not. Pages may be framed by this origin only; a feature card asked for with a real
  `embed=1` parameter sets its own policy (`csp(frame="*")`), which the Guard leaves as it is.
- HEAD: answered as GET with the body left out (same status and headers), on every GET route; a GET or HEAD of a
  path that only takes POST is a 405 with Allow (qscope.web.methods), not a 404 of the catch-all page routes.
- Sizes: a path + query longer than Settings.max_url_chars gets 414, a body over Settings.max_body_bytes 413
  (checked on Content-Length, and counted when the body comes chunked).
- JSON bodies: not UTF-8, not JSON, non-finite numbers, lone surrogates get a 422 naming the place
  (qscope.web.bodies), whatever route they were sent to.
- Rates: the routes that run a model (POST /api/steer*, POST /v1/*completions, /inspect with a text,
  /attribute with a text or run, POST /api/attribute, /search with a query and the "fires" kind) and the one
  that writes the app database (POST /api/steer/share) take a token from a per-client bucket (client IP); an
  empty bucket answers 429 with Retry-After.
  Writes of notes and lists (POST/PATCH/DELETE on /-/notes, /-/lists*, /api/notes*, /api/lists*) take from a
  bucket of their own (Settings.rate_write_per_min).
- Hosts: a request whose Host is not one the server serves (127.0.0.1, localhost, [::1], Settings.host and
  Settings.allowed_hosts) gets 400 (starlette's TrustedHostMiddleware), so a page on a DNS-rebinding name cannot
  read a server on 127.0.0.1 through a visitor's browser.
- Cross-site writes: a POST/PUT/PATCH/DELETE sent by a page of another site (`Sec-Fetch-Site: cross-site`, or an
  `Origin` that is neither this server's Host nor a configured host) gets 403, unless Settings.cors_origins names
  that origin. Clients that send neither header (curl, the openai client on /v1) are not browsers and go ahead.
- CORS stays off (no Access-Control-* header) unless Settings.cors_origins names origins.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qscope.config import Settings
from qscope.web.bodies import body_problem, is_json
from qscope.web.methods import allowed_instead, without_get

# renders a refusal (scope, status, message, headers) as the ASGI app that answers it: qscope.web.errors.refusal
Refuse = Callable[[Scope, int, str, dict[str, str]], ASGIApp]

CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "style-src-attr 'unsafe-inline'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
    ]
)
HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
STEER_PATHS = ("/api/steer", "/api/steer/stream", "/api/steer-eval")  # an evaluation counts as one request
SHARE_PATHS = ("/api/steer/share",)
OPENAI_PATHS = ("/v1/chat/completions", "/v1/completions")
INSPECT_PATHS = ("/inspect", "/inspect.json", "/attribute", "/attribute.json", "/api/attribute")
# the discover API runs the model (rated like /inspect) and carries example files in its body (its own size limit)
DISCOVER_PATHS = (
    "/api/discover",
    "/api/fix",
    "/api/footprints",
    "/api/footprints/upload",
    "/api/detectors",
    "/api/detect",
)
TEXT_PARAMS = ("text", "a", "b", "run")
SEARCH_PATHS = ("/search", "/search.json")  # the "fires" kind (asked for, or by default: no kind) runs the model
UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
WORDS_FORM_PATHS = ("/-/notes", "/-/lists", "/-/lists/items")  # people's notes and lists: written by these
WORDS_API_PREFIXES = ("/api/notes", "/api/lists")  # ... and by these, with the paths below them
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")
UNSPECIFIED_HOSTS = ("", "0.0.0.0", "[::]")  # a bind address, not a name a browser asks for


def csp(frame: str = "'self'") -> str:
    """The Content-Security-Policy of a page that may be framed by `frame` (an origin, or '*')."""
    return f"{CSP}; frame-ancestors {frame}"


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


def allowed_hosts(settings: Settings) -> list[str]:
    """The Host names the server answers (lower case, IPv6 in brackets): ['*'] when the operator allows any."""
    if "*" in settings.allowed_hosts:
        return ["*"]
    own = settings.host.strip().lower()
    if ":" in own and not own.startswith("["):
        own = f"[{own}]"
    names = [*LOCAL_HOSTS, *([] if own in UNSPECIFIED_HOSTS else [own]), *(h.lower() for h in settings.allowed_hosts)]
    return list(dict.fromkeys(names))


def _host_matches(host: str, patterns: list[str]) -> bool:
    """Whether a host name is one of `patterns` ('*.example.org' matches its subdomains), as TrustedHostMiddleware."""
    host = host.lower()
    return any(host == p or (p.startswith("*.") and host.endswith(p[1:])) for p in patterns)


def writes_words(path: str) -> bool:
    """Whether a POST/PATCH/DELETE to this path writes people's notes or lists (their own rate bucket)."""
    return path in WORDS_FORM_PATHS or any(path == p or path.startswith(p + "/") for p in WORDS_API_PREFIXES)


def _runs_inspect(scope: Scope) -> bool:
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    return any(v.strip() for name in TEXT_PARAMS for v in query.get(name, []))


def _runs_fires(scope: Scope) -> bool:
    """A search that runs the model: a query, and the "fires" kind among its kinds (all kinds when none is given)."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    kinds = query.get("kind", [])
    return any(q.strip() for q in query.get("q", [])) and (not kinds or "fires" in kinds)


class Guard:
    """The ASGI middleware of the module docstring; `error(scope, status, message, headers)` renders refusals."""

    def __init__(self, app: ASGIApp, settings: Settings, error: Refuse) -> None:
        self.app, self.error = app, error
        self.max_body, self.max_url = settings.max_body_bytes, settings.max_url_chars
        self.max_discover_body = max(settings.discover_max_body_bytes, settings.max_body_bytes)
        self.steer = RateLimiter(settings.rate_steer_per_min, settings.rate_steer_burst)
        self.inspect = RateLimiter(settings.rate_inspect_per_min, settings.rate_inspect_burst)
        self.share = RateLimiter(settings.rate_share_per_min, settings.rate_share_burst)
        self.openai = RateLimiter(settings.rate_openai_per_min, settings.rate_openai_burst)
        self._post_only: list | None = None  # the app's routes of POST-only paths, found on the first request
        self.write = RateLimiter(settings.rate_write_per_min, settings.rate_write_burst)
        self.cors_origins = set(settings.cors_origins)
        self.named_hosts = [h.lower() for h in settings.allowed_hosts if h != "*"]  # an Origin may name these

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        send = _with_headers(send)
        if scope["method"] == "HEAD":
            scope, send = {**scope, "method": "GET"}, _without_body(send)
        refusal = self._refusal(scope)
        if refusal is None:
            body, refusal = await _read_body(scope, receive, self._body_limit(scope))
            if refusal is None and body and is_json(_header(scope, b"content-type")):
                if problem := body_problem(b"".join(m.get("body", b"") for m in body)):
                    refusal = 422, problem, {}
            if refusal is None:
                return await self.app(scope, _replay(body, receive), send)
        status, message, headers = refusal
        await self.error(scope, status, message, headers)(scope, receive, send)

    def _allowed_instead(self, scope: Scope) -> list[str]:
        if self._post_only is None:
            app = scope.get("app")  # set by Starlette before the middleware runs
            self._post_only = without_get(app.routes) if app is not None else []
        return allowed_instead(self._post_only, scope)

    def _body_limit(self, scope: Scope) -> int:
        return self.max_discover_body if scope["path"] in DISCOVER_PATHS else self.max_body

    def _refusal(self, scope: Scope) -> tuple[int, str, dict[str, str]] | None:
        """Why this request is refused before the app sees it (status, message, headers), or None."""
        url_chars = len(scope.get("raw_path") or scope["path"]) + len(scope.get("query_string", b""))
        if url_chars > self.max_url:
            return 414, f"The URL has {url_chars:,} characters; at most {self.max_url:,} are accepted.", {}
        if scope["method"] == "GET" and (allowed := self._allowed_instead(scope)):
            return 405, f"This path takes {' or '.join(allowed)}, not GET or HEAD.", {"Allow": ", ".join(allowed)}
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self._body_limit(scope)):
            return 413, f"The request body is over {self._body_limit(scope):,} bytes.", {}
        if scope["method"] in UNSAFE_METHODS and (why := self._cross_site(scope)):
            return 403, why, {}
        bucket = None
        if scope["method"] == "POST" and scope["path"] in STEER_PATHS:
            bucket, what = self.steer, "steering requests"
        elif scope["method"] == "POST" and scope["path"] in SHARE_PATHS:
            bucket, what = self.share, "shares"
        elif scope["method"] == "POST" and scope["path"] in OPENAI_PATHS:
            bucket, what = self.openai, "completion requests"
        elif scope["path"] in INSPECT_PATHS and (scope["method"] == "POST" or _runs_inspect(scope)):
            bucket, what = self.inspect, "inspect runs"
        elif scope["path"] in SEARCH_PATHS and _runs_fires(scope):
            bucket, what = self.inspect, "searches that run the model"
        elif scope["method"] == "POST" and scope["path"] in DISCOVER_PATHS:
            bucket, what = self.inspect, "model runs"
        elif scope["method"] in UNSAFE_METHODS and writes_words(scope["path"]):
            bucket, what = self.write, "writes of notes and lists"
        if bucket is not None and (wait := bucket.take(client_key(scope))):
            retry = max(1, math.ceil(wait))
            return 429, f"Too many {what} from your address; try again in {retry} s.", {"Retry-After": str(retry)}
        return None

    def _cross_site(self, scope: Scope) -> str | None:
        """Why a state change is refused as sent by a page of another site, or None (not a browser's cross-site
        request, or from an origin Settings.cors_origins allows)."""
        origin = _header(scope, b"origin")
        if origin and origin in self.cors_origins:
            return None
        method = scope["method"]
        if _header(scope, b"sec-fetch-site") == "cross-site":
            return f"Refused: a page of another site may not send {method} requests here; use this server's pages."
        if origin and not self._own_origin(origin, _header(scope, b"host")):
            return f"Refused: a page of {origin} may not send {method} requests here; use this server's pages."
        return None

    def _own_origin(self, origin: str, host: str) -> bool:
        """An Origin of this server: the same host and port as the request's Host, or a host the operator named
        (a reverse proxy may pass the server another Host than the browser's)."""
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False  # 'null' (a sandboxed frame, a file) and anything odd
        if parts.netloc.lower() == host.lower():
            return True
        name = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else parts.hostname or ""
        return _host_matches(name, self.named_hosts)


def _header(scope: Scope, name: bytes) -> str:
    return dict(scope["headers"]).get(name, b"").decode("latin-1")


def client_key(scope: Scope) -> str:
    """Who sent a request, as every per-client limit counts it: the client address (uvicorn puts the proxy's
    X-Forwarded-For there when FORWARDED_ALLOW_IPS trusts the proxy). The rate buckets and the fair shares of the
    queues (qscope.fairness) both key on it."""
    client = scope.get("client")
    return client[0] if client else "unknown"


async def _read_body(scope: Scope, receive: Receive, limit: int) -> tuple[list[Message], tuple | None]:
    """The request body messages, read up front (bodies are small) so that an oversized chunked one is refused."""
    if scope["method"] in ("GET", "HEAD", "OPTIONS"):
        return [], None
    messages, size = [], 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, None
        size += len(message.get("body", b""))
        if size > limit:
            return messages, (413, f"The request body is over {limit:,} bytes.", {})
        if not message.get("more_body", False):
            return messages, None


def _replay(messages: list[Message], receive: Receive) -> Receive:
    async def replayed() -> Message:
        return messages.pop(0) if messages else await receive()

    return replayed


def _with_headers(send: Send) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            names = {name.lower() for name, _ in headers}
            if b"content-security-policy" not in names:
                headers.append((b"content-security-policy", csp().encode()))
            headers += [(n, v) for n, v in HEADERS if n not in names]
            message = {**message, "headers": headers}
        await send(message)

    return sending


def _without_body(send: Send) -> Send:
    """The response of a HEAD request: GET's status and headers (Content-Length included), no body."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.body":
            message = {**message, "body": b""}
        await send(message)

    return sending


def install(app: FastAPI, settings: Settings, error: Refuse) -> None:
    """Add the Guard (outermost), the Host check inside it (so its 400 carries the Guard's headers), and CORS when
    origins are configured."""
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Content-Type", "X-Owner-Secret"],
            max_age=600,
        )
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts(settings), www_redirect=False)
    app.add_middleware(Guard, settings=settings, error=error)
