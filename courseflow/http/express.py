"""The enrollment fast lane: `POST /enroll` and `POST /api/v1/enrollments` served without routing or the middleware.

The crowd of a registration opening sends nothing else, and the middleware stack and routing cost more
than the enrollment itself. This lane does in one place what the stack does around every request: the
503 while draining, the gate (401, 429, the principal), the timing by route, and the app's own mapping
of exceptions to problem details. It calls the same endpoint, so what it accepts and refuses cannot
drift from routing's. With tracing on, requests take the stack, where `Traced` gives them their span.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client.metrics import Histogram
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from courseflow.http.gate import Gate, let_in
from courseflow.http.problems import Problem, ShuttingDown, respond
from courseflow.platform import tracing
from courseflow.platform.metrics import HTTP_REQUEST_DURATION

Endpoint = Callable[[Request], Any]
Handler = Callable[[Request, Exception], Any]


class Express:
    def __init__(
        self,
        app: ASGIApp,
        endpoint: Endpoint,
        paths: frozenset[str],
        gate: Gate,
        draining: Mapping[str, bool],
        handlers: Mapping[Any, Handler],
    ) -> None:
        self.app = app
        self.endpoint = endpoint
        self.paths = paths
        self.gate = gate
        self.draining = draining
        self.handlers = handlers
        # The timing series of each path and status class, looked up once rather than per request.
        self._timed: dict[tuple[str, int], Histogram] = {}

    def serves(self, scope: Scope) -> bool:
        return (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] in self.paths
            and not scope.get("root_path")
            and tracing.tracer() is None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        scope["app"] = self.app  # where the endpoint finds the services, as under routing
        request = Request(scope, receive, send)
        unhandled: Exception | None = None
        try:
            response = await self._answer(request)
        except Exception as exc:  # mapped as the app maps it: problem details, 503 for a server down, else 500
            handler = self._handler(exc)
            if handler is None:
                raise
            response = await handler(request, exc)
            if Exception in self.handlers and handler is self.handlers[Exception]:
                unhandled = exc  # raised on after the 500 is sent, as Starlette does, so the server logs it too
        try:
            await response(scope, receive, send)
        finally:
            self._timer(scope["path"], response.status_code).observe(time.perf_counter() - started)
        if unhandled is not None:
            raise unhandled

    async def _answer(self, request: Request) -> Response:
        if self.draining["draining"]:
            return respond(ShuttingDown("this server is shutting down; retry"))
        try:
            admitted = await self.gate.admit(request.scope)
        except Problem as refused:
            return respond(refused)
        assert admitted is not None  # the enrollment paths are never public
        let_in(request.scope, admitted)
        response: Response = await self.endpoint(request)
        return response

    def _handler(self, exc: Exception) -> Handler | None:
        for cls in type(exc).__mro__:
            if cls in self.handlers:
                return self.handlers[cls]
        return None

    def _timer(self, path: str, status: int) -> Histogram:
        kind = status // 100
        timer = self._timed.get((path, kind))
        if timer is None:
            timer = self._timed[(path, kind)] = HTTP_REQUEST_DURATION.labels(path, "POST", f"{kind}xx")
        return timer
