"""The HTTP API: accept enrollment requests; answer status, courses, history, metrics and health."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib.metadata import version
from types import FrameType

import msgspec
import psycopg
import redis
from psycopg_pool import PoolTimeout
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from courseflow.errors import DomainError
from courseflow.eventstore import partition_count, priorities, reads
from courseflow.http import (
    courses,
    dead_letters,
    docs,
    enrollments,
    health,
    history,
    identity,
    monitoring,
    openapi,
    pages,
    streams,
    students,
)
from courseflow.http.auth import warn_if_open
from courseflow.http.common import DATABASE_UNREACHABLE, QUEUE_UNREACHABLE, Services
from courseflow.http.cooldown import Cooldown
from courseflow.http.gate import Gate
from courseflow.http.instruments import Instruments
from courseflow.http.operations import declared
from courseflow.http.payloads import BodyLimit
from courseflow.http.problems import (
    MethodNotAllowed,
    NotFound,
    Problem,
    ShuttingDown,
    Unavailable,
    from_domain,
    respond,
)
from courseflow.intake import accepted, queue
from courseflow.platform import heap, tracing
from courseflow.platform.coalesce import NotReplicated
from courseflow.platform.config import Settings
from projections import live

log = logging.getLogger("courseflow.api")


async def problem(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem | DomainError)
    return respond(exc if isinstance(exc, Problem) else from_domain(exc))


async def http_error(request: Request, exc: Exception) -> Response:
    """Routing's own answers (no such path, wrong method) as problem details too."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        # Each method of a path is its own route: `Allow` names them all, not only the first route's.
        allowed = {
            method
            for route in request.app.routes
            if isinstance(route, Route) and route.matches(request.scope)[0] != Match.NONE
            for method in route.methods or ()
        }
        allow = {"Allow": ", ".join(sorted(allowed))}
        return respond(MethodNotAllowed(f"this path takes {allow['Allow']}", headers=allow))
    if exc.status_code == 404:
        return respond(NotFound("no such endpoint"))
    return respond(Problem(str(exc.detail), status=exc.status_code, headers=exc.headers))


async def internal_error(_: Request, exc: Exception) -> Response:
    """Whatever nobody foresaw is still problem details, and says nothing of the server's insides."""
    log.error("unhandled error", exc_info=exc)
    return respond(Problem("an unexpected error occurred; it has been logged"))


def unavailable(what: str) -> Callable[[Request, Exception], Awaitable[Response]]:
    async def handler(_: Request, exc: Exception) -> Response:
        if isinstance(exc, NotReplicated):  # reachable, but the request is not yet safe from a failover
            log.warning("%s: %s", what, exc)
            return respond(Unavailable(f"not yet confirmed by enough replicas ({exc}); retry with the same key"))
        if isinstance(exc, redis.exceptions.OutOfMemoryError):  # maxmemory with noeviction: nothing was written
            log.warning("%s is full: %s", what, exc)
            return respond(Unavailable(f"{what} is full; retry shortly, with the same idempotency key"))
        log.warning("%s is unreachable: %s", what, exc)
        return respond(Unavailable(f"{what} is unreachable; retry shortly"))

    return handler


class Draining:
    """Once shutdown has begun, new requests get 503 while the ones in flight finish."""

    def __init__(self, app: ASGIApp, state: dict[str, bool]) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.state["draining"]:
            await respond(ShuttingDown("this server is shutting down; retry"))(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _drain_on_signals(state: dict[str, bool], end_streams: Callable[[], None]) -> None:
    """Chain onto the server's own SIGTERM/SIGINT handlers, which then stop accepting and finish in-flight work.

    Live streams never finish by themselves, so they are ended here (sse-starlette's own shutdown hook does
    not see uvicorn's handlers behind this chain)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)

        def handler(signum: int, frame: FrameType | None, previous: object = previous) -> None:
            state["draining"] = True
            end_streams()
            if callable(previous):
                previous(signum, frame)

        with contextlib.suppress(ValueError):
            signal.signal(sig, handler)


async def contract(request: Request) -> Response:
    """The OpenAPI 3.1 document, built once per process from the route table."""
    state = request.app.state
    if getattr(state, "openapi", None) is None:
        state.openapi = msgspec.json.encode(openapi.document(request.app.routes, version("courseflow")))
    return Response(state.openapi, media_type="application/json")


def create_app(settings: Settings | None = None, settle_heap: bool = False) -> Starlette:
    """`settle_heap`: tune the collector for crowds once started (courseflow.platform.heap), in a process of its own."""
    settings = settings or Settings.from_env()
    state = {"draining": False}
    svc = Services(settings)
    feed = live.log_feed(svc, settings.postgres.url)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        warn_if_open(svc.authenticator)
        # Start even while a dependency is down: /ready says which, and requests get 503 until it is back.
        svc.pool.open(wait=False)
        if svc.replica is not None:
            svc.replica.pool.open(wait=False)
        try:
            await run_in_threadpool(_prepare_queue, svc)
        except (psycopg.Error, PoolTimeout, redis.RedisError) as exc:
            log.warning("could not prepare the request queue at start-up: %s", exc)
        app.state.services = svc
        # Open streams end the moment shutdown begins: the server waits for every response before it stops.
        _drain_on_signals(state, feed.close)
        await feed.start()
        loop = asyncio.get_running_loop()
        background = [loop.create_task(_keep_priorities_applied(svc, settings.queue.priority_sync_s))]
        if svc.replica is not None:
            background.append(loop.create_task(svc.bound_replica_lag(settings.postgres.replica_max_lag_ms / 2000)))
        if settle_heap:
            heap.settle_for_crowds()
        try:
            yield
        finally:
            state["draining"] = True
            for task in background:
                task.cancel()
            await feed.stop()
            await svc.close()

    app = Starlette(
        routes=[
            # The seed's path, kept as an alias of POST /api/v1/enrollments.
            Route("/enroll", enrollments.enroll, methods=["POST"], name="enroll_seed"),
            Route("/api/v1/enrollments", enrollments.enroll, methods=["POST"]),
            Route("/api/v1/enrollments/{request_id}", enrollments.show, methods=["GET"]),
            Route("/api/v1/enrollments/{request_id}", enrollments.release, methods=["DELETE"]),
            Route("/api/v1/enrollments/{request_id}/events", streams.request_events, methods=["GET"]),
            Route("/api/v1/courses", courses.index, methods=["GET"]),
            Route("/api/v1/courses", courses.create, methods=["POST"]),
            Route("/api/v1/courses/{course_id}", courses.show, methods=["GET"]),
            Route("/api/v1/courses/{course_id}", courses.update, methods=["PATCH"]),
            Route("/api/v1/courses/{course_id}/waitlist", courses.waitlist, methods=["GET"]),
            Route("/api/v1/courses/{course_id}/events", streams.course_events, methods=["GET"]),
            Route("/api/v1/me", identity.me, methods=["GET"]),
            Route("/api/v1/students/{student_id}/events", history.student_events, methods=["GET"]),
            Route("/api/v1/students/{student_id}/enrollments", history.student_enrollments, methods=["GET"]),
            Route("/api/v1/students/{student_id}/priority", students.show_priority, methods=["GET"]),
            Route("/api/v1/students/{student_id}/priority", students.set_priority, methods=["PUT"]),
            WebSocketRoute("/api/v1/ws", streams.follow),
            Route("/api/v1/metrics", monitoring.metrics, methods=["GET"]),
            Route("/api/v1/dead-letters", dead_letters.index, methods=["GET"]),
            # The seed's path, kept as an alias of GET /api/v1/metrics.
            Route("/metrics", monitoring.metrics, methods=["GET"], name="metrics_seed"),
            Route("/health", health.alive, methods=["GET"]),
            Route("/ready", health.ready, methods=["GET"]),
            Route("/openapi.json", contract, methods=["GET"]),
            *docs.routes(),
            *pages.routes(),
        ],
        exception_handlers={
            Problem: problem,
            DomainError: problem,
            HTTPException: http_error,
            **dict.fromkeys(QUEUE_UNREACHABLE, unavailable("the request queue (Redis)")),
            **dict.fromkeys(DATABASE_UNREACHABLE, unavailable("the database (PostgreSQL)")),
            Exception: internal_error,
        },
        lifespan=lifespan,
    )
    # `/x/` is not `/x`: no redirect built from the client's Host header.
    app.router.redirect_slashes = False
    # Every request, enrollments included, passes this one stack. Outermost first: the trace span; timing;
    # draining answers before anything else; then the gate (every rate limit but an enrollment's, which the intake
    # takes with its idempotency key); then the body limit; then routing.
    enrolling = frozenset(
        route.path for route in app.routes if isinstance(route, Route) and route.endpoint is enrollments.enroll
    )
    public = frozenset(
        route.path
        for route in app.routes
        if isinstance(route, Route) and (declared_as := declared(route.endpoint)) and declared_as.public
    )
    app.add_middleware(BodyLimit)
    app.add_middleware(
        Gate,
        authenticator=svc.authenticator,
        limiter=svc.limiter,
        public=public,
        enrollment_paths=enrolling,
        routes=app.routes,
        flooders=Cooldown(settings.limits.ws_flood_cooldown_s),
    )
    app.add_middleware(Draining, state=state)
    # Outside draining and the gate, so their 503, 401 and 429 are timed by route like every other answer.
    app.add_middleware(Instruments, routes=app.routes)
    # Outside even draining: every answer, refusals included, gets its span (a no-op with tracing off).
    app.add_middleware(tracing.Traced)
    app.state.shutdown = state
    app.state.feed = feed
    app.state.recently = monitoring.Recently()
    return app


def create_served_app() -> Starlette:
    """The app as `courseflow api` serves it: tracing set up first in each server process (uvicorn's
    worker processes start afresh and call this factory, not the command's code)."""
    tracing.configure("courseflow-api")
    return create_app(settle_heap=True)


def _prepare_queue(svc: Services) -> None:
    """Intake knows every course and granted priority, and the consumer groups exist before any worker runs."""
    with svc.pool.connection() as conn:
        partition_count.verify(conn, svc.keys.partitions)
        svc.register_courses(reads.course_ids(conn))
        svc.grant_priorities(priorities.granted(conn))
        accepted.start_counting(conn, svc.redis_sync, svc.keys)
    queue.ensure_groups(svc.redis_sync, svc.keys)


async def _keep_priorities_applied(svc: Services, every_s: float) -> None:
    """Re-apply the grants made since the last sync that reached Redis, so one whose own write failed
    (Redis down at that moment) still reaches intake. Versions make a repeat harmless."""
    synced = time.monotonic()
    while True:
        await asyncio.sleep(every_s)
        started = time.monotonic()
        try:
            recent = await svc.upkeep(priorities.granted, started - synced + _SYNC_MARGIN_S)
            await run_in_threadpool(svc.grant_priorities, recent)
            synced = started
        except (psycopg.Error, PoolTimeout, redis.RedisError) as exc:
            log.debug("granted priorities not synced yet: %s", exc)


# Grants whose transactions commit late carry an earlier updated_at: look back this much further.
_SYNC_MARGIN_S = 60.0
