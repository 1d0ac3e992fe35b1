"""The event history of a course or a student, a page at a time."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from courseflow import payloads, store
from courseflow.api.common import JSON, services
from projections import queries


def present(recorded: store.Recorded) -> dict[str, Any]:
    return {
        "position": recorded.position,
        "stream": recorded.stream,
        "version": recorded.stream_version,
        "type": type(recorded.event).__name__,
        "recorded_at": recorded.recorded_at,
        "data": msgspec.to_builtins(recorded.event),
    }


async def _page(request: Request, stream: str | None = None, student_id: int | None = None) -> Response:
    page = payloads.page(request.query_params)

    def read(conn: store.Conn) -> list[store.Recorded]:
        with conn.cursor() as cur:
            return store.read_events(cur, page.after, page.limit, stream=stream, student_id=student_id)

    recorded = await services(request).db(read)
    next_after = recorded[-1].position if len(recorded) == page.limit else None
    return JSON({"events": [present(r) for r in recorded], "next_after": next_after})


async def course_events(request: Request) -> Response:
    course_id = payloads.positive_id(request.path_params["course_id"], "course_id")
    return await _page(request, stream=store.course_stream(course_id))


async def student_events(request: Request) -> Response:
    return await _page(request, student_id=payloads.positive_id(request.path_params["student_id"], "student_id"))


async def student_enrollments(request: Request) -> Response:
    student_id = payloads.positive_id(request.path_params["student_id"], "student_id")
    rows = await services(request).db(queries.student_enrollments, student_id)
    return JSON({"student_id": student_id, "enrollments": rows})
