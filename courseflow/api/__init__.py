"""The HTTP API: accept enrollment requests; answer status, courses, history and metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from courseflow import store
from courseflow.api import courses, enrollments, history
from courseflow.api.common import JSON, Services, error
from courseflow.config import Settings
from courseflow.payloads import InvalidInput


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
        svc.pool.open(wait=True)
        await svc.intake.register_courses(await svc.db(store.course_ids))
        app.state.services = svc
        try:
            yield
        finally:
            svc.pool.close()
            await svc.redis.aclose(close_connection_pool=True)

    return Starlette(
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
            Route("/health", health, methods=["GET"]),
        ],
        exception_handlers={
            InvalidInput: invalid_input,
            aioredis.ConnectionError: redis_unavailable,
            aioredis.TimeoutError: redis_unavailable,
        },
        lifespan=lifespan,
    )
