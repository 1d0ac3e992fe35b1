"""The event history of a course or a student, a page at a time (read and shown by `projections.timeline`)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from courseflow.eventstore import reads, store
from courseflow.http.common import JSON, services, student_in_path
from courseflow.http.gate import principal
from courseflow.http.operations import operation, path_params, query
from courseflow.http.payloads import CoursePath, Page, StudentPath
from courseflow.http.problems import NotFound
from courseflow.http.views import EventPage, StudentEnrollments
from projections import queries
from projections.status import from_row
from projections.timeline import present, read_after


async def page(
    request: Request,
    *,
    stream: str | None = None,
    student_id: int | None = None,
    request_id: str | None = None,
) -> EventPage:
    """A page of events as the caller may see them; `student_id`: the student they are read for."""
    wanted = query(request, Page)
    recorded = await services(request).read(
        read_after, wanted.after, wanted.limit, stream=stream, student_id=student_id, request_id=request_id
    )
    next_after = recorded[-1].position if len(recorded) == wanted.limit else None
    reader = principal(request)
    return EventPage(events=[present(r, reader, student_id) for r in recorded], next_after=next_after)


async def course_events(request: Request) -> Response:
    """JSON history; `streams.course_events` serves the route and also streams it live."""
    course_id = path_params(request, CoursePath).course_id
    found = await page(request, stream=store.course_stream(course_id))
    # No events at all: no such course, or one created a moment ago (the write model knows).
    if not found.events and await services(request).db(reads.course, course_id) is None:
        raise NotFound(f"no course {course_id}", "course_id")
    return JSON(found)


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
    return JSON(await page(request, student_id=student_in_path(request, "history")))


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
    rows = await services(request).read(queries.student_enrollments, student_id)
    enrollments = [from_row(row | {"student_id": student_id}) for row in rows]
    return JSON(StudentEnrollments(student_id=student_id, enrollments=enrollments))
