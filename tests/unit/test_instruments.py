"""Answers are timed by route template, method and status class; a live stream's lifetime is not an answer time."""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from courseflow.http.instruments import Instruments

_ROUTES = [Route("/things/{thing_id}", lambda request: None, methods=["GET"])]


def _timed(route: str, method: str, status: str) -> float:
    labels = {"route": route, "method": method, "status": status}
    return REGISTRY.get_sample_value("courseflow_http_request_duration_seconds_count", labels) or 0.0


def _answer(path: str, status: int, content_type: bytes, method: str = "GET") -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": status, "headers": [(b"Content-Type", content_type)]})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        pass

    scope: Scope = {"type": "http", "method": method, "path": path, "headers": []}
    asyncio.run(Instruments(app, _ROUTES)(scope, receive, send))


def test_answers_are_counted_under_their_template_and_status_class() -> None:
    before = {status: _timed("/things/{thing_id}", "GET", status) for status in ("2xx", "4xx")}
    _answer("/things/1", 200, b"application/json")
    _answer("/things/2", 201, b"application/json")
    _answer("/things/3", 404, b"application/problem+json")
    assert _timed("/things/{thing_id}", "GET", "2xx") == before["2xx"] + 2
    assert _timed("/things/{thing_id}", "GET", "4xx") == before["4xx"] + 1


def test_unknown_paths_and_methods_share_one_label_each() -> None:
    before = _timed("unmatched", "OTHER", "4xx")
    _answer("/nowhere", 404, b"application/problem+json", method="BREW")
    assert _timed("unmatched", "OTHER", "4xx") == before + 1


def test_a_live_stream_is_not_timed() -> None:
    before = _timed("/things/{thing_id}", "GET", "2xx")
    _answer("/things/1", 200, b"text/event-stream; charset=utf-8")
    assert _timed("/things/{thing_id}", "GET", "2xx") == before
