"""Times every HTTP answer by route template, method and status class, outermost, so 401, 429 and 503 count too.

A plain ASGI middleware: it reads the status from the response start and names the route routing chose,
or, when the gate or draining answered before routing ran, by matching the route table itself. Raw paths never
become labels (`/api/v1/enrollments/{request_id}`, not one series per request id).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from prometheus_client import Histogram
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from courseflow.platform.metrics import HTTP_REQUEST_DURATION

# Paths that match no route, and methods nobody uses: one label each, so probing scanners cannot mint series.
UNMATCHED = "unmatched"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_EVENT_STREAM = b"text/event-stream"


class Instruments:
    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.routes = routes
        # (route, method, status class) -> its series: finite (templates by methods by classes), and looking a series
        # up by its labels costs a lock and a tuple per answer.
        self._series: dict[tuple[str, str, int], Histogram] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception that escapes is answered 500 by the server error middleware outside
        streaming = False

        async def send_noting_status(message: Message) -> None:
            nonlocal status, streaming
            if message["type"] == "http.response.start":
                status = int(message["status"])
                streaming = _is_event_stream(message)
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            # A live stream lasts as long as its follower stays: its lifetime is no answer time.
            if not streaming:
                self._observe(scope, status, time.perf_counter() - started)

    def _observe(self, scope: Scope, status: int, elapsed: float) -> None:
        # Routing leaves the route it chose in the scope; refused before routing, match it here.
        chosen = scope.get("route")
        route = chosen.path if isinstance(chosen, Route) else route_template(self.routes, scope)
        method = scope["method"] if scope["method"] in _METHODS else "OTHER"
        key = (route, method, status // 100)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = HTTP_REQUEST_DURATION.labels(route, method, f"{key[2]}xx")
        series.observe(elapsed)


def _is_event_stream(start: Message) -> bool:
    name: bytes
    value: bytes
    for name, value in start.get("headers", ()):
        if name.lower() == b"content-type":
            return value.split(b";", 1)[0] == _EVENT_STREAM
    return False


def route_template(routes: Sequence[BaseRoute], scope: Scope) -> str:
    """The path template of the route this request matches (a wrong method still names its path), or UNMATCHED."""
    partial = None
    for route in routes:
        if not isinstance(route, Route):
            continue
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return route.path
        if match == Match.PARTIAL and partial is None:
            partial = route.path
    return partial or UNMATCHED
