"""Hardening of the web app, as one ASGI middleware (`Guard`) plus CORS and the API docs page.

- Headers on every response: a Content-Security-Policy that allows scripts from this origin only (no inline
  script, no eval); inline `style` attributes stay allowed (the shading of tokens is one CSS variable per span),
  `<style>` elements do not. Pages may be framed by this origin only; a feature card asked for with a real
  `embed=1` parameter sets its own policy (`csp(frame="*")`), which the Guard leaves as it is.
- HEAD: answered as GET with the body left out (same status and headers), on every GET route; a GET or HEAD of a
  path that only takes POST is a 405 with Allow (qscope.web.methods), not a 404 of the catch-all page routes.
- Sizes: a path + query longer than QSCOPE_MAX_URL_CHARS gets 414, a body over QSCOPE_MAX_BODY_BYTES 413
  (QSCOPE_DISCOVER_MAX_BODY_BYTES on the discover API, whose files travel in the body; checked on Content-Length,
  and counted when the body comes chunked).
- JSON bodies: not UTF-8, not JSON, non-finite numbers, lone surrogates get a 422 naming the place
  (qscope.web.bodies), whatever route they were sent to.
- Rates: not here; each route that runs a model or writes shared data declares its limit (qscope.web.rates).
- Hosts: a request whose Host is not one the server serves (127.0.0.1, localhost, [::1], QSCOPE_HOST and
  QSCOPE_ALLOWED_HOSTS) gets 400 (starlette's TrustedHostMiddleware), so a page on a DNS-rebinding name cannot
  read a server on 127.0.0.1 through a visitor's browser.
- Cross-site writes: a POST/PUT/PATCH/DELETE sent by a page of another site (`Sec-Fetch-Site: cross-site`, or an
  `Origin` that is neither this server's Host nor a configured host) gets 403, unless QSCOPE_CORS_ORIGINS names
  that origin. Clients that send neither header (curl, the openai client on /v1) are not browsers and go ahead.
- CORS stays off (no Access-Control-* header) unless QSCOPE_CORS_ORIGINS names origins.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qscope.config import ServerSettings
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
# the discover API carries example files in its body: its own size limit (the body is read before routing)
DISCOVER_PATHS = (
    "/api/discover",
    "/api/fix",
    "/api/footprints",
    "/api/footprints/upload",
    "/api/detectors",
    "/api/detect",
)
UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")
UNSPECIFIED_HOSTS = ("", "0.0.0.0", "[::]")  # a bind address, not a name a browser asks for


def csp(frame: str = "'self'") -> str:
    """The Content-Security-Policy of a page that may be framed by `frame` (an origin, or '*')."""
    return f"{CSP}; frame-ancestors {frame}"


def allowed_hosts(server: ServerSettings) -> list[str]:
    """The Host names the server answers (lower case, IPv6 in brackets): ['*'] when the operator allows any."""
    if "*" in server.allowed_hosts:
        return ["*"]
    own = server.host.strip().lower()
    if ":" in own and not own.startswith("["):
        own = f"[{own}]"
    names = [*LOCAL_HOSTS, *([] if own in UNSPECIFIED_HOSTS else [own]), *(h.lower() for h in server.allowed_hosts)]
    return list(dict.fromkeys(names))


def _host_matches(host: str, patterns: list[str]) -> bool:
    """Whether a host name is one of `patterns` ('*.example.org' matches its subdomains), as TrustedHostMiddleware."""
    host = host.lower()
    return any(host == p or (p.startswith("*.") and host.endswith(p[1:])) for p in patterns)


class Guard:
    """The ASGI middleware of the module docstring; `error(scope, status, message, headers)` renders refusals."""

    def __init__(self, app: ASGIApp, server: ServerSettings, discover_max_body: int, error: Refuse) -> None:
        """discover_max_body: the discover API's body limit (QSCOPE_DISCOVER_MAX_BODY_BYTES; never under the rest's)."""
        self.app, self.error = app, error
        self.max_body, self.max_url = server.max_body_bytes, server.max_url_chars
        self.max_discover_body = max(discover_max_body, server.max_body_bytes)
        self._post_only: list | None = None  # the app's routes of POST-only paths, found on the first request
        self.cors_origins = set(server.cors_origins)
        self.named_hosts = [h.lower() for h in server.allowed_hosts if h != "*"]  # an Origin may name these

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
        return None

    def _cross_site(self, scope: Scope) -> str | None:
        """Why a state change is refused as sent by a page of another site, or None (not a browser's cross-site
        request, or from an origin QSCOPE_CORS_ORIGINS allows)."""
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


def install(app: FastAPI, server: ServerSettings, discover_max_body: int, error: Refuse) -> None:
    """Add the Guard (outermost), the Host check inside it (so its 400 carries the Guard's headers), and CORS when
    origins are configured."""
    if server.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=server.cors_origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Content-Type", "X-Owner-Secret"],
            max_age=600,
        )
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts(server), www_redirect=False)
    app.add_middleware(Guard, server=server, discover_max_body=discover_max_body, error=error)
