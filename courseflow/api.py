"""The HTTP API: accept enrollment requests, answer status, courses and metrics."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import redis.asyncio as aioredis
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from courseflow import payloads, store
from courseflow.config import Settings
from courseflow.intake import Intake
from courseflow.payloads import InvalidInput
from courseflow.queue import Keys


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return msgspec.json.encode(content)


def error(status: int, code: str, detail: str, field: str | None = None, **extra: Any) -> JSON:
    body = {"error": code, "detail": detail, **({"field": field} if field else {}), **extra}
    return JSON(body, status_code=status)


class Services:
    """The connections one API process shares across requests."""

    def __init__(self, settings: Settings) -> None:
        self.redis = aioredis.Redis(
            connection_pool=aioredis.BlockingConnectionPool.from_url(settings.redis_url, max_connections=64, timeout=5)
        )
        self.pool = AsyncConnectionPool(settings.database_url, min_size=1, max_size=8, open=False)
        self.intake = Intake(self.redis, Keys(settings.stream_prefix), settings.idempotency_ttl_s)


def services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


async def enroll(request: Request) -> Response:
    body = payloads.enrollment(await request.body(), request.headers.get("idempotency-key"))
    svc = services(request)
    accepted = await svc.intake.accept(body.student_id, body.course_id, body.idempotency_key, body.priority)
    if accepted.outcome == "unknown_course":
        return error(404, "course_not_found", f"course {body.course_id} does not exist", "course_id")
    if accepted.outcome == "conflict":
        return error(
            409,
            "idempotency_conflict",
            "this idempotency_key was already used by this student with a different body",
            "idempotency_key",
            request_id=accepted.request_id,
        )
    if accepted.queue_position is not None:
        return JSON(
            {"request_id": accepted.request_id, "status": "queued", "queue_position": accepted.queue_position}, 202
        )
    # A replay of a request that is already decided: answer with its outcome.
    assert accepted.request_id is not None
    return await _status_response(svc, accepted.request_id)


async def enrollment_status(request: Request) -> Response:
    raw = request.path_params["request_id"]
    try:
        request_id = str(uuid.UUID(raw))
    except ValueError:
        raise InvalidInput("request_id", f"must be a UUID, got {raw!r}") from None
    return await _status_response(services(request), request_id)


async def _status_response(svc: Services, request_id: str) -> Response:
    # Decided (PostgreSQL), else pending (Redis), else decided in between: look in PostgreSQL again.
    for attempt in range(2):
        async with svc.pool.connection() as conn:
            decided = await store.request_status(conn, request_id)
        if decided is not None:
            return JSON({k: v for k, v in msgspec.structs.asdict(decided).items() if v is not None})
        if attempt == 0 and (pending := await svc.intake.pending_position(request_id)) is not None:
            req, position = pending
            return JSON(
                {
                    "request_id": request_id,
                    "course_id": req.course_id,
                    "student_id": req.student_id,
                    "priority": req.priority,
                    "status": "pending",
                    "queue_position": position,
                    "requested_at": req.requested_at,
                }
            )
    return error(404, "request_not_found", f"no enrollment request {request_id}", "request_id")


async def create_course(request: Request) -> Response:
    body = payloads.new_course(await request.body())
    svc = services(request)
    async with svc.pool.connection() as conn:
        created = await store.create_course(conn, body.course_id, body.title, body.capacity)
    # Also on 409: the course exists in PostgreSQL, so intake must know it.
    await svc.intake.register_courses([body.course_id])
    if not created:
        return error(409, "course_exists", f"course {body.course_id} already exists", "course_id")
    return JSON(await _course_view(svc, body.course_id), 201)


async def course(request: Request) -> Response:
    course_id = payloads.positive_id(request.path_params["course_id"], "course_id")
    view = await _course_view(services(request), course_id)
    if view is None:
        return error(404, "course_not_found", f"course {course_id} does not exist", "course_id")
    return JSON(view)


async def _course_view(svc: Services, course_id: int) -> dict[str, Any] | None:
    async with svc.pool.connection() as conn:
        rows = await store.courses(conn, course_id)
    if not rows:
        return None
    return msgspec.structs.asdict(rows[0]) | {"pending": await svc.intake.queue_depth(course_id)}


async def metrics(request: Request) -> Response:
    svc = services(request)
    raw = request.query_params.get("course_id")
    course_id = None if raw is None else payloads.positive_id(raw, "course_id")
    async with svc.pool.connection() as conn:
        rows = await store.courses(conn, course_id)
    if course_id is not None and not rows:
        return error(404, "course_not_found", f"course {course_id} does not exist", "course_id")
    per_course: list[dict[str, Any]] = [
        {
            "course_id": row.course_id,
            "queue_depth": await svc.intake.queue_depth(row.course_id),
            "seats_taken": row.seats_taken,
            "capacity": row.capacity,
            "waitlist_length": row.waitlist_length,
            "status": "open" if row.seats_taken < row.capacity else "full",
        }
        for row in rows
    ]
    if course_id is not None:
        return JSON(per_course[0])
    totals = {k: sum(c[k] for c in per_course) for k in ("queue_depth", "seats_taken", "capacity", "waitlist_length")}
    status = "open" if any(c["status"] == "open" for c in per_course) else "full"
    return JSON(totals | {"status": status, "courses": per_course})


async def health(_: Request) -> Response:
    return JSON({"status": "ok"})


async def invalid_input(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, InvalidInput)
    return error(exc.status, "invalid_input", f"{exc.field} {exc.detail}", exc.field)


async def redis_unavailable(_: Request, exc: Exception) -> Response:
    response = error(503, "unavailable", f"the request queue is unreachable: {exc}")
    response.headers["Retry-After"] = "1"
    return response


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        svc = Services(settings)
        await svc.pool.open(wait=True)
        async with svc.pool.connection() as conn:
            await svc.intake.register_courses(await store.course_ids(conn))
        app.state.services = svc
        try:
            yield
        finally:
            await svc.pool.close()
            await svc.redis.aclose(close_connection_pool=True)

    return Starlette(
        routes=[
            Route("/enroll", enroll, methods=["POST"]),
            Route("/api/v1/enrollments", enroll, methods=["POST"]),
            Route("/api/v1/enrollments/{request_id}", enrollment_status, methods=["GET"]),
            Route("/api/v1/courses", create_course, methods=["POST"]),
            Route("/api/v1/courses/{course_id}", course, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ],
        exception_handlers={
            InvalidInput: invalid_input,
            aioredis.ConnectionError: redis_unavailable,
            aioredis.TimeoutError: redis_unavailable,
        },
        lifespan=lifespan,
    )
