"""The event history of a course or a student, a page at a time."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from courseflow import payloads, store
from courseflow.api.common import JSON, services, student_in_path
from courseflow.api.gate import principal
from courseflow.auth import Principal
from projections import queries

# What identifies another student's request, or says more about them than the course's counts: registrars only.
_PERSONAL = ("student_id", "request_id", "idempotency_key", "priority", "previous", "arrival", "requested_at")


def present(recorded: store.Recorded, reader: Principal, student_id: int | None = None) -> dict[str, Any]:
    """An event as the reader may see it; `student_id`: the student whose history it is, read on their behalf."""
    data = msgspec.to_builtins(recorded.event)
    if not reader.sees_everyone and data.get("student_id") not in (reader.student_id, student_id):
        data = {k: v for k, v in data.items() if k not in _PERSONAL}
    return {
        "position": recorded.position,
        "stream": recorded.stream,
        "version": recorded.stream_version,
        "type": type(recorded.event).__name__,
        "recorded_at": recorded.recorded_at,
        "data": data,
    }


async def _page(request: Request, stream: str | None = None, student_id: int | None = None) -> Response:
    page = payloads.page(request.query_params)

    def read(conn: store.Conn) -> list[store.Recorded]:
        with conn.cursor() as cur:
            return store.read_events(cur, page.after, page.limit, stream=stream, student_id=student_id)

    recorded = await services(request).db(read)
    next_after = recorded[-1].position if len(recorded) == page.limit else None
    reader = principal(request)
    return JSON({"events": [present(r, reader, student_id) for r in recorded], "next_after": next_after})


async def course_events(request: Request) -> Response:
    course_id = payloads.positive_id(request.path_params["course_id"], "course_id")
    return await _page(request, stream=store.course_stream(course_id))


async def student_events(request: Request) -> Response:
    return await _page(request, student_id=student_in_path(request, "history"))


async def student_enrollments(request: Request) -> Response:
    student_id = student_in_path(request, "history")
    rows = await services(request).db(queries.student_enrollments, student_id)
    return JSON({"student_id": student_id, "enrollments": rows})
