"""The event history of a course or a student, a page at a time."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from courseflow.eventstore import store
from courseflow.eventstore.eventlog import Checkpoint, EventLog, Recorded, Tail
from courseflow.http.auth import Principal
from courseflow.http.common import JSON, services, student_in_path
from courseflow.http.gate import principal
from courseflow.http.operations import operation, path_params, query
from courseflow.http.payloads import CoursePath, Page, StudentPath
from courseflow.http.problems import NotFound
from courseflow.http.views import EventPage, RecordedEvent, StudentEnrollments
from projections import queries
from projections.status import from_row

# What identifies another student's request, or says more about them than the course's counts: registrars only.
_PERSONAL = ("student_id", "request_id", "idempotency_key", "priority", "previous", "arrival", "requested_at")


def present(recorded: Recorded, reader: Principal, student_id: int | None = None) -> RecordedEvent:
    """An event as the reader may see it; `student_id`: the student whose history it is, read on their behalf."""
    data: dict[str, Any] = msgspec.to_builtins(recorded.event)
    # Whose event it is must be known and be the reader's (or theirs it is read for); anything else is stripped.
    owner = data.get("student_id")
    if not reader.sees_everyone and (owner is None or owner not in (reader.student_id, student_id)):
        data = {k: v for k, v in data.items() if k not in _PERSONAL}
    return RecordedEvent(
        position=recorded.position,
        stream=recorded.stream,
        version=recorded.stream_version,
        type=type(recorded.event).__name__,
        recorded_at=recorded.recorded_at,
        data=data,
    )


def read(
    conn: store.Conn,
    /,
    after: Checkpoint,
    limit: int,
    *,
    stream: str | None = None,
    student_id: int | None = None,
    request_id: str | None = None,
) -> list[Recorded]:
    """The one way the API reads the log: histories, live streams and the feed alike."""
    with conn.cursor() as cur:
        return EventLog(cur).read(after, limit, stream=stream, student_id=student_id, request_id=request_id)


def follow(conn: store.Conn, /, after: Checkpoint, limit: int) -> Tail:
    """The whole log after a checkpoint, for the live feed."""
    with conn.cursor() as cur:
        return EventLog(cur).follow(after, limit)


def checkpoint_after(conn: store.Conn, position: int) -> Checkpoint | None:
    """Where a client that asks for what follows an event id (a log position) resumes; None: past the log's end."""
    with conn.cursor() as cur:
        return EventLog(cur).checkpoint_after(position)


def read_after(
    conn: store.Conn,
    /,
    after: int,
    limit: int,
    *,
    stream: str | None = None,
    student_id: int | None = None,
    request_id: str | None = None,
) -> list[Recorded]:
    """Events after an event id, as `read`; none after an id past the end of the log."""
    with conn.cursor() as cur:
        log = EventLog(cur)
        resume = log.checkpoint_after(after)
        return (
            []
            if resume is None
            else log.read(resume, limit, stream=stream, student_id=student_id, request_id=request_id)
        )


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
    if not found.events and await services(request).db(store.course, course_id) is None:
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
