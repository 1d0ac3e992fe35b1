"""Times every HTTP answer by route template, method and status class, outermost, so 401, 429 and 503 count too.

A plain ASGI middleware: it reads the status from the response start and names the route by matching
the route table itself, since the gate and draining answer before routing ever runs. Raw paths never
become labels (`/api/v1/enrollments/{request_id}`, not one series per request id).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from courseflow.metrics import HTTP_REQUEST_DURATION

# Paths that match no route: one label, so probing scanners cannot mint series.
UNMATCHED = "unmatched"


class Instruments:
    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception that escapes is answered 500 by the server error middleware outside

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            elapsed = time.perf_counter() - started
            route = route_template(self.routes, scope)
            HTTP_REQUEST_DURATION.labels(route, scope["method"], f"{status // 100}xx").observe(elapsed)


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
