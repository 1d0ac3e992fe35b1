"""Courses: create, read, change capacity and registration window, waitlist."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
import redis
from msgspec import UnsetType
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from courseflow.decisions import lifecycle
from courseflow.eventstore import store
from courseflow.http import payloads
from courseflow.http.common import JSON, Services, services
from courseflow.http.gate import principal
from courseflow.http.operations import operation, path_params, query
from courseflow.http.payloads import CoursePage, CoursePatch, CoursePath, NewCourse, Page
from courseflow.http.problems import CourseExists, InvalidInput, NotFound
from courseflow.http.views import (
    Counters,
    Course,
    CourseChanged,
    Courses,
    Waitlist,
    WaitlistPlace,
)
from projections import queries

log = logging.getLogger("courseflow.api")

_COUNTERS = ("requested", "granted", "waitlisted", "rejected", "dropped", "left_waitlist", "promoted")


def _course_id(request: Request) -> int:
    return path_params(request, CoursePath).course_id


@operation(
    summary="Create a course",
    tag="courses",
    description="Registrars only. A registration window is optional; requests outside it are rejected as closed.",
    body=NewCourse,
    example=NewCourse(course_id=101, capacity=30, title="Distributed Systems", opens_at="2026-12-01T09:00:00Z"),
    answers={201: Course},
    problems=(403, 409),
)
async def create(request: Request) -> Response:
    principal(request).require("registrar")
    body = await payloads.read(request, NewCourse)
    title = payloads.text(body.title, "title")
    window = payloads.window(body.opens_at, body.closes_at)
    opens_at = None if isinstance(window.opens_at, UnsetType) else window.opens_at
    closes_at = None if isinstance(window.closes_at, UnsetType) else window.closes_at
    svc = services(request)
    created = await svc.db(store.create_course, body.course_id, title, body.capacity, opens_at, closes_at)
    # After COMMIT, never before: intake must not accept requests for a course the workers cannot see yet.
    # Also on a repeat. If Redis is down now, intake learns the course from PostgreSQL at its first enrollment.
    try:
        await run_in_threadpool(svc.register_courses, [body.course_id])
    except redis.RedisError as exc:
        log.warning("course %s created; intake will learn it once Redis is back (%s)", body.course_id, exc)
    if not created:
        raise CourseExists(f"course {body.course_id} already exists", "course_id")
    view = Course(
        course_id=body.course_id,
        title=title,
        capacity=body.capacity,
        seats_taken=0,
        waitlist_length=0,
        opens_at=opens_at,
        closes_at=closes_at,
        pending=0,
    )
    return JSON(view, 201)


@operation(
    summary="A course: seats, waitlist, window, queue and counters",
    tag="courses",
    path=CoursePath,
    answers={200: Course},
    problems=(404,),
)
async def show(request: Request) -> Response:
    svc = services(request)
    row = await _course(svc, _course_id(request))
    return JSON(_view(row, (await _pending(svc, [row["course_id"]]))[0]))


@operation(
    summary="Every course, a page at a time",
    tag="courses",
    description="Courses by id, each with the figures `GET /api/v1/courses/{course_id}` gives. "
    "Pass `next_after` as `after` for the next page; it is null on the last one.",
    query=CoursePage,
    answers={200: Courses},
)
async def index(request: Request) -> Response:
    page = query(request, CoursePage)
    svc = services(request)
    rows = await svc.read(queries.courses, page.after, page.limit)
    pending = await _pending(svc, [row["course_id"] for row in rows])
    next_after = rows[-1]["course_id"] if len(rows) == page.limit else None
    return JSON(Courses(courses=[_view(r, p) for r, p in zip(rows, pending, strict=True)], next_after=next_after))


async def _course(svc: Services, course_id: int) -> dict[str, Any]:
    found = await svc.read(queries.course, course_id)
    if found is None and svc.replica is not None:
        # Not on the replica yet: created a moment ago, through another way in than this API (read-your-writes).
        found = await svc.db(queries.course, course_id)
    if found is None:
        raise NotFound(f"no course {course_id}", "course_id")
    return found


async def _pending(svc: Services, course_ids: list[int]) -> list[int | None]:
    """The courses' queue depths, in one round trip; None while the queue is unreachable (the courses are still
    worth showing)."""
    if not course_ids:
        return []
    try:
        return list(await svc.intake.queue_depths(course_ids))
    except redis.RedisError:
        return [None] * len(course_ids)


def _view(row: dict[str, Any], pending: int | None) -> Course:
    """A course as `queries.course` reads it, and its queue depth."""
    fields = {k: v for k, v in row.items() if k not in _COUNTERS}
    counters = Counters(**{k: row[k] or 0 for k in _COUNTERS})
    return msgspec.convert(fields | {"pending": pending, "counters": counters}, Course, from_attributes=True)


@operation(
    summary="Change capacity or the registration window",
    tag="courses",
    description="Registrars only. More seats promote the head of the waitlist at once; fewer never take a seat back. "
    "A window bound set to null is removed.",
    path=CoursePath,
    body=CoursePatch,
    example=CoursePatch(capacity=40),
    answers={200: CourseChanged},
    problems=(403, 404, 409),
)
async def update(request: Request) -> Response:
    """PATCH capacity and/or the registration window."""
    principal(request).require("registrar")
    course_id = _course_id(request)
    patch = await payloads.read(request, CoursePatch)
    if all(isinstance(v, UnsetType) for v in (patch.capacity, patch.opens_at, patch.closes_at)):
        raise InvalidInput("body", "must set at least one of capacity, opens_at, closes_at")
    window = payloads.window(patch.opens_at, patch.closes_at)
    svc = services(request)
    update = await svc.db(lifecycle.update_course, course_id, patch.capacity, window.opens_at, window.closes_at)
    state = update.state
    view = CourseChanged(
        course_id=course_id,
        capacity=state.capacity,
        seats_taken=state.seats_taken,
        waitlist_length=state.waitlist_length,
        opens_at=state.opens_at,
        closes_at=state.closes_at,
        promoted=update.promoted,
    )
    return JSON(view)


@operation(
    summary="A course's waitlist in order",
    tag="courses",
    description="Registrars and services see every place (paged by `after` = places to skip); "
    "a student sees the length and their own places only.",
    path=CoursePath,
    query=Page,
    answers={200: Waitlist},
    problems=(404,),
)
async def waitlist(request: Request) -> Response:
    course_id = _course_id(request)
    page = query(request, Page)
    caller = principal(request)
    svc = services(request)
    length = (await _course(svc, course_id))["waitlist_length"]
    if caller.sees_everyone:
        entries = await svc.read(queries.waitlist, course_id, page.limit, page.after)
    elif caller.student_id is not None:
        entries = await svc.read(queries.waitlist_places, course_id, caller.student_id)
    else:
        entries = []
    places = msgspec.convert(entries, list[WaitlistPlace])
    return JSON(Waitlist(course_id=course_id, waitlist_length=length, waitlist=places))
