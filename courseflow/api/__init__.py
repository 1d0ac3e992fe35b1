"""The HTTP API: accept enrollment requests; answer status, courses, history, metrics and health."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from types import FrameType

import psycopg
import redis.asyncio as aioredis
from psycopg_pool import PoolTimeout
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from courseflow import store
from courseflow.api import courses, enrollments, health, history
from courseflow.api.common import Services, error
from courseflow.config import Settings
from courseflow.payloads import InvalidInput

log = logging.getLogger("courseflow.api")


async def invalid_input(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, InvalidInput)
    return error(exc.status, "invalid_input", f"{exc.field} {exc.detail}", exc.field)


def unavailable(what: str) -> Callable[[Request, Exception], Awaitable[Response]]:
    async def handler(_: Request, exc: Exception) -> Response:
        response = error(503, "unavailable", f"{what} is unreachable: {exc}")
        response.headers["Retry-After"] = "1"
        return response

    return handler


class Draining:
    """Once shutdown has begun, new requests get 503 while the ones in flight finish."""

    def __init__(self, app: ASGIApp, state: dict[str, bool]) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.state["draining"]:
            response = error(503, "shutting_down", "this server is shutting down; retry")
            response.headers["Retry-After"] = "1"
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _drain_on_signals(state: dict[str, bool]) -> None:
    """Chain onto the server's own SIGTERM/SIGINT handlers, which then stop accepting and finish in-flight work."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)

        def handler(signum: int, frame: FrameType | None, previous: object = previous) -> None:
            state["draining"] = True
            if callable(previous):
                previous(signum, frame)

        with contextlib.suppress(ValueError):
            signal.signal(sig, handler)


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings.from_env()
    state = {"draining": False}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        svc = Services(settings)
        # Start even while a dependency is down: /ready says which, and requests get 503 until it is back.
        svc.pool.open(wait=False)
        try:
            await svc.intake.register_courses(await svc.db(store.course_ids))
        except (psycopg.Error, PoolTimeout, aioredis.RedisError) as exc:
            log.warning("could not sync the course list at start-up: %s", exc)
        app.state.services = svc
        _drain_on_signals(state)
        try:
            yield
        finally:
            state["draining"] = True
            svc.pool.close()
            await svc.redis.aclose(close_connection_pool=True)

    app = Starlette(
        routes=[
            Route("/enroll", enrollments.enroll, methods=["POST"]),
            Route("/api/v1/enrollments", enrollments.enroll, methods=["POST"]),
            Route("/api/v1/enrollments/{request_id}", enrollments.status, methods=["GET"]),
            Route("/api/v1/enrollments/{request_id}", enrollments.release, methods=["DELETE"]),
            Route("/api/v1/courses", courses.create, methods=["POST"]),
            Route("/api/v1/courses/{course_id}", courses.show, methods=["GET"]),
            Route("/api/v1/courses/{course_id}", courses.update, methods=["PATCH"]),
            Route("/api/v1/courses/{course_id}/waitlist", courses.waitlist, methods=["GET"]),
            Route("/api/v1/courses/{course_id}/events", history.course_events, methods=["GET"]),
            Route("/api/v1/students/{student_id}/events", history.student_events, methods=["GET"]),
            Route("/api/v1/students/{student_id}/enrollments", history.student_enrollments, methods=["GET"]),
            Route("/metrics", courses.metrics, methods=["GET"]),
            Route("/health", health.alive, methods=["GET"]),
            Route("/ready", health.ready, methods=["GET"]),
        ],
        exception_handlers={
            InvalidInput: invalid_input,
            aioredis.ConnectionError: unavailable("the request queue (Redis)"),
            aioredis.TimeoutError: unavailable("the request queue (Redis)"),
            psycopg.OperationalError: unavailable("the database (PostgreSQL)"),
            PoolTimeout: unavailable("the database (PostgreSQL)"),
        },
        lifespan=lifespan,
    )
    app.add_middleware(Draining, state=state)
    app.state.shutdown = state
    return app
