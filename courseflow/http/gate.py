"""The door every API request passes: is there such a path (404), who is asking (401), and whether they may ask
this often (429).

A plain ASGI middleware, in front of routing, so no endpoint can forget it. Handlers then read the
principal with `principal(request)` and apply their own ownership and role rules (403).
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.requests import HTTPConnection
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from courseflow.http.auth import Authenticator, Principal
from courseflow.http.cooldown import Cooldown
from courseflow.http.limits import Limiter, Subject, anonymous, subject
from courseflow.http.pages import PAGES, STATIC_PREFIX
from courseflow.http.problems import InvalidInput, NotFound, Problem, respond
from courseflow.platform.metrics import AUTH_FAILURES

# The API's own description, its pages and their scripts: public like the operations declared `public`.
DOCUMENTATION = frozenset({"/openapi.json", "/docs", "/redoc"})
DOCUMENTATION_ASSETS = "/docs/assets/"
# WebSocket clients that cannot send headers offer this subprotocol, then their token as the next one.
BEARER_SUBPROTOCOL = "bearer"
_PRINCIPAL = "courseflow.principal"
_SUBJECT = "courseflow.subject"


class Gate:
    def __init__(
        self,
        app: ASGIApp,
        authenticator: Authenticator,
        limiter: Limiter,
        public: frozenset[str],
        enrollment_paths: frozenset[str],
        routes: Sequence[BaseRoute],
        flooders: Cooldown,
    ) -> None:
        self.app = app
        # What routing answers: any other path is a 404 before anyone is asked for a token. Paths without
        # parameters (enrollments among them) are found in a set; the others by routing's own matching.
        self.routes = routes
        self.fixed_paths = frozenset(path for route in routes if "{" not in (path := getattr(route, "path", "{")))
        self.authenticator = authenticator
        self.limiter = limiter
        # Paths answered without a token (probes, the scraper): no personal data behind them.
        self.public = public | DOCUMENTATION
        # Where enrollment requests are sent: their handler counts them against the caller's rate limits.
        self.enrollment_paths = enrollment_paths
        # Callers whose last WebSocket was closed for flooding: their new ones are refused here, uncounted.
        self.flooders = flooders

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        try:
            admitted = await self.admit(scope)
        except Problem as problem:
            await _refuse(problem, scope, receive, send)
            return
        if admitted is not None:
            let_in(scope, admitted)
        await self.app(scope, receive, send)

    async def admit(self, scope: Scope) -> tuple[Principal, Subject] | None:
        """Who asks and whose counters they take (None for public paths); raises the 401 or 429 that refuses them."""
        method = scope.get("method", "GET")  # a WebSocket handshake is a GET
        if _header(scope, b"host") is None and scope.get("http_version") == "1.1":
            raise InvalidInput("Host", "is required in HTTP/1.1 (RFC 9112)", status=400, location="header")
        if scope["path"] not in self.fixed_paths and not self._routed(scope):
            # A 401 would say the path exists behind a token; nor is a miss worth a rate-limit round trip.
            raise NotFound("no such endpoint")
        if scope["path"] in PAGES or scope["path"].startswith(STATIC_PREFIX):
            # Not counted: a campus behind one address loads them at once as registration opens, and a flood of
            # them would lock every student there out. They hold no data; each API call they make is counted.
            return None
        if scope["path"] in self.public or scope["path"].startswith(DOCUMENTATION_ASSETS):
            await self.limiter.hit(anonymous(_client_address(scope)), method)
            return None
        principal = await self._authenticate(scope, method)
        counted = subject(principal, None if self.authenticator.enabled else _client_address(scope))
        if scope["type"] == "websocket":
            self.flooders.admit(scope, counted)
        if method != "POST" or scope["path"] not in self.enrollment_paths:
            # Counted here whatever its body and its outcome. An enrollment is counted by its handler instead: the
            # intake takes its limits in the call that claims its idempotency key, on every topology.
            await self.limiter.hit(counted, method)
        return principal, counted

    def _routed(self, scope: Scope) -> bool:
        return any(route.matches(scope)[0] is not Match.NONE for route in self.routes)

    async def _authenticate(self, scope: Scope, method: str) -> Principal:
        try:
            authorization = _header(scope, b"authorization")
            if authorization is None and scope["type"] == "websocket":
                authorization = _offered_bearer(scope)
            return self.authenticator.authenticate(authorization)
        except Problem as refused:
            # Refused tokens count per address: guessing or flooding costs the guesser, not the API (a 429 then).
            await self.limiter.hit(anonymous(_client_address(scope)), method)
            if refused.status_code == 401:  # not a header given twice (400)
                AUTH_FAILURES.inc()
            raise


async def _refuse(problem: Problem, scope: Scope, receive: Receive, send: Send) -> None:
    """Problem details, to a WebSocket handshake too (as its HTTP answer) where the server can send one."""
    if scope["type"] == "websocket" and "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008, "reason": problem.title})  # policy violation
        return
    await respond(problem)(scope, receive, send)


def _offered_bearer(scope: Scope) -> str | None:
    """A browser cannot set Authorization on a WebSocket: it offers the subprotocols `bearer, <token>` instead."""
    offered: list[str] = scope.get("subprotocols", [])
    if len(offered) == 2 and offered[0] == BEARER_SUBPROTOCOL:
        return f"Bearer {offered[1]}"
    return None


def let_in(scope: Scope, admitted: tuple[Principal, Subject]) -> None:
    """Leave who was admitted in the scope, for `principal` and `rate_subject`."""
    scope[_PRINCIPAL], scope[_SUBJECT] = admitted


def principal(request: HTTPConnection) -> Principal:
    found: Principal = request.scope[_PRINCIPAL]
    return found


def rate_subject(request: HTTPConnection) -> Subject:
    """Whose rate-limit counters this request takes."""
    found: Subject = request.scope[_SUBJECT]
    return found


def _header(scope: Scope, name: bytes) -> str | None:
    """The one value of a header; two of them are refused rather than one silently chosen."""
    values = [bytes(value) for key, value in scope["headers"] if key == name]
    if len(values) > 1:
        raise InvalidInput(name.decode().title(), "is given more than once", status=400, location="header")
    return values[0].decode("latin-1") if values else None


def _client_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"
