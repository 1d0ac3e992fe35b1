"""The event history of a course or a student, a page at a time."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from courseflow import store
from courseflow.api.common import JSON, services, student_in_path
from courseflow.api.gate import principal
from courseflow.api.operations import operation, path_params, query
from courseflow.api.status import from_row
from courseflow.api.views import EventPage, RecordedEvent, StudentEnrollments
from courseflow.auth import Principal
from courseflow.payloads import CoursePath, Page, StudentPath
from projections import queries

# What identifies another student's request, or says more about them than the course's counts: registrars only.
_PERSONAL = ("student_id", "request_id", "idempotency_key", "priority", "previous", "arrival", "requested_at")


def present(recorded: store.Recorded, reader: Principal, student_id: int | None = None) -> RecordedEvent:
    """An event as the reader may see it; `student_id`: the student whose history it is, read on their behalf."""
    data: dict[str, Any] = msgspec.to_builtins(recorded.event)
    if not reader.sees_everyone and data.get("student_id") not in (reader.student_id, student_id):
        data = {k: v for k, v in data.items() if k not in _PERSONAL}
    return RecordedEvent(
        position=recorded.position,
        stream=recorded.stream,
        version=recorded.stream_version,
        type=type(recorded.event).__name__,
        recorded_at=recorded.recorded_at,
        data=data,
    )


async def _page(request: Request, stream: str | None = None, student_id: int | None = None) -> Response:
    page = query(request, Page)

    def read(conn: store.Conn) -> list[store.Recorded]:
        with conn.cursor() as cur:
            return store.read_events(cur, page.after, page.limit, stream=stream, student_id=student_id)

    recorded = await services(request).db(read)
    next_after = recorded[-1].position if len(recorded) == page.limit else None
    reader = principal(request)
    return JSON(EventPage(events=[present(r, reader, student_id) for r in recorded], next_after=next_after))


async def course_events(request: Request) -> Response:
    """JSON history; `streams.course_events` serves the route and also streams it live."""
    course_id = path_params(request, CoursePath).course_id
    return await _page(request, stream=store.course_stream(course_id))


@operation(
    summary="A student's event history",
    tag="history",
    description="A student reads only their own.",
    path=StudentPath,
    query=Page,
    answers={200: EventPage},
    problems=(403,),
)
async def student_events(request: Request) -> Response:
    return await _page(request, student_id=student_in_path(request, "history"))


@operation(
    summary="A student's requests and their status",
    tag="history",
    description="A student reads only their own.",
    path=StudentPath,
    answers={200: StudentEnrollments},
    problems=(403,),
)
async def student_enrollments(request: Request) -> Response:
    student_id = student_in_path(request, "history")
    rows = await services(request).db(queries.student_enrollments, student_id)
    enrollments = [from_row(row | {"student_id": student_id}) for row in rows]
    return JSON(StudentEnrollments(student_id=student_id, enrollments=enrollments))
