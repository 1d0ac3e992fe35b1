"""Courses: create, read, change capacity and registration window, waitlist, metrics."""

from __future__ import annotations

import logging
from typing import Any

import redis
from msgspec import UnsetType
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from courseflow import lifecycle, payloads, store
from courseflow.api.common import JSON, Services, services
from courseflow.api.gate import principal
from courseflow.payloads import CoursePatch, NewCourse
from courseflow.problems import CourseExists, InvalidInput, NotFound
from projections import queries

log = logging.getLogger("courseflow.api")

_COUNTERS = ("requested", "granted", "waitlisted", "rejected", "dropped", "left_waitlist", "promoted")


def _course_id(request: Request) -> int:
    return payloads.positive_id(request.path_params["course_id"], "course_id")


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
    view = {"course_id": body.course_id, "title": title, "capacity": body.capacity}
    view |= {"opens_at": opens_at, "closes_at": closes_at, "seats_taken": 0, "waitlist_length": 0, "pending": 0}
    return JSON(view, 201)


async def show(request: Request) -> Response:
    svc = services(request)
    return JSON(await _view(svc, await _course(svc, _course_id(request))))


async def _course(svc: Services, course_id: int) -> dict[str, Any]:
    rows = await svc.db(queries.courses, course_id)
    if rows:
        return rows[0]
    # Created a moment ago and not projected yet: the write model has it (read-your-writes).
    written = await svc.db(store.course, course_id)
    if written is None:
        raise NotFound(f"no course {course_id}", "course_id")
    return written | dict.fromkeys(_COUNTERS, 0)


async def _view(svc: Services, row: dict[str, Any]) -> dict[str, Any]:
    view = {k: v for k, v in row.items() if k not in _COUNTERS}
    counters = {k: row[k] or 0 for k in _COUNTERS}
    try:
        pending: int | None = await svc.intake.queue_depth(row["course_id"])
    except redis.RedisError:
        pending = None  # the course is still worth showing while the queue is unreachable
    return view | {"pending": pending, "counters": counters}


async def update(request: Request) -> Response:
    """PATCH capacity and/or the registration window."""
    principal(request).require("registrar")
    course_id = _course_id(request)
    patch = await payloads.read(request, CoursePatch)
    if all(isinstance(v, UnsetType) for v in (patch.capacity, patch.opens_at, patch.closes_at)):
        raise InvalidInput("body", "must set at least one of capacity, opens_at, closes_at")
    window = payloads.window(patch.opens_at, patch.closes_at)
    svc = services(request)
    try:
        state, promoted = await svc.db(lifecycle.update_course, course_id, patch.capacity, window)
    except lifecycle.NotFound:
        raise NotFound(f"no course {course_id}", "course_id") from None
    view = {
        "course_id": course_id,
        "capacity": state.capacity,
        "seats_taken": state.seats_taken,
        "waitlist_length": state.waitlist_length,
        "opens_at": state.opens_at,
        "closes_at": state.closes_at,
    }
    return JSON(view | {"promoted": promoted})


async def waitlist(request: Request) -> Response:
    """The waitlist in order. Registrars see every entry; others see the length and their own places only."""
    course_id = _course_id(request)
    page = payloads.page(request.query_params)
    caller = principal(request)
    svc = services(request)
    length = (await _course(svc, course_id))["waitlist_length"]
    if caller.sees_everyone:
        entries = await svc.db(queries.waitlist, course_id, page.limit, page.after)
    elif caller.student_id is not None:
        entries = await svc.db(queries.waitlist_places, course_id, caller.student_id)
    else:
        entries = []
    return JSON({"course_id": course_id, "waitlist_length": length, "waitlist": entries})


async def metrics(request: Request) -> Response:
    svc = services(request)
    raw = request.query_params.get("course_id")
    course_id = None if raw is None else payloads.positive_id(raw, "course_id")
    rows = await svc.db(queries.seats, course_id)
    if course_id is not None and not rows:
        raise NotFound(f"no course {course_id}", "course_id")
    depths = await svc.intake.queue_depths([row["course_id"] for row in rows])
    per_course: list[dict[str, Any]] = [
        {
            "course_id": row["course_id"],
            "queue_depth": depth,
            "seats_taken": row["seats_taken"],
            "capacity": row["capacity"],
            "waitlist_length": row["waitlist_length"],
            "status": "open" if row["seats_taken"] < row["capacity"] else "full",
        }
        for row, depth in zip(rows, depths, strict=True)
    ]
    if course_id is not None:
        return JSON(per_course[0])
    totals = {k: sum(c[k] for c in per_course) for k in ("queue_depth", "seats_taken", "capacity", "waitlist_length")}
    status = "open" if any(c["status"] == "open" for c in per_course) else "full"
    pipeline = {"dead_letters": await svc.intake.dead_letter_count(), "projection_lag": await svc.db(queries.lag)}
    return JSON(totals | {"status": status} | pipeline | {"courses": per_course})
